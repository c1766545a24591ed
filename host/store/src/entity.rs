//! sea-orm entities, one per table of `migrations/`.

pub mod audit;
pub mod event;
pub mod plan;
pub mod recovery_point;
pub mod run;
pub mod run_plugin;
pub mod site_call;
pub mod site_probe;
pub mod step;

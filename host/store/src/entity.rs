//! sea-orm entities for the tables of `migrations/` this crate reads and
//! writes (the `steps` table is created for the engine, which is not built yet).

pub mod audit;
pub mod plan;
pub mod run;

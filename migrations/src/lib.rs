//! The store's schema, as ordered sea-orm migrations that run on SQLite (the
//! embedded default) and PostgreSQL (production) alike. A released
//! migration is never edited: changes are new migrations.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

mod m20261124_000001_initial;
mod m20261124_000002_step_io;
mod m20261124_000003_run_lifecycle;
mod m20261124_000004_recovery_points;
mod m20261125_000005_events;
mod m20261125_000006_run_cancel;
mod m20261125_000007_site_probes;
mod m20261125_000008_api_auth;
mod m20261125_000009_sites;
mod m20261205_000010_password_changed;
mod m20261206_000011_sign_in_failures;
mod m20261207_000012_runs_by_plan;
mod m20261207_000013_drill_points;
mod m20261207_000014_site_max_calls;
mod m20261207_000015_site_calls;
mod m20261207_000016_events_by_kind;
mod m20261207_000017_run_plugins;
mod m20261207_000018_plugin_packages;
mod m20261207_000019_plan_deleted;

pub use sea_orm_migration::MigratorTrait;
use sea_orm_migration::prelude::*;

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_initial::Migration),
            Box::new(m20261124_000002_step_io::Migration),
            Box::new(m20261124_000003_run_lifecycle::Migration),
            Box::new(m20261124_000004_recovery_points::Migration),
            Box::new(m20261125_000005_events::Migration),
            Box::new(m20261125_000006_run_cancel::Migration),
            Box::new(m20261125_000007_site_probes::Migration),
            Box::new(m20261125_000008_api_auth::Migration),
            Box::new(m20261125_000009_sites::Migration),
            Box::new(m20261205_000010_password_changed::Migration),
            Box::new(m20261206_000011_sign_in_failures::Migration),
            Box::new(m20261207_000012_runs_by_plan::Migration),
            Box::new(m20261207_000013_drill_points::Migration),
            Box::new(m20261207_000014_site_max_calls::Migration),
            Box::new(m20261207_000015_site_calls::Migration),
            Box::new(m20261207_000016_events_by_kind::Migration),
            Box::new(m20261207_000017_run_plugins::Migration),
            Box::new(m20261207_000018_plugin_packages::Migration),
            Box::new(m20261207_000019_plan_deleted::Migration),
        ]
    }
}

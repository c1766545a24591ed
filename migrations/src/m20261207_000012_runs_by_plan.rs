//! Runs by plan and workflow, newest first: a plan gathers a run every
//! replication interval (288 a day at 5 minutes), and the engine asks for
//! a few of them (the newest of a workflow, the unfinished cycles) on every
//! policy tick and compliance read — without an index each of those reads
//! every run of every plan, and with one on the plan alone, the newest of a
//! rare workflow (a failback) is found only past every cycle.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Runs {
    Table,
    Plan,
    Workflow,
    CreatedAt,
}

// async_trait cannot take `SchemaManager<'_>` in this position.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("runs_by_plan")
                    .table(Runs::Table)
                    .col(Runs::Plan)
                    .col(Runs::Workflow)
                    .col(Runs::CreatedAt)
                    .to_owned(),
            )
            .await
    }
}

//! Events by kind: the newest verdict of each plan (`rpo.breach`,
//! `rpo.met`, …) found without reading the plan's other events — a
//! `replication.scheduled` every cycle, thousands a month.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Events {
    Table,
    Kind,
    Plan,
    Id,
}

// async_trait cannot take `SchemaManager<'_>` in this position.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("events_by_kind")
                    .table(Events::Table)
                    .col(Events::Kind)
                    .col(Events::Plan)
                    .col(Events::Id)
                    .to_owned(),
            )
            .await
    }
}

//! The plugin versions a run is pinned to: the version of each plugin
//! active when the run first called it. Its later calls — after a crash,
//! on another host, after a newer version was published — go to the same
//! version, so one run's operations are all handled by the same code.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RunPlugins {
    Table,
    Run,
    Plugin,
    Version,
}

// async_trait cannot take `SchemaManager<'_>` in this position.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RunPlugins::Table)
                    .col(ColumnDef::new(RunPlugins::Run).string().not_null())
                    .col(ColumnDef::new(RunPlugins::Plugin).string().not_null())
                    .col(ColumnDef::new(RunPlugins::Version).string().not_null())
                    .primary_key(Index::create().col(RunPlugins::Run).col(RunPlugins::Plugin))
                    .to_owned(),
            )
            .await
    }
}

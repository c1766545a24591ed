//! A cancel asked of a run a host is driving: who asked. The host driving
//! the run stops at its next stage boundary, compensates what needs undoing
//! and ends the run `cancelled`.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Runs {
    Table,
    CancelRequestedBy,
}

// async_trait cannot take `SchemaManager<'_>` in this position.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Runs::Table)
                    .add_column(ColumnDef::new(Runs::CancelRequestedBy).string().null())
                    .to_owned(),
            )
            .await
    }
}

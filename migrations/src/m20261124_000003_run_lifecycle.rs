//! Runs that move their plan through its lifecycle (started by
//! `start_workflow`) are marked, so finishing them also finishes the
//! lifecycle transition in the same transaction.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Runs {
    Table,
    Lifecycle,
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
                    .add_column(
                        ColumnDef::new(Runs::Lifecycle)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .to_owned(),
            )
            .await
    }
}

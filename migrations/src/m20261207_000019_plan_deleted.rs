//! When a plan was deleted: a deleted plan is gone from every list and
//! lookup, but its row stays for the history that names it (runs, events,
//! the audit log); applying its name again makes a new plan in that row.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Plans {
    Table,
    DeletedAt,
}

// async_trait cannot take `SchemaManager<'_>` in this position.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Plans::Table)
                    .add_column(ColumnDef::new(Plans::DeletedAt).big_integer().null())
                    .to_owned(),
            )
            .await
    }
}

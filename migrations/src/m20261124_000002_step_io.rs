//! Steps carry their input (what the planner decided) and output (what the
//! provider returned), so a resumed run needs nothing but the store.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Steps {
    Table,
    Input,
    Output,
}

// async_trait cannot take `SchemaManager<'_>` in this position.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        manager
            .alter_table(
                Table::alter()
                    .table(Steps::Table)
                    .add_column(ColumnDef::new(Steps::Input).text().not_null().default("{}"))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Steps::Table)
                    .add_column(ColumnDef::new(Steps::Output).text().null())
                    .to_owned(),
            )
            .await
    }
}

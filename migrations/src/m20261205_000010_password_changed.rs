//! When a local user's password was last set: tokens issued before it are
//! refused, so a changed password (or a user removed and made again under
//! the same name) ends every earlier session.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiUsers {
    Table,
    PasswordChangedAt,
}

// async_trait cannot take `SchemaManager<'_>` in this position.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ApiUsers::Table)
                    .add_column(
                        ColumnDef::new(ApiUsers::PasswordChangedAt)
                            .big_integer()
                            .null(),
                    )
                    .to_owned(),
            )
            .await
    }
}

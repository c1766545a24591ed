//! Failed password sign-ins, counted per user name in the store, so every
//! host replica on it makes a user wait after the same number of failures
//! (before, each host counted its own: N replicas let N times the guesses).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SignInFailures {
    Table,
    Name,
    Failures,
    LockedUntil,
    UpdatedAt,
}

// async_trait cannot take `SchemaManager<'_>` in this position.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SignInFailures::Table)
                    .col(
                        ColumnDef::new(SignInFailures::Name)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(SignInFailures::Failures)
                            .integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(SignInFailures::LockedUntil)
                            .big_integer()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(SignInFailures::UpdatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        // Old rows are forgotten by this column.
        manager
            .create_index(
                Index::create()
                    .name("sign_in_failures_updated_at")
                    .table(SignInFailures::Table)
                    .col(SignInFailures::UpdatedAt)
                    .to_owned(),
            )
            .await
    }
}

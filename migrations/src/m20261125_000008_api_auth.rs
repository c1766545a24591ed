//! The API's authentication state: local users (argon2 password hashes and
//! a role), scoped API tokens (stored as SHA-256 digests, never in clear)
//! and the host's keys (the local issuer's signing key, generated on first
//! start and shared by every host replica on the same store).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiUsers {
    Table,
    Name,
    PasswordHash,
    Role,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiTokens {
    Table,
    Id,
    Name,
    Role,
    Digest,
    CreatedBy,
    CreatedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum HostKeys {
    Table,
    Name,
    Material,
    CreatedAt,
}

// async_trait cannot take `SchemaManager<'_>` in this position.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ApiUsers::Table)
                    .col(
                        ColumnDef::new(ApiUsers::Name)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(ApiUsers::PasswordHash).text().not_null())
                    .col(ColumnDef::new(ApiUsers::Role).string().not_null())
                    .col(ColumnDef::new(ApiUsers::CreatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ApiTokens::Table)
                    .col(
                        ColumnDef::new(ApiTokens::Id)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(ApiTokens::Name).string().not_null())
                    .col(ColumnDef::new(ApiTokens::Role).string().not_null())
                    .col(
                        ColumnDef::new(ApiTokens::Digest)
                            .string()
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(ApiTokens::CreatedBy).string().not_null())
                    .col(
                        ColumnDef::new(ApiTokens::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(ApiTokens::RevokedAt).big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(HostKeys::Table)
                    .col(
                        ColumnDef::new(HostKeys::Name)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(HostKeys::Material).text().not_null())
                    .col(ColumnDef::new(HostKeys::CreatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await
    }
}

//! Sites registered through the API: each bound to a plugin with its
//! settings, the egress the operator grants, an optional CA bundle, and its
//! credentials sealed (XChaCha20-Poly1305 under the host's seal key; the
//! store never holds them in clear).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Sites {
    Table,
    Name,
    Plugin,
    Config,
    Egress,
    CaPem,
    Secrets,
    Revision,
    UpdatedAt,
    UpdatedBy,
}

// async_trait cannot take `SchemaManager<'_>` in this position.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Sites::Table)
                    .col(
                        ColumnDef::new(Sites::Name)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Sites::Plugin).string().not_null())
                    // JSON object of strings.
                    .col(ColumnDef::new(Sites::Config).text().not_null())
                    // JSON array of URLs.
                    .col(ColumnDef::new(Sites::Egress).text().not_null())
                    .col(ColumnDef::new(Sites::CaPem).text().null())
                    // JSON object: key -> sealed value (base64).
                    .col(ColumnDef::new(Sites::Secrets).text().not_null())
                    .col(ColumnDef::new(Sites::Revision).big_integer().not_null())
                    .col(ColumnDef::new(Sites::UpdatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Sites::UpdatedBy).string().not_null())
                    .to_owned(),
            )
            .await
    }
}

//! Published plugin packages and each plugin's settings, shared by every
//! host on the store: a version published, activated, disabled or enabled
//! through one host's API reaches the others (each verifies the package
//! against its own trusted keys before loading it).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PluginPackages {
    Table,
    Name,
    Version,
    Sha256,
    Manifest,
    Wasm,
    Signature,
    PublishedBy,
    PublishedAt,
}

#[derive(DeriveIden)]
enum PluginSettings {
    Table,
    Name,
    Active,
    Enabled,
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
                    .table(PluginPackages::Table)
                    .col(ColumnDef::new(PluginPackages::Name).string().not_null())
                    .col(ColumnDef::new(PluginPackages::Version).string().not_null())
                    .col(ColumnDef::new(PluginPackages::Sha256).string().not_null())
                    .col(ColumnDef::new(PluginPackages::Manifest).text().not_null())
                    .col(ColumnDef::new(PluginPackages::Wasm).blob().not_null())
                    .col(ColumnDef::new(PluginPackages::Signature).text())
                    .col(
                        ColumnDef::new(PluginPackages::PublishedBy)
                            .string()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PluginPackages::PublishedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(PluginPackages::Name)
                            .col(PluginPackages::Version),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(PluginSettings::Table)
                    .col(
                        ColumnDef::new(PluginSettings::Name)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(PluginSettings::Active).string())
                    .col(ColumnDef::new(PluginSettings::Enabled).boolean().not_null())
                    .col(
                        ColumnDef::new(PluginSettings::UpdatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PluginSettings::UpdatedBy)
                            .string()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }
}

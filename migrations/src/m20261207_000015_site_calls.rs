//! The calls of each site's plugin in flight across every host replica: a
//! row per slot of the site's `max_calls`, held by one call until it gives
//! the slot back or the hold expires (its host died mid-call).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SiteCalls {
    Table,
    Site,
    Slot,
    Holder,
    ExpiresAt,
}

// async_trait cannot take `SchemaManager<'_>` in this position.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SiteCalls::Table)
                    .col(ColumnDef::new(SiteCalls::Site).string().not_null())
                    .col(ColumnDef::new(SiteCalls::Slot).integer().not_null())
                    .col(ColumnDef::new(SiteCalls::Holder).string().null())
                    .col(
                        ColumnDef::new(SiteCalls::ExpiresAt)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(Index::create().col(SiteCalls::Site).col(SiteCalls::Slot))
                    .to_owned(),
            )
            .await
    }
}

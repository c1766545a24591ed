//! Site probes: each host (a witness) records whether it could reach a
//! site, and how many probes in a row failed. An automatic failover starts
//! only when enough witnesses have seen the primary fail often enough.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SiteProbes {
    Table,
    Site,
    Witness,
    At,
    Ok,
    Failures,
    Detail,
}

// async_trait cannot take `SchemaManager<'_>` in this position.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SiteProbes::Table)
                    .col(ColumnDef::new(SiteProbes::Site).string().not_null())
                    .col(ColumnDef::new(SiteProbes::Witness).string().not_null())
                    .col(ColumnDef::new(SiteProbes::At).big_integer().not_null())
                    .col(ColumnDef::new(SiteProbes::Ok).boolean().not_null())
                    .col(ColumnDef::new(SiteProbes::Failures).integer().not_null())
                    .col(ColumnDef::new(SiteProbes::Detail).text().not_null())
                    .primary_key(
                        Index::create()
                            .col(SiteProbes::Site)
                            .col(SiteProbes::Witness),
                    )
                    .to_owned(),
            )
            .await
    }
}

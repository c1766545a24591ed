//! Events: what the policy engine observed about a plan (an RPO or RTO
//! objective breached or met again, a replication cycle scheduled), for
//! operators and alerting. Unlike the audit log they record what happened,
//! not who did what.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Events {
    Table,
    Id,
    At,
    Plan,
    Kind,
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
                    .table(Events::Table)
                    .col(
                        ColumnDef::new(Events::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Events::At).big_integer().not_null())
                    .col(ColumnDef::new(Events::Plan).string().not_null())
                    .col(ColumnDef::new(Events::Kind).string().not_null())
                    .col(ColumnDef::new(Events::Detail).text().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("events_by_plan")
                    .table(Events::Table)
                    .col(Events::Plan)
                    .col(Events::Id)
                    .to_owned(),
            )
            .await
    }
}

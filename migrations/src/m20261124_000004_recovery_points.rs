//! Recovery points: the consistent copies a plan's workloads have at each
//! site, recorded when a snapshot or replication step finishes. Failover
//! materializes from the newest one at the standby site, and its capture
//! time is the achieved RPO.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RecoveryPoints {
    Table,
    Site,
    Id,
    Plan,
    Workload,
    CapturedAt,
    Run,
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
                    .table(RecoveryPoints::Table)
                    .col(ColumnDef::new(RecoveryPoints::Site).string().not_null())
                    .col(ColumnDef::new(RecoveryPoints::Id).string().not_null())
                    .col(ColumnDef::new(RecoveryPoints::Plan).string().not_null())
                    .col(ColumnDef::new(RecoveryPoints::Workload).string().not_null())
                    .col(
                        ColumnDef::new(RecoveryPoints::CapturedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(RecoveryPoints::Run).string().not_null())
                    .col(ColumnDef::new(RecoveryPoints::Detail).text().not_null())
                    .primary_key(
                        Index::create()
                            .col(RecoveryPoints::Site)
                            .col(RecoveryPoints::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("recovery_points_latest")
                    .table(RecoveryPoints::Table)
                    .col(RecoveryPoints::Plan)
                    .col(RecoveryPoints::Workload)
                    .col(RecoveryPoints::Site)
                    .col(RecoveryPoints::CapturedAt)
                    .to_owned(),
            )
            .await
    }
}

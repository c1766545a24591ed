//! Recovery points a drill made: a round-trip drill copies its sandbox back
//! to the site it came from, and those copies are the drill's alone — no
//! recovery restores from them, no prune counts them, no RPO is measured
//! from them, and the drill removes them when it ends.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RecoveryPoints {
    Table,
    Drill,
}

// async_trait cannot take `SchemaManager<'_>` in this position.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(RecoveryPoints::Table)
                    .add_column(
                        ColumnDef::new(RecoveryPoints::Drill)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .to_owned(),
            )
            .await
    }
}

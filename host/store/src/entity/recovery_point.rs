//! `recovery_points`: the copies of a plan's workloads at each site.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "recovery_points")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub site: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub plan: String,
    pub workload: String,
    pub captured_at: i64,
    pub run: String,
    /// The provider's description (disks, spec) as JSON.
    pub detail: String,
    /// Made by a drill, for the drill alone (its round trip's copies).
    pub drill: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

//! `site_calls`: the slots of a site's limit of plugin calls in flight,
//! shared by the host replicas.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "site_calls")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub site: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub slot: i32,
    /// The call holding the slot; `None` when free.
    pub holder: Option<String>,
    /// When a hold lapses (ms since the epoch): its call's host died.
    pub expires_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

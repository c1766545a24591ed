//! `steps`: the persisted steps of a run: what to do (input), the
//! idempotency key its provider calls carry, the operation handle being
//! polled, attempts, timings and the outcome.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "steps")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub run: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i32,
    pub name: String,
    pub status: String,
    pub idempotency_key: String,
    pub operation: Option<String>,
    pub attempts: i32,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
    pub input: String,
    pub output: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

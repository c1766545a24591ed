//! Failed password sign-ins, counted per user name in the store so that
//! every host replica on it sees the same count: the API's throttle
//! (host/api/src/throttle.rs) decides how long a user waits; here the
//! count is kept, atomically, and the wait recorded. Names quiet for a day
//! whose wait is over are forgotten, so made-up names do not pile up.

use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ColumnTrait, Condition, EntityTrait, ExprTrait, QueryFilter, Set, TransactionTrait};

use std::time::Duration;

use super::{Store, StoreError, now_ms};

mod failure {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sign_in_failures")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub failures: i32,
        pub locked_until: Option<i64>,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// How long a name's failures are remembered after the last one (once its
/// wait is over).
const FORGET_AFTER_MS: i64 = 24 * 60 * 60 * 1000;

impl Store {
    /// How long password sign-ins as `name` must still wait, if at all.
    pub async fn sign_in_wait(&self, name: &str) -> Result<Option<Duration>, StoreError> {
        let now = now_ms();
        Ok(failure::Entity::find_by_id(name.to_owned())
            .one(&self.db)
            .await?
            .and_then(|row| row.locked_until)
            .and_then(|until| u64::try_from(until - now).ok())
            .filter(|left| *left > 0)
            .map(Duration::from_millis))
    }

    /// Count a failed password sign-in as `name`; the count of failures in
    /// a row, this one included. Two hosts counting at once both count.
    pub async fn sign_in_failed(&self, name: &str) -> Result<u32, StoreError> {
        let now = now_ms();
        let tx = self.db.begin().await?;
        failure::Entity::delete_many()
            .filter(failure::Column::UpdatedAt.lt(now - FORGET_AFTER_MS))
            .filter(
                Condition::any()
                    .add(failure::Column::LockedUntil.is_null())
                    .add(failure::Column::LockedUntil.lt(now)),
            )
            .exec(&tx)
            .await?;
        failure::Entity::insert(failure::ActiveModel {
            name: Set(name.to_owned()),
            failures: Set(1),
            locked_until: Set(None),
            updated_at: Set(now),
        })
        .on_conflict(
            OnConflict::column(failure::Column::Name)
                .value(
                    failure::Column::Failures,
                    Expr::col((failure::Entity, failure::Column::Failures)).add(1),
                )
                .value(failure::Column::UpdatedAt, now)
                .to_owned(),
        )
        .exec_without_returning(&tx)
        .await?;
        let count = failure::Entity::find_by_id(name.to_owned())
            .one(&tx)
            .await?
            .map_or(1, |row| row.failures);
        tx.commit().await?;
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    /// Make sign-ins as `name` wait `wait` from now, unless they already
    /// wait longer.
    pub async fn lock_sign_in(&self, name: &str, wait: Duration) -> Result<(), StoreError> {
        let until = now_ms().saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
        failure::Entity::update_many()
            .col_expr(failure::Column::LockedUntil, Expr::value(until))
            .filter(failure::Column::Name.eq(name))
            .filter(
                Condition::any()
                    .add(failure::Column::LockedUntil.is_null())
                    .add(failure::Column::LockedUntil.lt(until)),
            )
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// A successful sign-in as `name`: its count starts again.
    pub async fn sign_in_succeeded(&self, name: &str) -> Result<(), StoreError> {
        failure::Entity::delete_by_id(name.to_owned())
            .exec(&self.db)
            .await?;
        Ok(())
    }
}

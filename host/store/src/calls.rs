//! The calls of each site's plugin in flight, counted across every host
//! replica on one store: a site's `max_calls` is the platform's limit, not
//! each host's. A call takes one of the site's slots (`0..max_calls`) and
//! gives it back when it ends; a hold lapses unless renewed while its call
//! runs, so the slots of a host that died mid-call come free again.
//!
//! A slot is taken by a compare-and-set update (free, or its hold lapsed),
//! which two hosts cannot both win: no row lock is held between calls.

use std::time::Duration;

use rand::seq::SliceRandom;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, Set};

use super::entity::site_call;
use super::{Store, StoreError, millis, now_ms};

impl Store {
    /// Take a free slot of `site`'s `limit` calls in flight for `holder`
    /// (one call's own id), held for `hold` at the most; `None` while every
    /// slot is held. Slots past a lowered limit are not taken again.
    pub async fn take_call_slot(
        &self,
        site: &str,
        limit: u32,
        holder: &str,
        hold: Duration,
    ) -> Result<Option<u32>, StoreError> {
        let now = now_ms();
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows = site_call::Entity::find()
            .filter(site_call::Column::Site.eq(site))
            .filter(site_call::Column::Slot.lt(limit))
            .all(&self.db)
            .await?;
        let mut free: Vec<i32> = rows
            .iter()
            .filter(|r| r.expires_at < now)
            .map(|r| r.slot)
            .collect();
        // A site's slots are made the first time they are wanted.
        let missing: Vec<i32> = (0..limit)
            .filter(|slot| !rows.iter().any(|r| r.slot == *slot))
            .collect();
        if !missing.is_empty() {
            let new = missing.iter().map(|&slot| site_call::ActiveModel {
                site: Set(site.to_owned()),
                slot: Set(slot),
                holder: Set(None),
                expires_at: Set(0),
            });
            site_call::Entity::insert_many(new)
                .on_conflict_do_nothing_on([site_call::Column::Site, site_call::Column::Slot])
                .exec(&self.db)
                .await?;
            free.extend(missing);
        }
        // Hosts taking slots at once mostly try different ones.
        free.shuffle(&mut rand::thread_rng());
        for slot in free {
            let taken = site_call::Entity::update_many()
                .col_expr(site_call::Column::Holder, Expr::value(holder))
                .col_expr(
                    site_call::Column::ExpiresAt,
                    Expr::value(now + millis(hold)),
                )
                .filter(site_call::Column::Site.eq(site))
                .filter(site_call::Column::Slot.eq(slot))
                .filter(site_call::Column::ExpiresAt.lt(now))
                .exec(&self.db)
                .await?;
            if taken.rows_affected == 1 {
                return Ok(u32::try_from(slot).ok());
            }
        }
        Ok(None)
    }

    /// Hold the slot `holder` took for `hold` from now (its call runs on);
    /// `false` when its hold lapsed and another call holds it now.
    pub async fn renew_call_slot(
        &self,
        site: &str,
        slot: u32,
        holder: &str,
        hold: Duration,
    ) -> Result<bool, StoreError> {
        let renewed = site_call::Entity::update_many()
            .col_expr(
                site_call::Column::ExpiresAt,
                Expr::value(now_ms() + millis(hold)),
            )
            .filter(site_call::Column::Site.eq(site))
            .filter(site_call::Column::Slot.eq(i32::try_from(slot).unwrap_or(i32::MAX)))
            .filter(site_call::Column::Holder.eq(holder))
            .exec(&self.db)
            .await?;
        Ok(renewed.rows_affected == 1)
    }

    /// Give back the slot `holder` took; nothing when its hold lapsed and
    /// another call holds it now.
    pub async fn give_call_slot(
        &self,
        site: &str,
        slot: u32,
        holder: &str,
    ) -> Result<(), StoreError> {
        site_call::Entity::update_many()
            .col_expr(site_call::Column::Holder, Expr::value(None::<String>))
            .col_expr(site_call::Column::ExpiresAt, Expr::value(0))
            .filter(site_call::Column::Site.eq(site))
            .filter(site_call::Column::Slot.eq(i32::try_from(slot).unwrap_or(i32::MAX)))
            .filter(site_call::Column::Holder.eq(holder))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// How many of `site`'s slots are held now, by every host.
    pub async fn call_slots_held(&self, site: &str) -> Result<u64, StoreError> {
        Ok(site_call::Entity::find()
            .filter(site_call::Column::Site.eq(site))
            .filter(site_call::Column::ExpiresAt.gte(now_ms()))
            .count(&self.db)
            .await?)
    }
}

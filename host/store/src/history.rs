//! What happened, kept for reading: recovery points per plan, workload and
//! site; probes of sites' health; the append-only audit log; events.

use std::collections::HashMap;

use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Set, TransactionTrait,
};

use super::entity::{event, recovery_point, site_probe};
use super::{
    AuditEntry, EventRecord, ProbeRecord, RecoveryPointRecord, Store, StoreError, audit_in,
    corrupt, now_ms,
};

impl Store {
    /// Record a recovery point; recording the same (site, id) again is a
    /// no-op, so a resumed step may record twice.
    pub async fn record_recovery_point(
        &self,
        point: &RecoveryPointRecord,
    ) -> Result<(), StoreError> {
        let row = recovery_point::ActiveModel {
            site: Set(point.site.clone()),
            id: Set(point.id.clone()),
            plan: Set(point.plan.clone()),
            workload: Set(point.workload.clone()),
            captured_at: Set(point.captured_at_ms),
            run: Set(point.run.clone()),
            detail: Set(point.detail.to_string()),
            drill: Set(point.drill),
        };
        recovery_point::Entity::insert(row)
            .on_conflict_do_nothing_on([recovery_point::Column::Site, recovery_point::Column::Id])
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Forget recovery points whose copies the site removed (pruned past
    /// the plan's retention).
    pub async fn forget_recovery_points(
        &self,
        site: &str,
        ids: &[String],
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        recovery_point::Entity::delete_many()
            .filter(recovery_point::Column::Site.eq(site))
            .filter(recovery_point::Column::Id.is_in(ids.iter().cloned()))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Record a witness's probe of a site: the failures in a row grow with
    /// each failed probe and reset with a good one. Returns the record.
    pub async fn record_probe(
        &self,
        site: &str,
        witness: &str,
        at_ms: i64,
        ok: bool,
        detail: &str,
    ) -> Result<ProbeRecord, StoreError> {
        let tx = self.db.begin().await?;
        let key = (site.to_owned(), witness.to_owned());
        let previous = site_probe::Entity::find_by_id(key).one(&tx).await?;
        let failures = match (&previous, ok) {
            (_, true) => 0,
            (Some(p), false) => p.failures.saturating_add(1),
            (None, false) => 1,
        };
        let row = site_probe::ActiveModel {
            site: Set(site.to_owned()),
            witness: Set(witness.to_owned()),
            at: Set(at_ms),
            ok: Set(ok),
            failures: Set(failures),
            detail: Set(detail.to_owned()),
        };
        if previous.is_some() {
            row.update(&tx).await?;
        } else {
            row.insert(&tx).await?;
        }
        tx.commit().await?;
        Ok(ProbeRecord {
            site: site.to_owned(),
            witness: witness.to_owned(),
            at_ms,
            ok,
            failures: u32::try_from(failures).unwrap_or_default(),
            detail: detail.to_owned(),
        })
    }

    /// The last probe of a site by each witness.
    pub async fn probes(&self, site: &str) -> Result<Vec<ProbeRecord>, StoreError> {
        Ok(site_probe::Entity::find()
            .filter(site_probe::Column::Site.eq(site))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|p| ProbeRecord {
                site: p.site,
                witness: p.witness,
                at_ms: p.at,
                ok: p.ok,
                failures: u32::try_from(p.failures).unwrap_or_default(),
                detail: p.detail,
            })
            .collect())
    }

    /// The newest recovery point of a plan's workload at a site (a drill's
    /// copies are not the plan's).
    pub async fn latest_recovery_point(
        &self,
        plan: &str,
        workload: &str,
        site: &str,
    ) -> Result<Option<RecoveryPointRecord>, StoreError> {
        recovery_point::Entity::find()
            .filter(recovery_point::Column::Plan.eq(plan))
            .filter(recovery_point::Column::Workload.eq(workload))
            .filter(recovery_point::Column::Site.eq(site))
            .filter(recovery_point::Column::Drill.eq(false))
            .order_by_desc(recovery_point::Column::CapturedAt)
            .one(&self.db)
            .await?
            .map(RecoveryPointRecord::from_row)
            .transpose()
    }

    /// When each workload of `plan` was captured by its newest recovery
    /// point on `site` (not a drill's copies), by workload: one query for
    /// all of them, which is what an RPO lag needs.
    pub async fn newest_captures(
        &self,
        plan: &str,
        site: &str,
    ) -> Result<HashMap<String, i64>, StoreError> {
        let mut of = self.newest_captures_of(&[(plan, site)]).await?;
        Ok(of.remove(plan).unwrap_or_default())
    }

    /// [`Self::newest_captures`] of several plans at once, each on its own
    /// site (`(plan, site)` pairs), by plan: one statement for them all.
    pub async fn newest_captures_of(
        &self,
        plans: &[(&str, &str)],
    ) -> Result<HashMap<String, HashMap<String, i64>>, StoreError> {
        let mut out: HashMap<String, HashMap<String, i64>> = HashMap::new();
        if plans.is_empty() {
            return Ok(out);
        }
        let sites: HashMap<&str, &str> = plans.iter().copied().collect();
        let names: Vec<&str> = sites.keys().copied().collect();
        let mut newest: Vec<(String, String, String, Option<i64>)> = Vec::new();
        // A statement's bound values are limited (SQLite: 32,766).
        for chunk in names.chunks(1000) {
            newest.extend(
                recovery_point::Entity::find()
                    .select_only()
                    .column(recovery_point::Column::Plan)
                    .column(recovery_point::Column::Site)
                    .column(recovery_point::Column::Workload)
                    .column_as(recovery_point::Column::CapturedAt.max(), "newest")
                    .filter(recovery_point::Column::Plan.is_in(chunk.iter().copied()))
                    .filter(recovery_point::Column::Drill.eq(false))
                    .group_by(recovery_point::Column::Plan)
                    .group_by(recovery_point::Column::Site)
                    .group_by(recovery_point::Column::Workload)
                    .into_tuple::<(String, String, String, Option<i64>)>()
                    .all(&self.db)
                    .await?,
            );
        }
        for (plan, site, workload, at) in newest {
            if let (Some(at), Some(wanted)) = (at, sites.get(plan.as_str()))
                && *wanted == site
            {
                out.entry(plan).or_default().insert(workload, at);
            }
        }
        Ok(out)
    }

    /// A plan's recovery points, newest first (not a drill's copies: see
    /// [`Store::drill_points`]).
    pub async fn recovery_points(
        &self,
        plan: &str,
    ) -> Result<Vec<RecoveryPointRecord>, StoreError> {
        self.points_where(
            Condition::all()
                .add(recovery_point::Column::Plan.eq(plan))
                .add(recovery_point::Column::Drill.eq(false)),
        )
        .await
    }

    /// The recovery points a drill run made and has not removed, newest
    /// first.
    pub async fn drill_points(&self, run: &str) -> Result<Vec<RecoveryPointRecord>, StoreError> {
        self.points_where(
            Condition::all()
                .add(recovery_point::Column::Run.eq(run))
                .add(recovery_point::Column::Drill.eq(true)),
        )
        .await
    }

    async fn points_where(
        &self,
        condition: Condition,
    ) -> Result<Vec<RecoveryPointRecord>, StoreError> {
        recovery_point::Entity::find()
            .filter(condition)
            .order_by_desc(recovery_point::Column::CapturedAt)
            .all(&self.db)
            .await?
            .into_iter()
            .map(RecoveryPointRecord::from_row)
            .collect()
    }

    /// One recovery point by site and id, a drill's included.
    pub async fn recovery_point(
        &self,
        site: &str,
        id: &str,
    ) -> Result<Option<RecoveryPointRecord>, StoreError> {
        recovery_point::Entity::find_by_id((site.to_owned(), id.to_owned()))
            .one(&self.db)
            .await?
            .map(RecoveryPointRecord::from_row)
            .transpose()
    }

    /// Append to the audit log.
    pub async fn audit(
        &self,
        principal: &str,
        action: &str,
        target: &str,
        detail: serde_json::Value,
    ) -> Result<(), StoreError> {
        audit_in(&self.db, principal, action, target, detail).await
    }

    /// The newest `limit` audit entries, newest first.
    pub async fn audit_log(&self, limit: u64) -> Result<Vec<AuditEntry>, StoreError> {
        self.audit_page(None, limit).await
    }

    /// Record an event about a plan.
    pub async fn record_event(
        &self,
        plan: &str,
        kind: &str,
        detail: serde_json::Value,
    ) -> Result<EventRecord, StoreError> {
        let at = now_ms();
        let row = event::ActiveModel {
            at: Set(at),
            plan: Set(plan.to_owned()),
            kind: Set(kind.to_owned()),
            detail: Set(detail.to_string()),
            ..Default::default()
        }
        .insert(&self.db)
        .await?;
        decode_event(row)
    }

    /// Events, newest first: of one plan or all, of some kinds or all.
    pub async fn events(
        &self,
        plan: Option<&str>,
        kinds: &[&str],
        limit: u64,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let mut query = event::Entity::find();
        if let Some(plan) = plan {
            query = query.filter(event::Column::Plan.eq(plan));
        }
        if !kinds.is_empty() {
            query = query.filter(event::Column::Kind.is_in(kinds.iter().copied()));
        }
        query
            .order_by_desc(event::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(decode_event)
            .collect()
    }

    /// The newest event of each of `kinds` for every plan that has one
    /// (one statement, whatever the number of plans and of their other
    /// events: the index `events_by_kind` serves it).
    pub async fn newest_events(&self, kinds: &[&str]) -> Result<Vec<EventRecord>, StoreError> {
        let newest = Query::select()
            .expr(Expr::col(event::Column::Id).max())
            .from(event::Entity)
            .and_where(Expr::col(event::Column::Kind).is_in(kinds.iter().copied()))
            .group_by_columns([event::Column::Plan, event::Column::Kind])
            .to_owned();
        event::Entity::find()
            .filter(event::Column::Id.in_subquery(newest))
            .order_by_asc(event::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(decode_event)
            .collect()
    }
}

pub(crate) fn decode_event(row: event::Model) -> Result<EventRecord, StoreError> {
    Ok(EventRecord {
        detail: serde_json::from_str(&row.detail).map_err(|e| corrupt("event detail", e))?,
        id: row.id,
        at_ms: row.at,
        plan: row.plan,
        kind: row.kind,
    })
}

//! Runs and their steps: creating a run (with its idempotency key and the
//! plan's lifecycle transition), leasing it to one host replica
//! (claim, heartbeat, release), saving and appending steps, approval gates,
//! cancel, and finishing a run with its plan's lifecycle; the plugin
//! versions a run is pinned to.

use std::time::Duration;

use rebound_domain::{Lifecycle, Workflow};
use sea_orm::sea_query::{Asterisk, Expr, ExprTrait, LockBehavior, LockType, Query, UnionType};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait, Set, TransactionTrait,
};

use super::entity::{plan, run, run_plugin, step};
use super::{
    Cancel, NewStep, PlanRuns, RunRecord, RunStatus, SAVE_CHUNK, StepRecord, StepStatus, Store,
    StoreError, audit_in, corrupt, decode_plan, millis, now_ms, update_lifecycle,
};

/// What a run is created with.
#[derive(Clone, Copy)]
struct NewRun<'a> {
    plan_name: &'a str,
    workflow: Workflow,
    idempotency_key: Option<&'a str>,
    principal: &'a str,
    steps: &'a [NewStep],
    /// Begin the workflow's lifecycle transition with the run
    /// ([`Store::start_workflow`]); a bare run
    /// ([`Store::create_run_with_steps`]) leaves the lifecycle alone.
    lifecycle: bool,
    /// With the transition, protect onto this site (`Lifecycle::retarget`).
    new_standby: Option<&'a str>,
}

/// A run as a request to start it is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub run: RunRecord,
    /// An earlier request with the same idempotency key started it (this
    /// one started nothing) — also when the two raced and the other won.
    pub replayed: bool,
}

impl Store {
    /// Create a run without steps; see [`Self::create_run_with_steps`].
    pub async fn create_run(
        &self,
        plan_name: &str,
        workflow: Workflow,
        idempotency_key: Option<&str>,
        principal: &str,
    ) -> Result<RunRecord, StoreError> {
        self.create_run_with_steps(plan_name, workflow, idempotency_key, principal, &[])
            .await
    }

    /// Create a run and its planned steps in one transaction; with an
    /// idempotency key, the same key returns the run it created the first
    /// time.
    pub async fn create_run_with_steps(
        &self,
        plan_name: &str,
        workflow: Workflow,
        idempotency_key: Option<&str>,
        principal: &str,
        steps: &[NewStep],
    ) -> Result<RunRecord, StoreError> {
        self.create(NewRun {
            plan_name,
            workflow,
            idempotency_key,
            principal,
            steps,
            lifecycle: false,
            new_standby: None,
        })
        .await
        .map(|started| started.run)
    }

    /// Start a workflow on a plan: begin its lifecycle transition (refused
    /// with the reason when illegal) and create the run with its steps, in
    /// one transaction. The same idempotency key returns the same run.
    pub async fn start_workflow(
        &self,
        plan_name: &str,
        workflow: Workflow,
        idempotency_key: Option<&str>,
        principal: &str,
        steps: &[NewStep],
    ) -> Result<RunRecord, StoreError> {
        self.start_workflow_to(plan_name, workflow, None, idempotency_key, principal, steps)
            .await
            .map(|started| started.run)
    }

    /// [`Store::start_workflow`], a permanent failover protecting onto
    /// `new_standby` when given (see `Lifecycle::retarget`), saying whether
    /// the run was started by an earlier request with the same key.
    pub async fn start_workflow_to(
        &self,
        plan_name: &str,
        workflow: Workflow,
        new_standby: Option<&str>,
        idempotency_key: Option<&str>,
        principal: &str,
        steps: &[NewStep],
    ) -> Result<Started, StoreError> {
        self.create(NewRun {
            plan_name,
            workflow,
            idempotency_key,
            principal,
            steps,
            lifecycle: true,
            new_standby,
        })
        .await
    }

    /// Create a run once per idempotency key (see [`Started`]).
    async fn create(&self, new: NewRun<'_>) -> Result<Started, StoreError> {
        let NewRun {
            plan_name,
            workflow,
            idempotency_key,
            ..
        } = new;
        let replayed = |run| Started {
            run,
            replayed: true,
        };
        if let Some(key) = idempotency_key
            && let Some(existing) = self.run_by_key(key).await?
        {
            return same_request(existing, plan_name, workflow).map(replayed);
        }
        let created = self.create_once(new).await;
        match (created, idempotency_key) {
            // Two requests with one key raced (a retry reaching another
            // host): the other one moved the plan or inserted the key
            // first. Its run is the answer.
            (Err(e), Some(key)) => match self.run_by_key(key).await? {
                Some(existing) => same_request(existing, plan_name, workflow).map(replayed),
                None => Err(e),
            },
            (created, _) => created.map(|run| Started {
                run,
                replayed: false,
            }),
        }
    }

    /// Create the run (its lifecycle transition begun, when it has one)
    /// and its steps in one transaction.
    async fn create_once(&self, new: NewRun<'_>) -> Result<RunRecord, StoreError> {
        let NewRun {
            plan_name,
            workflow,
            idempotency_key,
            principal,
            steps,
            lifecycle,
            new_standby,
        } = new;
        self.plan(plan_name).await?;
        let mut bytes = [0u8; 12];
        rand::Rng::fill(&mut rand::thread_rng(), &mut bytes[..]);
        let id = format!("run-{}", hex::encode(bytes));
        let now = now_ms();
        let tx = self.db.begin().await?;
        if lifecycle {
            let row = plan::Entity::find_by_id(plan_name.to_owned())
                .filter(plan::Column::DeletedAt.is_null())
                .one(&tx)
                .await?
                .ok_or_else(|| StoreError::NotFound {
                    kind: "plan",
                    id: plan_name.to_owned(),
                })?;
            let mut current = decode_plan(&row)?.lifecycle;
            current.begin(workflow)?;
            if let Some(site) = new_standby {
                current.retarget(site)?;
            }
            update_lifecycle(&tx, plan_name, &current, row.revision).await?;
            audit_in(
                &tx,
                principal,
                &format!("plan.{workflow}.begin"),
                plan_name,
                match new_standby {
                    Some(site) => serde_json::json!({
                        "state": current.state, "epoch": current.epoch, "new_standby": site,
                    }),
                    None => serde_json::json!({"state": current.state, "epoch": current.epoch}),
                },
            )
            .await?;
        }
        let inserted = run::ActiveModel {
            id: Set(id.clone()),
            plan: Set(plan_name.to_owned()),
            workflow: Set(workflow.to_string()),
            status: Set(RunStatus::Pending.as_str().to_owned()),
            idempotency_key: Set(idempotency_key.map(str::to_owned)),
            lease_owner: Set(None),
            lease_expires_at: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
            finished_at: Set(None),
            lifecycle: Set(lifecycle),
            cancel_requested_by: Set(None),
        }
        .insert(&tx)
        .await?;
        for (seq, new) in steps.iter().enumerate() {
            let seq =
                i32::try_from(seq).map_err(|_| StoreError::Conflict("too many steps".into()))?;
            new_step(&id, seq, new).insert(&tx).await?;
        }
        audit_in(
            &tx,
            principal,
            "run.create",
            &id,
            serde_json::json!({"plan": plan_name, "workflow": workflow}),
        )
        .await?;
        tx.commit().await?;
        decode_run(&inserted)
    }

    pub(crate) async fn run_by_key(&self, key: &str) -> Result<Option<RunRecord>, StoreError> {
        run::Entity::find()
            .filter(run::Column::IdempotencyKey.eq(key))
            .one(&self.db)
            .await?
            .as_ref()
            .map(decode_run)
            .transpose()
    }

    pub async fn run(&self, id: &str) -> Result<RunRecord, StoreError> {
        decode_run(&find_run(&self.db, id).await?)
    }

    /// A plan's runs, newest first — every one: a plan gathers a run per
    /// replication cycle, so the engine asks for those it needs
    /// ([`Store::plan_runs`]).
    pub async fn runs_of(&self, plan: &str) -> Result<Vec<RunRecord>, StoreError> {
        self.plan_runs(plan, PlanRuns::default()).await
    }

    /// The runs of a plan `which` selects, newest first.
    pub async fn plan_runs(
        &self,
        plan: &str,
        which: PlanRuns<'_>,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let mut query = run::Entity::find().filter(run::Column::Plan.eq(plan));
        if !which.workflows.is_empty() {
            let names = which.workflows.iter().map(ToString::to_string);
            query = query.filter(run::Column::Workflow.is_in(names));
        }
        if !which.statuses.is_empty() {
            let names = which.statuses.iter().map(|s| s.as_str());
            query = query.filter(run::Column::Status.is_in(names));
        }
        query = query
            .order_by_desc(run::Column::CreatedAt)
            .order_by_desc(run::Column::Id);
        if let Some(limit) = which.limit {
            query = query.limit(limit);
        }
        query.all(&self.db).await?.iter().map(decode_run).collect()
    }

    /// The newest run of each of `workflows` (that has one) with `status`:
    /// one statement of one indexed `LIMIT 1` select per workflow — what a
    /// forecast draws on, asked for on every policy tick and compliance
    /// read of every plan, so one round trip to the store instead of one
    /// per workflow.
    pub async fn newest_runs(
        &self,
        plan: &str,
        workflows: &[Workflow],
        status: RunStatus,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let mut of = self
            .newest_runs_of(&[plan], workflows, Some(status))
            .await?;
        Ok(of.remove(plan).unwrap_or_default())
    }

    /// [`Self::newest_runs`] of several plans at once (any status when
    /// `status` is `None`), by plan: the same indexed `LIMIT 1` selects, a
    /// few hundred to a statement (SQLite's limit of a compound select is
    /// 500), so reading every plan's costs a handful of round trips to the
    /// store rather than one per plan.
    pub async fn newest_runs_of(
        &self,
        plans: &[&str],
        workflows: &[Workflow],
        status: Option<RunStatus>,
    ) -> Result<std::collections::HashMap<String, Vec<RunRecord>>, StoreError> {
        /// Selects per statement.
        const COMPOUND: usize = 400;
        let newest = |i: usize, plan: &str, workflow: &Workflow| {
            let mut one = run::Entity::find()
                .filter(run::Column::Plan.eq(plan))
                .filter(run::Column::Workflow.eq(workflow.to_string()));
            if let Some(status) = status {
                one = one.filter(run::Column::Status.eq(status.as_str()));
            }
            let one = one
                .order_by_desc(run::Column::CreatedAt)
                .order_by_desc(run::Column::Id)
                .limit(1)
                .into_query();
            Query::select()
                .column(Asterisk)
                .from_subquery(one, format!("newest_{i}"))
                .to_owned()
        };
        let pairs: Vec<(&str, &Workflow)> = plans
            .iter()
            .flat_map(|plan| workflows.iter().map(move |w| (*plan, w)))
            .collect();
        let mut out: std::collections::HashMap<String, Vec<RunRecord>> = Default::default();
        for chunk in pairs.chunks(COMPOUND) {
            let mut selects = chunk
                .iter()
                .enumerate()
                .map(|(i, (plan, workflow))| newest(i, plan, workflow));
            let Some(mut union) = selects.next() else {
                continue;
            };
            for select in selects {
                union.union(UnionType::All, select);
            }
            let statement = self.db.get_database_backend().build(&union);
            for row in run::Model::find_by_statement(statement)
                .all(&self.db)
                .await?
            {
                let run = decode_run(&row)?;
                out.entry(run.plan.clone()).or_default().push(run);
            }
        }
        Ok(out)
    }

    /// Claim an active run whose lease is free or expired, for `lease`.
    pub async fn claim_run(
        &self,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<RunRecord>, StoreError> {
        let now = now_ms();
        let tx = self.db.begin().await?;
        let mut query = run::Entity::find()
            .filter(run::Column::Status.is_in(RunStatus::ACTIVE))
            .filter(
                run::Column::LeaseExpiresAt
                    .is_null()
                    .or(run::Column::LeaseExpiresAt.lt(now)),
            )
            .order_by_asc(run::Column::CreatedAt)
            .limit(8);
        if tx.get_database_backend() == DbBackend::Postgres {
            // Replicas skip rows another replica is claiming right now.
            query = query.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        }
        let candidates = query.all(&tx).await?;
        for candidate in candidates {
            let claimed = run::Entity::update_many()
                .col_expr(run::Column::LeaseOwner, Expr::value(owner))
                .col_expr(
                    run::Column::LeaseExpiresAt,
                    Expr::value(now + millis(lease)),
                )
                .col_expr(run::Column::UpdatedAt, Expr::value(now))
                .filter(run::Column::Id.eq(candidate.id.clone()))
                .filter(
                    run::Column::LeaseExpiresAt
                        .is_null()
                        .or(run::Column::LeaseExpiresAt.lt(now)),
                )
                .exec(&tx)
                .await?;
            if claimed.rows_affected == 1 {
                let previous = candidate.lease_owner.clone();
                audit_in(
                    &tx,
                    owner,
                    "run.claim",
                    &candidate.id,
                    serde_json::json!({"previous_owner": previous}),
                )
                .await?;
                tx.commit().await?;
                return self.run(&candidate.id).await.map(Some);
            }
        }
        tx.commit().await?;
        Ok(None)
    }

    /// Give up the leases `owner` holds, so another host claims those runs
    /// at once instead of after the leases expire (a host stopping, its
    /// workers already stopped). Each release is audited. Returns the runs.
    pub async fn release_leases(&self, owner: &str) -> Result<Vec<String>, StoreError> {
        let now = now_ms();
        let tx = self.db.begin().await?;
        let held = run::Entity::find()
            .filter(run::Column::Status.is_in(RunStatus::ACTIVE))
            .filter(run::Column::LeaseOwner.eq(owner))
            .filter(run::Column::LeaseExpiresAt.gte(now))
            .all(&tx)
            .await?;
        let mut released = Vec::new();
        for held in held {
            run::Entity::update_many()
                .col_expr(run::Column::LeaseExpiresAt, Expr::value(now - 1))
                .col_expr(run::Column::UpdatedAt, Expr::value(now))
                .filter(run::Column::Id.eq(held.id.clone()))
                .filter(run::Column::LeaseOwner.eq(owner))
                .exec(&tx)
                .await?;
            audit_in(
                &tx,
                owner,
                "run.release",
                &held.id,
                serde_json::json!({"reason": "host stopping"}),
            )
            .await?;
            released.push(held.id);
        }
        tx.commit().await?;
        Ok(released)
    }

    /// Renew a lease; fails once another replica has taken the run over.
    pub async fn heartbeat(
        &self,
        run_id: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let renewed = run::Entity::update_many()
            .col_expr(
                run::Column::LeaseExpiresAt,
                Expr::value(now + millis(lease)),
            )
            .filter(run::Column::Id.eq(run_id))
            .filter(run::Column::LeaseOwner.eq(owner))
            .filter(run::Column::Status.is_in(RunStatus::ACTIVE))
            .exec(&self.db)
            .await?;
        if renewed.rows_affected == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "the lease of run '{run_id}' is no longer held by '{owner}'; stop working on it"
            )))
        }
    }

    /// Set a run's status as its lease holder.
    pub async fn set_run_status(
        &self,
        run_id: &str,
        owner: &str,
        status: RunStatus,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin().await?;
        let update = run_status_update(status);
        let changed = update
            .filter(run::Column::Id.eq(run_id))
            .filter(run::Column::LeaseOwner.eq(owner))
            .exec(&tx)
            .await?;
        if changed.rows_affected != 1 {
            return Err(StoreError::Conflict(format!(
                "run '{run_id}' is not leased by '{owner}'"
            )));
        }
        audit_in(
            &tx,
            owner,
            "run.status",
            run_id,
            serde_json::json!({"status": status}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A run's steps in order.
    pub async fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>, StoreError> {
        step::Entity::find()
            .filter(step::Column::Run.eq(run_id))
            .order_by_asc(step::Column::Seq)
            .all(&self.db)
            .await?
            .iter()
            .map(decode_step)
            .collect()
    }

    /// The steps of each of `runs`, in order, in one query (runs without
    /// steps are left out).
    pub async fn steps_of(
        &self,
        runs: &[&str],
    ) -> Result<std::collections::HashMap<String, Vec<StepRecord>>, StoreError> {
        let mut out: std::collections::HashMap<String, Vec<StepRecord>> = Default::default();
        if runs.is_empty() {
            return Ok(out);
        }
        let rows = step::Entity::find()
            .filter(step::Column::Run.is_in(runs.iter().copied()))
            .order_by_asc(step::Column::Run)
            .order_by_asc(step::Column::Seq)
            .all(&self.db)
            .await?;
        for row in &rows {
            out.entry(row.run.clone())
                .or_default()
                .push(decode_step(row)?);
        }
        Ok(out)
    }

    /// Save steps of one run as its lease holder and renew the lease, in
    /// one transaction (a stage's steps are saved together). Refused with
    /// [`StoreError::Conflict`] — nothing saved — when `owner` no longer
    /// holds the lease.
    pub async fn save_steps(
        &self,
        owner: &str,
        run_id: &str,
        lease: Duration,
        records: &[StepRecord],
    ) -> Result<(), StoreError> {
        let tx = self.db.begin().await?;
        let renewed = run::Entity::update_many()
            .col_expr(
                run::Column::LeaseExpiresAt,
                Expr::value(now_ms() + millis(lease)),
            )
            .filter(run::Column::Id.eq(run_id))
            .filter(run::Column::LeaseOwner.eq(owner))
            .filter(run::Column::Status.is_in(RunStatus::ACTIVE))
            .exec(&tx)
            .await?;
        if renewed.rows_affected != 1 {
            return Err(StoreError::Conflict(format!(
                "steps of run '{run_id}' were not saved: '{owner}' no longer holds the run's lease"
            )));
        }
        if let Some(stray) = records.iter().find(|r| r.run != run_id) {
            return Err(StoreError::Conflict(format!(
                "step {} belongs to run '{}', not '{run_id}'",
                stray.seq, stray.run
            )));
        }
        // One statement per chunk of steps: the new values as a table of
        // VALUES joined on the key, so a stage of hundreds of steps costs a
        // few statements, not hundreds.
        let backend = tx.get_database_backend();
        for chunk in records.chunks(SAVE_CHUNK) {
            let mut values: Vec<sea_orm::Value> = Vec::with_capacity(chunk.len() * 8 + 1);
            let mut rows = Vec::with_capacity(chunk.len());
            for record in chunk {
                let row: [sea_orm::Value; 8] = [
                    record.seq.into(),
                    record.status.as_str().into(),
                    record.operation.as_ref().map(ToString::to_string).into(),
                    record.attempts.into(),
                    record.started_at_ms.into(),
                    record.finished_at_ms.into(),
                    record.error.clone().into(),
                    record.output.as_ref().map(ToString::to_string).into(),
                ];
                let mut marks = Vec::with_capacity(row.len());
                for value in row {
                    values.push(value);
                    marks.push(mark(backend, values.len()));
                }
                rows.push(format!("({})", marks.join(", ")));
            }
            values.push(run_id.into());
            let sql = format!(
                "WITH v(seq, status, operation, attempts, started_at, finished_at, error, output) \
                 AS (VALUES {rows}) \
                 UPDATE steps SET status = v.status, operation = v.operation, \
                 attempts = v.attempts, started_at = v.started_at, finished_at = v.finished_at, \
                 error = v.error, output = v.output \
                 FROM v WHERE steps.run = {run} AND steps.seq = v.seq",
                rows = rows.join(", "),
                run = mark(backend, values.len()),
            );
            tx.execute_raw(sea_orm::Statement::from_sql_and_values(
                backend, sql, values,
            ))
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Finish a lifecycle run as its lease holder: finish the plan's
    /// transition and the run in one transaction. A success the lifecycle
    /// refuses (a planned promotion whose old primary was not fenced) is
    /// rolled back instead and the run fails. Returns the run's status.
    pub async fn finish_workflow(
        &self,
        run_id: &str,
        owner: &str,
        succeeded: bool,
        old_primary_fenced: bool,
    ) -> Result<RunStatus, StoreError> {
        let tx = self.db.begin().await?;
        let run = find_run(&tx, run_id).await?;
        if run.lease_owner.as_deref() != Some(owner) {
            return Err(StoreError::Conflict(format!(
                "run '{run_id}' is not leased by '{owner}'"
            )));
        }
        let record = decode_run(&run)?;
        let (lifecycle, refusal) =
            finish_lifecycle(&tx, &record, succeeded, old_primary_fenced).await?;
        let status = if succeeded && refusal.is_none() {
            RunStatus::Succeeded
        } else if record.cancel_requested_by.is_some() {
            RunStatus::Cancelled
        } else {
            RunStatus::Failed
        };
        run_status_update(status)
            .filter(run::Column::Id.eq(run_id))
            .exec(&tx)
            .await?;
        audit_in(
            &tx,
            owner,
            &format!("plan.{}.finish", record.workflow),
            &run.plan,
            serde_json::json!({
                "run": run_id, "status": status, "state": lifecycle.state,
                "epoch": lifecycle.epoch, "primary": lifecycle.primary, "refused": refusal,
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(status)
    }

    /// Append steps to a run as its lease holder (a failed run's
    /// compensation), in one transaction, after its last step. Returns the
    /// run's steps.
    pub async fn append_steps(
        &self,
        run_id: &str,
        owner: &str,
        steps: &[NewStep],
    ) -> Result<Vec<StepRecord>, StoreError> {
        let tx = self.db.begin().await?;
        let run = find_run(&tx, run_id).await?;
        if run.lease_owner.as_deref() != Some(owner) {
            return Err(StoreError::Conflict(format!(
                "steps were not added to run '{run_id}': '{owner}' no longer holds its lease"
            )));
        }
        let next = step::Entity::find()
            .filter(step::Column::Run.eq(run_id))
            .order_by_desc(step::Column::Seq)
            .one(&tx)
            .await?
            .map_or(0, |last| last.seq + 1);
        for (i, new) in steps.iter().enumerate() {
            let seq = next
                + i32::try_from(i).map_err(|_| StoreError::Conflict("too many steps".into()))?;
            new_step(run_id, seq, new).insert(&tx).await?;
        }
        audit_in(
            &tx,
            owner,
            "run.steps_added",
            run_id,
            serde_json::json!({"from": next, "names": steps.iter().map(|s| &s.name).collect::<Vec<_>>()}),
        )
        .await?;
        tx.commit().await?;
        self.steps(run_id).await
    }

    /// An operator approves the run's next approval step (before or while
    /// the run waits at it). A waiting run becomes claimable again.
    pub async fn approve(&self, run_id: &str, principal: &str) -> Result<(), StoreError> {
        let tx = self.db.begin().await?;
        let run = find_run(&tx, run_id).await?;
        let status = RunStatus::parse(&run.status).unwrap_or(RunStatus::Failed);
        if !matches!(
            status,
            RunStatus::Pending | RunStatus::Running | RunStatus::WaitingApproval
        ) {
            return Err(StoreError::Conflict(format!(
                "run '{run_id}' is {}; only a run that has not finished can be approved",
                status.as_str()
            )));
        }
        let step = step::Entity::find()
            .filter(step::Column::Run.eq(run_id))
            .filter(step::Column::Status.eq(StepStatus::Pending.as_str()))
            .order_by_asc(step::Column::Seq)
            .all(&tx)
            .await?
            .into_iter()
            .find(is_approval)
            .ok_or_else(|| {
                StoreError::Conflict(format!("run '{run_id}' has no approval left to give"))
            })?;
        let now = now_ms();
        let output = serde_json::json!({"approved_by": principal, "at_ms": now}).to_string();
        step::Entity::update_many()
            .col_expr(
                step::Column::Status,
                Expr::value(StepStatus::Succeeded.as_str()),
            )
            .col_expr(step::Column::StartedAt, Expr::value(now))
            .col_expr(step::Column::FinishedAt, Expr::value(now))
            .col_expr(step::Column::Output, Expr::value(output))
            .filter(step::Column::Run.eq(run_id))
            .filter(step::Column::Seq.eq(step.seq))
            .exec(&tx)
            .await?;
        if status == RunStatus::WaitingApproval {
            run_status_update(RunStatus::Running)
                .filter(run::Column::Id.eq(run_id))
                .exec(&tx)
                .await?;
        }
        audit_in(
            &tx,
            principal,
            "run.approve",
            run_id,
            serde_json::json!({"step": step.seq}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The lease holder reached approval step `seq`: `true` when it was
    /// approved already; otherwise the run waits (status
    /// `waiting_approval`, lease released) and `false` is returned.
    pub async fn await_approval(
        &self,
        run_id: &str,
        owner: &str,
        seq: i32,
    ) -> Result<bool, StoreError> {
        let tx = self.db.begin().await?;
        let run = find_run(&tx, run_id).await?;
        if run.lease_owner.as_deref() != Some(owner) {
            return Err(StoreError::Conflict(format!(
                "run '{run_id}' is not leased by '{owner}'"
            )));
        }
        let step = step::Entity::find_by_id((run_id.to_owned(), seq))
            .one(&tx)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                kind: "step",
                id: format!("{run_id}/{seq}"),
            })?;
        if step.status == StepStatus::Succeeded.as_str() {
            tx.commit().await?;
            return Ok(true);
        }
        run_status_update(RunStatus::WaitingApproval)
            .filter(run::Column::Id.eq(run_id))
            .exec(&tx)
            .await?;
        audit_in(
            &tx,
            owner,
            "run.waiting_approval",
            run_id,
            serde_json::json!({"step": seq}),
        )
        .await?;
        tx.commit().await?;
        Ok(false)
    }

    /// Cancel a run. One nobody is driving (pending, or waiting for
    /// approval) ends `cancelled` at once and a lifecycle run rolls the
    /// plan back to where it started, in one transaction
    /// ([`Cancel::Cancelled`]). One a host is driving records the request
    /// ([`Cancel::Requested`]): the host stops at its next stage boundary
    /// (steps in flight finish), undoes what needs undoing as for a failure
    /// (compensation) and ends the run `cancelled`. A finished run is
    /// refused with the reason.
    pub async fn cancel_run(&self, run_id: &str, principal: &str) -> Result<Cancel, StoreError> {
        let tx = self.db.begin().await?;
        let run = find_run(&tx, run_id).await?;
        let record = decode_run(&run)?;
        if !matches!(
            record.status,
            RunStatus::Pending | RunStatus::Running | RunStatus::WaitingApproval
        ) {
            return Err(StoreError::Conflict(format!(
                "run '{run_id}' is {}; only a run that has not finished can be cancelled",
                record.status.as_str(),
            )));
        }
        let driven = record.status == RunStatus::Running
            || (record.status == RunStatus::Pending
                && run.lease_expires_at.is_some_and(|t| t >= now_ms()));
        if driven {
            if record.cancel_requested_by.is_none() {
                run::Entity::update_many()
                    .col_expr(run::Column::CancelRequestedBy, Expr::value(principal))
                    .filter(run::Column::Id.eq(run_id))
                    .exec(&tx)
                    .await?;
                let detail = serde_json::json!({"driven_by": run.lease_owner});
                audit_in(&tx, principal, "run.cancel_requested", run_id, detail).await?;
            }
            tx.commit().await?;
            return Ok(Cancel::Requested);
        }
        let mut detail = serde_json::json!({});
        if record.lifecycle {
            let (lifecycle, _) = finish_lifecycle(&tx, &record, false, false).await?;
            detail = serde_json::json!({"state": lifecycle.state, "primary": lifecycle.primary});
        }
        run_status_update(RunStatus::Cancelled)
            .filter(run::Column::Id.eq(run_id))
            .exec(&tx)
            .await?;
        audit_in(&tx, principal, "run.cancel", run_id, detail).await?;
        tx.commit().await?;
        Ok(Cancel::Cancelled)
    }
}

/// The `n`th (1-based) bind placeholder of a statement.
pub(crate) fn mark(backend: DbBackend, n: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => "?".to_owned(),
    }
}

/// A step row to insert: pending, keyed `<run>/<seq>`.
pub(crate) fn new_step(run: &str, seq: i32, new: &NewStep) -> step::ActiveModel {
    step::ActiveModel {
        run: Set(run.to_owned()),
        seq: Set(seq),
        name: Set(new.name.clone()),
        status: Set(StepStatus::Pending.as_str().into()),
        idempotency_key: Set(format!("{run}/{seq}")),
        operation: Set(None),
        attempts: Set(0),
        started_at: Set(None),
        finished_at: Set(None),
        error: Set(None),
        input: Set(new.input.to_string()),
        output: Set(None),
    }
}

pub(crate) async fn find_run(
    db: &impl ConnectionTrait,
    run_id: &str,
) -> Result<run::Model, StoreError> {
    run::Entity::find_by_id(run_id.to_owned())
        .one(db)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            kind: "run",
            id: run_id.to_owned(),
        })
}

/// Whether a stored step is an operator's approval gate.
pub(crate) fn is_approval(step: &step::Model) -> bool {
    serde_json::from_str::<serde_json::Value>(&step.input)
        .is_ok_and(|input| input["action"] == APPROVAL_ACTION)
}

/// The `action` of an approval step (see `Store::approve`).
pub const APPROVAL_ACTION: &str = "approval";

/// The update that moves a run to `status`: a finished run, or one that
/// waits for an operator, releases its lease. Callers add the filters.
pub(crate) fn run_status_update(status: RunStatus) -> sea_orm::UpdateMany<run::Entity> {
    let now = now_ms();
    let finished = matches!(
        status,
        RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
    );
    let mut update = run::Entity::update_many()
        .col_expr(run::Column::Status, Expr::value(status.as_str()))
        .col_expr(run::Column::UpdatedAt, Expr::value(now));
    if finished {
        update = update.col_expr(run::Column::FinishedAt, Expr::value(now));
    }
    if finished || status == RunStatus::WaitingApproval {
        update = update
            .col_expr(run::Column::LeaseOwner, Expr::value(Option::<String>::None))
            .col_expr(
                run::Column::LeaseExpiresAt,
                Expr::value(Option::<i64>::None),
            );
    }
    update
}

/// End a lifecycle run's transition of its plan: `succeeded` as the run
/// says, unless the lifecycle refuses it (an unconfirmed fence), in which
/// case the transition is rolled back and the refusal returned.
pub(crate) async fn finish_lifecycle(
    db: &impl ConnectionTrait,
    run: &RunRecord,
    succeeded: bool,
    old_primary_fenced: bool,
) -> Result<(Lifecycle, Option<String>), StoreError> {
    let plan_row = plan::Entity::find_by_id(run.plan.clone())
        .one(db)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            kind: "plan",
            id: run.plan.clone(),
        })?;
    let mut lifecycle = decode_plan(&plan_row)?.lifecycle;
    let mut refusal = None;
    if let Err(e) = lifecycle.finish(run.workflow, succeeded, old_primary_fenced) {
        refusal = Some(e.to_string());
        lifecycle.finish(run.workflow, false, false)?;
    }
    update_lifecycle(db, &run.plan, &lifecycle, plan_row.revision).await?;
    Ok((lifecycle, refusal))
}

pub(crate) fn same_request(
    existing: RunRecord,
    plan: &str,
    workflow: Workflow,
) -> Result<RunRecord, StoreError> {
    if existing.plan == plan && existing.workflow == workflow {
        Ok(existing)
    } else {
        Err(StoreError::Conflict(format!(
            "idempotency key already used for {} of plan '{}'; use a new key for a different request",
            existing.workflow, existing.plan
        )))
    }
}

pub(crate) fn decode_step(row: &step::Model) -> Result<StepRecord, StoreError> {
    let what = || format!("step {} of run '{}'", row.seq, row.run);
    let json = |text: &str| {
        serde_json::from_str::<serde_json::Value>(text).map_err(|e| corrupt(what(), e))
    };
    Ok(StepRecord {
        run: row.run.clone(),
        seq: row.seq,
        name: row.name.clone(),
        status: serde_json::from_value(serde_json::Value::String(row.status.clone()))
            .map_err(|e| corrupt(what(), e))?,
        idempotency_key: row.idempotency_key.clone(),
        operation: row.operation.as_deref().map(json).transpose()?,
        attempts: row.attempts,
        started_at_ms: row.started_at,
        finished_at_ms: row.finished_at,
        error: row.error.clone(),
        input: json(&row.input)?,
        output: row.output.as_deref().map(json).transpose()?,
    })
}

pub(crate) fn decode_run(row: &run::Model) -> Result<RunRecord, StoreError> {
    Ok(RunRecord {
        id: row.id.clone(),
        plan: row.plan.clone(),
        workflow: serde_json::from_value(serde_json::Value::String(row.workflow.clone()))
            .map_err(|e| corrupt(format!("workflow of run '{}'", row.id), e))?,
        status: RunStatus::parse(&row.status)
            .ok_or_else(|| corrupt(format!("status of run '{}'", row.id), &row.status))?,
        idempotency_key: row.idempotency_key.clone(),
        lease_owner: row.lease_owner.clone(),
        lease_expires_at_ms: row.lease_expires_at,
        lifecycle: row.lifecycle,
        cancel_requested_by: row.cancel_requested_by.clone(),
        created_at_ms: row.created_at,
    })
}

impl Store {
    /// Pin `run` to `version` of `plugin` unless it is pinned to one
    /// already; the version it is pinned to either way. Steps pinning at
    /// once agree: the first insert wins.
    pub async fn pin_plugin(
        &self,
        run: &str,
        plugin: &str,
        version: &str,
    ) -> Result<String, StoreError> {
        let row = run_plugin::ActiveModel {
            run: Set(run.to_owned()),
            plugin: Set(plugin.to_owned()),
            version: Set(version.to_owned()),
        };
        run_plugin::Entity::insert(row)
            .on_conflict_do_nothing_on([run_plugin::Column::Run, run_plugin::Column::Plugin])
            .exec(&self.db)
            .await?;
        run_plugin::Entity::find_by_id((run.to_owned(), plugin.to_owned()))
            .one(&self.db)
            .await?
            .map(|row| row.version)
            .ok_or_else(|| StoreError::NotFound {
                kind: "plugin pin of run",
                id: format!("{run}/{plugin}"),
            })
    }

    /// The plugin versions `run` is pinned to, by plugin name.
    pub async fn run_plugins(
        &self,
        run: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, StoreError> {
        Ok(run_plugin::Entity::find()
            .filter(run_plugin::Column::Run.eq(run))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| (row.plugin, row.version))
            .collect())
    }
}

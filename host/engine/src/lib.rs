//! Durable runs: the executor that claims a run's lease, drives its
//! persisted steps to completion and survives being killed at any moment.
//!
//! The contract with a [`StepRunner`] (the provider side):
//! - every call for a step carries the step's idempotency key
//!   (`<run>/<seq>`, the same on every attempt), so a runner must make
//!   `start` idempotent under it — a repeated start returns the same
//!   operation and repeats no side effect;
//! - the attempt is persisted *before* `start` is called and the returned
//!   operation handle *before* it is polled, so after a crash the next
//!   holder of the lease either polls the persisted handle or calls `start`
//!   again with the same key.
//!
//! [`plan_steps`] derives each workflow's steps from a plan and its
//! lifecycle; a run started with `Store::start_workflow` moves the plan's
//! lifecycle when it finishes. An approval step pauses the run (status
//! `waiting_approval`, lease released) until an operator approves it or
//! cancels the run. Steps are grouped in stages (a tier's
//! materializations, say): stages run in order, the steps of a stage
//! concurrently, and a stage's changes are persisted in one transaction per
//! round.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

mod adopt;
pub mod detection;
mod gate;
mod hook;
mod leftovers;
pub mod metrics;
mod planner;
mod plugin_steps;
pub mod plugins;
pub mod policy;
mod report;
pub mod runbook;
mod site_failover;
#[cfg(test)]
mod test_steps;

pub use planner::{PREFLIGHT_ACTION, QUIESCE_ACTION, compensation_steps, plan_steps};
pub use site_failover::{
    PlanFailover, PlanFailoverPreview, SiteFailover, SiteFailoverPreview, SkippedPlan,
    fail_over_site, preview_site_failover,
};

/// The event kind of a compensated run's standby incarnations left in
/// place, fenced (see [`Executor`]'s compensation).
pub const STANDBYS_KEPT: &str = "standbys.kept";
pub use hook::{HookPolicy, signature as hook_signature};
pub use leftovers::{DRILL_LEFTOVERS, DRILL_LEFTOVERS_REMOVED, LEFT_BY};
pub use plugin_steps::{
    BoundSite, DEFAULT_MAX_CALLS, DRILL_LABEL, EPOCH_LABEL, InventoryError, PluginSteps,
    WORKLOAD_LABEL, mover_endpoint,
};
pub use report::{
    DrillLeftover, Forecast, MEASURED_WORKFLOWS, PlannedStep, ReturnLeg, RunReport, StepTiming,
    default_duration_ms, dry_run, dry_run_of, forecast, report,
};

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use rebound_domain::Workflow;
use rebound_store::{
    NewStep, PlanRuns, RunRecord, RunStatus, StepRecord, StepStatus, Store, StoreError,
};
use serde_json::Value;

/// What `start` did.
#[derive(Debug, Clone, PartialEq)]
pub enum Started {
    /// Finished within the call.
    Done(Value),
    /// A long operation to poll; the handle is persisted first.
    Operation(Value),
}

/// What `poll` found.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    Running,
    Done(Value),
    Failed(String),
}

/// Why a runner call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// Worth retrying with the same key (throttled, transient).
    #[error("retryable: {0}")]
    Retryable(String),
    #[error("{0}")]
    Fatal(String),
}

/// The provider side of the steps.
pub trait StepRunner: Send + Sync {
    fn start<'a>(&'a self, step: &'a StepRecord) -> BoxFuture<'a, Result<Started, StepError>>;
    fn poll<'a>(
        &'a self,
        step: &'a StepRecord,
        operation: &'a Value,
    ) -> BoxFuture<'a, Result<Progress, StepError>>;
    /// A step that holds `operation` will not be polled again: it failed
    /// (the provider's answer, or retries past the RTO budget), or its run
    /// stopped on another step's failure while it was in flight. Release
    /// what the operation holds that nothing else will (a transfer's
    /// endpoints, say) — best effort, and idempotent: a host that dies
    /// meanwhile calls it again when it resumes the run. Nothing by
    /// default.
    fn abandon<'a>(&'a self, _step: &'a StepRecord, _operation: &'a Value) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Trigger `workflow` on a plan: derive its step plan from the plan's
/// current lifecycle and start the run (the lifecycle transition and the
/// run's creation are one transaction, refused with the reason when the
/// transition is illegal). The same idempotency key returns the same run.
/// Every caller that starts runs (API, CLI, policy engine, demo) goes
/// through here.
///
/// A workflow that moves the primary (failover, failback, migration)
/// preempts the plan's unfinished replication cycles and drills: they are
/// cancelled (one being driven stops at its next stage and is compensated
/// — a drill's sandbox torn down), so no copy of the old primary's data and
/// no rehearsal races the real thing.
pub async fn trigger(
    store: &Store,
    plan: &str,
    workflow: Workflow,
    idempotency_key: Option<&str>,
    principal: &str,
) -> Result<RunRecord, EngineError> {
    trigger_to(store, plan, workflow, None, idempotency_key, principal)
        .await
        .map(|started| started.run)
}

/// [`trigger`], a permanent failover protecting the new primary onto
/// `new_standby` when given — a new site, the old primary being lost for
/// good — instead of back onto the old primary. Refused for any other
/// workflow, and for the primary itself. Says whether an earlier request
/// with the same idempotency key started the run.
pub async fn trigger_to(
    store: &Store,
    plan: &str,
    workflow: Workflow,
    new_standby: Option<&str>,
    idempotency_key: Option<&str>,
    principal: &str,
) -> Result<rebound_store::Started, EngineError> {
    let record = store.plan(plan).await?;
    let mut lifecycle = record.lifecycle;
    if let Some(site) = new_standby {
        if workflow != Workflow::PermanentFailover {
            return Err(EngineError::Store(StoreError::Transition(
                rebound_domain::TransitionError {
                    workflow,
                    state: lifecycle.state,
                    hint: "only a permanent failover protects onto a new site".into(),
                },
            )));
        }
        // Planned as it will run: replicating to the new site.
        lifecycle.standby = site.to_owned();
    }
    let steps = steps_of(store, plan, &record.document, &lifecycle, workflow).await?;
    let started = store
        .start_workflow_to(
            plan,
            workflow,
            new_standby,
            idempotency_key,
            principal,
            &steps,
        )
        .await?;
    if matches!(
        workflow,
        Workflow::Failover | Workflow::Failback | Workflow::Migration | Workflow::Unprotect
    ) {
        preempt(store, &started.run, principal).await?;
    }
    Ok(started)
}

/// The steps `workflow` would run now on the plan named `plan`, its
/// document and lifecycle given (a dry-run's may be an unsaved edit):
/// [`plan_steps`], with what the plan's earlier runs left — a failover
/// offered the standby incarnations a failed one left serving (see
/// `adopt`), a replication cycle or drill given the teardown of what
/// earlier drills left (see `leftovers`).
pub(crate) async fn steps_of(
    store: &Store,
    plan: &str,
    document: &rebound_domain::PlanDocument,
    lifecycle: &rebound_domain::Lifecycle,
    workflow: Workflow,
) -> Result<Vec<NewStep>, EngineError> {
    let mut steps = plan_steps(document, lifecycle, workflow);
    match workflow {
        Workflow::Failover => adopt::offer(store, plan, &mut steps).await?,
        Workflow::Drill | Workflow::Replication => {
            leftovers::offer(store, plan, &mut steps).await?;
        }
        // What earlier drills left goes after the wait for other runs,
        // before the plan's points (a sandbox may stand on them).
        Workflow::Unprotect => {
            let mut rest = steps.split_off(1);
            leftovers::offer(store, plan, &mut steps).await?;
            let shift = steps.len() - 1;
            for s in &mut rest {
                if let Some(n) = s.input["stage"].as_u64() {
                    s.input["stage"] = serde_json::json!(n + shift as u64);
                }
            }
            steps.extend(rest);
        }
        _ => {}
    }
    Ok(steps)
}

/// Cancel the replication cycles and drills of `run`'s plan that have not
/// finished.
async fn preempt(store: &Store, run: &RunRecord, principal: &str) -> Result<(), EngineError> {
    let by = format!("{principal} (preempted by {} {})", run.workflow, run.id);
    let which = PlanRuns {
        workflows: &[Workflow::Replication, Workflow::Drill],
        statuses: &[
            RunStatus::Pending,
            RunStatus::Running,
            RunStatus::WaitingApproval,
        ],
        limit: None,
    };
    for other in store.plan_runs(&run.plan, which).await? {
        match store.cancel_run(&other.id, &by).await {
            Ok(cancel) => tracing::info!(run = %other.id, ?cancel, "{by}"),
            // It finished meanwhile: nothing to preempt.
            Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// This replica's name, recorded as the lease owner.
    pub owner: String,
    pub lease: Duration,
    pub poll_interval: Duration,
    /// Attempts per step for retryable failures, and the first backoff
    /// (doubling).
    pub attempts: i32,
    pub backoff: Duration,
    /// Calls of one stage in flight at once.
    pub parallelism: usize,
}

impl ExecutorConfig {
    pub fn new(owner: impl Into<String>) -> Self {
        Self {
            owner: owner.into(),
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(200),
            attempts: 5,
            backoff: Duration::from_millis(200),
            parallelism: 64,
        }
    }
}

/// How a driven run ended for this replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed {
        step: i32,
        error: String,
    },
    /// Cancelled while driven (`Store::cancel_run`): stopped at a stage
    /// boundary, compensated like a failure, ended `cancelled`.
    Cancelled {
        by: String,
    },
    /// Another replica took the run over; this one stopped touching it.
    LeaseLost,
    /// The run reached an approval step nobody has given yet; it waits
    /// (lease released) until `Store::approve` or `Store::cancel_run`.
    WaitingApproval {
        step: i32,
    },
}

pub struct Executor {
    store: Store,
    runner: Arc<dyn StepRunner>,
    config: ExecutorConfig,
}

/// Milliseconds since the epoch: the clock of step timings and policy
/// ticks.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Whether the run fenced the old primary and every fence was confirmed.
fn fences_confirmed(steps: &[StepRecord]) -> bool {
    let fences: Vec<&StepRecord> = steps
        .iter()
        .filter(|s| s.input["action"] == "fence" && s.input["compensation"] != true)
        .collect();
    !fences.is_empty()
        && fences.iter().all(|s| {
            s.status == StepStatus::Succeeded
                && s.output.as_ref().is_some_and(|o| o["fenced"] == true)
        })
}

enum Flow {
    Next,
    Stop(Outcome),
}

impl Executor {
    pub fn new(store: Store, runner: Arc<dyn StepRunner>, config: ExecutorConfig) -> Self {
        Self {
            store,
            runner,
            config,
        }
    }

    /// Claim one run whose lease is free or expired and drive it to its
    /// end; `None` when there is nothing to do.
    pub async fn work_once(&self) -> Result<Option<(RunRecord, Outcome)>, EngineError> {
        let Some(run) = self
            .store
            .claim_run(&self.config.owner, self.config.lease)
            .await?
        else {
            return Ok(None);
        };
        let outcome = self.drive(&run).await?;
        metrics::run_finished(run.workflow, &outcome);
        Ok(Some((run, outcome)))
    }

    async fn drive(&self, run: &RunRecord) -> Result<Outcome, EngineError> {
        let owner = &self.config.owner;
        if run.status == RunStatus::Pending
            && !self.keep(
                self.store
                    .set_run_status(&run.id, owner, RunStatus::Running)
                    .await,
            )?
        {
            return Ok(Outcome::LeaseLost);
        }
        let mut steps = self.store.steps(&run.id).await?;
        let rto_ms = self.rto_of(run).await?;
        let mut outcome = Outcome::Succeeded;
        for stage in stages(&steps) {
            if let [gate] = &mut steps[stage.clone()]
                && gate.input["action"] == rebound_store::APPROVAL_ACTION
            {
                if gate.status == StepStatus::Succeeded {
                    continue;
                }
                match self.store.await_approval(&run.id, owner, gate.seq).await {
                    Ok(true) => {
                        gate.status = StepStatus::Succeeded;
                        continue;
                    }
                    Ok(false) => return Ok(Outcome::WaitingApproval { step: gate.seq }),
                    Err(StoreError::Conflict(reason)) => {
                        tracing::warn!(owner = %owner, "stopping: {reason}");
                        return Ok(Outcome::LeaseLost);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            // A cancel asked while the run is driven takes effect here,
            // between stages: steps in flight have finished.
            if let Some(by) = self.store.run(&run.id).await?.cancel_requested_by {
                tracing::warn!(run = %run.id, by = %by, "cancelled while running; stopping");
                outcome = Outcome::Cancelled { by };
                break;
            }
            let budget = rto_ms.map(|rto_ms| Budget::of(rto_ms, &steps));
            match self.stage(&run.id, &mut steps[stage], budget).await? {
                Flow::Next => {}
                Flow::Stop(Outcome::LeaseLost) => return Ok(Outcome::LeaseLost),
                Flow::Stop(stopped) => {
                    outcome = stopped;
                    break;
                }
            }
        }
        if matches!(outcome, Outcome::Failed { .. } | Outcome::Cancelled { .. }) {
            self.abandon(&steps).await;
            if let Flow::Stop(Outcome::LeaseLost) = self.compensate(run, &mut steps).await? {
                return Ok(Outcome::LeaseLost);
            }
            if run.workflow == Workflow::Drill {
                self.note_drill_leftovers(run, &steps).await?;
            }
        }
        self.note_leftovers_removed(run, &steps).await?;
        let succeeded = outcome == Outcome::Succeeded;
        if run.lifecycle {
            // Fence steps report whether the old primary's workloads can no
            // longer write; a planned promotion needs all of them confirmed.
            let fenced = fences_confirmed(&steps);
            match self
                .store
                .finish_workflow(&run.id, owner, succeeded, fenced)
                .await
            {
                Ok(RunStatus::Succeeded) => Ok(outcome),
                Ok(_) if succeeded => Ok(Outcome::Failed {
                    step: -1,
                    error: "the plan's lifecycle refused the result (see the audit log)".into(),
                }),
                Ok(_) => Ok(outcome),
                Err(StoreError::Conflict(reason)) => {
                    tracing::warn!(owner = %owner, "stopping: {reason}");
                    Ok(Outcome::LeaseLost)
                }
                Err(e) => Err(e.into()),
            }
        } else {
            let status = match outcome {
                Outcome::Succeeded => RunStatus::Succeeded,
                Outcome::Cancelled { .. } => RunStatus::Cancelled,
                _ => RunStatus::Failed,
            };
            if !self.keep(self.store.set_run_status(&run.id, owner, status).await)? {
                return Ok(Outcome::LeaseLost);
            }
            Ok(outcome)
        }
    }

    /// Hand every operation the stopped run will not poll again back to
    /// the runner (see [`StepRunner::abandon`]), all at once.
    async fn abandon(&self, steps: &[StepRecord]) {
        let left = steps.iter().filter_map(|s| {
            let held = s.status != StepStatus::Succeeded && s.input["compensation"] != true;
            held.then_some(s.operation.as_ref().map(|op| (s, op)))
                .flatten()
        });
        futures_util::future::join_all(left.map(|(s, op)| self.runner.abandon(s, op))).await;
    }

    /// Undo a failed run's effects on the old primary (see
    /// [`compensation_steps`]): the steps are appended once, in one
    /// transaction, and driven like any others (a crash resumes them).
    /// Their retries are not bounded by the RTO budget: restoring service
    /// matters more than the objective already missed.
    async fn compensate(
        &self,
        run: &RunRecord,
        steps: &mut Vec<StepRecord>,
    ) -> Result<Flow, EngineError> {
        let is_compensation = |s: &StepRecord| s.input["compensation"] == true;
        if !steps.iter().any(is_compensation) {
            let extra = compensation_steps(steps);
            if extra.is_empty() {
                self.note_kept_standbys(run, steps).await?;
                return Ok(Flow::Next);
            }
            tracing::warn!(run = %run.id, steps = extra.len(), "the run stopped after changing the sites; compensating");
            match self
                .store
                .append_steps(&run.id, &self.config.owner, &extra)
                .await
            {
                Ok(all) => *steps = all,
                Err(StoreError::Conflict(reason)) => {
                    tracing::warn!(owner = %self.config.owner, "stopping: {reason}");
                    return Ok(Flow::Stop(Outcome::LeaseLost));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let first = steps
            .iter()
            .position(is_compensation)
            .unwrap_or(steps.len());
        // A drill's teardowns do not depend on each other: each site's is
        // tried even after another's refused (what stays is noted, see
        // `note_drill_leftovers`). Any other compensation is ordered — the
        // standby fenced before the old primary serves again — and stops
        // at the first refusal.
        let independent = run.workflow == Workflow::Drill;
        let mut refused = None;
        for stage in stages(&steps[first..]) {
            let range = stage.start + first..stage.end + first;
            match self.stage(&run.id, &mut steps[range], None).await? {
                Flow::Next => {}
                Flow::Stop(Outcome::LeaseLost) => return Ok(Flow::Stop(Outcome::LeaseLost)),
                Flow::Stop(failed) if independent => {
                    tracing::error!(run = %run.id, ?failed, "a drill teardown failed; trying the others");
                    refused.get_or_insert(failed);
                }
                Flow::Stop(failed) => {
                    tracing::error!(run = %run.id, ?failed, "compensation failed: the old primary may still be fenced");
                    return Ok(Flow::Stop(failed));
                }
            }
        }
        if let Some(failed) = refused {
            return Ok(Flow::Stop(failed));
        }
        self.note_kept_standbys(run, steps).await?;
        Ok(Flow::Next)
    }

    /// A failed run whose standby incarnations stay leaves the operator
    /// work: a `standbys.kept` event names them, per site, with why —
    /// traffic reached them (fenced, they may hold writes; or, the old
    /// primary never fenced, running and serving), or the plugin could not
    /// remove them. Recorded once per run.
    async fn note_kept_standbys(
        &self,
        run: &RunRecord,
        steps: &[StepRecord],
    ) -> Result<(), EngineError> {
        let kept = planner::kept_standbys(steps).into_iter().map(|(site, workloads, reason)| {
            tracing::warn!(run = %run.id, site = %site, ?workloads, "standby incarnations kept, fenced: {reason}");
            serde_json::json!({
                "run": run.id, "site": site, "workloads": workloads, "reason": reason,
            })
        });
        self.note_once(run, STANDBYS_KEPT, kept.collect()).await
    }

    /// A drill that ended failed or cancelled and could not tear down
    /// everything (a site down) leaves the operator a `drill.leftovers`
    /// event per site: its sandbox (its workloads labelled with the run's
    /// id), the copies, and whether its way back recovered there (what
    /// goes first: see `leftovers`). The plan's next replication cycle or
    /// drill tries again. Recorded once per run.
    async fn note_drill_leftovers(
        &self,
        run: &RunRecord,
        steps: &[StepRecord],
    ) -> Result<(), EngineError> {
        let left = leftovers::of_run(&self.store, &run.id, steps).await?;
        let left = left.into_iter().map(|l| {
            tracing::warn!(run = %run.id, site = %l.site, sandbox = l.sandbox, copies = ?l.copies, "the drill left these; the plan's next replication cycle or drill removes them");
            serde_json::json!({
                "run": run.id, "site": l.site, "sandbox": l.sandbox, "copies": l.copies,
                "way_back": l.way_back,
                "reason": "the drill's teardown did not succeed there; the plan's next \
                           replication cycle or drill tries again at its end",
            })
        });
        self.note_once(run, DRILL_LEFTOVERS, left.collect()).await
    }

    /// What `run` removed of earlier drills' remains: a
    /// `drill.leftovers.removed` event each (what `leftovers` counts a
    /// sandbox gone by), recorded once (a resumed run checks).
    async fn note_leftovers_removed(
        &self,
        run: &RunRecord,
        steps: &[StepRecord],
    ) -> Result<(), EngineError> {
        let removed = leftovers::removals(steps);
        if removed.is_empty() {
            return Ok(());
        }
        let noted = self
            .store
            .events(Some(&run.plan), &[DRILL_LEFTOVERS_REMOVED], 100)
            .await?;
        for (drill, site, scope) in removed {
            let detail = serde_json::json!({
                "run": drill, "site": site, "scope": scope, "removed_by": run.id,
            });
            if !noted.iter().any(|e| e.detail == detail) {
                tracing::info!(run = %run.id, drill = %drill, site = %site, scope = %scope, "removed what an earlier drill left");
                self.store
                    .record_event(&run.plan, DRILL_LEFTOVERS_REMOVED, detail)
                    .await?;
            }
        }
        Ok(())
    }

    /// Record one `kind` event per detail for `run`'s plan, unless the run
    /// has some already (a resumed run does not say it twice).
    async fn note_once(
        &self,
        run: &RunRecord,
        kind: &str,
        details: Vec<Value>,
    ) -> Result<(), EngineError> {
        if details.is_empty() {
            return Ok(());
        }
        let noted = self
            .store
            .events(Some(&run.plan), &[kind], 100)
            .await?
            .iter()
            .any(|e| e.detail["run"] == run.id.as_str());
        if noted {
            return Ok(());
        }
        for detail in details {
            self.store.record_event(&run.plan, kind, detail).await?;
        }
        Ok(())
    }

    /// A store conflict means the lease is gone: stop, do not fail.
    fn keep(&self, result: Result<(), StoreError>) -> Result<bool, EngineError> {
        match result {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict(reason)) => {
                tracing::warn!(owner = %self.config.owner, "stopping: {reason}");
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Persist changed steps and renew the lease; `false` when the lease
    /// is gone.
    async fn save(&self, run: &str, steps: &[&StepRecord]) -> Result<bool, EngineError> {
        if steps.is_empty() {
            let renewed = self
                .store
                .heartbeat(run, &self.config.owner, self.config.lease)
                .await;
            return self.keep(renewed);
        }
        let owned: Vec<StepRecord> = steps.iter().map(|s| (*s).clone()).collect();
        let saved = self
            .store
            .save_steps(&self.config.owner, run, self.config.lease, &owned)
            .await;
        self.keep(saved)
    }

    /// The RTO objective of the run's phase, in ms; `None` when the run's
    /// plan is gone.
    async fn rto_of(&self, run: &RunRecord) -> Result<Option<i64>, EngineError> {
        let plan = match self.store.plan(&run.plan).await {
            Ok(plan) => plan,
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let objectives = match run.workflow.phase() {
            rebound_domain::Phase::Failover => &plan.document.objectives.failover,
            rebound_domain::Phase::Failback => &plan.document.objectives.failback,
        };
        Ok(Some(report::millis(objectives.rto)))
    }

    /// Drive one stage (steps that may run at the same time) to its end, in
    /// rounds: persist the attempts about to start, start and poll
    /// concurrently, persist what changed — one transaction each.
    async fn stage(
        &self,
        run: &str,
        steps: &mut [StepRecord],
        budget: Option<Budget>,
    ) -> Result<Flow, EngineError> {
        let mut retry_at: Vec<Option<tokio::time::Instant>> = vec![None; steps.len()];
        let mut failed = None;
        loop {
            if let Some(step) = steps.iter().find(|s| s.status == StepStatus::Failed) {
                failed.get_or_insert(Outcome::Failed {
                    step: step.seq,
                    error: step.error.clone().unwrap_or_default(),
                });
            }
            let open: Vec<usize> = (0..steps.len())
                .filter(|i| !matches!(steps[*i].status, StepStatus::Succeeded | StepStatus::Failed))
                .collect();
            if let Some(outcome) = failed {
                // Steps already started keep their persisted state; the run
                // stops here.
                return Ok(Flow::Stop(outcome));
            }
            if open.is_empty() {
                return Ok(Flow::Next);
            }
            let now = tokio::time::Instant::now();
            // Attempts are persisted before their calls.
            let starting: Vec<usize> = open
                .iter()
                .copied()
                .filter(|i| steps[*i].operation.is_none() && retry_at[*i].is_none_or(|t| t <= now))
                .collect();
            for i in &starting {
                let step = &mut steps[*i];
                step.attempts += 1;
                step.status = StepStatus::Running;
                step.started_at_ms.get_or_insert(now_ms());
            }
            if !starting.is_empty() {
                let batch: Vec<&StepRecord> = starting.iter().map(|i| &steps[*i]).collect();
                if !self.save(run, &batch).await? {
                    return Ok(Flow::Stop(Outcome::LeaseLost));
                }
            }
            let polling: Vec<usize> = open
                .iter()
                .copied()
                .filter(|i| steps[*i].operation.is_some())
                .collect();
            let results: Vec<(usize, Call)> = {
                let mut calls: Vec<BoxFuture<'_, (usize, Call)>> = Vec::new();
                for i in &starting {
                    let (i, step) = (*i, &steps[*i]);
                    calls.push(Box::pin(async move {
                        (i, Call::Start(self.runner.start(step).await))
                    }));
                }
                for i in &polling {
                    let (i, step) = (*i, &steps[*i]);
                    let op = step.operation.clone().unwrap_or(Value::Null);
                    calls.push(Box::pin(async move {
                        (i, Call::Poll(self.runner.poll(step, &op).await))
                    }));
                }
                let round = futures_util::stream::iter(calls)
                    .buffer_unordered(self.config.parallelism.max(1))
                    .collect::<Vec<_>>();
                tokio::pin!(round);
                // Calls may outlast the lease: renew it while they run, and
                // walk away (the calls dropped) the moment it is lost.
                let period = (self.config.lease / 3).max(Duration::from_millis(10));
                let mut beat =
                    tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                loop {
                    tokio::select! {
                        results = &mut round => break results,
                        _ = beat.tick() => {
                            if !self.save(run, &[]).await? {
                                return Ok(Flow::Stop(Outcome::LeaseLost));
                            }
                        }
                    }
                }
            };
            let mut changed = Vec::new();
            for (i, call) in results {
                let step = &mut steps[i];
                let result = match call {
                    Call::Start(Ok(Started::Done(output))) => Some(Ok(output)),
                    Call::Start(Ok(Started::Operation(op))) => {
                        step.operation = Some(op);
                        changed.push(i);
                        None
                    }
                    Call::Start(Err(StepError::Retryable(reason)))
                        if step.attempts < self.config.attempts =>
                    {
                        let backoff = self.config.backoff
                            * 2u32.saturating_pow(u32::try_from(step.attempts - 1).unwrap_or(0));
                        let next_ms = now_ms()
                            .saturating_add(i64::try_from(backoff.as_millis()).unwrap_or(i64::MAX));
                        match budget {
                            // Retrying past the phase's RTO budget would
                            // only hide that the objective is lost.
                            Some(b) if next_ms > b.deadline_ms => Some(Err(format!(
                                "{reason} (attempt {}; not retried: the next attempt would pass \
                                 the phase's RTO budget of {} s)",
                                step.attempts,
                                b.rto_ms / 1000
                            ))),
                            _ => {
                                tracing::info!(run = %step.run, step = step.seq, "retrying after {backoff:?}: {reason}");
                                retry_at[i] = Some(tokio::time::Instant::now() + backoff);
                                None
                            }
                        }
                    }
                    Call::Start(Err(e)) => Some(Err(e.to_string())),
                    Call::Poll(Ok(Progress::Running)) => None,
                    // A poll that fails retryably is polled again, but not
                    // past the phase's RTO budget: an operation that keeps
                    // failing must not hold the run without a word.
                    Call::Poll(Err(StepError::Retryable(reason))) => match budget {
                        Some(b) if now_ms() > b.deadline_ms => Some(Err(format!(
                            "{reason} (still failing when the phase's RTO budget of {} s ran out)",
                            b.rto_ms / 1000
                        ))),
                        _ => {
                            tracing::warn!(run = %step.run, step = step.seq, "polling again: {reason}");
                            None
                        }
                    },
                    Call::Poll(Ok(Progress::Done(output))) => Some(Ok(output)),
                    Call::Poll(Ok(Progress::Failed(reason)) | Err(StepError::Fatal(reason))) => {
                        Some(Err(reason))
                    }
                };
                if let Some(result) = result {
                    finish(step, result);
                    changed.push(i);
                }
            }
            let batch: Vec<&StepRecord> = changed.iter().map(|i| &steps[*i]).collect();
            if !self.save(run, &batch).await? {
                return Ok(Flow::Stop(Outcome::LeaseLost));
            }
            // Wait only when nothing moved: a fresh handle is polled at once.
            let fresh = changed
                .iter()
                .any(|i| steps[*i].status == StepStatus::Running && starting.contains(i));
            let settled = steps
                .iter()
                .all(|s| matches!(s.status, StepStatus::Succeeded | StepStatus::Failed));
            if !fresh && !settled {
                let next_retry = retry_at.iter().flatten().min().copied();
                let wait = match (polling.is_empty(), next_retry) {
                    (true, Some(at)) => at.saturating_duration_since(tokio::time::Instant::now()),
                    _ => self.config.poll_interval,
                };
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// A run's RTO budget for a stage: the phase's objective and the deadline
/// it sets, counted from when the outage window opened (the first fence
/// started; for a run that fences nothing, its first step started) or from
/// now if it has not opened yet.
#[derive(Debug, Clone, Copy)]
struct Budget {
    rto_ms: i64,
    deadline_ms: i64,
}

impl Budget {
    fn of(rto_ms: i64, steps: &[StepRecord]) -> Self {
        let fenced = steps.iter().any(|s| s.input["action"] == "fence");
        let opened = steps
            .iter()
            .filter(|s| !fenced || s.input["action"] == "fence")
            .filter_map(|s| s.started_at_ms)
            .min()
            .unwrap_or_else(now_ms);
        Self {
            rto_ms,
            deadline_ms: opened.saturating_add(rto_ms),
        }
    }
}

/// What one call of a round returned.
enum Call {
    Start(Result<Started, StepError>),
    Poll(Result<Progress, StepError>),
}

fn finish(step: &mut StepRecord, result: Result<Value, String>) {
    step.finished_at_ms = Some(now_ms());
    match result {
        Ok(output) => {
            step.status = StepStatus::Succeeded;
            step.output = Some(output);
        }
        // A teardown of what an earlier drill left that failed, retries
        // spent, fails nothing: it stays for the next run (see
        // `leftovers`).
        Err(reason) if step.input[LEFT_BY].is_string() => {
            tracing::warn!(run = %step.run, step = %step.name, "left for the next run: {reason}");
            step.status = StepStatus::Succeeded;
            step.output = Some(serde_json::json!({"removed": [], "left": true, "reason": reason}));
        }
        Err(error) => {
            step.status = StepStatus::Failed;
            step.error = Some(error);
        }
    }
    metrics::step_finished(step);
}

/// The stages of a run: consecutive steps with the same `stage` input run
/// together; a step without one is a stage of its own.
fn stages(steps: &[StepRecord]) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let stage = step.input.get("stage").filter(|v| !v.is_null());
        match out.last_mut() {
            Some(last)
                if stage.is_some()
                    && steps[last.start]
                        .input
                        .get("stage")
                        .filter(|v| !v.is_null())
                        == stage =>
            {
                last.end = i + 1;
            }
            _ => out.push(i..i + 1),
        }
    }
    out
}

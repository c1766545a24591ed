//! The policy engine: for every plan, what its objectives say now and what
//! to do about it.
//!
//! - **Compliance** ([`compliance`]): the RPO lag now — the age of the
//!   oldest of the workloads' newest recovery points at the standby, which
//!   is the data a failover now would lose — against the RPO objective of
//!   the phase the plan is in (the failover objectives while protected, the
//!   failback objectives while ready for failback), and the RTO forecast
//!   of that phase's workflow (from the last drill's or failover's measured
//!   steps, see [`crate::dry_run`]) against its RTO objective; beside it,
//!   both phases' verdicts ([`PhaseCompliance`]), the phase not in force
//!   forecast as if the plan were in it.
//! - **Scheduling** ([`tick`]): a replication cycle is enqueued when the
//!   lag reaches the plan's replication interval or half the RPO objective,
//!   whichever comes first, so a cycle finishes before the objective is
//!   missed. The run's idempotency key names the plan and the time slot, so
//!   several hosts ticking at once enqueue it once.
//! - **Events**: `rpo.breach` / `rpo.met` and `rto.breach` / `rto.met` when
//!   a verdict changes, `replication.scheduled` when a cycle is enqueued.
//!
//! A failback RPO of 0 is met by construction: a planned failback fences
//! the primary and then replicates what the last cycle missed, so no lag
//! between cycles counts against it.

use std::collections::HashMap;

use rebound_domain::{Phase, PlanState, Workflow};
use rebound_store::{EventRecord, PlanRecord, PlanRuns, RunRecord, RunStatus, Store};
use serde::Serialize;
use serde_json::json;

use crate::EngineError;
use crate::report::{Measured, forecast, measured_durations_of, millis};

/// Calls of one stage in flight the RTO forecast assumes.
const FORECAST_PARALLELISM: usize = 64;

/// Where a plan stands against its objectives now.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Compliance {
    pub plan: String,
    pub state: PlanState,
    /// The phase whose objectives apply; `None` while the plan is between
    /// states (a run in flight) or failed over without protection.
    pub phase: Option<Phase>,
    /// Age of the oldest newest recovery point at the standby; `None` when
    /// a workload has none at all.
    pub rpo_lag_ms: Option<i64>,
    pub rpo_objective_ms: i64,
    pub rpo_met: Option<bool>,
    /// The workload whose newest recovery point is oldest (or missing).
    pub rpo_worst_workload: Option<String>,
    pub rto_forecast_ms: Option<i64>,
    pub rto_objective_ms: i64,
    pub rto_met: Option<bool>,
    /// The newest run whose measured steps the forecast in force draws
    /// on, if any (each step's own is in the dry-run).
    pub rto_basis: Option<String>,
    /// When the next replication cycle is due (ms since the epoch).
    pub replication_due_at_ms: Option<i64>,
    /// Both phases' objectives against the plan now — failover, then
    /// failback — so the one not in force is seen before it is: the current
    /// RPO lag against each RPO objective, and each phase's workflow
    /// forecast against its RTO objective. Empty between states.
    pub phases: Vec<PhaseCompliance>,
    /// The plan's scheduled drills (`drills.every`) against it now; `None`
    /// when it has none or is between states.
    pub drill: Option<DrillCompliance>,
}

/// A plan's scheduled drills against it now.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DrillCompliance {
    /// The plan's `drills.every`.
    pub every_ms: i64,
    /// The newest drill of the plan, whatever its outcome.
    pub last_run: Option<String>,
    /// When the newest successful drill started.
    pub succeeded_at_ms: Option<i64>,
    /// When the policy starts the next drill: `every` after the newest
    /// drill started, or now when there has been none. `None` while a
    /// workload has no recovery point to drill on.
    pub due_at_ms: Option<i64>,
    /// Whether a drill succeeded within `every` plus the RTO objectives it
    /// rehearses (the time the drill itself may take); `None` before the
    /// first drill has ended.
    pub met: Option<bool>,
}

/// One phase's objectives against a plan now.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PhaseCompliance {
    pub phase: Phase,
    /// Whether these are the objectives in force (the plan's `phase`).
    pub in_force: bool,
    pub rpo_objective_ms: i64,
    /// The current RPO lag (or a missing recovery point) against this
    /// objective.
    pub rpo_met: bool,
    /// The forecast of this phase's workflow (failover, or failback),
    /// from the plan's measured steps (on the sites that workflow acts on
    /// where measured) or the defaults; for the phase not in force, as if
    /// the plan were in that phase.
    pub rto_forecast_ms: i64,
    pub rto_objective_ms: i64,
    pub rto_met: bool,
}

/// Whether `lag` (`None`: a workload has no recovery point yet) meets a
/// phase's RPO objective. A failback RPO of 0 is met by construction.
fn rpo_met(phase: Phase, objective_ms: i64, lag: Option<i64>) -> bool {
    if phase == Phase::Failback && objective_ms == 0 {
        return true;
    }
    lag.is_some_and(|lag| lag <= objective_ms)
}

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Tick {
    pub compliance: Vec<Compliance>,
    pub events: Vec<EventRecord>,
    /// Replication runs enqueued.
    pub scheduled: Vec<String>,
}

/// The phase whose objectives a plan in `state` answers to.
fn phase_of(state: PlanState) -> Option<Phase> {
    match state {
        PlanState::Protected => Some(Phase::Failover),
        PlanState::ReadyForFailback => Some(Phase::Failback),
        _ => None,
    }
}

/// What a plan's compliance reads from the store.
#[derive(Default)]
struct Inputs {
    /// When each workload's newest recovery point at the standby was
    /// captured.
    newest: HashMap<String, i64>,
    measured: Measured,
    /// The newest drill, whatever its outcome (read for plans with
    /// `drills.every` only).
    last_drill: Option<RunRecord>,
}

/// The inputs of the compliance of `plans` (those in a phase), read for
/// all of them at once: a few statements whatever their number — the
/// newest captures by one, the measured runs by one per few hundred
/// workflows of plans, their steps by one, the newest drills of the plans
/// with a schedule by one — not a few per plan.
async fn inputs_of(
    store: &Store,
    plans: &[PlanRecord],
) -> Result<HashMap<String, Inputs>, EngineError> {
    let judged: Vec<&PlanRecord> = plans
        .iter()
        .filter(|p| phase_of(p.lifecycle.state).is_some())
        .collect();
    let standbys: Vec<(&str, &str)> = judged
        .iter()
        .map(|p| (p.document.name.as_str(), p.lifecycle.standby.as_str()))
        .collect();
    let names: Vec<&str> = standbys.iter().map(|(name, _)| *name).collect();
    let mut captures = store.newest_captures_of(&standbys).await?;
    let mut measured = measured_durations_of(store, &names).await?;
    let drilled: Vec<&str> = judged
        .iter()
        .filter(|p| p.document.drills.every.is_some())
        .map(|p| p.document.name.as_str())
        .collect();
    let mut drills = store
        .newest_runs_of(&drilled, &[Workflow::Drill], None)
        .await?;
    Ok(names
        .iter()
        .map(|name| {
            let inputs = Inputs {
                newest: captures.remove(*name).unwrap_or_default(),
                measured: measured.remove(*name).unwrap_or_default(),
                last_drill: drills.remove(*name).and_then(|mut d| d.pop()),
            };
            ((*name).to_owned(), inputs)
        })
        .collect())
}

/// A plan's compliance at `now`.
pub async fn compliance(
    store: &Store,
    plan: &PlanRecord,
    now: i64,
) -> Result<Compliance, EngineError> {
    let mut all = compliance_of(store, std::slice::from_ref(plan), now).await?;
    Ok(all.remove(0))
}

/// A plan's compliance at `now`, and the measured step durations it was
/// forecast from (a runbook writes its step plans with them): one read of
/// the store for both.
pub(crate) async fn compliance_measured(
    store: &Store,
    plan: &PlanRecord,
    now: i64,
) -> Result<(Compliance, Measured), EngineError> {
    let inputs = inputs_of(store, std::slice::from_ref(plan))
        .await?
        .remove(&plan.document.name);
    let c = evaluate(plan, inputs.as_ref().unwrap_or(&Inputs::default()), now);
    let measured = match inputs {
        Some(inputs) => inputs.measured,
        // Between states the compliance reads nothing: the measured runs
        // are read for the runbook alone.
        None => crate::report::measured_durations(store, &plan.document.name).await?,
    };
    Ok((c, measured))
}

/// The compliance of each of `plans` at `now`, in their order: what the
/// store says of them read once for all (see [`inputs_of`]).
pub async fn compliance_of(
    store: &Store,
    plans: &[PlanRecord],
    now: i64,
) -> Result<Vec<Compliance>, EngineError> {
    let mut inputs = inputs_of(store, plans).await?;
    Ok(plans
        .iter()
        .map(|plan| {
            let of_plan = inputs.remove(&plan.document.name).unwrap_or_default();
            evaluate(plan, &of_plan, now)
        })
        .collect())
}

/// A plan's compliance at `now`, from what the store says of it.
fn evaluate(plan: &PlanRecord, inputs: &Inputs, now: i64) -> Compliance {
    let doc = &plan.document;
    let life = &plan.lifecycle;
    let phase = phase_of(life.state);
    let objectives = match phase {
        Some(Phase::Failback) => &doc.objectives.failback,
        _ => &doc.objectives.failover,
    };
    let (rpo_objective_ms, rto_objective_ms) = (millis(objectives.rpo), millis(objectives.rto));
    let mut out = Compliance {
        plan: doc.name.clone(),
        state: life.state,
        phase,
        rpo_lag_ms: None,
        rpo_objective_ms,
        rpo_met: None,
        rpo_worst_workload: None,
        rto_forecast_ms: None,
        rto_objective_ms,
        rto_met: None,
        rto_basis: None,
        replication_due_at_ms: None,
        phases: Vec::new(),
        drill: None,
    };
    let Some(phase) = phase else {
        return out;
    };
    // The oldest of the workloads' newest points at the standby.
    let newest = &inputs.newest;
    let mut oldest: Option<(i64, String)> = None;
    let mut missing = None;
    for w in &doc.workloads {
        match newest.get(&w.id) {
            Some(&at) if oldest.as_ref().is_none_or(|(t, _)| at < *t) => {
                oldest = Some((at, w.id.clone()));
            }
            Some(_) => {}
            None => missing = missing.or(Some(w.id.clone())),
        }
    }
    let interval = millis(doc.replication.interval);
    let headroom = if rpo_objective_ms > 0 {
        interval.min(rpo_objective_ms / 2)
    } else {
        interval
    };
    if let Some(w) = missing {
        out.rpo_worst_workload = Some(w);
        out.replication_due_at_ms = Some(now);
    } else if let Some((captured, w)) = oldest {
        out.rpo_lag_ms = Some(now - captured);
        out.rpo_worst_workload = Some(w);
        out.replication_due_at_ms = Some(captured + headroom);
    }
    out.rpo_met = Some(rpo_met(phase, rpo_objective_ms, out.rpo_lag_ms));
    // Each phase's workflow, forecast from the same measured steps; the
    // phase not in force as if the plan were in it (the sites swapped).
    let measured = &inputs.measured;
    for p in [Phase::Failover, Phase::Failback] {
        let (workflow, state, objectives) = match p {
            Phase::Failover => (
                Workflow::Failover,
                PlanState::Protected,
                &doc.objectives.failover,
            ),
            Phase::Failback => (
                Workflow::Failback,
                PlanState::ReadyForFailback,
                &doc.objectives.failback,
            ),
        };
        let mut lifecycle = life.clone();
        if p != phase {
            lifecycle.state = state;
            std::mem::swap(&mut lifecycle.primary, &mut lifecycle.standby);
        }
        let f = forecast(doc, &lifecycle, workflow, measured, FORECAST_PARALLELISM);
        let rpo_objective_ms = millis(objectives.rpo);
        if p == phase {
            out.rto_forecast_ms = Some(f.rto_ms);
            out.rto_met = Some(f.within_objective);
            out.rto_basis = f.basis;
        }
        out.phases.push(PhaseCompliance {
            phase: p,
            in_force: p == phase,
            rpo_objective_ms,
            rpo_met: rpo_met(p, rpo_objective_ms, out.rpo_lag_ms),
            rto_forecast_ms: f.rto_ms,
            rto_objective_ms: f.objective_rto_ms,
            rto_met: f.within_objective,
        });
    }
    if let Some(every) = doc.drills.every {
        let has_points = out.rpo_lag_ms.is_some();
        out.drill = Some(drill_compliance(
            plan, phase, every, inputs, has_points, now,
        ));
    }
    out
}

/// Where a plan's scheduled drills stand at `now` (see [`DrillCompliance`]).
fn drill_compliance(
    plan: &PlanRecord,
    phase: Phase,
    every: rebound_domain::Span,
    inputs: &Inputs,
    has_points: bool,
    now: i64,
) -> DrillCompliance {
    let doc = &plan.document;
    let every_ms = millis(every);
    let last = inputs.last_drill.as_ref();
    let succeeded_at_ms = inputs
        .measured
        .runs
        .iter()
        .find(|r| r.workflow == Workflow::Drill)
        .map(|r| r.created_at_ms);
    // The time a drill may take: the RTO objective of the phase it
    // rehearses, and of the way back for a round trip.
    let (rehearsed, way_back) = match phase {
        Phase::Failover => (&doc.objectives.failover, &doc.objectives.failback),
        Phase::Failback => (&doc.objectives.failback, &doc.objectives.failover),
    };
    let mut grace = millis(rehearsed.rto);
    if doc.drills.round_trip {
        grace += millis(way_back.rto);
    }
    let ended = last.is_some_and(|r| {
        matches!(
            r.status,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
        )
    });
    let met = match succeeded_at_ms {
        Some(at) => Some(now - at <= every_ms + grace),
        None if ended => Some(false),
        None => None,
    };
    let due_at_ms = match last {
        Some(run) => Some(run.created_at_ms + every_ms),
        None => has_points.then_some(now),
    };
    DrillCompliance {
        every_ms,
        last_run: last.map(|r| r.id.clone()),
        succeeded_at_ms,
        due_at_ms,
        met,
    }
}

/// The kinds of the events that record a verdict on an objective.
const VERDICTS: [&str; 6] = [
    "rpo.breach",
    "rpo.met",
    "rto.breach",
    "rto.met",
    "drill.breach",
    "drill.met",
];

/// The verdict each plan's last event recorded on each metric (`rpo`,
/// `rto`): by (plan, metric), the event's kind.
async fn last_verdicts(store: &Store) -> Result<HashMap<(String, String), String>, EngineError> {
    let mut last = HashMap::new();
    // Oldest first: a plan's newer verdict on a metric replaces the older.
    for event in store.newest_events(&VERDICTS).await? {
        let metric = event.kind.split('.').next().unwrap_or_default().to_owned();
        last.insert((event.plan, metric), event.kind);
    }
    Ok(last)
}

/// Evaluate every plan at `now`: emit events on changed verdicts and
/// enqueue the replication cycles that are due.
pub async fn tick(store: &Store, now: i64) -> Result<Tick, EngineError> {
    let mut out = Tick::default();
    let verdicts = last_verdicts(store).await?;
    let plans = store.plans().await?;
    let all = compliance_of(store, &plans, now).await?;
    for (plan, c) in plans.iter().zip(all) {
        let name = plan.document.name.clone();
        for (met, metric, detail) in [
            (
                c.rpo_met,
                "rpo",
                json!({"lag_ms": c.rpo_lag_ms, "objective_ms": c.rpo_objective_ms,
                       "workload": c.rpo_worst_workload, "phase": c.phase}),
            ),
            (
                c.rto_met,
                "rto",
                json!({"forecast_ms": c.rto_forecast_ms, "objective_ms": c.rto_objective_ms,
                       "basis": c.rto_basis, "phase": c.phase}),
            ),
            (
                c.drill.as_ref().and_then(|d| d.met),
                "drill",
                json!({"every_ms": c.drill.as_ref().map(|d| d.every_ms),
                       "succeeded_at_ms": c.drill.as_ref().and_then(|d| d.succeeded_at_ms),
                       "last_run": c.drill.as_ref().and_then(|d| d.last_run.clone()),
                       "phase": c.phase}),
            ),
        ] {
            let Some(met) = met else { continue };
            let (breach, ok) = (format!("{metric}.breach"), format!("{metric}.met"));
            let kind = if met { &ok } else { &breach };
            let last = verdicts.get(&(name.clone(), metric.to_owned()));
            // A plan starts compliant: only a breach, or the end of one,
            // is news.
            let news = match last.map(String::as_str) {
                Some(previous) => previous != kind,
                None => !met,
            };
            if news {
                if !met {
                    tracing::warn!(plan = %name, %metric, %detail, "objective breached");
                }
                out.events
                    .push(store.record_event(&name, kind, detail).await?);
            }
        }
        if let Some(due) = c.replication_due_at_ms
            && due <= now
            && let Some(run) = schedule(store, plan, now).await?
        {
            out.events.push(
                store
                    .record_event(
                        &name,
                        "replication.scheduled",
                        json!({"run": run, "lag_ms": c.rpo_lag_ms}),
                    )
                    .await?,
            );
            out.scheduled.push(run);
        }
        if let Some(drill) = &c.drill
            && drill.due_at_ms.is_some_and(|due| due <= now)
            && c.rpo_lag_ms.is_some()
            && !plan.lifecycle.drilling
            && let Some(run) = schedule_drill(store, &name, drill.last_run.as_deref()).await?
        {
            out.events.push(
                store
                    .record_event(
                        &name,
                        "drill.scheduled",
                        json!({"run": run, "after": drill.last_run, "every_ms": drill.every_ms}),
                    )
                    .await?,
            );
            out.scheduled.push(run);
        }
        crate::metrics::compliance(&c, now);
        out.compliance.push(c);
    }
    Ok(out)
}

/// Start the drill that follows `last` (the plan's newest drill, if any).
/// The idempotency key names it, so hosts ticking at once start it once,
/// and a drill that failed is followed by the next one `every` later, not
/// tried again at each tick.
async fn schedule_drill(
    store: &Store,
    name: &str,
    last: Option<&str>,
) -> Result<Option<String>, EngineError> {
    let key = format!("policy/drill/{name}/after/{}", last.unwrap_or("none"));
    started(
        name,
        "drill",
        crate::trigger(store, name, Workflow::Drill, Some(&key), "policy").await,
    )
}

/// What a trigger by the policy started: the run when it is new; nothing
/// when the key's run is already done, or the lifecycle refuses the
/// workflow now (a failover started meanwhile, say).
fn started(
    name: &str,
    what: &str,
    triggered: Result<rebound_store::RunRecord, EngineError>,
) -> Result<Option<String>, EngineError> {
    match triggered {
        Ok(run) if run.status == RunStatus::Pending => Ok(Some(run.id)),
        Ok(_) => Ok(None),
        Err(EngineError::Store(rebound_store::StoreError::Transition(e))) => {
            tracing::info!(plan = %name, "{what} not scheduled: {e}");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Enqueue a replication cycle unless one is already pending or running.
async fn schedule(
    store: &Store,
    plan: &PlanRecord,
    now: i64,
) -> Result<Option<String>, EngineError> {
    let name = &plan.document.name;
    let which = PlanRuns {
        workflows: &[Workflow::Replication],
        statuses: &[RunStatus::Pending, RunStatus::Running],
        limit: Some(1),
    };
    if !store.plan_runs(name, which).await?.is_empty() {
        return Ok(None);
    }
    let interval = millis(plan.document.replication.interval).max(1);
    let key = format!("policy/replication/{name}/{}", now / interval);
    started(
        name,
        "replication",
        crate::trigger(store, name, Workflow::Replication, Some(&key), "policy").await,
    )
}

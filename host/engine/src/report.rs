//! What a run achieved against its phase's objectives, and what a workflow
//! would take before it runs (the dry-run).
//!
//! - **Measured RTO** is the outage window of the run: from the start of
//!   its first fence step (when the old primary stops serving; the run's
//!   first step when it fences nothing) to the end of its last step that
//!   is not a cleanup. A planned workflow's pre-sync runs while the
//!   primary still serves, so it is not charged.
//! - **Achieved RPO** is the age of the oldest data a recovery restored:
//!   for each materialized workload, the time between the primary's last
//!   write and the capture of the recovery point used. The last write is
//!   the fence of that workload when the run confirmed it (a planned
//!   workflow), the start of the run otherwise (an unplanned failover
//!   assumes the primary died when it was triggered).
//! - Each step is **charged** to the phase's RTO budget: the report lists
//!   when it ended relative to the window's start, and the budget left.
//! - The **forecast** of a workflow is its exact step plan with a duration
//!   per step, taken from the median measured duration of the same action
//!   in the plan's most recent successful drill or failover (the basis is
//!   named), or a documented default per action; stages take as long as
//!   their slowest step, times the waves the executor's parallelism needs.

use std::collections::HashMap;

use rebound_domain::{Lifecycle, Phase, PlanDocument, Workflow};
use rebound_store::{NewStep, RunRecord, RunStatus, StepRecord, StepStatus, Store};
use serde::Serialize;
use serde_json::Value;

use crate::{EngineError, plan_steps};

/// One step's timing and its charge to the RTO budget.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepTiming {
    pub seq: i32,
    pub name: String,
    /// `pending`, `running`, `succeeded`, `failed`.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub status: StepStatus,
    pub attempts: i32,
    pub duration_ms: Option<i64>,
    /// When the step ended, from the start of the outage window (`None`
    /// for steps outside it).
    pub elapsed_ms: Option<i64>,
    /// RTO budget left when it ended (negative: over budget).
    pub budget_left_ms: Option<i64>,
}

/// A finished (or running) run against its phase's objectives.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunReport {
    pub run: String,
    pub plan: String,
    pub workflow: Workflow,
    pub phase: Phase,
    /// The run's status (`pending`, `running`, `waiting_approval`,
    /// `succeeded`, `failed`, `cancelled`).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub status: RunStatus,
    pub objective_rto_ms: i64,
    pub objective_rpo_ms: i64,
    pub measured_rto_ms: Option<i64>,
    pub achieved_rpo_ms: Option<i64>,
    pub rto_met: Option<bool>,
    pub rpo_met: Option<bool>,
    pub steps: Vec<StepTiming>,
}

pub(crate) fn millis(span: rebound_domain::Span) -> i64 {
    i64::try_from(span.as_secs().saturating_mul(1000)).unwrap_or(i64::MAX)
}

fn action(step: &StepRecord) -> &str {
    step.input["action"].as_str().unwrap_or_default()
}

/// The report of a run.
pub async fn report(store: &Store, run_id: &str) -> Result<RunReport, EngineError> {
    let run = store.run(run_id).await?;
    let plan = store.plan(&run.plan).await?;
    let steps = store.steps(run_id).await?;
    Ok(build(&run, &plan.document, &steps))
}

fn build(run: &RunRecord, plan: &PlanDocument, steps: &[StepRecord]) -> RunReport {
    let phase = run.workflow.phase();
    let objectives = match phase {
        Phase::Failover => &plan.objectives.failover,
        Phase::Failback => &plan.objectives.failback,
    };
    let (rto, rpo) = (millis(objectives.rto), millis(objectives.rpo));
    let window_start = steps
        .iter()
        .find(|s| action(s) == "fence")
        .or(steps.first())
        .and_then(|s| s.started_at_ms);
    let window_steps: Vec<&StepRecord> = steps
        .iter()
        .filter(|s| action(s) != "cleanup")
        .filter(|s| window_start.is_some_and(|w| s.started_at_ms.is_some_and(|t| t >= w)))
        .collect();
    let finished = run.status == RunStatus::Succeeded;
    let measured_rto = if finished {
        let end = window_steps.iter().filter_map(|s| s.finished_at_ms).max();
        window_start.zip(end).map(|(s, e)| e - s)
    } else {
        None
    };

    // RPO: per materialized workload, last write → capture.
    let run_start = steps.iter().filter_map(|s| s.started_at_ms).min();
    let fenced_at: HashMap<&str, i64> = steps
        .iter()
        .filter(|s| action(s) == "fence" && s.status == StepStatus::Succeeded)
        .filter(|s| s.output.as_ref().is_some_and(|o| o["fenced"] == true))
        .filter_map(|s| Some((s.input["workload"].as_str()?, s.finished_at_ms?)))
        .collect();
    let losses: Vec<i64> = steps
        .iter()
        .filter(|s| action(s) == "materialize" && s.input["isolated"] != true)
        .filter_map(|s| {
            let captured = s.output.as_ref()?["captured_at_ms"].as_i64()?;
            let workload = s.input["workload"].as_str()?;
            let last_write = fenced_at.get(workload).copied().or(run_start)?;
            Some((last_write - captured).max(0))
        })
        .collect();
    let achieved_rpo = if finished {
        losses.iter().copied().max()
    } else {
        None
    };

    let timings = steps
        .iter()
        .map(|s| {
            let elapsed = window_start
                .filter(|_| window_steps.iter().any(|w| w.seq == s.seq))
                .zip(s.finished_at_ms)
                .map(|(w, f)| f - w);
            StepTiming {
                seq: s.seq,
                name: s.name.clone(),
                status: s.status,
                attempts: s.attempts,
                duration_ms: s.started_at_ms.zip(s.finished_at_ms).map(|(a, b)| b - a),
                elapsed_ms: elapsed,
                budget_left_ms: elapsed.map(|e| rto - e),
            }
        })
        .collect();
    RunReport {
        run: run.id.clone(),
        plan: run.plan.clone(),
        workflow: run.workflow,
        phase,
        status: run.status,
        objective_rto_ms: rto,
        objective_rpo_ms: rpo,
        measured_rto_ms: measured_rto,
        achieved_rpo_ms: achieved_rpo,
        rto_met: measured_rto.map(|m| m <= rto),
        rpo_met: achieved_rpo.map(|a| a <= rpo),
        steps: timings,
    }
}

/// Default duration of an action when no drill or failover was measured.
pub fn default_duration_ms(action: &str) -> i64 {
    match action {
        "fence" => 30_000,
        "snapshot" => 60_000,
        "replicate" | "transfer" => 300_000,
        "materialize" => 120_000,
        "gate" => 60_000,
        "redirect" => 30_000,
        "prune" => 10_000,
        _ => 10_000,
    }
}

/// A step of the dry-run and its expected duration.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlannedStep {
    pub name: String,
    /// What the step would do (`fence`, `materialize`, …) and to what.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub input: Value,
    pub expected_ms: i64,
}

/// The dry-run of a workflow: the exact steps and the RTO forecast.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Forecast {
    pub workflow: Workflow,
    pub phase: Phase,
    pub steps: Vec<PlannedStep>,
    /// Expected outage window (the measured RTO's definition).
    pub rto_ms: i64,
    pub objective_rto_ms: i64,
    pub within_objective: bool,
    /// The run whose measured steps the durations come from, if any.
    pub basis: Option<String>,
}

/// Forecast a workflow of a plan in its lifecycle, from measured step
/// durations per action (`measured`) or the defaults; `parallelism` is the
/// executor's.
pub fn forecast(
    plan: &PlanDocument,
    lifecycle: &Lifecycle,
    workflow: Workflow,
    measured: &HashMap<String, i64>,
    basis: Option<String>,
    parallelism: usize,
) -> Forecast {
    let steps: Vec<NewStep> = plan_steps(plan, lifecycle, workflow);
    let expected = |s: &NewStep| {
        let action = s.input["action"].as_str().unwrap_or_default();
        measured
            .get(action)
            .copied()
            .unwrap_or_else(|| default_duration_ms(action))
    };
    let first_fence = steps
        .iter()
        .position(|s| s.input["action"] == "fence")
        .unwrap_or(0);
    let mut rto = 0;
    let mut i = first_fence;
    while i < steps.len() {
        let stage = steps[i].input.get("stage").cloned();
        let mut j = i + 1;
        while stage.is_some() && j < steps.len() && steps[j].input.get("stage") == stage.as_ref() {
            j += 1;
        }
        let group = &steps[i..j];
        if group.iter().all(|s| s.input["action"] != "cleanup") {
            let slowest = group.iter().map(expected).max().unwrap_or(0);
            let waves = i64::try_from(group.len().div_ceil(parallelism.max(1))).unwrap_or(1);
            rto += slowest * waves;
        }
        i = j;
    }
    let phase = workflow.phase();
    let objective = millis(match phase {
        Phase::Failover => plan.objectives.failover.rto,
        Phase::Failback => plan.objectives.failback.rto,
    });
    Forecast {
        workflow,
        phase,
        steps: steps
            .iter()
            .map(|s| PlannedStep {
                name: s.name.clone(),
                input: s.input.clone(),
                expected_ms: expected(s),
            })
            .collect(),
        rto_ms: rto,
        objective_rto_ms: objective,
        within_objective: rto <= objective,
        basis,
    }
}

/// The dry-run of `workflow` for a stored plan, with durations measured
/// in its most recent successful drill or failover.
pub async fn dry_run(
    store: &Store,
    plan: &str,
    workflow: Workflow,
    parallelism: usize,
) -> Result<Forecast, EngineError> {
    let record = store.plan(plan).await?;
    dry_run_of(
        store,
        &record.document,
        &record.lifecycle,
        workflow,
        parallelism,
    )
    .await
}

/// The dry-run of `workflow` for a plan document that need not be saved
/// (an edit being previewed) in the lifecycle state `lifecycle`, with
/// durations measured in the most recent successful drill or failover of
/// the stored plan of its name, if there is one.
pub async fn dry_run_of(
    store: &Store,
    document: &PlanDocument,
    lifecycle: &Lifecycle,
    workflow: Workflow,
    parallelism: usize,
) -> Result<Forecast, EngineError> {
    let (measured, basis) = measured_durations(store, &document.name).await?;
    Ok(forecast(
        document,
        lifecycle,
        workflow,
        &measured,
        basis,
        parallelism,
    ))
}

/// Step durations per action (medians) measured in the plan's most recent
/// successful drill or failover, and that run's id; empty without one.
pub(crate) async fn measured_durations(
    store: &Store,
    plan: &str,
) -> Result<(HashMap<String, i64>, Option<String>), EngineError> {
    let mut measured = HashMap::new();
    let mut basis = None;
    let last = store.runs_of(plan).await?.into_iter().find(|r| {
        r.status == RunStatus::Succeeded
            && matches!(r.workflow, Workflow::Drill | Workflow::Failover)
    });
    if let Some(run) = last {
        let mut by_action: HashMap<String, Vec<i64>> = HashMap::new();
        for s in store.steps(&run.id).await? {
            if let (Some(a), Some(b)) = (s.started_at_ms, s.finished_at_ms) {
                by_action
                    .entry(action(&s).to_owned())
                    .or_default()
                    .push(b - a);
            }
        }
        for (action, mut d) in by_action {
            d.sort_unstable();
            measured.insert(action, d[d.len() / 2]);
        }
        basis = Some(run.id);
    }
    Ok((measured, basis))
}

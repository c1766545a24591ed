//! What a run achieved against its phase's objectives, and what a workflow
//! would take before it runs (the dry-run).
//!
//! - **Measured RTO** is the outage window of the run: from the start of
//!   its first fence step (when the old primary stops serving; the run's
//!   first step when it fences nothing) to the end of its last step that
//!   is not a cleanup or a hook after the cutover. A planned workflow's pre-sync runs while the
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
//!   per step ([`Measured`]): the median measured duration of the same
//!   action on the same site (a copy: in the same direction) in the newest
//!   successful run of the plan that had one — among the newest drill,
//!   failover, failback, migration, reprotect and replication cycle — so a
//!   failback onto another platform is forecast from that platform's steps;
//!   else of the same action on any site; else a documented default per
//!   action. Each step names the run its duration was measured in. Stages
//!   take as long as their slowest step, times the waves the executor's
//!   parallelism needs.

use std::collections::HashMap;

use rebound_domain::{Lifecycle, Phase, PlanDocument, Workflow};
use rebound_store::{NewStep, RunRecord, RunStatus, StepRecord, StepStatus, Store};
use serde::Serialize;
use serde_json::Value;

use crate::planner::{LEG, RETURN_LEG};
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
    /// A round-trip drill's way back, against the other phase's RTO.
    pub return_leg: Option<ReturnLeg>,
    pub steps: Vec<StepTiming>,
    /// What a drill that failed or was cancelled left that is still there,
    /// per site (empty once removed, and for any other run): the plan's
    /// next replication cycle or drill removes it.
    pub left: Vec<DrillLeftover>,
}

/// What a drill left on a site that is still there.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DrillLeftover {
    pub site: String,
    /// Its sandbox may still be there: the workloads labelled
    /// `rebound/drill` with the run's id.
    pub sandbox: bool,
    /// The platform's ids of its way back's copies still there.
    pub copies: Vec<String>,
}

/// The way back of a round-trip drill (`drills.round_trip`): from the
/// capture of its sandbox to the recovery on the site it came from,
/// healthy — what the other phase's recovery would take — against that
/// phase's RTO objective. Its steps' `elapsed_ms` and `budget_left_ms`
/// count from its own start, against its own objective.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReturnLeg {
    pub phase: Phase,
    pub objective_rto_ms: i64,
    /// Measured (a report, once the run succeeded) or expected (a
    /// forecast).
    pub rto_ms: Option<i64>,
    pub rto_met: Option<bool>,
}

/// Whether a step happens after the recovery is over: a cleanup, or a
/// hook called after the cutover (the recovered side serves by then).
fn after_recovery(input: &Value) -> bool {
    input["action"] == "cleanup" || (input["action"] == "hook" && input["at"] == "after_cutover")
}

/// Whether a step is on a round-trip drill's way back.
fn returning(input: &Value) -> bool {
    input[LEG] == RETURN_LEG
}

/// The phase a run is charged to: its workflow's, but a drill rehearses
/// the recovery onto the site it recovers on — a failback when that is
/// the plan's source (a drill while ready for failback).
fn phase_of(plan: &PlanDocument, workflow: Workflow, recovers_on: Option<&Value>) -> Phase {
    match (workflow, recovers_on) {
        (Workflow::Drill, Some(site)) if *site == plan.source.as_str() => Phase::Failback,
        _ => workflow.phase(),
    }
}

fn other(phase: Phase) -> Phase {
    match phase {
        Phase::Failover => Phase::Failback,
        Phase::Failback => Phase::Failover,
    }
}

fn objective_rto(plan: &PlanDocument, phase: Phase) -> i64 {
    millis(match phase {
        Phase::Failover => plan.objectives.failover.rto,
        Phase::Failback => plan.objectives.failback.rto,
    })
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
    // (A deleted plan's runs keep their reports.)
    let plan = store.plan_of_history(&run.plan).await?;
    let steps = store.steps(run_id).await?;
    let mut report = build(&run, &plan.document, &steps);
    report.left = crate::leftovers::of_report(store, &run)
        .await?
        .into_iter()
        .map(|l| DrillLeftover {
            site: l.site,
            sandbox: l.sandbox,
            copies: l.copies,
        })
        .collect();
    Ok(report)
}

fn build(run: &RunRecord, plan: &PlanDocument, steps: &[StepRecord]) -> RunReport {
    let recovers_on = steps
        .iter()
        .find(|s| action(s) == "materialize")
        .map(|s| &s.input["site"]);
    let phase = phase_of(plan, run.workflow, recovers_on);
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
        .filter(|s| !after_recovery(&s.input) && !returning(&s.input))
        .filter(|s| window_start.is_some_and(|w| s.started_at_ms.is_some_and(|t| t >= w)))
        .collect();
    let finished = run.status == RunStatus::Succeeded;
    // Stopping protection recovers nothing: no objective to answer to.
    let measured_rto = if finished && run.workflow != Workflow::Unprotect {
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

    // The way back of a round trip: its own window and objective.
    let back: Vec<&StepRecord> = steps.iter().filter(|s| returning(&s.input)).collect();
    let back_start = back.first().and_then(|s| s.started_at_ms);
    let back_rto = objective_rto(plan, other(phase));
    let return_leg = (!back.is_empty()).then(|| {
        let end = back.iter().filter_map(|s| s.finished_at_ms).max();
        let measured = back_start.zip(end).map(|(s, e)| e - s).filter(|_| finished);
        ReturnLeg {
            phase: other(phase),
            objective_rto_ms: back_rto,
            rto_ms: measured,
            rto_met: measured.map(|m| m <= back_rto),
        }
    });

    let timings = steps
        .iter()
        .map(|s| {
            let (start, objective) = if returning(&s.input) {
                (back_start, back_rto)
            } else {
                (
                    window_start.filter(|_| window_steps.iter().any(|w| w.seq == s.seq)),
                    rto,
                )
            };
            let elapsed = start.zip(s.finished_at_ms).map(|(w, f)| f - w);
            StepTiming {
                seq: s.seq,
                name: s.name.clone(),
                status: s.status,
                attempts: s.attempts,
                duration_ms: s.started_at_ms.zip(s.finished_at_ms).map(|(a, b)| b - a),
                elapsed_ms: elapsed,
                budget_left_ms: elapsed.map(|e| objective - e),
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
        return_leg,
        steps: timings,
        left: Vec::new(),
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
        // One health probe of a site.
        crate::PREFLIGHT_ACTION => 2_000,
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
    /// The run `expected_ms` was measured in; none: the action's default.
    pub measured_in: Option<String>,
}

/// Where a step acts, for its measured duration: its site, or for a copy
/// its direction (`from→to`).
fn place(input: &Value) -> String {
    let text = |field: &str| input[field].as_str().unwrap_or_default().to_owned();
    match input["action"].as_str() {
        Some("replicate" | "transfer") => format!("{}→{}", text("from"), text("to")),
        _ => text("site"),
    }
}

/// A measured duration: the median, the run, and the run's rank (0 the
/// newest).
type Measure = (i64, String, usize);

/// Step durations measured in a plan's runs (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// By action and place.
    on: HashMap<(String, String), Measure>,
    /// By action, any place.
    any: HashMap<String, Measure>,
    /// The runs measured: the newest successful one of each workflow,
    /// newest first.
    pub(crate) runs: Vec<RunRecord>,
}

impl Measured {
    /// Add a run's steps, newer runs first: what is already measured
    /// stays.
    fn add(&mut self, run: &str, rank: usize, steps: &[StepRecord]) {
        let mut on: HashMap<(String, String), Vec<i64>> = HashMap::new();
        let mut any: HashMap<String, Vec<i64>> = HashMap::new();
        for s in steps {
            if let (Some(a), Some(b)) = (s.started_at_ms, s.finished_at_ms) {
                let key = (action(s).to_owned(), place(&s.input));
                on.entry(key).or_default().push(b - a);
                any.entry(action(s).to_owned()).or_default().push(b - a);
            }
        }
        let median = |mut d: Vec<i64>| {
            d.sort_unstable();
            (d[d.len() / 2], run.to_owned(), rank)
        };
        for (key, d) in on {
            self.on.entry(key).or_insert_with(|| median(d));
        }
        for (key, d) in any {
            self.any.entry(key).or_insert_with(|| median(d));
        }
    }

    /// The expected duration of a step with `input`, and where it was
    /// measured.
    fn expected(&self, input: &Value) -> Option<&Measure> {
        let action = input["action"].as_str().unwrap_or_default();
        self.on
            .get(&(action.to_owned(), place(input)))
            .or_else(|| self.any.get(action))
    }
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
    /// A round-trip drill's way back, expected.
    pub return_leg: Option<ReturnLeg>,
    /// The newest run whose measured steps the durations come from, if
    /// any (each step names its own: `measured_in`).
    pub basis: Option<String>,
}

/// Forecast a workflow of a plan in its lifecycle, from measured step
/// durations (`measured`) or the defaults; `parallelism` is the
/// executor's.
pub fn forecast(
    plan: &PlanDocument,
    lifecycle: &Lifecycle,
    workflow: Workflow,
    measured: &Measured,
    parallelism: usize,
) -> Forecast {
    let steps = plan_steps(plan, lifecycle, workflow);
    forecast_of(plan, workflow, steps, measured, parallelism)
}

/// The forecast of `steps`, those of `workflow` for `plan`.
fn forecast_of(
    plan: &PlanDocument,
    workflow: Workflow,
    steps: Vec<NewStep>,
    measured: &Measured,
    parallelism: usize,
) -> Forecast {
    let expected = |s: &NewStep| {
        let action = s.input["action"].as_str().unwrap_or_default();
        measured
            .expected(&s.input)
            .map_or_else(|| default_duration_ms(action), |m| m.0)
    };
    // The newest run any duration comes from.
    let basis = steps
        .iter()
        .filter_map(|s| measured.expected(&s.input))
        .min_by_key(|m| m.2)
        .map(|m| m.1.clone());
    let first_fence = steps
        .iter()
        .position(|s| s.input["action"] == "fence")
        .unwrap_or(0);
    let back = steps
        .iter()
        .position(|s| returning(&s.input))
        .unwrap_or(steps.len());
    let back_end = steps
        .iter()
        .rposition(|s| returning(&s.input))
        .map_or(back, |i| i + 1);
    let rto = critical_path(&steps[first_fence..back], &expected, parallelism);
    let recovers_on = steps
        .iter()
        .find(|s| s.input["action"] == "materialize")
        .map(|s| &s.input["site"]);
    let phase = phase_of(plan, workflow, recovers_on);
    let objective = objective_rto(plan, phase);
    let return_leg = (back < back_end).then(|| {
        let expected = critical_path(&steps[back..back_end], &expected, parallelism);
        let objective = objective_rto(plan, other(phase));
        ReturnLeg {
            phase: other(phase),
            objective_rto_ms: objective,
            rto_ms: Some(expected),
            rto_met: Some(expected <= objective),
        }
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
                measured_in: measured.expected(&s.input).map(|m| m.1.clone()),
            })
            .collect(),
        rto_ms: rto,
        objective_rto_ms: objective,
        within_objective: rto <= objective,
        return_leg,
        basis,
    }
}

/// How long `steps` take: stage by stage, each as long as its slowest
/// step times the waves the executor's parallelism needs; what comes after
/// the recovery (cleanups, hooks after the cutover) is not counted.
fn critical_path(
    steps: &[NewStep],
    expected: &impl Fn(&NewStep) -> i64,
    parallelism: usize,
) -> i64 {
    let mut total = 0;
    let mut i = 0;
    while i < steps.len() {
        let stage = steps[i].input.get("stage").cloned();
        let mut j = i + 1;
        while stage.is_some() && j < steps.len() && steps[j].input.get("stage") == stage.as_ref() {
            j += 1;
        }
        let group = &steps[i..j];
        if group.iter().all(|s| !after_recovery(&s.input)) {
            let slowest = group.iter().map(expected).max().unwrap_or(0);
            let waves = i64::try_from(group.len().div_ceil(parallelism.max(1))).unwrap_or(1);
            total += slowest * waves;
        }
        i = j;
    }
    total
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
/// durations measured in the runs of the stored plan of its name, if there
/// is one.
pub async fn dry_run_of(
    store: &Store,
    document: &PlanDocument,
    lifecycle: &Lifecycle,
    workflow: Workflow,
    parallelism: usize,
) -> Result<Forecast, EngineError> {
    let measured = measured_durations(store, &document.name).await?;
    dry_run_measured(store, document, lifecycle, workflow, &measured, parallelism).await
}

/// [`dry_run_of`] with the plan's measured durations read already (those
/// of many plans are read together: see [`measured_durations_of`]).
pub(crate) async fn dry_run_measured(
    store: &Store,
    document: &PlanDocument,
    lifecycle: &Lifecycle,
    workflow: Workflow,
    measured: &Measured,
    parallelism: usize,
) -> Result<Forecast, EngineError> {
    let steps = crate::steps_of(store, &document.name, document, lifecycle, workflow).await?;
    Ok(forecast_of(
        document,
        workflow,
        steps,
        measured,
        parallelism,
    ))
}

/// The workflows whose newest successful run the forecast draws on.
pub const MEASURED_WORKFLOWS: [Workflow; 6] = [
    Workflow::Drill,
    Workflow::Failover,
    Workflow::Failback,
    Workflow::Migration,
    Workflow::Reprotect,
    Workflow::Replication,
];

/// Step durations measured in the plan's runs: the newest successful run
/// of each of [`MEASURED_WORKFLOWS`], newest first (see [`Measured`]).
pub(crate) async fn measured_durations(store: &Store, plan: &str) -> Result<Measured, EngineError> {
    let mut of = measured_durations_of(store, &[plan]).await?;
    Ok(of.remove(plan).unwrap_or_default())
}

/// [`measured_durations`] of several plans, by plan: their runs read
/// together, and those runs' steps by one statement per thousand runs.
pub(crate) async fn measured_durations_of(
    store: &Store,
    plans: &[&str],
) -> Result<HashMap<String, Measured>, EngineError> {
    let newest = store
        .newest_runs_of(plans, &MEASURED_WORKFLOWS, Some(RunStatus::Succeeded))
        .await?;
    let ids: Vec<&str> = newest.values().flatten().map(|r| r.id.as_str()).collect();
    let mut steps = HashMap::new();
    for chunk in ids.chunks(1000) {
        steps.extend(store.steps_of(chunk).await?);
    }
    let mut out = HashMap::new();
    for (plan, mut runs) in newest {
        runs.sort_by(|a, b| (b.created_at_ms, &b.id).cmp(&(a.created_at_ms, &a.id)));
        let mut measured = Measured::default();
        for (rank, run) in runs.iter().enumerate() {
            let of_run = steps.get(&run.id).map_or(&[][..], Vec::as_slice);
            measured.add(&run.id, rank, of_run);
        }
        measured.runs = runs;
        out.insert(plan, measured);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use rebound_domain::{Lifecycle, PlanDocument, PlanState, Workflow};
    use rebound_store::StepRecord;
    use serde_json::{Value, json};

    use super::{Measured, default_duration_ms, forecast};

    const PLAN: &str = include_str!("../../../docs/examples/plan.yaml");

    /// A step that took `ms`.
    fn step(input: Value, ms: i64) -> StepRecord {
        let mut step = crate::test_steps::step(0, input, None);
        step.finished_at_ms = Some(1 + ms);
        step
    }

    /// The failback of the example plan (OpenStack → KubeVirt), failed
    /// over and reprotected: it recovers on `openstack-east`.
    fn failback(measured: &Measured) -> super::Forecast {
        let plan = PlanDocument::from_yaml(PLAN).expect("plan");
        let mut lifecycle = Lifecycle::new("kubevirt-west", "openstack-east");
        lifecycle.state = PlanState::ReadyForFailback;
        forecast(&plan, &lifecycle, Workflow::Failback, measured, 64)
    }

    fn expected<'a>(f: &'a super::Forecast, action: &str) -> (i64, Option<&'a str>) {
        let s = f
            .steps
            .iter()
            .find(|s| s.input["action"] == action)
            .unwrap_or_else(|| panic!("no {action}"));
        (s.expected_ms, s.measured_in.as_deref())
    }

    #[test]
    fn a_step_is_forecast_from_its_own_site_first_then_any_then_the_default() {
        let mut measured = Measured::default();
        assert_eq!(
            expected(&failback(&measured), "materialize"),
            (default_duration_ms("materialize"), None)
        );
        // A failover drill recovered on the other platform, and replication
        // cycles copied the other way.
        let drill = [
            step(
                json!({"action": "materialize", "site": "kubevirt-west"}),
                9_000,
            ),
            step(json!({"action": "gate", "site": "kubevirt-west"}), 2_000),
        ];
        let cycle = [step(
            json!({"action": "transfer", "from": "openstack-east", "to": "kubevirt-west"}),
            4_000,
        )];
        measured.add("drill-1", 0, &drill);
        measured.add("cycle-1", 1, &cycle);
        let f = failback(&measured);
        assert_eq!(expected(&f, "materialize"), (9_000, Some("drill-1")));
        assert_eq!(expected(&f, "transfer"), (4_000, Some("cycle-1")));
        assert_eq!(f.basis.as_deref(), Some("drill-1"));

        // An older reprotect copied back and a failback recovered on
        // OpenStack: the failback's own site and direction win, however old.
        let reprotect = [step(
            json!({"action": "transfer", "from": "kubevirt-west", "to": "openstack-east"}),
            30_000,
        )];
        let earlier_failback = [step(
            json!({"action": "materialize", "site": "openstack-east"}),
            45_000,
        )];
        measured.add("reprotect-1", 2, &reprotect);
        measured.add("failback-1", 3, &earlier_failback);
        let f = failback(&measured);
        assert_eq!(expected(&f, "materialize"), (45_000, Some("failback-1")));
        assert_eq!(expected(&f, "transfer"), (30_000, Some("reprotect-1")));
        assert_eq!(
            expected(&f, "gate"),
            (2_000, Some("drill-1")),
            "no gate measured on OpenStack: any site's"
        );
        assert_eq!(f.basis.as_deref(), Some("drill-1"), "the newest used");
    }
}

//! What the engine reports to Prometheus, through the `metrics` facade
//! (the host's `/metrics` renders it; without a recorder it costs
//! nothing): runs by workflow and outcome, step durations, each plan's
//! objectives against its RPO lag and RTO forecast as the policy tick last
//! saw them, and the time calls waited for a site's `max_calls`.

use std::time::Duration;

use rebound_domain::Workflow;
use rebound_store::{StepRecord, StepStatus};

use crate::Outcome;
use crate::policy::Compliance;

/// Runs driven to their end, by `workflow` and `outcome`.
pub const RUNS: &str = "rebound_runs_total";
/// Step durations, by `action` and `status` (a histogram).
pub const STEP_SECONDS: &str = "rebound_step_duration_seconds";
/// The buckets of [`STEP_SECONDS`]: a step takes a second to an hour.
pub const STEP_BUCKETS: [f64; 10] = [0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0];
/// A plan's RPO lag now, by `plan`; +Inf while a workload has no point.
pub const RPO_LAG: &str = "rebound_rpo_lag_seconds";
/// A plan's RPO objective, by `plan` and `phase`.
pub const RPO_OBJECTIVE: &str = "rebound_rpo_objective_seconds";
/// A plan's RTO forecast, by `plan` and `phase`.
pub const RTO_FORECAST: &str = "rebound_rto_forecast_seconds";
/// A plan's RTO objective, by `plan` and `phase`.
pub const RTO_OBJECTIVE: &str = "rebound_rto_objective_seconds";
/// 1 when an objective is met, 0 when breached, by `plan`, `phase` and
/// `objective` (`rpo`, `rto`, and `drill` for scheduled drills once one
/// has ended).
pub const OBJECTIVE_MET: &str = "rebound_objective_met";
/// 1 for the phase whose objectives a plan answers to now, 0 for the
/// other, by `plan` and `phase` (not set while a run moves it between
/// states, so it lapses with the other gauges not set): alerts join on it
/// to tell a breach from one ahead.
pub const PHASE_IN_FORCE: &str = "rebound_phase_in_force";
/// Time since a plan's newest successful drill started, by `plan`, for
/// plans with scheduled drills; +Inf before the first.
pub const DRILL_AGE: &str = "rebound_drill_age_seconds";
/// Time a plugin call waited for its site's `max_calls`, by `site`.
pub const CALL_WAIT_SECONDS: &str = "rebound_site_call_wait_seconds";
/// The buckets of [`CALL_WAIT_SECONDS`].
pub const CALL_WAIT_BUCKETS: [f64; 8] = [0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0];

/// Say what each metric means (once a recorder is installed).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        RUNS,
        "Runs driven to their end by this host, by workflow and outcome (succeeded, failed, cancelled)."
    );
    describe_histogram!(
        STEP_SECONDS,
        Unit::Seconds,
        "Durations of the steps finished on this host, by action and status."
    );
    describe_gauge!(
        RPO_LAG,
        Unit::Seconds,
        "Age of the oldest of a plan's workloads' newest recovery points at the standby (+Inf: a workload has none)."
    );
    describe_gauge!(
        RPO_OBJECTIVE,
        Unit::Seconds,
        "A plan's RPO objective for each phase."
    );
    describe_gauge!(
        RTO_FORECAST,
        Unit::Seconds,
        "A plan's RTO forecast for each phase's workflow, from its measured steps."
    );
    describe_gauge!(
        RTO_OBJECTIVE,
        Unit::Seconds,
        "A plan's RTO objective for each phase."
    );
    describe_gauge!(
        OBJECTIVE_MET,
        "1 when a plan meets an objective (rpo, rto, drill) of a phase, 0 when it is breached."
    );
    describe_gauge!(
        PHASE_IN_FORCE,
        "1 for the phase (failover, failback) whose objectives a plan answers to now, 0 for the other."
    );
    describe_gauge!(
        DRILL_AGE,
        Unit::Seconds,
        "Time since a plan's newest successful drill started, for plans with drills.every (+Inf before the first)."
    );
    describe_histogram!(
        CALL_WAIT_SECONDS,
        Unit::Seconds,
        "Time plugin calls waited for their site's max_calls (across the hosts sharing a PostgreSQL store)."
    );
}

/// Count a run that reached its end (not one handed over or waiting).
pub(crate) fn run_finished(workflow: Workflow, outcome: &Outcome) {
    let outcome = match outcome {
        Outcome::Succeeded => "succeeded",
        Outcome::Failed { .. } => "failed",
        Outcome::Cancelled { .. } => "cancelled",
        Outcome::LeaseLost | Outcome::WaitingApproval { .. } => return,
    };
    metrics::counter!(RUNS, "workflow" => workflow.to_string(), "outcome" => outcome).increment(1);
}

/// Time a step that just finished.
pub(crate) fn step_finished(step: &StepRecord) {
    let (Some(started), Some(finished)) = (step.started_at_ms, step.finished_at_ms) else {
        return;
    };
    let action = step.input["action"].as_str().unwrap_or("other").to_owned();
    let status = match step.status {
        StepStatus::Succeeded => "succeeded",
        _ => "failed",
    };
    let seconds = (finished - started).max(0) as f64 / 1000.0;
    metrics::histogram!(STEP_SECONDS, "action" => action, "status" => status).record(seconds);
}

/// Set a plan's gauges from its compliance at `now`.
pub(crate) fn compliance(c: &Compliance, now: i64) {
    let plan = c.plan.clone();
    if c.phase.is_some() {
        let lag = c.rpo_lag_ms.map_or(f64::INFINITY, |ms| ms as f64 / 1000.0);
        metrics::gauge!(RPO_LAG, "plan" => plan.clone()).set(lag);
    }
    let seconds = |ms: i64| ms as f64 / 1000.0;
    let met = |ok: bool| if ok { 1.0 } else { 0.0 };
    for p in &c.phases {
        let phase = p.phase.to_string();
        let labels = [("plan", plan.clone()), ("phase", phase.clone())];
        metrics::gauge!(PHASE_IN_FORCE, &labels).set(met(p.in_force));
        metrics::gauge!(RPO_OBJECTIVE, &labels).set(seconds(p.rpo_objective_ms));
        metrics::gauge!(RTO_FORECAST, &labels).set(seconds(p.rto_forecast_ms));
        metrics::gauge!(RTO_OBJECTIVE, &labels).set(seconds(p.rto_objective_ms));
        for (objective, ok) in [("rpo", p.rpo_met), ("rto", p.rto_met)] {
            metrics::gauge!(OBJECTIVE_MET, "plan" => plan.clone(), "phase" => phase.clone(),
                "objective" => objective)
            .set(met(ok));
        }
    }
    if let Some(drill) = &c.drill {
        let age = drill
            .succeeded_at_ms
            .map_or(f64::INFINITY, |at| seconds(now - at));
        metrics::gauge!(DRILL_AGE, "plan" => plan.clone()).set(age);
        if let (Some(ok), Some(phase)) = (drill.met, c.phase) {
            metrics::gauge!(OBJECTIVE_MET, "plan" => plan, "phase" => phase.to_string(),
                "objective" => "drill")
            .set(met(ok));
        }
    }
}

/// Time a call's wait for its site's `max_calls`.
pub(crate) fn call_waited(site: &str, waited: Duration) {
    metrics::histogram!(CALL_WAIT_SECONDS, "site" => site.to_owned()).record(waited.as_secs_f64());
}

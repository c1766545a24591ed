//! A plan's runbook: the whole round trip — failover, reprotect, failback,
//! in the order the plan will meet them from where it stands — written out
//! as a Markdown document a person can follow, review or file for an
//! audit. It is derived, never written by hand: each workflow's exact steps
//! stage by stage (what a dry-run of it shows, the plan's hooks and
//! approval gates included), each step's expected duration from the plan's
//! measured runs (or the defaults), the RTO forecast against the phase's
//! objective, how to start it, and where the plan stands now. So it is
//! current after every change of the plan or of its measured history,
//! which a runbook kept by hand seldom is.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use rebound_domain::{Lifecycle, PlanState, Span, Workflow};
use rebound_store::{PlanRecord, Store, StoreError};
use serde::Serialize;

use crate::EngineError;
use crate::policy::compliance_measured;
use crate::report::{Forecast, forecast};

/// Calls of one stage in flight the forecasts assume (as the policy's).
const PARALLELISM: usize = 64;

/// A plan's runbook.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Runbook {
    pub plan: String,
    /// The plan's revision it was written from.
    pub revision: i64,
    pub generated_at_ms: i64,
    /// The runbook itself (CommonMark with tables).
    pub markdown: String,
}

/// The workflows of the round trip, from a plan in `state` on: the one it
/// can run now first. `None` for states that are no starting point of the
/// round trip (a run in flight, a migration, unprotected).
fn round_trip_from(state: PlanState) -> Option<[Workflow; 3]> {
    use Workflow::{Failback, Failover, Reprotect};
    match state {
        PlanState::Protected => Some([Failover, Reprotect, Failback]),
        PlanState::FailedOver => Some([Reprotect, Failback, Failover]),
        PlanState::ReadyForFailback => Some([Failback, Failover, Reprotect]),
        _ => None,
    }
}

/// The runbook of the plan named `plan` at `now` (ms since the epoch).
/// A plan between states (a run of it in flight) or unprotected has none:
/// refused with the reason, as a workflow the lifecycle refuses is.
pub async fn runbook(store: &Store, plan: &str, now: i64) -> Result<Runbook, EngineError> {
    let record = store.plan(plan).await?;
    let life = &record.lifecycle;
    let Some(order) = round_trip_from(life.state) else {
        return Err(StoreError::Conflict(format!(
            "plan '{plan}' is {}: a runbook is written from protected, failed_over or ready_for_failback; wait for its run to end (or apply an unprotected plan again)",
            life.state
        ))
        .into());
    };
    let (now_c, measured) = compliance_measured(store, &record, now).await?;
    let mut md = String::new();
    header(&mut md, &record, now);
    standing(&mut md, &record, &now_c);
    recovered(&mut md, &record);
    // Each workflow from the lifecycle the one before leaves (a drill in
    // progress is no part of the round trip ahead).
    let mut lifecycle = life.clone();
    lifecycle.drilling = false;
    for (i, workflow) in order.into_iter().enumerate() {
        let f = forecast(
            &record.document,
            &lifecycle,
            workflow,
            &measured,
            PARALLELISM,
        );
        section(&mut md, i + 1, &record, &lifecycle, &f);
        advance(&mut lifecycle, workflow);
    }
    if_a_site_is_lost(&mut md, &record);
    if_a_run_fails(&mut md);
    Ok(Runbook {
        plan: plan.to_owned(),
        revision: record.revision,
        generated_at_ms: now,
        markdown: md,
    })
}

/// The lifecycle after `workflow` succeeded, every fence confirmed.
fn advance(lifecycle: &mut Lifecycle, workflow: Workflow) {
    let before = lifecycle.clone();
    let ok = lifecycle
        .begin(workflow)
        .and_then(|()| lifecycle.finish(workflow, true, true));
    if ok.is_err() {
        // The round trip's order is the lifecycle's own; should it refuse,
        // the next section is written from where this one started.
        *lifecycle = before;
    }
}

/// A time as UTC to the second.
fn at(ms: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or_default());
    humantime::format_rfc3339_seconds(time).to_string()
}

/// A duration in ms as plans write them ("11m 30s").
fn span(ms: i64) -> String {
    let ms = u64::try_from(ms).unwrap_or_default();
    // Whole seconds: a forecast is no more exact than that.
    Span(Duration::from_secs(ms.div_ceil(1000))).to_string()
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**breached**" }
}

/// Table cells hold no `|` and no line break.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn header(md: &mut String, record: &PlanRecord, now: i64) {
    let doc = &record.document;
    let _ = writeln!(md, "# Runbook: {}\n", doc.name);
    if let Some(d) = &doc.description {
        let _ = writeln!(md, "{d}\n");
    }
    let _ = writeln!(
        md,
        "Written by Rebound at {} from revision {} of the plan: each workflow's exact steps, as a dry-run shows them, with durations from the plan's measured runs. Write it again after any change — `rebound runbook {}` — rather than editing it.\n",
        at(now),
        record.revision,
        doc.name
    );
    let _ = writeln!(md, "| phase | RTO objective | RPO objective |");
    let _ = writeln!(md, "|---|---|---|");
    for (phase, o) in [
        ("failover", doc.objectives.failover),
        ("failback", doc.objectives.failback),
    ] {
        let _ = writeln!(md, "| {phase} | {} | {} |", o.rto, o.rpo);
    }
    let _ = writeln!(md);
}

/// What the plan recovers and how it is checked: the workloads tier by
/// tier with their health gates, the networks they are recovered into,
/// where traffic is moved.
fn recovered(md: &mut String, record: &PlanRecord) {
    use rebound_domain::plan::{HealthGate, RedirectTarget};
    let doc = &record.document;
    let _ = writeln!(
        md,
        "## What is recovered
"
    );
    let _ = writeln!(md, "| tier | workload | after | health gate | snapshots |");
    let _ = writeln!(md, "|---|---|---|---|---|");
    let tiers = doc
        .tiers()
        .unwrap_or_else(|_| vec![doc.workloads.iter().map(|w| w.id.clone()).collect()]);
    for (i, tier) in tiers.iter().enumerate() {
        for id in tier {
            let Some(w) = doc.workloads.iter().find(|w| &w.id == id) else {
                continue;
            };
            let gate = match &w.health_gate {
                None => "running".to_owned(),
                Some(HealthGate::PoweredOn { timeout }) => format!("running, within {timeout}"),
                Some(HealthGate::Tcp { port, timeout }) => {
                    format!("TCP port {port} accepts, within {timeout}")
                }
                Some(HealthGate::Http {
                    port,
                    path,
                    expect_status,
                    timeout,
                }) => {
                    format!("HTTP {path} on port {port} answers {expect_status}, within {timeout}")
                }
            };
            let after = if w.depends_on.is_empty() {
                "—".to_owned()
            } else {
                w.depends_on.join(", ")
            };
            let snapshots = match w.consistency {
                rebound_domain::plan::Consistency::Crash => "crash-consistent",
                rebound_domain::plan::Consistency::Application => "application-consistent",
            };
            let _ = writeln!(
                md,
                "| {} | `{}` | {} | {} | {snapshots} |",
                i + 1,
                cell(id),
                cell(&after),
                cell(&gate)
            );
        }
    }
    let _ = writeln!(md);
    for m in &doc.network_mapping {
        let _ = writeln!(
            md,
            "- Network `{}` on `{}` is `{}` on `{}`{} (the other way on the way back).",
            m.source,
            doc.source,
            m.target,
            doc.target,
            if m.keep_addresses {
                ", addresses kept"
            } else {
                ""
            }
        );
    }
    match &doc.redirect {
        Some(r) => {
            let target = match &r.target {
                RedirectTarget::DnsRecord {
                    zone,
                    name,
                    record_type,
                    ttl,
                } => format!("the DNS {record_type} record `{name}.{zone}` (TTL {ttl} s)"),
                RedirectTarget::LoadBalancerPool { pool } => {
                    format!("the load balancer pool `{pool}`")
                }
                RedirectTarget::FloatingIp { address } => format!("the floating IP `{address}`"),
                RedirectTarget::Route { route } => format!("the route `{route}`"),
            };
            let weights: Vec<String> = r.canary.iter().map(|w| format!("{w}%")).collect();
            let gate = r.gate.map_or_else(String::new, |g| {
                format!(", each step held {g} before the next")
            });
            let _ = writeln!(
                md,
                "- Traffic moves through {target}: {}{gate}.",
                weights.join(" → ")
            );
        }
        None => {
            let _ = writeln!(
                md,
                "- The plan moves no traffic: point clients at the recovered workloads yourself."
            );
        }
    }
    let _ = writeln!(md);
}

fn standing(md: &mut String, record: &PlanRecord, c: &crate::policy::Compliance) {
    let life = &record.lifecycle;
    let _ = writeln!(md, "## Where the plan stands\n");
    let _ = writeln!(
        md,
        "- State **{}**: the workloads serve on `{}`; the standby is `{}` (fencing epoch {}).",
        life.state, life.primary, life.standby, life.epoch
    );
    if let Some(site) = &life.unfenced {
        let _ = writeln!(
            md,
            "- `{site}` was never confirmed fenced: the reprotect fences it before anything replicates back."
        );
    }
    match (c.rpo_lag_ms, &c.rpo_worst_workload) {
        (Some(lag), Some(w)) => {
            let _ = writeln!(
                md,
                "- A failover now would lose up to {} of writes (`{w}`'s newest recovery point at the standby), against an RPO objective of {}: {}.",
                span(lag),
                span(c.rpo_objective_ms),
                verdict(c.rpo_met.unwrap_or(false))
            );
        }
        (None, Some(w)) => {
            let _ = writeln!(
                md,
                "- `{w}` has no recovery point at the standby yet: nothing to recover it from. Run a replication cycle first."
            );
        }
        _ => {}
    }
    match &c.drill {
        Some(d) => {
            let last = d.succeeded_at_ms.map_or_else(
                || "none has succeeded yet".to_owned(),
                |t| format!("the last successful one started {}", at(t)),
            );
            let due = d
                .due_at_ms
                .map_or_else(String::new, |t| format!("; the next is due {}", at(t)));
            let _ = writeln!(
                md,
                "- Drills every {}: {last}{due}{}.",
                span(d.every_ms),
                if d.met == Some(false) {
                    " — **overdue**"
                } else {
                    ""
                }
            );
        }
        None => {
            let _ = writeln!(
                md,
                "- Drills are run by hand (`rebound run drill {}`); set `drills.every` to have the policy run them.",
                record.document.name
            );
        }
    }
    let _ = writeln!(md);
}

fn section(md: &mut String, n: usize, record: &PlanRecord, life: &Lifecycle, f: &Forecast) {
    let doc = &record.document;
    let workflow = f.workflow;
    // Each acts from where the workloads serve towards the standby.
    let (from, to) = (life.primary.as_str(), life.standby.as_str());
    let what = match workflow {
        Workflow::Failover => format!(
            "The workloads recovered on `{to}` from their newest recovery points and traffic moved there; `{from}` fenced first where it answers"
        ),
        Workflow::Reprotect => format!(
            "`{from}`, now serving, protected again: its changes copied to `{to}`, so the way back has a current copy"
        ),
        Workflow::Failback => format!(
            "Planned: a last sync from `{from}` once it is fenced (no data lost), the workloads recovered on `{to}` and traffic moved back"
        ),
        _ => String::new(),
    };
    let _ = writeln!(md, "## {n}. {} — `{from}` → `{to}`\n", title(workflow));
    let _ = writeln!(md, "{what}.\n");
    let start = format!(
        "`rebound run {workflow} {} --wait`, or `POST /api/v1/plans/{}/runs` with `{{\"workflow\": \"{workflow}\"}}`",
        doc.name, doc.name
    );
    let _ = writeln!(md, "- From state `{}`. Start: {start}.", life.state);
    let gated = match workflow {
        Workflow::Failover => doc.approvals.failover,
        Workflow::Failback => doc.approvals.failback,
        _ => false,
    };
    if gated {
        let _ = writeln!(
            md,
            "- It waits for an operator's approval before it fences anything (`rebound approve RUN`)."
        );
    }
    let basis = f.basis.as_deref().map_or_else(
        || "per-action defaults: nothing measured yet — run a drill".to_owned(),
        |run| format!("durations measured up to run `{run}`"),
    );
    let expected = if workflow == Workflow::Reprotect {
        "Expected to take (the workloads keep serving)"
    } else {
        "Expected outage"
    };
    let _ = writeln!(
        md,
        "- {expected}: {} against the {} RTO objective of {}: {} ({basis}).\n",
        span(f.rto_ms),
        f.phase,
        span(f.objective_rto_ms),
        verdict(f.within_objective)
    );
    let _ = writeln!(md, "| stage | step | expected |");
    let _ = writeln!(md, "|---|---|---|");
    let mut last_stage = None;
    let mut stage_number = 0;
    for s in &f.steps {
        let stage = s.input["stage"].clone();
        if last_stage.as_ref() != Some(&stage) {
            stage_number += 1;
            last_stage = Some(stage);
        }
        let expected = match &s.measured_in {
            Some(_) => span(s.expected_ms),
            None => format!("{} (default)", span(s.expected_ms)),
        };
        let _ = writeln!(md, "| {stage_number} | {} | {expected} |", cell(&s.name));
    }
    let _ = writeln!(
        md,
        "\nSteps of one stage run at the same time; a stage starts once the one before it is done.\n"
    );
}

fn title(workflow: Workflow) -> &'static str {
    match workflow {
        Workflow::Failover => "Failover",
        Workflow::Reprotect => "Reprotect",
        Workflow::Failback => "Failback",
        _ => "Run",
    }
}

/// What to run when the primary's site is lost, and when the site the plan
/// left will not come back.
fn if_a_site_is_lost(md: &mut String, record: &PlanRecord) {
    let (plan, life) = (&record.document.name, &record.lifecycle);
    let _ = writeln!(
        md,
        "## If a site is lost
"
    );
    if life.state == PlanState::Protected {
        let _ = writeln!(
            md,
            "- `{0}` lost: `rebound run failover --site {0} --dry-run` lists every plan it serves, this one included, with each failover's expected RTO (or why it cannot fail over now); `rebound run failover --site {0} --wait --idempotency-key KEY` fails them over, each in a run of its own (`rebound run failover {plan} --wait` fails over this one alone).",
            life.primary
        );
    } else {
        let _ = writeln!(
            md,
            "- `{standby}` lost for good: `rebound run permanent_failover {plan} --new-standby SITE --dry-run` previews it (refused for a SITE that cannot take the plan or does not answer); `rebound run permanent_failover {plan} --new-standby SITE --wait` keeps the workloads on `{primary}` for good and protects them onto SITE (without `--new-standby`, back onto `{standby}`).",
            standby = life.standby,
            primary = life.primary
        );
    }
    let _ = writeln!(md);
}

fn if_a_run_fails(md: &mut String) {
    let _ = writeln!(md, "## If a run fails\n");
    let _ = writeln!(
        md,
        "- Nothing to undo by hand: a run that cannot finish is compensated — what it recovered on the standby fenced and removed once no traffic reached it, the old primary unfenced, traffic sent back — and the plan returns to the state it started from. Read the run's report (`rebound get run RUN`) for the failed step and its error, fix the cause, and start the workflow again: steps already done are not repeated."
    );
    let _ = writeln!(
        md,
        "- Standby incarnations that traffic had reached stay, fenced, and are named in a `standbys.kept` event (`rebound get events --plan PLAN`): inspect them before deleting them; a failover started again adopts those still serving."
    );
    let _ = writeln!(
        md,
        "- A run can be cancelled at any time (`rebound cancel RUN`): one being driven stops at its next stage and is compensated the same way."
    );
}

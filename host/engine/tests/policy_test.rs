//! The policy engine over time: a protected plan with no recovery point is
//! in RPO breach and gets a replication cycle; once points exist the breach
//! ends; a cycle is scheduled again when the lag reaches the replication
//! interval, never twice at once; lag beyond the objective is a breach
//! again; an RTO objective below the forecast is an RTO breach; the phase
//! not in force (failback) is forecast beside it; a plan with
//! `drills.every` gets a drill once its points exist and again every
//! `every`, and is judged by its drills' outcomes. Ticks take
//! the time as an argument, so the test controls the clock. On SQLite and
//! PostgreSQL.

use rebound_domain::PlanDocument;
use rebound_engine::policy::tick;
use rebound_store::{RecoveryPointRecord, RunStatus, Store};
use serde_json::json;

const PLAN: &str = include_str!("../../../docs/examples/plan.yaml");
const MINUTE: i64 = 60_000;

fn kinds(t: &rebound_engine::policy::Tick) -> Vec<&str> {
    t.events.iter().map(|e| e.kind.as_str()).collect()
}

/// A recovery point of each of the plan's workloads at its standby,
/// captured by `run` at `at`.
async fn every_point_at_the_standby(store: &Store, run: &str, at: i64) {
    for w in ["db-1", "app-1", "web-1"] {
        store
            .record_recovery_point(&RecoveryPointRecord {
                site: "kubevirt-west".into(),
                id: format!("{run}-{w}"),
                plan: "shop".into(),
                workload: w.into(),
                captured_at_ms: at,
                run: run.into(),
                detail: json!({}),
                drill: false,
            })
            .await
            .expect("point");
    }
}

async fn objectives_over_time(store: Store) {
    let document = PlanDocument::from_yaml(PLAN).expect("plan");
    store.put_plan(&document, "operator").await.expect("plan");
    let t0 = rebound_engine::now_ms();

    // Nothing replicated yet: a failover now would have nothing to start
    // from.
    let first = tick(&store, t0).await.expect("tick");
    assert_eq!(kinds(&first), ["rpo.breach", "replication.scheduled"]);
    let c = &first.compliance[0];
    assert_eq!((c.rpo_met, c.rpo_lag_ms), (Some(false), None));
    assert_eq!(c.rpo_worst_workload.as_deref(), Some("db-1"));
    assert_eq!(c.rpo_objective_ms, 15 * MINUTE);
    assert_eq!(first.scheduled.len(), 1);
    let cycle = store.run(&first.scheduled[0]).await.expect("run");
    assert_eq!(cycle.status, RunStatus::Pending);

    // The same verdict is not news, and a pending cycle is not doubled.
    let again = tick(&store, t0 + 1).await.expect("tick");
    assert!(again.events.is_empty(), "{:?}", again.events);

    // The cycle brings every workload's point to the standby.
    every_point_at_the_standby(&store, &cycle.id, t0).await;
    store
        .cancel_run(&cycle.id, "test")
        .await
        .expect("end the cycle");
    let met = tick(&store, t0 + MINUTE).await.expect("tick");
    assert_eq!(kinds(&met), ["rpo.met"]);
    assert_eq!(met.compliance[0].rpo_lag_ms, Some(MINUTE));
    assert_eq!(
        met.compliance[0].replication_due_at_ms,
        Some(t0 + 5 * MINUTE)
    );

    // The interval (5m, under half the 15m objective) brings the next cycle.
    let due = tick(&store, t0 + 5 * MINUTE + 1).await.expect("tick");
    assert_eq!(kinds(&due), ["replication.scheduled"]);

    // The cycle never lands: past 15 minutes of lag the objective is lost.
    let late = tick(&store, t0 + 16 * MINUTE).await.expect("tick");
    assert_eq!(
        kinds(&late),
        ["rpo.breach"],
        "no second cycle while one is pending"
    );
    assert_eq!(late.events[0].detail["lag_ms"], 16 * MINUTE);

    // An RTO objective below what the step plan needs is a breach too: the
    // forecast (no drill yet, per-action defaults) is 11 minutes.
    let mut strict = document.clone();
    strict.objectives.failover.rto = rebound_domain::Span::secs(300);
    store.put_plan(&strict, "operator").await.expect("plan");
    let rto = tick(&store, t0 + 16 * MINUTE).await.expect("tick");
    assert_eq!(kinds(&rto), ["rto.breach"]);
    assert_eq!(rto.compliance[0].rto_forecast_ms, Some(11 * MINUTE));
    assert_eq!(rto.compliance[0].rto_met, Some(false));

    // Both phases at once: failover in force (16 min of lag against its
    // 15 min, its 11 min forecast against 5 min), and failback seen ahead
    // — its RPO of 0 met by construction, its own workflow forecast
    // against its 2 h objective.
    let phases = &rto.compliance[0].phases;
    assert_eq!(phases.len(), 2);
    let (failover, failback) = (&phases[0], &phases[1]);
    assert_eq!(failover.phase, rebound_domain::Phase::Failover);
    assert!(failover.in_force && !failback.in_force);
    assert_eq!(
        (failover.rpo_met, failover.rto_forecast_ms, failover.rto_met),
        (false, 11 * MINUTE, false)
    );
    assert_eq!(failback.phase, rebound_domain::Phase::Failback);
    assert_eq!((failback.rpo_objective_ms, failback.rpo_met), (0, true));
    assert_eq!(failback.rto_objective_ms, 120 * MINUTE);
    assert!(failback.rto_met, "{failback:?}");
    assert_ne!(
        failback.rto_forecast_ms, failover.rto_forecast_ms,
        "the failback's own steps (resync, fence, approval), not the failover's"
    );
    let events = store.events(Some("shop"), &[], 100).await.expect("events");
    assert_eq!(events.len(), 6, "{events:#?}");
}

const WEEK: i64 = 7 * 24 * 60 * MINUTE;

/// The drill a tick started, as the lease holder `host` finishes it.
async fn finish_drill(
    store: &Store,
    tick: &rebound_engine::policy::Tick,
    succeeded: bool,
) -> rebound_store::RunRecord {
    assert_eq!(
        kinds(tick).last(),
        Some(&"drill.scheduled"),
        "{:?}",
        tick.events
    );
    let id = tick.scheduled.last().expect("scheduled");
    let drill = store.run(id).await.expect("run");
    assert_eq!(drill.workflow, rebound_domain::Workflow::Drill);
    assert_eq!(drill.status, RunStatus::Pending);
    // Only the drill to claim: the cycles the ticks started end unrun.
    let cycles = rebound_store::PlanRuns {
        workflows: &[rebound_domain::Workflow::Replication],
        statuses: &[RunStatus::Pending],
        limit: None,
    };
    for cycle in store.plan_runs("shop", cycles).await.expect("cycles") {
        store.cancel_run(&cycle.id, "test").await.expect("cancel");
    }
    let claimed = store
        .claim_run("host", std::time::Duration::from_secs(30))
        .await
        .expect("claim")
        .expect("the drill");
    assert_eq!(claimed.id, drill.id);
    store
        .finish_workflow(&drill.id, "host", succeeded, false)
        .await
        .expect("finish");
    drill
}

async fn drills_every_week(store: Store) {
    let mut document = PlanDocument::from_yaml(PLAN).expect("plan");
    document.drills.every = Some(rebound_domain::Span::secs(7 * 24 * 3600));
    store.put_plan(&document, "operator").await.expect("plan");
    let t0 = rebound_engine::now_ms();

    // No recovery point yet: nothing to drill on, nothing judged.
    let first = tick(&store, t0).await.expect("tick");
    assert_eq!(kinds(&first), ["rpo.breach", "replication.scheduled"]);
    let drill = first.compliance[0].drill.clone().expect("scheduled drills");
    assert_eq!(drill.every_ms, WEEK);
    assert_eq!(
        (drill.due_at_ms, drill.met, drill.last_run),
        (None, None, None)
    );
    every_point_at_the_standby(&store, "cycle-1", t0).await;
    store
        .cancel_run(&first.scheduled[0], "test")
        .await
        .expect("end the cycle");

    // Points at the standby: the first drill starts at once, keyed so that
    // hosts ticking together start it once; none other while it runs.
    let due = tick(&store, t0 + MINUTE).await.expect("tick");
    assert_eq!(kinds(&due), ["rpo.met", "drill.scheduled"]);
    let first_drill = store.run(&due.scheduled[0]).await.expect("drill");
    assert_eq!(
        first_drill.idempotency_key.as_deref(),
        Some("policy/drill/shop/after/none")
    );
    let running = tick(&store, t0 + MINUTE + 1).await.expect("tick");
    assert!(running.events.is_empty(), "{:?}", running.events);
    assert_eq!(
        running.compliance[0].drill.as_ref().and_then(|d| d.met),
        None
    );

    // It fails: the plan is overdue at once (no drill has succeeded), and
    // the next drill is a week after this one started, not at every tick.
    let failed = finish_drill(&store, &due, false).await;
    let breach = tick(&store, t0 + 2 * MINUTE).await.expect("tick");
    assert_eq!(kinds(&breach), ["drill.breach"]);
    let drill = breach.compliance[0].drill.clone().expect("drill");
    assert_eq!(drill.due_at_ms, Some(failed.created_at_ms + WEEK));
    assert_eq!(drill.last_run.as_deref(), Some(failed.id.as_str()));
    assert_eq!(drill.succeeded_at_ms, None);
    let early = tick(&store, failed.created_at_ms + WEEK - 1)
        .await
        .expect("tick");
    assert!(
        !kinds(&early).contains(&"drill.scheduled"),
        "{:?}",
        early.events
    );

    // A week on (fresh points there), the next drill; it succeeds.
    let week = failed.created_at_ms + WEEK;
    every_point_at_the_standby(&store, "cycle-2", week).await;
    let next = tick(&store, week + MINUTE).await.expect("tick");
    let passed = finish_drill(&store, &next, true).await;
    assert_eq!(
        passed.idempotency_key,
        Some(format!("policy/drill/shop/after/{}", failed.id))
    );
    // (Drills start on the real clock, a week behind the ticks': the next
    // is due a week after this one started, so at once.)
    let met = tick(&store, week + 2 * MINUTE).await.expect("tick");
    assert_eq!(kinds(&met), ["drill.met", "drill.scheduled"]);
    let drill = met.compliance[0].drill.clone().expect("drill");
    assert_eq!(drill.succeeded_at_ms, Some(passed.created_at_ms));
    assert_eq!(drill.met, Some(true));

    // A drill may take the failover RTO objective it rehearses (30m): the
    // plan is overdue only past `every` plus that since the last success.
    let grace = 30 * MINUTE;
    let within = tick(&store, passed.created_at_ms + WEEK + grace)
        .await
        .expect("tick");
    assert_eq!(
        within.compliance[0].drill.as_ref().and_then(|d| d.met),
        Some(true)
    );
    let late = tick(&store, passed.created_at_ms + WEEK + grace + 1)
        .await
        .expect("tick");
    assert_eq!(
        late.compliance[0].drill.as_ref().and_then(|d| d.met),
        Some(false)
    );
    assert!(kinds(&late).contains(&"drill.breach"), "{:?}", late.events);
    let events = store
        .events(Some("shop"), &["drill.scheduled"], 100)
        .await
        .expect("events");
    assert_eq!(
        events.len(),
        3,
        "one drill at first, one a week after it, one due now: {events:#?}"
    );
}

rebound_store::on_both_backends!(objectives_over_time, drills_every_week);

/// Each tick sets the plan's gauges for Prometheus: the RPO lag (+Inf with
/// no point yet, then its age), both phases' objectives and forecasts,
/// whether each objective is met, and the age of the last successful
/// drill.
#[tokio::test(flavor = "current_thread")]
async fn a_tick_sets_each_plans_objective_gauges() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    // The test's one thread runs every await below.
    let _local = metrics::set_default_local_recorder(&recorder);
    let dir = tempfile::tempdir().expect("tmp");
    let store = rebound_store::testing::fresh_sqlite(dir.path())
        .await
        .expect("store");
    let mut document = PlanDocument::from_yaml(PLAN).expect("plan");
    document.drills.every = Some(rebound_domain::Span::secs(7 * 24 * 3600));
    store.put_plan(&document, "operator").await.expect("plan");
    let t0 = rebound_engine::now_ms();
    tick(&store, t0).await.expect("tick");
    let text = handle.render();
    for line in [
        "rebound_rpo_lag_seconds{plan=\"shop\"} inf",
        "rebound_rpo_objective_seconds{plan=\"shop\",phase=\"failover\"} 900",
        "rebound_rpo_objective_seconds{plan=\"shop\",phase=\"failback\"} 0",
        "rebound_objective_met{plan=\"shop\",phase=\"failover\",objective=\"rpo\"} 0",
        "rebound_objective_met{plan=\"shop\",phase=\"failback\",objective=\"rpo\"} 1",
        "rebound_phase_in_force{plan=\"shop\",phase=\"failover\"} 1",
        "rebound_phase_in_force{plan=\"shop\",phase=\"failback\"} 0",
    ] {
        assert!(text.contains(line), "{line} not in:\n{text}");
    }
    every_point_at_the_standby(&store, "cycle", t0).await;
    tick(&store, t0 + MINUTE).await.expect("tick");
    let text = handle.render();
    for line in [
        "rebound_rpo_lag_seconds{plan=\"shop\"} 60",
        "rebound_objective_met{plan=\"shop\",phase=\"failover\",objective=\"rpo\"} 1",
        "rebound_rto_objective_seconds{plan=\"shop\",phase=\"failover\"} ",
        "rebound_rto_forecast_seconds{plan=\"shop\",phase=\"failback\"} ",
        // The first drill started, none succeeded yet.
        "rebound_drill_age_seconds{plan=\"shop\"} inf",
    ] {
        assert!(text.contains(line), "{line} not in:\n{text}");
    }
    assert!(
        !text.contains("objective=\"drill\""),
        "no drill verdict before one ended:\n{text}"
    );
}

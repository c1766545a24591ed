//! What a plan's run history costs the reads that run on every policy tick
//! and compliance request. Run with `cargo xtask bench`.
//!
//! One plan on the default SQLite store with a week of 5-minute
//! replication cycles (2,016 finished runs of 4 steps) and, older, a drill
//! and a failover. Timed side by side:
//! - `history/newest_measured_runs`: the newest succeeded run of each
//!   workflow a forecast draws on, as the engine asks now
//!   (`Store::newest_runs`: one statement, an indexed `LIMIT 1` select per
//!   workflow);
//! - `history/newest_measured_runs_per_workflow`: the same runs asked for
//!   as the engine did until 2026-12-07, one query per workflow
//!   (`Store::plan_runs`);
//! - `history/newest_measured_runs_baseline`: the same runs found as the
//!   engine did before that — every run of the plan read, then filtered;
//! - `history/failback_dry_run`: a whole failback forecast (those runs and
//!   their steps read, the step plan derived);
//! - `history/compliance`: the plan's compliance now (its workloads'
//!   newest points at the standby — 24 kept of each — and both phases'
//!   forecasts), what every policy tick and the dashboard's
//!   `GET /compliance` compute for each plan;
//! - `history/policy_tick`: a whole policy tick over the plan — its
//!   compliance, the last RPO and RTO verdicts among its events (a
//!   `replication.scheduled` event per cycle) and its next cycle, already
//!   pending after the first tick.

#[path = "support/runs.rs"]
mod runs;

use criterion::{Criterion, criterion_group, criterion_main};
use rebound_domain::{PlanDocument, Workflow};
use rebound_engine::MEASURED_WORKFLOWS;
use rebound_store::{NewStep, PlanRuns, RecoveryPointRecord, RunRecord, RunStatus, Store};
use serde_json::json;

const CYCLES: usize = 2_016;
const POINTS: usize = 24;

const PLAN: &str = "name: shop\nsource: east\ntarget: west\nworkloads:\n  - id: db\n  - id: web\n    depends_on: [db]\n\
replication: { mode: native, interval: 5m }\n\
objectives:\n  failover: { rto: 30m, rpo: 15m }\n  failback: { rto: 2h, rpo: 0s }\n";

async fn history(store: &Store) {
    let document = PlanDocument::from_yaml(PLAN).expect("plan");
    store.put_plan(&document, "bench").await.expect("plan");
    let step = |action: &str, site: &str| NewStep {
        name: format!("{action} on {site}"),
        input: json!({"action": action, "site": site, "workload": "db"}),
    };
    runs::finished(
        store,
        "shop",
        Workflow::Drill,
        &[step("materialize", "west")],
    )
    .await;
    runs::finished(store, "shop", Workflow::Failover, &[step("fence", "east")]).await;
    let cycle = [
        step("snapshot", "east"),
        step("snapshot", "east"),
        step("replicate", "east"),
        step("prune", "west"),
    ];
    for _ in 0..CYCLES {
        runs::finished(store, "shop", Workflow::Replication, &cycle).await;
        // What the policy engine records as it schedules each cycle.
        store
            .record_event("shop", "replication.scheduled", json!({}))
            .await
            .expect("event");
    }
    // The points the plan's retention keeps of each workload.
    for workload in ["db", "web"] {
        for n in 0..POINTS {
            let point = RecoveryPointRecord {
                site: "west".into(),
                id: format!("{workload}-{n}"),
                plan: "shop".into(),
                workload: workload.into(),
                captured_at_ms: rebound_engine::now_ms() - (POINTS - n) as i64 * 300_000,
                run: "bench".into(),
                detail: json!({}),
                drill: false,
            };
            store.record_recovery_point(&point).await.expect("point");
        }
    }
}

async fn newest(store: &Store) -> Vec<RunRecord> {
    store
        .newest_runs("shop", &MEASURED_WORKFLOWS, RunStatus::Succeeded)
        .await
        .expect("runs")
}

async fn newest_per_workflow(store: &Store) -> Vec<RunRecord> {
    let mut out = Vec::new();
    for workflow in MEASURED_WORKFLOWS {
        let which = PlanRuns {
            workflows: &[workflow],
            statuses: &[RunStatus::Succeeded],
            limit: Some(1),
        };
        out.extend(store.plan_runs("shop", which).await.expect("runs"));
    }
    out
}

async fn newest_baseline(store: &Store) -> Vec<RunRecord> {
    let mut out: Vec<RunRecord> = Vec::new();
    for run in store.runs_of("shop").await.expect("runs") {
        let wanted =
            run.status == RunStatus::Succeeded && MEASURED_WORKFLOWS.contains(&run.workflow);
        if wanted && !out.iter().any(|r| r.workflow == run.workflow) {
            out.push(run);
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let tokio = tokio::runtime::Runtime::new().expect("tokio");
    let dir = tempfile::tempdir().expect("tmp");
    let store = runs::filled(
        &tokio,
        dir.path(),
        |store| async move { history(&store).await },
    );
    let found = tokio.block_on(async {
        [
            newest(&store).await,
            newest_per_workflow(&store).await,
            newest_baseline(&store).await,
        ]
    });
    let [one, each, every] = found.map(|mut runs| {
        runs.sort_by(|x, y| x.id.cmp(&y.id));
        runs
    });
    assert_eq!(
        one, each,
        "one statement finds the runs one query each finds"
    );
    assert_eq!(one, every, "and those reading every run find");
    assert_eq!(one.len(), 3);

    let mut group = c.benchmark_group("history");
    group.bench_function("newest_measured_runs", |bench| {
        bench.iter(|| tokio.block_on(newest(&store)));
    });
    group.bench_function("newest_measured_runs_per_workflow", |bench| {
        bench.iter(|| tokio.block_on(newest_per_workflow(&store)));
    });
    group.bench_function("newest_measured_runs_baseline", |bench| {
        bench.iter(|| tokio.block_on(newest_baseline(&store)));
    });
    group.bench_function("failback_dry_run", |bench| {
        bench.iter(|| {
            tokio.block_on(rebound_engine::dry_run(
                &store,
                "shop",
                Workflow::Failback,
                64,
            ))
        });
    });
    let plan = tokio.block_on(store.plan("shop")).expect("plan");
    group.bench_function("compliance", |bench| {
        bench.iter(|| {
            tokio
                .block_on(rebound_engine::policy::compliance(
                    &store,
                    &plan,
                    rebound_engine::now_ms(),
                ))
                .expect("compliance")
        });
    });
    group.bench_function("policy_tick", |bench| {
        bench.iter(|| {
            tokio
                .block_on(rebound_engine::policy::tick(
                    &store,
                    rebound_engine::now_ms(),
                ))
                .expect("tick")
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

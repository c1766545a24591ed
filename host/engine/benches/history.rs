//! What a plan's run history costs the reads that run on every policy tick
//! and compliance request. Run with `cargo xtask bench`.
//!
//! One plan on the default SQLite store with a week of 5-minute
//! replication cycles (2,016 finished runs of 4 steps) and, older, a drill
//! and a failover. Timed side by side:
//! - `history/newest_measured_runs`: the newest succeeded run of each
//!   workflow a forecast draws on, as the engine asks now
//!   (`Store::plan_runs`, one indexed query per workflow);
//! - `history/newest_measured_runs_baseline`: the same runs found as the
//!   engine did before — every run of the plan read, then filtered;
//! - `history/failback_dry_run`: a whole failback forecast (those runs and
//!   their steps read, the step plan derived).

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use rebound_domain::{PlanDocument, Workflow};
use rebound_engine::MEASURED_WORKFLOWS;
use rebound_store::{NewStep, PlanRuns, RunRecord, RunStatus, Store};
use serde_json::json;

const CYCLES: usize = 2_016;

const PLAN: &str = "name: shop\nsource: east\ntarget: west\nworkloads:\n  - id: db\n  - id: web\n    depends_on: [db]\n\
replication: { mode: native, interval: 5m }\n\
objectives:\n  failover: { rto: 30m, rpo: 15m }\n  failback: { rto: 2h, rpo: 0s }\n";

/// A finished run of `workflow` with `steps`.
async fn finished(store: &Store, workflow: Workflow, steps: &[NewStep]) {
    let run = store
        .create_run_with_steps("shop", workflow, None, "bench", steps)
        .await
        .expect("run");
    store
        .claim_run("bench", Duration::from_secs(60))
        .await
        .expect("claim")
        .expect("the run just made");
    store
        .set_run_status(&run.id, "bench", RunStatus::Succeeded)
        .await
        .expect("finish");
}

async fn history(store: &Store) {
    let document = PlanDocument::from_yaml(PLAN).expect("plan");
    store.put_plan(&document, "bench").await.expect("plan");
    let step = |action: &str, site: &str| NewStep {
        name: format!("{action} on {site}"),
        input: json!({"action": action, "site": site, "workload": "db"}),
    };
    finished(store, Workflow::Drill, &[step("materialize", "west")]).await;
    finished(store, Workflow::Failover, &[step("fence", "east")]).await;
    let cycle = [
        step("snapshot", "east"),
        step("snapshot", "east"),
        step("replicate", "east"),
        step("prune", "west"),
    ];
    for _ in 0..CYCLES {
        finished(store, Workflow::Replication, &cycle).await;
    }
}

async fn newest(store: &Store) -> Vec<RunRecord> {
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
    let store = tokio.block_on(async {
        let store = rebound_store::testing::fresh_sqlite(dir.path())
            .await
            .expect("store");
        history(&store).await;
        store
    });
    let (mut a, mut b) =
        tokio.block_on(async { (newest(&store).await, newest_baseline(&store).await) });
    a.sort_by(|x, y| x.id.cmp(&y.id));
    b.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(a, b, "both find the same runs");
    assert_eq!(a.len(), 3);

    let mut group = c.benchmark_group("history");
    group.bench_function("newest_measured_runs", |bench| {
        bench.iter(|| tokio.block_on(newest(&store)));
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
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

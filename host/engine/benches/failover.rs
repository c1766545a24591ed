//! Engine overhead on a large plan. Run with `cargo xtask bench`.
//!
//! A plan of 1,000 workloads in 5 dependency tiers (200 per tier) fails
//! over through an in-process provider whose every operation takes 200 ms,
//! on the default SQLite store. The ideal critical path is one operation
//! per stage of the outage window (fence, then per tier materialize and
//! health gate, then the redirect: 12 stages, 2.4 s); the report prints the
//! measured RTO divided by it (target ≤ 1.05) and the engine's CPU time
//! per step. Criterion times the run itself (`engine/failover_1000`).

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group};
use futures_util::future::BoxFuture;
use rebound_domain::{PlanDocument, Workflow};
use rebound_engine::{
    Executor, ExecutorConfig, Progress, Started, StepError, StepRunner, plan_steps, report,
};
use rebound_store::StepRecord;
use serde_json::{Value, json};

const TIERS: usize = 5;
const PER_TIER: usize = 200;
const LATENCY: Duration = Duration::from_millis(200);

/// Every operation takes `LATENCY` and then succeeds.
struct SlowProvider;

impl StepRunner for SlowProvider {
    fn start<'a>(&'a self, step: &'a StepRecord) -> BoxFuture<'a, Result<Started, StepError>> {
        Box::pin(async move {
            tokio::time::sleep(LATENCY).await;
            Ok(Started::Done(match step.input["action"].as_str() {
                Some("fence") => json!({"fenced": true}),
                Some("materialize") => json!({"workload": step.input["workload"]}),
                _ => json!({}),
            }))
        })
    }

    fn poll<'a>(
        &'a self,
        _: &'a StepRecord,
        _: &'a Value,
    ) -> BoxFuture<'a, Result<Progress, StepError>> {
        Box::pin(async { Ok(Progress::Running) })
    }
}

fn plan() -> PlanDocument {
    let mut yaml = String::from("name: big\nsource: east\ntarget: west\nworkloads:\n");
    for tier in 0..TIERS {
        for i in 0..PER_TIER {
            yaml.push_str(&format!("  - id: w{tier}-{i}\n"));
            if tier > 0 {
                yaml.push_str(&format!("    depends_on: [w{}-{i}]\n", tier - 1));
            }
        }
    }
    yaml.push_str(
        "replication: { mode: native, interval: 5m }\n\
         objectives:\n  failover: { rto: 30m, rpo: 15m }\n  failback: { rto: 2h, rpo: 0s }\n\
         redirect:\n  target: { kind: route, route: big/www }\n",
    );
    PlanDocument::from_yaml(&yaml).expect("plan")
}

/// One failover on a fresh store: (wall time of the run, measured RTO,
/// CPU time, steps).
async fn failover(document: &PlanDocument) -> (Duration, Duration, Duration, usize) {
    let dir = tempfile::tempdir().expect("tmp");
    let store = rebound_store::testing::fresh_sqlite(dir.path())
        .await
        .expect("store");
    let record = store.put_plan(document, "bench").await.expect("plan");
    let steps = plan_steps(document, &record.lifecycle, Workflow::Failover);
    let run = store
        .start_workflow("big", Workflow::Failover, None, "bench", &steps)
        .await
        .expect("run");
    let executor = Executor::new(
        store.clone(),
        Arc::new(SlowProvider),
        ExecutorConfig {
            parallelism: 1000,
            ..ExecutorConfig::new("bench")
        },
    );
    let cpu = cpu_time::ProcessTime::now();
    let started = std::time::Instant::now();
    executor.work_once().await.expect("work").expect("run");
    let wall = started.elapsed();
    let cpu = cpu.elapsed();
    let report = report(&store, &run.id).await.expect("report");
    let rto = Duration::from_millis(report.measured_rto_ms.expect("rto").unsigned_abs());
    (wall, rto, cpu, steps.len())
}

fn bench(c: &mut Criterion) {
    let tokio = tokio::runtime::Runtime::new().expect("tokio");
    let document = plan();
    let ideal = LATENCY * u32::try_from(2 * TIERS + 2).expect("stages");
    let mut samples = Vec::new();
    let mut group = c.benchmark_group("engine");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    group.bench_function("failover_1000", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let sample = tokio.block_on(failover(&document));
                total += sample.0;
                samples.push(sample);
            }
            total
        });
    });
    group.finish();

    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ratio = median(
        samples
            .iter()
            .map(|s| s.1.as_secs_f64() / ideal.as_secs_f64())
            .collect(),
    );
    let cpu_per_step = median(
        samples
            .iter()
            .map(|s| s.2.as_secs_f64() * 1e6 / s.3 as f64)
            .collect(),
    );
    let rto = median(samples.iter().map(|s| s.1.as_secs_f64()).collect());
    println!(
        "\nengine: 1,000 workloads in {TIERS} tiers, {LATENCY:?} per operation, {} runs",
        samples.len()
    );
    println!("  measured RTO (median)      {rto:>8.3} s");
    println!(
        "  ideal critical path        {:>8.3} s",
        ideal.as_secs_f64()
    );
    println!("  RTO / ideal (median)       {ratio:>8.3}x   (target ≤ 1.05)");
    println!("  engine CPU per step        {cpu_per_step:>8.1} µs");
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}

//! What a fleet of plans costs the reads every policy tick and every
//! `GET /compliance` (the dashboard's) make: 300 plans on the default
//! SQLite store, each with two workloads, a drill, a failover, 12
//! replication cycles of 4 steps and 6 recovery points of each workload
//! at its standby. Timed side by side in one run:
//! - `fleet/compliance_of`: every plan's compliance as the engine reads it
//!   now (`policy::compliance_of`: the newest captures of every plan by one
//!   statement, the measured runs by a few, their steps by one, whatever
//!   the number of plans);
//! - `fleet/compliance_each`: the same, a plan after the other
//!   (`policy::compliance` per plan: three statements each, as the engine
//!   read them until 2026-12-07) — the baseline;
//! - `fleet/policy_tick`: a whole policy tick over the fleet (its
//!   compliance, the verdicts among its events, nothing due).
//!
//! The two ways are checked to give the same answers first. Run with
//! `cargo xtask bench`.

#[path = "support/runs.rs"]
mod runs;

use criterion::{Criterion, criterion_group, criterion_main};
use rebound_domain::{PlanDocument, Workflow};
use rebound_engine::policy::{compliance, compliance_of, tick};
use rebound_store::{NewStep, RecoveryPointRecord, Store};
use serde_json::json;

const PLANS: usize = 300;
const CYCLES: usize = 12;
const POINTS: usize = 6;

fn plan(n: usize) -> PlanDocument {
    let text = format!(
        "name: plan-{n}\nsource: east\ntarget: west\nworkloads:\n  - id: db-{n}\n  - id: web-{n}\n    depends_on: [db-{n}]\n\
replication: {{ mode: native, interval: 5m }}\n\
objectives:\n  failover: {{ rto: 30m, rpo: 15m }}\n  failback: {{ rto: 2h, rpo: 0s }}\n"
    );
    PlanDocument::from_yaml(&text).expect("plan")
}

async fn fleet(store: &Store) {
    let now = rebound_engine::now_ms();
    for n in 0..PLANS {
        let document = plan(n);
        let name = document.name.clone();
        store.put_plan(&document, "bench").await.expect("plan");
        let step = |action: &str, site: &str| NewStep {
            name: format!("{action} on {site}"),
            input: json!({"action": action, "site": site, "workload": format!("db-{n}")}),
        };
        runs::finished(
            store,
            &name,
            Workflow::Drill,
            &[step("materialize", "west")],
        )
        .await;
        runs::finished(store, &name, Workflow::Failover, &[step("fence", "east")]).await;
        let cycle = [
            step("snapshot", "east"),
            step("snapshot", "east"),
            step("replicate", "east"),
            step("prune", "west"),
        ];
        for _ in 0..CYCLES {
            runs::finished(store, &name, Workflow::Replication, &cycle).await;
        }
        for workload in [format!("db-{n}"), format!("web-{n}")] {
            for p in 0..POINTS {
                let point = RecoveryPointRecord {
                    site: "west".into(),
                    id: format!("{workload}-{p}"),
                    plan: name.clone(),
                    workload: workload.clone(),
                    captured_at_ms: now - (POINTS - p) as i64 * 60_000,
                    run: "bench".into(),
                    detail: json!({}),
                    drill: false,
                };
                store.record_recovery_point(&point).await.expect("point");
            }
        }
    }
}

fn bench(c: &mut Criterion) {
    let tokio = tokio::runtime::Runtime::new().expect("tokio");
    let dir = tempfile::tempdir().expect("tmp");
    let store = runs::filled(
        &tokio,
        dir.path(),
        |store| async move { fleet(&store).await },
    );
    let plans = tokio.block_on(store.plans()).expect("plans");
    assert_eq!(plans.len(), PLANS);
    let each = |now: i64| {
        let (store, plans) = (&store, &plans);
        async move {
            let mut out = Vec::new();
            for plan in plans {
                out.push(compliance(store, plan, now).await.expect("compliance"));
            }
            out
        }
    };
    let now = rebound_engine::now_ms();
    let together = tokio
        .block_on(compliance_of(&store, &plans, now))
        .expect("compliance");
    assert_eq!(together, tokio.block_on(each(now)), "the same answers");
    assert!(
        together.iter().all(|c| c.rpo_met == Some(true)),
        "{together:?}"
    );
    // The first tick records each plan's verdicts; the timed ones find
    // nothing new.
    tokio.block_on(tick(&store, now)).expect("tick");

    let mut group = c.benchmark_group("fleet");
    group.sample_size(20);
    group.bench_function("compliance_of", |bench| {
        bench.iter(|| {
            tokio
                .block_on(compliance_of(&store, &plans, rebound_engine::now_ms()))
                .expect("compliance")
        });
    });
    group.bench_function("compliance_each", |bench| {
        bench.iter(|| tokio.block_on(each(rebound_engine::now_ms())));
    });
    group.bench_function("policy_tick", |bench| {
        bench.iter(|| {
            tokio
                .block_on(tick(&store, rebound_engine::now_ms()))
                .expect("tick")
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

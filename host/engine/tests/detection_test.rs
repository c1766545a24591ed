//! Automatic failover through the real example plugin against simulated
//! sites: two witnesses probe the primary; one witness alone seeing it fail
//! starts nothing (it may be the one cut off); when both have seen enough
//! failures in a row, one failover starts — once — and recovers the plan.
//! On SQLite and PostgreSQL.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rebound_domain::{PlanDocument, PlanState};
use rebound_engine::detection::detect;
use rebound_engine::{BoundSite, Executor, ExecutorConfig, Outcome, PluginSteps};
use rebound_lab::{ExampleOptions, ExampleSite};
use rebound_runtime::SiteGrant;
use rebound_store::Store;

const PLAN: &str = r#"
name: shop
source: lab-a
target: lab-b
workloads:
  - id: vm-1
replication: { mode: native, interval: 5m }
objectives:
  failover: { rto: 30m, rpo: 15m }
  failback: { rto: 2h, rpo: 0s }
trigger:
  mode: automatic
  detection: { probe_interval: 10s, consecutive_failures: 3, witnesses: 2 }
approvals: { failover: false }
"#;

const S: i64 = 1000;

fn grant(site: &ExampleSite, name: &str) -> SiteGrant {
    SiteGrant::new(name)
        .config("endpoint", &site.endpoint())
        .secret("token", &site.token)
        .grant(&site.endpoint())
        .expect("grant")
}

async fn automatic_failover(store: Store) {
    store
        .put_plan(&PlanDocument::from_yaml(PLAN).expect("plan"), "operator")
        .await
        .expect("plan");
    let options = ExampleOptions::quick;
    let a = ExampleSite::start(options(rebound_lab::example::default_vms()))
        .await
        .expect("a");
    let b = ExampleSite::start(options(Vec::new())).await.expect("b");
    let runtime = Arc::new(rebound_runtime::testing::runtime());
    let plugin = rebound_runtime::testing::load(&runtime, "example").await;
    let bound = |site: &ExampleSite, name: &str| BoundSite {
        plugin: plugin.clone(),
        grant: grant(site, name),
    };
    let sites = HashMap::from([
        ("lab-a".to_owned(), bound(&a, "lab-a")),
        ("lab-b".to_owned(), bound(&b, "lab-b")),
    ]);
    let steps = Arc::new(PluginSteps::new(runtime, store.clone(), sites));
    let executor = Executor::new(
        store.clone(),
        steps.clone(),
        ExecutorConfig {
            poll_interval: Duration::from_millis(20),
            ..ExecutorConfig::new("host-a")
        },
    );
    rebound_engine::trigger(
        &store,
        "shop",
        rebound_domain::Workflow::Replication,
        None,
        "t",
    )
    .await
    .expect("replication");
    assert_eq!(
        executor.work_once().await.expect("work").expect("run").1,
        Outcome::Succeeded
    );

    let t0 = rebound_engine::now_ms();
    let round = async |witness: &str, t: i64| {
        detect(&store, &steps, witness, t0 + t)
            .await
            .expect("detect")
    };
    // Healthy: probed, nothing happens; a second round within the probe
    // interval does not probe again.
    assert_eq!(round("w1", 0).await.probed, ["lab-a"]);
    assert_eq!(round("w2", 0).await.probed, ["lab-a"]);
    assert!(round("w1", 5 * S).await.probed.is_empty());

    // A blip: two failures, then a good probe resets the count.
    a.set_down(true);
    round("w1", 10 * S).await;
    round("w1", 20 * S).await;
    a.set_down(false);
    round("w1", 30 * S).await;
    let mine = async |w: &str| {
        store
            .probes("lab-a")
            .await
            .expect("probes")
            .into_iter()
            .find(|p| p.witness == w)
            .expect("probe")
    };
    assert_eq!(mine("w1").await.failures, 0);

    // Down for real. One witness alone, however sure, starts nothing.
    a.set_down(true);
    for t in [40, 50, 60] {
        assert!(round("w1", t * S).await.failovers.is_empty());
    }
    assert_eq!(mine("w1").await.failures, 3);
    assert!(!mine("w1").await.detail.is_empty());
    // The second witness agrees after its own three failures.
    assert!(round("w2", 60 * S).await.failovers.is_empty());
    assert!(round("w2", 70 * S).await.failovers.is_empty());
    let detected = round("w2", 80 * S).await;
    assert_eq!(detected.failovers.len(), 1, "{detected:?}");
    // Both witnesses see it; the failover starts once.
    assert!(round("w1", 80 * S).await.failovers.is_empty());
    let events = store
        .events(Some("shop"), &["failover.triggered"], 10)
        .await
        .expect("events");
    assert_eq!(events.len(), 1);
    let mut witnesses: Vec<&str> = events[0].detail["witnesses"]
        .as_array()
        .expect("witnesses")
        .iter()
        .filter_map(|w| w.as_str())
        .collect();
    witnesses.sort_unstable();
    assert_eq!(witnesses, ["w1", "w2"]);

    // The failover runs like any other (best-effort fence: lab-a is down).
    let (run, outcome) = executor.work_once().await.expect("work").expect("run");
    assert_eq!(run.id, detected.failovers[0].1);
    assert_eq!(outcome, Outcome::Succeeded);
    let l = store.plan("shop").await.expect("plan").lifecycle;
    assert_eq!(
        (l.state, l.primary.as_str()),
        (PlanState::FailedOver, "lab-b")
    );
    let audit = store.audit_log(100).await.expect("audit");
    assert!(audit.iter().any(|e| e.principal == "policy:automatic"));
}

rebound_store::on_both_backends!(automatic_failover);

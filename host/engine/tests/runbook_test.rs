//! A plan's runbook: the round trip from where the plan stands — failover,
//! reprotect, failback while protected; failback first once ready for it —
//! each workflow's steps stage by stage with the plan's approval gates,
//! its forecast against the phase's RTO objective, the plan's standing
//! (RPO lag, drills), and a refusal for a plan between states. On SQLite
//! and PostgreSQL.

use rebound_domain::{PlanDocument, PlanState, Workflow};
use rebound_engine::runbook::runbook;
use rebound_store::{RecoveryPointRecord, Store, StoreError};
use serde_json::json;

const PLAN: &str = include_str!("../../../docs/examples/plan.yaml");
const MINUTE: i64 = 60_000;

/// The headings of a runbook's sections, in order.
fn headings(markdown: &str) -> Vec<&str> {
    markdown.lines().filter(|l| l.starts_with("## ")).collect()
}

async fn written_from_where_the_plan_stands(store: Store) {
    let document = PlanDocument::from_yaml(PLAN).expect("plan");
    store.put_plan(&document, "operator").await.expect("plan");
    let t0 = rebound_engine::now_ms();
    for w in ["db-1", "app-1", "web-1"] {
        store
            .record_recovery_point(&RecoveryPointRecord {
                site: "kubevirt-west".into(),
                id: format!("snap-{w}"),
                plan: "shop".into(),
                workload: w.into(),
                captured_at_ms: t0 - 20 * MINUTE,
                run: "cycle".into(),
                detail: json!({}),
                drill: false,
            })
            .await
            .expect("point");
    }

    let book = runbook(&store, "shop", t0).await.expect("runbook");
    let md = &book.markdown;
    assert_eq!((book.plan.as_str(), book.revision), ("shop", 1));
    assert_eq!(
        headings(md),
        [
            "## Where the plan stands",
            "## What is recovered",
            "## 1. Failover — `openstack-east` → `kubevirt-west`",
            "## 2. Reprotect — `kubevirt-west` → `openstack-east`",
            "## 3. Failback — `kubevirt-west` → `openstack-east`",
            "## If a site is lost",
            "## If a run fails",
        ],
        "{md}"
    );
    let lost = section(md, "## If a site is lost");
    assert!(
        lost.contains("`rebound run failover --site openstack-east --dry-run` lists")
            && lost.contains(
                "`rebound run failover --site openstack-east --wait --idempotency-key KEY`"
            ),
        "{md}"
    );
    assert!(md.contains("| failover | 30m | 15m |"), "{md}");
    assert!(md.contains("| failback | 2h | 0s |"), "{md}");
    for line in [
        "| 1 | `db-1` | — | TCP port 5432 accepts, within 5m | crash-consistent |",
        "| 2 | `app-1` | db-1 | HTTP /healthz on port 8080 answers 200, within 5m | crash-consistent |",
        "| 3 | `web-1` | app-1 | running | crash-consistent |",
        "- Network `prod-net` on `openstack-east` is `dr-net` on `kubevirt-west`, addresses kept",
        "- Traffic moves through the DNS A record `www.shop.example.com.` (TTL 60 s): 10% → 50% → 100%, each step held 2m before the next.",
    ] {
        assert!(md.contains(line), "{line} not in {md}");
    }
    // 20 minutes of lag against 15: a breach, said in words.
    assert!(
        md.contains("would lose up to 20m of writes") && md.contains("**breached**"),
        "{md}"
    );
    assert!(md.contains("Drills are run by hand"), "{md}");

    // Each workflow's steps, as its dry-run has them, stage by stage.
    let failover = section(md, "## 1.");
    let forecast = rebound_engine::dry_run(&store, "shop", Workflow::Failover, 64)
        .await
        .expect("dry-run");
    for step in &forecast.steps {
        assert!(
            failover.contains(&step.name),
            "{} not in {failover}",
            step.name
        );
    }
    assert_eq!(
        failover
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| stage"))
            .count(),
        forecast.steps.len()
    );
    assert!(
        failover.contains("`rebound run failover shop --wait`"),
        "{failover}"
    );
    assert!(
        !failover.contains("approval"),
        "no gate on the failover: {failover}"
    );
    assert!(failover.contains("per-action defaults"), "{failover}");
    let failback = section(md, "## 3.");
    assert!(
        failback.contains("waits for an operator's approval"),
        "{failback}"
    );
    assert!(
        failback.contains("against the failback RTO objective of 2h"),
        "{failback}"
    );

    // Ready for failback: the failback comes first, from there.
    let record = store.plan("shop").await.expect("plan");
    let mut life = record.lifecycle;
    life.begin(Workflow::Failover).expect("failover");
    life.finish(Workflow::Failover, true, true)
        .expect("failed over");
    life.begin(Workflow::Reprotect).expect("reprotect");
    life.finish(Workflow::Reprotect, true, true)
        .expect("reprotected");
    assert_eq!(life.state, PlanState::ReadyForFailback);
    store
        .save_lifecycle("shop", &life, record.revision, "test", "test.lifecycle")
        .await
        .expect("lifecycle");
    let md = runbook(&store, "shop", t0).await.expect("runbook").markdown;
    assert_eq!(
        headings(&md)[2..5],
        [
            "## 1. Failback — `kubevirt-west` → `openstack-east`",
            "## 2. Failover — `openstack-east` → `kubevirt-west`",
            "## 3. Reprotect — `kubevirt-west` → `openstack-east`",
        ],
        "{md}"
    );
    let lost = section(&md, "## If a site is lost");
    assert!(
        lost.contains(
            "`openstack-east` lost for good: `rebound run permanent_failover shop --new-standby SITE --dry-run` previews it"
        ) && lost.contains(
            "`rebound run permanent_failover shop --new-standby SITE --wait` keeps the workloads on `kubevirt-west`"
        ),
        "{md}"
    );

    // A plan between states has none: the reason says what to wait for.
    rebound_engine::trigger(&store, "shop", Workflow::Failback, None, "operator")
        .await
        .expect("failback");
    match runbook(&store, "shop", t0).await {
        Err(rebound_engine::EngineError::Store(StoreError::Conflict(reason))) => {
            assert!(reason.contains("wait for its run to end"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

/// The lines of the section whose heading starts with `heading`.
fn section<'a>(md: &'a str, heading: &str) -> &'a str {
    let start = md.find(heading).expect("the section");
    let rest = &md[start..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    &rest[..end]
}

rebound_store::on_both_backends!(written_from_where_the_plan_stands);

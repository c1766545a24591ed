//! The store's behaviour on SQLite (always) and PostgreSQL (when
//! `REBOUND_TEST_POSTGRES_URL` names a server whose role may create
//! databases; CI sets it and `REBOUND_REQUIRE_POSTGRES=1`, so there it never
//! skips). Each test gets a fresh database.

use std::time::Duration;

use rebound_domain::{Lifecycle, PlanDocument, PlanState, Workflow};
use rebound_store::{
    NewStep, PlanRuns, RecoveryPointRecord, RunRecord, RunStatus, Store, StoreError,
};

const PLAN: &str = include_str!("../../../docs/examples/plan.yaml");

fn plan() -> PlanDocument {
    PlanDocument::from_yaml(PLAN).expect("example plan")
}

rebound_store::on_both_backends!(
    migrations_leave_the_store_ready,
    plans_are_validated_versioned_and_audited,
    a_plan_moves_to_other_sites_only_while_protected,
    lifecycle_updates_never_overwrite_a_concurrent_change,
    an_idempotency_key_returns_the_same_run,
    a_plans_runs_are_listed_newest_first_by_workflow_and_status,
    a_run_is_leased_to_one_host_and_taken_over_after_expiry,
    concurrent_hosts_claim_each_run_exactly_once,
    the_audit_log_is_append_only,
    a_drills_copies_are_its_own,
    a_sites_call_slots_are_shared_by_every_host,
    the_newest_event_of_each_kind_per_plan,
);

async fn migrations_leave_the_store_ready(store: Store) {
    store.ready().await.expect("ready");
}

async fn plans_are_validated_versioned_and_audited(store: Store) {
    let doc = plan();
    let created = store.put_plan(&doc, "alice").await.expect("create");
    assert_eq!(created.revision, 1);
    assert_eq!(created.lifecycle.state, PlanState::Protected);
    assert_eq!(created.lifecycle.primary, "openstack-east");

    let mut changed = doc.clone();
    changed.replication.retention = 9;
    let updated = store.put_plan(&changed, "bob").await.expect("update");
    assert_eq!(updated.revision, 2);
    assert_eq!(
        store
            .plan("shop")
            .await
            .expect("read")
            .document
            .replication
            .retention,
        9
    );

    let mut bad = doc.clone();
    bad.objectives.failover.rto = rebound_domain::Span::secs(0);
    let err = store.put_plan(&bad, "mallory").await.expect_err("invalid");
    assert!(err.to_string().contains("objectives.failover.rto"), "{err}");
    assert_eq!(
        store.plan("shop").await.expect("read").revision,
        2,
        "a refused write changes nothing"
    );

    let log = store.audit_log(10).await.expect("audit");
    let actions: Vec<(&str, &str)> = log
        .iter()
        .map(|e| (e.principal.as_str(), e.action.as_str()))
        .collect();
    assert_eq!(
        actions,
        vec![("bob", "plan.update"), ("alice", "plan.create")]
    );

    let missing = store.plan("nope").await.expect_err("missing");
    assert!(
        matches!(missing, StoreError::NotFound { kind: "plan", .. }),
        "{missing}"
    );
}

async fn a_plan_moves_to_other_sites_only_while_protected(store: Store) {
    let doc = plan();
    let record = store.put_plan(&doc, "alice").await.expect("create");
    let mut lifecycle = record.lifecycle.clone();
    lifecycle.begin(Workflow::Failover).expect("begin");
    lifecycle
        .finish(Workflow::Failover, true, true)
        .expect("finish");
    store
        .save_lifecycle(
            "shop",
            &lifecycle,
            record.revision,
            "engine",
            "plan.failover",
        )
        .await
        .expect("save");

    let mut moved = doc.clone();
    moved.target = "aws-west".into();
    let err = store
        .put_plan(&moved, "alice")
        .await
        .expect_err("failed over");
    assert!(err.to_string().contains("is failed_over"), "{err}");
    let stored = store.plan("shop").await.expect("read");
    assert_eq!(stored.lifecycle.state, PlanState::FailedOver);
    assert_eq!(stored.lifecycle.epoch, 2);

    // Protected again after a failback (epoch 3), it moves, and its
    // fencing epoch goes on from there (plugins compare epochs).
    let mut back = stored.lifecycle.clone();
    for workflow in [Workflow::Reprotect, Workflow::Failback] {
        back.begin(workflow).expect("begin");
        back.finish(workflow, true, true).expect("finish");
    }
    assert_eq!((back.state, back.epoch), (PlanState::Protected, 3));
    store
        .save_lifecycle("shop", &back, stored.revision, "engine", "plan.failback")
        .await
        .expect("save");
    let moved = store.put_plan(&moved, "alice").await.expect("moved");
    assert_eq!(
        (moved.lifecycle.standby.as_str(), moved.lifecycle.epoch),
        ("aws-west", 3)
    );
}

async fn lifecycle_updates_never_overwrite_a_concurrent_change(store: Store) {
    let record = store.put_plan(&plan(), "alice").await.expect("create");
    let mut first = record.lifecycle.clone();
    first.begin(Workflow::Drill).expect("drill");
    store
        .save_lifecycle("shop", &first, record.revision, "engine-1", "plan.drill")
        .await
        .expect("first writer wins");
    let second = Lifecycle::new("openstack-east", "kubevirt-west");
    let err = store
        .save_lifecycle("shop", &second, record.revision, "engine-2", "plan.reset")
        .await
        .expect_err("stale revision");
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert!(store.plan("shop").await.expect("read").lifecycle.drilling);
}

async fn an_idempotency_key_returns_the_same_run(store: Store) {
    store.put_plan(&plan(), "alice").await.expect("create");
    let a = store
        .create_run("shop", Workflow::Failover, Some("key-1"), "ci")
        .await
        .expect("run");
    let b = store
        .create_run("shop", Workflow::Failover, Some("key-1"), "ci")
        .await
        .expect("same run");
    assert_eq!(a.id, b.id);
    assert_eq!(a.status, RunStatus::Pending);
    let err = store
        .create_run("shop", Workflow::Drill, Some("key-1"), "ci")
        .await
        .expect_err("key reused for another request");
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    let c = store
        .create_run("shop", Workflow::Drill, None, "ci")
        .await
        .expect("no key");
    assert_ne!(c.id, a.id);
    let missing = store
        .create_run("nope", Workflow::Drill, None, "ci")
        .await
        .expect_err("no plan");
    assert!(matches!(missing, StoreError::NotFound { .. }), "{missing}");

    // The same failover asked twice at once (a retry reaching another
    // host): one moves the plan, the other gets its run — not a conflict.
    let other = PlanDocument {
        name: "crm".into(),
        ..plan()
    };
    store.put_plan(&other, "alice").await.expect("create");
    let start =
        || store.start_workflow_to("crm", Workflow::Failover, None, Some("key-2"), "ci", &[]);
    let (first, second) = tokio::join!(start(), start());
    let (first, second) = (first.expect("first"), second.expect("second"));
    assert_eq!(first.run, second.run);
    assert!(first.replayed != second.replayed, "one started it");
    let again = start().await.expect("again");
    assert!(again.replayed && again.run == first.run);
    assert_eq!(
        store.plan("crm").await.expect("plan").lifecycle.state,
        PlanState::FailingOver
    );
}

async fn a_plans_runs_are_listed_newest_first_by_workflow_and_status(store: Store) {
    store.put_plan(&plan(), "alice").await.expect("create");
    let mut made = Vec::new();
    for workflow in [
        Workflow::Replication,
        Workflow::Drill,
        Workflow::Replication,
        Workflow::Failover,
        Workflow::Replication,
    ] {
        let run = store.create_run("shop", workflow, None, "ci").await;
        made.push(run.expect("run").id);
        // Distinct creation times, so newest first is one order.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let ids = |runs: Vec<RunRecord>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let store = &store;
    let list = |which| async move { ids(store.plan_runs("shop", which).await.expect("runs")) };
    let cycles = [Workflow::Replication];
    assert_eq!(
        list(PlanRuns {
            workflows: &cycles,
            ..PlanRuns::default()
        })
        .await,
        [made[4].clone(), made[2].clone(), made[0].clone()]
    );
    assert_eq!(
        list(PlanRuns {
            workflows: &cycles,
            limit: Some(1),
            ..PlanRuns::default()
        })
        .await,
        [made[4].clone()]
    );
    let others = [Workflow::Drill, Workflow::Failover];
    assert_eq!(
        list(PlanRuns {
            workflows: &others,
            ..PlanRuns::default()
        })
        .await,
        [made[3].clone(), made[1].clone()]
    );
    let pending = [RunStatus::Pending];
    assert_eq!(
        list(PlanRuns {
            statuses: &pending,
            ..PlanRuns::default()
        })
        .await
        .len(),
        5
    );
    let done = [RunStatus::Succeeded, RunStatus::Failed];
    assert!(
        list(PlanRuns {
            statuses: &done,
            ..PlanRuns::default()
        })
        .await
        .is_empty()
    );
    let mut all = made.clone();
    all.reverse();
    assert_eq!(ids(store.runs_of("shop").await.expect("runs")), all);

    // The newest of each workflow, in one statement: none of a workflow
    // without runs, none of another status.
    let newest = |status| async move {
        let wanted = [
            Workflow::Replication,
            Workflow::Drill,
            Workflow::Failover,
            Workflow::Failback,
        ];
        let mut found = ids(store
            .newest_runs("shop", &wanted, status)
            .await
            .expect("newest"));
        found.sort();
        found
    };
    let mut expected = vec![made[4].clone(), made[1].clone(), made[3].clone()];
    expected.sort();
    assert_eq!(newest(RunStatus::Pending).await, expected);
    assert!(newest(RunStatus::Succeeded).await.is_empty());

    // Of several plans at once, by plan; any status when none is given.
    let mut other = plan();
    other.name = "shop-2".into();
    store.put_plan(&other, "alice").await.expect("create");
    let theirs = store
        .create_run("shop-2", Workflow::Drill, None, "ci")
        .await
        .expect("run");
    let of = store
        .newest_runs_of(&["shop", "shop-2", "nope"], &[Workflow::Drill], None)
        .await
        .expect("newest of");
    assert_eq!(of.len(), 2, "{of:?}");
    assert_eq!(ids(of["shop"].clone()), [made[1].clone()]);
    assert_eq!(ids(of["shop-2"].clone()), [theirs.id]);

    // Steps of several runs in one query, each run's in order.
    let step = |name: &str| NewStep {
        name: name.into(),
        input: serde_json::json!({"action": name}),
    };
    let with_steps = store
        .create_run_with_steps("shop", Workflow::Drill, None, "ci", &[step("a"), step("b")])
        .await
        .expect("run");
    let steps = store
        .steps_of(&[with_steps.id.as_str(), made[0].as_str()])
        .await
        .expect("steps");
    let names: Vec<&str> = steps[&with_steps.id]
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert!(
        !steps.contains_key(&made[0]),
        "a run without steps has none"
    );
}

async fn a_run_is_leased_to_one_host_and_taken_over_after_expiry(store: Store) {
    store.put_plan(&plan(), "alice").await.expect("create");
    let run = store
        .create_run("shop", Workflow::Failover, None, "ci")
        .await
        .expect("run");
    let lease = Duration::from_millis(300);

    let claimed = store
        .claim_run("host-a", lease)
        .await
        .expect("claim")
        .expect("a run");
    assert_eq!(
        (claimed.id.as_str(), claimed.lease_owner.as_deref()),
        (run.id.as_str(), Some("host-a"))
    );
    assert!(
        store
            .claim_run("host-b", lease)
            .await
            .expect("claim")
            .is_none(),
        "leased to host-a"
    );
    store
        .heartbeat(&run.id, "host-a", lease)
        .await
        .expect("heartbeat");

    // host-a dies: no more heartbeats.
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    let taken = store
        .claim_run("host-b", lease)
        .await
        .expect("claim")
        .expect("taken over");
    assert_eq!(taken.lease_owner.as_deref(), Some("host-b"));
    let err = store
        .heartbeat(&run.id, "host-a", lease)
        .await
        .expect_err("lease lost");
    assert!(
        err.to_string().contains("no longer held by 'host-a'"),
        "{err}"
    );

    store
        .set_run_status(&run.id, "host-b", RunStatus::Succeeded)
        .await
        .expect("finish");
    assert_eq!(
        store.run(&run.id).await.expect("read").status,
        RunStatus::Succeeded
    );
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    assert!(
        store
            .claim_run("host-c", lease)
            .await
            .expect("claim")
            .is_none(),
        "finished runs are not claimed"
    );
}

async fn concurrent_hosts_claim_each_run_exactly_once(store: Store) {
    store.put_plan(&plan(), "alice").await.expect("create");
    for _ in 0..10 {
        store
            .create_run("shop", Workflow::Drill, None, "ci")
            .await
            .expect("run");
    }
    let claim_all = |owner: &'static str| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(run) = store
                .claim_run(owner, Duration::from_secs(60))
                .await
                .expect("claim")
            {
                got.push(run.id);
            }
            got
        })
    };
    let (a, b) = tokio::join!(claim_all("host-a"), claim_all("host-b"));
    let (a, b) = (a.expect("task"), b.expect("task"));
    let mut all: Vec<String> = a.iter().chain(b.iter()).cloned().collect();
    all.sort();
    let before = all.len();
    all.dedup();
    assert_eq!(
        before,
        10,
        "every run claimed (a: {}, b: {})",
        a.len(),
        b.len()
    );
    assert_eq!(all.len(), 10, "no run claimed twice");
}

async fn the_audit_log_is_append_only(store: Store) {
    store
        .audit(
            "alice",
            "site.create",
            "lab-a",
            serde_json::json!({"plugin": "example"}),
        )
        .await
        .expect("append");
    for sql in [
        "UPDATE audit_log SET principal = 'mallory'",
        "DELETE FROM audit_log",
    ] {
        let err = store
            .execute_raw(sql)
            .await
            .expect_err("refused by the database");
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    let log = store.audit_log(10).await.expect("read");
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].principal, "alice");
    assert_eq!(log[0].detail["plugin"], "example");
}

/// A round-trip drill's copies are the drill's alone: the plan's listing,
/// its newest point and so its RPO leave them out; the drill finds them by
/// its run, and forgets them once the site removed them.
async fn a_drills_copies_are_its_own(store: Store) {
    store.put_plan(&plan(), "alice").await.expect("create");
    let point = |id: &str, at: i64, run: &str, drill: bool| RecoveryPointRecord {
        site: "openstack-east".into(),
        id: id.into(),
        plan: "shop".into(),
        workload: "db-1".into(),
        captured_at_ms: at,
        run: run.into(),
        detail: serde_json::json!({"disks": []}),
        drill,
    };
    store
        .record_recovery_point(&point("snap-1", 1_000, "cycle", false))
        .await
        .expect("plan's point");
    store
        .record_recovery_point(&point("drill-copy", 2_000, "drill-run", true))
        .await
        .expect("drill's point");
    let ids =
        |points: Vec<RecoveryPointRecord>| points.into_iter().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.recovery_points("shop").await.expect("points")),
        ["snap-1"]
    );
    let latest = store
        .latest_recovery_point("shop", "db-1", "openstack-east")
        .await
        .expect("latest");
    assert_eq!(latest.map(|p| p.id).as_deref(), Some("snap-1"));
    let newest = store
        .newest_captures("shop", "openstack-east")
        .await
        .expect("newest");
    assert_eq!(
        newest,
        [("db-1".to_owned(), 1_000)].into(),
        "not the drill's"
    );
    assert!(
        store
            .newest_captures("shop", "kubevirt-west")
            .await
            .expect("none")
            .is_empty()
    );
    assert_eq!(
        ids(store.drill_points("drill-run").await.expect("drill's")),
        ["drill-copy"]
    );
    assert!(store.drill_points("cycle").await.expect("none").is_empty());
    let found = store
        .recovery_point("openstack-east", "drill-copy")
        .await
        .expect("by id")
        .expect("found");
    assert!(found.drill);
    store
        .forget_recovery_points("openstack-east", &["drill-copy".into()])
        .await
        .expect("forget");
    assert!(
        store
            .drill_points("drill-run")
            .await
            .expect("gone")
            .is_empty()
    );
}

/// Hosts of one deployment start together (a Deployment's replicas, say):
/// each connects to the same fresh database and brings its schema up to
/// date at once. Every one must come up on a migrated store — none may
/// fail on a migration another is applying.
#[tokio::test]
async fn hosts_starting_together_migrate_a_fresh_store_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut urls = vec![format!(
        "sqlite://{}",
        dir.path().join("rebound.db").display()
    )];
    urls.extend(
        rebound_store::testing::fresh_postgres_url()
            .await
            .expect("a fresh PostgreSQL database"),
    );
    for url in urls {
        let hosts: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { Store::connect(&url).await })
            })
            .collect();
        for host in hosts {
            let store = host
                .await
                .expect("task")
                .unwrap_or_else(|e| panic!("a host starting on {url}: {e}"));
            store.ready().await.expect("migrated");
        }
    }
}

/// A PostgreSQL session the store opens ends a transaction left idle (its
/// task cancelled between statements) after a while, so its row locks do
/// not hold every other host up.
#[tokio::test]
async fn postgres_sessions_end_transactions_left_idle() {
    let Some(store) = rebound_store::testing::fresh_postgres()
        .await
        .expect("postgres")
    else {
        return;
    };
    store
        .execute_raw(
            "DO $$ BEGIN \
             IF current_setting('idle_in_transaction_session_timeout') <> '15s' THEN \
             RAISE EXCEPTION 'idle_in_transaction_session_timeout is %', \
             current_setting('idle_in_transaction_session_timeout'); \
             END IF; END $$",
        )
        .await
        .expect("the session ends idle transactions after 15 s");
}

/// Hosts taking a site's call slots at once never hold more than its
/// limit together; a slot given back is taken again, a hold that lapsed
/// (its host died) too, and the lapsed holder's late give-back or renewal
/// leaves the new holder's slot alone.
async fn a_sites_call_slots_are_shared_by_every_host(store: Store) {
    let minute = Duration::from_secs(60);
    let take_all = |host: &'static str| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            for call in 0..6 {
                let holder = format!("{host}/{call}");
                if let Some(slot) = store
                    .take_call_slot("lab-a", 3, &holder, minute)
                    .await
                    .expect("take")
                {
                    got.push((slot, holder));
                }
            }
            got
        })
    };
    let (a, b) = tokio::join!(take_all("host-a"), take_all("host-b"));
    let mut held: Vec<(u32, String)> = a
        .expect("task")
        .into_iter()
        .chain(b.expect("task"))
        .collect();
    held.sort();
    let slots: Vec<u32> = held.iter().map(|(slot, _)| *slot).collect();
    assert_eq!(
        slots,
        [0, 1, 2],
        "each slot held once, by one of the hosts: {held:?}"
    );
    assert_eq!(store.call_slots_held("lab-a").await.expect("held"), 3);
    assert_eq!(
        store
            .take_call_slot("lab-b", 1, "host-a/9", minute)
            .await
            .expect("take"),
        Some(0),
        "another site's slots are its own"
    );
    assert_eq!(
        store
            .take_call_slot("lab-a", 3, "host-c/0", minute)
            .await
            .expect("take"),
        None
    );

    // Given back: taken again.
    let (slot, holder) = &held[1];
    store
        .give_call_slot("lab-a", *slot, holder)
        .await
        .expect("give");
    assert_eq!(
        store
            .take_call_slot("lab-a", 3, "host-c/1", minute)
            .await
            .expect("take"),
        Some(*slot)
    );

    // A hold that lapsed is taken again; its holder's late give-back does
    // not free the slot it no longer holds.
    let brief = store
        .take_call_slot("lab-c", 1, "host-a/dead", Duration::from_millis(1))
        .await
        .expect("take");
    assert_eq!(brief, Some(0));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        store
            .take_call_slot("lab-c", 1, "host-b/0", minute)
            .await
            .expect("take"),
        Some(0),
        "the dead host's hold lapsed"
    );
    store
        .give_call_slot("lab-c", 0, "host-a/dead")
        .await
        .expect("give");
    assert!(
        !store
            .renew_call_slot("lab-c", 0, "host-a/dead", minute)
            .await
            .expect("renew"),
        "a lapsed hold is not renewed"
    );
    assert!(
        store
            .renew_call_slot("lab-c", 0, "host-b/0", minute)
            .await
            .expect("renew")
    );
    assert_eq!(store.call_slots_held("lab-c").await.expect("held"), 1);
    assert_eq!(
        store
            .take_call_slot("lab-c", 1, "host-c/2", minute)
            .await
            .expect("take"),
        None
    );

    // A lowered limit takes only the slots below it.
    assert_eq!(
        store
            .take_call_slot("lab-a", 2, "host-c/3", minute)
            .await
            .expect("take"),
        None
    );
}

/// The newest event of each asked kind, per plan, oldest first; other
/// kinds, however many, are not read.
async fn the_newest_event_of_each_kind_per_plan(store: Store) {
    let record = |plan: &'static str, kind: &'static str, n: i64| {
        let store = store.clone();
        async move {
            store
                .record_event(plan, kind, serde_json::json!({ "n": n }))
                .await
                .expect("event")
        }
    };
    record("shop", "rpo.breach", 1).await;
    record("shop", "replication.scheduled", 2).await;
    record("shop", "rpo.met", 3).await;
    record("bank", "rpo.breach", 4).await;
    record("shop", "rpo.met", 5).await;
    record("bank", "rto.breach", 6).await;
    record("shop", "replication.scheduled", 7).await;
    let newest = store
        .newest_events(&["rpo.breach", "rpo.met", "rto.breach", "rto.met"])
        .await
        .expect("newest");
    let seen: Vec<(&str, &str, i64)> = newest
        .iter()
        .map(|e| {
            (
                e.plan.as_str(),
                e.kind.as_str(),
                e.detail["n"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("shop", "rpo.breach", 1),
            ("bank", "rpo.breach", 4),
            ("shop", "rpo.met", 5),
            ("bank", "rto.breach", 6),
        ]
    );
    assert!(
        store
            .newest_events(&["drill.leftovers"])
            .await
            .expect("none")
            .is_empty()
    );
}

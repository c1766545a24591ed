//! Replication through the host's data mover, end to end: two example
//! sites that keep real disk data, the real example plugin exporting and
//! importing disks, and the engine copying them — failover, reprotect and
//! failback of a `replication.mode: data_mover` plan, with the data
//! checked block for block, only changed blocks moved on a resync, no
//! transfer endpoint left open and no side effect repeated. On SQLite and
//! PostgreSQL.

#[path = "support/cross.rs"]
mod cross;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use rebound_domain::{PlanDocument, PlanState, Workflow};
use rebound_engine::{BoundSite, Outcome, PluginSteps, WORKLOAD_LABEL};
use rebound_lab::{ExampleOptions, ExampleSite};
use rebound_runtime::SiteGrant;
use rebound_store::Store;
use serde_json::{Value, json};

const PLAN: &str = r#"
name: shop
source: lab-a
target: lab-b
workloads:
  - id: vm-3
  - id: vm-2
    depends_on: [vm-3]
replication: { mode: data_mover, interval: 5m, retention: 2 }
objectives:
  failover: { rto: 30m, rpo: 15m }
  failback: { rto: 2h, rpo: 0s }
network_mapping:
  - { source: prod-net, target: dr-net }
"#;

const MIB: u64 = 1 << 20;
/// The data mover's block size (its default).
const BLOCK: u64 = 4 * MIB;

struct Lab {
    a: ExampleSite,
    b: ExampleSite,
    /// A third site, empty: a new standby for a permanent failover.
    c: ExampleSite,
    steps: Arc<PluginSteps>,
    _dirs: [tempfile::TempDir; 3],
}

fn grant(site: &ExampleSite, name: &str) -> SiteGrant {
    SiteGrant::new(name)
        .config("endpoint", &site.endpoint())
        .secret("token", &site.token)
        .grant(&site.endpoint())
        .expect("grant")
}

/// VMs with 64 MiB disks (holes but for a boot block).
fn small_vms() -> Vec<Value> {
    rebound_lab::example::default_vms()
        .into_iter()
        .map(|mut vm| {
            vm["disks"][0]["size_bytes"] = json!(64 * MIB);
            vm
        })
        .collect()
}

async fn lab(store: &Store) -> Lab {
    lab_on(store, Ipv4Addr::LOCALHOST, "example").await
}

/// Two sites, lab-b's transfers served on `b_movers`, both through the
/// built plugin `plugin` (the example plugin, or its 0.1 contract build).
async fn lab_on(store: &Store, b_movers: Ipv4Addr, plugin: &str) -> Lab {
    let dirs = [(); 3].map(|()| tempfile::tempdir().expect("dir"));
    let options = |vms, dir: &tempfile::TempDir| ExampleOptions {
        snapshot_latency: Duration::from_millis(30),
        vms,
        disk_dir: Some(dir.path().to_owned()),
        ..ExampleOptions::default()
    };
    let a = ExampleSite::start(options(small_vms(), &dirs[0]))
        .await
        .expect("site a");
    let b = ExampleSite::start(ExampleOptions {
        mover_address: b_movers,
        ..options(Vec::new(), &dirs[1])
    })
    .await
    .expect("site b");
    let c = ExampleSite::start(options(Vec::new(), &dirs[2]))
        .await
        .expect("site c");
    let runtime = Arc::new(rebound_runtime::testing::runtime());
    let plugin = rebound_runtime::testing::load(&runtime, plugin).await;
    let sites = HashMap::from([
        (
            "lab-a".to_owned(),
            BoundSite {
                plugin: plugin.clone(),
                grant: grant(&a, "lab-a"),
            },
        ),
        (
            "lab-b".to_owned(),
            BoundSite {
                plugin: plugin.clone(),
                grant: grant(&b, "lab-b"),
            },
        ),
        (
            "lab-c".to_owned(),
            BoundSite {
                plugin,
                grant: grant(&c, "lab-c"),
            },
        ),
    ]);
    let steps = Arc::new(PluginSteps::new(runtime, store.clone(), sites));
    Lab {
        a,
        b,
        c,
        steps,
        _dirs: dirs,
    }
}

/// Run `workflow` to its end, which must be success, with every transfer
/// endpoint released; the outputs of its transfer steps.
async fn run(store: &Store, lab: &Lab, workflow: Workflow) -> Vec<Value> {
    let outputs = cross::run(store, &lab.steps, "shop", workflow).await;
    assert_eq!(
        lab.a.open_transfers() + lab.b.open_transfers(),
        0,
        "transfer endpoints released"
    );
    outputs
}

/// The VM serving `workload` on a site (newest epoch), if any.
fn serving(site: &ExampleSite, workload: &str) -> Option<String> {
    site.vms()
        .into_iter()
        .filter(|vm| vm["labels"][WORKLOAD_LABEL] == workload && vm["power"] == "running")
        .max_by_key(|vm| {
            vm["labels"]["rebound/epoch"]
                .as_str()
                .and_then(|e| e.parse::<u64>().ok())
        })
        .and_then(|vm| vm["id"].as_str().map(str::to_owned))
}

fn moved(outputs: &[Value]) -> u64 {
    outputs
        .iter()
        .map(|o| o["bytes_moved"].as_u64().expect("bytes_moved"))
        .sum()
}

async fn data_mover_round_trip(store: Store) {
    let plan = PlanDocument::from_yaml(PLAN).expect("plan");
    let lab = lab(&store).await;
    lab.steps.check_feasible(&plan).await.expect("feasible");
    // The example platform snapshots at most once a minute: an RPO of 30 s
    // cannot be met, and a site the host does not know cannot be used.
    let mut too_fine = plan.clone();
    too_fine.objectives.failover.rpo = rebound_domain::Span::secs(30);
    too_fine.replication.interval = rebound_domain::Span::secs(30);
    let err = lab
        .steps
        .check_feasible(&too_fine)
        .await
        .expect_err("too fine");
    assert!(err.to_string().contains("objectives.failover.rpo"), "{err}");
    assert!(
        err.to_string()
            .contains("snapshot granularity of site 'lab-a'"),
        "{err}"
    );
    let mut unknown = plan.clone();
    unknown.target = "lab-z".into();
    let err = lab
        .steps
        .check_feasible(&unknown)
        .await
        .expect_err("unknown site");
    assert!(
        err.to_string().contains("site 'lab-z' is not registered"),
        "{err}"
    );
    store.put_plan(&plan, "operator").await.expect("plan");

    // The first cycle moves each disk's data (one block), not its holes.
    let first = run(&store, &lab, Workflow::Replication).await;
    assert_eq!(first.len(), 2);
    assert_eq!(moved(&first), 2 * BLOCK, "{first:?}");
    assert!(
        first
            .iter()
            .all(|o| o["digests"][0].as_str().is_some_and(|d| d.len() == 64))
    );

    // The primary keeps writing after the cycle: that much is lost on an
    // unplanned failover (the RPO), the rest arrives intact.
    let at_cycle = lab.a.read_disk("vm-3", 0).expect("read");
    lab.a
        .write_disk("vm-3", 0, 8 * MIB, b"written after the cycle")
        .expect("write");
    run(&store, &lab, Workflow::Failover).await;
    let on_b = serving(&lab.b, "vm-3").expect("vm-3 recovered on lab-b");
    assert_eq!(
        lab.b.read_disk(&on_b, 0).expect("read"),
        at_cycle,
        "the recovery point, block for block"
    );
    let err = lab
        .a
        .write_disk("vm-3", 0, 0, b"split brain?")
        .expect_err("fenced");
    assert!(err.contains("fenced"), "{err}");

    // Writes on the new primary: one whole block and a few bytes in a second.
    lab.b
        .write_disk(&on_b, 0, 32 * MIB, &vec![0xAB; BLOCK as usize])
        .expect("write");
    lab.b
        .write_disk(&on_b, 0, 50 * MIB + 17, b"a small change")
        .expect("write");
    let changed_blocks = 2;

    // Reprotect resyncs onto the old primary's copy: only those blocks move.
    let resync = run(&store, &lab, Workflow::Reprotect).await;
    assert_eq!(moved(&resync), changed_blocks * BLOCK, "{resync:?}");
    assert_eq!(
        store.plan("shop").await.expect("plan").lifecycle.state,
        PlanState::ReadyForFailback
    );

    // More writes, then the failback: pre-sync, fence, final sync — the old
    // primary ends with exactly the new primary's data.
    lab.b
        .write_disk(&on_b, 0, 60 * MIB, b"last write before failback")
        .expect("write");
    let failback = run(&store, &lab, Workflow::Failback).await;
    assert_eq!(
        failback.len(),
        4,
        "pre-sync and final sync of two workloads"
    );
    assert_eq!(
        moved(&failback),
        BLOCK,
        "only the last write's block: {failback:?}"
    );
    // The copies at lab-a came from lab-b's snapshots, so lab-b's
    // changed-block tracking names the delta; the first copy there had no
    // such base and compared digests.
    let modes = |outputs: &[Value]| -> Vec<String> {
        outputs
            .iter()
            .map(|o| o["modes"][0].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert!(
        modes(&resync).iter().all(|m| m == "delta by block digests"),
        "{resync:?}"
    );
    assert!(
        modes(&failback)
            .iter()
            .all(|m| m == "delta by changed ranges"),
        "{failback:?}"
    );
    let back = serving(&lab.a, "vm-3").expect("vm-3 back on lab-a");
    let expected = lab.b.read_disk(&on_b, 0).expect("read");
    assert_eq!(
        lab.a.read_disk(&back, 0).expect("read"),
        expected,
        "block for block"
    );
    let l = store.plan("shop").await.expect("plan").lifecycle;
    assert_eq!(
        (l.state, l.primary.as_str()),
        (PlanState::Protected, "lab-a")
    );
    assert!(
        lab.b.write_disk(&on_b, 0, 0, b"x").is_err(),
        "lab-b is fenced"
    );

    // Protected again, replication cycles keep two recovery points per
    // workload at each site and the sites' disk space stops growing.
    run(&store, &lab, Workflow::Replication).await;
    let images = (lab.a.disk_images(), lab.b.disk_images());
    for cycle in 0..2u8 {
        lab.a
            .write_disk(&back, 0, 4 * MIB, &[cycle + 1; 100])
            .expect("write");
        let outputs = run(&store, &lab, Workflow::Replication).await;
        assert_eq!(moved(&outputs), BLOCK, "{outputs:?}");
    }
    assert_eq!(
        (lab.a.disk_images(), lab.b.disk_images()),
        images,
        "pruned to retention"
    );
    let points = store.recovery_points("shop").await.expect("points");
    for site in ["lab-a", "lab-b"] {
        for workload in ["vm-2", "vm-3"] {
            let kept = points
                .iter()
                .filter(|p| p.site == site && p.workload == workload)
                .count();
            assert_eq!(kept, 2, "{site} {workload}: {points:#?}");
        }
    }

    for (name, site) in [("lab-a", &lab.a), ("lab-b", &lab.b)] {
        let repeated: Vec<_> = site.effects().into_iter().filter(|(_, n)| *n > 1).collect();
        assert!(
            repeated.is_empty(),
            "{name} repeated side effects: {repeated:?}"
        );
    }
}

/// The primary's site lost for good after a failover: a permanent failover
/// copies every disk from where the plan serves to a third, empty site —
/// in full, verified — without calling the lost one; the next cycle moves
/// only what changed since, and a failover onto the new standby recovers
/// the new primary's data block for block.
async fn a_permanent_failover_copies_every_disk_to_a_new_standby(store: Store) {
    let plan = PlanDocument::from_yaml(PLAN).expect("plan");
    let lab = lab(&store).await;
    store.put_plan(&plan, "operator").await.expect("plan");
    run(&store, &lab, Workflow::Replication).await;
    lab.a.set_down(true);
    run(&store, &lab, Workflow::Failover).await;
    let on_b = serving(&lab.b, "vm-3").expect("vm-3 recovered on lab-b");
    lab.b
        .write_disk(&on_b, 0, 32 * MIB, &vec![0xCD; BLOCK as usize])
        .expect("write");
    let a_before = lab.a.effects();

    let run_id = rebound_engine::trigger_to(
        &store,
        "shop",
        Workflow::PermanentFailover,
        Some("lab-c"),
        None,
        "operator",
    )
    .await
    .expect("permanent failover")
    .run
    .id;
    let executor = rebound_engine::Executor::new(
        store.clone(),
        lab.steps.clone(),
        rebound_engine::ExecutorConfig {
            poll_interval: Duration::from_millis(20),
            ..rebound_engine::ExecutorConfig::new("host-a")
        },
    );
    let (_, outcome) = executor.work_once().await.expect("work").expect("run");
    assert_eq!(outcome, Outcome::Succeeded);
    let copies: Vec<Value> = store
        .steps(&run_id)
        .await
        .expect("steps")
        .into_iter()
        .filter(|s| s.input["action"] == "transfer")
        .map(|s| {
            assert_eq!(
                (&s.input["from"], &s.input["to"]),
                (&json!("lab-b"), &json!("lab-c"))
            );
            s.output.expect("output")
        })
        .collect();
    // Each disk's data in full: the boot block, and vm-3's new block.
    assert_eq!(copies.len(), 2);
    assert_eq!(moved(&copies), 3 * BLOCK, "{copies:?}");
    assert_eq!(lab.a.effects(), a_before, "the lost site is not called");
    let l = store.plan("shop").await.expect("plan").lifecycle;
    assert_eq!(
        (l.state, l.primary.as_str(), l.standby.as_str()),
        (PlanState::Protected, "lab-b", "lab-c")
    );
    assert_eq!(
        l.unfenced.as_deref(),
        Some("lab-a"),
        "never confirmed fenced"
    );

    // Protected onto lab-c: a cycle moves only the changed block.
    lab.b
        .write_disk(&on_b, 0, 48 * MIB, b"after the permanent failover")
        .expect("write");
    let cycle = run(&store, &lab, Workflow::Replication).await;
    assert_eq!(moved(&cycle), BLOCK, "{cycle:?}");
    assert!(cycle.iter().all(|o| o["digests"].is_array()));
    let expected = lab.b.read_disk(&on_b, 0).expect("read");
    run(&store, &lab, Workflow::Failover).await;
    let on_c = serving(&lab.c, "vm-3").expect("vm-3 recovered on lab-c");
    assert_eq!(
        lab.c.read_disk(&on_c, 0).expect("read"),
        expected,
        "block for block"
    );
    for (name, site) in [("lab-b", &lab.b), ("lab-c", &lab.c)] {
        let repeated: Vec<_> = site.effects().into_iter().filter(|(_, n)| *n > 1).collect();
        assert!(
            repeated.is_empty(),
            "{name} repeated side effects: {repeated:?}"
        );
    }
}

/// A transfer that fails for good releases the endpoints it opened and
/// deletes the volumes its imports made: here lab-b serves its transfers
/// on 127.0.0.2 while its grant names only 127.0.0.1 (an appliance network
/// the operator did not grant), so the mover refuses the import endpoint —
/// after both sides opened theirs. The imports are discarded in one
/// cleanup (contract 0.2).
async fn a_failed_transfer_releases_its_endpoints(store: Store) {
    a_failed_transfer_releases_its_endpoints_through(store, "example").await;
}

/// The same through a plugin of the contract 0.1, which cannot discard an
/// import: the volumes are learnt from each import's status, the endpoints
/// released, then the volumes deleted.
async fn a_failed_transfer_releases_its_endpoints_through_a_0_1_plugin(store: Store) {
    a_failed_transfer_releases_its_endpoints_through(store, "example-contract-0-1").await;
}

async fn a_failed_transfer_releases_its_endpoints_through(store: Store, plugin: &str) {
    let lab = lab_on(&store, Ipv4Addr::new(127, 0, 0, 2), plugin).await;
    let plan = PlanDocument::from_yaml(PLAN).expect("plan");
    store.put_plan(&plan, "operator").await.expect("plan");
    let (run, outcome) = cross::finish(&store, &lab.steps, "shop", Workflow::Replication).await;
    assert_ne!(outcome, Outcome::Succeeded);
    let steps = store.steps(&run).await.expect("steps");
    let transfer = steps
        .iter()
        .find(|s| s.input["action"] == "transfer" && s.error.is_some())
        .unwrap_or_else(|| panic!("a failed transfer step: {steps:#?}"));
    let error = transfer.error.clone().unwrap_or_default();
    assert!(
        error.contains("egress grant does not name") && error.contains("lab-b"),
        "{error}"
    );
    assert_eq!(
        lab.a.open_transfers() + lab.b.open_transfers(),
        0,
        "the failed transfer's endpoints are released"
    );
    assert_eq!(
        lab.b.disk_images(),
        0,
        "the volumes the imports opened (unverified) are deleted"
    );
    assert!(
        store
            .recovery_points("shop")
            .await
            .expect("points")
            .iter()
            .all(|p| p.site == "lab-a"),
        "nothing recorded at lab-b"
    );
}

rebound_store::on_both_backends!(
    data_mover_round_trip,
    a_permanent_failover_copies_every_disk_to_a_new_standby,
    a_failed_transfer_releases_its_endpoints,
    a_failed_transfer_releases_its_endpoints_through_a_0_1_plugin
);

//! Engine round trips between two KubeVirt clusters (two lab simulators)
//! through the real KubeVirt plugin: a plan of three VMs is replicated,
//! failed over, reprotected, drilled there and back (a round-trip drill
//! that leaves both clusters as it found them) and failed back, with each
//! VM's disk checked
//! block for block after every move, the old primary fenced, Route weights
//! shifted, recovery points pruned to retention, and no object created
//! twice for one idempotency key — once with `replication.mode:
//! data_mover` (the host's data mover; only changed blocks move on a
//! resync), once with `replication.mode: native` (VolumeReplication: the
//! clusters' storage mirrors point-in-time PVCs, the target promotes
//! them). On SQLite and PostgreSQL.
//!
//! `cargo xtask build-plugins`, then
//! `cargo test -p rebound-engine --test kubevirt_round_trip_test`.

#[path = "support/cross.rs"]
mod cross;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rebound_domain::{PlanDocument, PlanState, Workflow};
use rebound_engine::{BoundSite, PluginSteps, WORKLOAD_LABEL};
use rebound_lab::kubevirt::{blank_data_volume, vm_object};
use rebound_lab::{KubeVirtOptions, KubeVirtSite};
use rebound_runtime::SiteGrant;
use rebound_store::Store;
use serde_json::{Value, json};

/// The plan, its `replication.mode` set by [`plan`].
const PLAN: &str = r#"
name: shop
source: kv-a
target: kv-b
workloads:
  - id: db-1
    consistency: application
  - id: web-1
    depends_on: [db-1]
  - id: app-1
    depends_on: [db-1]
replication: { mode: data_mover, interval: 5m, retention: 2 }
objectives:
  failover: { rto: 30m, rpo: 15m }
  failback: { rto: 2h, rpo: 0s }
network_mapping:
  - { source: prod-net, target: dr-net }
redirect:
  target: { kind: route, route: prod/www }
  canary: [10, 100]
"#;

fn plan(mode: &str) -> PlanDocument {
    PlanDocument::from_yaml(&PLAN.replace("mode: data_mover", &format!("mode: {mode}")))
        .expect("plan")
}

/// The VolumeReplicationClass both clusters' mirrored storage offers.
const CLASS: &str = "rbd-mirror";

const MIB: u64 = 1 << 20;
/// The data mover's block size (its default).
const BLOCK: u64 = 4 * MIB;
const NS: &str = "prod";
const VMS: [&str; 3] = ["db-1", "web-1", "app-1"];

struct Lab {
    a: KubeVirtSite,
    b: KubeVirtSite,
    steps: Arc<PluginSteps>,
}

fn grant(site: &KubeVirtSite, name: &str) -> SiteGrant {
    let mut grant = SiteGrant::new(name)
        .config("endpoint", &site.endpoint())
        .config("namespace", NS)
        .secret("token", &site.token)
        .config("volume_replication_class", CLASS)
        .grant(&site.endpoint())
        .expect("grant");
    grant.ca_pem = Some(site.ca_pem.clone());
    grant
}

/// The `prod` namespace and its Route `www` (to the Service `web-1`), and
/// the class of the mirrored storage.
fn namespace() -> Vec<Value> {
    vec![
        json!({"apiVersion": "replication.storage.openshift.io/v1alpha1", "kind": "VolumeReplicationClass",
               "metadata": {"name": CLASS},
               "spec": {"provisioner": "openshift-storage.rbd.csi.ceph.com",
                        "parameters": {"mirroringMode": "snapshot", "schedulingInterval": "1m"}}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
        json!({"apiVersion": "route.openshift.io/v1", "kind": "Route",
               "metadata": {"name": "www", "namespace": NS},
               "spec": {"host": "www.example.org", "to": {"kind": "Service", "name": "web-1", "weight": 100}}}),
    ]
}

async fn lab(store: &Store) -> Lab {
    let mut primary = namespace();
    for vm in VMS {
        primary.push(blank_data_volume(NS, &format!("{vm}-root"), "64Mi"));
        primary.push(vm_object(NS, vm, json!({"app": "shop"}), "prod-net"));
    }
    let options = |objects| KubeVirtOptions {
        latency: Duration::from_millis(30),
        objects,
        ..KubeVirtOptions::default()
    };
    let a = KubeVirtSite::start(options(primary))
        .await
        .expect("cluster a");
    let b = KubeVirtSite::start(options(namespace()))
        .await
        .expect("cluster b");
    // One storage fabric: VolumeReplications mirror between the two.
    a.pair(&b);
    let runtime = Arc::new(rebound_runtime::testing::runtime());
    let plugin = rebound_runtime::testing::load(&runtime, "kubevirt").await;
    let bound = |site: &KubeVirtSite, name: &str| BoundSite {
        plugin: plugin.clone(),
        grant: grant(site, name),
    };
    let sites = HashMap::from([
        ("kv-a".to_owned(), bound(&a, "kv-a")),
        ("kv-b".to_owned(), bound(&b, "kv-b")),
    ]);
    let steps = Arc::new(PluginSteps::new(runtime, store.clone(), sites));
    Lab { a, b, steps }
}

/// Run `workflow` to its end, which must be success, with no export left
/// open; the outputs of its transfer steps.
async fn run(store: &Store, lab: &Lab, workflow: Workflow) -> Vec<Value> {
    let outputs = cross::run(store, &lab.steps, "shop", workflow).await;
    for (name, site) in [("kv-a", &lab.a), ("kv-b", &lab.b)] {
        assert!(
            site.list("virtualmachineexports", NS).is_empty(),
            "{workflow} left exports open on {name}"
        );
    }
    outputs
}

/// A round-trip drill of `plan` while it is ready for failback (see
/// `cross::round_trip_drill`): sandboxes on kv-a from the reverse copies,
/// captured, copied back to kv-b and recovered there in sandboxes of their
/// own. After it both clusters hold what they held before.
async fn round_trip_drill(store: &Store, lab: &Lab, plan: &PlanDocument) {
    let holdings = || {
        (
            cross::kubevirt_holdings(&lab.a),
            cross::kubevirt_holdings(&lab.b),
        )
    };
    let before = holdings();
    cross::round_trip_drill(store, &lab.steps, plan, "kv-b").await;
    assert_eq!(holdings(), before, "both clusters as the drill found them");
}

/// The running VM serving `workload` on a site (newest epoch), if any.
fn serving(site: &KubeVirtSite, workload: &str) -> Option<String> {
    site.list("virtualmachines", NS)
        .into_iter()
        .filter(|vm| {
            vm["metadata"]["labels"][WORKLOAD_LABEL] == workload
                && vm["status"]["printableStatus"] == "Running"
        })
        .max_by_key(|vm| {
            vm["metadata"]["labels"]["rebound/epoch"]
                .as_str()
                .and_then(|e| e.parse::<u64>().ok())
        })
        .and_then(|vm| vm["metadata"]["name"].as_str().map(str::to_owned))
}

/// The whole root disk of a VM.
fn disk(site: &KubeVirtSite, vm: &str) -> Vec<u8> {
    let pvc = site
        .vm_pvcs(NS, vm)
        .into_iter()
        .next()
        .expect("a root volume");
    site.read_pvc(NS, &pvc).expect("read")
}

fn moved(outputs: &[Value]) -> u64 {
    outputs
        .iter()
        .map(|o| o["bytes_moved"].as_u64().expect("bytes_moved"))
        .sum()
}

/// The weights of the Route `www`, by Service.
fn weights(site: &KubeVirtSite) -> HashMap<String, u64> {
    let route = site.get("routes", NS, "www").expect("route");
    std::iter::once(&route["spec"]["to"])
        .chain(
            route["spec"]["alternateBackends"]
                .as_array()
                .into_iter()
                .flatten(),
        )
        .filter_map(|b| Some((b["name"].as_str()?.to_owned(), b["weight"].as_u64()?)))
        .collect()
}

/// Each workload's incarnation serving on `site` (named `name`).
fn recovered(site: &KubeVirtSite, name: &str) -> HashMap<&'static str, String> {
    VMS.iter()
        .map(|vm| {
            (
                *vm,
                serving(site, vm).unwrap_or_else(|| panic!("{vm} recovered on {name}")),
            )
        })
        .collect()
}

/// After a failback from kv-b: each workload serves on kv-a again, a new
/// incarnation with every last write of its kv-b one (`on_b`), block for
/// block; kv-b is fenced, traffic is on kv-a, and kv-a is primary.
async fn assert_failed_back(store: &Store, lab: &Lab, on_b: &HashMap<&str, String>) {
    for vm in VMS {
        let back = serving(&lab.a, vm).unwrap_or_else(|| panic!("{vm} back on kv-a"));
        assert_ne!(back, vm, "a new incarnation, the fenced original stays");
        assert_eq!(
            disk(&lab.a, &back),
            disk(&lab.b, &on_b[vm]),
            "{vm}: every last write, block for block"
        );
        assert!(
            lab.b.guest_write(NS, &on_b[vm], 0, 0, b"x").is_err(),
            "kv-b is fenced"
        );
        assert_eq!(weights(&lab.a).get(&back), Some(&100));
    }
    let l = store.plan("shop").await.expect("plan").lifecycle;
    assert_eq!(
        (l.state, l.primary.as_str()),
        (PlanState::Protected, "kv-a")
    );
}

async fn kubevirt_round_trip(store: Store) {
    let plan = plan("data_mover");
    let lab = lab(&store).await;
    lab.steps.check_feasible(&plan).await.expect("feasible");
    store.put_plan(&plan, "operator").await.expect("plan");

    // The first cycle moves each disk's data (its boot block), not its holes.
    let first = run(&store, &lab, Workflow::Replication).await;
    assert_eq!(first.len(), 3);
    assert_eq!(moved(&first), 3 * BLOCK, "{first:?}");
    // The database's snapshot froze its guest; the others are crash-consistent.
    let points = store.recovery_points("shop").await.expect("points");
    let taken: Vec<(&str, &Value)> = points
        .iter()
        .filter(|p| p.site == "kv-a")
        .map(|p| (p.workload.as_str(), &p.detail["consistency"]))
        .collect();
    assert_eq!(taken.len(), 3, "{taken:?}");
    for (workload, consistency) in taken {
        let expected = if workload == "db-1" {
            "application"
        } else {
            "crash"
        };
        assert_eq!(consistency, expected, "{workload}");
    }

    // The primary keeps writing after the cycle: lost on an unplanned
    // failover (the RPO); the rest arrives intact.
    let at_cycle: HashMap<&str, Vec<u8>> = VMS.iter().map(|vm| (*vm, disk(&lab.a, vm))).collect();
    lab.a
        .guest_write(NS, "web-1", 0, 8 * MIB, b"written after the cycle")
        .expect("write");
    run(&store, &lab, Workflow::Failover).await;
    let on_b = recovered(&lab.b, "kv-b");
    for vm in VMS {
        assert_eq!(
            disk(&lab.b, &on_b[vm]),
            at_cycle[vm],
            "{vm}: the recovery point, block for block"
        );
        let err = lab
            .a
            .guest_write(NS, vm, 0, 0, b"split brain?")
            .expect_err("fenced");
        assert!(err.contains("not running"), "{err}");
        let fenced = lab.a.get("virtualmachines", NS, vm).expect("vm");
        assert_eq!(fenced["spec"]["runStrategy"], "Halted");
        assert_eq!(
            fenced["metadata"]["annotations"]["rebound.io/fencing-epoch"],
            "2"
        );
        let recovered = lab.b.get("virtualmachines", NS, &on_b[vm]).expect("vm");
        let network =
            &recovered["spec"]["template"]["spec"]["networks"][0]["multus"]["networkName"];
        assert_eq!(network, "dr-net", "networks mapped");
    }
    let routed = weights(&lab.b);
    assert!(
        VMS.iter().all(|vm| routed.get(&on_b[vm]) == Some(&100)),
        "{routed:?}"
    );

    // Writes on the new primary: one whole block and a few bytes in a second.
    let web_b = &on_b["web-1"];
    lab.b
        .guest_write(NS, web_b, 0, 32 * MIB, &vec![0xAB; BLOCK as usize])
        .expect("write");
    lab.b
        .guest_write(NS, web_b, 0, 50 * MIB + 17, b"a small change")
        .expect("write");

    // Reprotect resyncs onto the old primary's copies: only those blocks.
    let resync = run(&store, &lab, Workflow::Reprotect).await;
    assert_eq!(moved(&resync), 2 * BLOCK, "{resync:?}");
    assert!(
        resync
            .iter()
            .all(|o| o["modes"][0] == "delta by block digests"),
        "{resync:?}"
    );
    assert_eq!(
        store.plan("shop").await.expect("plan").lifecycle.state,
        PlanState::ReadyForFailback
    );
    round_trip_drill(&store, &lab, &plan).await;

    // More writes, then the failback: pre-sync, fence, final sync — the old
    // primary ends with exactly the new primary's data.
    lab.b
        .guest_write(NS, web_b, 0, 60 * MIB, b"last write before failback")
        .expect("write");
    let failback = run(&store, &lab, Workflow::Failback).await;
    assert_eq!(
        failback.len(),
        6,
        "pre-sync and final sync of three workloads"
    );
    assert_eq!(
        moved(&failback),
        BLOCK,
        "only the last write's block: {failback:?}"
    );
    assert_failed_back(&store, &lab, &on_b).await;

    // Protected again, replication cycles keep two recovery points per
    // workload at each site and the clusters' disk space stops growing.
    run(&store, &lab, Workflow::Replication).await;
    let web_a = serving(&lab.a, "web-1").expect("web-1");
    let images = (lab.a.disk_images(), lab.b.disk_images());
    for cycle in 0..2u8 {
        lab.a
            .guest_write(NS, &web_a, 0, 4 * MIB, &[cycle + 1; 100])
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
    for site in ["kv-a", "kv-b"] {
        for workload in VMS {
            let kept = points
                .iter()
                .filter(|p| p.site == site && p.workload == workload)
                .count();
            assert_eq!(kept, 2, "{site} {workload}: {points:#?}");
        }
    }

    // Unprotected: no snapshot, mirrored PVC or VolumeReplication of the
    // plan left on either cluster, the VMs on kv-a serving as they were.
    let vms_before = count(&lab.a, "virtualmachines");
    run(&store, &lab, Workflow::Unprotect).await;
    assert_eq!(
        store.plan("shop").await.expect("plan").lifecycle.state,
        PlanState::Unprotected
    );
    for (name, site) in [("kv-a", &lab.a), ("kv-b", &lab.b)] {
        for plural in ["virtualmachinesnapshots", "volumereplications"] {
            assert_eq!(count(site, plural), 0, "{name}: {plural} left");
        }
    }
    assert_eq!(
        (
            count(&lab.b, "persistentvolumeclaims"),
            count(&lab.b, "virtualmachines")
        ),
        (0, 0),
        "kv-b holds nothing of the plan"
    );
    assert_eq!(count(&lab.a, "virtualmachines"), vms_before);
    assert!(serving(&lab.a, "web-1").is_some());

    for (name, site) in [("kv-a", &lab.a), ("kv-b", &lab.b)] {
        let effects = site.effects();
        assert!(!effects.is_empty());
        let repeated: Vec<_> = effects.into_iter().filter(|(_, n)| *n > 1).collect();
        assert!(
            repeated.is_empty(),
            "{name} repeated side effects: {repeated:?}"
        );
    }
}

/// The PVC holding the newest recovery point of `workload` at `site`.
async fn newest_copy(store: &Store, site: &str, workload: &str) -> String {
    let points = store.recovery_points("shop").await.expect("points");
    let newest = points
        .iter()
        .filter(|p| p.site == site && p.workload == workload)
        .max_by_key(|p| p.captured_at_ms)
        .unwrap_or_else(|| panic!("no recovery point of {workload} at {site}"));
    newest.detail["disks"][0]["copy_id"]
        .as_str()
        .expect("a copy")
        .to_owned()
}

/// Objects of a kind left on a site.
fn count(site: &KubeVirtSite, plural: &str) -> usize {
    site.list(plural, NS).len()
}

async fn kubevirt_native_round_trip(store: Store) {
    let plan = plan("native");
    let lab = lab(&store).await;
    lab.steps.check_feasible(&plan).await.expect("feasible");
    store.put_plan(&plan, "operator").await.expect("plan");

    // A cycle: each VM's snapshot restored into a point-in-time PVC that
    // the storage mirrors to kv-b, block for block.
    run(&store, &lab, Workflow::Replication).await;
    let at_cycle: HashMap<&str, Vec<u8>> = VMS.iter().map(|vm| (*vm, disk(&lab.a, vm))).collect();
    for vm in VMS {
        let copy = newest_copy(&store, "kv-b", vm).await;
        assert_eq!(
            lab.b.read_pvc(NS, &copy).expect("mirrored PVC"),
            at_cycle[vm],
            "{vm}: the mirrored copy, block for block"
        );
        let mirrored = lab.b.get("persistentvolumeclaims", NS, &copy).expect("pvc");
        assert_eq!(
            mirrored["metadata"]["annotations"]["lab.rebound.io/mirror-image"], "true",
            "{vm}: a mirror image until promoted"
        );
    }

    // Writes after the cycle are lost on the unplanned failover (the RPO).
    lab.a
        .guest_write(NS, "web-1", 0, 8 * MIB, b"written after the cycle")
        .expect("write");
    run(&store, &lab, Workflow::Failover).await;
    let on_b = recovered(&lab.b, "kv-b");
    for vm in VMS {
        assert_eq!(
            disk(&lab.b, &on_b[vm]),
            at_cycle[vm],
            "{vm}: the recovery point, block for block"
        );
        let copy = newest_copy(&store, "kv-b", vm).await;
        let promoted = lab.b.get("persistentvolumeclaims", NS, &copy).expect("pvc");
        assert!(
            promoted["metadata"]["annotations"]["lab.rebound.io/mirror-image"].is_null(),
            "{vm}: promoted before use"
        );
        let fenced = lab.a.get("virtualmachines", NS, vm).expect("vm");
        assert_eq!(fenced["spec"]["runStrategy"], "Halted");
        assert!(lab.a.guest_write(NS, vm, 0, 0, b"split brain?").is_err());
    }
    assert_eq!(
        count(&lab.b, "volumereplications"),
        0,
        "promotions leave none"
    );
    let routed = weights(&lab.b);
    assert!(
        VMS.iter().all(|vm| routed.get(&on_b[vm]) == Some(&100)),
        "{routed:?}"
    );

    // Writes on the new primary; reprotect mirrors them back to kv-a.
    let web_b = &on_b["web-1"];
    lab.b
        .guest_write(NS, web_b, 0, 32 * MIB, &vec![0xAB; BLOCK as usize])
        .expect("write");
    run(&store, &lab, Workflow::Reprotect).await;
    assert_eq!(
        store.plan("shop").await.expect("plan").lifecycle.state,
        PlanState::ReadyForFailback
    );
    for vm in VMS {
        let copy = newest_copy(&store, "kv-a", vm).await;
        assert_eq!(
            lab.a.read_pvc(NS, &copy).expect("mirrored back"),
            disk(&lab.b, &on_b[vm]),
            "{vm}: the reverse copy, block for block"
        );
    }
    round_trip_drill(&store, &lab, &plan).await;

    // More writes, then the failback: the final sync carries them all.
    lab.b
        .guest_write(NS, web_b, 0, 60 * MIB, b"last write before failback")
        .expect("write");
    run(&store, &lab, Workflow::Failback).await;
    assert_failed_back(&store, &lab, &on_b).await;

    // Protected again: cycles keep two recovery points per workload at
    // each site, and once the points of the way back are pruned (two
    // cycles), what replication leaves behind stops growing.
    for _ in 0..2 {
        run(&store, &lab, Workflow::Replication).await;
    }
    let web_a = serving(&lab.a, "web-1").expect("web-1");
    let left = |site: &KubeVirtSite| {
        (
            site.disk_images(),
            count(site, "persistentvolumeclaims"),
            count(site, "volumereplications"),
        )
    };
    let before = (left(&lab.a), left(&lab.b));
    for cycle in 0..2u8 {
        lab.a
            .guest_write(NS, &web_a, 0, 4 * MIB, &[cycle + 1; 100])
            .expect("write");
        run(&store, &lab, Workflow::Replication).await;
        let copy = newest_copy(&store, "kv-b", "web-1").await;
        assert_eq!(
            lab.b.read_pvc(NS, &copy).expect("mirrored"),
            disk(&lab.a, &web_a),
            "cycle {cycle}: the latest write mirrored"
        );
    }
    assert_eq!((left(&lab.a), left(&lab.b)), before, "pruned to retention");
    let points = store.recovery_points("shop").await.expect("points");
    for site in ["kv-a", "kv-b"] {
        for workload in VMS {
            let kept = points
                .iter()
                .filter(|p| p.site == site && p.workload == workload)
                .count();
            assert_eq!(kept, 2, "{site} {workload}: {points:#?}");
        }
    }

    for (name, site) in [("kv-a", &lab.a), ("kv-b", &lab.b)] {
        let repeated: Vec<_> = site.effects().into_iter().filter(|(_, n)| *n > 1).collect();
        assert!(
            repeated.is_empty(),
            "{name} repeated side effects: {repeated:?}"
        );
    }
}

rebound_store::on_both_backends!(kubevirt_round_trip, kubevirt_native_round_trip);

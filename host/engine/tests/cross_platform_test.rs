//! A cross-platform round trip through the engine: a plan of the OpenStack
//! simulator's servers (region `RegionOne` as site `openstack`) protected
//! onto a KubeVirt cluster (site `kubevirt`), both reached through their
//! real plugins in the sandbox. Replication, a round-trip drill, failover,
//! reprotect and failback all move disks through the host's data mover (native
//! replication does not cross platforms); every disk is compared block for
//! block with the copy it came from after each move, the old primary is
//! fenced, and neither platform served a side effect twice. On SQLite and
//! PostgreSQL.
//!
//! `cargo xtask build-plugins`, then
//! `cargo test -p rebound-engine --test cross_platform_test`.

#[path = "support/cross.rs"]
mod cross;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cross::{MIB, NS, kubevirt_grant, moved, same, serving_kubevirt, vm_disks, write};
use rebound_domain::{PlanDocument, PlanState, Workflow};
use rebound_engine::PluginSteps;
use rebound_lab::openstack::Latencies;
use rebound_lab::{KubeVirtSite, OpenStackOptions, OpenStackSite};
use rebound_runtime::SiteGrant;
use rebound_store::Store;
use serde_json::Value;

const REGION: &str = "RegionOne";
const SERVERS: [&str; 2] = ["web-1", "db-1"];

struct Lab {
    openstack: OpenStackSite,
    kubevirt: KubeVirtSite,
    steps: Arc<PluginSteps>,
    /// Plan workload id (the OpenStack server id) → server name.
    names: HashMap<String, String>,
}

fn openstack_grant(site: &OpenStackSite) -> SiteGrant {
    let options = site.options();
    SiteGrant::new("openstack")
        .config("auth_url", &site.auth_url())
        .config("region", REGION)
        .config("user", &options.user)
        .config("project", &options.project)
        .secret("password", &options.password)
        .secret("mover_key", &options.mover_key)
        .grant(&site.endpoint())
        .expect("grant")
}

async fn lab(store: &Store) -> Lab {
    let ms = Duration::from_millis;
    let openstack = OpenStackSite::start(OpenStackOptions {
        latency: Latencies {
            server_build: ms(40),
            volume: ms(30),
            snapshot: ms(30),
            backup: ms(40),
            image: ms(30),
            dns: ms(30),
            load_balancer: ms(30),
        },
        ..OpenStackOptions::default()
    })
    .await
    .expect("OpenStack simulator");
    let kubevirt = cross::kubevirt_site().await;
    let steps = cross::bind(
        store,
        vec![
            ("openstack", "openstack", openstack_grant(&openstack)),
            ("kubevirt", "kubevirt", kubevirt_grant(&kubevirt)),
        ],
    )
    .await;
    let names = SERVERS
        .iter()
        .map(|name| (id(&server(&openstack, name)), (*name).to_owned()))
        .collect();
    Lab {
        openstack,
        kubevirt,
        steps,
        names,
    }
}

fn id(doc: &Value) -> String {
    doc["id"].as_str().expect("id").to_owned()
}

/// The seeded server `name` of the OpenStack site.
fn server(site: &OpenStackSite, name: &str) -> Value {
    site.resources(REGION, "servers")
        .into_iter()
        .find(|s| s["name"] == name && s["metadata"]["rebound:workload"].is_null())
        .unwrap_or_else(|| panic!("server {name}"))
}

/// The running OpenStack server serving `workload` (newest epoch), if any.
fn serving_openstack(site: &OpenStackSite, workload: &str) -> Option<Value> {
    site.resources(REGION, "servers")
        .into_iter()
        .filter(|s| s["metadata"]["rebound:workload"] == workload && s["status"] == "ACTIVE")
        .max_by_key(|s| {
            s["metadata"]["rebound:epoch"]
                .as_str()
                .and_then(|e| e.parse::<u64>().ok())
        })
}

/// The image files of a server's volumes, in attachment order.
fn server_disks(site: &OpenStackSite, server: &Value) -> Vec<PathBuf> {
    server["os-extended-volumes:volumes_attached"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| {
            site.disks()
                .path(&format!("volume-{}", id(v)))
                .expect("path")
        })
        .collect()
}

fn plan(lab: &Lab) -> PlanDocument {
    let by_name = |name: &str| {
        lab.names
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(id, _)| id.clone())
            .expect("workload")
    };
    cross::shop_plan(
        "openstack",
        "kubevirt",
        &by_name("db-1"),
        &by_name("web-1"),
        &[("private", "dr-net")],
    )
}

async fn run(store: &Store, lab: &Lab, workflow: Workflow) -> Vec<Value> {
    cross::run(store, &lab.steps, "shop", workflow).await
}

async fn openstack_to_kubevirt_and_back(store: Store) {
    let lab = lab(&store).await;
    let plan = plan(&lab);
    let mut native = plan.clone();
    native.replication.mode = rebound_domain::plan::ReplicationMode::Native;
    let refused = lab
        .steps
        .check_feasible(&native)
        .await
        .expect_err("native replication between platforms")
        .to_string();
    assert!(
        refused.contains("replication.mode") && refused.contains("data_mover"),
        "{refused}"
    );
    // The OpenStack plugin cannot freeze a guest: an application-consistent
    // workload is refused, naming the site.
    let mut frozen = plan.clone();
    frozen.workloads[0].consistency = rebound_domain::plan::Consistency::Application;
    let refused = lab
        .steps
        .check_feasible(&frozen)
        .await
        .expect_err("no freeze on OpenStack")
        .to_string();
    assert!(
        refused.contains("workloads[0].consistency") && refused.contains("site 'openstack'"),
        "{refused}"
    );
    lab.steps.check_feasible(&plan).await.expect("feasible");
    store.put_plan(&plan, "operator").await.expect("plan");
    let originals: HashMap<&str, Vec<PathBuf>> = SERVERS
        .iter()
        .map(|name| {
            (
                *name,
                server_disks(&lab.openstack, &server(&lab.openstack, name)),
            )
        })
        .collect();
    for (name, disks) in &originals {
        write(
            &disks[0],
            3 * MIB,
            format!("{name} before the cycle").as_bytes(),
        );
    }

    // The first cycle copies each server's disks onto the cluster.
    let first = run(&store, &lab, Workflow::Replication).await;
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(moved(&first) > 0, "{first:?}");
    let at_cycle: HashMap<&str, Vec<u8>> = originals
        .iter()
        .map(|(name, disks)| (*name, std::fs::read(&disks[0]).expect("read")))
        .collect();

    // A round-trip drill: recovered on the cluster in a sandbox, then back
    // onto OpenStack through the data mover into a sandbox there. What
    // came back is what went (the way back's copies verified block for
    // block, their digests the cycle's), and nothing of it stays.
    let mut round_trip = plan.clone();
    round_trip.drills.round_trip = true;
    store.put_plan(&round_trip, "operator").await.expect("plan");
    let ids = |docs: Vec<Value>| {
        let mut ids: Vec<String> = docs.iter().map(id).collect();
        ids.sort();
        ids
    };
    let openstack_holds = || {
        ["servers", "volumes", "snapshots"].map(|kind| ids(lab.openstack.resources(REGION, kind)))
    };
    let kubevirt_holds = || cross::kubevirt_holdings(&lab.kubevirt);
    let (openstack_before, kubevirt_before) = (openstack_holds(), kubevirt_holds());
    assert!(
        !openstack_before[1].is_empty() && !kubevirt_before[1].is_empty(),
        "the volumes and the cycle's copies: {openstack_before:?} {kubevirt_before:?}"
    );
    let back = run(&store, &lab, Workflow::Drill).await;
    assert_eq!(back.len(), 2, "{back:?}");
    for (there, back) in first.iter().zip(&back) {
        assert_eq!(back["site"], "openstack");
        assert_eq!(
            there["digests"], back["digests"],
            "{there} came back as {back}"
        );
    }
    // (Cinder finishes a deletion it accepted a moment later.)
    for _ in 0..200 {
        if openstack_holds() == openstack_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(openstack_holds(), openstack_before);
    assert_eq!(kubevirt_holds(), kubevirt_before);
    store.put_plan(&plan, "operator").await.expect("plan");

    // Written after the cycle: lost on an unplanned failover (the RPO).
    for disks in originals.values() {
        write(&disks[0], 7 * MIB, b"written after the cycle");
    }
    run(&store, &lab, Workflow::Failover).await;
    let l = store.plan("shop").await.expect("plan").lifecycle;
    assert_eq!(
        (l.state, l.primary.as_str()),
        (PlanState::FailedOver, "kubevirt")
    );
    let mut on_kubevirt = HashMap::new();
    for (workload, name) in &lab.names {
        let vm = serving_kubevirt(&lab.kubevirt, workload)
            .unwrap_or_else(|| panic!("{name} recovered on the cluster"));
        let disks = vm_disks(&lab.kubevirt, &vm);
        assert_eq!(
            std::fs::read(&disks[0]).expect("read"),
            at_cycle[name.as_str()],
            "{name}: the recovery point, block for block"
        );
        let recovered = lab.kubevirt.get("virtualmachines", NS, &vm).expect("vm");
        assert_eq!(
            recovered["spec"]["template"]["spec"]["networks"][0]["multus"]["networkName"], "dr-net",
            "networks mapped"
        );
        let old = server(&lab.openstack, name);
        assert_eq!(
            (old["status"].as_str(), old["locked"].as_bool()),
            (Some("SHUTOFF"), Some(true)),
            "{name} fenced on OpenStack"
        );
        on_kubevirt.insert(name.clone(), vm);
    }

    // Writes on the new primary, then reprotect resyncs onto OpenStack.
    let web = &on_kubevirt["web-1"];
    lab.kubevirt
        .guest_write(NS, web, 0, 40 * MIB, b"written on the cluster")
        .expect("write");
    let resync = run(&store, &lab, Workflow::Reprotect).await;
    assert_eq!(resync.len(), 2, "{resync:?}");
    assert_eq!(
        store.plan("shop").await.expect("plan").lifecycle.state,
        PlanState::ReadyForFailback
    );

    // More writes, then the planned failback: nothing is lost.
    lab.kubevirt
        .guest_write(NS, web, 0, 60 * MIB, b"last write before failback")
        .expect("write");
    let failback = run(&store, &lab, Workflow::Failback).await;
    assert!(moved(&failback) > 0, "{failback:?}");
    let l = store.plan("shop").await.expect("plan").lifecycle;
    assert_eq!(
        (l.state, l.primary.as_str()),
        (PlanState::Protected, "openstack")
    );
    for (workload, name) in &lab.names {
        let back = serving_openstack(&lab.openstack, workload)
            .unwrap_or_else(|| panic!("{name} back on OpenStack"));
        let cluster = vm_disks(&lab.kubevirt, &on_kubevirt[name]);
        assert!(
            same(&server_disks(&lab.openstack, &back), &cluster),
            "{name}: every last write, block for block"
        );
        assert!(
            lab.kubevirt
                .guest_write(NS, &on_kubevirt[name], 0, 0, b"x")
                .is_err(),
            "{name} fenced on the cluster"
        );
    }

    // Protected again: a cycle runs from OpenStack onto the cluster, and
    // with its copy there the incarnations the failback superseded on the
    // cluster go, their disks with them.
    let vms = || lab.kubevirt.list("virtualmachines", NS);
    assert_eq!(vms().len(), lab.names.len());
    run(&store, &lab, Workflow::Replication).await;
    assert!(vms().is_empty(), "{:?}", vms());
    for name in on_kubevirt.values() {
        assert!(lab.kubevirt.vm_pvcs(NS, name).is_empty(), "{name}");
    }

    cross::assert_no_repeats("OpenStack", lab.openstack.effects());
    cross::assert_no_repeats("KubeVirt", lab.kubevirt.effects());
}

rebound_store::on_both_backends!(openstack_to_kubevirt_and_back);

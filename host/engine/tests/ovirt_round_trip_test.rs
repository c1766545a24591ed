//! A cross-platform round trip through the engine from an oVirt engine:
//! a plan of the oVirt simulator's VMs (site `ovirt`) protected onto a
//! KubeVirt cluster (site `kubevirt`), both reached through their real
//! plugins. Replication, failover, reprotect and failback move disks
//! through image transfers and the host's data mover — onto oVirt only the
//! blocks that differ from the disk each import supersedes; every disk is
//! compared block for block after each move, the old primary is fenced
//! (stopped, its epoch in its tags), and neither platform served a side
//! effect twice. A drill on oVirt runs on copies of the recovery point's
//! disks, and one that fails half-way leaves none of them, nor its VM; a
//! cycle from oVirt moves only the blocks an incremental backup
//! lists as written since the last copy. On SQLite and PostgreSQL.
//!
//! `cargo xtask build-plugins`, then
//! `cargo test -p rebound-engine --test ovirt_round_trip_test`.

#[path = "support/cross.rs"]
mod cross;
#[path = "support/ovirt.rs"]
mod ovirt;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use cross::{MIB, NS, kubevirt_grant, moved, same, serving_kubevirt, vm_disks};
use rebound_domain::{PlanDocument, PlanState, Workflow};
use rebound_engine::{Outcome, PluginSteps, WORKLOAD_LABEL};
use rebound_lab::{Faults, KubeVirtSite, OVirtSite};
use rebound_store::{StepStatus, Store};
use serde_json::Value;

const VMS: [&str; 2] = ["web-1", "db-1"];

struct Lab {
    ovirt: OVirtSite,
    kubevirt: KubeVirtSite,
    steps: Arc<PluginSteps>,
    /// Plan workload id (the oVirt VM id) → VM name.
    names: HashMap<String, String>,
}

async fn lab(store: &Store) -> Lab {
    let ovirt = ovirt::site(64 * MIB).await;
    let kubevirt = cross::kubevirt_site().await;
    let steps = cross::bind(
        store,
        vec![
            ("ovirt", "ovirt", ovirt::grant(&ovirt, "ovirt")),
            ("kubevirt", "kubevirt", kubevirt_grant(&kubevirt)),
        ],
    )
    .await;
    let names = VMS
        .iter()
        .map(|name| (ovirt.vm_id(name).expect("seeded VM"), (*name).to_owned()))
        .collect();
    Lab {
        ovirt,
        kubevirt,
        steps,
        names,
    }
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
        "ovirt",
        "kubevirt",
        &by_name("db-1"),
        &by_name("web-1"),
        &[("ovirtmgmt", "dr-net")],
    )
}

async fn run(store: &Store, lab: &Lab, workflow: Workflow) -> Vec<Value> {
    cross::run(store, &lab.steps, "shop", workflow).await
}

/// The running oVirt VM serving `workload` (newest epoch), if any: one the
/// engine materialized, tagged with the workload.
fn serving_ovirt(site: &OVirtSite, workload: &str) -> Option<String> {
    let tag = format!("{WORKLOAD_LABEL}={workload}");
    site.vm_ids()
        .into_iter()
        .filter_map(|id| site.vm(&id).map(|vm| (id, vm)))
        .filter(|(_, (_, status, tags))| status == "up" && tags.contains(&tag))
        .max_by_key(|(_, (_, _, tags))| {
            tags.iter()
                .filter_map(|t| t.strip_prefix("rebound/epoch=")?.parse::<u64>().ok())
                .max()
        })
        .map(|(id, _)| id)
}

async fn ovirt_to_kubevirt_and_back(store: Store) {
    let lab = lab(&store).await;
    let plan = plan(&lab);
    let mut native = plan.clone();
    native.replication.mode = rebound_domain::plan::ReplicationMode::Native;
    assert!(
        lab.steps.check_feasible(&native).await.is_err(),
        "native replication from oVirt is refused"
    );
    lab.steps.check_feasible(&plan).await.expect("feasible");
    store.put_plan(&plan, "operator").await.expect("plan");
    let originals: HashMap<String, Vec<PathBuf>> = lab
        .names
        .iter()
        .map(|(id, name)| (name.clone(), lab.ovirt.vm_disks(id)))
        .collect();
    for (id, name) in &lab.names {
        lab.ovirt
            .guest_write(
                id,
                0,
                3 * MIB,
                format!("{name} before the cycle").as_bytes(),
            )
            .expect("write");
    }

    // The first cycle copies each VM's disks onto the cluster.
    let first = run(&store, &lab, Workflow::Replication).await;
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(moved(&first) > 0, "{first:?}");
    let at_cycle: HashMap<String, Vec<Vec<u8>>> = originals
        .iter()
        .map(|(name, disks)| {
            (
                name.clone(),
                disks
                    .iter()
                    .map(|d| std::fs::read(d).expect("read"))
                    .collect(),
            )
        })
        .collect();

    // Written after the cycle: lost on an unplanned failover (the RPO).
    for id in lab.names.keys() {
        lab.ovirt
            .guest_write(id, 0, 7 * MIB, b"written after the cycle")
            .expect("write");
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
        let recovered: Vec<Vec<u8>> = disks
            .iter()
            .map(|d| std::fs::read(d).expect("read"))
            .collect();
        assert_eq!(
            recovered, at_cycle[name],
            "{name}: the recovery point, every disk block for block"
        );
        let spec = lab.kubevirt.get("virtualmachines", NS, &vm).expect("vm");
        assert_eq!(
            spec["spec"]["template"]["spec"]["networks"][0]["multus"]["networkName"], "dr-net",
            "networks mapped"
        );
        let (_, status, tags) = lab.ovirt.vm(workload).expect("old primary");
        assert_eq!(status, "down", "{name} stopped on oVirt");
        assert!(tags.contains(&"rebound/fenced=true".to_owned()), "{tags:?}");
        assert!(
            lab.ovirt.guest_write(workload, 0, 0, b"x").is_err(),
            "{name} fenced on oVirt"
        );
        on_kubevirt.insert(name.clone(), vm);
    }

    // Writes on the new primary, then reprotect resyncs onto oVirt.
    let web = &on_kubevirt["web-1"];
    lab.kubevirt
        .guest_write(NS, web, 0, 40 * MIB, b"written on the cluster")
        .expect("write");
    let resync = run(&store, &lab, Workflow::Reprotect).await;
    assert_eq!(resync.len(), 2, "{resync:?}");
    // Each import onto oVirt starts from a copy of the disk it supersedes
    // there (the old primary's), which the mover hashes by reading it
    // (imageio lists no digests): only the 4 MiB blocks that differ are
    // written — the write lost on failover (both VMs) and the write on the
    // cluster (web-1): three blocks of the 256 MiB.
    assert_eq!(moved(&resync), 3 * 4 * MIB, "{resync:#?}");
    // Hashing reads only the blocks that hold data: imageio lists the
    // zero extents, whose digests the mover knows without reading.
    let total: u64 = resync
        .iter()
        .map(|o| o["bytes_total"].as_u64().unwrap_or(0))
        .sum();
    let hashed: u64 = resync
        .iter()
        .map(|o| o["bytes_hashed"].as_u64().unwrap_or(0))
        .sum();
    eprintln!("reprotect onto oVirt hashed {hashed} of {total} bytes");
    assert!(
        hashed > 0 && hashed * 4 < total,
        "{hashed} of {total}: {resync:#?}"
    );
    assert!(
        modes(&resync)
            .iter()
            .all(|m| m == "delta by block digests (the target's hashed by the mover)"),
        "{resync:#?}"
    );
    assert_eq!(
        store.plan("shop").await.expect("plan").lifecycle.state,
        PlanState::ReadyForFailback
    );

    // A drill of the failback, on oVirt: its VMs run on the engine's
    // copies of the reprotect's disks, which stay as they were — the
    // failback below starts from them.
    let reprotected: Vec<(String, Vec<u8>)> = resync
        .iter()
        .flat_map(|o| o["volumes"].as_array().cloned().unwrap_or_default())
        .map(|v| {
            let disk = v.as_str().expect("volume").to_owned();
            let path = lab.ovirt.disk_path(&disk).expect("reprotect's disk");
            (disk, std::fs::read(path).expect("read"))
        })
        .collect();
    let disks = lab.ovirt.disk_ids().len();
    run(&store, &lab, Workflow::Drill).await;
    assert_eq!(
        lab.ovirt.disk_ids().len(),
        disks,
        "the drill's copies went with its VMs"
    );
    for (disk, before) in &reprotected {
        let path = lab
            .ovirt
            .disk_path(disk)
            .unwrap_or_else(|| panic!("the drill removed recovery point disk {disk}"));
        assert!(
            std::fs::read(path).expect("read") == *before,
            "the drill changed recovery point disk {disk}"
        );
    }

    // A drill whose disks the engine will not attach (every POST under
    // `diskattachments` refused): its materialize made a VM and copied
    // disks, then failed. The run's compensation tears the sandbox down,
    // and nothing of it stays — not the VM, created before it was tagged
    // with the sandbox, not the copies no VM took with it.
    let vms = lab.ovirt.vm_ids().len();
    lab.ovirt.set_faults(Faults {
        error_rate: 1.0,
        status: Some(400),
        service: Some("diskattachments".into()),
        method: Some("POST".into()),
        ..Faults::default()
    });
    let (failed, outcome) = cross::finish(&store, &lab.steps, "shop", Workflow::Drill).await;
    lab.ovirt.set_faults(Faults::default());
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    let steps = store.steps(&failed).await.expect("steps");
    assert!(
        steps
            .iter()
            .any(|s| s.input["action"] == "materialize" && s.error.is_some()),
        "{steps:#?}"
    );
    assert!(
        steps
            .iter()
            .any(|s| s.input["compensation"] == true && s.status == StepStatus::Succeeded),
        "the sandbox was torn down: {steps:#?}"
    );
    assert_eq!(lab.ovirt.vm_ids().len(), vms, "no VM of the failed drill");
    assert_eq!(
        lab.ovirt.disk_ids().len(),
        disks,
        "no copy of the failed drill"
    );

    // A round-trip drill while ready for failback rehearses the failback
    // (the sandbox on oVirt) and the failover after it: the sandbox's disks
    // back onto the cluster through the data mover, recovered there. oVirt
    // removes a VM's snapshots with it, so the drill's capture there is
    // gone before the drill asks — gone counts as removed. Nothing stays.
    let sorted = |mut ids: Vec<String>| {
        ids.sort();
        ids
    };
    let ovirt_holds = || (sorted(lab.ovirt.vm_ids()), sorted(lab.ovirt.disk_ids()));
    let (ovirt_before, kubevirt_before) = (ovirt_holds(), cross::kubevirt_holdings(&lab.kubevirt));
    cross::round_trip_drill(&store, &lab.steps, &plan, "kubevirt").await;
    assert_eq!(ovirt_holds(), ovirt_before);
    assert_eq!(cross::kubevirt_holdings(&lab.kubevirt), kubevirt_before);
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
    // Onto the copies reprotect made: the one block written since.
    assert_eq!(moved(&failback), 4 * MIB, "{failback:#?}");
    let l = store.plan("shop").await.expect("plan").lifecycle;
    assert_eq!(
        (l.state, l.primary.as_str()),
        (PlanState::Protected, "ovirt")
    );
    for (workload, name) in &lab.names {
        let back =
            serving_ovirt(&lab.ovirt, workload).unwrap_or_else(|| panic!("{name} back on oVirt"));
        let cluster = vm_disks(&lab.kubevirt, &on_kubevirt[name]);
        assert!(
            same(&lab.ovirt.vm_disks(&back), &cluster),
            "{name}: every last write, block for block"
        );
        assert!(
            lab.kubevirt
                .guest_write(NS, &on_kubevirt[name], 0, 0, b"x")
                .is_err(),
            "{name} fenced on the cluster"
        );
    }
    let back = serving_ovirt(
        &lab.ovirt,
        &lab.names
            .iter()
            .find(|(_, n)| *n == "web-1")
            .expect("web")
            .0
            .clone(),
    )
    .expect("web-1 back");
    let disk = std::fs::read(&lab.ovirt.vm_disks(&back)[0]).expect("read");
    assert_eq!(
        &disk[60 * MIB as usize..][..26],
        b"last write before failback"
    );

    // Protected again: a cycle runs from oVirt onto the cluster.
    // oVirt's blocks are hashed as they are read; the cluster's copies
    // already hold them all.
    let again = run(&store, &lab, Workflow::Replication).await;
    assert_eq!(moved(&again), 0, "{again:#?}");
    assert!(
        modes(&again)
            .iter()
            .all(|m| m == "delta by block digests (the source's hashed as it is read)"),
        "{again:#?}"
    );

    // One more write on oVirt, then a cycle: the engine lists the blocks
    // written since the last copy's checkpoint (an incremental backup's
    // dirty extents), so only those are read and moved — nothing hashed.
    lab.ovirt
        .guest_write(&back, 0, 20 * MIB, b"written after the way back")
        .expect("write");
    let delta = run(&store, &lab, Workflow::Replication).await;
    assert!(
        modes(&delta).iter().all(|m| m == "delta by changed ranges"),
        "{delta:#?}"
    );
    assert_eq!(moved(&delta), 4 * MIB, "one block of web-1: {delta:#?}");
    let hashed: u64 = delta
        .iter()
        .map(|o| o["bytes_hashed"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(hashed, 0, "{delta:#?}");
    // The source read: only the listed block, where the cycle before
    // (block digests, oVirt's side hashed as read) read every data block.
    let read = |outputs: &[Value]| -> u64 {
        outputs
            .iter()
            .map(|o| o["bytes_read"].as_u64().unwrap_or(0))
            .sum()
    };
    eprintln!(
        "a cycle from oVirt read {} bytes by changed blocks, {} by digests",
        read(&delta),
        read(&again)
    );
    assert_eq!(read(&delta), 4 * MIB, "{delta:#?}");
    assert!(read(&again) > read(&delta), "{again:#?}");
    // web-1's transfer is the one that moved the block.
    let copy = delta
        .iter()
        .find(|o| o["bytes_moved"].as_u64() > Some(0))
        .expect("web-1's transfer");
    let copies: Vec<PathBuf> = copy["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| {
            lab.kubevirt
                .pvc_path(NS, v.as_str().expect("volume"))
                .expect("pvc")
        })
        .collect();
    assert!(
        same(&lab.ovirt.vm_disks(&back), &copies),
        "the cluster's new copy of web-1, block for block"
    );

    // Two more cycles: the points past the retention of 2 are pruned with
    // the checkpoints only they needed, so the chain stops growing — the
    // two kept points' checkpoints and the listing after each (web-1 has
    // one disk); 7 had none been removed.
    for _ in 0..2 {
        run(&store, &lab, Workflow::Replication).await;
    }
    let chain = lab.ovirt.checkpoints(&back);
    assert!(chain <= 4, "{chain} checkpoints of web-1 on oVirt");

    cross::assert_no_repeats("oVirt", lab.ovirt.effects());
    cross::assert_no_repeats("KubeVirt", lab.kubevirt.effects());
    // The original disks were never written by the way back.
    for (name, disks) in &originals {
        assert!(
            disks.iter().all(|d| d.exists()),
            "{name}'s original disks kept"
        );
    }
}

/// The data mover's mode for every disk of the transfers in `outputs`.
fn modes(outputs: &[Value]) -> Vec<String> {
    outputs
        .iter()
        .flat_map(|o| o["modes"].as_array().cloned().unwrap_or_default())
        .map(|m| m.as_str().unwrap_or_default().to_owned())
        .collect()
}

rebound_store::on_both_backends!(ovirt_to_kubevirt_and_back);

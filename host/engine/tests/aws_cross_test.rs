//! A cross-platform round trip between AWS and KubeVirt through the
//! engine: the lab's AWS site (moto behind the lab's front, one region) and
//! the KubeVirt simulator, both reached through their real plugins. Disks
//! move through the AWS plugin's mover appliance (an instance launched from
//! the `rebound-mover` AMI with the volume attached) and KubeVirt's export
//! and import, copied and verified by the host's data mover. Every disk is
//! compared block for block after each move, the old primary is fenced,
//! and no mover appliance, instance or snapshot was made twice; a
//! round-trip drill while ready for failback (sandboxes on AWS, back onto
//! the cluster) leaves neither platform holding anything of it. On SQLite
//! and PostgreSQL.
//!
//! Needs moto (`lab/fidelity/aws-requirements.txt` in `REBOUND_PYTHON`'s
//! environment; skipped without it unless `REBOUND_REQUIRE_PYTHON=1`).
//! `cargo xtask build-plugins`, then
//! `cargo test -p rebound-engine --test aws_cross_test`.

#[path = "support/aws.rs"]
mod aws;
#[path = "support/cross.rs"]
mod cross;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cross::{MIB, NS, kubevirt_grant, moved, same, serving_kubevirt, vm_disks};
use rebound_domain::{PlanDocument, PlanState, Workflow};
use rebound_engine::{PluginSteps, WORKLOAD_LABEL};
use rebound_lab::{AwsOptions, AwsSite, KubeVirtSite};
use rebound_store::Store;

struct Lab {
    aws: AwsSite,
    kubevirt: KubeVirtSite,
    steps: Arc<PluginSteps>,
    /// Seeded instance id → name.
    names: HashMap<String, String>,
}

/// `(instance id, state, volume ids)` of the instances matching `filter`.
async fn instances(lab: &AwsSite, filter: (&str, &str)) -> Vec<(String, String, Vec<String>)> {
    aws::instances(lab, &lab.regions()[0], &[filter]).await
}

async fn lab(store: &Store) -> Option<Lab> {
    let ms = Duration::from_millis;
    let aws = AwsSite::start_or_skip(AwsOptions {
        regions: vec!["eu-west-1".into()],
        snapshot_latency: ms(100),
        dns_latency: ms(100),
        ..AwsOptions::default()
    })
    .await?;
    let kubevirt = cross::kubevirt_site().await;
    let aws_grant = aws::grant(&aws, "aws", &aws.regions()[0]);
    let steps = cross::bind(
        store,
        vec![
            ("aws", "aws", aws_grant),
            ("kubevirt", "kubevirt", kubevirt_grant(&kubevirt)),
        ],
    )
    .await;
    let mut names = HashMap::new();
    for name in ["web-1", "db-1"] {
        let found = instances(&aws, ("tag:Name", name)).await;
        names.insert(found[0].0.clone(), name.to_owned());
    }
    Some(Lab {
        aws,
        kubevirt,
        steps,
        names,
    })
}

fn plan(lab: &Lab) -> PlanDocument {
    let id = |name: &str| {
        lab.names
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(id, _)| id.clone())
            .expect("workload")
    };
    cross::shop_plan("aws", "kubevirt", &id("db-1"), &id("web-1"), &[])
}

/// The data files of volumes or snapshots of the AWS site.
fn files(lab: &Lab, ids: &[String]) -> Vec<PathBuf> {
    ids.iter()
        .map(|id| lab.aws.disks().path(id).expect("data file"))
        .collect()
}

/// The staging snapshots on AWS (a launch from imported volumes goes
/// through them).
async fn staging_snapshots(site: &AwsSite) -> Vec<String> {
    aws::tagged_snapshots(site, &site.regions()[0], "rebound:staging").await
}

/// The recovery points Rebound made on AWS: its tagged snapshots. (moto
/// also keeps an untagged snapshot of each AMI it registered after the AMI
/// is gone; AWS's RegisterImage from snapshots makes none.)
async fn point_snapshots(site: &AwsSite) -> Vec<String> {
    aws::tagged_snapshots(site, &site.regions()[0], "rebound:point").await
}

/// The running AWS instance serving plan workload `workload`, newest
/// epoch: `(instance, volumes)`.
async fn serving_aws(lab: &Lab, workload: &str) -> Option<(String, Vec<String>)> {
    let tag = format!("tag:{WORKLOAD_LABEL}");
    instances(&lab.aws, (&tag, workload))
        .await
        .into_iter()
        .find(|(_, state, _)| state == "running")
        .map(|(id, _, volumes)| (id, volumes))
}

async fn aws_to_kubevirt_and_back(store: Store) {
    let Some(lab) = lab(&store).await else {
        return;
    };
    let plan = plan(&lab);
    lab.steps.check_feasible(&plan).await.expect("feasible");
    store.put_plan(&plan, "operator").await.expect("plan");
    let originals: HashMap<String, Vec<String>> = {
        let mut out = HashMap::new();
        for id in lab.names.keys() {
            let found = instances(&lab.aws, ("instance-id", id)).await;
            out.insert(id.clone(), found[0].2.clone());
        }
        out
    };

    // The first cycle copies each instance's volumes onto the cluster
    // through mover appliances; it snapshots them first.
    let first = cross::run(&store, &lab.steps, "shop", Workflow::Replication).await;
    assert!(
        !point_snapshots(&lab.aws).await.is_empty(),
        "the cycle's recovery points are the snapshots Rebound tags"
    );
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(moved(&first) > 0, "{first:?}");
    let points = store.recovery_points("shop").await.expect("points");
    let at_cycle: HashMap<String, Vec<String>> = points
        .iter()
        .filter(|p| p.site == "aws")
        .map(|p| {
            let snaps = p.detail["disks"]
                .as_array()
                .expect("disks")
                .iter()
                .map(|d| d["copy_id"].as_str().expect("copy").to_owned())
                .collect();
            (p.workload.clone(), snaps)
        })
        .collect();
    assert_eq!(at_cycle.len(), 2, "{points:?}");
    let appliances = instances(&lab.aws, ("tag-key", "rebound:mover-mode")).await;
    assert_eq!(appliances.len(), 3, "one per disk: {appliances:?}");
    assert!(
        appliances.iter().all(|(_, state, _)| state == "terminated"),
        "released after the copy: {appliances:?}"
    );

    // Written after the cycle: lost on an unplanned failover (the RPO).
    for volumes in originals.values() {
        lab.aws
            .disks()
            .write(&volumes[0], 7 * MIB, b"written after the cycle")
            .expect("write");
    }
    cross::run(&store, &lab.steps, "shop", Workflow::Failover).await;
    let l = store.plan("shop").await.expect("plan").lifecycle;
    assert_eq!(
        (l.state, l.primary.as_str()),
        (PlanState::FailedOver, "kubevirt")
    );
    let mut on_kubevirt = HashMap::new();
    for (workload, name) in &lab.names {
        let vm = serving_kubevirt(&lab.kubevirt, workload)
            .unwrap_or_else(|| panic!("{name} recovered on the cluster"));
        assert!(
            same(
                &vm_disks(&lab.kubevirt, &vm),
                &files(&lab, &at_cycle[workload])
            ),
            "{name}: the recovery point, every volume block for block"
        );
        let old = instances(&lab.aws, ("instance-id", workload)).await;
        assert_eq!(old[0].1, "stopped", "{name} fenced on AWS");
        on_kubevirt.insert(name.clone(), vm);
    }

    // Writes on the new primary; reprotect copies onto the AWS snapshots'
    // clones, failback onto the reprotected volumes.
    let web = &on_kubevirt["web-1"];
    lab.kubevirt
        .guest_write(NS, web, 0, 40 * MIB, b"written on the cluster")
        .expect("write");
    let resync = cross::run(&store, &lab.steps, "shop", Workflow::Reprotect).await;
    assert_eq!(resync.len(), 2, "{resync:?}");
    assert_eq!(
        store.plan("shop").await.expect("plan").lifecycle.state,
        PlanState::ReadyForFailback
    );

    // A drill of the failback: sandboxes launched on AWS from the volumes
    // reprotect imported (through staging snapshots of them), then torn
    // down with those snapshots; nothing is left running on AWS.
    let staging_before = staging_snapshots(&lab.aws).await;
    let created =
        |effects: &HashMap<String, usize>| effects.get("ec2 CreateSnapshot").copied().unwrap_or(0);
    let before = created(&lab.aws.effects());
    cross::run(&store, &lab.steps, "shop", Workflow::Drill).await;
    assert!(
        created(&lab.aws.effects()) > before,
        "the sandboxes were launched through staging snapshots"
    );
    assert_eq!(
        staging_snapshots(&lab.aws).await,
        staging_before,
        "the drill's staging snapshots are deleted with its sandbox"
    );
    let running = instances(&lab.aws, ("instance-state-name", "running")).await;
    assert!(running.is_empty(), "sandboxes torn down: {running:?}");
    assert_eq!(
        store.plan("shop").await.expect("plan").lifecycle.state,
        PlanState::ReadyForFailback
    );

    // A round-trip drill while ready for failback: the sandboxes on AWS
    // (the failback's recovery) are captured and come back onto the
    // cluster through the data mover (the failover after it), recovered
    // there in sandboxes of their own. Every snapshot and instance of it on
    // AWS goes, the cluster holds what it held, the store no copy of it.
    let (snapshots_before, kubevirt_before) = (
        point_snapshots(&lab.aws).await,
        cross::kubevirt_holdings(&lab.kubevirt),
    );
    cross::round_trip_drill(&store, &lab.steps, &plan, "kubevirt").await;
    assert_eq!(point_snapshots(&lab.aws).await, snapshots_before);
    assert_eq!(cross::kubevirt_holdings(&lab.kubevirt), kubevirt_before);
    let running = instances(&lab.aws, ("instance-state-name", "running")).await;
    assert!(running.is_empty(), "sandboxes torn down: {running:?}");

    lab.kubevirt
        .guest_write(NS, web, 0, 60 * MIB, b"last write before failback")
        .expect("write");
    let failback = cross::run(&store, &lab.steps, "shop", Workflow::Failback).await;
    // Only the delta since reprotect travels: the last write's block, not
    // the 18 GiB of volumes.
    assert!(
        moved(&failback) > 0 && moved(&failback) <= 8 * MIB,
        "{failback:?}"
    );
    let l = store.plan("shop").await.expect("plan").lifecycle;
    assert_eq!((l.state, l.primary.as_str()), (PlanState::Protected, "aws"));
    for (workload, name) in &lab.names {
        let (back, volumes) = serving_aws(&lab, workload)
            .await
            .unwrap_or_else(|| panic!("{name} back on AWS"));
        assert_ne!(&back, workload, "{name}: a new incarnation on AWS");
        let cluster = vm_disks(&lab.kubevirt, &on_kubevirt[name]);
        assert!(
            same(&files(&lab, &volumes), &cluster),
            "{name}: every last write, block for block"
        );
        if name == "web-1" {
            let data = lab
                .aws
                .disks()
                .read_at(&volumes[0], 60 * MIB, 26)
                .expect("read");
            assert_eq!(data, b"last write before failback");
        }
        assert!(
            lab.kubevirt
                .guest_write(NS, &on_kubevirt[name], 0, 0, b"x")
                .is_err(),
            "{name} fenced on the cluster"
        );
    }

    // Protected again: a cycle runs from AWS onto the cluster.
    // Nothing changed since the failback verified both sides equal: the
    // cycle compares and moves nothing.
    let again = cross::run(&store, &lab.steps, "shop", Workflow::Replication).await;
    assert_eq!(moved(&again), 0, "{again:?}");

    // Every appliance was launched once under its own key and released.
    let appliances = instances(&lab.aws, ("tag-key", "rebound:mover-mode")).await;
    assert!(
        appliances.iter().all(|(_, state, _)| state == "terminated"),
        "{appliances:?}"
    );
    let effects = lab.aws.effects();
    let launched = effects.get("ec2 RunInstances").copied().unwrap_or(0);
    assert_eq!(
        launched,
        appliances.len() + 3 * lab.names.len(),
        "one RunInstances per appliance, per sandbox of both drills and per instance failed \
         back: {effects:?}"
    );
    cross::assert_no_repeats("KubeVirt", lab.kubevirt.effects());
}

rebound_store::on_both_backends!(aws_to_kubevirt_and_back);

//! An engine round trip between two AWS regions of the lab's AWS site (moto
//! behind the lab's front) through the real AWS plugin, with native
//! replication (CopySnapshot across regions): a plan of two instances is
//! replicated, failed over to us-west-2, reprotected, drilled there and
//! back (a round-trip drill, leaving both regions as it found them) and
//! failed back. Each
//! recovered instance's volumes hold the recovery point's data (the lab
//! keeps volume data in sparse files), the old primary is stopped and
//! tagged with the fencing epoch, Route 53's weighted record points at the
//! new primary, and no mutating call is repeated for one idempotency key
//! beyond what each cycle asks. On SQLite and PostgreSQL.
//!
//! Needs moto (`lab/fidelity/aws-requirements.txt` in `REBOUND_PYTHON`'s
//! environment); skipped without it unless `REBOUND_REQUIRE_PYTHON=1`.
//! `cargo xtask build-plugins`, then
//! `cargo test -p rebound-engine --test aws_round_trip_test`.

#[path = "support/aws.rs"]
mod aws;

#[path = "support/cross.rs"]
mod cross;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws::{instances, texts};
use rebound_domain::{PlanDocument, PlanState, Workflow};
use rebound_engine::{BoundSite, Outcome, PluginSteps, WORKLOAD_LABEL};
use rebound_lab::{AwsOptions, AwsSite};
use rebound_store::Store;

const EAST: &str = "aws-east";
const WEST: &str = "aws-west";
const MIB: u64 = 1 << 20;

struct Lab {
    site: AwsSite,
    steps: Arc<PluginSteps>,
    /// Seeded instance id → name.
    names: HashMap<String, String>,
}

fn region(lab: &AwsSite, site: &str) -> String {
    lab.regions()[usize::from(site == WEST)].clone()
}

async fn query(site: &AwsSite, region: &str, params: &[(&str, &str)]) -> String {
    site.query(region, "ec2", params).await.expect("query")
}

async fn lab(store: &Store) -> Option<Lab> {
    let site = AwsSite::start_or_skip(AwsOptions {
        gib: MIB,
        snapshot_latency: Duration::from_millis(100),
        copy_latency: Duration::from_millis(150),
        dns_latency: Duration::from_millis(100),
        ..AwsOptions::default()
    })
    .await?;
    let runtime = Arc::new(rebound_runtime::testing::runtime());
    let plugin = rebound_runtime::testing::load(&runtime, "aws").await;
    let grant = |name: &str| aws::grant(&site, name, &region(&site, name));
    let sites = [EAST, WEST]
        .iter()
        .map(|s| {
            (
                (*s).to_owned(),
                BoundSite {
                    plugin: plugin.clone(),
                    grant: grant(s),
                },
            )
        })
        .collect();
    let steps = Arc::new(PluginSteps::new(runtime, store.clone(), sites));
    let east = region(&site, EAST);
    let mut names = HashMap::new();
    for name in ["web-1", "db-1"] {
        let found = instances(&site, &east, &[("tag:Name", name)]).await;
        names.insert(found[0].0.clone(), name.to_owned());
    }
    Some(Lab { site, steps, names })
}

async fn plan(lab: &Lab) -> PlanDocument {
    let id = |name: &str| {
        lab.names
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(id, _)| id.clone())
            .expect("workload")
    };
    // Each subnet of the east region maps to the west one in the same zone.
    let subnets = |site: &str| {
        let region = region(&lab.site, site);
        async move {
            let xml = query(&lab.site, &region, &[("Action", "DescribeSubnets")]).await;
            xml.split("<item>")
                .skip(1)
                .filter_map(|i| {
                    let zone = texts(i, "availabilityZone").first()?.chars().last()?;
                    Some((zone, texts(i, "subnetId").first()?.to_string()))
                })
                .collect::<HashMap<char, String>>()
        }
    };
    let (east, west) = (subnets(EAST).await, subnets(WEST).await);
    let mapping: String = east
        .iter()
        .filter_map(|(zone, subnet)| {
            Some(format!(
                "  - {{ source: {subnet}, target: {} }}\n",
                west.get(zone)?
            ))
        })
        .collect();
    PlanDocument::from_yaml(&format!(
        r#"
name: shop
source: {EAST}
target: {WEST}
workloads:
  - id: {db}
  - id: {web}
    depends_on: [{db}]
replication: {{ mode: native, interval: 5m, retention: 2 }}
objectives:
  failover: {{ rto: 30m, rpo: 15m }}
  failback: {{ rto: 2h, rpo: 0s }}
network_mapping:
{mapping}redirect:
  target: {{ kind: dns_record, zone: shop.example.com., name: www.shop.example.com., record_type: A, ttl: 60 }}
  canary: [50, 100]
"#,
        db = id("db-1"),
        web = id("web-1"),
    ))
    .expect("plan")
}

async fn run(store: &Store, lab: &Lab, workflow: Workflow) -> String {
    let (run, outcome) = cross::finish(store, &lab.steps, "shop", workflow).await;
    assert_eq!(outcome, Outcome::Succeeded, "{workflow}");
    run
}

/// The running incarnation of plan workload `workload` on `site`:
/// `(instance id, volume ids)`.
async fn serving(lab: &Lab, site: &str, workload: &str) -> (String, Vec<String>) {
    let region = region(&lab.site, site);
    let tag = format!("tag:{WORKLOAD_LABEL}");
    let found: Vec<_> = instances(&lab.site, &region, &[(&tag, workload)])
        .await
        .into_iter()
        .filter(|(_, state, _)| state == "running")
        .collect();
    assert_eq!(found.len(), 1, "{workload} on {site}: {found:?}");
    let (id, _, volumes) = found.into_iter().next().expect("one");
    (id, volumes)
}

fn data(lab: &Lab, volume: &str) -> Vec<u8> {
    lab.site.disks().read(volume).expect("volume data")
}

async fn aws_round_trip(store: Store) {
    let Some(lab) = lab(&store).await else {
        return;
    };
    let plan = plan(&lab).await;
    lab.steps.check_feasible(&plan).await.expect("feasible");
    store.put_plan(&plan, "operator").await.expect("plan");
    let east = region(&lab.site, EAST);

    // A cycle: snapshots in us-east-1, copied to us-west-2.
    run(&store, &lab, Workflow::Replication).await;
    let originals: HashMap<String, Vec<String>> = {
        let mut out = HashMap::new();
        for id in lab.names.keys() {
            let found = instances(&lab.site, &east, &[("instance-id", id)]).await;
            out.insert(id.clone(), found[0].2.clone());
        }
        out
    };
    let at_cycle: HashMap<String, Vec<Vec<u8>>> = originals
        .iter()
        .map(|(id, vols)| (id.clone(), vols.iter().map(|v| data(&lab, v)).collect()))
        .collect();

    // Written after the cycle: lost on the unplanned failover (the RPO).
    let web = lab
        .names
        .iter()
        .find(|(_, n)| *n == "web-1")
        .map(|(id, _)| id.clone())
        .expect("web");
    lab.site
        .disks()
        .write(&originals[&web][0], 3 * MIB, b"written after the cycle")
        .expect("write");
    run(&store, &lab, Workflow::Failover).await;
    let mut on_west = HashMap::new();
    for (id, name) in &lab.names {
        let (instance, volumes) = serving(&lab, WEST, id).await;
        let restored: Vec<Vec<u8>> = volumes.iter().map(|v| data(&lab, v)).collect();
        assert_eq!(
            restored, at_cycle[id],
            "{name}: the recovery point's data, volume for volume"
        );
        // The old primary is stopped and carries the fencing epoch.
        let old = instances(&lab.site, &east, &[("instance-id", id)]).await;
        assert_eq!(old[0].1, "stopped", "{name} fenced");
        let tags = query(
            &lab.site,
            &east,
            &[
                ("Action", "DescribeTags"),
                ("Filter.1.Name", "resource-id"),
                ("Filter.1.Value.1", id),
            ],
        )
        .await;
        assert!(
            tags.contains("<key>rebound:fenced</key>") && tags.contains("<value>true</value>"),
            "{tags}"
        );
        on_west.insert(id.clone(), (instance, volumes));
    }
    assert_eq!(
        store.plan("shop").await.expect("plan").lifecycle.state,
        PlanState::FailedOver
    );

    // Writes on the new primary travel back with reprotect and failback.
    let (_, web_west) = &on_west[&web];
    lab.site
        .disks()
        .write(&web_west[0], 5 * MIB, b"written in us-west-2")
        .expect("write");
    run(&store, &lab, Workflow::Reprotect).await;
    assert_eq!(
        store.plan("shop").await.expect("plan").lifecycle.state,
        PlanState::ReadyForFailback
    );

    // A round-trip drill while ready for failback: sandboxes in us-east-1
    // from the reverse copies, captured, copied to us-west-2 and recovered
    // there in sandboxes of their own. After it, both regions hold the
    // instances, volumes, AMIs and tagged snapshots they held before.
    let both = || async {
        (
            aws::holdings(&lab.site, &east).await,
            aws::holdings(&lab.site, &region(&lab.site, WEST)).await,
        )
    };
    let before = both().await;
    cross::round_trip_drill(&store, &lab.steps, &plan, WEST).await;
    assert_eq!(both().await, before, "both regions as the drill found them");
    run(&store, &lab, Workflow::Failback).await;
    for (id, name) in &lab.names {
        let (back, volumes) = serving(&lab, EAST, id).await;
        assert_ne!(&back, id, "{name}: a new incarnation in us-east-1");
        let west_data: Vec<Vec<u8>> = on_west[id].1.iter().map(|v| data(&lab, v)).collect();
        let east_data: Vec<Vec<u8>> = volumes.iter().map(|v| data(&lab, v)).collect();
        assert_eq!(
            east_data, west_data,
            "{name}: every write made in us-west-2"
        );
        let west = region(&lab.site, WEST);
        let fenced = instances(&lab.site, &west, &[("instance-id", &on_west[id].0)]).await;
        assert_eq!(fenced[0].1, "stopped", "{name}: us-west-2 fenced");
    }
    let l = store.plan("shop").await.expect("plan").lifecycle;
    assert_eq!((l.state, l.primary.as_str()), (PlanState::Protected, EAST));

    // Cycles past the retention of 2: the older points are removed in both
    // regions and forgotten by the store (the plugin reports them removed).
    for _ in 0..3 {
        run(&store, &lab, Workflow::Replication).await;
    }
    let points = store.recovery_points("shop").await.expect("points");
    let mut per: HashMap<(String, String), usize> = HashMap::new();
    for p in &points {
        *per.entry((p.site.clone(), p.workload.clone())).or_default() += 1;
    }
    assert!(
        per.values().all(|n| *n <= 2) && per.len() == 4,
        "at most 2 recorded per region and workload: {per:?}"
    );

    // No mutating call repeated within a workflow step: every instance,
    // image and copy was made once per workload and recovery.
    let effects = lab.site.effects();
    let runs = effects.get("ec2 RunInstances").copied().unwrap_or(0);
    assert_eq!(
        runs, 8,
        "two instances on failover, two in each of the drill's sandboxes, two on failback: \
         {effects:?}"
    );
    assert_eq!(
        effects.get("ec2 RegisterImage").copied(),
        Some(8),
        "{effects:?}"
    );
}

rebound_store::on_both_backends!(aws_round_trip);

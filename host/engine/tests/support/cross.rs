//! What the cross-platform round trips share: running a workflow through
//! the executor to its end, the KubeVirt site's grant, recovered VMs and
//! holdings, and comparing disk images block for block.

// Each test crate that includes this uses part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;

use rebound_domain::{Phase, PlanDocument, Workflow};
use rebound_engine::{BoundSite, Executor, ExecutorConfig, Outcome, PluginSteps, WORKLOAD_LABEL};
use rebound_lab::disk::changed_ranges;
use rebound_lab::{KubeVirtOptions, KubeVirtSite};
use rebound_runtime::SiteGrant;
use rebound_store::Store;
use serde_json::{Value, json};

pub const NS: &str = "dr";
pub const MIB: u64 = 1 << 20;

/// A round-trip drill of `plan` while it is ready for failback: the plan
/// stored with `drills.round_trip` for the run and as it was after. Checks
/// the drill succeeded, was charged to the failback phase and its way back
/// — each workload copied onto `back_to` (natively or through the data
/// mover) and recovered there again — to the failover phase, in time, and
/// that the store keeps no copy of it. Returns the drill's steps.
pub async fn round_trip_drill(
    store: &Store,
    steps: &Arc<PluginSteps>,
    plan: &PlanDocument,
    back_to: &str,
) -> Vec<rebound_store::StepRecord> {
    let mut round_trip = plan.clone();
    round_trip.drills.round_trip = true;
    store.put_plan(&round_trip, "operator").await.expect("plan");
    let (drill, outcome) = finish(store, steps, &plan.name, Workflow::Drill).await;
    store.put_plan(plan, "operator").await.expect("plan");
    assert_eq!(outcome, Outcome::Succeeded);
    let report = rebound_engine::report(store, &drill).await.expect("report");
    let back = report.return_leg.expect("the way back");
    assert_eq!(
        (report.phase, back.phase, back.rto_met),
        (Phase::Failback, Phase::Failover, Some(true))
    );
    let done = store.steps(&drill).await.expect("steps");
    let way_back = |actions: &[&str], field: &str| -> Vec<&Value> {
        done.iter()
            .filter(|s| s.input["leg"] == "return")
            .filter(|s| actions.iter().any(|a| s.input["action"] == *a))
            .map(|s| &s.input[field])
            .collect()
    };
    let workloads = plan.workloads.len();
    assert_eq!(
        way_back(&["replicate", "transfer"], "to"),
        vec![&json!(back_to); workloads],
        "each workload copied back"
    );
    assert_eq!(
        way_back(&["materialize"], "site"),
        vec![&json!(back_to); workloads],
        "each workload recovered again"
    );
    let kept = store.drill_points(&drill).await.expect("drill's");
    assert!(kept.is_empty(), "{kept:?}");
    done
}

/// What the cluster holds in [`NS`], by name: its VMs, volumes (PVCs and
/// DataVolumes), VM snapshots and their contents, and volume replications —
/// what a drill must leave as it found it.
pub fn kubevirt_holdings(site: &KubeVirtSite) -> [Vec<String>; 6] {
    [
        "virtualmachines",
        "persistentvolumeclaims",
        "datavolumes",
        "virtualmachinesnapshots",
        "virtualmachinesnapshotcontents",
        "volumereplications",
    ]
    .map(|kind| {
        let mut names: Vec<String> = site
            .list(kind, NS)
            .iter()
            .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        names
    })
}

/// The KubeVirt simulator the round trips fail over to: namespace [`NS`],
/// 30 ms per operation.
pub async fn kubevirt_site() -> KubeVirtSite {
    KubeVirtSite::start(KubeVirtOptions {
        latency: Duration::from_millis(30),
        objects: vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})],
        ..KubeVirtOptions::default()
    })
    .await
    .expect("KubeVirt simulator")
}

/// The engine's steps over `sites`: `(site name, plugin name, grant)`,
/// each plugin loaded from the built plugins.
pub async fn bind(store: &Store, sites: Vec<(&str, &str, SiteGrant)>) -> Arc<PluginSteps> {
    let runtime = Arc::new(rebound_runtime::testing::runtime());
    let mut bound = HashMap::new();
    for (site, plugin, grant) in sites {
        let plugin = rebound_runtime::testing::load(&runtime, plugin).await;
        bound.insert(site.to_owned(), BoundSite { plugin, grant });
    }
    Arc::new(PluginSteps::new(runtime, store.clone(), bound))
}

/// Plan `shop` of workloads `db` and `web` (which depends on `db`) from
/// `source` to `target` through the data mover, with the round trips'
/// objectives and `network_mapping` lines (`{ source: a, target: b }`).
pub fn shop_plan(
    source: &str,
    target: &str,
    db: &str,
    web: &str,
    network_mapping: &[(&str, &str)],
) -> PlanDocument {
    let mapping: String = network_mapping
        .iter()
        .map(|(s, t)| format!("  - {{ source: {s}, target: {t} }}\n"))
        .collect();
    let mapping = if mapping.is_empty() {
        String::new()
    } else {
        format!("network_mapping:\n{mapping}")
    };
    PlanDocument::from_yaml(&format!(
        r#"
name: shop
source: {source}
target: {target}
workloads:
  - id: {db}
  - id: {web}
    depends_on: [{db}]
replication: {{ mode: data_mover, interval: 5m, retention: 2 }}
objectives:
  failover: {{ rto: 30m, rpo: 15m }}
  failback: {{ rto: 2h, rpo: 0s }}
{mapping}"#
    ))
    .expect("plan")
}

/// Run `workflow` of plan `plan` to its end (approving it when it asks):
/// the run's id and how it ended.
pub async fn finish(
    store: &Store,
    steps: &Arc<PluginSteps>,
    plan: &str,
    workflow: Workflow,
) -> (String, Outcome) {
    let run = rebound_engine::trigger(store, plan, workflow, None, "operator")
        .await
        .unwrap_or_else(|e| panic!("start {workflow}: {e}"));
    let executor = Executor::new(
        store.clone(),
        steps.clone(),
        ExecutorConfig {
            poll_interval: Duration::from_millis(20),
            ..ExecutorConfig::new("host-a")
        },
    );
    let mut outcome = executor.work_once().await.expect("work").expect("run").1;
    if let Outcome::WaitingApproval { .. } = outcome {
        store.approve(&run.id, "approver").await.expect("approve");
        outcome = executor.work_once().await.expect("work").expect("run").1;
    }
    (run.id, outcome)
}

/// Run `workflow` of plan `plan` to its end, which must be success; the
/// outputs of its transfer steps.
pub async fn run(
    store: &Store,
    steps: &Arc<PluginSteps>,
    plan: &str,
    workflow: Workflow,
) -> Vec<Value> {
    let (run, outcome) = finish(store, steps, plan, workflow).await;
    if outcome != Outcome::Succeeded {
        let steps = store.steps(&run).await.expect("steps");
        let failed: Vec<_> = steps
            .iter()
            .filter(|s| s.error.is_some())
            .map(|s| (&s.name, &s.error))
            .collect();
        panic!("{workflow}: {outcome:?}; failed steps: {failed:#?}");
    }
    store
        .steps(&run)
        .await
        .expect("steps")
        .into_iter()
        .filter(|s| s.input["action"] == "transfer")
        .map(|s| s.output.expect("a finished transfer has an output"))
        .collect()
}

/// Fail when a simulator served a side effect more than once (its
/// `effects()`, counted by request).
pub fn assert_no_repeats<N: Copy + TryInto<u64>>(
    site: &str,
    effects: impl IntoIterator<Item = (String, N)>,
) {
    let repeated: Vec<(String, u64)> = effects
        .into_iter()
        .map(|(k, n)| (k, n.try_into().unwrap_or(u64::MAX)))
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(repeated.is_empty(), "{site} repeated: {repeated:?}");
}

/// Bytes the transfer steps moved.
pub fn moved(outputs: &[Value]) -> u64 {
    outputs
        .iter()
        .map(|o| o["bytes_moved"].as_u64().expect("bytes_moved"))
        .sum()
}

pub fn kubevirt_grant(site: &KubeVirtSite) -> SiteGrant {
    SiteGrant::new("kubevirt")
        .config("endpoint", &site.endpoint())
        .config("namespace", NS)
        .secret("token", &site.token)
        .grant(&site.endpoint())
        .expect("grant")
        .ca(&site.ca_pem)
}

/// The running KubeVirt VM serving `workload` (newest epoch), if any.
pub fn serving_kubevirt(site: &KubeVirtSite, workload: &str) -> Option<String> {
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

/// The image files of a KubeVirt VM's volumes, in volume order.
pub fn vm_disks(site: &KubeVirtSite, vm: &str) -> Vec<PathBuf> {
    site.vm_pvcs(NS, vm)
        .iter()
        .map(|pvc| site.pvc_path(NS, pvc).expect("path"))
        .collect()
}

/// Whether two sets of images hold the same bytes, block for block.
pub fn same(a: &[PathBuf], b: &[PathBuf]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| {
            changed_ranges(a, b, MIB)
                .unwrap_or_else(|e| panic!("compare {}: {e}", a.display()))
                .is_empty()
        })
}

/// Write into a disk as its guest would (straight into the image).
pub fn write(path: &PathBuf, offset: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open disk");
    file.write_all_at(data, offset).expect("write");
}

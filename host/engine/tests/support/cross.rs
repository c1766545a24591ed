//! What the cross-platform round trips share: running a workflow through
//! the executor to its end, the KubeVirt site's grant and recovered VMs,
//! and comparing disk images block for block.

// Each test crate that includes this uses part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rebound_domain::Workflow;
use rebound_engine::{Executor, ExecutorConfig, Outcome, PluginSteps, WORKLOAD_LABEL};
use rebound_lab::KubeVirtSite;
use rebound_lab::disk::changed_ranges;
use rebound_runtime::SiteGrant;
use rebound_store::Store;
use serde_json::Value;

pub const NS: &str = "dr";
pub const MIB: u64 = 1 << 20;

/// Run `workflow` of plan `plan` to its end (approving it when it asks);
/// the outputs of its transfer steps.
pub async fn run(
    store: &Store,
    steps: &Arc<PluginSteps>,
    plan: &str,
    workflow: Workflow,
) -> Vec<Value> {
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
    if outcome != Outcome::Succeeded {
        let steps = store.steps(&run.id).await.expect("steps");
        let failed: Vec<_> = steps
            .iter()
            .filter(|s| s.error.is_some())
            .map(|s| (&s.name, &s.error))
            .collect();
        panic!("{workflow}: {outcome:?}; failed steps: {failed:#?}");
    }
    store
        .steps(&run.id)
        .await
        .expect("steps")
        .into_iter()
        .filter(|s| s.input["action"] == "transfer")
        .map(|s| s.output.expect("a finished transfer has an output"))
        .collect()
}

/// Bytes the transfer steps moved.
pub fn moved(outputs: &[Value]) -> u64 {
    outputs
        .iter()
        .map(|o| o["bytes_moved"].as_u64().expect("bytes_moved"))
        .sum()
}

pub fn kubevirt_grant(site: &KubeVirtSite) -> SiteGrant {
    let mut grant = SiteGrant::new("kubevirt")
        .config("endpoint", &site.endpoint())
        .config("namespace", NS)
        .secret("token", &site.token)
        .grant(&site.endpoint())
        .expect("grant");
    grant.ca_pem = Some(site.ca_pem.clone());
    grant
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

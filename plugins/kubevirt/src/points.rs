//! Recovery points: VirtualMachineSnapshots. KubeVirt freezes a running
//! guest through its agent during the snapshot, so the consistency reached
//! is read from the snapshot's `indications`.

use rebound_plugin_sdk::{
    Consistency, DiskCopy, Operation, OperationKind, OperationState, ProviderError, RecoveryPoint,
    Running, SnapshotRequest, info, site,
};
use serde_json::{Value, json};

use crate::kube::Cluster;
use crate::names::{self, KEY_ANNOTATION};
use crate::spec;

const CONSISTENCY_ANNOTATION: &str = "rebound.io/consistency";
/// When the snapshot was asked for, in milliseconds: Kubernetes times have
/// whole seconds, too coarse to order recovery points taken within one.
const REQUESTED_ANNOTATION: &str = "rebound.io/requested-at-ms";

pub fn snapshot(req: &SnapshotRequest) -> Result<Operation, ProviderError> {
    let cluster = Cluster::of(&req.site)?;
    let vm = format!("{}/{}", cluster.vms(), req.workload_id);
    if cluster.get_opt(&vm)?.is_none() {
        return Err(ProviderError::NotFound(format!(
            "no VirtualMachine '{}' in namespace '{}' of site '{}'",
            req.workload_id, cluster.namespace, req.site
        )));
    }
    let name = names::derived("rebound-snap", &req.key);
    let consistency = match req.consistency {
        Consistency::Crash => "crash",
        Consistency::Application => "application",
    };
    let body = json!({
        "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
        "metadata": {"name": name,
                     "annotations": {KEY_ANNOTATION: req.key, CONSISTENCY_ANNOTATION: consistency,
                                     REQUESTED_ANNOTATION: site::now_ms().to_string()}},
        "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": req.workload_id},
                 "failureDeadline": "5m"},
    });
    cluster.create(&cluster.snapshots(), &body)?;
    info!("snapshot requested"; "snapshot" => name, "workload" => req.workload_id);
    Ok(Operation {
        kind: OperationKind::Snapshot,
        site: req.site.clone(),
        id: name,
    })
}

pub fn status(cluster: &Cluster, name: &str) -> Result<OperationState, ProviderError> {
    let snapshot = cluster.get(&format!("{}/{name}", cluster.snapshots()))?;
    let status = &snapshot["status"];
    match status["phase"].as_str() {
        Some("Succeeded") if status["readyToUse"] == true => {}
        Some("Failed") => {
            let why = status["error"]["message"]
                .as_str()
                .or_else(|| {
                    status["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find_map(|c| c["message"].as_str())
                })
                .unwrap_or("no reason given");
            return Ok(OperationState::Failed(ProviderError::ProviderFailed(
                format!("VirtualMachineSnapshot '{name}' failed: {why}"),
            )));
        }
        phase => {
            return Ok(OperationState::Running(Running {
                percent: None,
                detail: phase.unwrap_or("Pending").to_owned(),
            }));
        }
    }
    let indications: Vec<&str> = status["indications"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    // Quiesced by the guest agent, or taken of a stopped VM.
    let app_consistent = indications.contains(&"GuestAgent") || !indications.contains(&"Online");
    let wanted = snapshot["metadata"]["annotations"][CONSISTENCY_ANNOTATION] == "application";
    if wanted && !app_consistent {
        return Ok(OperationState::Failed(ProviderError::ProviderFailed(
            format!(
                "VirtualMachineSnapshot '{name}' is only crash-consistent: the VM runs without a \
             guest agent (indications {indications:?}); install qemu-guest-agent in the guest"
            ),
        )));
    }
    Ok(OperationState::Succeeded(
        rebound_plugin_sdk::Outcome::RecoveryPoint(recovery_point(
            cluster,
            &snapshot,
            if app_consistent && wanted {
                Consistency::Application
            } else {
                Consistency::Crash
            },
        )?),
    ))
}

/// The content of a ready snapshot: its volume backups and the VM's spec.
pub fn content(cluster: &Cluster, snapshot: &Value) -> Result<Value, ProviderError> {
    let name = snapshot["status"]["virtualMachineSnapshotContentName"]
        .as_str()
        .ok_or_else(|| {
            ProviderError::ProviderFailed(format!(
                "VirtualMachineSnapshot '{}' names no content",
                snapshot["metadata"]["name"]
            ))
        })?;
    cluster.get(&format!("{}/{name}", cluster.snapshot_contents()))
}

/// The PVCs a snapshot holds: `(claim, volume snapshot, size)`.
pub fn backups(content: &Value) -> Vec<(String, String, u64)> {
    content["spec"]["volumeBackups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| {
            let pvc = &b["persistentVolumeClaim"];
            let size = pvc["spec"]["resources"]["requests"]["storage"]
                .as_str()
                .and_then(names::quantity)?;
            Some((
                pvc["metadata"]["name"].as_str()?.to_owned(),
                b["volumeSnapshotName"].as_str()?.to_owned(),
                size,
            ))
        })
        .collect()
}

fn recovery_point(
    cluster: &Cluster,
    snapshot: &Value,
    consistency: Consistency,
) -> Result<RecoveryPoint, ProviderError> {
    let content = content(cluster, snapshot)?;
    let backups = backups(&content);
    let sizes = backups
        .iter()
        .map(|(claim, _, size)| (claim.clone(), *size))
        .collect();
    let vm = &content["spec"]["source"]["virtualMachine"];
    // The data was captured at `creationTime` (whole seconds) and not
    // before the request: the later of the two bounds it to the millisecond.
    let created = snapshot["status"]["creationTime"]
        .as_str()
        .or_else(|| snapshot["metadata"]["creationTimestamp"].as_str())
        .and_then(names::rfc3339_ms)
        .unwrap_or(0);
    let requested = snapshot["metadata"]["annotations"][REQUESTED_ANNOTATION]
        .as_str()
        .and_then(|ms| ms.parse::<u64>().ok())
        .unwrap_or(0);
    let captured = created.max(requested);
    Ok(RecoveryPoint {
        id: snapshot["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        site: cluster.site.clone(),
        workload_id: snapshot["spec"]["source"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        captured_at: captured,
        consistency,
        disks: backups
            .into_iter()
            .map(|(claim, volume_snapshot, size)| DiskCopy {
                disk_id: claim,
                copy_id: volume_snapshot,
                size_bytes: size,
            })
            .collect(),
        spec: spec::vm_spec(vm, &sizes, None),
    })
}

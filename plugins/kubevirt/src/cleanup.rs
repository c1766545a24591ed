//! Cleanup: drill sandboxes (their VMs; the DataVolumes they own go with
//! them), recovery points past retention (snapshots with the point-in-time
//! PVCs replicating them, replicas' mirrored PVCs, or imported volumes —
//! one a VM uses directly stays, as that VM's disk), and transfer endpoints
//! (exports). It finishes within the
//! call; the handle lists what went.

use rebound_plugin_sdk::{
    CleanupReport, CleanupRequest, CleanupScope, Operation, OperationKind, OperationState, Outcome,
    ProviderError, info,
};

use crate::kube::Cluster;
use crate::names;
use crate::replication;
use crate::spec;
use crate::transfer::EXPORT_PREFIX;

/// The label the host puts on a drill's workloads (its sandbox id).
const DRILL_LABEL: &str = "rebound/drill";

pub fn cleanup(req: &CleanupRequest) -> Result<Operation, ProviderError> {
    let cluster = Cluster::of(&req.site)?;
    let removed = match &req.scope {
        CleanupScope::Drill(sandbox) => {
            if !names::label_value_ok(sandbox) {
                return Err(ProviderError::InvalidRequest(format!(
                    "drill sandbox '{sandbox}' is not a label value; nothing was labelled with it"
                )));
            }
            let selector = format!("{DRILL_LABEL}={sandbox}");
            let vms = cluster.list(&cluster.vms(), Some(selector.as_str()))?;
            let mut removed = Vec::new();
            for vm in vms {
                let name = vm["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                cluster.delete(&format!("{}/{name}", cluster.vms()))?;
                removed.push(name);
            }
            removed
        }
        CleanupScope::RecoveryPoints(ids) => {
            for id in ids {
                if replication::is_replica(id) {
                    replication::remove_replica(&cluster, id)?;
                } else {
                    let snapshot = cluster.delete(&format!("{}/{id}", cluster.snapshots()))?;
                    replication::remove_replication_of(&cluster, id)?;
                    if !snapshot {
                        remove_volume(&cluster, id)?;
                    }
                }
            }
            ids.clone()
        }
        // Imports leave their volume (it is the copy); only exports are
        // served objects to remove.
        CleanupScope::Transfers(ids) => {
            for id in ids.iter().filter(|id| id.starts_with(EXPORT_PREFIX)) {
                cluster.delete(&format!("{}/{id}", cluster.exports()))?;
            }
            ids.clone()
        }
    };
    info!("cleaned up"; "site" => req.site, "removed" => removed.len());
    Ok(Operation {
        kind: OperationKind::Cleanup,
        site: req.site.clone(),
        id: removed.join(","),
    })
}

/// Delete an imported volume (DataVolume) unless a VM uses it directly —
/// then it is that VM's disk, no longer a recovery point: it stays.
fn remove_volume(cluster: &Cluster, id: &str) -> Result<(), ProviderError> {
    let used_by = cluster.list(&cluster.vms(), None)?.into_iter().find(|vm| {
        spec::volume_claims(&vm["spec"]["template"]["spec"])
            .iter()
            .any(|(_, claim)| claim == id)
    });
    if let Some(vm) = used_by {
        info!("volume kept: a VM uses it"; "volume" => id, "vm" => vm["metadata"]["name"].as_str().unwrap_or_default());
        return Ok(());
    }
    cluster.delete(&format!("{}/{id}", cluster.data_volumes()))?;
    Ok(())
}

pub fn status(id: &str) -> OperationState {
    OperationState::Succeeded(Outcome::Cleaned(CleanupReport {
        removed: id
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    }))
}

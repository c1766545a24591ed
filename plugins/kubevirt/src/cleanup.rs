//! Cleanup: drill sandboxes (their VMs; the DataVolumes they own go with
//! them), recovery points past retention (snapshots with the point-in-time
//! PVCs replicating them, replicas' mirrored PVCs, or imported volumes —
//! one a VM uses directly stays, as that VM's disk), transfer endpoints
//! (exports), a failed run's standby VMs (only VMs `materialize` made, with
//! the DataVolumes and PVCs they own; what those were cloned or restored
//! from stays) and abandoned imports (their DataVolumes and PVCs, which
//! CDI's upload endpoint served). It finishes within the call; the handle
//! lists what went.

use rebound_plugin_sdk::{
    CleanupReport, CleanupRequest, CleanupScope, Operation, OperationKind, OperationState, Outcome,
    ProviderError, info,
};
use serde_json::Value;

use crate::kube::Cluster;
use crate::names;
use crate::replication;
use crate::spec;
use crate::transfer::{self, EXPORT_PREFIX, IMPORT_LABEL};

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
        CleanupScope::Workloads(ids) => {
            remove_workloads(&cluster, ids)?;
            ids.clone()
        }
        CleanupScope::DiscardedImports(ids) => {
            discard_imports(&cluster, ids)?;
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

/// The name of an object as the API returned it.
fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

/// The VM of `vms` whose volumes include the claim `volume`, if any.
fn user_of<'a>(vms: &'a [Value], volume: &str) -> Option<&'a Value> {
    vms.iter().find(|vm| {
        spec::volume_claims(&vm["spec"]["template"]["spec"])
            .iter()
            .any(|(_, claim)| claim == volume)
    })
}

/// Whether `object` names `owner` (by uid) among its owners.
fn owned_by(object: &Value, owner: &Value) -> bool {
    let uid = &owner["metadata"]["uid"];
    uid.is_string()
        && object["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["uid"] == *uid)
}

/// Delete an imported volume (DataVolume) unless a VM uses it directly —
/// then it is that VM's disk, no longer a recovery point: it stays.
fn remove_volume(cluster: &Cluster, id: &str) -> Result<(), ProviderError> {
    let vms = cluster.list(&cluster.vms(), None)?;
    if let Some(vm) = user_of(&vms, id) {
        info!("volume kept: a VM uses it"; "volume" => id, "vm" => name(vm));
        return Ok(());
    }
    cluster.delete(&format!("{}/{id}", cluster.data_volumes()))?;
    Ok(())
}

/// A failed run's standby VMs. Every id must name a VM `materialize` made
/// (or nothing: already gone); all are checked before any goes. A VM goes
/// with the DataVolumes it owns — those of its templates, the clones and
/// restores `materialize` made for it — and their PVCs, deleted here rather
/// than left to the garbage collector so they are gone with the cleanup.
/// What they were cloned or restored from (imported volumes, promoted
/// mirrored PVCs, a snapshot's volume snapshots) no VM owns: it stays.
fn remove_workloads(cluster: &Cluster, ids: &[String]) -> Result<(), ProviderError> {
    let mut vms = Vec::new();
    for id in ids {
        let not_materialized = || {
            ProviderError::InvalidRequest(format!(
                "workload '{id}' on site '{}' was not materialized by Rebound (it lacks the \
                 marks materialize sets); nothing was removed",
                cluster.site
            ))
        };
        // What is not a name materialize derives was never one of its VMs
        // (and has no business in an API path).
        if !names::dns_label_ok(id) {
            return Err(not_materialized());
        }
        match cluster.get_opt(&format!("{}/{id}", cluster.vms()))? {
            None => {}
            Some(vm) if spec::materialized(&vm) => vms.push(vm),
            Some(_) => return Err(not_materialized()),
        }
    }
    if vms.is_empty() {
        return Ok(());
    }
    let data_volumes = cluster.list(&cluster.data_volumes(), None)?;
    let pvcs = cluster.list(&cluster.pvcs(), None)?;
    for vm in &vms {
        let disks: Vec<&Value> = data_volumes.iter().filter(|dv| owned_by(dv, vm)).collect();
        let claims = pvcs
            .iter()
            .filter(|pvc| disks.iter().any(|dv| owned_by(pvc, dv)));
        cluster.delete(&format!("{}/{}", cluster.vms(), name(vm)))?;
        for dv in &disks {
            cluster.delete(&format!("{}/{}", cluster.data_volumes(), name(dv)))?;
        }
        for pvc in claims {
            cluster.delete(&format!("{}/{}", cluster.pvcs(), name(pvc)))?;
        }
        info!("standby VM removed"; "vm" => name(vm), "volumes" => disks.len());
    }
    Ok(())
}

/// Abandoned imports, by the DataVolume each is: it is deleted with its
/// PVC, and with the PVC goes the upload endpoint CDI served for it (an
/// upload token opens one PVC; there is nothing else to release). Nothing
/// `status` would still do is done: no upload token is requested. An id
/// naming a DataVolume `import` did not make is refused, and one whose
/// volume a VM uses is a conflict, all checked before anything goes; an id
/// naming nothing is already gone.
fn discard_imports(cluster: &Cluster, ids: &[String]) -> Result<(), ProviderError> {
    let mut found = Vec::new();
    for id in ids {
        let not_an_import = || {
            ProviderError::InvalidRequest(format!(
                "'{id}' is no import-disk operation of Rebound on site '{}' (no DataVolume of \
                 that name carries its marks); nothing was removed",
                cluster.site
            ))
        };
        if !names::dns_label_ok(id) {
            return Err(not_an_import());
        }
        let dv = cluster.get_opt(&format!("{}/{id}", cluster.data_volumes()))?;
        if dv.as_ref().is_some_and(|dv| !transfer::is_import(dv)) {
            return Err(not_an_import());
        }
        // The import's PVC is the DataVolume's; once that is gone, the
        // label CDI passed on still tells.
        let pvc = cluster
            .get_opt(&format!("{}/{id}", cluster.pvcs()))?
            .filter(|pvc| match &dv {
                Some(dv) => owned_by(pvc, dv),
                None => pvc["metadata"]["labels"][IMPORT_LABEL] == "true",
            });
        if dv.is_some() || pvc.is_some() {
            found.push((id, dv.is_some(), pvc.is_some()));
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    let vms = cluster.list(&cluster.vms(), None)?;
    for (id, _, _) in &found {
        if let Some(vm) = user_of(&vms, id) {
            return Err(ProviderError::Conflict(format!(
                "the volume of import '{id}' on site '{}' is a disk of VirtualMachine '{}', so \
                 it is not discarded; nothing was removed",
                cluster.site,
                name(vm)
            )));
        }
    }
    for (id, dv, pvc) in found {
        if dv {
            cluster.delete(&format!("{}/{id}", cluster.data_volumes()))?;
        }
        if pvc {
            cluster.delete(&format!("{}/{id}", cluster.pvcs()))?;
        }
        info!("abandoned import discarded"; "datavolume" => id);
    }
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

//! Native replication through CSI-addons VolumeReplication, the way
//! Ramen / OpenShift Data Foundation Regional-DR does it over Ceph RBD
//! mirroring: the storage of two clusters mirrors a PVC to the peer
//! cluster, into a PVC of the same namespace and name.
//!
//! `replicate` restores each volume snapshot of a recovery point (a
//! VirtualMachineSnapshot) into a point-in-time PVC on the source, named
//! from the call's key, and puts a VolumeReplication (`primary`) on each.
//! Its `status` finishes once every VolumeReplication has synced after it
//! was created (`lastSyncTime`) and the mirrored PVC exists on the target;
//! it then demotes the source side (`secondary`): the copy is final, and
//! the target may promote it without a split brain. The recovery point at
//! the target is the set of mirrored PVCs, labelled with its id.
//!
//! `materialize` of such a point promotes each mirrored PVC (a
//! VolumeReplication `primary` on the target), marks it promoted and
//! removes that VolumeReplication, so the promoted copy does not mirror
//! back onto the old primary's; the VM's DataVolumes then clone it.

use rebound_plugin_sdk::retry::{RetryPolicy, retry};
use rebound_plugin_sdk::{
    Operation, OperationKind, OperationState, Outcome, ProviderError, ReplicateRequest, Running,
    VmSpec, info, site,
};
use serde_json::{Value, json};

use crate::kube::Cluster;
use crate::names::{self, KEY_ANNOTATION};
use crate::points;

/// Prefix of the recovery points native replication makes at a target.
pub const REPLICA_PREFIX: &str = "rebound-rep";
/// On point-in-time PVCs, their VolumeReplications and the mirrored PVCs:
/// the recovery point (at the target) they make up.
const REPLICA_LABEL: &str = "rebound.io/replica";
/// The VirtualMachineSnapshot a replica copies.
const SOURCE_LABEL: &str = "rebound.io/replica-of";
/// The PVC of the protected VM a point-in-time PVC copies.
const DISK_LABEL: &str = "rebound.io/disk";
/// On a mirrored PVC the target promoted.
const PROMOTED_ANNOTATION: &str = "rebound.io/promoted";

/// Whether a recovery point id names a replica.
pub fn is_replica(id: &str) -> bool {
    id.starts_with(REPLICA_PREFIX)
}

fn class(site_name: &str) -> Result<String, ProviderError> {
    site::get(site_name, "volume_replication_class").ok_or_else(|| {
        ProviderError::Unsupported(format!(
            "site '{site_name}' names no volume_replication_class; set it to the \
             VolumeReplicationClass of the storage mirrored to the other cluster, or use \
             replication.mode: data_mover"
        ))
    })
}

fn volume_replications(cluster: &Cluster) -> String {
    crate::kube::group(
        "replication.storage.openshift.io/v1alpha1",
        &cluster.namespace,
        "volumereplications",
    )
}

fn volume_replication(name: &str, class: &str, key: &str, labels: &Value) -> Value {
    json!({
        "apiVersion": "replication.storage.openshift.io/v1alpha1", "kind": "VolumeReplication",
        "metadata": {"name": name, "labels": labels, "annotations": {KEY_ANNOTATION: key}},
        "spec": {"volumeReplicationClass": class, "replicationState": "primary",
                 "autoResync": false,
                 "dataSource": {"apiGroup": "", "kind": "PersistentVolumeClaim", "name": name}},
    })
}

/// What a replicate operation's handle holds.
struct Handle {
    point: String,
    from: String,
    snapshot: String,
}

impl Handle {
    fn encode(&self) -> String {
        json!({"point": self.point, "from": self.from, "snapshot": self.snapshot}).to_string()
    }

    fn decode(id: &str) -> Result<Self, ProviderError> {
        let v: Value = serde_json::from_str(id).map_err(|_| {
            ProviderError::InvalidRequest(format!("'{id}' is not a replicate handle"))
        })?;
        let field = |k: &str| {
            v[k].as_str().map(str::to_owned).ok_or_else(|| {
                ProviderError::InvalidRequest(format!("replicate handle '{id}' lacks {k}"))
            })
        };
        Ok(Self {
            point: field("point")?,
            from: field("from")?,
            snapshot: field("snapshot")?,
        })
    }
}

/// The point-in-time PVC of the `i`-th volume of replica `point`.
fn pvc_name(point: &str, i: usize) -> String {
    format!("{point}-{i}")
}

pub fn replicate(req: &ReplicateRequest) -> Result<Operation, ProviderError> {
    if req.source_site == req.target_site {
        return Err(ProviderError::InvalidRequest(format!(
            "replicate from site '{}' to itself",
            req.source_site
        )));
    }
    let class = class(&req.source_site)?;
    let (source, target) = (
        Cluster::of(&req.source_site)?,
        Cluster::of(&req.target_site)?,
    );
    if source.namespace != target.namespace {
        return Err(ProviderError::Unsupported(format!(
            "VolumeReplication mirrors a PVC into the same namespace on the peer, but site '{}' \
             protects '{}' and site '{}' '{}'; use replication.mode: data_mover",
            req.source_site, source.namespace, req.target_site, target.namespace
        )));
    }
    let name = &req.recovery_point_id;
    let snapshot = source
        .get_opt(&format!("{}/{name}", source.snapshots()))?
        .ok_or_else(|| {
            ProviderError::NotFound(format!(
                "no recovery point (VirtualMachineSnapshot) '{name}' on site '{}'",
                req.source_site
            ))
        })?;
    if snapshot["status"]["readyToUse"] != true {
        return Err(ProviderError::Conflict(format!(
            "VirtualMachineSnapshot '{name}' on site '{}' is not ready to use yet",
            req.source_site
        )));
    }
    let point = names::derived(REPLICA_PREFIX, &req.key);
    for (i, (claim, volume_snapshot, size)) in
        points::backups(&points::content(&source, &snapshot)?)
            .into_iter()
            .enumerate()
    {
        let pvc = pvc_name(&point, i);
        let mut labels = json!({REPLICA_LABEL: point});
        // Object names may be longer than label values: a copy of such a
        // claim is found by its position, and the copies of such a snapshot
        // are left to the replica's own cleanup.
        if names::label_value_ok(name) {
            labels[SOURCE_LABEL] = json!(name);
        }
        if names::label_value_ok(&claim) {
            labels[DISK_LABEL] = json!(claim);
        }
        let dv = json!({
            "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
            "metadata": {"name": pvc, "labels": labels,
                         "annotations": {KEY_ANNOTATION: format!("{}/volume-{i}", req.key)}},
            "spec": {"source": {"snapshot": {"namespace": source.namespace, "name": volume_snapshot}},
                     "storage": {"accessModes": ["ReadWriteOnce"], "volumeMode": "Block",
                                 "resources": {"requests": {"storage": size.to_string()}}}},
        });
        source.create(&source.data_volumes(), &dv)?;
        let vr = volume_replication(
            &pvc,
            &class,
            &format!("{}/replication-{i}", req.key),
            &labels,
        );
        source.create(&volume_replications(&source), &vr)?;
    }
    info!("volume replication started"; "snapshot" => name, "replica" => point, "to" => req.target_site);
    Ok(Operation {
        kind: OperationKind::Replicate,
        site: req.target_site.clone(),
        id: Handle {
            point,
            from: req.source_site.clone(),
            snapshot: name.clone(),
        }
        .encode(),
    })
}

fn running(detail: String) -> OperationState {
    OperationState::Running(Running {
        percent: None,
        detail,
    })
}

/// The message of a VolumeReplication's condition of `kind` when it is
/// `status`.
fn condition<'a>(vr: &'a Value, kind: &str, status: &str) -> Option<&'a str> {
    vr["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind && c["status"] == status)
        .map(|c| c["message"].as_str().unwrap_or("no message"))
}

pub fn status(target: &Cluster, id: &str) -> Result<OperationState, ProviderError> {
    let handle = Handle::decode(id)?;
    let source = Cluster::of(&handle.from)?;
    let snapshot = source.get(&format!("{}/{}", source.snapshots(), handle.snapshot))?;
    let backups = points::backups(&points::content(&source, &snapshot)?);
    let mut demote = Vec::new();
    for i in 0..backups.len() {
        let pvc = pvc_name(&handle.point, i);
        let dv = source.get(&format!("{}/{pvc}", source.data_volumes()))?;
        match dv["status"]["phase"].as_str() {
            Some("Succeeded") => {}
            Some("Failed") => {
                return Ok(OperationState::Failed(ProviderError::ProviderFailed(
                    format!(
                        "restoring the point-in-time PVC '{pvc}' on site '{}' failed",
                        handle.from
                    ),
                )));
            }
            phase => {
                return Ok(running(format!(
                    "PVC '{pvc}' is being restored ({})",
                    phase.unwrap_or("Pending")
                )));
            }
        }
        let path = format!("{}/{pvc}", volume_replications(&source));
        let vr = source.get(&path)?;
        let demoted = vr["spec"]["replicationState"] == "secondary";
        if !demoted {
            if let Some(why) = condition(&vr, "Degraded", "True") {
                return Ok(running(format!(
                    "replication of '{pvc}' is degraded: {why}"
                )));
            }
            let created = vr["metadata"]["creationTimestamp"]
                .as_str()
                .and_then(names::rfc3339_ms);
            let synced = vr["status"]["lastSyncTime"]
                .as_str()
                .and_then(names::rfc3339_ms);
            if !matches!((created, synced), (Some(c), Some(s)) if s >= c) {
                return Ok(running(format!("waiting for the first sync of '{pvc}'")));
            }
        }
        if target
            .get_opt(&format!("{}/{pvc}", target.pvcs()))?
            .is_none()
        {
            return Ok(running(format!(
                "the mirror of '{pvc}' is not on site '{}' yet",
                target.site
            )));
        }
        if !demoted {
            demote.push(path);
        }
    }
    // The copy is final: hand the primary role over, so the target may
    // promote it while the source still runs.
    for path in demote {
        source.merge_patch(&path, &json!({"spec": {"replicationState": "secondary"}}))?;
    }
    let mut point = match points::status(&source, &handle.snapshot)? {
        OperationState::Succeeded(Outcome::RecoveryPoint(p)) => p,
        other => return Ok(other),
    };
    point.id = handle.point.clone();
    point.site = target.site.clone();
    for (i, disk) in point.disks.iter_mut().enumerate() {
        disk.copy_id = pvc_name(&handle.point, i);
    }
    info!("volume replication done"; "replica" => handle.point, "site" => target.site);
    Ok(OperationState::Succeeded(Outcome::RecoveryPoint(point)))
}

/// The CDI sources of a VM made from replica `point` on this (target)
/// site: each disk's mirrored PVC, promoted first.
pub fn promoted_sources(
    cluster: &Cluster,
    point: &str,
    key: &str,
    spec: &VmSpec,
) -> Result<Vec<Value>, ProviderError> {
    let selector = format!("{REPLICA_LABEL}={point}");
    let pvcs = cluster.list(&cluster.pvcs(), Some(&selector))?;
    if pvcs.is_empty() {
        return Err(ProviderError::NotFound(format!(
            "no mirrored PVCs of recovery point '{point}' on site '{}'",
            cluster.site
        )));
    }
    let mut sources = Vec::new();
    for (i, disk) in spec.disks.iter().enumerate() {
        let pvc = pvcs
            .iter()
            .find(|p| p["metadata"]["labels"][DISK_LABEL] == disk.id.as_str())
            .or_else(|| {
                pvcs.iter()
                    .find(|p| p["metadata"]["name"] == pvc_name(point, i).as_str())
            })
            .ok_or_else(|| {
                ProviderError::NotFound(format!(
                    "recovery point '{point}' holds no copy of disk '{}'",
                    disk.id
                ))
            })?;
        let name = pvc["metadata"]["name"].as_str().unwrap_or_default();
        if pvc["metadata"]["annotations"][PROMOTED_ANNOTATION] != "true" {
            promote(
                cluster,
                name,
                &format!("{key}/promote-{i}"),
                &pvc["metadata"]["labels"],
            )?;
        }
        sources.push(json!({"pvc": {"namespace": cluster.namespace, "name": name}}));
    }
    Ok(sources)
}

/// Promote a mirrored PVC: a VolumeReplication `primary`, waited for; then
/// the PVC is marked promoted and the VolumeReplication removed.
fn promote(cluster: &Cluster, pvc: &str, key: &str, labels: &Value) -> Result<(), ProviderError> {
    let class = class(&cluster.site)?;
    let path = format!("{}/{pvc}", volume_replications(cluster));
    cluster.create(
        &volume_replications(cluster),
        &volume_replication(pvc, &class, key, labels),
    )?;
    retry(RetryPolicy::default(), || {
        let vr = cluster.get(&path)?;
        if let Some(why) = condition(&vr, "Completed", "False") {
            return Err(ProviderError::Conflict(format!(
                "PVC '{pvc}' cannot be promoted on site '{}': {why}",
                cluster.site
            )));
        }
        if vr["status"]["state"] == "Primary" && condition(&vr, "Completed", "True").is_some() {
            Ok(())
        } else {
            Err(ProviderError::Transient(format!(
                "PVC '{pvc}' is being promoted on site '{}'",
                cluster.site
            )))
        }
    })?;
    cluster.merge_patch(
        &format!("{}/{pvc}", cluster.pvcs()),
        &json!({"metadata": {"annotations": {PROMOTED_ANNOTATION: "true"}}}),
    )?;
    cluster.delete(&path)?;
    info!("mirrored PVC promoted"; "pvc" => pvc, "site" => cluster.site);
    Ok(())
}

/// Remove what native replication left on this site under `selector`:
/// VolumeReplications first (their mirroring ends), then DataVolumes and
/// PVCs.
fn remove_labelled(cluster: &Cluster, selector: &str) -> Result<(), ProviderError> {
    for collection in [
        volume_replications(cluster),
        cluster.data_volumes(),
        cluster.pvcs(),
    ] {
        for object in cluster.list(&collection, Some(selector))? {
            if let Some(name) = object["metadata"]["name"].as_str() {
                cluster.delete(&format!("{collection}/{name}"))?;
            }
        }
    }
    Ok(())
}

/// Cleanup of a replica at this site: its mirrored PVCs (and a promotion's
/// VolumeReplication, if one is left).
pub fn remove_replica(cluster: &Cluster, point: &str) -> Result<(), ProviderError> {
    remove_labelled(cluster, &format!("{REPLICA_LABEL}={point}"))
}

/// Cleanup of a snapshot at this site: the point-in-time PVCs and
/// VolumeReplications replicating it.
pub fn remove_replication_of(cluster: &Cluster, snapshot: &str) -> Result<(), ProviderError> {
    if !names::label_value_ok(snapshot) {
        return Ok(());
    }
    remove_labelled(cluster, &format!("{SOURCE_LABEL}={snapshot}"))
}

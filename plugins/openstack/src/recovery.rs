//! Recovery points: `snapshot` takes a Cinder snapshot of every volume of a
//! volume-backed server; `replicate` copies them to another region of the
//! same cloud the way Cinder does it natively — a backup of each snapshot
//! in the source region, its record exported there and imported into the
//! target region (both regions' backup services share the backup store).
//!
//! Export and import are steps of one operation: Cinder can export a
//! backup's record only once the backup is `available`, so `status` of a
//! replicate imports each record when it finds its backup available and
//! not yet imported. The import is keyed by the backup's id (which an
//! import keeps), so however often `status` runs, each record is imported
//! once.

use rebound_plugin_sdk::{
    Consistency, DiskCopy, OperationKind, OperationState, Outcome, ProviderError, RecoveryPoint,
    ReplicateRequest, Running, SnapshotRequest, info,
};
use serde_json::json;

use crate::cinder::{self, Kind};
use crate::cloud::{self, Cloud, Service, Verb, request_id, setting, short};
use crate::handle::{Handle, Point, Spec};
use crate::nova::{self, text};

/// Metadata on snapshots and backups: the server they capture.
const WORKLOAD: &str = "rebound:workload";

pub fn snapshot(req: SnapshotRequest) -> Result<rebound_plugin_sdk::Operation, ProviderError> {
    if req.consistency == Consistency::Application {
        return Err(ProviderError::Unsupported(
            "application-consistent snapshots need a guest freeze the OpenStack plugin does not \
             do; ask for crash consistency"
                .into(),
        ));
    }
    let cloud = cloud::connect(&req.site)?;
    let server = nova::get(&cloud, &req.workload_id)?;
    if nova::image_backed(&server) {
        return Err(ProviderError::InvalidRequest(format!(
            "server {} boots from an image on its hypervisor; only volume-backed servers can be \
             protected with Cinder snapshots",
            req.workload_id
        )));
    }
    let attached = nova::attached(&server);
    if attached.is_empty() {
        return Err(ProviderError::InvalidRequest(format!(
            "server {} has no volumes to snapshot",
            req.workload_id
        )));
    }
    let mut volumes = std::collections::BTreeMap::new();
    for id in &attached {
        volumes.insert(id.clone(), cinder::get(&cloud, Kind::Volume, None, id)?);
    }
    let workload = nova::workload(&server, &volumes);
    let mut snapshots = Vec::new();
    for (i, volume) in attached.iter().enumerate() {
        // In-use volumes need `force`; the copy is crash-consistent.
        let fields = json!({
            "volume_id": volume, "force": true,
            "description": format!("Rebound recovery point of server {}", workload.spec.name),
            "metadata": {WORKLOAD: req.workload_id},
        });
        let name = format!("rebound-{}-{i}", short(&req.key));
        snapshots.push(cinder::create_once(
            &cloud,
            Kind::Snapshot,
            None,
            &name,
            &req.key,
            fields,
        )?);
    }
    info!("snapshots started"; "workload" => req.workload_id, "snapshots" => snapshots.join(","));
    let handle = Handle::Snapshot {
        workload: req.workload_id,
        snapshots,
        spec: Spec::from(&workload.spec),
    };
    Ok(handle.operation(OperationKind::Snapshot, &req.site))
}

pub fn snapshot_status(
    site: &str,
    workload: String,
    snapshots: Vec<String>,
    spec: Spec,
) -> Result<OperationState, ProviderError> {
    let cloud = cloud::connect(site)?;
    let mut disks = Vec::new();
    let mut captured_at = u64::MAX;
    for id in &snapshots {
        let Some(snap) = cinder::find(&cloud, Kind::Snapshot, None, id)? else {
            return Ok(OperationState::Failed(ProviderError::NotFound(format!(
                "snapshot {id} disappeared from site '{site}'"
            ))));
        };
        if let Some(reason) = cinder::failure(&snap) {
            return Ok(OperationState::Failed(ProviderError::ProviderFailed(
                reason,
            )));
        }
        if text(&snap, "status") != "available" {
            let percent = snap["os-extended-snapshot-attributes:progress"]
                .as_str()
                .and_then(|p| p.trim_end_matches('%').parse().ok());
            return Ok(OperationState::Running(Running {
                percent,
                detail: format!("snapshot {id} is {}", text(&snap, "status")),
            }));
        }
        captured_at = captured_at.min(cinder::parse_time(text(&snap, "created_at")).unwrap_or(0));
        disks.push(DiskCopy {
            disk_id: text(&snap, "volume_id").to_owned(),
            copy_id: id.clone(),
            size_bytes: cinder::bytes(&snap),
        });
    }
    Ok(OperationState::Succeeded(Outcome::RecoveryPoint(
        RecoveryPoint {
            id: Point::Snapshots(snapshots).id(),
            site: site.to_owned(),
            workload_id: workload,
            captured_at,
            consistency: Consistency::Crash,
            disks,
            spec: spec.to_vm(),
        },
    )))
}

pub fn replicate(req: ReplicateRequest) -> Result<rebound_plugin_sdk::Operation, ProviderError> {
    let Point::Snapshots(snapshots) = Point::parse(&req.recovery_point_id)? else {
        return Err(ProviderError::InvalidRequest(format!(
            "recovery point '{}' is a replica already; replicate the source's snapshots",
            req.recovery_point_id
        )));
    };
    let same_cloud = ["auth_url", "project"]
        .iter()
        .all(|k| setting(&req.source_site, k, "") == setting(&req.target_site, k, ""));
    if !same_cloud {
        return Err(ProviderError::Unsupported(format!(
            "native replication copies Cinder backups between regions of one cloud (one \
             Keystone, one project, a shared backup store); sites '{}' and '{}' are not; use \
             replication mode data_mover",
            req.source_site, req.target_site
        )));
    }
    // One cloud, one session: the backups are made in the source region;
    // the target region imports them when `status` finds them ready.
    let source = cloud::connect(&req.source_site)?;
    let target_region = setting(&req.target_site, "region", "");
    if source.region == target_region {
        return Err(ProviderError::InvalidRequest(format!(
            "sites '{}' and '{}' are the same region '{}'",
            req.source_site, req.target_site, source.region
        )));
    }
    let mut backups = Vec::new();
    let mut workload = String::new();
    let mut captured_at = u64::MAX;
    for (i, id) in snapshots.iter().enumerate() {
        let snap = cinder::get(&source, Kind::Snapshot, None, id)?;
        if text(&snap, "status") != "available" {
            return Err(ProviderError::Conflict(format!(
                "snapshot {id} on site '{}' is {}, not available",
                req.source_site,
                text(&snap, "status")
            )));
        }
        workload = text(&snap["metadata"], WORKLOAD).to_owned();
        captured_at = captured_at.min(cinder::parse_time(text(&snap, "created_at")).unwrap_or(0));
        let fields = json!({
            "volume_id": snap["volume_id"], "snapshot_id": id, "force": true,
            "incremental": false,
            "description": format!("Rebound replica of recovery point {}", req.recovery_point_id),
            "metadata": {WORKLOAD: workload},
        });
        let name = format!("rebound-{}-{i}", short(&req.key));
        backups.push(cinder::create_once(
            &source,
            Kind::Backup,
            None,
            &name,
            &req.key,
            fields,
        )?);
    }
    let server = nova::get(&source, &workload)?;
    let mut volumes = std::collections::BTreeMap::new();
    for id in nova::attached(&server) {
        if let Some(v) = cinder::find(&source, Kind::Volume, None, &id)? {
            volumes.insert(id, v);
        }
    }
    let spec = Spec::from(&nova::workload(&server, &volumes).spec);
    info!("backups started"; "recovery_point" => req.recovery_point_id, "backups" => backups.join(","));
    let handle = Handle::Replicate {
        workload,
        source_region: source.region.clone(),
        backups,
        captured_at,
        spec,
    };
    Ok(handle.operation(OperationKind::Replicate, &req.target_site))
}

pub fn replicate_status(
    site: &str,
    workload: String,
    source_region: String,
    backups: Vec<String>,
    captured_at: u64,
    spec: Spec,
) -> Result<OperationState, ProviderError> {
    let cloud = cloud::connect(site)?;
    let mut waiting = None;
    let mut disks = Vec::new();
    for id in &backups {
        let imported = cinder::find(&cloud, Kind::Backup, None, id)?;
        let Some(backup) = imported else {
            waiting = Some(import(&cloud, &source_region, id)?);
            continue;
        };
        if let Some(reason) = cinder::failure(&backup) {
            return Ok(OperationState::Failed(ProviderError::ProviderFailed(
                reason,
            )));
        }
        if text(&backup, "status") != "available" {
            waiting = Some(format!(
                "backup {id} is {} in {}",
                text(&backup, "status"),
                cloud.region
            ));
            continue;
        }
        disks.push(DiskCopy {
            disk_id: text(&backup, "volume_id").to_owned(),
            copy_id: id.clone(),
            size_bytes: cinder::bytes(&backup),
        });
    }
    if let Some(detail) = waiting {
        return Ok(OperationState::Running(Running {
            percent: None,
            detail,
        }));
    }
    Ok(OperationState::Succeeded(Outcome::RecoveryPoint(
        RecoveryPoint {
            id: Point::Backups {
                source_region,
                ids: backups,
            }
            .id(),
            site: site.to_owned(),
            workload_id: workload,
            captured_at,
            consistency: Consistency::Crash,
            disks,
            spec: spec.to_vm(),
        },
    )))
}

/// Import the record of backup `id` from `source_region` once it is
/// available there; what it is doing, for `running`.
fn import(cloud: &Cloud, source_region: &str, id: &str) -> Result<String, ProviderError> {
    let Some(backup) = cinder::find(cloud, Kind::Backup, Some(source_region), id)? else {
        return Err(ProviderError::NotFound(format!(
            "backup {id} is gone from region '{source_region}' before it was imported"
        )));
    };
    if let Some(reason) = cinder::failure(&backup) {
        return Err(ProviderError::ProviderFailed(reason));
    }
    let status = text(&backup, "status");
    if status != "available" {
        return Ok(format!("backup {id} is {status} in {source_region}"));
    }
    let record = cloud.get_in(
        Service::Volume,
        Some(source_region),
        &format!("/backups/{id}/export_record"),
    )?;
    cloud.send(
        Verb::Post,
        Service::Volume,
        "/backups/import_record",
        Some(&json!({"backup-record": record["backup-record"]})),
        &request_id(id, "import backup record"),
    )?;
    info!("backup record imported"; "backup" => id, "from" => source_region, "to" => cloud.region);
    Ok(format!(
        "backup {id} is being imported into {}",
        cloud.region
    ))
}

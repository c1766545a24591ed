//! `cleanup`: drill sandboxes (servers labelled with the drill, whose
//! volumes go with them, and drill volumes never attached), recovery points
//! past retention (Cinder snapshots; imported backups with their records in
//! the region they came from; volumes the data mover wrote) and transfer
//! appliances. What is already gone counts as removed, and so does an
//! imported volume a server uses (it is that server's disk now, and stays);
//! what Cinder will not delete yet (a snapshot still being made) stays, is
//! logged and is not reported removed, so the next prune tries again.

use rebound_plugin_sdk::{
    CleanupRequest, CleanupScope, Operation, OperationKind, ProviderError, info, warn,
};

use crate::cinder::{self, Kind};
use crate::cloud::{self, Cloud, Service, Verb, encode, request_id};
use crate::handle::{Handle, Point};
use crate::nova::{self, meta, metadata_key, text};

/// The label the host puts on a drill's workloads.
const DRILL_LABEL: &str = "rebound/drill";

pub fn cleanup(req: CleanupRequest) -> Result<Operation, ProviderError> {
    let cloud = cloud::connect(&req.site)?;
    let removed = match &req.scope {
        CleanupScope::Drill(sandbox) => drill(&cloud, sandbox, &req.key)?,
        CleanupScope::RecoveryPoints(ids) => {
            let mut removed = Vec::new();
            for id in ids {
                if recovery_point(&cloud, id, &req.key)? {
                    removed.push(id.clone());
                }
            }
            removed
        }
        CleanupScope::Transfers(ids) => crate::transfer::release(&cloud, ids, &req.key)?,
    };
    info!("cleaned up"; "removed" => removed.join(","));
    Ok(Handle::Cleanup { removed }.operation(OperationKind::Cleanup, &req.site))
}

fn drill(cloud: &Cloud, sandbox: &str, key: &str) -> Result<Vec<String>, ProviderError> {
    let label = metadata_key(DRILL_LABEL);
    let mut removed = Vec::new();
    for server in nova::list(cloud)? {
        if meta(&server, &label) != Some(sandbox) {
            continue;
        }
        let id = text(&server, "id").to_owned();
        if server["OS-EXT-STS:task_state"] != "deleting" {
            match cloud.send(
                Verb::Delete,
                Service::Compute,
                &format!("/servers/{}", encode(&id)),
                None,
                &request_id(key, &format!("delete server {id}")),
            ) {
                Ok(_) | Err(ProviderError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        removed.push(id);
    }
    // Volumes made for the drill that no server took (a materialize that
    // failed before booting).
    for volume in nova::volume_map(cloud)?.into_values() {
        if volume["metadata"][&label] == sandbox && text(&volume, "status") == "available" {
            let id = text(&volume, "id").to_owned();
            cinder::delete(cloud, Kind::Volume, None, &id, key)?;
            removed.push(id);
        }
    }
    Ok(removed)
}

/// Delete a recovery point; whether it is gone.
fn recovery_point(cloud: &Cloud, id: &str, key: &str) -> Result<bool, ProviderError> {
    let deleted = match Point::parse(id) {
        Ok(Point::Snapshots(ids)) => ids
            .iter()
            .try_for_each(|s| cinder::delete(cloud, Kind::Snapshot, None, s, key)),
        // The copy here, then its record in the region it came from (both
        // name the same data in the shared backup store).
        Ok(Point::Backups { source_region, ids }) => ids.iter().try_for_each(|b| {
            cinder::delete(cloud, Kind::Backup, None, b, key)?;
            cinder::delete(cloud, Kind::Backup, Some(&source_region), b, key)
        }),
        // A volume the data mover wrote.
        Err(_) => cinder::delete(cloud, Kind::Volume, None, id, key),
    };
    match deleted {
        Ok(()) => Ok(true),
        Err(ProviderError::InvalidRequest(reason) | ProviderError::Conflict(reason)) => {
            // An imported volume a server boots from (a failover or
            // failback used it as it is) is that server's disk now, no
            // longer a recovery point: it stays, reported removed.
            let attached = Point::parse(id).is_err()
                && cinder::find(cloud, Kind::Volume, None, id)?
                    .is_some_and(|v| text(&v, "status") == "in-use");
            if attached {
                info!("volume kept: a server uses it"; "id" => id);
                return Ok(true);
            }
            // Busy (a snapshot still being made): it stays for now, and
            // the next prune tries again.
            warn!("recovery point kept"; "id" => id, "reason" => reason);
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

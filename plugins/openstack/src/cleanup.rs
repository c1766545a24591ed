//! `cleanup`: drill sandboxes (servers labelled with the drill, then every
//! volume labelled with it once they are gone), recovery points
//! past retention (Cinder snapshots; imported backups with their records in
//! the region they came from; volumes the data mover wrote), transfer
//! appliances, a failed run's standby workloads and abandoned imports —
//! and, with the last recovery point of it, the disk of an incarnation
//! removed while its snapshots stood (see [`orphaned`]). What
//! is already gone counts as removed, and so does an imported volume a
//! server uses (it is that server's disk now, and stays); what Cinder will
//! not delete yet (a snapshot still being made) stays, is logged and is not
//! reported removed, so the next prune tries again.
//!
//! Workloads: only servers `materialize` booted go — those with its
//! `rebound:key` in their metadata that are not mover appliances. Any other
//! id present on the site refuses the whole cleanup (`invalid-request`)
//! before anything is deleted, and so does a server someone other than
//! Rebound's fence locked; Rebound's own lock is lifted first (deleting
//! the server fences it for good). The volumes `materialize` created for a
//! server (those with the same key: clones of a recovery point's copies, a
//! drill's clones) go with it; the volumes it booted from as they were (the
//! data mover's imports) stay. Abandoned imports: see
//! [`crate::transfer::discard`].
//!
//! Nova deletes a server asynchronously and holds its volumes until it is
//! gone, so the drill and workload scopes finish in `status`: it waits for
//! the servers the call deleted to disappear, then deletes the volumes —
//! each once Cinder lets it: one still being created, or whose snapshots
//! are being deleted, is waited for; one a server outside the cleanup uses
//! or one with snapshots that stay stays (logged, not reported removed).
//! (Nova's own `delete_on_termination` gives up on a volume with
//! snapshots — a round-trip drill's capture of its sandbox, say — so the
//! drill's volumes are not left to it.) `status` creates and boots
//! nothing.

use std::collections::BTreeMap;

use rebound_plugin_sdk::{
    CleanupReport, CleanupRequest, CleanupScope, Operation, OperationKind, OperationState, Outcome,
    ProviderError, Running, info, warn,
};
use serde_json::json;

use crate::cinder::{self, Kind};
use crate::cloud::{self, Cloud};
use crate::fence;
use crate::handle::{Handle, Point};
use crate::nova::{self, KEY, meta, metadata_key, text};

/// The label the host puts on a drill's workloads.
const DRILL_LABEL: &str = "rebound/drill";

/// What a cleanup removed within the call, and what it leaves to `status`.
#[derive(Debug, Default)]
pub struct Sweep {
    /// Gone already, or deleted by the call.
    pub removed: Vec<String>,
    /// Servers the call deleted, awaited before `volumes` go.
    pub servers: Vec<String>,
    /// Volumes to delete once the servers are gone.
    pub volumes: Vec<String>,
}

impl Sweep {
    /// A cleanup finished within the call.
    fn done(removed: Vec<String>) -> Self {
        Self {
            removed,
            ..Self::default()
        }
    }
}

pub fn cleanup(req: CleanupRequest) -> Result<Operation, ProviderError> {
    let cloud = cloud::connect(&req.site)?;
    let sweep = match &req.scope {
        CleanupScope::Drill(sandbox) => drill(&cloud, sandbox, &req.key)?,
        CleanupScope::RecoveryPoints(ids) => {
            let mut sweep = Sweep::default();
            for id in ids {
                let sources = snapshot_sources(&cloud, id)?;
                if recovery_point(&cloud, id, &req.key)? {
                    sweep.removed.push(id.clone());
                    for volume in sources {
                        if !sweep.volumes.contains(&volume) && orphaned(&cloud, &volume)? {
                            sweep.volumes.push(volume);
                        }
                    }
                }
            }
            sweep
        }
        CleanupScope::Transfers(ids) => {
            Sweep::done(crate::transfer::release(&cloud, ids, &req.key)?)
        }
        CleanupScope::Workloads(ids) => workloads(&cloud, ids, &req.key)?,
        CleanupScope::DiscardedImports(ids) => crate::transfer::discard(&cloud, ids, &req.key)?,
    };
    info!(
        "cleaned up";
        "removed" => sweep.removed.join(","),
        "awaiting" => sweep.servers.join(","),
        "volumes" => sweep.volumes.join(",")
    );
    let finishing = !(sweep.servers.is_empty() && sweep.volumes.is_empty());
    let handle = Handle::Cleanup {
        removed: sweep.removed,
        key: if finishing { req.key } else { String::new() },
        servers: sweep.servers,
        volumes: sweep.volumes,
    };
    Ok(handle.operation(OperationKind::Cleanup, &req.site))
}

fn drill(cloud: &Cloud, sandbox: &str, key: &str) -> Result<Sweep, ProviderError> {
    let label = metadata_key(DRILL_LABEL);
    let mut sweep = Sweep::default();
    for server in nova::list(cloud)? {
        if meta(&server, &label) != Some(sandbox) {
            continue;
        }
        let id = text(&server, "id").to_owned();
        if !nova::deleting(&server) {
            nova::delete(cloud, &id, key, &format!("delete server {id}"))?;
        }
        sweep.removed.push(id.clone());
        sweep.servers.push(id);
    }
    // Its volumes, attached or not (a materialize that failed before
    // booting), go once the servers are gone.
    sweep.volumes = nova::volume_map(cloud)?
        .into_values()
        .filter(|v| v["metadata"][&label] == sandbox)
        .map(|v| text(&v, "id").to_owned())
        .collect();
    Ok(sweep)
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

/// The volumes the snapshots of recovery point `id` were taken of.
fn snapshot_sources(cloud: &Cloud, id: &str) -> Result<Vec<String>, ProviderError> {
    let Ok(Point::Snapshots(snapshots)) = Point::parse(id) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for snapshot in snapshots {
        if let Some(doc) = cinder::find(cloud, Kind::Snapshot, None, &snapshot)?
            && let Some(volume) = doc["volume_id"].as_str()
        {
            out.push(volume.to_owned());
        }
    }
    Ok(out)
}

/// Whether `volume` is a disk `materialize` made (its `rebound:key`) that
/// no server uses any more and whose every snapshot is going: the disk of
/// an incarnation removed while recovery points of it stood (Cinder keeps
/// a volume with snapshots), left once the last of them is removed. It
/// goes with them (see [`status`]).
fn orphaned(cloud: &Cloud, volume: &str) -> Result<bool, ProviderError> {
    let Some(doc) = cinder::find(cloud, Kind::Volume, None, volume)? else {
        return Ok(false);
    };
    if !doc["metadata"][KEY].is_string() || text(&doc, "status") != "available" {
        return Ok(false);
    }
    Ok(cinder::snapshots_of(cloud, volume)?
        .iter()
        .all(|s| text(s, "status").starts_with("delet")))
}

/// Delete the servers `materialize` booted, by id, once every id is found
/// to be one (or gone); their volumes are left to [`status`].
fn workloads(cloud: &Cloud, ids: &[String], key: &str) -> Result<Sweep, ProviderError> {
    let listing = nova::list(cloud)?;
    let mut sweep = Sweep::default();
    // Every id is checked before anything is deleted.
    let mut doomed = Vec::new();
    for id in ids {
        if sweep.removed.contains(id) {
            continue;
        }
        sweep.removed.push(id.clone());
        // Not on the site: gone already.
        let Some(server) = listing.iter().find(|s| text(s, "id") == id) else {
            continue;
        };
        let Some(mark) = meta(server, KEY).filter(|_| !nova::is_appliance(server)) else {
            return Err(ProviderError::InvalidRequest(format!(
                "workload '{id}' ({}) was not materialized by Rebound (its metadata has no \
                 `{KEY}` of a materialize); nothing was removed",
                text(server, "name")
            )));
        };
        if server["locked"] == true && !fence::fenced_by_rebound(server) {
            return Err(ProviderError::Conflict(format!(
                "server {id} is locked ({}), not by Rebound's fence; unlock it to let it be \
                 removed; nothing was removed",
                server["locked_reason"]
                    .as_str()
                    .unwrap_or("no reason given")
            )));
        }
        doomed.push((server, mark));
    }
    if doomed.is_empty() {
        return Ok(sweep);
    }
    let volumes = nova::volume_map(cloud)?;
    for (server, mark) in doomed {
        let id = text(server, "id");
        if !nova::deleting(server) {
            if fence::fenced_by_rebound(server) {
                nova::action(
                    cloud,
                    id,
                    json!({"unlock": null}),
                    key,
                    &format!("unlock server {id}"),
                )?;
            }
            nova::delete(cloud, id, key, &format!("delete server {id}"))?;
            info!("standby server deleted"; "server" => id);
        }
        sweep.servers.push(id.to_owned());
        sweep
            .volumes
            .extend(clones(server, mark, &volumes).map(str::to_owned));
    }
    Ok(sweep)
}

/// The volumes of `server` that its materialize (keyed `mark`) created.
fn clones<'a>(
    server: &'a serde_json::Value,
    mark: &'a str,
    volumes: &'a BTreeMap<String, serde_json::Value>,
) -> impl Iterator<Item = &'a str> + 'a {
    server["os-extended-volumes:volumes_attached"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["id"].as_str())
        .filter(move |v| {
            volumes
                .get(*v)
                .is_some_and(|doc| doc["metadata"][KEY] == mark)
        })
}

/// A cleanup's progress: done when the servers it deleted are gone and
/// each of its volumes is deleted (or stays, for a reason logged).
pub fn status(
    site: &str,
    mut removed: Vec<String>,
    key: &str,
    servers: &[String],
    volumes: &[String],
) -> Result<OperationState, ProviderError> {
    let running = |detail: String| {
        Ok(OperationState::Running(Running {
            percent: None,
            detail,
        }))
    };
    if servers.is_empty() && volumes.is_empty() {
        return Ok(OperationState::Succeeded(Outcome::Cleaned(CleanupReport {
            removed,
        })));
    }
    let cloud = cloud::connect(site)?;
    if !servers.is_empty() {
        let listing = nova::list(&cloud)?;
        if let Some(server) = listing
            .iter()
            .find(|s| servers.iter().any(|id| id == text(s, "id")))
        {
            let id = text(server, "id");
            if text(server, "status") == "ERROR" && !nova::deleting(server) {
                return Ok(OperationState::Failed(ProviderError::ProviderFailed(
                    format!(
                        "server {id} failed to delete: {}",
                        server["fault"]["message"]
                            .as_str()
                            .unwrap_or("no fault recorded")
                    ),
                )));
            }
            return running(format!("server {id} is being deleted"));
        }
    }
    let mut waiting = None;
    for id in volumes {
        if removed.contains(id) {
            continue;
        }
        let Some(volume) = cinder::find(&cloud, Kind::Volume, None, id)? else {
            removed.push(id.clone());
            continue;
        };
        let state = text(&volume, "status");
        if state.starts_with("delet") {
            removed.push(id.clone());
        } else if state == "available" || state.starts_with("error") {
            // Cinder refuses a volume with snapshots: one being deleted is
            // waited for (asked first, so that one going meanwhile does
            // not pass for a refusal of another kind).
            if let Some(snapshot) = cinder::snapshots_of(&cloud, id)?
                .iter()
                .find(|s| text(s, "status") == "deleting")
            {
                waiting = Some(format!(
                    "volume {id} waits for its snapshot {} to be deleted",
                    text(snapshot, "id")
                ));
                continue;
            }
            match cinder::delete(&cloud, Kind::Volume, None, id, key) {
                Ok(()) => removed.push(id.clone()),
                // Snapshots that stay, or a state Cinder does not delete in.
                Err(ProviderError::InvalidRequest(reason) | ProviderError::Conflict(reason)) => {
                    warn!("volume kept"; "id" => id, "reason" => reason);
                }
                Err(e) => return Err(e),
            }
        } else if state == "in-use" {
            let holders: Vec<&str> = volume["attachments"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a["server_id"].as_str())
                .collect();
            if holders.iter().any(|h| servers.iter().any(|s| s == h)) {
                waiting = Some(format!("volume {id} is being detached"));
            } else {
                warn!("volume kept: a server uses it"; "id" => id, "servers" => holders.join(","));
            }
        } else {
            // Still being created, detached, backed up…: not yet.
            waiting = Some(format!("volume {id} is {state}"));
        }
    }
    match waiting {
        Some(detail) => running(detail),
        None => Ok(OperationState::Succeeded(Outcome::Cleaned(CleanupReport {
            removed,
        }))),
    }
}

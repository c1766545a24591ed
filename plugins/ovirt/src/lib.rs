//! The oVirt / Red Hat Virtualization provider plugin: an engine through
//! its REST API v4 (XML), authenticated by the engine's SSO (README.md
//! says what each contract function does there, and what it does not).
//!
//! - workloads are the engine's VMs; labels are VM tags named `key=value`;
//! - recovery points are VM snapshots without memory (`<vm>.<snapshot>`),
//!   polled until `snapshot_status` is `ok`, each taken right after a
//!   checkpoint (a backup finalized at once);
//! - `changed-blocks` is an incremental backup from the base point's
//!   checkpoint, whose dirty extents imageio lists (`backups`);
//! - the data path is image transfers served by imageio: `export-disk`
//!   downloads a snapshot's disk, `import-disk` uploads into a new disk —
//!   the engine's copy of the disk it supersedes, when the host names one,
//!   so only changed blocks are written; the host's data mover reads and
//!   writes the transfer URL;
//! - `materialize` clones a VM from a snapshot, or creates a blank VM with
//!   the imported disks attached (a drill's VM with the engine's copies of
//!   them, so the recovery point stays untouched), NICs on the mapped networks' vNIC
//!   profiles (the isolated network for a drill), and starts it;
//! - `fence` stops the VM and records the fencing epoch in its tags;
//! - `cleanup` removes drill sandboxes, recovery points, transfer
//!   endpoints, the standby VMs materialize made (found by the marks it
//!   set; the imported disks they ran on stay) and abandoned imports (the
//!   upload cancelled, its disk deleted).
//!
//! Not offered: native replication (oVirt's is storage-domain replication
//! with a domain import, which this plugin does not drive), redirect (oVirt
//! has no traffic API: use a DNS provider), app-consistent freeze.
//!
//! Every mutating request carries a `correlation_id` derived from the
//! call's idempotency key, and what a call creates is found again before
//! anything is created: snapshots by a description holding the key, disks
//! and VMs by names derived from it, transfers by their disk.
//!
//! Site config: `endpoint` (the engine's URL, `https://engine.example`),
//! optional `user` (default `admin@internal`), `cluster` (default
//! `Default`), `storage_domain` (default the first data domain),
//! `isolated_network` (drills; default `isolated`), `use_proxy` (`true`:
//! hand the mover the engine's imageio proxy URL), `imageio_proxy` (the
//! proxy's URL, `https://engine.example:54323`, for the plugin's egress:
//! changed-block listing reads dirty extents there). Secret: `password`,
//! sent through the host's placeholder so the plugin never holds it.
//!
//! Build: `cargo xtask build-plugins`.
#![deny(rust_2018_idioms)]

mod backups;
mod engine;
mod points;
mod transfer;
mod vms;

use rebound_plugin_sdk::{
    ByteRange, Capabilities, ChangedBlocksRequest, CleanupReport, CleanupRequest, CleanupScope,
    DiskFormat, ExportRequest, FenceRequest, HealthReport, HealthStatus, ImportRequest,
    InventoryFilter, MaterializeRequest, Operation, OperationKind, OperationState, Outcome,
    PluginInfo, Provider, ProviderError, RedirectRequest, ReplicateRequest, SnapshotRequest,
    Workload, info, register, site, warn,
};

use crate::engine::Engine;

/// Who this plugin is. Pure, so tests can call it natively.
pub fn describe_info() -> PluginInfo {
    PluginInfo {
        name: "ovirt".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        platform: "ovirt".into(),
        capabilities: Capabilities::EXPORT_DISK
            | Capabilities::IMPORT_DISK
            | Capabilities::FENCING
            | Capabilities::CHANGED_BLOCKS,
        export_formats: vec![DiskFormat::Raw],
        import_formats: vec![DiskFormat::Raw],
        snapshot_granularity_secs: 60,
    }
}

struct OVirt;

impl Provider for OVirt {
    fn describe() -> PluginInfo {
        describe_info()
    }

    fn health(site: String) -> Result<HealthReport, ProviderError> {
        health(&site)
    }

    fn inventory(site: String, filter: InventoryFilter) -> Result<Vec<Workload>, ProviderError> {
        vms::inventory(&*Engine::of(&site)?, &filter)
    }

    fn snapshot(req: SnapshotRequest) -> Result<Operation, ProviderError> {
        points::snapshot(&req)
    }

    fn replicate(req: ReplicateRequest) -> Result<Operation, ProviderError> {
        Err(ProviderError::Unsupported(format!(
            "the oVirt plugin does not replicate natively ('{}' → '{}'): oVirt's disaster recovery \
             replicates whole storage domains in the storage array; use `replication.mode: \
             data_mover`",
            req.source_site, req.target_site
        )))
    }

    fn export_disk(req: ExportRequest) -> Result<Operation, ProviderError> {
        transfer::export(&req)
    }

    fn import_disk(req: ImportRequest) -> Result<Operation, ProviderError> {
        transfer::import(&req)
    }

    fn changed_blocks(req: ChangedBlocksRequest) -> Result<Vec<ByteRange>, ProviderError> {
        backups::changed_blocks(&req)
    }

    fn materialize(req: MaterializeRequest) -> Result<Operation, ProviderError> {
        vms::materialize(&req)
    }

    fn fence(req: FenceRequest) -> Result<Operation, ProviderError> {
        vms::fence(&req, true)
    }

    fn unfence(req: FenceRequest) -> Result<Operation, ProviderError> {
        vms::fence(&req, false)
    }

    fn redirect(req: RedirectRequest) -> Result<Operation, ProviderError> {
        Err(ProviderError::Unsupported(format!(
            "oVirt has no traffic redirection API (site '{}'); redirect through a DNS provider's \
             site instead (Designate, Route 53, external-dns)",
            req.site
        )))
    }

    fn cleanup(req: CleanupRequest) -> Result<Operation, ProviderError> {
        cleanup(&req)
    }

    fn status(op: Operation) -> Result<OperationState, ProviderError> {
        let engine = Engine::of(&op.site)?;
        match op.kind {
            OperationKind::Snapshot => points::status(&engine, &op.id),
            OperationKind::ExportDisk => transfer::status(&engine, &op.id, false),
            OperationKind::ImportDisk => transfer::status(&engine, &op.id, true),
            OperationKind::Materialize => vms::materialize_status(&engine, &op.id),
            OperationKind::Fence => vms::fence_status(&engine, &op.id, true),
            OperationKind::Unfence => vms::fence_status(&engine, &op.id, false),
            OperationKind::Cleanup => {
                Ok(OperationState::Succeeded(Outcome::Cleaned(CleanupReport {
                    removed: op
                        .id
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect(),
                })))
            }
            OperationKind::Replicate | OperationKind::Redirect => Err(ProviderError::Unsupported(
                format!("the oVirt plugin starts no {:?} operations", op.kind),
            )),
        }
    }
}

/// Sign-in and `GET /ovirt-engine/api`: the product's version.
fn health(site_name: &str) -> Result<HealthReport, ProviderError> {
    let started = site::monotonic_ns();
    let report = |status, api_version: Option<String>, detail: String| HealthReport {
        status,
        latency_ms: u32::try_from((site::monotonic_ns() - started) / 1_000_000).unwrap_or(u32::MAX),
        api_version,
        detail,
    };
    let engine = match Engine::of(site_name) {
        Ok(e) => e,
        Err(e @ (ProviderError::Unauthorized(_) | ProviderError::InvalidRequest(_))) => {
            return Err(e);
        }
        Err(e) => {
            return Ok(report(
                HealthStatus::Unreachable,
                None,
                format!("the engine of site '{site_name}' did not answer its SSO: {e}"),
            ));
        }
    };
    match engine.get("") {
        Ok(api) => {
            let version = api
                .text_at(&["product_info", "version", "full_version"])
                .map(str::to_owned);
            Ok(report(
                HealthStatus::Healthy,
                version.clone(),
                format!(
                    "{} {} answers",
                    api.text_at(&["product_info", "name"]).unwrap_or("engine"),
                    version.unwrap_or_default()
                ),
            ))
        }
        Err(e) => Ok(report(
            HealthStatus::Unreachable,
            None,
            format!("the API of site '{site_name}' did not answer: {e}"),
        )),
    }
}

/// Drill sandboxes (their VMs, stopped and removed with their disks — the
/// drill's copies), recovery points (snapshots; or imported disks, kept
/// where a VM uses them — a failover's or failback's attached them — and
/// reported removed, as they are no recovery point any more), transfer
/// endpoints (finalized), workloads (only VMs materialize made, all checked
/// first; removed without the imported disks they run on) and discarded
/// imports (cancelled, their disks deleted). Finishes within the call.
fn cleanup(req: &CleanupRequest) -> Result<Operation, ProviderError> {
    let engine = Engine::of(&req.site)?;
    let removed = match &req.scope {
        CleanupScope::Drill(sandbox) => {
            let filter = InventoryFilter {
                workload_ids: Vec::new(),
                labels: vec![(vms::DRILL_LABEL.into(), sandbox.clone())],
            };
            // The sandbox's VMs: tagged with it, or — one whose materialize
            // stopped before tagging it — created saying so.
            let mut ids: Vec<String> = vms::inventory(&engine, &filter)?
                .into_iter()
                .map(|w| w.id)
                .collect();
            let marker = vms::in_drill(sandbox);
            for vm in engine.list("/vms")? {
                let described = vm
                    .text_at(&["description"])
                    .is_some_and(|d| d.ends_with(&marker));
                match vm.attr("id") {
                    Some(id) if described && !ids.iter().any(|i| i == id) => {
                        ids.push(id.to_owned())
                    }
                    _ => {}
                }
            }
            let mut removed = Vec::new();
            for id in ids {
                vms::stop(&engine, &id, &req.key)?;
                engine.delete(&format!("/vms/{id}"), &req.key, &format!("remove {id}"))?;
                removed.push(id);
            }
            // Disks copied for the drill that no VM took with it (a
            // materialize that stopped before attaching them).
            let prefix = vms::drill_prefix(sandbox);
            for d in transfer::disks_named(&engine, &prefix)? {
                if let Some(id) = d.attr("id") {
                    engine.delete(&format!("/disks/{id}"), &req.key, &format!("remove {id}"))?;
                    removed.push(id.to_owned());
                }
            }
            removed
        }
        CleanupScope::RecoveryPoints(ids) => {
            let mut removed = Vec::new();
            for id in ids {
                match points::split(id) {
                    Ok((vm, snap)) => engine.delete(
                        &format!("/vms/{vm}/snapshots/{snap}"),
                        &req.key,
                        &format!("remove {id}"),
                    )?,
                    Err(_) => {
                        match engine.delete(
                            &format!("/disks/{id}"),
                            &req.key,
                            &format!("remove {id}"),
                        ) {
                            Ok(()) => {}
                            // An imported disk a failover or failback
                            // attached is the workload's disk now, no
                            // longer a recovery point: it stays, reported
                            // removed.
                            Err(ProviderError::Conflict(why)) => {
                                match vms::using_disk(&engine, id)? {
                                    Some(vm) => {
                                        info!("disk kept: a VM uses it"; "disk" => id, "vm" => vm);
                                    }
                                    None => return Err(ProviderError::Conflict(why)),
                                }
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                removed.push(id.clone());
            }
            // The checkpoints only the removed points needed go too.
            let mut vms: Vec<&str> = ids
                .iter()
                .filter_map(|id| points::split(id).ok().map(|(vm, _)| vm))
                .collect();
            vms.sort_unstable();
            vms.dedup();
            for vm in vms {
                match backups::prune(&engine, vm, &req.key) {
                    Ok(n) => info!("checkpoints removed"; "vm" => vm, "count" => n),
                    Err(e) => warn!("checkpoints kept"; "vm" => vm, "error" => e.to_string()),
                }
            }
            removed
        }
        CleanupScope::Transfers(ids) => {
            for id in ids {
                transfer::release(&engine, id, &req.key)?;
            }
            ids.clone()
        }
        CleanupScope::Workloads(ids) => vms::remove_materialized(&engine, ids, &req.key)?,
        CleanupScope::DiscardedImports(ids) => transfer::discard_imports(&engine, ids, &req.key)?,
    };
    info!("cleaned up"; "site" => req.site, "removed" => removed.len());
    Ok(Operation {
        kind: OperationKind::Cleanup,
        site: req.site.clone(),
        id: removed.join(","),
    })
}

register!(OVirt);

//! The example provider plugin: a short, real plugin for the lab's example
//! platform (`lab/src/example.rs` documents its API), written the way the
//! built-in plugins are. It implements the whole contract: snapshots,
//! native replication, `changed-blocks`, `export-disk`/`import-disk` for the
//! host's data mover (the site serves each transfer through a mover agent
//! with block digests), materialize from a snapshot or imported volumes,
//! fence/unfence, weighted redirect and cleanup.
//!
//! Site config: `endpoint` (base URL). Secret: `token`, sent as a bearer
//! token through the host's placeholder, so the plugin never holds it.
//!
//! Build: `cargo xtask build-plugins` (or `cargo build --profile plugin
//! --target wasm32-wasip2 -p rebound-plugin-example --lib`).
#![deny(rust_2018_idioms)]

mod api;

use rebound_plugin_sdk::http::{self, Request, encode};
use rebound_plugin_sdk::retry::{RetryPolicy, retry};
use rebound_plugin_sdk::{
    ByteRange, Capabilities, ChangedBlocksRequest, CleanupReport, CleanupRequest, CleanupScope,
    Consistency, DiskCopy, DiskEndpoint, DiskFormat, DiskSource, ExportRequest, FenceReport,
    FenceRequest, HealthReport, HealthStatus, ImportRequest, InventoryFilter, MaterializeRequest,
    Materialized, Operation, OperationKind, OperationState, Outcome, PluginInfo, Provider,
    ProviderError, RecoveryPoint, RedirectReport, RedirectRequest, RedirectTarget,
    ReplicateRequest, Running, SnapshotRequest, WeightedBackend, Workload, info, register, site,
};

/// Who this plugin is. Pure, so the benchmark can call the same code natively.
pub fn describe_info() -> PluginInfo {
    PluginInfo {
        name: "example".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        platform: "example".into(),
        capabilities: Capabilities::FENCING
            | Capabilities::NATIVE_REPLICATION
            | Capabilities::WEIGHTED_REDIRECT
            | Capabilities::EXPORT_DISK
            | Capabilities::IMPORT_DISK
            | Capabilities::CHANGED_BLOCKS,
        export_formats: vec![DiskFormat::Raw],
        import_formats: vec![DiskFormat::Raw],
        snapshot_granularity_secs: 60,
    }
}

struct Example;

/// An authenticated request to the site's API.
fn call(site: &str, build: fn(String) -> Request, path: &str) -> Result<Request, ProviderError> {
    let endpoint = site::require(site, "endpoint")?;
    let token = site::secret(site, "token")?;
    Ok(build(format!("{}{path}", endpoint.trim_end_matches('/'))).bearer(&token.placeholder()))
}

fn send(request: Request) -> Result<http::Response, ProviderError> {
    retry(RetryPolicy::default(), || {
        request.clone().send()?.error_for_status()
    })
}

impl Provider for Example {
    fn describe() -> PluginInfo {
        describe_info()
    }

    fn health(site: String) -> Result<HealthReport, ProviderError> {
        let started = site::monotonic_ns();
        let answer = call(&site, http::get, "/v1/health")?
            .send()?
            .error_for_status()?;
        let version: api::Version = answer.json()?;
        Ok(HealthReport {
            status: HealthStatus::Healthy,
            latency_ms: u32::try_from((site::monotonic_ns() - started) / 1_000_000)
                .unwrap_or(u32::MAX),
            api_version: Some(version.version),
            detail: format!("example API answered on site '{site}'"),
        })
    }

    fn inventory(site: String, filter: InventoryFilter) -> Result<Vec<Workload>, ProviderError> {
        let vms: Vec<api::Vm> = send(call(&site, http::get, "/v1/vms")?)?.json()?;
        Ok(vms
            .into_iter()
            .map(api::Vm::into_workload)
            .filter(|w| filter.workload_ids.is_empty() || filter.workload_ids.contains(&w.id))
            .filter(|w| filter.labels.iter().all(|l| w.spec.labels.contains(l)))
            .collect())
    }

    fn snapshot(req: SnapshotRequest) -> Result<Operation, ProviderError> {
        // Idempotency: a snapshot created under this key is the answer.
        let existing: Vec<api::Snapshot> = send(call(
            &req.site,
            http::get,
            &format!("/v1/snapshots?key={}", encode(&req.key)),
        )?)?
        .json()?;
        let id = match existing.into_iter().next() {
            Some(s) => s.id,
            None => {
                let body = serde_json::json!({
                    "vm_id": req.workload_id,
                    "key": req.key,
                    "consistency": match req.consistency {
                        Consistency::Crash => "crash",
                        Consistency::Application => "application",
                    },
                });
                let created: api::Created = call(&req.site, http::post, "/v1/snapshots")?
                    .json(&body)?
                    .send()?
                    .error_for_status()?
                    .json()?;
                info!("snapshot started"; "id" => created.id, "workload" => req.workload_id);
                created.id
            }
        };
        Ok(Operation {
            kind: OperationKind::Snapshot,
            site: req.site,
            id,
        })
    }

    fn replicate(req: ReplicateRequest) -> Result<Operation, ProviderError> {
        let existing: Vec<api::Snapshot> = send(call(
            &req.target_site,
            http::get,
            &format!("/v1/snapshots?key={}", encode(&req.key)),
        )?)?
        .json()?;
        let id = match existing.into_iter().next() {
            Some(s) => s.id,
            None => {
                let source: serde_json::Value = send(call(
                    &req.source_site,
                    http::get,
                    &format!("/v1/snapshots/{}", encode(&req.recovery_point_id)),
                )?)?
                .json()?;
                if source["status"] != "available" {
                    return Err(ProviderError::Conflict(format!(
                        "recovery point '{}' on '{}' is not available yet",
                        req.recovery_point_id, req.source_site
                    )));
                }
                let body = serde_json::json!({
                    "key": req.key,
                    "replica_of": {
                        "site": req.source_site, "id": source["id"], "vm_id": source["vm_id"],
                        "created_at_ms": source["created_at_ms"],
                        "consistency": source["consistency"], "vm": source["vm"],
                    },
                });
                let created: api::Created = call(&req.target_site, http::post, "/v1/snapshots")?
                    .json(&body)?
                    .send()?
                    .error_for_status()?
                    .json()?;
                info!("replica started"; "id" => created.id, "from" => req.source_site);
                created.id
            }
        };
        Ok(Operation {
            kind: OperationKind::Replicate,
            site: req.target_site,
            id,
        })
    }

    fn export_disk(req: ExportRequest) -> Result<Operation, ProviderError> {
        if req.format != DiskFormat::Raw {
            return Err(ProviderError::Unsupported(
                "the example platform exports raw images only".into(),
            ));
        }
        let body = serde_json::json!({
            "key": req.key, "snapshot_id": req.recovery_point_id, "disk_id": req.disk_id,
        });
        let id = transfer(&req.site, "exports", &req.key, &body)?;
        Ok(Operation {
            kind: OperationKind::ExportDisk,
            site: req.site,
            id,
        })
    }

    fn import_disk(req: ImportRequest) -> Result<Operation, ProviderError> {
        if req.format != DiskFormat::Raw {
            return Err(ProviderError::Unsupported(
                "the example platform imports raw images only".into(),
            ));
        }
        let body = serde_json::json!({
            "key": req.key, "name": req.name, "size_bytes": req.size_bytes, "base": req.volume_id,
        });
        let id = transfer(&req.site, "imports", &req.key, &body)?;
        Ok(Operation {
            kind: OperationKind::ImportDisk,
            site: req.site,
            id,
        })
    }

    fn changed_blocks(req: ChangedBlocksRequest) -> Result<Vec<ByteRange>, ProviderError> {
        let path = format!(
            "/v1/snapshots/{}/changes?base={}&disk={}",
            encode(&req.target),
            encode(&req.base),
            encode(&req.disk_id)
        );
        let ranges: Vec<api::Range> = send(call(&req.site, http::get, &path)?)?.json()?;
        Ok(ranges
            .into_iter()
            .map(|r| ByteRange {
                offset: r.offset,
                length: r.length,
            })
            .collect())
    }

    fn materialize(req: MaterializeRequest) -> Result<Operation, ProviderError> {
        let existing: Vec<api::Vm> = send(call(
            &req.site,
            http::get,
            &format!("/v1/vms?key={}", encode(&req.key)),
        )?)?
        .json()?;
        let id = match existing.into_iter().next() {
            Some(vm) => vm.id,
            None => {
                // A drill attaches every NIC to the isolated network.
                let networks: Vec<serde_json::Value> = if req.isolated {
                    req.spec
                        .nics
                        .iter()
                        .map(|n| serde_json::json!({"source": n.network, "target": ISOLATED}))
                        .collect()
                } else {
                    req.networks
                        .iter()
                        .map(|m| serde_json::json!({"source": m.source_network, "target": m.target_network, "keep_addresses": m.keep_addresses}))
                        .collect()
                };
                let labels: std::collections::BTreeMap<&str, &str> = req
                    .spec
                    .labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let mut body = serde_json::json!({
                    "key": req.key, "name": req.spec.name,
                    "networks": networks, "labels": labels, "start": req.start,
                });
                match &req.source {
                    DiskSource::RecoveryPoint(snapshot) => {
                        body["from_snapshot"] = snapshot.as_str().into()
                    }
                    // Imported volumes carry data only: the VM around them
                    // is described by the spec.
                    DiskSource::Volumes(volumes) => {
                        body["from_volumes"] = serde_json::json!(volumes);
                        body["spec"] = api::spec_body(&req.spec);
                    }
                }
                let created: api::Created = call(&req.site, http::post, "/v1/vms")?
                    .json(&body)?
                    .send()?
                    .error_for_status()?
                    .json()?;
                info!("VM creation started"; "id" => created.id);
                created.id
            }
        };
        Ok(Operation {
            kind: OperationKind::Materialize,
            site: req.site,
            id,
        })
    }

    fn fence(req: FenceRequest) -> Result<Operation, ProviderError> {
        let vm = get_vm(&req.site, &req.workload_id)?;
        // Already fenced under this epoch (an earlier attempt): done.
        if !(vm.fenced && vm.epoch >= req.epoch) {
            let body = serde_json::json!({ "key": req.key, "epoch": req.epoch });
            let path = format!("/v1/vms/{}/fence", encode(&req.workload_id));
            call(&req.site, http::post, &path)?
                .json(&body)?
                .send()?
                .error_for_status()?;
        }
        Ok(Operation {
            kind: OperationKind::Fence,
            site: req.site,
            id: req.workload_id,
        })
    }

    fn unfence(req: FenceRequest) -> Result<Operation, ProviderError> {
        let vm = get_vm(&req.site, &req.workload_id)?;
        if vm.fenced || vm.epoch != req.epoch {
            let body = serde_json::json!({ "key": req.key, "epoch": req.epoch });
            let path = format!("/v1/vms/{}/unfence", encode(&req.workload_id));
            call(&req.site, http::post, &path)?
                .json(&body)?
                .send()?
                .error_for_status()?;
        }
        Ok(Operation {
            kind: OperationKind::Unfence,
            site: req.site,
            id: req.workload_id,
        })
    }

    fn redirect(req: RedirectRequest) -> Result<Operation, ProviderError> {
        let RedirectTarget::Route(name) = &req.target else {
            return Err(ProviderError::Unsupported(
                "the example platform redirects routes only".into(),
            ));
        };
        let path = format!("/v1/routes/{}", encode(name));
        let route: api::Route = send(call(&req.site, http::get, &path)?)?.json()?;
        if route.key.as_deref() != Some(req.key.as_str()) {
            let backends: Vec<serde_json::Value> = req
                .backends
                .iter()
                .map(|b| serde_json::json!({"backend": b.backend, "weight": b.weight}))
                .collect();
            call(&req.site, http::put, &path)?
                .json(&serde_json::json!({ "key": req.key, "backends": backends }))?
                .send()?
                .error_for_status()?;
        }
        Ok(Operation {
            kind: OperationKind::Redirect,
            site: req.site,
            id: name.clone(),
        })
    }

    fn status(op: Operation) -> Result<OperationState, ProviderError> {
        match op.kind {
            OperationKind::Snapshot | OperationKind::Replicate => {
                let s: api::Snapshot = send(call(
                    &op.site,
                    http::get,
                    &format!("/v1/snapshots/{}", encode(&op.id)),
                )?)?
                .json()?;
                Ok(match s.status.as_str() {
                    "available" => {
                        OperationState::Succeeded(Outcome::RecoveryPoint(RecoveryPoint {
                            id: s.id,
                            site: op.site,
                            workload_id: s.vm_id,
                            captured_at: s.created_at_ms,
                            consistency: if s.consistency == "application" {
                                Consistency::Application
                            } else {
                                Consistency::Crash
                            },
                            disks: s
                                .disks
                                .into_iter()
                                .map(|d| DiskCopy {
                                    disk_id: d.disk_id,
                                    copy_id: d.copy_id,
                                    size_bytes: d.size_bytes,
                                })
                                .collect(),
                            spec: s.vm.into_workload().spec,
                        }))
                    }
                    "error" => OperationState::Failed(ProviderError::ProviderFailed(
                        s.error.unwrap_or_else(|| "snapshot failed".into()),
                    )),
                    other => OperationState::Running(Running {
                        percent: None,
                        detail: other.to_owned(),
                    }),
                })
            }
            OperationKind::Materialize => {
                let vm = get_vm(&op.site, &op.id)?;
                if vm.status == "building" {
                    return Ok(OperationState::Running(Running {
                        percent: None,
                        detail: "building".into(),
                    }));
                }
                let addresses = vm.nics.iter().flat_map(|n| n.ips.clone()).collect();
                Ok(OperationState::Succeeded(Outcome::Materialized(
                    Materialized {
                        workload: vm.into_workload(),
                        addresses,
                    },
                )))
            }
            OperationKind::Fence | OperationKind::Unfence => {
                let vm = get_vm(&op.site, &op.id)?;
                Ok(OperationState::Succeeded(Outcome::Fenced(FenceReport {
                    write_blocked: vm.fenced,
                    epoch: vm.epoch,
                    workload_id: op.id,
                })))
            }
            OperationKind::Redirect => {
                let path = format!("/v1/routes/{}", encode(&op.id));
                let route: api::Route = send(call(&op.site, http::get, &path)?)?.json()?;
                Ok(OperationState::Succeeded(Outcome::Redirected(
                    RedirectReport {
                        target: RedirectTarget::Route(op.id),
                        backends: route
                            .backends
                            .into_iter()
                            .map(|b| WeightedBackend {
                                backend: b.backend,
                                weight: b.weight,
                            })
                            .collect(),
                    },
                )))
            }
            OperationKind::ExportDisk | OperationKind::ImportDisk => {
                let collection = if op.kind == OperationKind::ExportDisk {
                    "exports"
                } else {
                    "imports"
                };
                let path = format!("/v1/{collection}/{}", encode(&op.id));
                let t: api::Transfer = send(call(&op.site, http::get, &path)?)?.json()?;
                if t.status != "ready" {
                    return Ok(OperationState::Running(Running {
                        percent: None,
                        detail: t.status,
                    }));
                }
                Ok(OperationState::Succeeded(Outcome::DiskEndpoint(
                    DiskEndpoint {
                        url: t.url,
                        format: DiskFormat::Raw,
                        size_bytes: t.size_bytes,
                        headers: vec![("authorization".into(), format!("Bearer {}", t.token))],
                        ranged: true,
                        block_digests: true,
                        volume_id: t.volume_id,
                        expires_at: None,
                    },
                )))
            }
            // Cleanup finishes within the call; its handle lists what went.
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
        }
    }

    fn cleanup(req: CleanupRequest) -> Result<Operation, ProviderError> {
        let removed = match req.scope {
            // Snapshots, or volumes the data mover wrote.
            CleanupScope::RecoveryPoints(ids) => {
                for id in &ids {
                    let collection = if id.starts_with("vol-") {
                        "volumes"
                    } else {
                        "snapshots"
                    };
                    delete(&req.site, &format!("/v1/{collection}/{}", encode(id)))?;
                }
                ids
            }
            CleanupScope::Drill(sandbox) => {
                let vms: Vec<api::Vm> = send(call(&req.site, http::get, "/v1/vms")?)?.json()?;
                let mut removed = Vec::new();
                for vm in vms {
                    if vm.labels.get(DRILL_LABEL) == Some(&sandbox) {
                        delete(&req.site, &format!("/v1/vms/{}", encode(&vm.id)))?;
                        removed.push(vm.id);
                    }
                }
                removed
            }
            // Transfer endpoints: the site stops serving them (an import's
            // volume stays).
            CleanupScope::Transfers(ids) => {
                for id in &ids {
                    let collection = if id.starts_with("exp-") {
                        "exports"
                    } else {
                        "imports"
                    };
                    delete(&req.site, &format!("/v1/{collection}/{}", encode(id)))?;
                }
                ids
            }
            // A failed run's standby VMs: only those this plugin made (they
            // carry the key of the materialize that made them), all checked
            // before any goes; their disks are theirs (copies), so they go too.
            #[cfg(not(feature = "contract-0-1"))]
            CleanupScope::Workloads(ids) => {
                let mut present = Vec::new();
                for id in &ids {
                    match get_vm(&req.site, id) {
                        Ok(vm) if vm.key.is_none() => {
                            return Err(ProviderError::InvalidRequest(format!(
                                "workload '{id}' was not materialized by Rebound; it is not removed"
                            )));
                        }
                        Ok(_) => present.push(id),
                        Err(ProviderError::NotFound(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                for id in present {
                    delete(&req.site, &format!("/v1/vms/{}", encode(id)))?;
                }
                ids
            }
            // Abandoned imports: stop serving each and delete its volume.
            #[cfg(not(feature = "contract-0-1"))]
            CleanupScope::DiscardedImports(ids) => {
                let mut removed = Vec::new();
                for id in &ids {
                    let path = format!("/v1/imports/{}", encode(id));
                    let import: Option<api::Transfer> =
                        match send(call(&req.site, http::get, &path)?) {
                            Ok(response) => Some(response.json()?),
                            Err(ProviderError::NotFound(_)) => None,
                            Err(e) => return Err(e),
                        };
                    delete(&req.site, &path)?;
                    removed.push(id.clone());
                    if let Some(volume) = import.and_then(|i| i.volume_id) {
                        delete(&req.site, &format!("/v1/volumes/{}", encode(&volume)))?;
                        removed.push(volume);
                    }
                }
                removed
            }
        };
        Ok(Operation {
            kind: OperationKind::Cleanup,
            site: req.site,
            id: removed.join(","),
        })
    }
}

/// The network a drill's VMs are attached to, isolated from production.
const ISOLATED: &str = "drill-isolated";

/// The label the host puts on a drill's VMs (its sandbox id).
const DRILL_LABEL: &str = "rebound/drill";

/// Start an export or import once per key: the one created under `key`
/// earlier is the answer.
fn transfer(
    site: &str,
    collection: &str,
    key: &str,
    body: &serde_json::Value,
) -> Result<String, ProviderError> {
    let path = format!("/v1/{collection}");
    let existing: Vec<api::Transfer> = send(call(
        site,
        http::get,
        &format!("{path}?key={}", encode(key)),
    )?)?
    .json()?;
    if let Some(t) = existing.into_iter().next() {
        return Ok(t.id);
    }
    let created: api::Transfer = call(site, http::post, &path)?
        .json(body)?
        .send()?
        .error_for_status()?
        .json()?;
    info!("transfer endpoint requested"; "id" => created.id, "kind" => collection);
    Ok(created.id)
}

fn get_vm(site: &str, id: &str) -> Result<api::Vm, ProviderError> {
    send(call(site, http::get, &format!("/v1/vms/{}", encode(id)))?)?.json()
}

/// Delete; what is already gone counts as removed.
fn delete(site: &str, path: &str) -> Result<(), ProviderError> {
    match call(site, http::delete, path)?.send()?.error_for_status() {
        Ok(_) | Err(ProviderError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

register!(Example);

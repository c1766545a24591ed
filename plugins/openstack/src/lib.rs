//! The OpenStack provider plugin: one site is one region of an OpenStack
//! cloud, reached through Keystone's catalog. What each export does on
//! OpenStack, and what it does not, is in `plugins/openstack/README.md`.
//!
//! Site config: `auth_url` (Keystone v3, e.g. `https://keystone:5000/v3`),
//! `region`, `user`, `project`, and optionally `user_domain`,
//! `project_domain` (both `Default`), `interface` (`public`), `mover_image`
//! (`rebound-mover`), `mover_flavor`, `mover_network`, `isolated_network`,
//! `timeout_ms` (per request, 10000). Secrets: `password`, sent through the
//! host's placeholder so the plugin never holds it, and `mover_key` (any
//! random value of at least 32 characters), which the bearer tokens of the
//! mover appliances are derived under — needed only by export and import.
//!
//! Build: `cargo xtask build-plugins` (or `cargo build --profile plugin
//! --target wasm32-wasip2 -p rebound-plugin-openstack --lib`).
#![deny(rust_2018_idioms)]
// std's `HashMap` seeds itself from `wasi:random`, which the host does not
// offer plugins: maps here are `BTreeMap`s.

mod cinder;
mod cleanup;
mod cloud;
mod fence;
mod handle;
mod materialize;
mod nova;
mod recovery;
mod redirect;
mod transfer;

use rebound_plugin_sdk::{
    Capabilities, CleanupRequest, DiskFormat, ExportRequest, FenceRequest, HealthReport,
    HealthStatus, ImportRequest, InventoryFilter, MaterializeRequest, Operation, OperationKind,
    OperationState, PluginInfo, Provider, ProviderError, RedirectRequest, ReplicateRequest,
    SnapshotRequest, Workload, register, site,
};

use crate::cloud::Service;
use crate::handle::Handle;

/// Who this plugin is. Pure, so tests and benchmarks can call it natively.
pub fn describe_info() -> PluginInfo {
    PluginInfo {
        name: "openstack".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        platform: "openstack".into(),
        capabilities: Capabilities::FENCING
            | Capabilities::NATIVE_REPLICATION
            | Capabilities::WEIGHTED_REDIRECT
            | Capabilities::EXPORT_DISK
            | Capabilities::IMPORT_DISK,
        export_formats: vec![DiskFormat::Raw],
        import_formats: vec![DiskFormat::Raw],
        // Cinder snapshots are cheap; a minute apart is sustainable.
        snapshot_granularity_secs: 60,
    }
}

struct OpenStack;

impl Provider for OpenStack {
    fn describe() -> PluginInfo {
        describe_info()
    }

    fn health(site: String) -> Result<HealthReport, ProviderError> {
        let started = site::monotonic_ns();
        let elapsed =
            || u32::try_from((site::monotonic_ns() - started) / 1_000_000).unwrap_or(u32::MAX);
        let unreachable = |detail: String| HealthReport {
            status: HealthStatus::Unreachable,
            latency_ms: elapsed(),
            api_version: None,
            detail,
        };
        let cloud = match cloud::connect(&site) {
            Ok(cloud) => cloud,
            Err(
                e @ (ProviderError::Transient(_)
                | ProviderError::Throttled(_)
                | ProviderError::ProviderFailed(_)),
            ) => return Ok(unreachable(format!("Keystone: {}", explain(&e)))),
            Err(e) => return Err(e),
        };
        let compute = cloud.get(Service::Compute, "/");
        let volume = cloud.get(Service::Volume, "/os-services");
        let (status, detail) = match (&compute, &volume) {
            (Ok(_), Ok(services)) => {
                let down: Vec<String> = services["services"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|s| s["state"] != "up")
                    .map(|s| nova::text(s, "binary").to_owned())
                    .collect();
                if down.is_empty() {
                    (
                        HealthStatus::Healthy,
                        format!("Nova and Cinder answer in region '{}'", cloud.region),
                    )
                } else {
                    (
                        HealthStatus::Degraded,
                        format!(
                            "Cinder services down in '{}': {}",
                            cloud.region,
                            down.join(", ")
                        ),
                    )
                }
            }
            (Err(e), _) | (_, Err(e)) => (
                HealthStatus::Degraded,
                format!("Keystone answers but: {}", explain(e)),
            ),
        };
        Ok(HealthReport {
            status,
            latency_ms: elapsed(),
            api_version: compute.ok().and_then(|v| {
                v["version"]["version"]
                    .as_str()
                    .map(|v| format!("compute {v}"))
            }),
            detail,
        })
    }

    fn inventory(site: String, filter: InventoryFilter) -> Result<Vec<Workload>, ProviderError> {
        let cloud = cloud::connect(&site)?;
        let servers = nova::list(&cloud)?;
        let volumes = nova::volume_map(&cloud)?;
        Ok(servers
            .iter()
            .filter(|s| !nova::is_appliance(s) && !nova::deleting(s))
            .map(|s| nova::workload(s, &volumes))
            .filter(|w| filter.workload_ids.is_empty() || filter.workload_ids.contains(&w.id))
            .filter(|w| filter.labels.iter().all(|l| w.spec.labels.contains(l)))
            .collect())
    }

    fn snapshot(req: SnapshotRequest) -> Result<Operation, ProviderError> {
        recovery::snapshot(req)
    }

    fn replicate(req: ReplicateRequest) -> Result<Operation, ProviderError> {
        recovery::replicate(req)
    }

    fn export_disk(req: ExportRequest) -> Result<Operation, ProviderError> {
        transfer::export_disk(req)
    }

    fn import_disk(req: ImportRequest) -> Result<Operation, ProviderError> {
        transfer::import_disk(req)
    }

    fn materialize(req: MaterializeRequest) -> Result<Operation, ProviderError> {
        materialize::materialize(req)
    }

    fn fence(req: FenceRequest) -> Result<Operation, ProviderError> {
        fence::fence(req)
    }

    fn unfence(req: FenceRequest) -> Result<Operation, ProviderError> {
        fence::unfence(req)
    }

    fn redirect(req: RedirectRequest) -> Result<Operation, ProviderError> {
        redirect::redirect(req)
    }

    fn cleanup(req: CleanupRequest) -> Result<Operation, ProviderError> {
        cleanup::cleanup(req)
    }

    fn status(op: Operation) -> Result<OperationState, ProviderError> {
        let site = op.site.as_str();
        match (op.kind, Handle::parse(&op.id)?) {
            (
                OperationKind::Snapshot,
                Handle::Snapshot {
                    workload,
                    snapshots,
                    spec,
                },
            ) => recovery::snapshot_status(site, workload, snapshots, spec),
            (
                OperationKind::Replicate,
                Handle::Replicate {
                    workload,
                    source_region,
                    backups,
                    captured_at,
                    spec,
                },
            ) => recovery::replicate_status(
                site,
                workload,
                source_region,
                backups,
                captured_at,
                spec,
            ),
            (
                OperationKind::ExportDisk | OperationKind::ImportDisk,
                Handle::Transfer {
                    export,
                    key,
                    volume,
                    size_bytes,
                },
            ) => transfer::status(site, export, &key, &volume, size_bytes),
            (
                OperationKind::Materialize,
                Handle::Materialize {
                    key,
                    volumes,
                    server,
                    start,
                },
            ) => materialize::status(site, &key, &volumes, &server, start),
            (OperationKind::Fence, Handle::Fence { server, .. }) => {
                fence::status(site, &server, false)
            }
            (OperationKind::Unfence, Handle::Fence { server, .. }) => {
                fence::status(site, &server, true)
            }
            (OperationKind::Redirect, Handle::Redirect(redirect)) => {
                redirect::status(site, redirect)
            }
            (
                OperationKind::Cleanup,
                Handle::Cleanup {
                    removed,
                    key,
                    servers,
                    volumes,
                },
            ) => cleanup::status(site, removed, &key, &servers, &volumes),
            (kind, _) => Err(ProviderError::InvalidRequest(format!(
                "this handle is not a {kind:?} operation of the OpenStack plugin"
            ))),
        }
    }
}

/// One line for a person: the error's message.
pub(crate) fn explain(error: &ProviderError) -> String {
    match error {
        ProviderError::NotFound(m)
        | ProviderError::Unauthorized(m)
        | ProviderError::Transient(m)
        | ProviderError::InvalidRequest(m)
        | ProviderError::Unsupported(m)
        | ProviderError::Conflict(m)
        | ProviderError::ProviderFailed(m) => m.clone(),
        ProviderError::Throttled(t) => t.message.clone(),
    }
}

register!(OpenStack);

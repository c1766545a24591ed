//! The KubeVirt provider plugin: OpenShift Virtualization / KubeVirt
//! clusters through the Kubernetes API (README.md says what each contract
//! function does there, and what is not supported).
//!
//! - workloads are the VirtualMachines of the site's namespace, by name;
//! - recovery points are VirtualMachineSnapshots (their contents list the
//!   volume snapshots and keep the VM's spec);
//! - the data path is CDI's: `export-disk` is a VirtualMachineExport of a
//!   snapshot read with its `x-kubevirt-export-token`, `import-disk` a
//!   DataVolume (blank, or a clone of the last copy for a delta) written
//!   through the upload proxy with an `UploadTokenRequest`'s token;
//! - native replication is CSI-addons VolumeReplication: a snapshot's
//!   volumes restored into point-in-time PVCs the storage mirrors to the
//!   peer cluster (`replication`);
//! - `materialize` creates a VirtualMachine whose DataVolume templates clone
//!   the imported volumes or the promoted mirrored PVCs (or restore the
//!   snapshot's volume snapshots);
//! - `fence` halts the VM (`runStrategy: Halted`) and records the fencing
//!   epoch in its annotations; `redirect` sets OpenShift Route backend
//!   weights (or a Service's selector).
//!
//! Every object a mutating call creates has a name derived from the call's
//! idempotency key and carries the key in `rebound.io/idempotency-key`, so
//! a repeated call finds it instead of creating another.
//!
//! Site config: `endpoint` (API server URL), `namespace`; optional
//! `isolated_network` (drills; default `rebound-isolated`),
//! `upload_proxy_url` (else the CDIConfig's `status.uploadProxyURL`),
//! `export_ttl` (default `2h`), `volume_replication_class` (native
//! replication). Secret: `token`, a service account's bearer
//! token, sent through the host's placeholder so the plugin never holds
//! it. The cluster's CA is the site's `ca_file`.
//!
//! Build: `cargo xtask build-plugins`.
#![deny(rust_2018_idioms)]

mod cleanup;
mod kube;
mod names;
mod points;
mod replication;
mod spec;
mod traffic;
mod transfer;
mod workloads;

use rebound_plugin_sdk::{
    Capabilities, CleanupRequest, DiskFormat, ExportRequest, FenceRequest, HealthReport,
    HealthStatus, ImportRequest, InventoryFilter, MaterializeRequest, Operation, OperationKind,
    OperationState, PluginInfo, Provider, ProviderError, RedirectRequest, ReplicateRequest,
    SnapshotRequest, Workload, register, site,
};

use crate::kube::Cluster;

/// Who this plugin is. Pure, so tests can call it natively.
pub fn describe_info() -> PluginInfo {
    PluginInfo {
        name: "kubevirt".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        platform: "kubevirt".into(),
        capabilities: Capabilities::EXPORT_DISK
            | Capabilities::IMPORT_DISK
            | Capabilities::FENCING
            | Capabilities::WEIGHTED_REDIRECT
            | Capabilities::APP_CONSISTENT_FREEZE
            | Capabilities::NATIVE_REPLICATION,
        export_formats: vec![DiskFormat::Raw],
        import_formats: vec![DiskFormat::Raw],
        snapshot_granularity_secs: 60,
    }
}

struct KubeVirt;

impl Provider for KubeVirt {
    fn describe() -> PluginInfo {
        describe_info()
    }

    fn health(site: String) -> Result<HealthReport, ProviderError> {
        health(&site)
    }

    fn inventory(site: String, filter: InventoryFilter) -> Result<Vec<Workload>, ProviderError> {
        workloads::inventory(&Cluster::of(&site)?, &filter)
    }

    fn snapshot(req: SnapshotRequest) -> Result<Operation, ProviderError> {
        points::snapshot(&req)
    }

    fn replicate(req: ReplicateRequest) -> Result<Operation, ProviderError> {
        replication::replicate(&req)
    }

    fn export_disk(req: ExportRequest) -> Result<Operation, ProviderError> {
        transfer::export(&req)
    }

    fn import_disk(req: ImportRequest) -> Result<Operation, ProviderError> {
        transfer::import(&req)
    }

    fn materialize(req: MaterializeRequest) -> Result<Operation, ProviderError> {
        workloads::materialize(&req)
    }

    fn fence(req: FenceRequest) -> Result<Operation, ProviderError> {
        workloads::fence(&req, true)
    }

    fn unfence(req: FenceRequest) -> Result<Operation, ProviderError> {
        workloads::fence(&req, false)
    }

    fn redirect(req: RedirectRequest) -> Result<Operation, ProviderError> {
        traffic::redirect(&req)
    }

    fn cleanup(req: CleanupRequest) -> Result<Operation, ProviderError> {
        cleanup::cleanup(&req)
    }

    fn status(op: Operation) -> Result<OperationState, ProviderError> {
        let cluster = Cluster::of(&op.site)?;
        match op.kind {
            OperationKind::Snapshot => points::status(&cluster, &op.id),
            OperationKind::ExportDisk => transfer::export_status(&cluster, &op.id),
            OperationKind::ImportDisk => transfer::import_status(&cluster, &op.id),
            OperationKind::Materialize => workloads::materialize_status(&cluster, &op.id),
            OperationKind::Fence => workloads::fence_status(&cluster, &op.id, true),
            OperationKind::Unfence => workloads::fence_status(&cluster, &op.id, false),
            OperationKind::Redirect => traffic::status(&cluster, &op.id),
            OperationKind::Cleanup => Ok(cleanup::status(&op.id)),
            OperationKind::Replicate => replication::status(&cluster, &op.id),
        }
    }
}

/// Reachability (`/readyz`), the release (`/version`), and whether the
/// token may read the namespace and KubeVirt is served.
fn health(site_name: &str) -> Result<HealthReport, ProviderError> {
    let cluster = Cluster::of(site_name)?;
    let started = site::monotonic_ns();
    let report = |status, api_version: Option<String>, detail: String| HealthReport {
        status,
        latency_ms: u32::try_from((site::monotonic_ns() - started) / 1_000_000).unwrap_or(u32::MAX),
        api_version,
        detail,
    };
    let ready = match cluster.probe("/readyz") {
        Ok(r) => r,
        Err(e) => {
            return Ok(report(
                HealthStatus::Unreachable,
                None,
                format!("the API server of site '{site_name}' did not answer: {e}"),
            ));
        }
    };
    if !ready.is_success() {
        return Ok(report(
            HealthStatus::Unreachable,
            None,
            format!(
                "the API server of site '{site_name}' answered {} for /readyz",
                ready.status()
            ),
        ));
    }
    let version = cluster
        .probe("/version")
        .ok()
        .filter(|r| r.is_success())
        .and_then(|r| r.json::<serde_json::Value>().ok())
        .and_then(|v| v["gitVersion"].as_str().map(str::to_owned));
    let ns = cluster.probe(&format!("/api/v1/namespaces/{}", cluster.namespace));
    let kubevirt = cluster.probe("/apis/kubevirt.io/v1");
    let problem = match (&ns, &kubevirt) {
        (Err(e), _) | (_, Err(e)) => Some(format!("a probe failed: {e}")),
        (Ok(r), _) if matches!(r.status(), 401 | 403) => Some(format!(
            "the token was refused ({}) reading namespace '{}'; check the site's token secret",
            r.status(),
            cluster.namespace
        )),
        (Ok(r), _) if r.status() == 404 => Some(format!(
            "namespace '{}' does not exist; fix the site's namespace setting",
            cluster.namespace
        )),
        (_, Ok(r)) if r.status() == 404 => {
            Some("KubeVirt is not installed (kubevirt.io/v1 is not served)".into())
        }
        (Ok(a), Ok(b)) if !a.is_success() || !b.is_success() => Some(format!(
            "the API answered {} and {} to the namespace and KubeVirt probes",
            a.status(),
            b.status()
        )),
        _ => None,
    };
    Ok(match problem {
        Some(detail) => report(HealthStatus::Degraded, version, detail),
        None => report(
            HealthStatus::Healthy,
            version,
            format!(
                "API server ready, KubeVirt served, namespace '{}' readable",
                cluster.namespace
            ),
        ),
    })
}

register!(KubeVirt);

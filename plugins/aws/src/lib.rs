//! The AWS provider plugin: one site is one AWS region. EC2 instances are
//! workloads; a recovery point is one EBS snapshot per volume, tagged;
//! native replication is CopySnapshot into the other site's region;
//! changed blocks come from EBS direct; export-disk and import-disk go
//! through a mover appliance instance (`transfer.rs`); materialize registers
//! an AMI from the point (or from snapshots of imported volumes) and runs
//! an instance; fencing stops it; redirect moves Route 53
//! weighted records or an Elastic IP. Every request is SigV4-signed by the
//! plugin ([`rebound_sigv4`]). `plugins/aws/README.md` says what is and is
//! not covered.
//!
//! Site config: `endpoint` (the EC2 endpoint; the lab's front serves every
//! service at one URL), `region`, optional `route53_endpoint`,
//! `ebs_endpoint`, `subnet`, `security_group`, `isolated_subnet`,
//! `isolated_security_group`, `mover_image`, `mover_instance_type`,
//! `mover_subnet`, `mover_security_group`. Secrets: `access_key_id`,
//! `secret_access_key` (revealed to sign; the host audits each reveal).
//!
//! Build: `cargo xtask build-plugins` (or `cargo build --profile plugin
//! --target wasm32-wasip2 -p rebound-plugin-aws --lib`).
#![deny(rust_2018_idioms)]

mod client;
mod ec2;
mod launch;
mod points;
mod route;
mod transfer;
mod xml;

use rebound_plugin_sdk::{
    ByteRange, Capabilities, ChangedBlocksRequest, CleanupRequest, DiskFormat, ExportRequest,
    FenceRequest, HealthReport, HealthStatus, ImportRequest, InventoryFilter, MaterializeRequest,
    Operation, OperationKind, OperationState, PluginInfo, Provider, ProviderError, RedirectRequest,
    ReplicateRequest, SnapshotRequest, Workload, register, site,
};

use crate::client::{Params, connect};

/// Who this plugin is. Pure, so tests and benchmarks can call it natively.
pub fn describe_info() -> PluginInfo {
    PluginInfo {
        name: "aws".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        platform: "aws".into(),
        capabilities: Capabilities::FENCING
            | Capabilities::NATIVE_REPLICATION
            | Capabilities::WEIGHTED_REDIRECT
            | Capabilities::INCREMENTAL_SNAPSHOTS
            | Capabilities::CHANGED_BLOCKS
            | Capabilities::EXPORT_DISK
            | Capabilities::IMPORT_DISK,
        export_formats: vec![DiskFormat::Raw],
        import_formats: vec![DiskFormat::Raw],
        // EBS snapshots are incremental; AWS sustains one every few minutes
        // per volume comfortably.
        snapshot_granularity_secs: 300,
    }
}

struct AwsProvider;

impl Provider for AwsProvider {
    fn describe() -> PluginInfo {
        describe_info()
    }

    fn health(site_name: String) -> Result<HealthReport, ProviderError> {
        let started = site::monotonic_ns();
        let elapsed =
            || u32::try_from((site::monotonic_ns() - started) / 1_000_000).unwrap_or(u32::MAX);
        let aws = connect(&site_name)?;
        match aws.ec2(&Params::action("DescribeAvailabilityZones").0) {
            Ok(zones) => {
                let available = zones
                    .items("availabilityZoneInfo")
                    .filter(|z| z.text("zoneState") == "available")
                    .count();
                Ok(HealthReport {
                    status: if available > 0 {
                        HealthStatus::Healthy
                    } else {
                        HealthStatus::Degraded
                    },
                    latency_ms: elapsed(),
                    api_version: Some(format!("ec2 {}", client::EC2_VERSION)),
                    detail: format!(
                        "EC2 answers in {}: {available} zone(s) available",
                        aws.region
                    ),
                })
            }
            Err(e @ ProviderError::Unauthorized(_)) => Err(e),
            Err(e) => Ok(HealthReport {
                status: HealthStatus::Unreachable,
                latency_ms: elapsed(),
                api_version: None,
                detail: format!("EC2 in {}: {e}", aws.region),
            }),
        }
    }

    fn inventory(
        site_name: String,
        filter: InventoryFilter,
    ) -> Result<Vec<Workload>, ProviderError> {
        let aws = connect(&site_name)?;
        let sizes = ec2::volume_sizes(&aws)?;
        Ok(ec2::instances(&aws, Params::action("DescribeInstances"))?
            .iter()
            // Mover appliances are the plugin's tools, not workloads.
            .filter(|i| i.tag(transfer::MODE_TAG).is_none())
            .map(|i| ec2::workload(i, &sizes))
            .filter(|w| filter.workload_ids.is_empty() || filter.workload_ids.contains(&w.id))
            .filter(|w| filter.labels.iter().all(|l| w.spec.labels.contains(l)))
            .collect())
    }

    fn snapshot(req: SnapshotRequest) -> Result<Operation, ProviderError> {
        points::snapshot(req)
    }

    fn replicate(req: ReplicateRequest) -> Result<Operation, ProviderError> {
        points::replicate(req)
    }

    fn changed_blocks(req: ChangedBlocksRequest) -> Result<Vec<ByteRange>, ProviderError> {
        points::changed_blocks(req)
    }

    fn export_disk(req: ExportRequest) -> Result<Operation, ProviderError> {
        transfer::export_disk(req)
    }

    fn import_disk(req: ImportRequest) -> Result<Operation, ProviderError> {
        transfer::import_disk(req)
    }

    fn materialize(req: MaterializeRequest) -> Result<Operation, ProviderError> {
        launch::materialize(req)
    }

    fn fence(req: FenceRequest) -> Result<Operation, ProviderError> {
        launch::fence(req, true)
    }

    fn unfence(req: FenceRequest) -> Result<Operation, ProviderError> {
        launch::fence(req, false)
    }

    fn redirect(req: RedirectRequest) -> Result<Operation, ProviderError> {
        route::redirect(req)
    }

    fn cleanup(req: CleanupRequest) -> Result<Operation, ProviderError> {
        launch::cleanup(req)
    }

    fn status(op: Operation) -> Result<OperationState, ProviderError> {
        match op.kind {
            OperationKind::Snapshot | OperationKind::Replicate => points::status(&op),
            OperationKind::Materialize => launch::materialize_status(&op),
            OperationKind::Fence => launch::fence_status(&op, true),
            OperationKind::Unfence => launch::fence_status(&op, false),
            OperationKind::Redirect => route::status(&op),
            OperationKind::Cleanup => launch::cleanup_status(&op),
            OperationKind::ExportDisk | OperationKind::ImportDisk => transfer::status(&op),
        }
    }
}

register!(AwsProvider);

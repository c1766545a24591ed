//! The `transfer` step: a replication cycle through the host's data mover
//! (a plan with `replication.mode: data_mover`, any platform to any other).
//!
//! Start: for each disk of the recovery point the run's snapshot produced,
//! ask the source site to `export-disk` it and the target site to
//! `import-disk` a volume for it — onto the newest copy of the same disk
//! already at the target when there is one, so only changed blocks move
//! (the platform writes into a clone; the last good copy stays until it is
//! verified superseded). Both are operations; the step's handle lists them.
//!
//! Poll: once every endpoint is ready, the data mover copies each disk —
//! the ranges the source platform lists as changed since the base copy's
//! own source (`changed-blocks`, where the plugin offers it), otherwise the
//! blocks whose digests differ (an endpoint that lists none is hashed by
//! the mover as it reads it) — and verifies it block by block; only
//! then is the set of imported volumes recorded as a recovery point at the
//! target — the one a later `materialize` there attaches. A copy that fails
//! verification fails the step, so the run never cuts over to it. A step
//! resumed after a crash asks for the same endpoints (same keys) and the
//! digest comparison skips every block the first attempt already moved.
//!
//! Transfer tokens travel only in memory: the handle and the output persist
//! operation ids, sizes, digests and byte counts, never endpoint headers.

use rebound_datamover::{CopyOptions, Endpoint, MemoryCheckpoint, Mode};
use rebound_runtime::bindings::exports::{
    ChangedBlocksRequest, CleanupRequest, CleanupScope, ExportRequest, ImportRequest,
};
use rebound_runtime::bindings::{
    Capabilities, DiskEndpoint, DiskFormat, Operation, OperationKind, OperationState, Outcome,
};
use rebound_runtime::{Status, explain};
use rebound_store::{RecoveryPointRecord, StepRecord};
use serde_json::{Value, json};

use super::{PluginSteps, earlier, handle};
use crate::{Progress, Started, StepError};

fn retryable(e: rebound_store::StoreError) -> StepError {
    StepError::Retryable(e.to_string())
}

/// The disks of a recovery point as recorded: `(disk_id, copy_id, size)`.
fn disks_of(point: &RecoveryPointRecord) -> Vec<(String, String, u64)> {
    point.detail["disks"]
        .as_array()
        .map(|disks| {
            disks
                .iter()
                .map(|d| {
                    (
                        d["disk_id"].as_str().unwrap_or_default().to_owned(),
                        d["copy_id"].as_str().unwrap_or_default().to_owned(),
                        d["size_bytes"].as_u64().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A finished transfer's step output, from its recovery point.
fn output_of(point: &RecoveryPointRecord) -> Value {
    let detail = &point.detail;
    let digests: Vec<Value> = detail["disks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| d["digest"].clone())
        .collect();
    json!({
        "recovery_point": point.id, "site": point.site, "volumes": detail["volumes"],
        "captured_at_ms": point.captured_at_ms,
        "bytes_total": detail["bytes_total"], "bytes_moved": detail["bytes_moved"],
        "digests": digests,
        "modes": detail["disks"].as_array().into_iter().flatten().map(|d| d["mode"].clone()).collect::<Vec<_>>(),
        "bytes_hashed": detail["disks"].as_array().into_iter().flatten()
            .filter_map(|d| d["bytes_hashed"].as_u64()).sum::<u64>(),
        "bytes_read": detail["disks"].as_array().into_iter().flatten()
            .filter_map(|d| d["bytes_read"].as_u64()).sum::<u64>(),
    })
}

/// The data mover's view of a plugin's endpoint on a site that trusts
/// `ca_pem` (its platform's own CA, the site's setting).
pub fn mover_endpoint(d: &DiskEndpoint, ca_pem: Option<&str>) -> Endpoint {
    Endpoint {
        url: d.url.clone(),
        headers: d.headers.clone(),
        size: d.size_bytes,
        ranged: d.ranged,
        block_digests: d.block_digests,
        ca_pem: ca_pem.map(str::to_owned),
    }
}

impl PluginSteps {
    pub(super) async fn start_transfer(&self, step: &StepRecord) -> Result<Started, StepError> {
        let input = &step.input;
        let text = |field: &str| input[field].as_str().unwrap_or_default().to_owned();
        let (from, to, workload) = (text("from"), text("to"), text("workload"));
        let scope = self.scope(step).await?;
        let point_id = earlier(&scope.steps, step.seq, "snapshot", &from, &workload)
            .and_then(|o| o["recovery_point"].as_str().map(str::to_owned))
            .ok_or_else(|| {
                StepError::Fatal(format!(
                    "no snapshot of '{workload}' earlier in this run to transfer"
                ))
            })?;
        let points = self
            .store
            .recovery_points(&scope.plan)
            .await
            .map_err(retryable)?;
        // (A drill's snapshot on its way back is the drill's own.)
        let source = self
            .store
            .recovery_point(&from, &point_id)
            .await
            .map_err(retryable)?
            .ok_or_else(|| {
                StepError::Fatal(format!(
                    "recovery point '{point_id}' on '{from}' is not recorded"
                ))
            })?;
        let source = &source;
        // The newest copy of this workload at the target (newest first),
        // and the recovery point at the source it is a verified copy of,
        // if that is still there (what `changed-blocks` compares against).
        let newest = points
            .iter()
            .find(|p| p.site == to && p.workload == workload);
        let base = newest.map(disks_of).unwrap_or_default();
        let base_source = newest
            .filter(|p| p.detail["source"]["site"] == from.as_str())
            .and_then(|p| p.detail["source"]["id"].as_str())
            .filter(|id| points.iter().any(|p| p.site == from && p.id == *id));
        let mut exports = Vec::new();
        let mut imports = Vec::new();
        let mut disk_ids = Vec::new();
        for (i, (disk_id, _, size)) in disks_of(source).into_iter().enumerate() {
            disk_ids.push(disk_id.clone());
            let export = ExportRequest {
                key: format!("{}/export/{i}", step.idempotency_key),
                site: from.clone(),
                recovery_point_id: point_id.clone(),
                disk_id,
                format: DiskFormat::Raw,
            };
            exports.push(handle(&self.call(&[&from], export).await?));
            let import = ImportRequest {
                key: format!("{}/import/{i}", step.idempotency_key),
                site: to.clone(),
                name: format!("{workload}-disk{i}"),
                size_bytes: size,
                format: DiskFormat::Raw,
                volume_id: base
                    .get(i)
                    .filter(|(_, _, base_size)| *base_size == size)
                    .map(|(_, copy, _)| copy.clone()),
            };
            imports.push(handle(&self.call(&[&to], import).await?));
        }
        // `changed-blocks` applies only when every disk is imported onto
        // the copy of that base.
        let base_source = base_source.filter(|_| {
            let sizes: Vec<u64> = disks_of(source).iter().map(|d| d.2).collect();
            base.len() == sizes.len() && base.iter().zip(&sizes).all(|(b, s)| b.2 == *s)
        });
        Ok(Started::Operation(json!({
            "kind": "transfer", "site": to, "from": from, "recovery_point": point_id,
            "exports": exports, "imports": imports, "disk_ids": disk_ids,
            "base_source": base_source,
        })))
    }

    /// The endpoint an export or import operation produced, once ready.
    async fn endpoint_of(&self, op: &Value) -> Result<Option<DiskEndpoint>, StepError> {
        let text = |field: &str| op[field].as_str().unwrap_or_default().to_owned();
        let kind = match text("kind").as_str() {
            "export-disk" => OperationKind::ExportDisk,
            _ => OperationKind::ImportDisk,
        };
        let site = text("site");
        let operation = Operation {
            kind,
            site: site.clone(),
            id: text("id"),
        };
        match self.call(&[&site], Status(operation)).await? {
            OperationState::Running(_) => Ok(None),
            OperationState::Failed(e) => Err(StepError::Fatal(explain(&e))),
            OperationState::Succeeded(Outcome::DiskEndpoint(d)) => Ok(Some(d)),
            OperationState::Succeeded(_) => Err(StepError::Fatal(format!(
                "'{site}' answered a {} with something other than a disk endpoint",
                text("kind")
            ))),
        }
    }

    /// Clean up after a transfer that will not finish (it failed, or its
    /// run stopped), best effort: the volumes its imports made hold an
    /// unverified copy no recovery point names, and its endpoints (an
    /// appliance, an export) would cost the operator until they expire.
    /// A transfer whose copy was verified and recorded (its host stopped
    /// before the step could say so) keeps its volumes: they are that
    /// recovery point; only its endpoints go.
    ///
    /// A plugin of the contract 0.2 discards the imports in one cleanup
    /// (`discarded-imports`): endpoints released and the volumes they made
    /// deleted, whatever stage they reached, nothing started. A 0.1 plugin
    /// has no such call: the volumes are learnt from each import's
    /// `status` while the endpoints still answer — which may first move an
    /// import still under way on (the AWS plugin launches its appliance
    /// there; the release right after undoes it) — then the endpoints
    /// released, then the volumes deleted, never one a recorded recovery
    /// point names.
    pub(super) async fn abandon_transfer(&self, step: &StepRecord, operation: &Value) {
        let ops = |field: &str| operation[field].as_array().cloned().unwrap_or_default();
        let (exports, imports) = (ops("exports"), ops("imports"));
        let site = operation["site"].as_str().unwrap_or_default();
        let recorded = match self.scope(step).await {
            Ok(scope) => self
                .store
                .recovery_points(&scope.plan)
                .await
                .map_err(|e| format!("the store did not answer: {e}")),
            Err(e) => Err(format!("{e:?}")),
        };
        let recorded = match recorded {
            Ok(points) => points,
            Err(e) => {
                tracing::warn!(run = %step.run, step = %step.name, "abandoned transfer: its endpoints are released, the volumes its imports made on '{site}' kept: {e}");
                self.release_endpoints(step, &exports, &imports).await;
                return;
            }
        };
        let verified = match self
            .store
            .recovery_point(site, &format!("transfer/{}", step.idempotency_key))
            .await
        {
            Ok(point) => point.is_some(),
            Err(e) => {
                tracing::warn!(run = %step.run, step = %step.name, "abandoned transfer: its endpoints are released, the volumes its imports made on '{site}' kept: {e}");
                true
            }
        };
        if imports.is_empty() || verified {
            self.release_endpoints(step, &exports, &imports).await;
            return;
        }
        let discards = match self.site(site) {
            Ok(bound) => self
                .pinned(bound)
                .await
                .is_ok_and(|s| s.plugin.contract() >= semver::Version::new(0, 2, 0)),
            Err(_) => false,
        };
        if discards {
            self.release_endpoints(step, &exports, &[]).await;
            let ids: Vec<String> = imports
                .iter()
                .filter_map(|o| o["id"].as_str().map(str::to_owned))
                .collect();
            let request = CleanupRequest {
                key: format!("{}/discard-imports", step.idempotency_key),
                site: site.to_owned(),
                scope: CleanupScope::DiscardedImports(ids.clone()),
            };
            match self.call(&[site], request).await {
                Ok(op) => {
                    tracing::info!(run = %step.run, step = %step.name, "abandoned transfer: discarding the imports {ids:?} on '{site}'");
                    self.finish_in_background(
                        op,
                        format!("run {}: the discarded imports {ids:?}", step.run),
                    )
                    .await;
                }
                Err(e) => {
                    tracing::warn!(run = %step.run, step = %step.name, "abandoned transfer: discarding the imports {ids:?} on '{site}': {e:?}")
                }
            }
            return;
        }
        let mut volumes = Vec::new();
        for import in &imports {
            if let Ok(Some(DiskEndpoint {
                volume_id: Some(volume),
                ..
            })) = self.endpoint_of(import).await
            {
                volumes.push(volume);
            }
        }
        self.release_endpoints(step, &exports, &imports).await;
        let recorded: Vec<String> = recorded.iter().flat_map(super::platform_ids).collect();
        volumes.retain(|v| !recorded.contains(v));
        if volumes.is_empty() {
            return;
        }
        let request = CleanupRequest {
            key: format!("{}/discard", step.idempotency_key),
            site: site.to_owned(),
            scope: CleanupScope::RecoveryPoints(volumes.clone()),
        };
        match self.call(&[site], request).await {
            Ok(op) => {
                tracing::info!(run = %step.run, step = %step.name, "abandoned transfer: deleting the unverified volumes {volumes:?} on '{site}'");
                self.finish_in_background(
                    op,
                    format!("run {}: the unverified volumes {volumes:?}", step.run),
                )
                .await;
            }
            Err(e) => {
                tracing::warn!(run = %step.run, step = %step.name, "abandoned transfer: deleting volumes {volumes:?} on '{site}': {e:?}")
            }
        }
    }

    /// Poll a cleanup no step waits for to its end, in the background so
    /// the stopped run's compensation is not held up — a volume may stay
    /// attached for a while to the appliance just released (EC2 detaches it
    /// as the instance shuts down), and is deleted once it is not. Polls
    /// for at most ten minutes; the outcome is logged. Best effort, like the
    /// abandonment: a host that stops meanwhile leaves the rest. Polls the
    /// plugin version the run is pinned to (the one that started the
    /// cleanup), resolved before the task leaves the run's scope.
    async fn finish_in_background(&self, op: Operation, what: String) {
        const POLL: std::time::Duration = std::time::Duration::from_secs(2);
        const LIMIT: std::time::Duration = std::time::Duration::from_secs(600);
        let Ok(site) = self.site(&op.site) else {
            return;
        };
        let Ok(site) = self.pinned(site).await else {
            return;
        };
        let (runtime, budget) = (self.runtime.clone(), self.call_budget);
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let context = rebound_runtime::CallContext::new(vec![site.grant.clone()], budget);
            loop {
                let state = runtime
                    .call(&site.plugin, &context, Status(op.clone()))
                    .await;
                match state {
                    Ok(OperationState::Running(r)) if started.elapsed() < LIMIT => {
                        tracing::debug!("cleanup of {what}: {}", r.detail);
                        tokio::time::sleep(POLL).await;
                    }
                    Ok(OperationState::Succeeded(_)) => {
                        tracing::info!("cleanup of {what} on '{}' done", op.site);
                        return;
                    }
                    Ok(OperationState::Running(r)) => {
                        tracing::warn!(
                            "cleanup of {what} on '{}' gave up after ten minutes: {}",
                            op.site,
                            r.detail
                        );
                        return;
                    }
                    Ok(OperationState::Failed(e)) => {
                        tracing::warn!(
                            "cleanup of {what} on '{}' failed: {}",
                            op.site,
                            explain(&e)
                        );
                        return;
                    }
                    Err(e) => {
                        tracing::warn!("cleanup of {what} on '{}': {e}", op.site);
                        return;
                    }
                }
            }
        });
    }

    pub(super) async fn poll_transfer(
        &self,
        step: &StepRecord,
        operation: &Value,
    ) -> Result<Progress, StepError> {
        let ops = |field: &str| operation[field].as_array().cloned().unwrap_or_default();
        let (exports, imports) = (ops("exports"), ops("imports"));
        // Recorded already (a host died after verifying the copy, perhaps
        // after releasing the endpoints): done, from the record.
        let id = format!("transfer/{}", step.idempotency_key);
        let scope = self.scope(step).await?;
        let to = operation["site"].as_str().unwrap_or_default();
        if let Some(point) = self
            .store
            .recovery_point(to, &id)
            .await
            .map_err(retryable)?
        {
            self.release_endpoints(step, &exports, &imports).await;
            return Ok(Progress::Done(output_of(&point)));
        }
        let mut pairs = Vec::new();
        for (export, import) in exports.iter().zip(&imports) {
            let source = match self.endpoint_of(export).await {
                Ok(Some(e)) => e,
                Ok(None) => return Ok(Progress::Running),
                Err(StepError::Fatal(e)) => return Ok(Progress::Failed(e)),
                Err(e) => return Err(e),
            };
            let target = match self.endpoint_of(import).await {
                Ok(Some(e)) => e,
                Ok(None) => return Ok(Progress::Running),
                Err(StepError::Fatal(e)) => return Ok(Progress::Failed(e)),
                Err(e) => return Err(e),
            };
            pairs.push((source, target));
        }
        // The plugin chose these URLs; the mover goes only where the
        // operator granted each site.
        let from = operation["from"].as_str().unwrap_or_default();
        let (from_grant, to_grant) = (self.site(from)?.grant, self.site(to)?.grant);
        for (source, target) in &pairs {
            for (grant, url) in [(&from_grant, &source.url), (&to_grant, &target.url)] {
                if let Err(reason) = grant.check_data_url(url) {
                    return Ok(Progress::Failed(reason));
                }
            }
        }
        let mut disks = Vec::new();
        let (mut moved, mut total) = (0u64, 0u64);
        for (i, (source, target)) in pairs.iter().enumerate() {
            let options = CopyOptions {
                mode: self.delta_mode(operation, i).await,
                ..CopyOptions::default()
            };
            let report = rebound_datamover::copy(
                &mover_endpoint(source, from_grant.ca_pem.as_deref()),
                &mover_endpoint(target, to_grant.ca_pem.as_deref()),
                options,
                &mut MemoryCheckpoint::default(),
            )
            .await
            .map_err(|e| {
                // Unreachable endpoints may come back; a verification
                // failure or a size mismatch will not by retrying alone.
                match e {
                    rebound_datamover::MoveError::Http { .. } => {
                        StepError::Retryable(format!("disk {i}: {e}"))
                    }
                    _ => StepError::Fatal(format!("disk {i}: {e}")),
                }
            })?;
            moved += report.bytes_written;
            total += source.size_bytes;
            let volume = target.volume_id.clone().ok_or_else(|| {
                StepError::Fatal(format!("the import of disk {i} named no volume"))
            })?;
            disks.push(json!({
                "disk_id": format!("disk{i}"), "copy_id": volume, "size_bytes": source.size_bytes,
                "digest": report.disk_digest, "mode": report.mode,
                "bytes_hashed": report.bytes_hashed, "bytes_read": report.bytes_read,
            }));
        }
        // Verified: the imported volumes become the target's recovery point.
        let to = to.to_owned();
        let source_id = operation["recovery_point"].as_str().unwrap_or_default();
        let source = self
            .store
            .recovery_point(from, source_id)
            .await
            .map_err(retryable)?
            .ok_or_else(|| {
                StepError::Fatal(format!(
                    "recovery point '{source_id}' on '{from}' is not recorded"
                ))
            })?;
        let volumes: Vec<Value> = disks.iter().map(|d| d["copy_id"].clone()).collect();
        let record = RecoveryPointRecord {
            site: to.clone(),
            id,
            plan: scope.plan,
            workload: source.workload.clone(),
            captured_at_ms: source.captured_at_ms,
            run: step.run.clone(),
            detail: json!({
                "disks": disks, "volumes": volumes, "spec": source.detail["spec"],
                "consistency": source.detail["consistency"],
                "source": {"site": from, "id": source_id},
                "bytes_total": total, "bytes_moved": moved,
            }),
            // A drill's copies are its own (a round trip's way back).
            drill: scope.workflow == rebound_domain::Workflow::Drill,
        };
        self.store
            .record_recovery_point(&record)
            .await
            .map_err(retryable)?;
        self.release_endpoints(step, &exports, &imports).await;
        Ok(Progress::Done(output_of(&record)))
    }

    /// How disk `i` finds its delta: the source platform's changed-block
    /// listing since the recovery point the target's base copy came from,
    /// when the plugin offers one; otherwise block digests of both sides.
    async fn delta_mode(&self, operation: &Value, i: usize) -> Mode {
        let from = operation["from"].as_str().unwrap_or_default();
        let (Some(base), Some(target), Some(disk)) = (
            operation["base_source"].as_str(),
            operation["recovery_point"].as_str(),
            operation["disk_ids"][i].as_str(),
        ) else {
            return Mode::Digests;
        };
        // Offered by the version this run calls (the one it is pinned to).
        let offered = match self.site(from) {
            Ok(site) => self.pinned(site).await.is_ok_and(|s| {
                s.plugin
                    .info
                    .capabilities
                    .contains(Capabilities::CHANGED_BLOCKS)
            }),
            Err(_) => false,
        };
        if !offered {
            return Mode::Digests;
        }
        let request = ChangedBlocksRequest {
            site: from.to_owned(),
            disk_id: disk.to_owned(),
            base: base.to_owned(),
            target: target.to_owned(),
        };
        match self.call(&[from], request).await {
            Ok(ranges) => Mode::Changed(ranges.iter().map(|r| (r.offset, r.length)).collect()),
            Err(e) => {
                tracing::warn!(site = %from, disk = %disk, "changed-blocks failed, comparing digests instead: {e}");
                Mode::Digests
            }
        }
    }

    /// Tell both sites the transfer endpoints are no longer needed (best
    /// effort: an endpoint left behind expires, and is not a side effect a
    /// retry would repeat harmfully).
    async fn release_endpoints(&self, step: &StepRecord, exports: &[Value], imports: &[Value]) {
        for (ops, what) in [(exports, "exports"), (imports, "imports")] {
            let Some(site) = ops.first().and_then(|o| o["site"].as_str()) else {
                continue;
            };
            let ids = ops
                .iter()
                .filter_map(|o| o["id"].as_str().map(str::to_owned))
                .collect();
            let request = CleanupRequest {
                key: format!("{}/release/{what}", step.idempotency_key),
                site: site.to_owned(),
                scope: CleanupScope::Transfers(ids),
            };
            if let Err(e) = self.call(&[site], request).await {
                tracing::warn!(run = %step.run, step = %step.name, "releasing transfer {what}: {e:?}");
            }
        }
    }
}

//! The example provider plugin: a short, real plugin for the lab's example
//! platform (`lab/src/example.rs` documents its API), written the way the
//! built-in plugins are. It implements `describe`, `health`, `inventory`,
//! `snapshot`, `status` and `cleanup` of recovery points; the other exports
//! answer `unsupported`, as its empty capabilities say.
//!
//! Site config: `endpoint` (base URL). Secret: `token`, sent as a bearer
//! token through the host's placeholder, so the plugin never holds it.
//!
//! Build: `cargo xtask build-plugins` (or `cargo build --profile plugin
//! --target wasm32-wasip2 -p rebound-plugin-example --lib`).
#![deny(rust_2018_idioms)]

mod api;

use rebound_plugin_sdk::http::{self, Request};
use rebound_plugin_sdk::retry::{RetryPolicy, retry};
use rebound_plugin_sdk::{
    Capabilities, CleanupReport, CleanupRequest, CleanupScope, Consistency, DiskCopy, HealthReport,
    HealthStatus, InventoryFilter, Operation, OperationKind, OperationState, Outcome, PluginInfo,
    Provider, ProviderError, RecoveryPoint, Running, SnapshotRequest, Workload, info, register,
    site,
};

/// Who this plugin is. Pure, so the benchmark can call the same code natively.
pub fn describe_info() -> PluginInfo {
    PluginInfo {
        name: "example".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        platform: "example".into(),
        capabilities: Capabilities::empty(),
        export_formats: Vec::new(),
        import_formats: Vec::new(),
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

    fn status(op: Operation) -> Result<OperationState, ProviderError> {
        match op.kind {
            OperationKind::Snapshot => {
                let s: api::Snapshot = send(call(
                    &op.site,
                    http::get,
                    &format!("/v1/snapshots/{}", op.id),
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
            other => Err(ProviderError::InvalidRequest(format!(
                "the example plugin starts no {other:?} operations"
            ))),
        }
    }

    fn cleanup(req: CleanupRequest) -> Result<Operation, ProviderError> {
        let CleanupScope::RecoveryPoints(ids) = req.scope else {
            return Err(ProviderError::Unsupported(
                "the example plugin cleans up recovery points only".into(),
            ));
        };
        for id in &ids {
            match call(&req.site, http::delete, &format!("/v1/snapshots/{id}"))?
                .send()?
                .error_for_status()
            {
                Ok(_) | Err(ProviderError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Operation {
            kind: OperationKind::Cleanup,
            site: req.site,
            id: ids.join(","),
        })
    }
}

/// Percent-encode a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

register!(Example);

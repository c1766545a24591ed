//! `fence` / `unfence`: a fenced server is stopped and **locked** — Nova
//! refuses to start, reboot, rebuild or delete a locked server for a
//! project member, so nothing but an unlock brings it back — and the
//! fencing epoch is recorded in its metadata (`rebound:fence_epoch`, the
//! highest one it was fenced under). `unfence` refuses (`conflict`) an
//! epoch older than the recorded one, then unlocks and starts the server.

use rebound_plugin_sdk::{
    FenceReport, FenceRequest, Operation, OperationKind, OperationState, Outcome, PowerState,
    ProviderError, Running, info,
};
use serde_json::{Value, json};

use crate::cloud::{self, Service, Verb, encode, request_id};
use crate::handle::Handle;
use crate::nova::{self, FENCE_EPOCH, meta, text};

fn recorded(server: &Value) -> u64 {
    meta(server, FENCE_EPOCH)
        .and_then(|e| e.parse().ok())
        .unwrap_or(0)
}

/// How the lock reason of a fence starts.
const REASON: &str = "fenced by Rebound";

fn locked(server: &Value) -> bool {
    server["locked"] == true
}

/// Whether a server is locked by a fence (not by someone else).
pub fn fenced_by_rebound(server: &Value) -> bool {
    locked(server)
        && server["locked_reason"]
            .as_str()
            .is_some_and(|r| r.starts_with(REASON))
}

pub fn fence(req: FenceRequest) -> Result<Operation, ProviderError> {
    let cloud = cloud::connect(&req.site)?;
    let id = &req.workload_id;
    let server = nova::get(&cloud, id)?;
    let epoch = recorded(&server).max(req.epoch);
    let stopped = nova::power(&server) == PowerState::Stopped;
    if !(locked(&server) && stopped && recorded(&server) >= req.epoch) {
        // A locked server's metadata cannot change: unlock, record, stop,
        // lock again.
        if locked(&server) {
            nova::action(&cloud, id, json!({"unlock": null}), &req.key, "unlock")?;
        }
        if recorded(&server) < req.epoch {
            cloud.send(
                Verb::Post,
                Service::Compute,
                &format!("/servers/{}/metadata", encode(id)),
                Some(&json!({"metadata": {FENCE_EPOCH: req.epoch.to_string()}})),
                &request_id(&req.key, "record the fencing epoch"),
            )?;
        }
        if text(&server, "status") == "ACTIVE" {
            nova::action(&cloud, id, json!({"os-stop": null}), &req.key, "stop")?;
        }
        let reason = format!("{REASON} at epoch {epoch}; unfence to release");
        nova::action(
            &cloud,
            id,
            json!({"lock": {"locked_reason": reason}}),
            &req.key,
            "lock",
        )?;
        info!("server fenced"; "server" => id, "epoch" => epoch);
    }
    let handle = Handle::Fence {
        server: id.clone(),
        epoch,
    };
    Ok(handle.operation(OperationKind::Fence, &req.site))
}

pub fn unfence(req: FenceRequest) -> Result<Operation, ProviderError> {
    let cloud = cloud::connect(&req.site)?;
    let id = &req.workload_id;
    let server = nova::get(&cloud, id)?;
    let fenced_at = recorded(&server);
    if fenced_at > req.epoch {
        return Err(ProviderError::Conflict(format!(
            "server {id} was fenced at epoch {fenced_at}; an unfence under epoch {} is stale",
            req.epoch
        )));
    }
    if locked(&server) {
        nova::action(&cloud, id, json!({"unlock": null}), &req.key, "unlock")?;
    }
    if text(&server, "status") == "SHUTOFF" {
        nova::action(&cloud, id, json!({"os-start": null}), &req.key, "start")?;
    }
    info!("server unfenced"; "server" => id, "epoch" => req.epoch);
    let handle = Handle::Fence {
        server: id.clone(),
        epoch: fenced_at,
    };
    Ok(handle.operation(OperationKind::Unfence, &req.site))
}

pub fn status(site: &str, server: &str, unfence: bool) -> Result<OperationState, ProviderError> {
    let cloud = cloud::connect(site)?;
    let doc = nova::get(&cloud, server)?;
    let blocked = locked(&doc) && nova::power(&doc) == PowerState::Stopped;
    let done = if unfence {
        !locked(&doc) && nova::power(&doc) == PowerState::Running
    } else {
        blocked
    };
    if text(&doc, "status") == "ERROR" {
        return Ok(OperationState::Failed(ProviderError::ProviderFailed(
            format!("server {server} is in ERROR"),
        )));
    }
    if !done {
        return Ok(OperationState::Running(Running {
            percent: None,
            detail: format!(
                "server {server} is {} (task {})",
                text(&doc, "status"),
                doc["OS-EXT-STS:task_state"].as_str().unwrap_or("none")
            ),
        }));
    }
    Ok(OperationState::Succeeded(Outcome::Fenced(FenceReport {
        workload_id: server.to_owned(),
        epoch: recorded(&doc),
        write_blocked: blocked,
    })))
}

//! The example site's data path for the host's data mover: exports (one
//! disk of a snapshot, read-only) and imports (a new volume, writable),
//! each served by a mover agent (`rebound_datamover::agent`) on its own
//! loopback port behind its own token, as a plugin would place one next to
//! the data on a platform without a ranged-I/O API.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{FindQuery, Site, problem};

/// An export or import the site serves.
#[derive(Debug)]
pub(super) struct Transfer {
    id: String,
    key: String,
    url: String,
    token: String,
    size_bytes: u64,
    /// For an import: the volume being written.
    volume_id: Option<String>,
    /// Serving it; dropped with the transfer.
    _agent: crate::mover::Agent,
}

fn render(t: &Transfer) -> Value {
    json!({
        "id": t.id, "key": t.key, "status": "ready", "url": t.url, "token": t.token,
        "size_bytes": t.size_bytes, "volume_id": t.volume_id,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateExport {
    key: String,
    snapshot_id: String,
    disk_id: String,
}

pub(super) async fn create_export(
    State(site): State<Arc<Site>>,
    Json(req): Json<CreateExport>,
) -> Response {
    let Some(disks) = &site.disks else {
        return problem(
            StatusCode::CONFLICT,
            "this site keeps no disk data; start it with a disk folder to export disks",
        );
    };
    if req.key.is_empty() {
        return problem(StatusCode::BAD_REQUEST, "key must not be empty");
    }
    let image = {
        let inner = site.inner();
        let Some(snapshot) = inner.snapshots.get(&req.snapshot_id) else {
            let msg = format!("no snapshot '{}' on this site", req.snapshot_id);
            return problem(StatusCode::NOT_FOUND, &msg);
        };
        if Instant::now() < snapshot.ready_at {
            let msg = format!("snapshot '{}' is not available yet", snapshot.id);
            return problem(StatusCode::CONFLICT, &msg);
        }
        let has_disk = snapshot.vm["disks"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|d| d["id"] == req.disk_id.as_str());
        if !has_disk {
            let msg = format!("snapshot '{}' has no disk '{}'", snapshot.id, req.disk_id);
            return problem(StatusCode::NOT_FOUND, &msg);
        }
        format!("{}-{}", snapshot.id, req.disk_id)
    };
    let (path, size) = match disks
        .path(&image)
        .and_then(|p| Ok((p.clone(), std::fs::metadata(p)?.len())))
    {
        Ok(found) => found,
        Err(e) => return problem(StatusCode::CONFLICT, &format!("disk image '{image}': {e}")),
    };
    open(&site, path, &req.key, size, None).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateImport {
    key: String,
    name: String,
    size_bytes: u64,
    /// Start from a copy of this volume or snapshot copy (a delta resync
    /// writes only what changed); it stays as it is.
    base: Option<String>,
}

pub(super) async fn create_import(
    State(site): State<Arc<Site>>,
    Json(req): Json<CreateImport>,
) -> Response {
    let Some(disks) = &site.disks else {
        return problem(
            StatusCode::CONFLICT,
            "this site keeps no disk data; start it with a disk folder to import disks",
        );
    };
    if req.key.is_empty() || req.name.is_empty() || req.size_bytes == 0 {
        return problem(
            StatusCode::BAD_REQUEST,
            "key and name must not be empty and size_bytes must be more than 0",
        );
    }
    let volume = site.inner().id("vol");
    let prepared = match &req.base {
        Some(base) => match disks.size(base) {
            Ok(size) if size == req.size_bytes => disks.copy(base, &volume),
            Ok(size) => {
                let msg = format!(
                    "base '{base}' holds {size} bytes, not the {} asked for",
                    req.size_bytes
                );
                return problem(StatusCode::BAD_REQUEST, &msg);
            }
            Err(_) => return problem(StatusCode::NOT_FOUND, &format!("no volume '{base}'")),
        },
        None => disks.create(&volume, req.size_bytes),
    };
    let path = match prepared {
        Ok(path) => path,
        Err(e) => return problem(StatusCode::CONFLICT, &format!("preparing volume: {e}")),
    };
    open(&site, path, &req.key, req.size_bytes, Some(volume)).await
}

/// Serve the disk image at `path` through a mover agent of its own, as
/// transfer `key`: an import (writable, onto `volume`) or an export.
async fn open(
    site: &Site,
    path: std::path::PathBuf,
    key: &str,
    size_bytes: u64,
    volume: Option<String>,
) -> Response {
    let token = crate::random_hex(24);
    let writable = volume.is_some();
    let (url, agent) = match crate::mover::start(
        path,
        writable,
        token.clone(),
        site.options.mover_address,
        "example",
    )
    .await
    {
        Ok(a) => a,
        Err(e) => {
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("starting a mover agent: {e}"),
            );
        }
    };
    let mut inner = site.inner();
    let id = inner.id(if writable { "imp" } else { "exp" });
    let transfer = Transfer {
        id: id.clone(),
        key: key.to_owned(),
        url,
        token,
        size_bytes,
        volume_id: volume,
        _agent: agent,
    };
    let body = render(&transfer);
    inner.transfers.insert(id, transfer);
    inner.effect(key);
    (StatusCode::CREATED, Json(body)).into_response()
}

fn find(site: &Site, prefix: &str, key: Option<&String>) -> Json<Value> {
    let inner = site.inner();
    let found = inner
        .transfers
        .values()
        .filter(|t| t.id.starts_with(prefix) && key.is_none_or(|k| *k == t.key))
        .map(render)
        .collect();
    Json(Value::Array(found))
}

pub(super) async fn find_exports(
    State(site): State<Arc<Site>>,
    Query(q): Query<FindQuery>,
) -> Json<Value> {
    find(&site, "exp-", q.key.as_ref())
}

pub(super) async fn find_imports(
    State(site): State<Arc<Site>>,
    Query(q): Query<FindQuery>,
) -> Json<Value> {
    find(&site, "imp-", q.key.as_ref())
}

pub(super) async fn get_transfer(
    State(site): State<Arc<Site>>,
    Path(id): Path<String>,
) -> Response {
    match site.inner().transfers.get(&id) {
        Some(t) => Json(render(t)).into_response(),
        None => problem(StatusCode::NOT_FOUND, &format!("no transfer '{id}'")),
    }
}

/// Stop serving a transfer (its agent stops; an import's volume stays).
pub(super) async fn delete_transfer(
    State(site): State<Arc<Site>>,
    Path(id): Path<String>,
) -> Response {
    match site.inner().transfers.remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => problem(StatusCode::NOT_FOUND, &format!("no transfer '{id}'")),
    }
}

/// Remove an imported volume; one being written through an import is
/// refused.
pub(super) async fn delete_volume(
    State(site): State<Arc<Site>>,
    Path(id): Path<String>,
) -> Response {
    let Some(disks) = &site.disks else {
        return problem(StatusCode::NOT_FOUND, &format!("no volume '{id}'"));
    };
    if !id.starts_with("vol-") || !disks.exists(&id) {
        return problem(StatusCode::NOT_FOUND, &format!("no volume '{id}'"));
    }
    let busy = site
        .inner()
        .transfers
        .values()
        .any(|t| t.volume_id.as_deref() == Some(id.as_str()));
    if busy {
        let msg = format!("volume '{id}' is being written by an import; delete the import first");
        return problem(StatusCode::CONFLICT, &msg);
    }
    match disks.remove(&id) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => problem(
            StatusCode::CONFLICT,
            &format!("removing volume '{id}': {e}"),
        ),
    }
}

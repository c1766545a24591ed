//! The imageio data plane of image transfers, at `/images/{ticket}` (the
//! ticket is the credential, as with ovirt-imageio): `OPTIONS` (features),
//! `GET …/extents?context=zero|dirty`, ranged `GET`, `PUT` with
//! `Content-Range`, `PATCH` `{"op": "zero"|"flush"}`. A ticket serves only
//! while its transfer is `transferring`; downloads are read-only.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Shared;
use super::api::{backup_of, transfer_by_ticket};
use super::state::Transfer;

/// imageio's error shape: a status and a plain-text reason.
fn refuse(status: StatusCode, reason: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain")],
        reason.into(),
    )
        .into_response()
}

fn active(shared: &Shared, ticket: &str) -> Result<Transfer, Response> {
    let e = shared.lock();
    match transfer_by_ticket(&e, ticket) {
        Some(t) if t.phase.current() == "transferring" => Ok(t),
        Some(t) => Err(refuse(
            StatusCode::FORBIDDEN,
            format!(
                "Ticket {ticket} is not active (transfer phase {})",
                t.phase.current()
            ),
        )),
        None => Err(refuse(
            StatusCode::FORBIDDEN,
            format!("No such ticket {ticket}"),
        )),
    }
}

fn io_error(e: std::io::Error) -> Response {
    refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

pub(super) async fn options(
    State(shared): State<Arc<Shared>>,
    Path(ticket): Path<String>,
) -> Response {
    let t = match active(&shared, &ticket) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let allow = if t.upload {
        "OPTIONS,GET,PUT,PATCH"
    } else {
        "OPTIONS,GET"
    };
    let features: &[&str] = if t.upload {
        &["extents", "zero", "flush"]
    } else {
        &["extents"]
    };
    (
        [(header::ALLOW, allow)],
        Json(
            json!({"unix_socket": null, "features": features, "max_readers": 8, "max_writers": 8}),
        ),
    )
        .into_response()
}

pub(super) async fn read(
    State(shared): State<Arc<Shared>>,
    Path(ticket): Path<String>,
    headers: HeaderMap,
) -> Response {
    let t = match active(&shared, &ticket) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let size = match shared.disks.size(&t.image) {
        Ok(s) => s,
        Err(e) => return io_error(e),
    };
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|r| parse_range(r, size));
    let (start, end, status) = match range {
        None => (0, size, StatusCode::OK),
        Some(Some((s, e))) => (s, e, StatusCode::PARTIAL_CONTENT),
        Some(None) => {
            return refuse(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "Requested range not satisfiable",
            );
        }
    };
    let len = usize::try_from(end - start).unwrap_or(usize::MAX);
    if len > crate::ovirt::MAX_IO {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("Range too large: {len} bytes"),
        );
    }
    tokio::time::sleep(shared.data_delay(len as u64)).await;
    let data = match shared.disks.read_at(&t.image, start, len) {
        Ok(d) => d,
        Err(e) => return io_error(e),
    };
    shared.count_transferred(&t.id, len as u64);
    let mut response = (status, data).into_response();
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = format!("bytes {start}-{}/{size}", end - 1).parse()
    {
        response.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    response
}

/// `bytes=a-b` (inclusive) or `bytes=a-` → `[a, b+1)` within `size`.
fn parse_range(value: &str, size: u64) -> Option<(u64, u64)> {
    let spec = value.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let end = match b.trim() {
        "" => size,
        b => b.parse::<u64>().ok()?.checked_add(1)?.min(size),
    };
    (start < end).then_some((start, end))
}

pub(super) async fn write(
    State(shared): State<Arc<Shared>>,
    Path(ticket): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let t = match active(&shared, &ticket) {
        Ok(t) => t,
        Err(r) => return r,
    };
    if !t.upload {
        return refuse(
            StatusCode::FORBIDDEN,
            format!("Ticket {ticket} forbids write"),
        );
    }
    // `Content-Range: bytes a-b/total` (total may be `*`); none writes at 0.
    let start = match headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
    {
        None => 0,
        Some(v) => match v
            .strip_prefix("bytes ")
            .and_then(|r| r.split_once('-'))
            .and_then(|(a, _)| a.trim().parse::<u64>().ok())
        {
            Some(s) => s,
            None => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    format!("Invalid Content-Range: {v}"),
                );
            }
        },
    };
    tokio::time::sleep(shared.data_delay(body.len() as u64)).await;
    shared.wrote(&t, start, body.len() as u64);
    if let Err(e) = shared.disks.write(&t.image, start, &body) {
        return refuse(StatusCode::RANGE_NOT_SATISFIABLE, e.to_string());
    }
    shared.count_transferred(&t.id, body.len() as u64);
    StatusCode::OK.into_response()
}

pub(super) async fn patch(
    State(shared): State<Arc<Shared>>,
    Path(ticket): Path<String>,
    Json(op): Json<Value>,
) -> Response {
    let t = match active(&shared, &ticket) {
        Ok(t) => t,
        Err(r) => return r,
    };
    if !t.upload {
        return refuse(
            StatusCode::FORBIDDEN,
            format!("Ticket {ticket} forbids write"),
        );
    }
    match op["op"].as_str() {
        Some("flush") => StatusCode::OK.into_response(),
        Some("zero") => {
            let (Some(offset), Some(size)) = (op["offset"].as_u64(), op["size"].as_u64()) else {
                return refuse(StatusCode::BAD_REQUEST, "zero needs offset and size");
            };
            let zeros = vec![0u8; usize::try_from(size).unwrap_or(0).min(crate::ovirt::MAX_IO)];
            if zeros.len() as u64 != size {
                return refuse(StatusCode::BAD_REQUEST, "zero range too large");
            }
            shared.wrote(&t, offset, size);
            match shared.disks.write(&t.image, offset, &zeros) {
                Ok(()) => StatusCode::OK.into_response(),
                Err(e) => refuse(StatusCode::RANGE_NOT_SATISFIABLE, e.to_string()),
            }
        }
        other => refuse(
            StatusCode::BAD_REQUEST,
            format!("Unsupported operation {other:?}"),
        ),
    }
}

#[derive(serde::Deserialize)]
pub(super) struct ExtentsQuery {
    context: Option<String>,
}

/// `context=zero`: data and zero extents; `context=dirty`: the extents
/// written since the backup's `from_checkpoint_id` (incremental backups
/// only; the checkpoint's dirty bitmap when the backup began), covering the
/// whole image either way.
pub(super) async fn extents(
    State(shared): State<Arc<Shared>>,
    Path(ticket): Path<String>,
    Query(q): Query<ExtentsQuery>,
) -> Response {
    let t = match active(&shared, &ticket) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let size = match shared.disks.size(&t.image) {
        Ok(s) => s,
        Err(e) => return io_error(e),
    };
    let path = match shared.disks.path(&t.image) {
        Ok(p) => p,
        Err(e) => return io_error(e),
    };
    let (marked, field, marked_means) = match q.context.as_deref().unwrap_or("zero") {
        "zero" => match crate::disk::data_ranges(&path) {
            Ok(r) => (r, "zero", false),
            Err(e) => return io_error(e),
        },
        "dirty" => {
            let dirty = match &t.source {
                super::state::Source::Backup(b) => backup_of(&shared.lock(), b)
                    .filter(|b| b.from_checkpoint.is_some())
                    .map(|b| b.dirty.get(&t.disk).cloned().unwrap_or_default()),
                _ => None,
            };
            let Some(dirty) = dirty else {
                return refuse(
                    StatusCode::NOT_FOUND,
                    "Dirty extents are served only for an incremental backup's transfer",
                );
            };
            (dirty, "dirty", true)
        }
        other => return refuse(StatusCode::BAD_REQUEST, format!("Invalid context {other}")),
    };
    Json(cover(size, &marked, field, marked_means)).into_response()
}

/// Extents covering `[0, size)`: the `marked` ranges with `field` set to
/// `marked_means`, the gaps with its opposite.
fn cover(size: u64, marked: &[(u64, u64)], field: &str, marked_means: bool) -> Vec<Value> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut push = |start: u64, length: u64, flag: bool| {
        if length > 0 {
            let mut e = json!({"start": start, "length": length});
            e[field] = json!(flag);
            if field == "zero" {
                e["hole"] = json!(flag);
            }
            out.push(e);
        }
    };
    for &(start, length) in marked {
        let start = start.min(size);
        let end = (start + length).min(size);
        push(pos, start.saturating_sub(pos), !marked_means);
        push(start, end - start, marked_means);
        pos = end;
    }
    push(pos, size.saturating_sub(pos), !marked_means);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_cover_the_image() {
        let e = cover(100, &[(10, 20), (50, 10)], "dirty", true);
        let spans: Vec<(u64, u64, bool)> = e
            .iter()
            .map(|x| {
                (
                    x["start"].as_u64().unwrap_or(0),
                    x["length"].as_u64().unwrap_or(0),
                    x["dirty"].as_bool().unwrap_or(false),
                )
            })
            .collect();
        assert_eq!(
            spans,
            [
                (0, 10, false),
                (10, 20, true),
                (30, 20, false),
                (50, 10, true),
                (60, 40, false)
            ]
        );
        let zero = cover(10, &[], "zero", false);
        assert_eq!(zero[0]["zero"], true);
        assert_eq!(zero[0]["length"], 10);
        assert_eq!(parse_range("bytes=0-4095", 100), Some((0, 100)));
        assert_eq!(parse_range("bytes=10-19", 100), Some((10, 20)));
        assert_eq!(parse_range("bytes=200-", 100), None);
    }
}

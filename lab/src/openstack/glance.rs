//! Glance (image v2) at `/{region}/image`: images (create, show, list,
//! delete), data upload (`PUT …/file`, `queued` → `saving` → `active`) and
//! download (`GET …/file`), interoperable import with `glance-download`
//! from another region (`importing` → `active`). Image data are sparse
//! files; `checksum` (MD5) and `os_hash_value` (SHA-512) are real.

use std::collections::HashMap;
use std::io::Read;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use sha2::Digest as _;

use super::state::{self, Api, matches, set, str_of, time_z, uuid};
use crate::disk::Disks;

pub(super) fn routes(api: &Api) -> Router {
    let p = format!("{}/image", api.prefix());
    let v = format!("{p}/v2");
    let calls = Router::new()
        .route(&format!("{v}/images"), get(list_images).post(create_image))
        .route(
            &format!("{v}/images/{{id}}"),
            get(show_image).delete(delete_image),
        )
        .route(
            &format!("{v}/images/{{id}}/file"),
            get(download).put(upload).layer(DefaultBodyLimit::disable()),
        )
        .route(&format!("{v}/images/{{id}}/import"), post(import))
        .route(&format!("{v}/info/import"), get(import_info))
        .route_layer(middleware::from_fn_with_state(
            api.shared.clone(),
            state::require_token,
        ));
    Router::new()
        .route(&p, get(versions))
        .route(&format!("{p}/"), get(versions))
        .route(&format!("{p}/versions"), get(versions_ok))
        .merge(calls)
        .with_state(api.clone())
}

fn version_list(api: &Api) -> Value {
    let href = api.url("/image/v2/");
    let mut versions =
        vec![json!({"id": "v2.16", "status": "CURRENT", "links": [{"rel": "self", "href": href}]})];
    for minor in (0..16).rev() {
        versions.push(json!({"id": format!("v2.{minor}"), "status": "SUPPORTED", "links": [{"rel": "self", "href": href}]}));
    }
    json!({ "versions": versions })
}

async fn versions(State(api): State<Api>) -> Response {
    (StatusCode::MULTIPLE_CHOICES, Json(version_list(&api))).into_response()
}

async fn versions_ok(State(api): State<Api>) -> Json<Value> {
    Json(version_list(&api))
}

/// Glance answers errors in plain text.
fn error(status: StatusCode, message: &str) -> Response {
    let reason = status.canonical_reason().unwrap_or_default();
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
        format!("{} {reason}\n\n{message}\n\n   ", status.as_u16()),
    )
        .into_response()
}

fn not_found(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &format!("No image found with ID {id}"),
    )
}

/// Image data are hashed and streamed in pieces of this size.
const CHUNK: usize = 64 << 10;

pub(super) fn image_file(id: &str) -> String {
    format!("image-{id}")
}

/// A `queued` image record without data.
pub(super) fn image_doc(
    api: &Api,
    id: &str,
    name: &str,
    disk_format: &str,
    container_format: &str,
) -> Value {
    let now = time_z();
    json!({
        "id": id, "name": name, "status": "queued",
        "disk_format": disk_format, "container_format": container_format,
        "visibility": "shared", "size": null, "virtual_size": null,
        "checksum": null, "os_hash_algo": null, "os_hash_value": null,
        "owner": api.project_id(), "min_disk": 0, "min_ram": 0, "protected": false,
        "os_hidden": false, "tags": [], "created_at": now, "updated_at": now,
        "self": format!("/v2/images/{id}"), "file": format!("/v2/images/{id}/file"),
        "schema": "/v2/schemas/image"
    })
}

/// Size, MD5 and SHA-512 of a stored image.
pub(super) struct Hashes {
    size: u64,
    md5: String,
    sha512: String,
}

pub(super) fn hashes(disks: &Disks, id: &str) -> std::io::Result<Hashes> {
    let mut file = std::fs::File::open(disks.path(id)?)?;
    let mut md5 = md5::Md5::default();
    let mut sha = sha2::Sha512::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        md5::Digest::update(&mut md5, &buf[..n]);
        sha.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Hashes {
        size,
        md5: hex::encode(md5::Digest::finalize(md5)),
        sha512: hex::encode(sha.finalize()),
    })
}

/// An image whose data is stored: `active`, with its size and hashes.
pub(super) fn activate(doc: &mut Value, h: &Hashes) {
    set(doc, "status", json!("active"));
    set(doc, "size", json!(h.size));
    set(doc, "virtual_size", json!(h.size));
    set(doc, "checksum", json!(h.md5));
    set(doc, "os_hash_algo", json!("sha512"));
    set(doc, "os_hash_value", json!(h.sha512));
    set(doc, "stores", json!("file"));
    set(doc, "updated_at", json!(time_z()));
}

async fn list_images(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    let images: Vec<Value> = api.with(|r| {
        r.images
            .values()
            .filter(|i| matches(i, &q))
            .cloned()
            .collect()
    });
    Json(json!({"images": images, "first": "/v2/images", "schema": "/v2/schemas/images"}))
}

async fn show_image(State(api): State<Api>, Path(id): Path<String>) -> Response {
    match api.with(|r| r.images.get(&id).cloned()) {
        Some(doc) => Json(doc).into_response(),
        None => not_found(&id),
    }
}

/// `POST /v2/images` → 201, a `queued` record.
async fn create_image(State(api): State<Api>, Json(body): Json<Value>) -> Response {
    let id = body["id"].as_str().map_or_else(uuid, str::to_owned);
    let mut doc = image_doc(
        &api,
        &id,
        body["name"].as_str().unwrap_or_default(),
        body["disk_format"].as_str().unwrap_or("raw"),
        body["container_format"].as_str().unwrap_or("bare"),
    );
    for key in ["visibility", "min_disk", "min_ram", "protected", "tags"] {
        if let Some(v) = body.get(key) {
            set(&mut doc, key, v.clone());
        }
    }
    // Other keys are the image's own properties, as Glance keeps them.
    if let Some(fields) = body.as_object() {
        for (k, v) in fields {
            if doc.get(k).is_none() && v.is_string() {
                set(&mut doc, k, v.clone());
            }
        }
    }
    let conflict = api.with(|r| {
        if r.images.contains_key(&id) {
            return true;
        }
        r.images.insert(id.clone(), doc.clone());
        false
    });
    if conflict {
        return error(
            StatusCode::CONFLICT,
            &format!("An image with identifier {id} already exists"),
        );
    }
    (StatusCode::CREATED, Json(doc)).into_response()
}

async fn delete_image(State(api): State<Api>, Path(id): Path<String>) -> Response {
    match api.with(|r| r.images.remove(&id)) {
        Some(_) => {
            let _ = api.shared.disks.remove(&image_file(&id));
            StatusCode::NO_CONTENT.into_response()
        }
        None => not_found(&id),
    }
}

/// `PUT /v2/images/{id}/file`: `saving` while stored; like Glance, the
/// call returns (204) once the image is `active`.
async fn upload(State(api): State<Api>, Path(id): Path<String>, body: Bytes) -> Response {
    let refused = api.with(|r| match r.images.get_mut(&id) {
        None => Some(not_found(&id)),
        Some(i) if str_of(i, "status") != "queued" => Some(error(
            StatusCode::CONFLICT,
            &format!(
                "Image status transition from {} to saving is not allowed",
                str_of(i, "status")
            ),
        )),
        Some(i) => {
            set(i, "status", json!("saving"));
            None
        }
    });
    if let Some(response) = refused {
        return response;
    }
    let file = image_file(&id);
    let delay = api.latency().image + api.shared.lock().faults.data_delay(body.len() as u64);
    let image = id.clone();
    let stored = api.later_with_disk(
        delay,
        move |disks| {
            disks.create_from(&file, &mut body.as_ref())?;
            hashes(disks, &file)
        },
        move |r, result| {
            if let Some(i) = r.images.get_mut(&image) {
                match result {
                    Ok(h) => activate(i, &h),
                    Err(_) => set(i, "status", json!("killed")),
                }
            }
        },
    );
    let _ = stored.await;
    match api.with(|r| r.images.get(&id).map(|i| str_of(i, "status") == "active")) {
        Some(true) => StatusCode::NO_CONTENT.into_response(),
        Some(false) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Failed to upload image data due to an internal error",
        ),
        None => not_found(&id),
    }
}

/// `GET /v2/images/{id}/file`: the data (204 when the image has none),
/// in 64 KiB chunks, paced by a slowed data plane.
async fn download(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let Some(doc) = api.with(|r| r.images.get(&id).cloned()) else {
        return not_found(&id);
    };
    if str_of(&doc, "status") != "active" {
        return StatusCode::NO_CONTENT.into_response();
    }
    let path = match api.shared.disks.path(&image_file(&id)) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let pace = api.shared.lock().faults.data_delay(CHUNK as u64);
    let stream = futures_util::stream::unfold(file, move |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; CHUNK];
        tokio::time::sleep(pace).await;
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(md5) = doc["checksum"].as_str()
        && let Ok(v) = header::HeaderValue::from_str(md5)
    {
        headers.insert("content-md5", v);
    }
    if let Some(size) = doc["size"].as_u64() {
        headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from(size));
    }
    response
}

async fn import_info() -> Json<Value> {
    Json(json!({"import-methods": {
        "description": "Import methods available.", "type": "array",
        "value": ["glance-direct", "web-download", "copy-image", "glance-download"]
    }}))
}

/// `POST /v2/images/{id}/import` with `glance-download`: 202, the image is
/// `importing` while the other region's image data is copied, then
/// `active`; a failed import leaves it `queued` with
/// `os_glance_failed_import`.
async fn import(
    State(api): State<Api>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let method = &body["method"];
    if method["name"] != "glance-download" {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "Import method {} is not supported by the simulator; use glance-download",
                method["name"]
            ),
        );
    }
    let (Some(source_id), Some(source_region)) = (
        method["glance_image_id"].as_str(),
        method["glance_region"].as_str(),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            "glance-download needs glance_image_id and glance_region",
        );
    };
    let source = {
        let cloud = api.shared.lock();
        let Some(region) = cloud.regions.get(source_region) else {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("Region {source_region} is not in the catalog"),
            );
        };
        region.images.get(source_id).cloned()
    };
    let refused = api.with(|r| match r.images.get_mut(&id) {
        None => Some(not_found(&id)),
        Some(i) if str_of(i, "status") != "queued" => Some(error(
            StatusCode::CONFLICT,
            &format!("Image {id} is not in queued state"),
        )),
        Some(i) => {
            set(i, "status", json!("importing"));
            set(i, "os_glance_importing_to_stores", json!("file"));
            None
        }
    });
    if let Some(response) = refused {
        return response;
    }
    let active_source = source.filter(|s| str_of(s, "status") == "active");
    let bytes = active_source
        .as_ref()
        .and_then(|s| s["size"].as_u64())
        .unwrap_or(0);
    let delay = api.latency().image + api.shared.lock().faults.data_delay(bytes);
    let (from, to) = (image_file(source_id), image_file(&id));
    api.later_with_disk(
        delay,
        move |disks| match active_source {
            Some(_) => {
                disks.copy(&from, &to)?;
                hashes(disks, &to)
            }
            None => Err(std::io::Error::other("source image is not active")),
        },
        move |r, result| {
            if let Some(i) = r.images.get_mut(&id) {
                set(i, "os_glance_importing_to_stores", json!(""));
                match result {
                    Ok(h) => activate(i, &h),
                    Err(_) => {
                        set(i, "status", json!("queued"));
                        set(i, "os_glance_failed_import", json!("file"));
                    }
                }
            }
        },
    );
    StatusCode::ACCEPTED.into_response()
}

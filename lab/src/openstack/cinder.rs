//! Cinder (block storage v3, microversions 3.0–3.71) at
//! `/{region}/volume/v3/{project_id}`: volumes (create empty or from a
//! snapshot, volume, backup or image; delete; upload to an image),
//! snapshots, backups with `export_record`, `import_record` and `restore`,
//! `os-services`. Every volume, snapshot and backup is a sparse file; the
//! copies are made while the resource is in its transitional state.
//!
//! Backups live in one backup store shared by the regions (like a Swift
//! cluster every region's backup service writes to), so a record exported
//! in one region imports in another. Incremental backups are full copies
//! in the simulator; only their metadata says incremental.

mod groups;

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

use super::glance;
use super::state::{self, Api, Region, fault, matches, set, str_of, time_micros, uuid};

const MAX: (u32, u32) = (3, 71);
const VOLUME_TYPE_ID: &str = "5f6a3c2e-9b1d-4c8e-a7f0-3d2b1c0e9f8a";
const BACKUP_SERVICE: &str = "cinder.backup.drivers.swift.SwiftBackupDriver";
/// Cinder's Swift backup driver stores a backup in objects of this size
/// (`backup_swift_object_size`).
const SWIFT_OBJECT_SIZE: u64 = 52_428_800;

pub(super) fn routes(api: &Api) -> Router {
    let p = format!("{}/volume", api.prefix());
    let v = format!("{p}/v3/{{project_id}}");
    let calls = Router::new()
        .route(
            &format!("{v}/volumes"),
            get(list_volumes).post(create_volume),
        )
        .route(&format!("{v}/volumes/detail"), get(list_volumes_detail))
        .route(
            &format!("{v}/volumes/{{id}}"),
            get(show_volume).delete(delete_volume),
        )
        .route(&format!("{v}/volumes/{{id}}/action"), post(volume_action))
        .route(
            &format!("{v}/snapshots"),
            get(list_snapshots).post(create_snapshot),
        )
        .route(&format!("{v}/snapshots/detail"), get(list_snapshots_detail))
        .route(
            &format!("{v}/snapshots/{{id}}"),
            get(show_snapshot).delete(delete_snapshot),
        )
        .route(
            &format!("{v}/backups"),
            get(list_backups).post(create_backup),
        )
        .route(&format!("{v}/backups/detail"), get(list_backups_detail))
        .route(&format!("{v}/backups/import_record"), post(import_record))
        .route(
            &format!("{v}/backups/{{id}}"),
            get(show_backup).delete(delete_backup),
        )
        .route(
            &format!("{v}/backups/{{id}}/export_record"),
            get(export_record),
        )
        .route(&format!("{v}/backups/{{id}}/restore"), post(restore_backup))
        .route(&format!("{v}/os-services"), get(services));
    let calls = groups::routes(calls, &v)
        .route_layer(middleware::from_fn(|req, next| {
            state::microversion("volume", (3, 0), MAX, req, next)
        }))
        .route_layer(middleware::from_fn_with_state(
            api.shared.clone(),
            state::require_token,
        ));
    Router::new()
        .route(&p, get(versions))
        .route(&format!("{p}/"), get(versions))
        .route(&format!("{p}/v3"), get(version))
        .route(&format!("{p}/v3/"), get(version))
        .merge(calls)
        .with_state(api.clone())
}

fn v3(api: &Api) -> Value {
    json!({
        "id": "v3.0", "status": "CURRENT",
        "version": format!("{}.{}", MAX.0, MAX.1), "min_version": "3.0",
        "updated": "2023-08-31T00:00:00Z",
        "links": [
            {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
            {"rel": "self", "href": api.url("/volume/v3/")}
        ],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}]
    })
}

async fn versions(State(api): State<Api>) -> Response {
    (
        StatusCode::MULTIPLE_CHOICES,
        Json(json!({"versions": [v3(&api)]})),
    )
        .into_response()
}

async fn version(State(api): State<Api>) -> Json<Value> {
    Json(json!({"versions": [v3(&api)]}))
}

#[derive(Deserialize)]
struct Id {
    id: String,
}

pub(super) fn links(api: &Api, kind: &str, id: &str) -> Value {
    json!([
        {"rel": "self", "href": api.url(&format!("/volume/v3/{}/{kind}/{id}", api.project_id()))},
        {"rel": "bookmark", "href": api.url(&format!("/volume/{}/{kind}/{id}", api.project_id()))}
    ])
}

pub(super) fn volume_file(id: &str) -> String {
    format!("volume-{id}")
}
pub(super) fn snapshot_file(id: &str) -> String {
    format!("snapshot-{id}")
}
fn backup_file(id: &str) -> String {
    format!("backup-{id}")
}

/// A volume document in `status`.
pub(super) fn volume_doc(api: &Api, id: &str, name: &str, size: u64, status: &str) -> Value {
    let now = time_micros();
    json!({
        "id": id, "name": name, "status": status, "size": size,
        "availability_zone": "nova", "created_at": now, "updated_at": now,
        "attachments": [], "bootable": "false", "encrypted": false, "description": null,
        "volume_type": "lvmdriver-1", "volume_type_id": VOLUME_TYPE_ID,
        "snapshot_id": null, "source_volid": null, "backup_id": null, "metadata": {},
        "links": links(api, "volumes", id), "user_id": api.user_id(), "multiattach": false,
        "os-vol-tenant-attr:tenant_id": api.project_id(),
        "os-vol-host-attr:host": format!("{}-block@lvmdriver-1#lvmdriver-1", api.region),
        "replication_status": null, "consistencygroup_id": null, "group_id": null,
        "provider_id": null, "service_uuid": VOLUME_TYPE_ID, "shared_targets": true,
        "cluster_name": null, "consumes_quota": true,
        "os-vol-mig-status-attr:migstat": null, "os-vol-mig-status-attr:name_id": null
    })
}

/// Attach a volume to a server (Nova's side of a boot or attach).
pub(super) fn attach(volume: &mut Value, server_id: &str) {
    let volume_id = str_of(volume, "id").to_owned();
    let attachment = json!({
        "id": volume_id, "attachment_id": uuid(), "volume_id": volume_id,
        "server_id": server_id, "host_name": null, "device": "/dev/vda",
        "attached_at": time_micros()
    });
    if let Some(list) = volume["attachments"].as_array_mut() {
        list.push(attachment);
    }
    set(volume, "status", json!("in-use"));
}

/// Detach a volume from a server, `available` once nothing holds it.
pub(super) fn detach(volume: &mut Value, server_id: &str) {
    if let Some(list) = volume["attachments"].as_array_mut() {
        list.retain(|a| str_of(a, "server_id") != server_id);
        if list.is_empty() && str_of(volume, "status") == "in-use" {
            set(volume, "status", json!("available"));
        }
    }
}

fn brief(doc: &Value) -> Value {
    json!({"id": doc["id"], "name": doc["name"], "links": doc["links"]})
}

fn listing(
    api: &Api,
    key: &str,
    detail: bool,
    q: &HashMap<String, String>,
    table: fn(&Region) -> &state::Table,
) -> Json<Value> {
    let found: Vec<Value> = api.with(|r| {
        table(r)
            .values()
            .filter(|d| matches(d, q))
            .map(|d| if detail { d.clone() } else { brief(d) })
            .collect()
    });
    Json(json!({ key: found }))
}

fn showing(
    api: &Api,
    key: &str,
    what: &str,
    id: &str,
    table: fn(&Region) -> &state::Table,
) -> Response {
    match api.with(|r| table(r).get(id).cloned()) {
        Some(doc) => Json(json!({ key: doc })).into_response(),
        None => fault(
            StatusCode::NOT_FOUND,
            format!("{what} {id} could not be found."),
        ),
    }
}

async fn list_volumes(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    listing(&api, "volumes", false, &q, |r| &r.volumes)
}
async fn list_volumes_detail(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    listing(&api, "volumes", true, &q, |r| &r.volumes)
}
async fn show_volume(State(api): State<Api>, Path(p): Path<Id>) -> Response {
    showing(&api, "volume", "Volume", &p.id, |r| &r.volumes)
}
async fn list_snapshots(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    listing(&api, "snapshots", false, &q, |r| &r.snapshots)
}
async fn list_snapshots_detail(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    listing(&api, "snapshots", true, &q, |r| &r.snapshots)
}
async fn show_snapshot(State(api): State<Api>, Path(p): Path<Id>) -> Response {
    showing(&api, "snapshot", "Snapshot", &p.id, |r| &r.snapshots)
}
async fn list_backups(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    listing(&api, "backups", false, &q, |r| &r.backups)
}
async fn list_backups_detail(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    listing(&api, "backups", true, &q, |r| &r.backups)
}
async fn show_backup(State(api): State<Api>, Path(p): Path<Id>) -> Response {
    showing(&api, "backup", "Backup", &p.id, |r| &r.backups)
}

fn bad(message: impl Into<String>) -> Response {
    fault(StatusCode::BAD_REQUEST, message)
}

/// The slowed data plane's extra time for moving `gib` GiB of disk.
fn data_delay(api: &Api, gib: u64) -> Duration {
    api.shared.lock().faults.data_delay(api.disk_bytes(gib))
}

#[derive(Deserialize)]
struct CreateVolume {
    volume: NewVolume,
}

#[derive(Deserialize)]
struct NewVolume {
    size: Option<u64>,
    name: Option<String>,
    description: Option<String>,
    snapshot_id: Option<String>,
    source_volid: Option<String>,
    backup_id: Option<String>,
    #[serde(rename = "imageRef")]
    image_ref: Option<String>,
    #[serde(default)]
    metadata: serde_json::Map<String, Value>,
}

/// `POST /volumes` → 202, `creating` (`downloading` from an image) until
/// the data is in place, then `available`.
async fn create_volume(State(api): State<Api>, Json(req): Json<CreateVolume>) -> Response {
    let req = req.volume;
    let id = uuid();
    let planned = api.with(|r| -> Result<(Value, Option<String>, u64), Response> {
        // The source's file and size in GiB, if the volume copies one.
        let (source, source_gib, field) = if let Some(s) = &req.snapshot_id {
            let Some(snap) = r.snapshots.get(s) else {
                return Err(fault(StatusCode::NOT_FOUND, format!("Snapshot {s} could not be found.")));
            };
            if str_of(snap, "status") != "available" {
                return Err(bad("Invalid snapshot: Originating snapshot status must be one of 'available' values"));
            }
            (Some(snapshot_file(s)), snap["size"].as_u64().unwrap_or(0), Some(("snapshot_id", s)))
        } else if let Some(s) = &req.source_volid {
            let Some(vol) = r.volumes.get(s) else {
                return Err(fault(StatusCode::NOT_FOUND, format!("Volume {s} could not be found.")));
            };
            (Some(volume_file(s)), vol["size"].as_u64().unwrap_or(0), Some(("source_volid", s)))
        } else if let Some(b) = &req.backup_id {
            let Some(backup) = r.backups.get(b) else {
                return Err(fault(StatusCode::NOT_FOUND, format!("Backup {b} could not be found.")));
            };
            (Some(backup_file(b)), backup["size"].as_u64().unwrap_or(0), Some(("backup_id", b)))
        } else if let Some(i) = &req.image_ref {
            let Some(image) = r.images.get(i) else {
                return Err(bad("Invalid image identifier or unable to access requested image."));
            };
            if str_of(image, "status") != "active" {
                return Err(bad(format!("Image {i} is not active.")));
            }
            let bytes = image["size"].as_u64().unwrap_or(0);
            (Some(glance::image_file(i)), bytes.div_ceil(api.disk_bytes(1).max(1)), None)
        } else {
            (None, 0, None)
        };
        let size = req.size.unwrap_or(source_gib).max(source_gib);
        if size == 0 {
            return Err(bad("Invalid input received: size must be an integer greater than 0."));
        }
        let status = if req.image_ref.is_some() { "downloading" } else { "creating" };
        let mut doc = volume_doc(&api, &id, req.name.as_deref().unwrap_or_default(), size, status);
        set(&mut doc, "description", json!(req.description));
        set(&mut doc, "metadata", Value::Object(req.metadata.clone()));
        if let Some((field, value)) = field {
            set(&mut doc, field, json!(value));
        }
        if let Some(i) = &req.image_ref {
            set(&mut doc, "bootable", json!("true"));
            if let Some(image) = r.images.get(i) {
                set(&mut doc, "volume_image_metadata", json!({
                    "image_id": i, "image_name": image["name"], "disk_format": image["disk_format"],
                    "container_format": image["container_format"], "checksum": image["checksum"],
                    "size": image["size"].to_string(), "min_disk": "0", "min_ram": "0"
                }));
            }
        }
        r.volumes.insert(id.clone(), doc.clone());
        Ok((doc, source, size))
    });
    let (doc, source, size) = match planned {
        Ok(planned) => planned,
        Err(response) => return response,
    };
    let bytes = api.disk_bytes(size);
    let file = volume_file(&id);
    let delay = api.latency().volume + data_delay(&api, size);
    api.later_with_disk(
        delay,
        move |disks| {
            match source {
                Some(source) => disks.copy(&source, &file)?,
                None => disks.create(&file, 0)?,
            };
            if disks.size(&file)? < bytes {
                disks.resize(&file, bytes)?;
            }
            Ok(())
        },
        move |r, result| {
            if let Some(v) = r.volumes.get_mut(&id) {
                let status = if result.is_ok() { "available" } else { "error" };
                set(v, "status", json!(status));
                set(v, "updated_at", json!(time_micros()));
            }
        },
    );
    (StatusCode::ACCEPTED, Json(json!({ "volume": doc }))).into_response()
}

/// `DELETE /volumes/{id}` → 202, `deleting`, then gone with its file.
async fn delete_volume(State(api): State<Api>, Path(p): Path<Id>) -> Response {
    let id = p.id;
    let refused = api.with(|r| {
        let has_snapshots = r.snapshots.values().any(|s| str_of(s, "volume_id") == id);
        let Some(v) = r.volumes.get_mut(&id) else {
            return Some(fault(StatusCode::NOT_FOUND, format!("Volume {id} could not be found.")));
        };
        let status = str_of(v, "status");
        let in_group = !v["group_id"].is_null();
        if !["available", "error"].contains(&status) || has_snapshots || in_group {
            return Some(bad("Invalid volume: Volume status must be available or error or error_restoring or error_extending or error_managing and must not be migrating, attached, belong to a group, have snapshots, awaiting a transfer, or be disassociated from snapshots after volume transfer."));
        }
        set(v, "status", json!("deleting"));
        None
    });
    if let Some(response) = refused {
        return response;
    }
    let file = volume_file(&id);
    api.later_with_disk(
        api.latency().volume,
        move |disks| disks.remove(&file),
        move |r, _| {
            r.volumes.remove(&id);
        },
    );
    StatusCode::ACCEPTED.into_response()
}

/// `POST /volumes/{id}/action`: `os-volume_upload_image` (a Glance image of
/// the volume's blocks, in this region), `os-reset_status`.
async fn volume_action(
    State(api): State<Api>,
    Path(p): Path<Id>,
    Json(body): Json<Value>,
) -> Response {
    let id = p.id;
    if let Some(upload) = body.get("os-volume_upload_image") {
        return upload_image(&api, &id, upload);
    }
    if let Some(reset) = body.get("os-reset_status") {
        return api.with(|r| match r.volumes.get_mut(&id) {
            Some(v) => {
                set(v, "status", reset["status"].clone());
                StatusCode::ACCEPTED.into_response()
            }
            None => fault(
                StatusCode::NOT_FOUND,
                format!("Volume {id} could not be found."),
            ),
        });
    }
    bad("Invalid input received: the simulator knows os-volume_upload_image and os-reset_status.")
}

fn upload_image(api: &Api, id: &str, req: &Value) -> Response {
    let force =
        req["force"].as_bool().unwrap_or(false) || req["force"] == "True" || req["force"] == "true";
    let image_id = uuid();
    let planned = api.with(|r| {
        let Some(v) = r.volumes.get_mut(id) else {
            return Err(fault(StatusCode::NOT_FOUND, format!("Volume {id} could not be found.")));
        };
        let status = str_of(v, "status").to_owned();
        if !(status == "available" || (status == "in-use" && force)) {
            return Err(bad(format!("Invalid volume: Volume {id} status must be available or in-use (with force), but current status is: {status}.")));
        }
        set(v, "status", json!("uploading"));
        let volume = v.clone();
        let name = req["image_name"].as_str().unwrap_or(str_of(&volume, "name")).to_owned();
        let disk_format = req["disk_format"].as_str().unwrap_or("raw").to_owned();
        let container_format = req["container_format"].as_str().unwrap_or("bare").to_owned();
        let mut image = glance::image_doc(api, &image_id, &name, &disk_format, &container_format);
        set(&mut image, "status", json!("saving"));
        r.images.insert(image_id.clone(), image);
        Ok((volume, status, name, disk_format, container_format))
    });
    let (volume, status, name, disk_format, container_format) = match planned {
        Ok(p) => p,
        Err(response) => return response,
    };
    let from = volume_file(id);
    let to = glance::image_file(&image_id);
    let volume_id = id.to_owned();
    let image = image_id.clone();
    let size = volume["size"].as_u64().unwrap_or(0);
    let delay = api.latency().image + data_delay(api, size);
    api.later_with_disk(
        delay,
        move |disks| {
            disks.copy(&from, &to)?;
            glance::hashes(disks, &to)
        },
        move |r, result| {
            if let Some(v) = r.volumes.get_mut(&volume_id) {
                set(v, "status", json!(status));
            }
            if let Some(i) = r.images.get_mut(&image) {
                match result {
                    Ok(h) => glance::activate(i, &h),
                    Err(_) => set(i, "status", json!("killed")),
                }
            }
        },
    );
    let reply = json!({"os-volume_upload_image": {
        "id": id, "updated_at": volume["updated_at"], "status": "uploading",
        "display_description": volume["description"], "size": volume["size"],
        "volume_type": {"id": VOLUME_TYPE_ID, "name": "lvmdriver-1"},
        "image_id": image_id, "container_format": container_format,
        "disk_format": disk_format, "image_name": name
    }});
    (StatusCode::ACCEPTED, Json(reply)).into_response()
}

#[derive(Deserialize)]
struct CreateSnapshot {
    snapshot: NewSnapshot,
}

#[derive(Deserialize)]
struct NewSnapshot {
    volume_id: String,
    name: Option<String>,
    description: Option<String>,
    #[serde(default)]
    force: Value,
    #[serde(default)]
    metadata: serde_json::Map<String, Value>,
}

/// A `creating` snapshot of a volume of `size` GiB.
fn snapshot_doc(api: &Api, id: &str, volume_id: &str, size: u64) -> Value {
    json!({
        "id": id, "name": null, "description": null, "status": "creating",
        "size": size, "volume_id": volume_id, "metadata": {},
        "created_at": time_micros(), "updated_at": null, "user_id": api.user_id(),
        "os-extended-snapshot-attributes:project_id": api.project_id(),
        "os-extended-snapshot-attributes:progress": "0%",
        "group_snapshot_id": null, "consumes_quota": true,
        "links": links(api, "snapshots", id)
    })
}

fn truthy(v: &Value) -> bool {
    v.as_bool().unwrap_or(false) || matches!(v.as_str(), Some("true" | "True" | "1"))
}

/// `POST /snapshots` → 202, `creating` while the volume's blocks are
/// copied, then `available` (or `error`).
async fn create_snapshot(State(api): State<Api>, Json(req): Json<CreateSnapshot>) -> Response {
    let req = req.snapshot;
    let id = uuid();
    let planned = api.with(|r| {
        let vid = &req.volume_id;
        let Some(v) = r.volumes.get(vid) else {
            return Err(fault(StatusCode::NOT_FOUND, format!("Volume {vid} could not be found.")));
        };
        let status = str_of(v, "status");
        if !(status == "available" || (status == "in-use" && truthy(&req.force))) {
            return Err(bad(format!("Invalid volume: Volume {vid} status must be available, but current status is: {status}.")));
        }
        let size = v["size"].as_u64().unwrap_or(0);
        let mut doc = snapshot_doc(&api, &id, vid, size);
        set(&mut doc, "name", json!(req.name));
        set(&mut doc, "description", json!(req.description));
        set(&mut doc, "metadata", Value::Object(req.metadata.clone()));
        r.snapshots.insert(id.clone(), doc.clone());
        Ok((doc, size))
    });
    let (doc, size) = match planned {
        Ok(p) => p,
        Err(response) => return response,
    };
    let (from, to) = (volume_file(&req.volume_id), snapshot_file(&id));
    let delay = api.latency().snapshot + data_delay(&api, size);
    api.later_with_disk(
        delay,
        move |disks| disks.copy(&from, &to),
        move |r, result| {
            if let Some(s) = r.snapshots.get_mut(&id) {
                let status = if result.is_ok() { "available" } else { "error" };
                set(s, "status", json!(status));
                set(s, "os-extended-snapshot-attributes:progress", json!("100%"));
                set(s, "updated_at", json!(time_micros()));
            }
        },
    );
    (StatusCode::ACCEPTED, Json(json!({ "snapshot": doc }))).into_response()
}

async fn delete_snapshot(State(api): State<Api>, Path(p): Path<Id>) -> Response {
    let id = p.id;
    let refused = api.with(|r| match r.snapshots.get_mut(&id) {
        None => Some(fault(
            StatusCode::NOT_FOUND,
            format!("Snapshot {id} could not be found."),
        )),
        Some(s) if !["available", "error"].contains(&str_of(s, "status")) => Some(bad(
            "Invalid snapshot: Volume Snapshot status must be available or error.",
        )),
        Some(s) => {
            set(s, "status", json!("deleting"));
            None
        }
    });
    if let Some(response) = refused {
        return response;
    }
    let file = snapshot_file(&id);
    api.later_with_disk(
        api.latency().snapshot,
        move |disks| disks.remove(&file),
        move |r, result| match result {
            Ok(()) => {
                r.snapshots.remove(&id);
            }
            Err(_) => {
                if let Some(s) = r.snapshots.get_mut(&id) {
                    set(s, "status", json!("error_deleting"));
                }
            }
        },
    );
    StatusCode::ACCEPTED.into_response()
}

#[derive(Deserialize)]
struct CreateBackup {
    backup: NewBackup,
}

#[derive(Deserialize)]
struct NewBackup {
    volume_id: String,
    name: Option<String>,
    description: Option<String>,
    container: Option<String>,
    #[serde(default)]
    incremental: Value,
    #[serde(default)]
    force: Value,
    snapshot_id: Option<String>,
    #[serde(default)]
    metadata: serde_json::Map<String, Value>,
}

fn backup_doc(api: &Api, id: &str, name: Option<&str>, volume_id: &str, size: u64) -> Value {
    let now = time_micros();
    json!({
        "id": id, "name": name, "description": null, "status": "creating",
        "size": size, "volume_id": volume_id, "snapshot_id": null,
        "availability_zone": "nova", "container": "volumebackups",
        "created_at": now, "updated_at": now, "data_timestamp": now,
        "fail_reason": null, "has_dependent_backups": false, "is_incremental": false,
        "object_count": 0, "links": links(api, "backups", id),
        "user_id": api.user_id(), "project_id": api.project_id(),
        "os-backup-project-attr:project_id": api.project_id(),
        "encryption_key_id": null, "metadata": {}
    })
}

fn created_reply(doc: &Value, status: StatusCode, key: &str) -> Response {
    (
        status,
        Json(json!({ key: {"id": doc["id"], "links": doc["links"], "name": doc["name"]} })),
    )
        .into_response()
}

/// `POST /backups` → 202; the volume is `backing-up` and the backup
/// `creating` while its blocks are copied to the backup store.
async fn create_backup(State(api): State<Api>, Json(req): Json<CreateBackup>) -> Response {
    let req = req.backup;
    let id = uuid();
    let planned = api.with(|r| {
        let vid = &req.volume_id;
        let Some(v) = r.volumes.get_mut(vid) else {
            return Err(fault(StatusCode::NOT_FOUND, format!("Volume {vid} could not be found.")));
        };
        let status = str_of(v, "status").to_owned();
        if !(status == "available" || (status == "in-use" && truthy(&req.force))) {
            return Err(bad(format!("Invalid volume: Volume to be backed up must be available or in-use, but the current status is \"{status}\".")));
        }
        let size = v["size"].as_u64().unwrap_or(0);
        // A backup of a snapshot reads the snapshot's blocks, not the
        // volume's current ones.
        if let Some(snap) = &req.snapshot_id {
            match r.snapshots.get(snap) {
                None => return Err(fault(StatusCode::NOT_FOUND, format!("Snapshot {snap} could not be found."))),
                Some(s) if str_of(s, "volume_id") != vid => {
                    return Err(bad(format!("Invalid snapshot: Snapshot {snap} is not a snapshot of volume {vid}.")));
                }
                Some(s) if str_of(s, "status") != "available" => {
                    return Err(bad(format!("Invalid snapshot: Snapshot {snap} status must be available, but the current status is \"{}\".", str_of(s, "status"))));
                }
                Some(_) => {}
            }
        }
        let Some(v) = r.volumes.get_mut(vid) else {
            return Err(fault(StatusCode::NOT_FOUND, format!("Volume {vid} could not be found.")));
        };
        set(v, "status", json!("backing-up"));
        let incremental = truthy(&req.incremental);
        let parent = r
            .backups
            .values()
            .filter(|b| str_of(b, "volume_id") == vid && str_of(b, "status") == "available")
            .max_by(|a, b| str_of(a, "created_at").cmp(str_of(b, "created_at")))
            .map(|b| str_of(b, "id").to_owned());
        if incremental && parent.is_none() {
            if let Some(v) = r.volumes.get_mut(vid) {
                set(v, "status", json!(status));
            }
            return Err(bad("Invalid backup: No backups available to do an incremental backup."));
        }
        let mut doc = backup_doc(&api, &id, req.name.as_deref(), vid, size);
        set(&mut doc, "description", json!(req.description));
        set(&mut doc, "snapshot_id", json!(req.snapshot_id));
        set(&mut doc, "metadata", Value::Object(req.metadata.clone()));
        if let Some(c) = &req.container {
            set(&mut doc, "container", json!(c));
        }
        if incremental {
            set(&mut doc, "is_incremental", json!(true));
            if let Some(p) = parent.as_ref().and_then(|p| r.backups.get_mut(p)) {
                set(p, "has_dependent_backups", json!(true));
            }
        }
        r.backups.insert(id.clone(), doc.clone());
        Ok((doc, status, size))
    });
    let (doc, volume_status, size) = match planned {
        Ok(p) => p,
        Err(response) => return response,
    };
    let from = match &req.snapshot_id {
        Some(snap) => snapshot_file(snap),
        None => volume_file(&req.volume_id),
    };
    let to = backup_file(&id);
    let volume_id = req.volume_id.clone();
    let delay = api.latency().backup + data_delay(&api, size);
    api.later_with_disk(
        delay,
        move |disks| {
            disks.copy(&from, &to)?;
            disks.size(&to)
        },
        move |r, result| {
            if let Some(v) = r.volumes.get_mut(&volume_id) {
                set(v, "status", json!(volume_status));
            }
            if let Some(b) = r.backups.get_mut(&id) {
                match result {
                    Ok(bytes) => {
                        set(b, "status", json!("available"));
                        set(b, "object_count", json!(bytes.div_ceil(SWIFT_OBJECT_SIZE)));
                    }
                    Err(e) => {
                        set(b, "status", json!("error"));
                        set(b, "fail_reason", json!(e.to_string()));
                    }
                }
                set(b, "updated_at", json!(time_micros()));
            }
        },
    );
    created_reply(&doc, StatusCode::ACCEPTED, "backup")
}

/// `GET /backups/{id}/export_record`: the backup's metadata, base64 JSON.
async fn export_record(State(api): State<Api>, Path(p): Path<Id>) -> Response {
    let id = p.id;
    api.with(|r| match r.backups.get(&id) {
        None => fault(StatusCode::NOT_FOUND, format!("Backup {id} could not be found.")),
        Some(b) if str_of(b, "status") != "available" => bad(format!(
            "Invalid backup: Backup status must be available and not restoring, but the current status is \"{}\".",
            str_of(b, "status")
        )),
        Some(b) => {
            let mut record = b.clone();
            set(&mut record, "service", json!(BACKUP_SERVICE));
            let url = base64::engine::general_purpose::STANDARD.encode(record.to_string());
            Json(json!({"backup-record": {"backup_service": BACKUP_SERVICE, "backup_url": url}})).into_response()
        }
    })
}

/// `POST /backups/import_record`: the backup of an exported record, by the
/// record's id, `creating` until its data is found in the backup store.
async fn import_record(State(api): State<Api>, Json(body): Json<Value>) -> Response {
    let record = &body["backup-record"];
    let (Some(service), Some(url)) = (
        record["backup_service"].as_str(),
        record["backup_url"].as_str(),
    ) else {
        return bad("Invalid input received: backup-record needs backup_service and backup_url.");
    };
    if service != BACKUP_SERVICE {
        return bad(format!(
            "Invalid input received: backup service {service} is not supported; this site runs {BACKUP_SERVICE}."
        ));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(url)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
    let Some(source) = decoded else {
        return bad("Invalid input received: Can't parse backup record.");
    };
    let id = str_of(&source, "id").to_owned();
    if id.is_empty() {
        return bad("Invalid input received: Can't parse backup record.");
    }
    let planned = api.with(|r| {
        if r.backups.contains_key(&id) {
            return Err(bad("Invalid backup: Backup already exists in database."));
        }
        let mut doc = source.clone();
        if let Some(fields) = doc.as_object_mut() {
            fields.remove("service");
        }
        set(&mut doc, "status", json!("creating"));
        set(&mut doc, "links", links(&api, "backups", &id));
        set(&mut doc, "project_id", json!(api.project_id()));
        set(
            &mut doc,
            "os-backup-project-attr:project_id",
            json!(api.project_id()),
        );
        set(&mut doc, "updated_at", json!(time_micros()));
        r.backups.insert(id.clone(), doc.clone());
        Ok(doc)
    });
    let doc = match planned {
        Ok(doc) => doc,
        Err(response) => return response,
    };
    let file = backup_file(&id);
    api.later_with_disk(
        api.latency().backup,
        move |disks| Ok(disks.exists(&file)),
        move |r, found| {
            if let Some(b) = r.backups.get_mut(&id) {
                if matches!(found, Ok(true)) {
                    set(b, "status", json!("available"));
                } else {
                    set(b, "status", json!("error"));
                    set(
                        b,
                        "fail_reason",
                        json!("The backup's data is not in this site's backup store."),
                    );
                }
            }
        },
    );
    created_reply(&doc, StatusCode::CREATED, "backup")
}

/// `POST /backups/{id}/restore` `{"restore": {"volume_id"?, "name"?}}`:
/// onto a given volume (`restoring-backup`) or a new one of the backup's
/// size; the backup is `restoring` meanwhile.
async fn restore_backup(
    State(api): State<Api>,
    Path(p): Path<Id>,
    Json(body): Json<Value>,
) -> Response {
    let id = p.id;
    let req = &body["restore"];
    let planned = api.with(|r| {
        let Some(b) = r.backups.get(&id) else {
            return Err(fault(StatusCode::NOT_FOUND, format!("Backup {id} could not be found.")));
        };
        if str_of(b, "status") != "available" {
            return Err(bad(format!("Invalid backup: Backup status must be available, but the current status is \"{}\".", str_of(b, "status"))));
        }
        let size = b["size"].as_u64().unwrap_or(0);
        let volume_id = match req["volume_id"].as_str() {
            Some(vid) => {
                let Some(v) = r.volumes.get_mut(vid) else {
                    return Err(fault(StatusCode::NOT_FOUND, format!("Volume {vid} could not be found.")));
                };
                if str_of(v, "status") != "available" {
                    return Err(bad(format!("Invalid volume: Volume to be restored to must be available, but the current status is \"{}\".", str_of(v, "status"))));
                }
                if v["size"].as_u64().unwrap_or(0) < size {
                    return Err(bad(format!("Invalid volume: volume size {} is smaller than backup size {size}.", v["size"])));
                }
                set(v, "status", json!("restoring-backup"));
                vid.to_owned()
            }
            None => {
                let vid = uuid();
                let name = req["name"].as_str().map_or_else(|| format!("restore_backup_{id}"), str::to_owned);
                r.volumes.insert(vid.clone(), volume_doc(&api, &vid, &name, size, "restoring-backup"));
                vid
            }
        };
        if let Some(b) = r.backups.get_mut(&id) {
            set(b, "status", json!("restoring"));
        }
        let name = r.volumes.get(&volume_id).map(|v| v["name"].clone()).unwrap_or(Value::Null);
        Ok((volume_id, name, size))
    });
    let (volume_id, volume_name, size) = match planned {
        Ok(p) => p,
        Err(response) => return response,
    };
    let (from, to) = (backup_file(&id), volume_file(&volume_id));
    let bytes = api.disk_bytes(size);
    let (backup_id, vid) = (id.clone(), volume_id.clone());
    let delay = api.latency().backup + data_delay(&api, size);
    api.later_with_disk(
        delay,
        move |disks| {
            let target = disks.size(&to).unwrap_or(0).max(bytes);
            disks.copy(&from, &to)?;
            disks.resize(&to, target)
        },
        move |r, result| {
            if let Some(b) = r.backups.get_mut(&backup_id) {
                set(b, "status", json!("available"));
            }
            if let Some(v) = r.volumes.get_mut(&vid) {
                let status = if result.is_ok() {
                    "available"
                } else {
                    "error_restoring"
                };
                set(v, "status", json!(status));
                set(v, "updated_at", json!(time_micros()));
            }
        },
    );
    let reply =
        json!({"restore": {"backup_id": id, "volume_id": volume_id, "volume_name": volume_name}});
    (StatusCode::ACCEPTED, Json(reply)).into_response()
}

/// `DELETE /backups/{id}` → 202, `deleting`, then gone; its data leaves
/// the shared backup store once no region holds a record of it.
async fn delete_backup(State(api): State<Api>, Path(p): Path<Id>) -> Response {
    let id = p.id;
    let refused = api.with(|r| {
        let dependent = r
            .backups
            .get(&id)
            .is_some_and(|b| b["has_dependent_backups"] == true);
        match r.backups.get_mut(&id) {
            None => Some(fault(
                StatusCode::NOT_FOUND,
                format!("Backup {id} could not be found."),
            )),
            Some(_) if dependent => Some(bad(
                "Invalid backup: Incremental backups exist for this backup.",
            )),
            Some(b) if !["available", "error"].contains(&str_of(b, "status")) => Some(bad(
                "Invalid backup: Backup status must be available or error",
            )),
            Some(b) => {
                set(b, "status", json!("deleting"));
                None
            }
        }
    });
    if let Some(response) = refused {
        return response;
    }
    let shared = api.shared.clone();
    let region = api.region.clone();
    let delay = api.latency().backup;
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let orphaned = {
            let mut cloud = shared.lock();
            cloud.region(&region).backups.remove(&id);
            !cloud.regions.values().any(|r| r.backups.contains_key(&id))
        };
        if orphaned {
            let _ = shared.disks.remove(&backup_file(&id));
        }
    });
    StatusCode::ACCEPTED.into_response()
}

async fn services(State(api): State<Api>) -> Json<Value> {
    let now = time_micros();
    let services: Vec<Value> = [
        ("cinder-scheduler", format!("{}-block", api.region)),
        ("cinder-volume", format!("{}-block@lvmdriver-1", api.region)),
        ("cinder-backup", format!("{}-block", api.region)),
    ]
    .iter()
    .map(|(binary, host)| {
        json!({
            "binary": binary, "host": host, "zone": "nova", "status": "enabled",
            "state": "up", "updated_at": now, "disabled_reason": null,
            "cluster": null, "replication_status": "disabled", "active_backend_id": null,
            "frozen": false, "backend_state": "up"
        })
    })
    .collect();
    Json(json!({ "services": services }))
}

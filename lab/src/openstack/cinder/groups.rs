//! Cinder generic volume groups and group snapshots (group types from
//! microversion 3.11, groups from 3.13, group snapshots from 3.14): a group of volumes, and one snapshot of every volume in it taken
//! together, for crash-consistent recovery points of multi-volume servers.
//! The group snapshot is `creating` until every member snapshot's blocks
//! are copied, then `available`; its snapshots carry `group_snapshot_id`.

use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use std::collections::HashMap;

use super::{bad, data_delay, links, snapshot_doc, snapshot_file, volume_file};
use crate::openstack::state::{Api, Microversion, fault, matches, set, str_of, time_micros, uuid};

const GROUP_TYPES_FROM: Microversion = Microversion(3, 11);
const GROUPS_FROM: Microversion = Microversion(3, 13);
const GROUP_SNAPSHOTS_FROM: Microversion = Microversion(3, 14);
/// The one group type every region has.
const GROUP_TYPE: (&str, &str) = ("b8f7e2a1-6c3d-4e59-9a0b-1d2c3e4f5a6b", "default");

pub(super) fn routes(router: Router<Api>, v: &str) -> Router<Api> {
    router
        .route(&format!("{v}/group_types"), get(group_types))
        .route(&format!("{v}/groups"), get(list_groups).post(create_group))
        .route(&format!("{v}/groups/detail"), get(list_groups_detail))
        .route(
            &format!("{v}/groups/{{id}}"),
            get(show_group).put(update_group),
        )
        .route(
            &format!("{v}/group_snapshots"),
            get(list_group_snapshots).post(create_group_snapshot),
        )
        .route(
            &format!("{v}/group_snapshots/detail"),
            get(list_group_snapshots_detail),
        )
        .route(
            &format!("{v}/group_snapshots/{{id}}"),
            get(show_group_snapshot).delete(delete_group_snapshot),
        )
}

/// A call older than the microversion that brought it is unknown, as in
/// Cinder.
fn too_old(version: Microversion, from: Microversion) -> Option<Response> {
    (version < from).then(|| {
        fault(
            StatusCode::NOT_FOUND,
            format!(
                "API version {}.{} is not supported on this method.",
                version.0, version.1
            ),
        )
    })
}

#[derive(serde::Deserialize)]
struct Id {
    id: String,
}

async fn group_types(Extension(version): Extension<Microversion>) -> Response {
    if let Some(r) = too_old(version, GROUP_TYPES_FROM) {
        return r;
    }
    Json(json!({"group_types": [{
        "id": GROUP_TYPE.0, "name": GROUP_TYPE.1, "description": "default group type",
        "is_public": true, "group_specs": {}
    }]}))
    .into_response()
}

fn group_with_volumes(r: &crate::openstack::state::Region, doc: &Value) -> Value {
    let id = str_of(doc, "id");
    let volumes: Vec<Value> = r
        .volumes
        .values()
        .filter(|v| str_of(v, "group_id") == id)
        .map(|v| v["id"].clone())
        .collect();
    let mut doc = doc.clone();
    set(&mut doc, "volumes", json!(volumes));
    doc
}

fn list(
    api: &Api,
    version: Microversion,
    q: &HashMap<String, String>,
    detail: bool,
    key: &str,
    groups: bool,
) -> Response {
    let from = if groups {
        GROUPS_FROM
    } else {
        GROUP_SNAPSHOTS_FROM
    };
    if let Some(r) = too_old(version, from) {
        return r;
    }
    let found: Vec<Value> = api.with(|r| {
        let table = if groups {
            &r.groups
        } else {
            &r.group_snapshots
        };
        table
            .values()
            .filter(|d| matches(d, q))
            .map(|d| match (detail, groups) {
                (false, _) => json!({"id": d["id"], "name": d["name"]}),
                (true, true) => group_with_volumes(r, d),
                (true, false) => d.clone(),
            })
            .collect()
    });
    Json(json!({ key: found })).into_response()
}

async fn list_groups(
    State(api): State<Api>,
    Extension(v): Extension<Microversion>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    list(&api, v, &q, false, "groups", true)
}

async fn list_groups_detail(
    State(api): State<Api>,
    Extension(v): Extension<Microversion>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    list(&api, v, &q, true, "groups", true)
}

async fn list_group_snapshots(
    State(api): State<Api>,
    Extension(v): Extension<Microversion>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    list(&api, v, &q, false, "group_snapshots", false)
}

async fn list_group_snapshots_detail(
    State(api): State<Api>,
    Extension(v): Extension<Microversion>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    list(&api, v, &q, true, "group_snapshots", false)
}

async fn show_group(
    State(api): State<Api>,
    Extension(v): Extension<Microversion>,
    Path(p): Path<Id>,
) -> Response {
    if let Some(r) = too_old(v, GROUPS_FROM) {
        return r;
    }
    api.with(|r| match r.groups.get(&p.id) {
        Some(g) => Json(json!({"group": group_with_volumes(r, g)})).into_response(),
        None => fault(
            StatusCode::NOT_FOUND,
            format!("Group {} could not be found.", p.id),
        ),
    })
}

/// `POST /groups` `{"group": {"name", "group_type", "volume_types"}}` →
/// 202, `creating`, then `available`.
async fn create_group(
    State(api): State<Api>,
    Extension(v): Extension<Microversion>,
    Json(body): Json<Value>,
) -> Response {
    if let Some(r) = too_old(v, GROUPS_FROM) {
        return r;
    }
    let req = &body["group"];
    let group_type = req["group_type"].as_str().unwrap_or_default();
    if group_type != GROUP_TYPE.0 && group_type != GROUP_TYPE.1 {
        return fault(
            StatusCode::NOT_FOUND,
            format!("Group type {group_type} could not be found."),
        );
    }
    let Some(volume_types) = req["volume_types"].as_array().filter(|t| !t.is_empty()) else {
        return bad("Invalid input received: volume_types must be provided to create group.");
    };
    let id = uuid();
    let doc = json!({
        "id": id, "name": req["name"], "description": req["description"],
        "status": "creating", "availability_zone": "nova", "created_at": time_micros(),
        "group_type": GROUP_TYPE.0, "volume_types": volume_types,
        "group_snapshot_id": null, "source_group_id": null,
        "project_id": api.project_id(), "replication_status": "disabled"
    });
    api.with(|r| r.groups.insert(id.clone(), doc.clone()));
    let group = id.clone();
    api.later(api.latency().volume, move |r| {
        if let Some(g) = r.groups.get_mut(&group) {
            set(g, "status", json!("available"));
        }
    });
    (
        StatusCode::ACCEPTED,
        Json(json!({"group": {"id": id, "name": doc["name"]}})),
    )
        .into_response()
}

/// `PUT /groups/{id}` `{"group": {"add_volumes": "a,b", "remove_volumes":
/// "c", "name", "description"}}` → 202.
async fn update_group(
    State(api): State<Api>,
    Extension(v): Extension<Microversion>,
    Path(p): Path<Id>,
    Json(body): Json<Value>,
) -> Response {
    if let Some(r) = too_old(v, GROUPS_FROM) {
        return r;
    }
    let req = &body["group"];
    let ids = |key: &str| -> Vec<String> {
        req[key]
            .as_str()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let (add, remove) = (ids("add_volumes"), ids("remove_volumes"));
    api.with(|r| {
        let Some(group) = r.groups.get(&p.id) else {
            return fault(
                StatusCode::NOT_FOUND,
                format!("Group {} could not be found.", p.id),
            );
        };
        if str_of(group, "status") != "available" {
            return bad(format!(
                "Invalid group: Group {} status must be available, but current status is: {}.",
                p.id,
                str_of(group, "status")
            ));
        }
        for vid in &add {
            match r.volumes.get(vid) {
                None => {
                    return fault(
                        StatusCode::NOT_FOUND,
                        format!("Volume {vid} could not be found."),
                    );
                }
                Some(vol) if !vol["group_id"].is_null() && vol["group_id"] != p.id.as_str() => {
                    return bad(format!(
                        "Invalid volume: Volume {vid} is already in a group."
                    ));
                }
                Some(_) => {}
            }
        }
        for vid in &add {
            if let Some(vol) = r.volumes.get_mut(vid) {
                set(vol, "group_id", json!(p.id));
            }
        }
        for vid in &remove {
            if let Some(vol) = r
                .volumes
                .get_mut(vid)
                .filter(|v| v["group_id"] == p.id.as_str())
            {
                set(vol, "group_id", Value::Null);
            }
        }
        if let Some(g) = r.groups.get_mut(&p.id) {
            for key in ["name", "description"] {
                if let Some(value) = req.get(key) {
                    set(g, key, value.clone());
                }
            }
        }
        StatusCode::ACCEPTED.into_response()
    })
}

async fn show_group_snapshot(
    State(api): State<Api>,
    Extension(v): Extension<Microversion>,
    Path(p): Path<Id>,
) -> Response {
    if let Some(r) = too_old(v, GROUP_SNAPSHOTS_FROM) {
        return r;
    }
    match api.with(|r| r.group_snapshots.get(&p.id).cloned()) {
        Some(g) => Json(json!({"group_snapshot": g})).into_response(),
        None => fault(
            StatusCode::NOT_FOUND,
            format!("GroupSnapshot {} could not be found.", p.id),
        ),
    }
}

/// `POST /group_snapshots` `{"group_snapshot": {"group_id", "name"}}` →
/// 202; a snapshot of every volume in the group, all `creating` until the
/// copies are done.
async fn create_group_snapshot(
    State(api): State<Api>,
    Extension(v): Extension<Microversion>,
    Json(body): Json<Value>,
) -> Response {
    if let Some(r) = too_old(v, GROUP_SNAPSHOTS_FROM) {
        return r;
    }
    let req = &body["group_snapshot"];
    let group_id = req["group_id"].as_str().unwrap_or_default().to_owned();
    let id = uuid();
    let planned = api.with(|r| {
        let Some(group) = r.groups.get(&group_id) else {
            return Err(fault(
                StatusCode::NOT_FOUND,
                format!("Group {group_id} could not be found."),
            ));
        };
        if str_of(group, "status") != "available" {
            return Err(bad(format!(
                "Invalid group: Group {group_id} status must be available."
            )));
        }
        let volumes: Vec<(String, u64)> = r
            .volumes
            .values()
            .filter(|v| v["group_id"] == group_id.as_str())
            .map(|v| (str_of(v, "id").to_owned(), v["size"].as_u64().unwrap_or(0)))
            .collect();
        if volumes.is_empty() {
            return Err(bad(format!(
                "Invalid group: Group {group_id} has no volumes to snapshot."
            )));
        }
        let mut copies = Vec::new();
        for (volume, size) in &volumes {
            let snap = uuid();
            let mut doc = snapshot_doc(&api, &snap, volume, *size);
            set(&mut doc, "group_snapshot_id", json!(id));
            set(&mut doc, "name", json!(format!("snapshot-{id}")));
            r.snapshots.insert(snap.clone(), doc);
            copies.push((volume_file(volume), snapshot_file(&snap), snap));
        }
        let doc = json!({
            "id": id, "group_id": group_id, "status": "creating",
            "created_at": time_micros(), "name": req["name"],
            "description": req["description"], "group_type_id": GROUP_TYPE.0,
            "project_id": api.project_id(), "links": links(&api, "group_snapshots", &id)
        });
        r.group_snapshots.insert(id.clone(), doc.clone());
        let gib: u64 = volumes.iter().map(|(_, size)| size).sum();
        Ok((doc, copies, gib))
    });
    let (doc, copies, gib) = match planned {
        Ok(p) => p,
        Err(response) => return response,
    };
    let delay = api.latency().snapshot + data_delay(&api, gib);
    let snaps: Vec<String> = copies.iter().map(|(_, _, s)| s.clone()).collect();
    let group_snapshot = id.clone();
    api.later_with_disk(
        delay,
        move |disks| {
            for (from, to, _) in &copies {
                disks.copy(from, to)?;
            }
            Ok(())
        },
        move |r, result| {
            let status = if result.is_ok() { "available" } else { "error" };
            for snap in &snaps {
                if let Some(s) = r.snapshots.get_mut(snap) {
                    set(s, "status", json!(status));
                    set(s, "os-extended-snapshot-attributes:progress", json!("100%"));
                    set(s, "updated_at", json!(time_micros()));
                }
            }
            if let Some(g) = r.group_snapshots.get_mut(&group_snapshot) {
                set(g, "status", json!(status));
            }
        },
    );
    let reply =
        json!({"group_snapshot": {"id": id, "name": doc["name"], "group_type_id": GROUP_TYPE.0}});
    (StatusCode::ACCEPTED, Json(reply)).into_response()
}

/// `DELETE /group_snapshots/{id}` → 202; it and its snapshots go.
async fn delete_group_snapshot(
    State(api): State<Api>,
    Extension(v): Extension<Microversion>,
    Path(p): Path<Id>,
) -> Response {
    if let Some(r) = too_old(v, GROUP_SNAPSHOTS_FROM) {
        return r;
    }
    let snaps = api.with(|r| {
        let g = r.group_snapshots.get_mut(&p.id)?;
        if !["available", "error"].contains(&str_of(g, "status")) {
            return Some(Err(bad(
                "Invalid GroupSnapshot: Group snapshot status must be available or error.",
            )));
        }
        set(g, "status", json!("deleting"));
        let snaps: Vec<String> = r
            .snapshots
            .values()
            .filter(|s| s["group_snapshot_id"] == p.id.as_str())
            .map(|s| str_of(s, "id").to_owned())
            .collect();
        for snap in &snaps {
            if let Some(s) = r.snapshots.get_mut(snap) {
                set(s, "status", json!("deleting"));
            }
        }
        Some(Ok(snaps))
    });
    let snaps = match snaps {
        None => {
            return fault(
                StatusCode::NOT_FOUND,
                format!("GroupSnapshot {} could not be found.", p.id),
            );
        }
        Some(Err(response)) => return response,
        Some(Ok(snaps)) => snaps,
    };
    let files: Vec<String> = snaps.iter().map(|s| snapshot_file(s)).collect();
    let id = p.id;
    api.later_with_disk(
        api.latency().snapshot,
        move |disks| files.iter().try_for_each(|f| disks.remove(f)),
        move |r, _| {
            r.group_snapshots.remove(&id);
            for snap in &snaps {
                r.snapshots.remove(snap);
            }
        },
    );
    StatusCode::ACCEPTED.into_response()
}

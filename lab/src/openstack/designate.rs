//! Designate (DNS v2) at `/{region}/dns`: zones (list, show) and
//! recordsets (list, show, create, update, delete). A change is `PENDING`
//! with its `action` for the configured latency, then `ACTIVE` / `NONE`.
//! Designate has no weighted records; redirection rewrites the records.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::state::{self, Api, Region, matches, set, str_of, time_micros, uuid};

pub(super) fn routes(api: &Api) -> Router {
    let p = format!("{}/dns", api.prefix());
    let v = format!("{p}/v2");
    let calls = Router::new()
        .route(&format!("{v}/zones"), get(list_zones))
        .route(&format!("{v}/zones/{{zone}}"), get(show_zone))
        .route(
            &format!("{v}/zones/{{zone}}/recordsets"),
            get(list_recordsets).post(create_recordset),
        )
        .route(
            &format!("{v}/zones/{{zone}}/recordsets/{{id}}"),
            get(show_recordset)
                .put(update_recordset)
                .delete(delete_recordset),
        )
        .route(&format!("{v}/recordsets"), get(list_all_recordsets))
        .route_layer(middleware::from_fn_with_state(
            api.shared.clone(),
            state::require_token,
        ));
    Router::new()
        .route(&p, get(versions))
        .route(&format!("{p}/"), get(versions))
        .merge(calls)
        .with_state(api.clone())
}

async fn versions(State(api): State<Api>) -> Json<Value> {
    let href = api.url("/dns/v2");
    Json(json!({"versions": [
        {"id": "v2.0", "links": [{"href": href, "rel": "self"}], "status": "SUPPORTED", "updated": "2022-06-29T00:00:00Z"},
        {"id": "v2.1", "links": [{"href": href, "rel": "self"}], "status": "CURRENT", "updated": "2023-01-25T00:00:00Z"}
    ]}))
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = json!({"code": status.as_u16(), "type": kind, "message": message, "request_id": format!("req-{}", uuid())});
    (status, Json(body)).into_response()
}

fn zone_missing() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "zone_not_found",
        "Could not find Zone",
    )
}

fn recordset_missing() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "recordset_not_found",
        "Could not find RecordSet",
    )
}

/// An `ACTIVE` primary zone; returns its id.
pub(super) fn new_zone(api: &Api, r: &mut Region, name: &str) -> String {
    let id = uuid();
    let now = time_micros();
    r.zones.insert(id.clone(), json!({
        "id": id, "pool_id": "794ccc2c-d751-44fe-b57f-8894c9f5c842", "project_id": api.project_id(),
        "name": name, "email": format!("hostmaster@{}", name.trim_end_matches('.')),
        "ttl": 3600, "serial": 1_700_000_000u64, "status": "ACTIVE", "action": "NONE",
        "description": null, "masters": [], "type": "PRIMARY", "transferred_at": null,
        "version": 1, "created_at": now, "updated_at": null, "attributes": {}, "shared": false,
        "links": {"self": api.url(&format!("/dns/v2/zones/{id}"))}
    }));
    id
}

/// A recordset, `ACTIVE` at once when seeded.
pub(super) fn new_recordset(
    api: &Api,
    r: &mut Region,
    zone_id: &str,
    name: &str,
    kind: &str,
    records: Vec<String>,
    ttl: Option<u64>,
) -> String {
    let id = uuid();
    let zone_name = r
        .zones
        .get(zone_id)
        .map(|z| str_of(z, "name").to_owned())
        .unwrap_or_default();
    r.recordsets.insert(
        id.clone(),
        json!({
            "id": id, "zone_id": zone_id, "project_id": api.project_id(), "name": name,
            "zone_name": zone_name, "type": kind, "records": records, "ttl": ttl,
            "status": "ACTIVE", "action": "NONE", "description": null, "version": 1,
            "created_at": time_micros(), "updated_at": null,
            "links": {"self": api.url(&format!("/dns/v2/zones/{zone_id}/recordsets/{id}"))}
        }),
    );
    id
}

fn page(api: &Api, key: &str, path: &str, items: Vec<Value>) -> Json<Value> {
    let total = items.len();
    Json(
        json!({ key: items, "links": {"self": api.url(path)}, "metadata": {"total_count": total} }),
    )
}

async fn list_zones(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    let zones = api.with(|r| {
        r.zones
            .values()
            .filter(|z| matches(z, &q))
            .cloned()
            .collect()
    });
    page(&api, "zones", "/dns/v2/zones", zones)
}

#[derive(Deserialize)]
struct ZonePath {
    zone: String,
}

#[derive(Deserialize)]
struct RecordsetPath {
    zone: String,
    id: String,
}

async fn show_zone(State(api): State<Api>, Path(p): Path<ZonePath>) -> Response {
    match api.with(|r| r.zones.get(&p.zone).cloned()) {
        Some(z) => Json(z).into_response(),
        None => zone_missing(),
    }
}

async fn list_recordsets(
    State(api): State<Api>,
    Path(p): Path<ZonePath>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let found = api.with(|r| {
        r.zones.contains_key(&p.zone).then(|| {
            r.recordsets
                .values()
                .filter(|s| str_of(s, "zone_id") == p.zone && matches(s, &q))
                .cloned()
                .collect::<Vec<_>>()
        })
    });
    match found {
        Some(sets) => page(
            &api,
            "recordsets",
            &format!("/dns/v2/zones/{}/recordsets", p.zone),
            sets,
        )
        .into_response(),
        None => zone_missing(),
    }
}

async fn list_all_recordsets(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    let sets = api.with(|r| {
        r.recordsets
            .values()
            .filter(|s| matches(s, &q))
            .cloned()
            .collect()
    });
    page(&api, "recordsets", "/dns/v2/recordsets", sets)
}

async fn show_recordset(State(api): State<Api>, Path(p): Path<RecordsetPath>) -> Response {
    match api.with(|r| {
        r.recordsets
            .get(&p.id)
            .filter(|s| str_of(s, "zone_id") == p.zone)
            .cloned()
    }) {
        Some(s) => Json(s).into_response(),
        None => recordset_missing(),
    }
}

/// Settle a pending recordset after the DNS latency (or remove it).
fn settle(api: &Api, id: String, version: u64) {
    api.later(api.latency().dns, move |r| {
        let deleting = r
            .recordsets
            .get(&id)
            .is_some_and(|s| s["action"] == "DELETE");
        if deleting {
            r.recordsets.remove(&id);
        } else if let Some(s) = r
            .recordsets
            .get_mut(&id)
            .filter(|s| s["version"] == version)
        {
            set(s, "status", json!("ACTIVE"));
            set(s, "action", json!("NONE"));
        }
    });
}

fn records_of(body: &Value) -> Result<Vec<String>, Response> {
    let Some(records) = body["records"].as_array() else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_object",
            "Provided object does not match schema: 'records' is a required property",
        ));
    };
    records
        .iter()
        .map(|r| r.as_str().map(str::to_owned))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "invalid_object",
                "Provided object does not match schema: records must be strings",
            )
        })
}

/// `POST /v2/zones/{zone}/recordsets` → 202, `PENDING` / `CREATE`.
async fn create_recordset(
    State(api): State<Api>,
    Path(p): Path<ZonePath>,
    Json(body): Json<Value>,
) -> Response {
    let (Some(name), Some(kind)) = (body["name"].as_str(), body["type"].as_str()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_object",
            "Provided object does not match schema: 'name' and 'type' are required properties",
        );
    };
    let records = match records_of(&body) {
        Ok(r) => r,
        Err(response) => return response,
    };
    let created = api.with(|r| {
        let Some(zone) = r.zones.get(&p.zone) else {
            return Err(zone_missing());
        };
        let zone_name = str_of(zone, "name").to_owned();
        if !name.ends_with('.') || !(name == zone_name || name.ends_with(&format!(".{zone_name}")))
        {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "invalid_recordset_location",
                "RecordSet belongs in a child zone or is not a fully qualified name in this zone",
            ));
        }
        if r.recordsets
            .values()
            .any(|s| s["zone_id"] == p.zone.as_str() && s["name"] == name && s["type"] == kind)
        {
            return Err(error(
                StatusCode::CONFLICT,
                "duplicate_recordset",
                "Duplicate RecordSet",
            ));
        }
        let id = new_recordset(&api, r, &p.zone, name, kind, records, body["ttl"].as_u64());
        let s = r.recordsets.get_mut(&id).ok_or_else(recordset_missing)?;
        set(s, "status", json!("PENDING"));
        set(s, "action", json!("CREATE"));
        set(s, "description", body["description"].clone());
        Ok(s.clone())
    });
    match created {
        Ok(doc) => {
            settle(&api, str_of(&doc, "id").to_owned(), 1);
            (StatusCode::ACCEPTED, Json(doc)).into_response()
        }
        Err(response) => response,
    }
}

/// `PUT …/recordsets/{id}` `{"records", "ttl", "description"}` → 202,
/// `PENDING` / `UPDATE`.
async fn update_recordset(
    State(api): State<Api>,
    Path(p): Path<RecordsetPath>,
    Json(body): Json<Value>,
) -> Response {
    let updated = api.with(|r| {
        let Some(s) = r
            .recordsets
            .get_mut(&p.id)
            .filter(|s| str_of(s, "zone_id") == p.zone)
        else {
            return Err(recordset_missing());
        };
        if body.get("records").is_some() {
            set(s, "records", json!(records_of(&body)?));
        }
        for key in ["ttl", "description"] {
            if let Some(v) = body.get(key) {
                set(s, key, v.clone());
            }
        }
        let version = s["version"].as_u64().unwrap_or(1) + 1;
        set(s, "version", json!(version));
        set(s, "status", json!("PENDING"));
        set(s, "action", json!("UPDATE"));
        set(s, "updated_at", json!(time_micros()));
        Ok((s.clone(), version))
    });
    match updated {
        Ok((doc, version)) => {
            settle(&api, p.id, version);
            (StatusCode::ACCEPTED, Json(doc)).into_response()
        }
        Err(response) => response,
    }
}

async fn delete_recordset(State(api): State<Api>, Path(p): Path<RecordsetPath>) -> Response {
    let deleted = api.with(|r| {
        let s = r
            .recordsets
            .get_mut(&p.id)
            .filter(|s| str_of(s, "zone_id") == p.zone)?;
        set(s, "status", json!("PENDING"));
        set(s, "action", json!("DELETE"));
        Some(s.clone())
    });
    match deleted {
        Some(doc) => {
            settle(&api, p.id, 0);
            (StatusCode::ACCEPTED, Json(doc)).into_response()
        }
        None => recordset_missing(),
    }
}

//! Octavia (load-balancer v2) at `/{region}/load-balancer`: load
//! balancers, pools and members (list, show), and member updates
//! (`PUT …/members/{m}` `{"member": {"weight": 0..256}}`). An update puts
//! the member and its load balancer in `PENDING_UPDATE` for the configured
//! latency; further updates meanwhile get 409, as the real one is immutable
//! while pending.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::state::{self, Api, Region, matches, set, str_of, time_z, uuid};

pub(super) fn routes(api: &Api) -> Router {
    let p = format!("{}/load-balancer", api.prefix());
    let mut calls = Router::new();
    // Octavia serves its API under both /v2 and /v2.0.
    for v in [format!("{p}/v2"), format!("{p}/v2.0")] {
        calls = calls
            .route(&format!("{v}/lbaas/loadbalancers"), get(list_lbs))
            .route(&format!("{v}/lbaas/loadbalancers/{{id}}"), get(show_lb))
            .route(&format!("{v}/lbaas/pools"), get(list_pools))
            .route(&format!("{v}/lbaas/pools/{{pool}}"), get(show_pool))
            .route(
                &format!("{v}/lbaas/pools/{{pool}}/members"),
                get(list_members),
            )
            .route(
                &format!("{v}/lbaas/pools/{{pool}}/members/{{id}}"),
                get(show_member).put(update_member),
            );
    }
    let calls = calls.route_layer(middleware::from_fn_with_state(
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
    let href = api.url("/load-balancer/v2");
    Json(json!({"versions": [
        {"id": "v2.0", "status": "SUPPORTED", "updated": "2016-12-11T00:00:00Z", "links": [{"href": href, "rel": "self"}]},
        {"id": "v2.28", "status": "CURRENT", "updated": "2023-11-08T00:00:00Z", "links": [{"href": href, "rel": "self"}]}
    ]}))
}

fn error(status: StatusCode, message: String) -> Response {
    let client = if status.is_client_error() {
        "Client"
    } else {
        "Server"
    };
    (
        status,
        Json(json!({"faultcode": client, "faultstring": message, "debuginfo": null})),
    )
        .into_response()
}

fn common(api: &Api, id: &str, name: &str) -> Value {
    let now = time_z();
    json!({
        "id": id, "name": name, "description": "", "admin_state_up": true,
        "provisioning_status": "ACTIVE", "operating_status": "ONLINE",
        "project_id": api.project_id(), "tenant_id": api.project_id(),
        "created_at": now, "updated_at": null, "tags": []
    })
}

fn merge(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    base
}

/// A load balancer with one HTTP pool; returns (lb id, pool id).
pub(super) fn new_load_balancer(
    api: &Api,
    r: &mut Region,
    name: &str,
    vip: &str,
    subnet: &str,
) -> (String, String) {
    let lb = uuid();
    let pool = uuid();
    r.loadbalancers.insert(lb.clone(), merge(common(api, &lb, name), json!({
        "vip_address": vip, "vip_port_id": uuid(), "vip_subnet_id": subnet, "vip_network_id": null,
        "provider": "amphora", "flavor_id": null, "availability_zone": null,
        "listeners": [], "pools": [{"id": pool}]
    })));
    r.pools.insert(pool.clone(), merge(common(api, &pool, &format!("{name}-pool")), json!({
        "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN", "session_persistence": null,
        "loadbalancers": [{"id": lb}], "listeners": [], "members": [], "healthmonitor_id": null,
        "tls_enabled": false, "tls_ciphers": null, "tls_versions": null, "alpn_protocols": null,
        "ca_tls_container_ref": null, "crl_container_ref": null, "tls_container_ref": null
    })));
    (lb, pool)
}

/// A member of a pool at `address:port` with a weight; returns its id.
pub(super) fn new_member(
    api: &Api,
    r: &mut Region,
    pool: &str,
    name: &str,
    address: &str,
    port: u16,
    weight: u64,
) -> String {
    let id = uuid();
    r.members.insert(
        id.clone(),
        merge(
            common(api, &id, name),
            json!({
                "address": address, "protocol_port": port, "weight": weight, "backup": false,
                "subnet_id": null, "monitor_address": null, "monitor_port": null, "pool_id": pool,
                "vnic_type": "normal"
            }),
        ),
    );
    if let Some(members) = r
        .pools
        .get_mut(pool)
        .and_then(|p| p["members"].as_array_mut())
    {
        members.push(json!({"id": id}));
    }
    id
}

/// Octavia does not put `pool_id` in a member's body.
fn render_member(doc: &Value) -> Value {
    let mut doc = doc.clone();
    if let Some(fields) = doc.as_object_mut() {
        fields.remove("pool_id");
    }
    doc
}

async fn list_lbs(State(api): State<Api>, Query(q): Query<HashMap<String, String>>) -> Json<Value> {
    let lbs: Vec<Value> = api.with(|r| {
        r.loadbalancers
            .values()
            .filter(|d| matches(d, &q))
            .cloned()
            .collect()
    });
    Json(json!({"loadbalancers": lbs, "loadbalancers_links": []}))
}

async fn show_lb(State(api): State<Api>, Path(id): Path<String>) -> Response {
    match api.with(|r| r.loadbalancers.get(&id).cloned()) {
        Some(d) => Json(json!({"loadbalancer": d})).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("Load Balancer {id} not found."),
        ),
    }
}

async fn list_pools(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    let pools: Vec<Value> = api.with(|r| {
        r.pools
            .values()
            .filter(|d| matches(d, &q))
            .cloned()
            .collect()
    });
    Json(json!({"pools": pools, "pools_links": []}))
}

#[derive(Deserialize)]
struct PoolPath {
    pool: String,
}

#[derive(Deserialize)]
struct MemberPath {
    pool: String,
    id: String,
}

async fn show_pool(State(api): State<Api>, Path(p): Path<PoolPath>) -> Response {
    match api.with(|r| r.pools.get(&p.pool).cloned()) {
        Some(d) => Json(json!({"pool": d})).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("Pool {} not found.", p.pool)),
    }
}

async fn list_members(
    State(api): State<Api>,
    Path(p): Path<PoolPath>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let found = api.with(|r| {
        r.pools.contains_key(&p.pool).then(|| {
            r.members
                .values()
                .filter(|m| str_of(m, "pool_id") == p.pool && matches(m, &q))
                .map(render_member)
                .collect::<Vec<_>>()
        })
    });
    match found {
        Some(members) => Json(json!({"members": members, "members_links": []})).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("Pool {} not found.", p.pool)),
    }
}

async fn show_member(State(api): State<Api>, Path(p): Path<MemberPath>) -> Response {
    match api.with(|r| {
        r.members
            .get(&p.id)
            .filter(|m| str_of(m, "pool_id") == p.pool)
            .map(render_member)
    }) {
        Some(d) => Json(json!({"member": d})).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("Member {} not found.", p.id)),
    }
}

/// `PUT /v2/lbaas/pools/{pool}/members/{id}` → 202 with the member in
/// `PENDING_UPDATE`; 409 while its load balancer is still pending.
async fn update_member(
    State(api): State<Api>,
    Path(p): Path<MemberPath>,
    Json(body): Json<Value>,
) -> Response {
    let Some(update) = body.get("member").and_then(Value::as_object) else {
        return error(
            StatusCode::BAD_REQUEST,
            "Invalid input for field/attribute member.".into(),
        );
    };
    if let Some(w) = update.get("weight")
        && w.as_u64().is_none_or(|w| w > 256)
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "Invalid input for field/attribute weight. Value: '{w}'. Value should be lower or equal to 256"
            ),
        );
    }
    let updated = api.with(|r| {
        let Some(member) = r
            .members
            .get(&p.id)
            .filter(|m| str_of(m, "pool_id") == p.pool)
        else {
            return Err(error(
                StatusCode::NOT_FOUND,
                format!("Member {} not found.", p.id),
            ));
        };
        let lb = r
            .pools
            .get(&p.pool)
            .and_then(|pool| pool["loadbalancers"][0]["id"].as_str())
            .unwrap_or_default()
            .to_owned();
        if r.loadbalancers
            .get(&lb)
            .is_some_and(|l| l["provisioning_status"] != "ACTIVE")
            || member["provisioning_status"] != "ACTIVE"
        {
            return Err(error(
                StatusCode::CONFLICT,
                format!("Load Balancer {lb} is immutable and cannot be updated."),
            ));
        }
        let Some(member) = r.members.get_mut(&p.id) else {
            return Err(error(
                StatusCode::NOT_FOUND,
                format!("Member {} not found.", p.id),
            ));
        };
        for key in [
            "weight",
            "admin_state_up",
            "name",
            "backup",
            "monitor_address",
            "monitor_port",
            "tags",
        ] {
            if let Some(v) = update.get(key) {
                set(member, key, v.clone());
            }
        }
        set(member, "provisioning_status", json!("PENDING_UPDATE"));
        set(member, "updated_at", json!(time_z()));
        let rendered = render_member(member);
        if let Some(l) = r.loadbalancers.get_mut(&lb) {
            set(l, "provisioning_status", json!("PENDING_UPDATE"));
        }
        Ok((rendered, lb))
    });
    let (member, lb) = match updated {
        Ok(u) => u,
        Err(response) => return response,
    };
    let id = p.id.clone();
    api.later(api.latency().load_balancer, move |r| {
        if let Some(m) = r.members.get_mut(&id) {
            set(m, "provisioning_status", json!("ACTIVE"));
        }
        if let Some(l) = r.loadbalancers.get_mut(&lb) {
            set(l, "provisioning_status", json!("ACTIVE"));
        }
    });
    (StatusCode::ACCEPTED, Json(json!({ "member": member }))).into_response()
}

//! Neutron (network v2.0) at `/{region}/network`: networks, subnets, ports
//! (list with filters, show) and floating IPs (list, show, move between
//! ports with `PUT {"floatingip": {"port_id": X or null}}`).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::state::{self, Api, Region, Table, matches, set, str_of, time_z, uuid};

pub(super) fn routes(api: &Api) -> Router {
    let p = format!("{}/network", api.prefix());
    let v = format!("{p}/v2.0");
    let calls = Router::new()
        .route(&format!("{v}/networks"), get(list_networks))
        .route(&format!("{v}/networks/{{id}}"), get(show_network))
        .route(&format!("{v}/subnets"), get(list_subnets))
        .route(&format!("{v}/ports"), get(list_ports))
        .route(&format!("{v}/ports/{{id}}"), get(show_port))
        .route(&format!("{v}/floatingips"), get(list_fips))
        .route(
            &format!("{v}/floatingips/{{id}}"),
            get(show_fip).put(update_fip),
        )
        .route_layer(middleware::from_fn_with_state(
            api.shared.clone(),
            state::require_token,
        ));
    Router::new()
        .route(&p, get(versions))
        .route(&format!("{p}/"), get(versions))
        .route(&v, get(resources))
        .route(&format!("{v}/"), get(resources))
        .merge(calls)
        .with_state(api.clone())
}

async fn versions(State(api): State<Api>) -> Json<Value> {
    Json(json!({"versions": [{
        "id": "v2.0", "status": "CURRENT",
        "links": [{"href": api.url("/network/v2.0/"), "rel": "self"}]
    }]}))
}

async fn resources(State(api): State<Api>) -> Json<Value> {
    let resources: Vec<Value> = [
        ("network", "networks"),
        ("subnet", "subnets"),
        ("port", "ports"),
        ("floatingip", "floatingips"),
    ]
    .iter()
    .map(|(name, collection)| {
        json!({
            "name": name, "collection": collection,
            "links": [{"href": api.url(&format!("/network/v2.0/{collection}")), "rel": "self"}]
        })
    })
    .collect();
    Json(json!({ "resources": resources }))
}

fn error(status: StatusCode, kind: &str, message: String) -> Response {
    let body = json!({"NeutronError": {"type": kind, "message": message, "detail": ""}});
    (status, Json(body)).into_response()
}

fn list(
    api: &Api,
    key: &str,
    q: &HashMap<String, String>,
    table: fn(&Region) -> &Table,
) -> Json<Value> {
    let found: Vec<Value> = api.with(|r| {
        table(r)
            .values()
            .filter(|d| matches(d, q))
            .cloned()
            .collect()
    });
    Json(json!({ key: found }))
}

fn show(api: &Api, key: &str, kind: &str, id: &str, table: fn(&Region) -> &Table) -> Response {
    match api.with(|r| table(r).get(id).cloned()) {
        Some(doc) => Json(json!({ key: doc })).into_response(),
        None => {
            let name = format!("{}{}", &kind[..1].to_uppercase(), &kind[1..]);
            error(
                StatusCode::NOT_FOUND,
                &format!("{name}NotFound"),
                format!("{name} {id} could not be found."),
            )
        }
    }
}

async fn list_networks(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    list(&api, "networks", &q, |r| &r.networks)
}

async fn show_network(State(api): State<Api>, Path(id): Path<String>) -> Response {
    show(&api, "network", "network", &id, |r| &r.networks)
}

async fn list_subnets(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    list(&api, "subnets", &q, |r| &r.subnets)
}

async fn list_ports(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    list(&api, "ports", &q, |r| &r.ports)
}

async fn show_port(State(api): State<Api>, Path(id): Path<String>) -> Response {
    show(&api, "port", "port", &id, |r| &r.ports)
}

async fn list_fips(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    list(&api, "floatingips", &q, |r| &r.floatingips)
}

async fn show_fip(State(api): State<Api>, Path(id): Path<String>) -> Response {
    show(&api, "floatingip", "floatingIP", &id, |r| &r.floatingips)
}

/// A network with one subnet; returns the network id.
pub(super) fn new_network(
    api: &Api,
    r: &mut Region,
    name: &str,
    cidr: &str,
    external: bool,
) -> String {
    let net_id = uuid();
    let subnet_id = uuid();
    if external && r.router_id.is_empty() {
        // The region's one router joins its networks to the outside.
        r.router_id = uuid();
    }
    let now = time_z();
    let gateway = cidr
        .rsplit_once('.')
        .map(|(a, _)| format!("{a}.1"))
        .unwrap_or_default();
    r.subnets.insert(subnet_id.clone(), json!({
        "id": subnet_id, "name": format!("{name}-subnet"), "network_id": net_id,
        "tenant_id": api.project_id(), "project_id": api.project_id(),
        "ip_version": 4, "cidr": cidr, "gateway_ip": gateway, "enable_dhcp": !external,
        "allocation_pools": [], "dns_nameservers": [], "host_routes": [],
        "description": "", "tags": [], "created_at": now, "updated_at": now, "revision_number": 0
    }));
    r.networks.insert(net_id.clone(), json!({
        "id": net_id, "name": name, "tenant_id": api.project_id(), "project_id": api.project_id(),
        "admin_state_up": true, "status": "ACTIVE", "subnets": [subnet_id], "shared": false,
        "router:external": external, "mtu": 1450, "availability_zones": ["nova"],
        "ipv4_address_scope": null, "ipv6_address_scope": null, "port_security_enabled": true,
        "provider:network_type": "geneve", "provider:physical_network": null,
        "provider:segmentation_id": 1000 + r.networks.len(),
        "is_default": external, "description": "", "tags": [],
        "created_at": now, "updated_at": now, "revision_number": 1
    }));
    net_id
}

/// The next free address in a subnet (from .10 on), or the given one.
fn allocate(r: &Region, subnet: &Value) -> String {
    let base = str_of(subnet, "cidr")
        .rsplit_once('.')
        .map(|(a, _)| a.to_owned())
        .unwrap_or_default();
    let used: Vec<String> = r
        .ports
        .values()
        .flat_map(|p| p["fixed_ips"].as_array().cloned().unwrap_or_default())
        .map(|ip| str_of(&ip, "ip_address").to_owned())
        .chain(
            r.floatingips
                .values()
                .map(|f| str_of(f, "floating_ip_address").to_owned()),
        )
        .collect();
    (10..250)
        .map(|n| format!("{base}.{n}"))
        .find(|a| !used.contains(a))
        .unwrap_or_else(|| format!("{base}.250"))
}

/// A port on a network's first subnet; `None` if there is no such network.
pub(super) fn new_port(
    api: &Api,
    r: &mut Region,
    net_id: &str,
    device_id: &str,
    ip: Option<&str>,
) -> Option<String> {
    let net = r.networks.get(net_id)?;
    let subnet_id = net["subnets"][0].as_str()?.to_owned();
    let subnet = r.subnets.get(&subnet_id)?.clone();
    let address = ip.map_or_else(|| allocate(r, &subnet), str::to_owned);
    let id = uuid();
    let mac: [u8; 3] = rand::random();
    let now = time_z();
    r.ports.insert(id.clone(), json!({
        "id": id, "name": "", "network_id": net_id,
        "tenant_id": api.project_id(), "project_id": api.project_id(),
        "mac_address": format!("fa:16:3e:{:02x}:{:02x}:{:02x}", mac[0], mac[1], mac[2]),
        "admin_state_up": true, "status": "ACTIVE",
        "device_id": device_id, "device_owner": if device_id.is_empty() { "" } else { "compute:nova" },
        "fixed_ips": [{"subnet_id": subnet_id, "ip_address": address}],
        "allowed_address_pairs": [], "extra_dhcp_opts": [], "security_groups": [],
        "description": "", "binding:vnic_type": "normal", "binding:host_id": "",
        "port_security_enabled": true, "dns_name": "", "dns_assignment": [], "tags": [],
        "created_at": now, "updated_at": now, "revision_number": 1
    }));
    Some(id)
}

/// A floating IP on an external network, associated with `port` if given.
pub(super) fn new_fip(
    api: &Api,
    r: &mut Region,
    external_net: &str,
    port: Option<&str>,
) -> Option<String> {
    let net = r.networks.get(external_net)?;
    let subnet = r.subnets.get(net["subnets"][0].as_str()?)?.clone();
    let address = allocate(r, &subnet);
    let id = uuid();
    let now = time_z();
    let mut doc = json!({
        "id": id, "tenant_id": api.project_id(), "project_id": api.project_id(),
        "floating_ip_address": address, "floating_network_id": external_net,
        "router_id": null, "port_id": null, "fixed_ip_address": null, "status": "DOWN",
        "description": "", "dns_domain": "", "dns_name": "", "port_details": null,
        "qos_policy_id": null, "port_forwardings": [], "tags": [],
        "created_at": now, "updated_at": now, "revision_number": 0
    });
    if let Some(port) = port {
        associate(r, &mut doc, Some(port)).ok()?;
    }
    r.floatingips.insert(id.clone(), doc);
    Some(id)
}

/// Point a floating IP at a port (its first fixed address) or at nothing.
fn associate(r: &Region, fip: &mut Value, port_id: Option<&str>) -> Result<(), Response> {
    let revision = fip["revision_number"].as_u64().unwrap_or(0) + 1;
    match port_id {
        None => {
            for (k, v) in [
                ("port_id", Value::Null),
                ("fixed_ip_address", Value::Null),
                ("router_id", Value::Null),
                ("port_details", Value::Null),
                ("status", json!("DOWN")),
            ] {
                set(fip, k, v);
            }
        }
        Some(port_id) => {
            let Some(port) = r.ports.get(port_id) else {
                return Err(error(
                    StatusCode::NOT_FOUND,
                    "PortNotFound",
                    format!("Port {port_id} could not be found."),
                ));
            };
            let Some(fixed) = port["fixed_ips"][0]["ip_address"].as_str() else {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!(
                        "Bad floatingip request: Port {port_id} does not have any IPv4 address."
                    ),
                ));
            };
            let holder = r
                .floatingips
                .values()
                .find(|f| str_of(f, "port_id") == port_id && f["id"] != fip["id"]);
            if let Some(other) = holder {
                return Err(error(
                    StatusCode::CONFLICT,
                    "FloatingIPPortAlreadyAssociated",
                    format!(
                        "Cannot associate floating IP {} ({}) with port {port_id} using fixed IP {fixed}, as that fixed IP already has a floating IP on external network {}.",
                        fip["floating_ip_address"].as_str().unwrap_or_default(),
                        str_of(fip, "id"),
                        str_of(other, "floating_network_id")
                    ),
                ));
            }
            let details = json!({
                "name": port["name"], "network_id": port["network_id"], "mac_address": port["mac_address"],
                "admin_state_up": true, "status": "ACTIVE", "device_id": port["device_id"], "device_owner": port["device_owner"]
            });
            set(fip, "port_id", json!(port_id));
            set(fip, "fixed_ip_address", json!(fixed));
            set(fip, "router_id", json!(r.router_id));
            set(fip, "port_details", details);
            set(fip, "status", json!("ACTIVE"));
        }
    }
    set(fip, "revision_number", json!(revision));
    set(fip, "updated_at", json!(time_z()));
    Ok(())
}

/// `PUT /v2.0/floatingips/{id}` `{"floatingip": {"port_id": X or null}}`.
async fn update_fip(
    State(api): State<Api>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let Some(update) = body.get("floatingip").and_then(Value::as_object) else {
        return error(
            StatusCode::BAD_REQUEST,
            "HTTPBadRequest",
            "Resource body required".into(),
        );
    };
    api.with(|r| {
        let Some(mut fip) = r.floatingips.get(&id).cloned() else {
            return error(
                StatusCode::NOT_FOUND,
                "FloatingIPNotFound",
                format!("Floating IP {id} could not be found"),
            );
        };
        if let Some(port) = update.get("port_id")
            && let Err(response) = associate(r, &mut fip, port.as_str())
        {
            return response;
        }
        if let Some(description) = update.get("description") {
            set(&mut fip, "description", description.clone());
        }
        r.floatingips.insert(id.clone(), fip.clone());
        Json(json!({ "floatingip": fip })).into_response()
    })
}

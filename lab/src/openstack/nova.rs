//! Nova (compute v2.1, microversions 2.1–2.96) at `/{region}/compute`:
//! servers (list, detail, show, create booting from a volume or an image,
//! delete, start/stop, lock/unlock, metadata), flavors, `os-services`. A
//! new server is `BUILD` for the configured latency, then `ACTIVE`.
//! Addresses come from the region's Neutron ports and floating IPs, so
//! moving a floating IP shows here. A locked server refuses every action
//! but `unlock` (409), as Nova does for a project member; a server booted
//! from the mover image runs a mover agent ([`super::mover`]).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::neutron;
use super::state::{self, Api, Region, fault, set, str_of, time_z, uuid};

const MAX: (u32, u32) = (2, 96);

pub(super) fn routes(api: &Api) -> Router {
    let p = format!("{}/compute", api.prefix());
    let v = format!("{p}/v2.1");
    let calls = Router::new()
        .route(
            &format!("{v}/servers"),
            get(list_servers).post(create_server),
        )
        .route(&format!("{v}/servers/detail"), get(list_servers_detail))
        .route(
            &format!("{v}/servers/{{id}}"),
            get(show_server).delete(delete_server),
        )
        .route(&format!("{v}/servers/{{id}}/action"), post(server_action))
        .route(
            &format!("{v}/servers/{{id}}/metadata"),
            get(show_metadata)
                .post(update_metadata)
                .put(replace_metadata),
        )
        .route(
            &format!("{v}/servers/{{id}}/metadata/{{key}}"),
            get(show_metadata_item)
                .put(set_metadata_item)
                .delete(delete_metadata_item),
        )
        .route(&format!("{v}/flavors"), get(list_flavors))
        .route(&format!("{v}/flavors/detail"), get(list_flavors))
        .route(&format!("{v}/flavors/{{id}}"), get(show_flavor))
        .route(&format!("{v}/os-services"), get(services))
        .route_layer(middleware::from_fn(|req, next| {
            state::microversion("compute", (2, 1), MAX, req, next)
        }))
        .route_layer(middleware::from_fn_with_state(
            api.shared.clone(),
            state::require_token,
        ));
    Router::new()
        .route(&p, get(versions))
        .route(&format!("{p}/"), get(versions))
        .route(&v, get(version))
        .route(&format!("{v}/"), get(version))
        .merge(calls)
        .with_state(api.clone())
}

fn v21(api: &Api) -> Value {
    json!({
        "id": "v2.1",
        "status": "CURRENT",
        "version": format!("{}.{}", MAX.0, MAX.1),
        "min_version": "2.1",
        "updated": "2013-07-23T11:33:21Z",
        "links": [
            {"rel": "self", "href": api.url("/compute/v2.1/")},
            {"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"}
        ],
        "media-types": [{
            "base": "application/json",
            "type": "application/vnd.openstack.compute+json;version=2.1"
        }]
    })
}

async fn versions(State(api): State<Api>) -> Json<Value> {
    let v20 = json!({
        "id": "v2.0", "status": "SUPPORTED", "version": "", "min_version": "",
        "updated": "2011-01-21T11:33:21Z",
        "links": [{"rel": "self", "href": api.url("/compute/v2/")}]
    });
    Json(json!({"versions": [v20, v21(&api)]}))
}

async fn version(State(api): State<Api>) -> Json<Value> {
    Json(json!({"version": v21(&api)}))
}

/// The flavors every region offers: (id, name, vcpus, ram MiB, disk GiB).
pub(super) const FLAVORS: [(&str, &str, u64, u64, u64); 4] = [
    ("1", "m1.tiny", 1, 512, 1),
    ("2", "m1.small", 1, 2048, 20),
    ("3", "m1.medium", 2, 4096, 40),
    ("4", "m1.large", 4, 8192, 80),
];

fn flavor_doc(api: &Api, f: &(&str, &str, u64, u64, u64)) -> Value {
    json!({
        "id": f.0, "name": f.1, "vcpus": f.2, "ram": f.3, "disk": f.4,
        "OS-FLV-EXT-DATA:ephemeral": 0, "OS-FLV-DISABLED:disabled": false,
        "swap": 0, "rxtx_factor": 1.0, "os-flavor-access:is_public": true,
        "description": null, "extra_specs": {},
        "links": [{"rel": "self", "href": api.url(&format!("/compute/v2.1/flavors/{}", f.0))}]
    })
}

async fn list_flavors(State(api): State<Api>) -> Json<Value> {
    let flavors: Vec<Value> = FLAVORS.iter().map(|f| flavor_doc(&api, f)).collect();
    Json(json!({ "flavors": flavors }))
}

async fn show_flavor(State(api): State<Api>, Path(id): Path<String>) -> Response {
    match FLAVORS.iter().find(|f| f.0 == id) {
        Some(f) => Json(json!({"flavor": flavor_doc(&api, f)})).into_response(),
        None => fault(
            StatusCode::NOT_FOUND,
            format!("Flavor {id} could not be found."),
        ),
    }
}

async fn services(State(api): State<Api>) -> Json<Value> {
    let now = time_z();
    let services: Vec<Value> = [
        ("nova-scheduler", "internal"),
        ("nova-conductor", "internal"),
        ("nova-compute", "nova"),
    ]
    .iter()
    .map(|(binary, zone)| {
        json!({
            "id": uuid(), "binary": binary, "host": format!("{}-controller", api.region),
            "zone": zone, "status": "enabled", "state": "up", "updated_at": now,
            "disabled_reason": null, "forced_down": false
        })
    })
    .collect();
    Json(json!({ "services": services }))
}

/// A new server document as Nova stores it, `BUILD` until settled.
pub(super) fn server_doc(
    api: &Api,
    id: &str,
    name: &str,
    flavor: &str,
    volumes: &[String],
) -> Value {
    let attached: Vec<(String, bool)> = volumes.iter().map(|v| (v.clone(), false)).collect();
    server_doc_with(api, id, name, flavor, &attached, None)
}

/// A server document booting from `image` (its root disk local) or from
/// the first of `volumes`, each with its `delete_on_termination`.
fn server_doc_with(
    api: &Api,
    id: &str,
    name: &str,
    flavor: &str,
    volumes: &[(String, bool)],
    image: Option<&str>,
) -> Value {
    let f = FLAVORS
        .iter()
        .find(|f| f.0 == flavor)
        .unwrap_or(&FLAVORS[1]);
    let now = time_z();
    let attached: Vec<Value> = volumes
        .iter()
        .map(|(v, delete)| json!({"id": v, "delete_on_termination": delete}))
        .collect();
    let image = image.map_or(json!(""), |i| {
        json!({"id": i, "links": [{"rel": "bookmark", "href": api.url(&format!("/compute/images/{i}"))}]})
    });
    json!({
        "id": id, "name": name, "status": "BUILD",
        "tenant_id": api.project_id(), "user_id": api.user_id(),
        "metadata": {}, "hostId": state::random_hex(28), "host_status": "UP",
        "image": image,
        "flavor": {
            "vcpus": f.2, "ram": f.3, "disk": f.4, "ephemeral": 0, "swap": 0,
            "original_name": f.1, "extra_specs": {}
        },
        "created": now, "updated": now,
        "addresses": {},
        "accessIPv4": "", "accessIPv6": "",
        "links": [
            {"rel": "self", "href": api.url(&format!("/compute/v2.1/servers/{id}"))},
            {"rel": "bookmark", "href": api.url(&format!("/compute/servers/{id}"))}
        ],
        "OS-DCF:diskConfig": "MANUAL", "progress": 0,
        "OS-EXT-AZ:availability_zone": "nova", "config_drive": "", "key_name": null,
        "OS-SRV-USG:launched_at": null, "OS-SRV-USG:terminated_at": null,
        "security_groups": [{"name": "default"}],
        "OS-EXT-SRV-ATTR:host": format!("{}-compute-1", api.region),
        "OS-EXT-SRV-ATTR:hypervisor_hostname": format!("{}-compute-1", api.region),
        "OS-EXT-SRV-ATTR:instance_name": format!("instance-{}", &id[..8.min(id.len())]),
        "OS-EXT-STS:task_state": "spawning", "OS-EXT-STS:vm_state": "building",
        "OS-EXT-STS:power_state": 0,
        "os-extended-volumes:volumes_attached": attached,
        "locked": false, "locked_reason": null, "description": null, "tags": [],
        "trusted_image_certificates": null, "server_groups": [],
        "pinned_availability_zone": null
    })
}

/// Put a server in its running state (the end of a build or a start). A
/// server being deleted stays as it is: Nova aborts the build of a server
/// deleted while it builds.
pub(super) fn activate(doc: &mut Value) {
    if deleting(doc) {
        return;
    }
    set(doc, "status", json!("ACTIVE"));
    set(doc, "OS-EXT-STS:task_state", Value::Null);
    set(doc, "OS-EXT-STS:vm_state", json!("active"));
    set(doc, "OS-EXT-STS:power_state", json!(1));
    set(doc, "progress", json!(0));
    if doc["OS-SRV-USG:launched_at"].is_null() {
        set(doc, "OS-SRV-USG:launched_at", json!(state::time_micros()));
    }
    set(doc, "updated", json!(time_z()));
}

/// Whether the server is being deleted.
pub(super) fn deleting(doc: &Value) -> bool {
    doc["OS-EXT-STS:task_state"] == "deleting"
}

/// The server with its addresses as Neutron has them now.
fn render(region: &Region, doc: &Value) -> Value {
    let id = str_of(doc, "id");
    let mut addresses = serde_json::Map::new();
    for port in region
        .ports
        .values()
        .filter(|p| str_of(p, "device_id") == id)
    {
        let net = region
            .networks
            .get(str_of(port, "network_id"))
            .map_or("private", |n| str_of(n, "name"));
        let mac = str_of(port, "mac_address");
        let entry = addresses.entry(net.to_owned()).or_insert_with(|| json!([]));
        let Some(list) = entry.as_array_mut() else {
            continue;
        };
        for ip in port["fixed_ips"].as_array().into_iter().flatten() {
            let addr = str_of(ip, "ip_address");
            list.push(json!({"version": 4, "addr": addr, "OS-EXT-IPS:type": "fixed", "OS-EXT-IPS-MAC:mac_addr": mac}));
            for fip in region.floatingips.values().filter(|f| {
                str_of(f, "port_id") == str_of(port, "id") && str_of(f, "fixed_ip_address") == addr
            }) {
                list.push(json!({"version": 4, "addr": fip["floating_ip_address"], "OS-EXT-IPS:type": "floating", "OS-EXT-IPS-MAC:mac_addr": mac}));
            }
        }
    }
    let mut doc = doc.clone();
    set(&mut doc, "addresses", Value::Object(addresses));
    doc
}

fn not_found(id: &str) -> Response {
    fault(
        StatusCode::NOT_FOUND,
        format!("Instance {id} could not be found."),
    )
}

async fn list_servers(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    let servers: Vec<Value> = api.with(|r| {
        r.servers
            .values()
            .filter(|s| {
                q.get("name")
                    .is_none_or(|n| str_of(s, "name").contains(n.as_str()))
            })
            .map(|s| json!({"id": s["id"], "name": s["name"], "links": s["links"]}))
            .collect()
    });
    Json(json!({ "servers": servers }))
}

async fn list_servers_detail(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    let servers: Vec<Value> = api.with(|r| {
        r.servers
            .values()
            .filter(|s| {
                q.get("name")
                    .is_none_or(|n| str_of(s, "name").contains(n.as_str()))
            })
            .filter(|s| q.get("status").is_none_or(|st| str_of(s, "status") == st))
            .map(|s| render(r, s))
            .collect()
    });
    Json(json!({ "servers": servers }))
}

async fn show_server(State(api): State<Api>, Path(id): Path<String>) -> Response {
    api.with(|r| match r.servers.get(&id) {
        Some(s) => Json(json!({"server": render(r, s)})).into_response(),
        None => not_found(&id),
    })
}

#[derive(Deserialize)]
struct CreateServer {
    server: NewServer,
}

#[derive(Deserialize)]
struct NewServer {
    name: String,
    #[serde(rename = "flavorRef")]
    flavor_ref: String,
    #[serde(rename = "imageRef", default)]
    image_ref: Option<String>,
    #[serde(default)]
    networks: Value,
    #[serde(default)]
    block_device_mapping_v2: Vec<Value>,
    #[serde(default)]
    metadata: serde_json::Map<String, Value>,
    /// Base64, at most 65535 characters; shown back (as Nova shows it to
    /// admins from microversion 2.3) as `OS-EXT-SRV-ATTR:user_data`.
    #[serde(default)]
    user_data: Option<String>,
}

/// Nova's schema for metadata: keys of `[a-zA-Z0-9-_:. ]`, 1–255
/// characters; string values up to 255.
pub(super) fn check_metadata(metadata: &serde_json::Map<String, Value>) -> Result<(), Response> {
    for (key, value) in metadata {
        let key_ok = !key.is_empty()
            && key.len() <= 255
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_:. ".contains(c));
        if !key_ok {
            return Err(fault(
                StatusCode::BAD_REQUEST,
                format!(
                    "Invalid input for field/attribute metadata. Value: {key}. '{key}' does not match any of the regexes: '^[a-zA-Z0-9-_:. ]{{1,255}}$'"
                ),
            ));
        }
        if value.as_str().is_none_or(|v| v.len() > 255) {
            return Err(fault(
                StatusCode::BAD_REQUEST,
                format!(
                    "Invalid input for field/attribute {key}. Value: {value}. A metadata value must be a string of at most 255 characters."
                ),
            ));
        }
    }
    Ok(())
}

/// What a server boots from and which volumes it holds.
struct Disks {
    /// `(volume id, delete_on_termination)`, the boot volume first.
    volumes: Vec<(String, bool)>,
    /// The image of a local root disk.
    image: Option<String>,
}

/// Read `block_device_mapping_v2` and `imageRef`: volumes (`source_type`
/// and `destination_type` `volume`) and an image as the local root disk
/// (`source_type: image`, `destination_type: local`, or `imageRef`).
fn boot_disks(r: &Region, req: &NewServer) -> Result<Disks, Response> {
    let bad = |m: String| fault(StatusCode::BAD_REQUEST, m);
    let mut volumes: Vec<(i64, String, bool)> = Vec::new();
    let mut image = req.image_ref.clone().filter(|i| !i.is_empty());
    for bdm in &req.block_device_mapping_v2 {
        let uuid = str_of(bdm, "uuid");
        let boot_index = bdm["boot_index"]
            .as_i64()
            .or_else(|| bdm["boot_index"].as_str().and_then(|b| b.parse().ok()))
            .unwrap_or(-1);
        let delete = bdm["delete_on_termination"].as_bool().unwrap_or(false);
        let destination = match str_of(bdm, "destination_type") {
            "" => "volume",
            other => other,
        };
        match (str_of(bdm, "source_type"), destination) {
            ("volume", "volume") => match r.volumes.get(uuid) {
                None => {
                    return Err(bad(format!(
                        "Invalid input for field/attribute block_device_mapping_v2. Volume {uuid} could not be found."
                    )));
                }
                Some(v) if str_of(v, "status") != "available" => {
                    return Err(bad(format!(
                        "Volume {uuid} status must be available, but current status is: {}.",
                        str_of(v, "status")
                    )));
                }
                Some(_) => volumes.push((boot_index, uuid.to_owned(), delete)),
            },
            ("image", "local") => image = Some(uuid.to_owned()),
            (source, destination) => {
                return Err(bad(format!(
                    "Block device mapping with source_type {source} and destination_type {destination} is not simulated: boot from volumes (source_type volume) or an image (destination_type local)."
                )));
            }
        }
    }
    if let Some(i) = &image {
        match r.images.get(i) {
            None => return Err(bad(format!("Image {i} could not be found."))),
            Some(doc) if str_of(doc, "status") != "active" => {
                return Err(bad(format!("Image {i} is not active.")));
            }
            Some(_) => {}
        }
    }
    // The boot volume (boot_index 0) first, the others in request order.
    volumes.sort_by_key(|(index, _, _)| if *index == 0 { 0 } else { 1 });
    if image.is_none() && !volumes.iter().any(|(index, _, _)| *index == 0) {
        return Err(bad("Block Device Mapping is Invalid: Boot sequence for the instance and image/block device mapping combination is not valid.".into()));
    }
    Ok(Disks {
        volumes: volumes.into_iter().map(|(_, v, d)| (v, d)).collect(),
        image,
    })
}

/// The ports of `networks`: a list of `{uuid, fixed_ip?}` or `{port}`,
/// or `"none"` (no network) or `"auto"` (the project's private network).
fn boot_ports(api: &Api, r: &mut Region, networks: &Value) -> Result<Vec<String>, Response> {
    let bad = |m: String| fault(StatusCode::BAD_REQUEST, m);
    let requested: Vec<Value> = match networks {
        Value::String(s) if s == "none" => Vec::new(),
        Value::String(s) if s == "auto" => r
            .networks
            .values()
            .find(|n| n["router:external"] != true)
            .map(|n| vec![json!({"uuid": n["id"]})])
            .unwrap_or_default(),
        Value::Array(list) => list.clone(),
        Value::Null => Vec::new(),
        other => {
            return Err(bad(format!(
                "Invalid input for field/attribute networks. Value: {other}."
            )));
        }
    };
    let mut ports = Vec::new();
    for net in &requested {
        if let Some(port) = net.get("port").and_then(Value::as_str) {
            if !r.ports.contains_key(port) {
                return Err(bad(format!("Port id {port} could not be found.")));
            }
            ports.push(port.to_owned());
        } else if let Some(net_id) = net.get("uuid").and_then(Value::as_str) {
            let fixed = net.get("fixed_ip").and_then(Value::as_str);
            if let Some(ip) = fixed {
                let taken = r.ports.values().any(|p| {
                    p["fixed_ips"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|f| f["ip_address"] == ip)
                });
                if taken {
                    return Err(bad(format!(
                        "Fixed IP address {ip} is already in use on instance."
                    )));
                }
            }
            match neutron::new_port(api, r, net_id, "", fixed) {
                Some(port) => ports.push(port),
                None => return Err(bad(format!("Network {net_id} could not be found."))),
            }
        }
    }
    Ok(ports)
}

/// `POST /servers`: boot from volumes (`block_device_mapping_v2` with
/// `source_type: volume`) and/or an image as local root disk, a port per
/// `networks[].uuid` (at `fixed_ip` if given) or given `port`.
async fn create_server(State(api): State<Api>, Json(req): Json<CreateServer>) -> Response {
    let req = req.server;
    let flavor = req
        .flavor_ref
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    if !FLAVORS.iter().any(|f| f.0 == flavor) {
        return fault(
            StatusCode::BAD_REQUEST,
            format!("Flavor {flavor} could not be found."),
        );
    }
    if let Err(response) = check_metadata(&req.metadata) {
        return response;
    }
    if let Some(data) = &req.user_data {
        use base64::Engine;
        if data.len() > 65535 {
            return fault(
                StatusCode::BAD_REQUEST,
                format!(
                    "Invalid input for field/attribute user_data. {} characters is longer \
                     than 65535.",
                    data.len()
                ),
            );
        }
        if base64::engine::general_purpose::STANDARD
            .decode(data)
            .is_err()
        {
            return fault(
                StatusCode::BAD_REQUEST,
                "User data needs to be valid base 64.",
            );
        }
    }
    let id = uuid();
    let created = api.with(|r| -> Result<(Value, bool), Response> {
        let disks = boot_disks(r, &req)?;
        let ports = boot_ports(&api, r, &req.networks)?;
        for port in &ports {
            if let Some(p) = r.ports.get_mut(port) {
                set(p, "device_id", json!(id));
                set(p, "device_owner", json!("compute:nova"));
            }
        }
        for (vid, _) in &disks.volumes {
            if let Some(v) = r.volumes.get_mut(vid) {
                super::cinder::attach(v, &id);
            }
        }
        let mover = disks
            .image
            .as_deref()
            .is_some_and(|i| super::mover::is_mover_image(r, i));
        let mut doc = server_doc_with(
            &api,
            &id,
            &req.name,
            &flavor,
            &disks.volumes,
            disks.image.as_deref(),
        );
        set(&mut doc, "metadata", Value::Object(req.metadata.clone()));
        set(&mut doc, "OS-EXT-SRV-ATTR:user_data", json!(req.user_data));
        r.servers.insert(id.clone(), doc.clone());
        Ok((doc, mover))
    });
    let (doc, mover) = match created {
        Ok(created) => created,
        Err(response) => return response,
    };
    let server_id = id.clone();
    let build = api.latency().server_build;
    if mover {
        super::mover::boot(&api, server_id, build);
    } else {
        api.later(build, move |r| {
            if let Some(s) = r.servers.get_mut(&server_id) {
                activate(s);
            }
        });
    }
    let location = api.url(&format!("/compute/v2.1/servers/{id}"));
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(json!({"server": {
            "id": id, "links": doc["links"], "OS-DCF:diskConfig": "MANUAL",
            "security_groups": [{"name": "default"}], "adminPass": state::random_hex(6)
        }})),
    )
        .into_response()
}

fn locked(id: &str) -> Response {
    fault(StatusCode::CONFLICT, format!("Instance {id} is locked"))
}

/// `DELETE /servers/{id}`: 204; the server is gone after the build
/// latency, its ports deleted, its volumes detached and those booted with
/// `delete_on_termination` deleted. A locked server refuses (409).
async fn delete_server(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let found = api.with(|r| match r.servers.get_mut(&id) {
        Some(s) if s["locked"] == true => Err(locked(&id)),
        Some(s) => {
            set(s, "OS-EXT-STS:task_state", json!("deleting"));
            let doomed: Vec<String> = s["os-extended-volumes:volumes_attached"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["delete_on_termination"] == true)
                .map(|a| str_of(a, "id").to_owned())
                .collect();
            Ok(doomed)
        }
        None => Err(not_found(&id)),
    });
    let doomed = match found {
        Ok(doomed) => doomed,
        Err(response) => return response,
    };
    let server_id = id.clone();
    let delay = api.latency().server_build;
    let shared = api.shared.clone();
    let region = api.region.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let files = {
            let mut cloud = shared.lock();
            let r = cloud.region(&region);
            r.servers.remove(&server_id);
            r.agents.remove(&server_id);
            r.ports.retain(|_, p| str_of(p, "device_id") != server_id);
            for v in r.volumes.values_mut() {
                super::cinder::detach(v, &server_id);
            }
            // A volume with snapshots stays, as Cinder refuses to delete it.
            let mut files = Vec::new();
            for volume in &doomed {
                let has_snapshots = r
                    .snapshots
                    .values()
                    .any(|s| str_of(s, "volume_id") == volume);
                if !has_snapshots && r.volumes.remove(volume).is_some() {
                    files.push(super::cinder::volume_file(volume));
                }
            }
            files
        };
        for file in files {
            let _ = shared.disks.remove(&file);
        }
    });
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /servers/{id}/action`: `os-start`, `os-stop`, `reboot`, `lock`
/// (with `locked_reason` from 2.73), `unlock`.
async fn server_action(
    State(api): State<Api>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let action = body
        .as_object()
        .and_then(|o| o.keys().next().cloned())
        .unwrap_or_default();
    api.with(|r| {
        let Some(s) = r.servers.get_mut(&id) else {
            return not_found(&id);
        };
        match action.as_str() {
            "lock" => {
                let reason = body["lock"]["locked_reason"].clone();
                set(s, "locked", json!(true));
                set(s, "locked_reason", reason);
                return StatusCode::ACCEPTED.into_response();
            }
            "unlock" => {
                set(s, "locked", json!(false));
                set(s, "locked_reason", Value::Null);
                return StatusCode::ACCEPTED.into_response();
            }
            _ => {}
        }
        let vm_state = str_of(s, "OS-EXT-STS:vm_state").to_owned();
        let allowed = match action.as_str() {
            "os-stop" => vm_state == "active",
            "os-start" => vm_state == "stopped",
            "reboot" => vm_state == "active",
            other => {
                return fault(
                    StatusCode::BAD_REQUEST,
                    format!("There is no such action: {other}"),
                );
            }
        };
        if s["locked"] == true {
            return locked(&id);
        }
        if !allowed {
            let verb = action.trim_start_matches("os-");
            return fault(
                StatusCode::CONFLICT,
                format!("Cannot '{verb}' instance {id} while it is in vm_state {vm_state}"),
            );
        }
        match action.as_str() {
            "os-stop" => {
                set(s, "status", json!("SHUTOFF"));
                set(s, "OS-EXT-STS:vm_state", json!("stopped"));
                set(s, "OS-EXT-STS:power_state", json!(4));
                set(s, "updated", json!(time_z()));
            }
            _ => activate(s),
        }
        StatusCode::ACCEPTED.into_response()
    })
}

fn metadata_of(s: &Value) -> serde_json::Map<String, Value> {
    s["metadata"].as_object().cloned().unwrap_or_default()
}

async fn show_metadata(State(api): State<Api>, Path(id): Path<String>) -> Response {
    api.with(|r| match r.servers.get(&id) {
        Some(s) => Json(json!({"metadata": metadata_of(s)})).into_response(),
        None => not_found(&id),
    })
}

/// `POST` merges the given items into the server's metadata, `PUT`
/// replaces it; both answer the whole metadata. A locked server refuses.
fn change_metadata(api: &Api, id: &str, body: &Value, replace: bool) -> Response {
    let Some(given) = body["metadata"].as_object() else {
        return fault(
            StatusCode::BAD_REQUEST,
            "Invalid input for field/attribute metadata.",
        );
    };
    if let Err(response) = check_metadata(given) {
        return response;
    }
    api.with(|r| match r.servers.get_mut(id) {
        None => not_found(id),
        Some(s) if s["locked"] == true => locked(id),
        Some(s) => {
            let mut metadata = if replace {
                serde_json::Map::new()
            } else {
                metadata_of(s)
            };
            metadata.extend(given.clone());
            set(s, "metadata", Value::Object(metadata.clone()));
            set(s, "updated", json!(time_z()));
            Json(json!({ "metadata": metadata })).into_response()
        }
    })
}

async fn update_metadata(
    State(api): State<Api>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    change_metadata(&api, &id, &body, false)
}

async fn replace_metadata(
    State(api): State<Api>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    change_metadata(&api, &id, &body, true)
}

#[derive(Deserialize)]
struct MetadataItem {
    id: String,
    key: String,
}

async fn show_metadata_item(State(api): State<Api>, Path(p): Path<MetadataItem>) -> Response {
    api.with(|r| match r.servers.get(&p.id) {
        None => not_found(&p.id),
        Some(s) => match s["metadata"].get(&p.key) {
            Some(v) => Json(json!({"meta": {p.key.clone(): v}})).into_response(),
            None => fault(
                StatusCode::NOT_FOUND,
                format!("Metadata item was not found: {}", p.key),
            ),
        },
    })
}

/// `PUT …/metadata/{key}` `{"meta": {key: value}}`.
async fn set_metadata_item(
    State(api): State<Api>,
    Path(p): Path<MetadataItem>,
    Json(body): Json<Value>,
) -> Response {
    let Some(meta) = body["meta"].as_object().filter(|m| m.len() == 1) else {
        return fault(
            StatusCode::BAD_REQUEST,
            "Invalid input for field/attribute meta.",
        );
    };
    if !meta.contains_key(&p.key) {
        return fault(StatusCode::BAD_REQUEST, "Request body and URI mismatch");
    }
    let response = change_metadata(&api, &p.id, &json!({ "metadata": meta }), false);
    if !response.status().is_success() {
        return response;
    }
    Json(json!({ "meta": meta })).into_response()
}

async fn delete_metadata_item(State(api): State<Api>, Path(p): Path<MetadataItem>) -> Response {
    api.with(|r| match r.servers.get_mut(&p.id) {
        None => not_found(&p.id),
        Some(s) if s["locked"] == true => locked(&p.id),
        Some(s) => {
            let mut metadata = metadata_of(s);
            if metadata.remove(&p.key).is_none() {
                return fault(
                    StatusCode::NOT_FOUND,
                    format!("Metadata item was not found: {}", p.key),
                );
            }
            set(s, "metadata", Value::Object(metadata));
            StatusCode::NO_CONTENT.into_response()
        }
    })
}

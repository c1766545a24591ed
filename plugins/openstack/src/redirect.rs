//! `redirect`: traffic moved with Designate, Octavia or Neutron.
//!
//! - DNS record (Designate): the record set holds the address of every
//!   backend with a weight above 0 — a backend is a server id (its
//!   floating IP, else its first fixed one) or an address. Designate has no
//!   weighted records, so any weight above 0 means "in".
//! - Load-balancer pool (Octavia): each backend's member (by member id,
//!   name or address, or a server's fixed addresses) gets the weight; one
//!   member at a time, since a load balancer is immutable while
//!   `PENDING_UPDATE`. This is the weighted (canary) redirect.
//! - Floating IP (Neutron): moved to the port of the backend with the
//!   highest weight; no weight above 0 disassociates it.
//!
//! Each waits in `status` until the platform reports the change in effect
//! (record set `ACTIVE`, members `ACTIVE` with their weights, the floating
//! IP on its port).

use std::net::IpAddr;

use rebound_plugin_sdk::{
    DnsRecord, Operation, OperationKind, OperationState, Outcome, ProviderError, RedirectReport,
    RedirectRequest, RedirectTarget, Running, WeightedBackend, info, site,
};
use serde_json::{Value, json};

use crate::cloud::{self, Cloud, Service, Verb, encode, request_id};
use crate::handle::{Handle, Redirect};
use crate::nova::{self, text};

fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

/// The address a backend is reached at.
fn address_of(cloud: &Cloud, backend: &str) -> Result<String, ProviderError> {
    if backend.parse::<IpAddr>().is_ok() {
        return Ok(backend.to_owned());
    }
    let server = nova::get(cloud, backend)?;
    nova::public_address(&server).ok_or_else(|| {
        ProviderError::InvalidRequest(format!(
            "server {backend} has no address to send traffic to"
        ))
    })
}

pub fn redirect(req: RedirectRequest) -> Result<Operation, ProviderError> {
    let cloud = cloud::connect(&req.site)?;
    let handle = match &req.target {
        RedirectTarget::DnsRecord(record) => dns(&cloud, &req, record)?,
        RedirectTarget::LoadBalancerPool(pool) => pool_weights(&cloud, &req, pool)?,
        RedirectTarget::FloatingIp(address) => floating_ip(&cloud, &req, address)?,
        RedirectTarget::Route(_) => {
            return Err(ProviderError::Unsupported(
                "OpenStack has no routes; redirect a DNS record, a load-balancer pool or a \
                 floating IP"
                    .into(),
            ));
        }
    };
    Ok(Handle::Redirect(handle).operation(OperationKind::Redirect, &req.site))
}

fn dns(
    cloud: &Cloud,
    req: &RedirectRequest,
    record: &DnsRecord,
) -> Result<Redirect, ProviderError> {
    let zone_name = fqdn(&record.zone);
    let name = fqdn(&record.name);
    let zones = cloud.get(Service::Dns, &format!("/zones?name={}", encode(&zone_name)))?;
    let zone = zones["zones"][0]["id"]
        .as_str()
        .ok_or_else(|| {
            ProviderError::NotFound(format!(
                "Designate in region '{}' has no zone '{zone_name}'",
                cloud.region
            ))
        })?
        .to_owned();
    let mut records = Vec::new();
    for b in req.backends.iter().filter(|b| b.weight > 0) {
        let address = address_of(cloud, &b.backend)?;
        if !records.contains(&address) {
            records.push(address);
        }
    }
    if records.is_empty() {
        return Err(ProviderError::InvalidRequest(format!(
            "the DNS record {name} needs at least one backend with a weight above 0"
        )));
    }
    let path = format!(
        "/zones/{zone}/recordsets?name={}&type={}",
        encode(&name),
        encode(&record.record_type)
    );
    let existing = cloud.get(Service::Dns, &path)?;
    let body = json!({"records": records, "ttl": record.ttl_secs});
    let recordset = match existing["recordsets"].get(0) {
        Some(set) => {
            let id = text(set, "id").to_owned();
            let mut have: Vec<&str> = set["records"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            have.sort_unstable();
            let mut want: Vec<&str> = records.iter().map(String::as_str).collect();
            want.sort_unstable();
            if have != want || set["ttl"].as_u64() != Some(u64::from(record.ttl_secs)) {
                cloud.send(
                    Verb::Put,
                    Service::Dns,
                    &format!("/zones/{zone}/recordsets/{id}"),
                    Some(&body),
                    &request_id(&req.key, "update record set"),
                )?;
            }
            id
        }
        None => {
            let mut body = body;
            body["name"] = json!(name);
            body["type"] = json!(record.record_type);
            let created = cloud.send(
                Verb::Post,
                Service::Dns,
                &format!("/zones/{zone}/recordsets"),
                Some(&body),
                &request_id(&req.key, "create record set"),
            )?;
            text(&created, "id").to_owned()
        }
    };
    info!("DNS record set updated"; "name" => name, "records" => records.join(","));
    Ok(Redirect::Dns {
        zone,
        zone_name,
        recordset,
        name,
        record_type: record.record_type.clone(),
        ttl: record.ttl_secs,
        records,
        backends: req
            .backends
            .iter()
            .map(|b| (b.backend.clone(), b.weight))
            .collect(),
    })
}

fn lb_path(pool: &str) -> String {
    format!("/lbaas/pools/{}", encode(pool))
}

/// The pool's document, by id or name.
fn find_pool(cloud: &Cloud, pool: &str) -> Result<Value, ProviderError> {
    match cloud.get(Service::LoadBalancer, &lb_path(pool)) {
        Ok(mut doc) => return Ok(doc["pool"].take()),
        Err(ProviderError::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    let mut found = cloud.get(
        Service::LoadBalancer,
        &format!("/lbaas/pools?name={}", encode(pool)),
    )?;
    match found["pools"][0].take() {
        Value::Null => Err(ProviderError::NotFound(format!(
            "Octavia in region '{}' has no pool '{pool}'",
            cloud.region
        ))),
        doc => Ok(doc),
    }
}

fn members(cloud: &Cloud, pool: &str) -> Result<Vec<Value>, ProviderError> {
    let mut doc = cloud.get(Service::LoadBalancer, &format!("{}/members", lb_path(pool)))?;
    Ok(match doc["members"].take() {
        Value::Array(list) => list,
        _ => Vec::new(),
    })
}

/// Wait until the load balancer accepts changes again.
fn wait_active(cloud: &Cloud, lb: &str) -> Result<(), ProviderError> {
    for _ in 0..300 {
        let doc = cloud.get(
            Service::LoadBalancer,
            &format!("/lbaas/loadbalancers/{}", encode(lb)),
        )?;
        match text(&doc["loadbalancer"], "provisioning_status") {
            "ACTIVE" => return Ok(()),
            "ERROR" => {
                return Err(ProviderError::ProviderFailed(format!(
                    "load balancer {lb} is in ERROR"
                )));
            }
            _ => site::sleep_ms(100),
        }
    }
    Err(ProviderError::Transient(format!(
        "load balancer {lb} stayed immutable (PENDING_*) for 30 s"
    )))
}

fn pool_weights(
    cloud: &Cloud,
    req: &RedirectRequest,
    pool: &str,
) -> Result<Redirect, ProviderError> {
    let doc = find_pool(cloud, pool)?;
    let pool_id = text(&doc, "id").to_owned();
    let lb = doc["loadbalancers"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let all = members(cloud, &pool_id)?;
    let mut wanted = Vec::new();
    for b in &req.backends {
        let direct = all.iter().find(|m| {
            text(m, "id") == b.backend
                || text(m, "name") == b.backend
                || text(m, "address") == b.backend
        });
        let member = match direct {
            Some(m) => m,
            None => {
                let server = nova::get(cloud, &b.backend).map_err(|_| {
                    ProviderError::InvalidRequest(format!(
                        "pool '{pool}' has no member for backend '{}'; add it to the pool first",
                        b.backend
                    ))
                })?;
                let addresses = nova::addresses(&server);
                all.iter()
                    .find(|m| addresses.iter().any(|a| a == text(m, "address")))
                    .ok_or_else(|| {
                        ProviderError::InvalidRequest(format!(
                            "pool '{pool}' has no member at an address of server '{}'; add it \
                             to the pool first",
                            b.backend
                        ))
                    })?
            }
        };
        wanted.push((text(member, "id").to_owned(), b.weight, b.backend.clone()));
        if member["weight"].as_u64() == Some(u64::from(b.weight)) {
            continue;
        }
        let path = format!("{}/members/{}", lb_path(&pool_id), text(member, "id"));
        let body = json!({"member": {"weight": b.weight}});
        let purpose = format!("weight {} {}", text(member, "id"), b.weight);
        let mut attempts = 0;
        loop {
            if !lb.is_empty() {
                wait_active(cloud, &lb)?;
            }
            match cloud.send(
                Verb::Put,
                Service::LoadBalancer,
                &path,
                Some(&body),
                &request_id(&req.key, &purpose),
            ) {
                Ok(_) => break,
                // Someone else changed the load balancer meanwhile.
                Err(ProviderError::Conflict(_)) if attempts < 5 => attempts += 1,
                Err(e) => return Err(e),
            }
        }
    }
    info!("pool weights set"; "pool" => pool_id, "members" => wanted.len());
    Ok(Redirect::Pool {
        pool: pool_id,
        members: wanted,
    })
}

fn floating_ip(
    cloud: &Cloud,
    req: &RedirectRequest,
    address: &str,
) -> Result<Redirect, ProviderError> {
    let found = cloud.get(
        Service::Network,
        &format!("/floatingips?floating_ip_address={}", encode(address)),
    )?;
    let fip = found["floatingips"]
        .get(0)
        .ok_or_else(|| {
            ProviderError::NotFound(format!(
                "Neutron in region '{}' has no floating IP {address}",
                cloud.region
            ))
        })?
        .clone();
    let id = text(&fip, "id").to_owned();
    let chosen =
        req.backends
            .iter()
            .filter(|b| b.weight > 0)
            .fold(None::<&WeightedBackend>, |best, b| match best {
                Some(top) if top.weight >= b.weight => Some(top),
                _ => Some(b),
            });
    let port = match chosen {
        None => None,
        Some(b) => {
            let ports = cloud.get(
                Service::Network,
                &format!("/ports?device_id={}", encode(&b.backend)),
            )?;
            let port = ports["ports"][0]["id"].as_str().ok_or_else(|| {
                ProviderError::InvalidRequest(format!(
                    "backend '{}' is not a server with a port in region '{}'",
                    b.backend, cloud.region
                ))
            })?;
            Some(port.to_owned())
        }
    };
    if fip["port_id"].as_str() != port.as_deref() {
        cloud.send(
            Verb::Put,
            Service::Network,
            &format!("/floatingips/{}", encode(&id)),
            Some(&json!({"floatingip": {"port_id": port}})),
            &request_id(&req.key, "move floating IP"),
        )?;
    }
    info!("floating IP moved"; "address" => address, "port" => port.clone().unwrap_or_default());
    Ok(Redirect::FloatingIp {
        address: address.to_owned(),
        id,
        port,
        backend: chosen.map(|b| b.backend.clone()),
    })
}

pub fn status(site: &str, redirect: Redirect) -> Result<OperationState, ProviderError> {
    let cloud = cloud::connect(site)?;
    let waiting = |detail: String| {
        Ok(OperationState::Running(Running {
            percent: None,
            detail,
        }))
    };
    let report = match redirect {
        Redirect::Dns {
            zone,
            zone_name,
            recordset,
            name,
            record_type,
            ttl,
            records,
            backends,
        } => {
            let set = cloud.get(
                Service::Dns,
                &format!("/zones/{zone}/recordsets/{recordset}"),
            )?;
            let mut have: Vec<String> = set["records"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect();
            have.sort();
            let mut want = records;
            want.sort();
            match text(&set, "status") {
                "ERROR" => {
                    return Ok(OperationState::Failed(ProviderError::ProviderFailed(
                        format!("record set {name} is in ERROR"),
                    )));
                }
                "ACTIVE" if have == want => {}
                other => return waiting(format!("record set {name} is {other}")),
            }
            RedirectReport {
                target: RedirectTarget::DnsRecord(DnsRecord {
                    zone: zone_name,
                    name,
                    record_type,
                    ttl_secs: ttl,
                }),
                backends: backends
                    .into_iter()
                    .map(|(backend, weight)| WeightedBackend { backend, weight })
                    .collect(),
            }
        }
        Redirect::Pool {
            pool,
            members: wanted,
        } => {
            let all = members(&cloud, &pool)?;
            for (id, weight, _) in &wanted {
                let member = all.iter().find(|m| text(m, "id") == id);
                let settled = member.is_some_and(|m| {
                    m["provisioning_status"] == "ACTIVE"
                        && m["weight"].as_u64() == Some(u64::from(*weight))
                });
                if !settled {
                    return waiting(format!("member {id} of pool {pool} is updating"));
                }
            }
            RedirectReport {
                target: RedirectTarget::LoadBalancerPool(pool),
                backends: all
                    .iter()
                    .map(|m| {
                        let named = wanted.iter().find(|(id, _, _)| id == text(m, "id"));
                        let backend = match named {
                            Some((_, _, backend)) => backend.clone(),
                            None if !text(m, "name").is_empty() => text(m, "name").to_owned(),
                            None => text(m, "address").to_owned(),
                        };
                        WeightedBackend {
                            backend,
                            weight: u8::try_from(m["weight"].as_u64().unwrap_or(0))
                                .unwrap_or(u8::MAX),
                        }
                    })
                    .collect(),
            }
        }
        Redirect::FloatingIp {
            address,
            id,
            port,
            backend,
        } => {
            let doc = cloud.get(Service::Network, &format!("/floatingips/{}", encode(&id)))?;
            if doc["floatingip"]["port_id"].as_str() != port.as_deref() {
                return waiting(format!("floating IP {address} is moving"));
            }
            RedirectReport {
                target: RedirectTarget::FloatingIp(address),
                backends: backend
                    .into_iter()
                    .map(|backend| WeightedBackend {
                        backend,
                        weight: 100,
                    })
                    .collect(),
            }
        }
    };
    Ok(OperationState::Succeeded(Outcome::Redirected(report)))
}

//! Nova servers as the contract sees them: the neutral VM spec of a
//! volume-backed server, labels kept in server metadata, power states,
//! addresses, and finding what the plugin created under a key.
//!
//! Nova metadata keys may not contain `/` (`^[a-zA-Z0-9-_:. ]{1,255}$`), so a
//! label `rebound/workload` is kept as the metadata key `rebound:workload`
//! and read back with `:` turned into `/`.

use std::collections::BTreeMap;

use rebound_plugin_sdk::{
    DiskSpec, Firmware, NicSpec, PowerState, ProviderError, VmSpec, Workload,
};
use serde_json::{Map, Value, json};

use crate::cloud::{Cloud, Service, Verb, encode, request_id};

/// Metadata the plugin keeps for itself, never shown as labels.
pub const KEY: &str = "rebound:key";
pub const FENCE_EPOCH: &str = "rebound:fence_epoch";
pub const MOVER_MODE: &str = "rebound:mover_mode";
pub const MOVER_URL: &str = "rebound:mover_url";
const INTERNAL: [&str; 4] = [KEY, FENCE_EPOCH, MOVER_MODE, MOVER_URL];

/// A label key as a Nova metadata key.
pub fn metadata_key(label: &str) -> String {
    label.replace('/', ":")
}

/// Labels as server metadata, plus the plugin's own entries.
pub fn metadata(labels: &[(String, String)], extra: &[(&str, &str)]) -> Map<String, Value> {
    let mut out: Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (metadata_key(k), json!(v)))
        .collect();
    for (k, v) in extra {
        out.insert((*k).to_owned(), json!(v));
    }
    out
}

pub fn text<'a>(doc: &'a Value, key: &str) -> &'a str {
    doc[key].as_str().unwrap_or_default()
}

pub fn meta<'a>(server: &'a Value, key: &str) -> Option<&'a str> {
    server["metadata"][key].as_str()
}

pub fn get(cloud: &Cloud, id: &str) -> Result<Value, ProviderError> {
    let mut doc = cloud.get(Service::Compute, &format!("/servers/{}", encode(id)))?;
    Ok(doc["server"].take())
}

pub fn list(cloud: &Cloud) -> Result<Vec<Value>, ProviderError> {
    let mut doc = cloud.get(Service::Compute, "/servers/detail")?;
    Ok(match doc["servers"].take() {
        Value::Array(servers) => servers,
        _ => Vec::new(),
    })
}

/// The server created under `key`, if any (still there and not deleting).
pub fn by_key(cloud: &Cloud, key: &str) -> Result<Option<Value>, ProviderError> {
    Ok(list(cloud)?
        .into_iter()
        .find(|s| meta(s, KEY) == Some(key) && !deleting(s)))
}

/// Delete a server, tagged with the key's request id for `purpose`. Nova
/// answers at once and deletes it later (`task_state` `deleting` until it
/// is gone); a server already gone counts as deleted.
pub fn delete(cloud: &Cloud, id: &str, key: &str, purpose: &str) -> Result<(), ProviderError> {
    match cloud.send(
        Verb::Delete,
        Service::Compute,
        &format!("/servers/{}", encode(id)),
        None,
        &request_id(key, purpose),
    ) {
        Ok(_) | Err(ProviderError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether Nova is deleting a server already.
pub fn deleting(server: &Value) -> bool {
    server["OS-EXT-STS:task_state"] == "deleting"
}

/// Whether a server is a mover appliance (not a workload).
pub fn is_appliance(server: &Value) -> bool {
    meta(server, MOVER_MODE).is_some()
}

pub fn power(server: &Value) -> PowerState {
    match text(server, "status") {
        "ACTIVE" => PowerState::Running,
        "SHUTOFF" => PowerState::Stopped,
        "PAUSED" | "SUSPENDED" => PowerState::Paused,
        _ => PowerState::Unknown,
    }
}

/// The volumes attached to a server, the boot volume first.
pub fn attached(server: &Value) -> Vec<String> {
    server["os-extended-volumes:volumes_attached"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["id"].as_str().map(str::to_owned))
        .collect()
}

/// Whether the server's root disk is an image on the hypervisor (not a
/// volume Cinder can snapshot).
pub fn image_backed(server: &Value) -> bool {
    server["image"]["id"].is_string()
}

/// Every address of a server: fixed ones, then floating ones.
pub fn addresses(server: &Value) -> Vec<String> {
    let mut fixed = Vec::new();
    let mut floating = Vec::new();
    for list in server["addresses"]
        .as_object()
        .into_iter()
        .flat_map(|o| o.values())
    {
        for a in list.as_array().into_iter().flatten() {
            let addr = text(a, "addr").to_owned();
            if a["OS-EXT-IPS:type"] == "floating" {
                floating.push(addr);
            } else {
                fixed.push(addr);
            }
        }
    }
    fixed.extend(floating);
    fixed
}

/// The address traffic should reach a server at: its floating IP if it has
/// one, else its first fixed one.
pub fn public_address(server: &Value) -> Option<String> {
    let all: Vec<&Value> = server["addresses"]
        .as_object()
        .into_iter()
        .flat_map(|o| o.values())
        .flat_map(|l| l.as_array().into_iter().flatten())
        .collect();
    all.iter()
        .find(|a| a["OS-EXT-IPS:type"] == "floating")
        .or_else(|| all.first())
        .map(|a| text(a, "addr").to_owned())
}

/// A server as a workload; `volumes` holds Cinder's view of the volumes
/// (by id) for their names and sizes.
pub fn workload(server: &Value, volumes: &BTreeMap<String, Value>) -> Workload {
    let image_root = image_backed(server);
    let disks = attached(server)
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let volume = volumes.get(&id);
            let name = volume
                .map(|v| text(v, "name"))
                .filter(|n| !n.is_empty())
                .unwrap_or(&id)
                .to_owned();
            DiskSpec {
                size_bytes: volume
                    .and_then(|v| v["size"].as_u64())
                    .unwrap_or(0)
                    .saturating_mul(1 << 30),
                boot_order: (i == 0 && !image_root).then_some(0),
                id,
                name,
            }
        })
        .collect();
    let uefi = attached(server)
        .first()
        .and_then(|id| volumes.get(id))
        .is_some_and(|v| v["volume_image_metadata"]["hw_firmware_type"] == "uefi");
    let mut nics: Vec<NicSpec> = Vec::new();
    for (network, list) in server["addresses"].as_object().into_iter().flatten() {
        for a in list.as_array().into_iter().flatten() {
            if a["OS-EXT-IPS:type"] == "floating" {
                continue;
            }
            let mac = a["OS-EXT-IPS-MAC:mac_addr"].as_str().map(str::to_owned);
            let addr = text(a, "addr").to_owned();
            match nics
                .iter_mut()
                .find(|n| n.network == *network && n.mac == mac)
            {
                Some(nic) => nic.ips.push(addr),
                None => nics.push(NicSpec {
                    network: network.clone(),
                    mac,
                    ips: vec![addr],
                }),
            }
        }
    }
    let labels = server["metadata"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !INTERNAL.contains(&k.as_str()))
        .map(|(k, v)| {
            (
                k.replace(':', "/"),
                v.as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    Workload {
        id: text(server, "id").to_owned(),
        power: power(server),
        spec: VmSpec {
            name: text(server, "name").to_owned(),
            cpus: u32::try_from(server["flavor"]["vcpus"].as_u64().unwrap_or(0)).unwrap_or(0),
            memory_mib: server["flavor"]["ram"].as_u64().unwrap_or(0),
            firmware: if uefi { Firmware::Uefi } else { Firmware::Bios },
            disks,
            nics,
            labels,
        },
    }
}

/// Cinder's volumes by id (one listing for many servers).
pub fn volume_map(cloud: &Cloud) -> Result<BTreeMap<String, Value>, ProviderError> {
    let mut doc = cloud.get(Service::Volume, "/volumes/detail")?;
    Ok(match doc["volumes"].take() {
        Value::Array(list) => list
            .into_iter()
            .map(|v| (text(&v, "id").to_owned(), v))
            .collect(),
        _ => BTreeMap::new(),
    })
}

/// A server action (`os-stop`, `lock`, …) tagged with the key's request id.
pub fn action(
    cloud: &Cloud,
    server: &str,
    body: Value,
    key: &str,
    purpose: &str,
) -> Result<(), ProviderError> {
    cloud.send(
        Verb::Post,
        Service::Compute,
        &format!("/servers/{}/action", encode(server)),
        Some(&body),
        &request_id(key, purpose),
    )?;
    Ok(())
}

/// The smallest flavor with at least `cpus` vCPUs and `memory_mib` RAM.
pub fn flavor_for(cloud: &Cloud, cpus: u32, memory_mib: u64) -> Result<String, ProviderError> {
    let doc = cloud.get(Service::Compute, "/flavors/detail")?;
    doc["flavors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| {
            f["vcpus"].as_u64().unwrap_or(0) >= u64::from(cpus)
                && f["ram"].as_u64().unwrap_or(0) >= memory_mib
        })
        .min_by_key(|f| (f["vcpus"].as_u64(), f["ram"].as_u64()))
        .map(|f| text(f, "id").to_owned())
        .ok_or_else(|| {
            ProviderError::InvalidRequest(format!(
                "site '{}' has no flavor with {cpus} vCPUs and {memory_mib} MiB; add one or map the VM to a smaller size",
                cloud.site
            ))
        })
}

/// A Neutron network's id by name (or the id itself).
pub fn network_id(cloud: &Cloud, name: &str) -> Result<String, ProviderError> {
    let doc = cloud.get(
        Service::Network,
        &format!("/networks?name={}", encode(name)),
    )?;
    if let Some(id) = doc["networks"][0]["id"].as_str() {
        return Ok(id.to_owned());
    }
    match cloud.get(Service::Network, &format!("/networks/{}", encode(name))) {
        Ok(doc) => Ok(text(&doc["network"], "id").to_owned()),
        Err(ProviderError::NotFound(_)) => Err(ProviderError::InvalidRequest(format!(
            "site '{}' has no network '{name}'; fix the plan's network mapping",
            cloud.site
        ))),
        Err(e) => Err(e),
    }
}

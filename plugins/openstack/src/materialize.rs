//! `materialize`: a Nova server booted from volumes, in the mapped
//! networks (or, for a drill, only the site's `isolated_network` — no
//! network at all when unset), labelled in its metadata.
//!
//! The volumes come from the recovery point (new volumes from its Cinder
//! snapshots or backups, named `<vm>-disk<N>`), or are the volumes the data
//! mover wrote — used as they are, or cloned for a drill so the drill
//! never writes into a recovery point. Nova attaches only `available`
//! volumes, so `status` boots the server once they are, under the call's
//! key (a server booted earlier under the key is found, never a second).
//! A drill's volumes are deleted with its server.

use rebound_plugin_sdk::{
    DiskSource, MaterializeRequest, Materialized, Operation, OperationKind, OperationState,
    Outcome, ProviderError, Running, info,
};
use serde_json::{Value, json};

use crate::cinder::{self, Kind};
use crate::cloud::{self, Service, Verb, request_id, setting};
use crate::handle::{Handle, Point};
use crate::nova::{self, KEY, text};

pub fn materialize(req: MaterializeRequest) -> Result<Operation, ProviderError> {
    let cloud = cloud::connect(&req.site)?;
    let spec = &req.spec;
    let labels = nova::metadata(&spec.labels, &[]);
    let volume = |i: usize, fields: Value| -> Result<String, ProviderError> {
        let mut fields = fields;
        fields["metadata"] = Value::Object(labels.clone());
        fields["description"] = json!(format!("disk {i} of {}, recovered by Rebound", spec.name));
        let name = format!("{}-disk{i}", spec.name);
        cinder::create_once(&cloud, Kind::Volume, None, &name, &req.key, fields)
    };
    let volumes = match &req.source {
        DiskSource::RecoveryPoint(id) => {
            let (kind, field, ids) = match Point::parse(id)? {
                Point::Snapshots(ids) => (Kind::Snapshot, "snapshot_id", ids),
                Point::Backups { ids, .. } => (Kind::Backup, "backup_id", ids),
            };
            let mut copies = Vec::new();
            for copy in &ids {
                let doc = cinder::get(&cloud, kind, None, copy)?;
                copies.push((text(&doc, "volume_id").to_owned(), copy.clone(), doc));
            }
            // In the spec's disk order: each disk's copy by the volume it
            // was taken of, else by position.
            let mut ordered = Vec::new();
            for (i, disk) in spec.disks.iter().enumerate() {
                let copy = copies
                    .iter()
                    .find(|(of, _, _)| *of == disk.id)
                    .or_else(|| copies.get(i))
                    .ok_or_else(|| {
                        ProviderError::InvalidRequest(format!(
                            "recovery point '{id}' holds {} copies for {} disks",
                            copies.len(),
                            spec.disks.len()
                        ))
                    })?;
                ordered.push(copy);
            }
            let mut volumes = Vec::new();
            for (i, (_, copy, doc)) in ordered.into_iter().enumerate() {
                let size = doc["size"].as_u64().unwrap_or(1);
                volumes.push(volume(i, json!({ field: copy, "size": size }))?);
            }
            volumes
        }
        DiskSource::Volumes(ids) if req.isolated => {
            let mut volumes = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                volumes.push(volume(i, json!({ "source_volid": id }))?);
            }
            volumes
        }
        DiskSource::Volumes(ids) => ids.clone(),
    };
    if volumes.is_empty() {
        return Err(ProviderError::InvalidRequest(format!(
            "'{}' has no disks to boot from",
            spec.name
        )));
    }
    let boot = spec
        .disks
        .iter()
        .enumerate()
        .filter_map(|(i, d)| d.boot_order.map(|b| (b, i)))
        .min()
        .map_or(0, |(_, i)| i)
        .min(volumes.len() - 1);
    let mut bdm: Vec<Value> = volumes
        .iter()
        .enumerate()
        .map(|(i, v)| {
            json!({
                "boot_index": if i == boot { 0 } else { -1 },
                "uuid": v, "source_type": "volume", "destination_type": "volume",
                "delete_on_termination": req.isolated,
            })
        })
        .collect();
    bdm.sort_by_key(|b| b["boot_index"] != 0);
    let networks = if req.isolated {
        match setting(&req.site, "isolated_network", "") {
            n if n.is_empty() => json!("none"),
            n => json!([{ "uuid": nova::network_id(&cloud, &n)? }]),
        }
    } else if spec.nics.is_empty() {
        json!("none")
    } else {
        let mut list = Vec::new();
        for nic in &spec.nics {
            let mapping = req
                .networks
                .iter()
                .find(|m| m.source_network == nic.network);
            let target = mapping.map_or(nic.network.as_str(), |m| m.target_network.as_str());
            let mut entry = json!({ "uuid": nova::network_id(&cloud, target)? });
            if mapping.is_some_and(|m| m.keep_addresses)
                && let Some(ip) = nic.ips.first()
            {
                entry["fixed_ip"] = json!(ip);
            }
            list.push(entry);
        }
        Value::Array(list)
    };
    let mut metadata = labels.clone();
    metadata.insert(KEY.into(), json!(req.key));
    let server = json!({"server": {
        "name": spec.name,
        "flavorRef": nova::flavor_for(&cloud, spec.cpus, spec.memory_mib)?,
        "networks": networks,
        "metadata": metadata,
        "block_device_mapping_v2": bdm,
    }});
    info!("materializing"; "name" => spec.name, "volumes" => volumes.join(","), "isolated" => req.isolated);
    let handle = Handle::Materialize {
        key: req.key,
        volumes,
        server,
        start: req.start,
    };
    Ok(handle.operation(OperationKind::Materialize, &req.site))
}

pub fn status(
    site: &str,
    key: &str,
    volumes: &[String],
    body: &Value,
    start: bool,
) -> Result<OperationState, ProviderError> {
    let cloud = cloud::connect(site)?;
    let running = |detail: String| {
        Ok(OperationState::Running(Running {
            percent: None,
            detail,
        }))
    };
    if let Some(server) = nova::by_key(&cloud, key)? {
        let id = text(&server, "id").to_owned();
        return match (text(&server, "status"), start) {
            ("ERROR", _) => Ok(OperationState::Failed(ProviderError::ProviderFailed(
                format!(
                    "server {id} failed to build: {}",
                    server["fault"]["message"]
                        .as_str()
                        .unwrap_or("no fault recorded")
                ),
            ))),
            ("ACTIVE", true) | ("SHUTOFF", false) => {
                let volume_docs = nova::volume_map(&cloud)?;
                let addresses = nova::addresses(&server);
                Ok(OperationState::Succeeded(Outcome::Materialized(
                    Materialized {
                        workload: nova::workload(&server, &volume_docs),
                        addresses,
                    },
                )))
            }
            ("ACTIVE", false) => {
                nova::action(&cloud, &id, json!({"os-stop": null}), key, "stop")?;
                running(format!("stopping server {id}"))
            }
            (other, _) => running(format!("server {id} is {other}")),
        };
    }
    for volume in volumes {
        let Some(doc) = cinder::find(&cloud, Kind::Volume, None, volume)? else {
            return Ok(OperationState::Failed(ProviderError::NotFound(format!(
                "volume {volume} is gone from site '{site}'"
            ))));
        };
        if let Some(reason) = cinder::failure(&doc) {
            return Ok(OperationState::Failed(ProviderError::ProviderFailed(
                reason,
            )));
        }
        if text(&doc, "status") != "available" {
            return running(format!("volume {volume} is {}", text(&doc, "status")));
        }
    }
    cloud.send(
        Verb::Post,
        Service::Compute,
        "/servers",
        Some(body),
        &request_id(key, "boot server"),
    )?;
    running("booting the server".into())
}

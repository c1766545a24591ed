//! `export-disk` and `import-disk`: OpenStack has no ranged read or write
//! of a volume's blocks, so the plugin places a mover appliance next to the
//! data, as DR products do (Coriolis' minion VMs, Velero's data-mover
//! pods): a server booted from the site's mover image (`mover_image`,
//! `rebound-mover` by default) with the volume attached. The appliance
//! serves the volume with the data mover's protocol behind a per-transfer
//! token it reads from its user data (`REBOUND_MOVER_TOKEN=…`, which Nova
//! shows no one but admins), and publishes its URL in its server metadata.
//! The token is derived from the transfer's key under the site's secret
//! `mover_key` ([`appliance::token`]), and derived again when `status`
//! reports the endpoint, so it is kept nowhere — not in metadata anyone in
//! the project reads, not in the host's store. (The plugin never holds the
//! site's password, so it cannot key tokens with that, as the AWS plugin
//! does with its secret key.)
//!
//! - export: a new volume from the recovery point's copy of the disk (a
//!   snapshot or a backup), served read-only; it is deleted with the
//!   appliance;
//! - import: a new volume — made from `volume-id` (a volume, snapshot or
//!   backup) when the host resyncs onto an earlier copy, so that copy stays
//!   intact until the new one is verified — served writable; it stays when
//!   the appliance goes.
//!
//! The volume must be `available` before a server can attach it, so
//! `status` boots the appliance once it is, under the transfer's key (an
//! appliance booted earlier under the key is found, never a second one).
//!
//! `cleanup` ends transfers: released ([`release`]), the appliance goes
//! (with an export's volume); discarded ([`discard`]), an import's
//! appliance goes and so does the volume it was writing, at whatever stage
//! the import stopped, without booting what it had not booted yet.

use rebound_plugin_sdk::{
    DiskEndpoint, DiskFormat, ExportRequest, ImportRequest, Operation, OperationKind,
    OperationState, Outcome, ProviderError, Running, appliance, info, site,
};
use serde_json::{Value, json};

use crate::cinder::{self, GIB, Kind};
use crate::cleanup::Sweep;
use crate::cloud::{self, Cloud, Service, Verb, encode, request_id, setting, short};
use crate::handle::{Handle, Point};
use crate::nova::{self, KEY, MOVER_MODE, MOVER_URL, meta, text};

/// The site secret the appliances' tokens are derived under.
pub const MOVER_KEY: &str = "mover_key";

/// The site's `mover_key`, or an error saying what it is for and how to
/// add it.
fn mover_key(site: &str) -> Result<site::Secret, ProviderError> {
    site::secret(site, MOVER_KEY).map_err(|_| {
        ProviderError::InvalidRequest(format!(
            "site '{site}' has no secret '{MOVER_KEY}': OpenStack transfers boot mover \
             appliances whose bearer tokens are derived from it; add a random value of at \
             least 32 characters to the site's credentials"
        ))
    })
}

/// The bearer token of the appliance of transfer `key` on `cloud`.
fn token(cloud: &Cloud, key: &str) -> Result<String, ProviderError> {
    Ok(appliance::token(
        &mover_key(&cloud.site)?.reveal(),
        &cloud.region,
        key,
    ))
}

fn raw_only(format: DiskFormat) -> Result<(), ProviderError> {
    match format {
        DiskFormat::Raw => Ok(()),
        other => Err(ProviderError::Unsupported(format!(
            "the OpenStack mover appliance moves raw images, not {other:?}"
        ))),
    }
}

pub fn export_disk(req: ExportRequest) -> Result<Operation, ProviderError> {
    raw_only(req.format)?;
    mover_key(&req.site)?;
    let cloud = cloud::connect(&req.site)?;
    let (kind, field, ids) = match Point::parse(&req.recovery_point_id)? {
        Point::Snapshots(ids) => (Kind::Snapshot, "snapshot_id", ids),
        Point::Backups { ids, .. } => (Kind::Backup, "backup_id", ids),
    };
    let mut copy = None;
    for id in &ids {
        let doc = cinder::get(&cloud, kind, None, id)?;
        if text(&doc, "volume_id") == req.disk_id {
            copy = Some((id.clone(), cinder::bytes(&doc)));
            break;
        }
    }
    let Some((copy, size_bytes)) = copy else {
        return Err(ProviderError::NotFound(format!(
            "recovery point '{}' holds no copy of disk '{}'",
            req.recovery_point_id, req.disk_id
        )));
    };
    let fields = json!({
        field: copy, "size": size_bytes / GIB,
        "description": format!("Rebound export of disk {} of {}", req.disk_id, req.recovery_point_id),
    });
    let name = format!("rebound-export-{}", short(&req.key));
    let volume = cinder::create_once(&cloud, Kind::Volume, None, &name, &req.key, fields)?;
    info!("export volume requested"; "volume" => volume, "copy" => copy);
    let handle = Handle::Transfer {
        export: true,
        key: req.key,
        volume,
        size_bytes,
    };
    Ok(handle.operation(OperationKind::ExportDisk, &req.site))
}

pub fn import_disk(req: ImportRequest) -> Result<Operation, ProviderError> {
    raw_only(req.format)?;
    if req.size_bytes == 0 {
        return Err(ProviderError::InvalidRequest(
            "an import needs a size above 0 bytes".into(),
        ));
    }
    mover_key(&req.site)?;
    let cloud = cloud::connect(&req.site)?;
    let gib = req.size_bytes.div_ceil(GIB);
    let mut fields = json!({
        "size": gib,
        "description": format!("Rebound import '{}'", req.name),
    });
    // The base is the newest copy of the disk on this site: a volume the
    // data mover wrote, or a snapshot or backup this plugin made.
    if let Some(base) = &req.volume_id {
        let mut found = None;
        for (kind, field) in [
            (Kind::Volume, "source_volid"),
            (Kind::Snapshot, "snapshot_id"),
            (Kind::Backup, "backup_id"),
        ] {
            if let Some(doc) = cinder::find(&cloud, kind, None, base)? {
                found = Some((field, doc));
                break;
            }
        }
        let (field, doc) = found.ok_or_else(|| {
            ProviderError::NotFound(format!(
                "site '{}' has no volume, snapshot or backup '{base}' to import onto",
                req.site
            ))
        })?;
        fields[field] = json!(base);
        fields["size"] = json!(gib.max(doc["size"].as_u64().unwrap_or(0)));
    }
    let volume = cinder::create_once(&cloud, Kind::Volume, None, &req.name, &req.key, fields)?;
    info!("import volume requested"; "volume" => volume, "base" => req.volume_id.unwrap_or_default());
    let handle = Handle::Transfer {
        export: false,
        key: req.key,
        volume,
        size_bytes: req.size_bytes,
    };
    Ok(handle.operation(OperationKind::ImportDisk, &req.site))
}

pub fn status(
    site: &str,
    export: bool,
    key: &str,
    volume: &str,
    size_bytes: u64,
) -> Result<OperationState, ProviderError> {
    let cloud = cloud::connect(site)?;
    let running = |detail: String| {
        Ok(OperationState::Running(Running {
            percent: None,
            detail,
        }))
    };
    if let Some(appliance) = nova::by_key(&cloud, key)? {
        return Ok(match text(&appliance, "status") {
            "ERROR" => OperationState::Failed(ProviderError::ProviderFailed(format!(
                "mover appliance {} failed: {}",
                text(&appliance, "id"),
                appliance["fault"]["message"]
                    .as_str()
                    .unwrap_or("no fault recorded")
            ))),
            "ACTIVE" => match meta(&appliance, MOVER_URL) {
                Some(url) => OperationState::Succeeded(Outcome::DiskEndpoint(DiskEndpoint {
                    url: url.to_owned(),
                    format: DiskFormat::Raw,
                    size_bytes,
                    headers: vec![(
                        "authorization".into(),
                        format!("Bearer {}", token(&cloud, key)?),
                    )],
                    ranged: true,
                    block_digests: true,
                    volume_id: (!export).then(|| volume.to_owned()),
                    expires_at: None,
                })),
                _ => return running("the mover appliance is starting its agent".into()),
            },
            other => return running(format!("the mover appliance is {other}")),
        });
    }
    let Some(doc) = cinder::find(&cloud, Kind::Volume, None, volume)? else {
        return Ok(OperationState::Failed(ProviderError::NotFound(format!(
            "volume {volume} of this transfer is gone from site '{site}'"
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
    boot_appliance(&cloud, export, key, volume)?;
    running("booting the mover appliance".into())
}

/// Boot the mover appliance with `volume` attached, under `key`.
fn boot_appliance(
    cloud: &Cloud,
    export: bool,
    key: &str,
    volume: &str,
) -> Result<(), ProviderError> {
    let image_name = setting(&cloud.site, "mover_image", "rebound-mover");
    let images = cloud.get(
        Service::Image,
        &format!("/images?name={}&status=active", encode(&image_name)),
    )?;
    let image = images["images"][0]["id"]
        .as_str()
        .ok_or_else(|| {
            ProviderError::InvalidRequest(format!(
                "site '{}' has no active image '{image_name}' in region '{}'; upload the Rebound \
                 mover appliance image there (or set `mover_image`)",
                cloud.site, cloud.region
            ))
        })?
        .to_owned();
    let flavor = match cloud::setting(&cloud.site, "mover_flavor", "") {
        f if f.is_empty() => nova::flavor_for(cloud, 1, 256)?,
        f => f,
    };
    let networks = match setting(&cloud.site, "mover_network", "") {
        n if n.is_empty() => json!("none"),
        n => json!([{"uuid": nova::network_id(cloud, &n)?}]),
    };
    let mode = if export { "export" } else { "import" };
    let body = json!({"server": {
        "name": format!("rebound-mover-{}", short(key)),
        "flavorRef": flavor,
        "imageRef": image,
        "networks": networks,
        "metadata": {KEY: key, MOVER_MODE: mode},
        "user_data": appliance::user_data(&token(cloud, key)?),
        "block_device_mapping_v2": [
            {"boot_index": 0, "uuid": image, "source_type": "image", "destination_type": "local", "delete_on_termination": true},
            // The export's volume is the appliance's own; an import's
            // volume is the copy being made and outlives it.
            {"boot_index": -1, "uuid": volume, "source_type": "volume", "destination_type": "volume", "delete_on_termination": export},
        ],
    }});
    let created: Value = cloud.send(
        Verb::Post,
        Service::Compute,
        "/servers",
        Some(&body),
        &request_id(key, "boot mover appliance"),
    )?;
    info!("mover appliance booting"; "server" => text(&created["server"], "id"), "volume" => volume, "mode" => mode);
    Ok(())
}

/// Stop serving the transfers whose operation ids are `ids`: delete each
/// appliance (an export's volume goes with it; an import's stays).
pub fn release(cloud: &Cloud, ids: &[String], key: &str) -> Result<Vec<String>, ProviderError> {
    let mut removed = Vec::new();
    for id in ids {
        let Handle::Transfer {
            export,
            key: transfer_key,
            volume,
            ..
        } = Handle::parse(id)?
        else {
            return Err(ProviderError::InvalidRequest(format!(
                "'{id}' is not a transfer of the OpenStack plugin"
            )));
        };
        match nova::by_key(cloud, &transfer_key)? {
            Some(appliance) => {
                let server = text(&appliance, "id").to_owned();
                nova::delete(cloud, &server, key, &format!("delete appliance {server}"))?;
                removed.push(server);
            }
            // No appliance was booted: an export's volume is left alone.
            None if export => {
                cinder::delete(cloud, Kind::Volume, None, &volume, key)?;
                removed.push(volume);
            }
            None => {}
        }
    }
    Ok(removed)
}

/// Abandon the imports whose operation ids are `ids`, whatever stage they
/// reached (`cleanup`'s discarded imports): delete the appliance booted
/// under each one's key, if any, and leave its volume to
/// [`crate::cleanup::status`], which deletes it once the appliance is gone
/// (or, still being created, once Cinder lets it). Nothing an import would
/// still have done is done: no volume made, no appliance booted. Every id
/// is checked to be an import of this plugin before anything is deleted.
pub fn discard(cloud: &Cloud, ids: &[String], key: &str) -> Result<Sweep, ProviderError> {
    let mut imports: Vec<(String, String)> = Vec::new();
    for id in ids {
        let Ok(Handle::Transfer {
            export: false,
            key: transfer_key,
            volume,
            ..
        }) = Handle::parse(id)
        else {
            return Err(ProviderError::InvalidRequest(format!(
                "'{id}' is not an import-disk operation of the OpenStack plugin; nothing was \
                 removed"
            )));
        };
        if !imports.iter().any(|(k, _)| *k == transfer_key) {
            imports.push((transfer_key, volume));
        }
    }
    let servers = nova::list(cloud)?;
    let mut sweep = Sweep::default();
    for (transfer_key, volume) in imports {
        let appliances = servers
            .iter()
            .filter(|s| nova::is_appliance(s) && meta(s, KEY) == Some(transfer_key.as_str()));
        for appliance in appliances {
            let server = text(appliance, "id").to_owned();
            if !nova::deleting(appliance) {
                nova::delete(cloud, &server, key, &format!("delete appliance {server}"))?;
            }
            sweep.removed.push(server.clone());
            sweep.servers.push(server);
        }
        info!("import discarded"; "volume" => volume, "transfer" => transfer_key);
        sweep.volumes.push(volume);
    }
    Ok(sweep)
}

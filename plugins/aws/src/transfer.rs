//! `export-disk` and `import-disk` through a mover appliance. EC2 has no
//! ranged write of a volume (EBS direct writes only new snapshots, and
//! reads need a signature per block, which the host's data mover does not
//! make), so the plugin does what migration tools do on AWS (Coriolis'
//! minion instances, CloudEndure's replication servers): it launches an
//! instance from the site's mover AMI (`mover_image`, `rebound-mover` by
//! default) with the volume to move attached at [`DEVICE`]. The appliance
//! serves that volume with the data mover's protocol behind a per-transfer
//! token it reads from its user data (`REBOUND_MOVER_TOKEN=…`), and
//! publishes its URL in its own tags (its instance role may tag only
//! itself). The token is derived from the transfer's key under the site's
//! secret key ([`Aws::appliance_token`]): `status` computes it again, so it
//! is kept nowhere — not in a tag anyone who may describe instances reads,
//! not in the host's store.
//!
//! - export: a volume made from the recovery point's snapshot of the disk,
//!   served read-only, deleted with the appliance;
//! - import: an empty volume, or one made from the base the host names (a
//!   snapshot; a volume is snapshotted first, as EC2 clones volumes only
//!   through snapshots, so the base stays intact until the new copy is
//!   verified), served writable; it stays when the appliance goes.
//!
//! Every step is found again by the transfer's key (the appliance by its
//! `rebound:key` tag, a staging snapshot likewise, the appliance's volumes
//! too), so `status` moves the transfer on — snapshot, then appliance —
//! without ever doing a step twice.
//!
//! Cleanup: [`release`] ends transfers that are done (the appliance goes,
//! an import's volume stays: it is the copy); [`discard`] ends abandoned
//! imports at whatever step they reached and moves none on — the appliance,
//! if one was launched, goes, and so do the volume it was writing and the
//! staging snapshot; an import not yet at its appliance gets none.

use sha2::{Digest, Sha256};

use rebound_plugin_sdk::{
    DiskEndpoint, DiskFormat, ExportRequest, ImportRequest, Operation, OperationKind,
    OperationState, Outcome, ProviderError, Running, appliance, info, site,
};

use crate::client::{Aws, Params, connect};
use crate::ec2::{self, DISK_TAG, GIB, KEY_TAG};
use crate::points;
use crate::xml::Node;

/// The device the appliance serves.
pub const DEVICE: &str = "/dev/sdf";
/// `export` or `import`: marks an instance as a mover appliance.
pub const MODE_TAG: &str = "rebound:mover-mode";
const URL_TAG: &str = "rebound:mover-url";
const ERROR_TAG: &str = "rebound:mover-error";
/// Marks a snapshot the plugin made only to clone a volume from.
pub const STAGING_TAG: &str = "rebound:staging";

/// What a transfer operation's id carries: `MODE:SIZE:BASE:KEY`.
struct Transfer {
    export: bool,
    size_bytes: u64,
    /// The snapshot or volume the appliance's volume is made from.
    base: Option<String>,
    key: String,
}

impl Transfer {
    fn id(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            if self.export { "export" } else { "import" },
            self.size_bytes,
            self.base.as_deref().unwrap_or("-"),
            self.key
        )
    }

    fn parse(id: &str) -> Result<Self, ProviderError> {
        let bad = || ProviderError::InvalidRequest(format!("'{id}' is not an AWS transfer handle"));
        let mut parts = id.splitn(4, ':');
        let (Some(mode), Some(size), Some(base), Some(key)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Ok(Self {
            export: match mode {
                "export" => true,
                "import" => false,
                _ => return Err(bad()),
            },
            size_bytes: size.parse().map_err(|_| bad())?,
            base: (base != "-").then(|| base.to_owned()),
            key: key.to_owned(),
        })
    }

    fn operation(&self, site: &str) -> Operation {
        Operation {
            kind: if self.export {
                OperationKind::ExportDisk
            } else {
                OperationKind::ImportDisk
            },
            site: site.to_owned(),
            id: self.id(),
        }
    }
}

fn raw_only(format: DiskFormat) -> Result<(), ProviderError> {
    match format {
        DiskFormat::Raw => Ok(()),
        other => Err(ProviderError::Unsupported(format!(
            "the AWS mover appliance moves raw images, not {other:?}"
        ))),
    }
}

pub fn export_disk(req: ExportRequest) -> Result<Operation, ProviderError> {
    raw_only(req.format)?;
    let aws = connect(&req.site)?;
    let snaps = points::snapshots(&aws, &req.recovery_point_id)?;
    if snaps.is_empty() {
        return Err(ProviderError::NotFound(format!(
            "recovery point '{}' on site '{}'",
            req.recovery_point_id, req.site
        )));
    }
    let snap = snaps
        .iter()
        .find(|s| s.tag(DISK_TAG).as_deref() == Some(req.disk_id.as_str()))
        .ok_or_else(|| {
            ProviderError::NotFound(format!(
                "recovery point '{}' holds no copy of disk '{}'",
                req.recovery_point_id, req.disk_id
            ))
        })?;
    if snap.text("status") != "completed" {
        return Err(ProviderError::Conflict(format!(
            "snapshot {} of '{}' is {}, not completed",
            snap.text("snapshotId"),
            req.recovery_point_id,
            snap.text("status")
        )));
    }
    let transfer = Transfer {
        export: true,
        size_bytes: gib_of(snap) * GIB,
        base: Some(snap.text("snapshotId").to_owned()),
        key: req.key,
    };
    advance(&aws, &transfer)?;
    info!("export requested"; "snapshot" => transfer.base.clone().unwrap_or_default());
    Ok(transfer.operation(&req.site))
}

pub fn import_disk(req: ImportRequest) -> Result<Operation, ProviderError> {
    raw_only(req.format)?;
    if req.size_bytes == 0 {
        return Err(ProviderError::InvalidRequest(
            "an import needs a size above 0 bytes".into(),
        ));
    }
    let aws = connect(&req.site)?;
    if let Some(base) = &req.volume_id
        && base_size(&aws, base)?.is_none()
    {
        return Err(ProviderError::NotFound(format!(
            "site '{}' has no snapshot or volume '{base}' to import onto",
            req.site
        )));
    }
    let transfer = Transfer {
        export: false,
        size_bytes: req.size_bytes,
        base: req.volume_id,
        key: req.key,
    };
    advance(&aws, &transfer)?;
    info!("import requested"; "name" => req.name, "base" => transfer.base.clone().unwrap_or_default());
    Ok(transfer.operation(&req.site))
}

pub fn status(op: &Operation) -> Result<OperationState, ProviderError> {
    let aws = connect(&op.site)?;
    let transfer = Transfer::parse(&op.id)?;
    let running = |detail: String| {
        Ok(OperationState::Running(Running {
            percent: None,
            detail,
        }))
    };
    let appliance = match advance(&aws, &transfer)? {
        Stage::Waiting(detail) => return running(detail),
        Stage::Appliance(instance) => instance,
    };
    let id = appliance.text("instanceId");
    if let Some(reason) = appliance.tag(ERROR_TAG) {
        return Ok(OperationState::Failed(ProviderError::ProviderFailed(
            format!("mover appliance {id} failed: {reason}"),
        )));
    }
    let state = appliance.text("instanceState/name");
    match state {
        "running" => {}
        "pending" => return running(format!("the mover appliance {id} is pending")),
        other => {
            return Ok(OperationState::Failed(ProviderError::ProviderFailed(
                format!("mover appliance {id} is {other}"),
            )));
        }
    }
    let Some(url) = appliance.tag(URL_TAG) else {
        return running(format!("the mover appliance {id} is starting its agent"));
    };
    let token = aws.appliance_token(&transfer.key);
    let volume = appliance
        .items("blockDeviceMapping")
        .find(|m| m.text("deviceName") == DEVICE)
        .map(|m| m.text("ebs/volumeId").to_owned())
        .filter(|v| !v.is_empty());
    if volume.is_none() {
        return Ok(OperationState::Failed(ProviderError::ProviderFailed(
            format!("mover appliance {id} has no volume at {DEVICE}"),
        )));
    }
    Ok(OperationState::Succeeded(Outcome::DiskEndpoint(
        DiskEndpoint {
            url,
            format: DiskFormat::Raw,
            size_bytes: transfer.size_bytes,
            headers: vec![("authorization".into(), format!("Bearer {token}"))],
            ranged: true,
            block_digests: true,
            volume_id: if transfer.export { None } else { volume },
            expires_at: None,
        },
    )))
}

/// Terminate the appliances of these transfers (an export's volume goes
/// with its appliance, an import's stays) and delete their staging
/// snapshots; what is gone already counts as removed.
pub fn release(aws: &Aws, ids: &[String], removed: &mut Vec<String>) -> Result<(), ProviderError> {
    for id in ids {
        let transfer = Transfer::parse(id)?;
        if let Some(appliance) = appliance(aws, &transfer.key)? {
            removed.extend(crate::launch::terminate(aws, &[appliance])?);
        }
        delete_staging(aws, &transfer.key, removed)?;
    }
    Ok(())
}

/// Abandoned imports (the `discarded-imports` cleanup), at whatever step
/// they reached, taken no further: unlike `status`, nothing here calls
/// [`advance`], so an import still waiting on its base's staging snapshot
/// never gets its appliance (nor the volume the appliance would have been
/// launched with). What there is goes: the appliance (terminated), the
/// volume it was writing — the one at [`DEVICE`], found on the appliance or,
/// once that is gone, by the key tag it was launched with; deleted, pending
/// while it detaches — and the staging snapshot of a base volume. The base
/// itself (a snapshot or volume the host named) is never touched. Every id
/// is checked to be an import's before anything is removed; what is gone
/// already counts as removed, and each operation id is reported.
pub fn discard(
    aws: &Aws,
    ids: &[String],
    removed: &mut Vec<String>,
    pending: &mut Vec<String>,
) -> Result<(), ProviderError> {
    let mut imports = Vec::new();
    for id in ids {
        let transfer = Transfer::parse(id)?;
        if transfer.export {
            return Err(ProviderError::InvalidRequest(format!(
                "'{id}' is an export, not an import; nothing was removed (release an export \
                 with the transfers cleanup)"
            )));
        }
        imports.push((id, transfer));
    }
    for (id, transfer) in imports {
        let mut volumes = Vec::new();
        if let Some(appliance) = appliance(aws, &transfer.key)? {
            volumes.extend(
                appliance
                    .items("blockDeviceMapping")
                    .filter(|m| m.text("deviceName") == DEVICE)
                    .map(|m| m.text("ebs/volumeId").to_owned()),
            );
            removed.extend(crate::launch::terminate(aws, &[appliance])?);
        }
        volumes.extend(written(aws, &transfer.key)?);
        volumes.sort();
        volumes.dedup();
        volumes.retain(|v| !v.is_empty() && Some(v) != transfer.base.as_ref());
        delete_staging(aws, &transfer.key, removed)?;
        for volume in volumes {
            crate::launch::delete_volume(aws, &volume, removed, pending)?;
        }
        removed.push(id.clone());
    }
    Ok(())
}

/// The volumes an appliance launched under `key` was given to write: those
/// tagged with the key at launch that are at [`DEVICE`] or attached
/// nowhere (the appliance gone). Its root volume, deleted with it, is left
/// to EC2.
fn written(aws: &Aws, key: &str) -> Result<Vec<String>, ProviderError> {
    let reply = aws.ec2(
        &Params::action("DescribeVolumes")
            .filter(&format!("tag:{KEY_TAG}"), key)
            .0,
    )?;
    Ok(reply
        .items("volumeSet")
        .filter(|v| {
            v.items("attachmentSet").next().is_none()
                || v.items("attachmentSet").any(|a| a.text("device") == DEVICE)
        })
        .map(|v| v.text("volumeId").to_owned())
        .collect())
}

enum Stage {
    /// Not yet: what is being waited for.
    Waiting(String),
    /// The appliance was launched; here it is.
    Appliance(Node),
}

/// Move the transfer on as far as it goes now: snapshot a base volume,
/// then launch the appliance. Idempotent under the transfer's key.
fn advance(aws: &Aws, transfer: &Transfer) -> Result<Stage, ProviderError> {
    if let Some(instance) = appliance(aws, &transfer.key)? {
        return Ok(Stage::Appliance(instance));
    }
    let snapshot = match &transfer.base {
        Some(volume) if volume.starts_with("vol-") => {
            match staging(aws, &transfer.key, "transfer")?.into_iter().next() {
                Some(s) if s.text("status") == "completed" => Some(s.text("snapshotId").to_owned()),
                Some(s) => {
                    return Ok(Stage::Waiting(format!(
                        "snapshot {} of base volume {volume} is {}",
                        s.text("snapshotId"),
                        s.text("status")
                    )));
                }
                None => {
                    let tags = vec![
                        (KEY_TAG.to_owned(), transfer.key.clone()),
                        (STAGING_TAG.to_owned(), "transfer".to_owned()),
                        (
                            "Name".to_owned(),
                            format!("rebound staging {}", short(&transfer.key)),
                        ),
                    ];
                    aws.ec2(
                        &Params::action("CreateSnapshot")
                            .set("VolumeId", volume.clone())
                            .set(
                                "Description",
                                format!("Rebound: base of an import onto {volume}"),
                            )
                            .tag_spec("snapshot", &tags)
                            .0,
                    )?;
                    return Ok(Stage::Waiting(format!("snapshotting base volume {volume}")));
                }
            }
        }
        other => other.clone(),
    };
    launch(aws, transfer, snapshot.as_deref())?;
    Ok(Stage::Waiting("launching the mover appliance".into()))
}

fn launch(aws: &Aws, transfer: &Transfer, snapshot: Option<&str>) -> Result<(), ProviderError> {
    let image_name = site::get(&aws.site, "mover_image").unwrap_or_else(|| "rebound-mover".into());
    let images = aws.ec2(
        &Params::action("DescribeImages")
            .set("Owner.1", "self")
            .filter("name", &image_name)
            .0,
    )?;
    let image = images
        .items("imagesSet")
        .next()
        .map(|i| i.text("imageId").to_owned())
        .ok_or_else(|| {
            ProviderError::InvalidRequest(format!(
                "site '{}' has no AMI named '{image_name}' in region {}; register the Rebound \
                 mover appliance's AMI there (or set `mover_image`)",
                aws.site, aws.region
            ))
        })?;
    let mut gib = transfer.size_bytes.div_ceil(GIB);
    if let Some(snap) = snapshot {
        gib = gib.max(base_size(aws, snap)?.unwrap_or(0));
    }
    let mode = if transfer.export { "export" } else { "import" };
    let tags = vec![
        (KEY_TAG.to_owned(), transfer.key.clone()),
        (MODE_TAG.to_owned(), mode.to_owned()),
        (
            "Name".to_owned(),
            format!("rebound-mover-{}", short(&transfer.key)),
        ),
    ];
    let mut run = Params::action("RunInstances")
        .set("ImageId", image)
        .set(
            "InstanceType",
            site::get(&aws.site, "mover_instance_type").unwrap_or_else(|| "t3.small".into()),
        )
        .set("MinCount", "1")
        .set("MaxCount", "1")
        .set("ClientToken", short(&transfer.key))
        .set(
            "UserData",
            appliance::user_data(&aws.appliance_token(&transfer.key)),
        )
        .set("BlockDeviceMapping.1.DeviceName", DEVICE)
        .set("BlockDeviceMapping.1.Ebs.VolumeSize", gib.to_string())
        .set("BlockDeviceMapping.1.Ebs.VolumeType", "gp3")
        .set(
            "BlockDeviceMapping.1.Ebs.DeleteOnTermination",
            transfer.export.to_string(),
        )
        .tag_spec("instance", &tags)
        // The volumes too, so that a discarded import's is found once its
        // appliance is gone.
        .tag_spec(
            "volume",
            &[
                (KEY_TAG.to_owned(), transfer.key.clone()),
                (
                    "Name".to_owned(),
                    format!("rebound-{mode}-{}", short(&transfer.key)),
                ),
            ],
        );
    if let Some(snap) = snapshot {
        run = run.set("BlockDeviceMapping.1.Ebs.SnapshotId", snap);
    }
    if let Some(subnet) =
        site::get(&aws.site, "mover_subnet").or_else(|| site::get(&aws.site, "subnet"))
    {
        run = run.set("SubnetId", subnet);
    }
    if let Some(group) = site::get(&aws.site, "mover_security_group")
        .or_else(|| site::get(&aws.site, "security_group"))
    {
        run = run.set("SecurityGroupId.1", group);
    }
    aws.ec2(&run.0)?;
    Ok(())
}

/// The appliance launched under `key` (not terminated), if any.
fn appliance(aws: &Aws, key: &str) -> Result<Option<Node>, ProviderError> {
    Ok(ec2::keyed_instances(aws, key)?
        .into_iter()
        .find(|i| i.tag(MODE_TAG).is_some()))
}

/// The staging snapshots made under `key` for `purpose` (`transfer` for
/// an appliance's base, `materialize` for a launch from volumes).
pub fn staging(aws: &Aws, key: &str, purpose: &str) -> Result<Vec<Node>, ProviderError> {
    Ok(ec2::keyed_snapshots(aws, key)?
        .into_iter()
        .filter(|s| s.tag(STAGING_TAG).as_deref() == Some(purpose))
        .collect())
}

/// The size in GiB of snapshot or volume `id`; `None` when it is not there.
fn base_size(aws: &Aws, id: &str) -> Result<Option<u64>, ProviderError> {
    let (action, field, set) = if id.starts_with("vol-") {
        ("DescribeVolumes", "VolumeId.1", "volumeSet")
    } else if id.starts_with("snap-") {
        ("DescribeSnapshots", "SnapshotId.1", "snapshotSet")
    } else {
        return Ok(None);
    };
    match aws.ec2(&Params::action(action).set(field, id).0) {
        Ok(reply) => Ok(reply.items(set).next().map(|n| {
            n.text(if set == "volumeSet" {
                "size"
            } else {
                "volumeSize"
            })
            .parse()
            .unwrap_or(0)
        })),
        Err(ProviderError::NotFound(_) | ProviderError::InvalidRequest(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

fn gib_of(snapshot: &Node) -> u64 {
    snapshot.text("volumeSize").parse().unwrap_or(0)
}

/// A short, stable name for a key (client tokens allow 64 characters).
pub fn short(key: &str) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..12])
}

/// Delete the staging snapshots of the transfer under `key` (gone already
/// counts as deleted).
fn delete_staging(aws: &Aws, key: &str, removed: &mut Vec<String>) -> Result<(), ProviderError> {
    for snap in staging(aws, key, "transfer")? {
        crate::launch::delete_snapshot(aws, snap.text("snapshotId"), removed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Transfer;

    #[test]
    fn handles_round_trip_keys_with_colons() {
        let t = Transfer {
            export: false,
            size_bytes: 8 << 30,
            base: Some("vol-0abc".into()),
            key: "run:1/step/import/0".into(),
        };
        let back = Transfer::parse(&t.id()).expect("parse");
        assert_eq!(back.id(), t.id());
        assert_eq!(back.key, "run:1/step/import/0");
        assert!(Transfer::parse("import:x:-:k").is_err());
        assert!(Transfer::parse("move:1:-:k").is_err());
    }
}

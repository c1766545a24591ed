//! Instances: materialize (an AMI registered from the point's boot
//! snapshot, RunInstances with the point's snapshots mapped and the
//! idempotency key as ClientToken and tag; imported volumes are snapshotted
//! first and launched from once those complete), fence/unfence (Stop/Start with
//! the fencing epoch tagged), and cleanup: drill sandboxes, points, the
//! standby instances of a failed run (only those materialize tagged; their
//! AMIs and staging snapshots with them, never the volumes they were made
//! from), and — through `transfer.rs` — transfers and discarded imports.

use sha2::{Digest, Sha256};

use rebound_plugin_sdk::{
    CleanupReport, CleanupRequest, CleanupScope, DiskSource, FenceReport, FenceRequest,
    MaterializeRequest, Materialized, Operation, OperationKind, OperationState, Outcome,
    PowerState, ProviderError, Running, site,
};

use crate::client::{Aws, Params, connect};
use crate::ec2::{self, KEY_TAG};
use crate::points;
use crate::transfer::{MODE_TAG, STAGING_TAG, staging};
use crate::xml::Node;

fn token(key: &str) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..24])
}

/// Device names: the boot disk first, as AMIs name their root device.
const DEVICES: &[&str] = &[
    "/dev/sda1",
    "/dev/sdb",
    "/dev/sdc",
    "/dev/sdd",
    "/dev/sde",
    "/dev/sdf",
];

/// What to launch, from a materialize request or (for a launch that waits
/// on staging snapshots) from the tags it left on them.
struct Launch {
    key: String,
    name: String,
    kind: String,
    subnet: Option<String>,
    group: Option<String>,
    labels: Vec<(String, String)>,
    start: bool,
}

const GROUP_TAG: &str = "rebound:group";
const START_TAG: &str = "rebound:start";

impl Launch {
    fn of(req: &MaterializeRequest) -> Self {
        let subnet = if req.isolated {
            site::get(&req.site, "isolated_subnet")
        } else {
            req.spec
                .nics
                .first()
                .and_then(|n| req.networks.iter().find(|m| m.source_network == n.network))
                .map(|m| m.target_network.clone())
                .or_else(|| site::get(&req.site, "subnet"))
        };
        let group = site::get(
            &req.site,
            if req.isolated {
                "isolated_security_group"
            } else {
                "security_group"
            },
        );
        Self {
            key: req.key.clone(),
            name: req.spec.name.clone(),
            kind: ec2::type_for(req.spec.cpus, req.spec.memory_mib).to_owned(),
            subnet,
            group,
            labels: req.spec.labels.clone(),
            start: req.start,
        }
    }

    fn tags(&self) -> Vec<(String, String)> {
        let mut tags: Vec<(String, String)> = vec![
            (ec2::NAME_TAG.into(), self.name.clone()),
            (ec2::TYPE_TAG.into(), self.kind.clone()),
            (ec2::LABELS_TAG.into(), ec2::encode_labels(&self.labels)),
            (START_TAG.into(), self.start.to_string()),
        ];
        tags.extend(self.subnet.clone().map(|s| (ec2::SUBNET_TAG.into(), s)));
        tags.extend(self.group.clone().map(|g| (GROUP_TAG.into(), g)));
        tags
    }

    fn from_tags(key: &str, snapshot: &Node) -> Self {
        let tag = |k: &str| snapshot.tag(k).filter(|v| !v.is_empty());
        Self {
            key: key.to_owned(),
            name: tag(ec2::NAME_TAG).unwrap_or_default(),
            kind: tag(ec2::TYPE_TAG).unwrap_or_else(|| "t3.small".into()),
            subnet: tag(ec2::SUBNET_TAG),
            group: tag(GROUP_TAG),
            labels: ec2::decode_labels(&tag(ec2::LABELS_TAG).unwrap_or_default()),
            start: tag(START_TAG).as_deref() != Some("false"),
        }
    }

    /// Register an AMI from `snaps` (boot disk first) and run the
    /// instance; both found again by the key's tag on a repeated call.
    fn run(&self, aws: &Aws, snaps: &[Node]) -> Result<String, ProviderError> {
        let mut tags: Vec<(String, String)> = vec![
            ("Name".into(), self.name.clone()),
            (KEY_TAG.into(), self.key.clone()),
        ];
        tags.extend(self.labels.iter().filter(|(k, _)| k != "Name").cloned());
        // The boot disk's snapshot becomes an AMI, as on AWS an instance
        // boots only from an image; found again by its tag on a repeated call.
        let images = aws.ec2(
            &Params::action("DescribeImages")
                .set("Owner.1", "self")
                .filter(&format!("tag:{KEY_TAG}"), &self.key)
                .0,
        )?;
        let mapping = |p: Params| {
            snaps.iter().enumerate().fold(p, |p, (i, s)| {
                p.set(
                    format!("BlockDeviceMapping.{}.DeviceName", i + 1),
                    DEVICES[i.min(DEVICES.len() - 1)],
                )
                .set(
                    format!("BlockDeviceMapping.{}.Ebs.SnapshotId", i + 1),
                    s.text("snapshotId"),
                )
                .set(
                    format!("BlockDeviceMapping.{}.Ebs.DeleteOnTermination", i + 1),
                    "true",
                )
            })
        };
        let image = match images.items("imagesSet").next() {
            Some(i) => i.text("imageId").to_owned(),
            None => {
                let reply = aws.ec2(
                    &mapping(Params::action("RegisterImage"))
                        .set("Name", format!("rebound-{}", token(&self.key)))
                        .set("RootDeviceName", DEVICES[0])
                        .set("VirtualizationType", "hvm")
                        .set("Architecture", "x86_64")
                        .0,
                )?;
                let image = reply.text("imageId").to_owned();
                ec2::tag(aws, std::slice::from_ref(&image), &tags)?;
                image
            }
        };
        let mut run = mapping(Params::action("RunInstances"))
            .set("ImageId", image)
            .set("InstanceType", self.kind.clone())
            .set("MinCount", "1")
            .set("MaxCount", "1")
            .set("ClientToken", token(&self.key))
            .tag_spec("instance", &tags);
        if let Some(subnet) = &self.subnet {
            run = run.set("SubnetId", subnet.clone());
        }
        if let Some(group) = &self.group {
            run = run.set("SecurityGroupId.1", group.clone());
        }
        let reply = aws.ec2(&run.0)?;
        let mut found = Vec::new();
        reply.all("instanceId", &mut found);
        let id = found
            .first()
            .map(|n| n.text.trim().to_owned())
            .ok_or_else(|| {
                ProviderError::ProviderFailed("RunInstances returned no instance".into())
            })?;
        if !self.start {
            aws.ec2(
                &Params::action("StopInstances")
                    .set("InstanceId.1", id.clone())
                    .0,
            )?;
        }
        Ok(id)
    }
}

/// The instance launched under `key`, if any.
fn launched(aws: &Aws, key: &str) -> Result<Option<Node>, ProviderError> {
    Ok(ec2::keyed_instances(aws, key)?.into_iter().next())
}

pub fn materialize(req: MaterializeRequest) -> Result<Operation, ProviderError> {
    let aws = connect(&req.site)?;
    let suffix = if req.start { "" } else { ":stopped" };
    if let Some(instance) = launched(&aws, &req.key)? {
        return Ok(op(
            OperationKind::Materialize,
            &req.site,
            format!("{}{suffix}", instance.text("instanceId")),
        ));
    }
    let launch = Launch::of(&req);
    let snaps = match &req.source {
        DiskSource::RecoveryPoint(point) => {
            let snaps = points::ordered(points::snapshots(&aws, point)?);
            if snaps.is_empty() {
                return Err(ProviderError::NotFound(format!(
                    "recovery point '{point}' on site '{}'",
                    req.site
                )));
            }
            if let Some(s) = snaps.iter().find(|s| s.text("status") != "completed") {
                return Err(ProviderError::Conflict(format!(
                    "snapshot {} of '{point}' is {}, not completed",
                    s.text("snapshotId"),
                    s.text("status")
                )));
            }
            snaps
        }
        DiskSource::Volumes(volumes) => {
            stage(&aws, &req, volumes, &launch)?;
            return Ok(op(
                OperationKind::Materialize,
                &req.site,
                format!("{STAGED}{}", req.key),
            ));
        }
    };
    let id = launch.run(&aws, &snaps)?;
    Ok(op(
        OperationKind::Materialize,
        &req.site,
        format!("{id}{suffix}"),
    ))
}

/// A materialize handle that waits on staging snapshots: `staged:KEY`.
const STAGED: &str = "staged:";

/// Snapshot each imported volume (an instance boots only from an AMI, and
/// an AMI is made of snapshots), tagged with the key, the disk's order and
/// what to launch once they complete. Idempotent: a volume snapshotted
/// already is skipped.
fn stage(
    aws: &Aws,
    req: &MaterializeRequest,
    volumes: &[String],
    launch: &Launch,
) -> Result<(), ProviderError> {
    if volumes.is_empty() {
        return Err(ProviderError::InvalidRequest(
            "materialize needs at least one volume".into(),
        ));
    }
    let done = staged(aws, &req.key)?;
    for (i, volume) in volumes.iter().enumerate() {
        if done
            .iter()
            .any(|s| s.tag(ec2::DISK_TAG).as_deref() == Some(volume.as_str()))
        {
            continue;
        }
        let mut tags = launch.tags();
        tags.extend([
            (KEY_TAG.to_owned(), req.key.clone()),
            (STAGING_TAG.to_owned(), "materialize".to_owned()),
            (ec2::DISK_TAG.to_owned(), volume.clone()),
            (
                ec2::DEVICE_TAG.to_owned(),
                DEVICES[i.min(DEVICES.len() - 1)].to_owned(),
            ),
            (
                ec2::BOOT_TAG.to_owned(),
                if i == 0 { "1".into() } else { String::new() },
            ),
            (
                "Name".to_owned(),
                format!("{} disk {i} (rebound)", launch.name),
            ),
        ]);
        aws.ec2(
            &Params::action("CreateSnapshot")
                .set("VolumeId", volume.clone())
                .set(
                    "Description",
                    format!("Rebound: disk {i} of {} to launch", launch.name),
                )
                .tag_spec("snapshot", &tags)
                .0,
        )?;
    }
    Ok(())
}

/// The staging snapshots of materialize `key`, boot disk first.
fn staged(aws: &Aws, key: &str) -> Result<Vec<Node>, ProviderError> {
    Ok(points::ordered(staging(aws, key, "materialize")?))
}

fn op(kind: OperationKind, site: &str, id: String) -> Operation {
    Operation {
        kind,
        site: site.to_owned(),
        id,
    }
}

pub fn materialize_status(op: &Operation) -> Result<OperationState, ProviderError> {
    let aws = connect(&op.site)?;
    let (id, stopped) = match op.id.strip_suffix(":stopped") {
        Some(id) => (id.to_owned(), true),
        None => (op.id.clone(), false),
    };
    let (id, stopped) = match id.strip_prefix(STAGED) {
        None => (id, stopped),
        Some(key) => {
            let snaps = staged(&aws, key)?;
            let Some(first) = snaps.first() else {
                return Ok(OperationState::Failed(ProviderError::NotFound(format!(
                    "the staging snapshots of '{key}' are gone from site '{}'",
                    op.site
                ))));
            };
            let launch = Launch::from_tags(key, first);
            let id = match launched(&aws, key)? {
                Some(instance) => instance.text("instanceId").to_owned(),
                None => {
                    if let Some(s) = snaps.iter().find(|s| s.text("status") != "completed") {
                        return Ok(OperationState::Running(Running {
                            percent: None,
                            detail: format!(
                                "snapshot {} of imported volume {} is {}",
                                s.text("snapshotId"),
                                s.tag(ec2::DISK_TAG).unwrap_or_default(),
                                s.text("status")
                            ),
                        }));
                    }
                    launch.run(&aws, &snaps)?
                }
            };
            (id, !launch.start)
        }
    };
    let id = id.as_str();
    let instance = ec2::instance(&aws, id)?;
    let want = if stopped { "stopped" } else { "running" };
    let state = instance.text("instanceState/name");
    if state != want {
        return Ok(OperationState::Running(Running {
            percent: None,
            detail: format!("instance {id} is {state}"),
        }));
    }
    let workload = ec2::workload(&instance, &ec2::volume_sizes(&aws)?);
    let addresses = workload
        .spec
        .nics
        .iter()
        .flat_map(|n| n.ips.clone())
        .collect();
    Ok(OperationState::Succeeded(Outcome::Materialized(
        Materialized {
            workload,
            addresses,
        },
    )))
}

pub fn fence(req: FenceRequest, fence: bool) -> Result<Operation, ProviderError> {
    let aws = connect(&req.site)?;
    let instance = ec2::instance(&aws, &req.workload_id)?;
    let recorded: u64 = instance
        .tag(ec2::EPOCH_TAG)
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);
    if !fence && recorded > req.epoch {
        return Err(ProviderError::Conflict(format!(
            "instance {} was fenced under epoch {recorded}; unfence under epoch {} is stale",
            req.workload_id, req.epoch
        )));
    }
    ec2::tag(
        &aws,
        std::slice::from_ref(&req.workload_id),
        &[
            (ec2::EPOCH_TAG.into(), req.epoch.max(recorded).to_string()),
            (ec2::FENCED_TAG.into(), fence.to_string()),
        ],
    )?;
    let action = if fence {
        "StopInstances"
    } else {
        "StartInstances"
    };
    let state = instance.text("instanceState/name");
    let already = if fence {
        matches!(state, "stopped" | "stopping")
    } else {
        matches!(state, "running" | "pending")
    };
    if !already {
        aws.ec2(
            &Params::action(action)
                .set("InstanceId.1", req.workload_id.clone())
                .0,
        )?;
    }
    let kind = if fence {
        OperationKind::Fence
    } else {
        OperationKind::Unfence
    };
    Ok(op(
        kind,
        &req.site,
        format!("{}:{}", req.workload_id, req.epoch.max(recorded)),
    ))
}

pub fn fence_status(op: &Operation, fence: bool) -> Result<OperationState, ProviderError> {
    let aws = connect(&op.site)?;
    let (id, epoch) = op.id.rsplit_once(':').ok_or_else(|| {
        ProviderError::InvalidRequest(format!("'{}' is not a fence handle", op.id))
    })?;
    let instance = ec2::instance(&aws, id)?;
    let power = ec2::power(&instance);
    let state = instance.text("instanceState/name");
    let done = if fence {
        state == "stopped"
    } else {
        power == PowerState::Running
    };
    if !done {
        return Ok(OperationState::Running(Running {
            percent: None,
            detail: format!("instance {id} is {state}"),
        }));
    }
    Ok(OperationState::Succeeded(Outcome::Fenced(FenceReport {
        workload_id: id.to_owned(),
        epoch: epoch.parse().unwrap_or(0),
        write_blocked: fence,
    })))
}

/// Cleanup: terminations and deletions are accepted at once, but for a
/// volume still attached to an instance that is shutting down — EC2 refuses
/// to delete it (`VolumeInUse`) until it detaches, as after a drill's
/// instances, a standby or a transfer's appliance are terminated. Such a
/// volume is pending, and `status` deletes it once it can. The handle
/// carries what was removed and what is pending: `removed;pending`, each a
/// list joined by `,` (escaped in an id: a discarded import's operation id
/// holds its key).
pub fn cleanup(req: CleanupRequest) -> Result<Operation, ProviderError> {
    let aws = connect(&req.site)?;
    let mut removed = Vec::new();
    let mut pending = Vec::new();
    match &req.scope {
        CleanupScope::Drill(sandbox) => drill(&aws, sandbox, &mut removed, &mut pending)?,
        CleanupScope::RecoveryPoints(ids) => {
            for id in ids {
                // A point the host's data mover wrote is its imported
                // volumes; one this plugin made, its tagged snapshots.
                if id.starts_with("vol-") {
                    delete_volume(&aws, id, &mut removed, &mut pending)?;
                    continue;
                }
                // Reported by the point's id once its snapshots are gone.
                let mut snapshots = Vec::new();
                for s in points::snapshots(&aws, id)? {
                    delete_snapshot(&aws, s.text("snapshotId"), &mut snapshots)?;
                }
                removed.push(id.clone());
            }
        }
        CleanupScope::Transfers(ids) => crate::transfer::release(&aws, ids, &mut removed)?,
        CleanupScope::Workloads(ids) => workloads(&aws, ids, &mut removed, &mut pending)?,
        CleanupScope::DiscardedImports(ids) => {
            crate::transfer::discard(&aws, ids, &mut removed, &mut pending)?;
        }
    }
    let id = format!("{};{}", join(&removed), join(&pending));
    Ok(op(OperationKind::Cleanup, &req.site, id))
}

/// `ids` joined by `,`, with `%`, `,` and `;` escaped in each.
fn join(ids: &[String]) -> String {
    ids.iter()
        .map(|id| {
            id.replace('%', "%25")
                .replace(',', "%2C")
                .replace(';', "%3B")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The ids [`join`] joined. (A handle made before ids were escaped holds
/// no `%`: EC2's ids have none.)
fn split(joined: &str) -> Vec<String> {
    joined
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.replace("%3B", ";")
                .replace("%2C", ",")
                .replace("%25", "%")
        })
        .collect()
}

/// The instance `id` in whatever state, terminated included; `None` when
/// EC2 does not know it (gone long enough to be forgotten, or never there).
fn described(aws: &Aws, id: &str) -> Result<Option<Node>, ProviderError> {
    let reply = match aws.ec2(
        &Params::action("DescribeInstances")
            .set("InstanceId.1", id)
            .0,
    ) {
        Ok(reply) => reply,
        Err(ProviderError::NotFound(_)) => return Ok(None),
        Err(ProviderError::InvalidRequest(e)) => {
            return Err(ProviderError::InvalidRequest(format!(
                "'{id}' is no instance of site '{}', so it was not materialized by Rebound; \
                 nothing was removed ({e})",
                aws.site
            )));
        }
        Err(e) => return Err(e),
    };
    Ok(reply
        .items("reservationSet")
        .flat_map(|r| r.items("instancesSet"))
        .find(|i| i.text("instanceId") == id)
        .cloned())
}

/// A failed run's standby instances, by the ids `materialize` answered.
/// Every id is looked up before anything is removed: an instance that
/// materialize did not tag with its key (or a mover appliance, which
/// carries a key too) refuses the whole cleanup with `invalid-request`. One
/// EC2 no longer knows, or terminated, is removed already. The others are
/// terminated, and the volumes materialize made for them — the clones of
/// the point's (or the staging) snapshots, every one mapped delete-on-
/// termination — are deleted with them: pending while they detach, as a
/// drill's are. A volume attached otherwise (not delete-on-termination:
/// materialize attaches none, it copies imported volumes through staging
/// snapshots) is detached by the termination and stays, as do the imported
/// volumes and the point's snapshots. Then each one's AMI is deregistered
/// and the staging snapshots it was launched from deleted (by its key, for
/// a terminated one too).
fn workloads(
    aws: &Aws,
    ids: &[String],
    removed: &mut Vec<String>,
    pending: &mut Vec<String>,
) -> Result<(), ProviderError> {
    let mut live = Vec::new();
    let mut keys = Vec::new();
    for id in ids {
        let Some(instance) = described(aws, id)? else {
            continue;
        };
        let terminated = instance.text("instanceState/name") == "terminated";
        let key = instance
            .tag(KEY_TAG)
            .filter(|k| !k.is_empty() && instance.tag(MODE_TAG).is_none());
        match key {
            Some(key) => keys.push(key),
            None if terminated => continue,
            None => {
                return Err(ProviderError::InvalidRequest(format!(
                    "instance '{id}' on site '{}' was not materialized by Rebound (materialize \
                     tags its instances with {KEY_TAG}; this one {}); nothing was removed",
                    aws.site,
                    if instance.tag(MODE_TAG).is_some() {
                        "is a mover appliance"
                    } else {
                        "has no such tag"
                    }
                )));
            }
        }
        if !terminated && !live.iter().any(|i: &Node| i.text("instanceId") == id) {
            live.push(instance);
        }
    }
    let made: Vec<String> = live
        .iter()
        .flat_map(|i| i.items("blockDeviceMapping"))
        .filter(|m| m.text("ebs/deleteOnTermination") == "true")
        .map(|m| m.text("ebs/volumeId").to_owned())
        .filter(|v| !v.is_empty())
        .collect();
    terminate(aws, &live)?;
    for id in ids {
        if !removed.contains(id) {
            removed.push(id.clone());
        }
    }
    for volume in made {
        delete_volume(aws, &volume, removed, pending)?;
    }
    for key in keys {
        deregister_images(aws, &format!("tag:{KEY_TAG}"), &key, removed)?;
        for snap in staged(aws, &key)? {
            delete_snapshot(aws, snap.text("snapshotId"), removed)?;
        }
    }
    Ok(())
}

/// Delete volume `id`: removed when it is gone, pending while it is still
/// attached (`VolumeInUse`, a `conflict`).
pub(crate) fn delete_volume(
    aws: &Aws,
    id: &str,
    removed: &mut Vec<String>,
    pending: &mut Vec<String>,
) -> Result<(), ProviderError> {
    match aws.ec2(&Params::action("DeleteVolume").set("VolumeId", id).0) {
        Ok(_) | Err(ProviderError::NotFound(_)) => removed.push(id.to_owned()),
        Err(ProviderError::Conflict(_)) => pending.push(id.to_owned()),
        Err(e) => return Err(e),
    }
    Ok(())
}

fn delete(
    aws: &Aws,
    action: &str,
    field: &str,
    id: &str,
    removed: &mut Vec<String>,
) -> Result<(), ProviderError> {
    match aws.ec2(&Params::action(action).set(field, id).0) {
        Ok(_) | Err(ProviderError::NotFound(_)) => {
            removed.push(id.to_owned());
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Delete snapshot `id` (gone already counts as deleted).
pub(crate) fn delete_snapshot(
    aws: &Aws,
    id: &str,
    removed: &mut Vec<String>,
) -> Result<(), ProviderError> {
    delete(aws, "DeleteSnapshot", "SnapshotId", id, removed)
}

fn drill(
    aws: &Aws,
    sandbox: &str,
    removed: &mut Vec<String>,
    pending: &mut Vec<String>,
) -> Result<(), ProviderError> {
    let label = format!("tag:{}", "rebound/drill");
    let instances = ec2::instances(
        aws,
        Params::action("DescribeInstances").filter(&label, sandbox),
    )?;
    let volumes: Vec<String> = instances
        .iter()
        .flat_map(|i| {
            i.items("blockDeviceMapping")
                .map(|m| m.text("ebs/volumeId").to_owned())
        })
        .collect();
    removed.extend(terminate(aws, &instances)?);
    for v in volumes {
        // Those deleted on termination go with their instance (gone, or
        // pending until it has shut down); the others are deleted.
        delete_volume(aws, &v, removed, pending)?;
    }
    deregister_images(aws, &label, sandbox, removed)?;
    // The snapshots a sandbox was launched from, when it was launched from
    // imported volumes.
    let staged = aws.ec2(
        &Params::action("DescribeSnapshots")
            .set("Owner.1", "self")
            .filter("tag-key", STAGING_TAG)
            .0,
    )?;
    for snap in staged.items("snapshotSet") {
        let labels = ec2::decode_labels(&snap.tag(ec2::LABELS_TAG).unwrap_or_default());
        if labels
            .iter()
            .any(|(k, v)| k == "rebound/drill" && v == sandbox)
        {
            delete_snapshot(aws, snap.text("snapshotId"), removed)?;
        }
    }
    Ok(())
}

pub fn cleanup_status(op: &Operation) -> Result<OperationState, ProviderError> {
    let (removed, pending) = op.id.split_once(';').unwrap_or((&op.id, ""));
    let mut removed = split(removed);
    let pending = split(pending);
    if !pending.is_empty() {
        let aws = connect(&op.site)?;
        let mut attached = Vec::new();
        for volume in &pending {
            delete_volume(&aws, volume, &mut removed, &mut attached)?;
        }
        if !attached.is_empty() {
            return Ok(OperationState::Running(Running {
                percent: None,
                detail: format!(
                    "volumes {} are still attached to instances shutting down; they are deleted \
                     once detached",
                    attached.join(", ")
                ),
            }));
        }
    }
    Ok(OperationState::Succeeded(Outcome::Cleaned(CleanupReport {
        removed,
    })))
}

/// Deregister this account's images whose `filter` is `value`.
fn deregister_images(
    aws: &Aws,
    filter: &str,
    value: &str,
    removed: &mut Vec<String>,
) -> Result<(), ProviderError> {
    let images = aws.ec2(
        &Params::action("DescribeImages")
            .set("Owner.1", "self")
            .filter(filter, value)
            .0,
    )?;
    for image in images.items("imagesSet") {
        delete(
            aws,
            "DeregisterImage",
            "ImageId",
            image.text("imageId"),
            removed,
        )?;
    }
    Ok(())
}

/// Terminate `instances` in one request (none: no request); their ids.
pub(crate) fn terminate(aws: &Aws, instances: &[Node]) -> Result<Vec<String>, ProviderError> {
    let ids: Vec<String> = instances
        .iter()
        .map(|i| i.text("instanceId").to_owned())
        .collect();
    if !ids.is_empty() {
        aws.ec2(
            &Params::action("TerminateInstances")
                .list("InstanceId", &ids)
                .0,
        )?;
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::{join, split};

    #[test]
    fn handle_lists_keep_ids_with_separators() {
        let ids = vec![
            "i-0abc".to_owned(),
            "import:1073741824:-:run,1;step%2C".to_owned(),
            "vol-1".to_owned(),
        ];
        let joined = join(&ids);
        assert!(!joined.contains(';'), "{joined}");
        assert_eq!(split(&joined), ids);
        assert_eq!(split("i-1,vol-2"), ["i-1", "vol-2"]);
        assert!(split("").is_empty());
    }
}

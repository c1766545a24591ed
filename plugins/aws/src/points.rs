//! Recovery points as tagged EBS snapshots: one snapshot per volume, all
//! tagged with the point's id (derived from the idempotency key, since
//! CreateSnapshot takes no client token), the workload, the disk and the
//! spec at capture. Native replication is CopySnapshot into the other
//! site's region; changed blocks come from EBS direct ListChangedBlocks.

use sha2::{Digest, Sha256};

use rebound_plugin_sdk::{
    ByteRange, ChangedBlocksRequest, Consistency, DiskCopy, NicSpec, Operation, OperationKind,
    OperationState, Outcome, ProviderError, RecoveryPoint, ReplicateRequest, Running,
    SnapshotRequest, VmSpec, site,
};

use crate::client::{Aws, Params, connect};
use crate::ec2::{self, GIB};
use crate::xml::Node;

/// A point's id on a site: stable under the idempotency key.
pub fn point_id(key: &str) -> String {
    format!("rp-{}", &hex::encode(Sha256::digest(key.as_bytes()))[..17])
}

/// The snapshots of point `id` on the site.
pub fn snapshots(aws: &Aws, id: &str) -> Result<Vec<Node>, ProviderError> {
    let reply = aws.ec2(
        &Params::action("DescribeSnapshots")
            .set("Owner.1", "self")
            .filter(&format!("tag:{}", ec2::POINT_TAG), id)
            .0,
    )?;
    Ok(reply.items("snapshotSet").cloned().collect())
}

pub fn snapshot(req: SnapshotRequest) -> Result<Operation, ProviderError> {
    let aws = connect(&req.site)?;
    let id = point_id(&req.key);
    let done = snapshots(&aws, &id)?;
    let instance = ec2::instance(&aws, &req.workload_id)?;
    let sizes = ec2::volume_sizes(&aws)?;
    let workload = ec2::workload(&instance, &sizes);
    let spec = &workload.spec;
    let captured = site::now_ms().to_string();
    let count = spec.disks.len().to_string();
    for disk in &spec.disks {
        if done
            .iter()
            .any(|s| s.tag(ec2::DISK_TAG).as_deref() == Some(&disk.id))
        {
            continue;
        }
        let tags: Vec<(String, String)> = [
            (ec2::POINT_TAG, id.clone()),
            (ec2::KEY_TAG, req.key.clone()),
            (ec2::WORKLOAD_TAG, workload.id.clone()),
            (ec2::DISK_TAG, disk.id.clone()),
            (ec2::DEVICE_TAG, disk.name.clone()),
            (
                ec2::BOOT_TAG,
                disk.boot_order.map(|b| b.to_string()).unwrap_or_default(),
            ),
            (ec2::DISKS_TAG, count.clone()),
            (ec2::CAPTURED_TAG, captured.clone()),
            (ec2::NAME_TAG, spec.name.clone()),
            (ec2::TYPE_TAG, instance.text("instanceType").to_owned()),
            (
                ec2::SUBNET_TAG,
                spec.nics
                    .first()
                    .map(|n| n.network.clone())
                    .unwrap_or_default(),
            ),
            (ec2::LABELS_TAG, ec2::encode_labels(&spec.labels)),
            (
                "Name",
                format!("{} {} (rebound {id})", spec.name, disk.name),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        aws.ec2(
            &Params::action("CreateSnapshot")
                .set("VolumeId", disk.id.clone())
                .set(
                    "Description",
                    format!("Rebound recovery point {id} of {}", workload.id),
                )
                .tag_spec("snapshot", &tags)
                .0,
        )?;
    }
    Ok(Operation {
        kind: OperationKind::Snapshot,
        site: req.site,
        id,
    })
}

pub fn replicate(req: ReplicateRequest) -> Result<Operation, ProviderError> {
    let source = connect(&req.source_site)?;
    let target = connect(&req.target_site)?;
    if source.region == target.region {
        return Err(ProviderError::InvalidRequest(format!(
            "sites '{}' and '{}' are both region {}; native replication copies to another region",
            req.source_site, req.target_site, source.region
        )));
    }
    let id = point_id(&req.key);
    let originals = snapshots(&source, &req.recovery_point_id)?;
    if originals.is_empty() {
        return Err(ProviderError::NotFound(format!(
            "recovery point '{}' on site '{}'",
            req.recovery_point_id, req.source_site
        )));
    }
    if let Some(s) = originals.iter().find(|s| s.text("status") != "completed") {
        return Err(ProviderError::Conflict(format!(
            "snapshot {} of recovery point '{}' is {}, not completed",
            s.text("snapshotId"),
            req.recovery_point_id,
            s.text("status")
        )));
    }
    let copies = snapshots(&target, &id)?;
    for original in &originals {
        let sid = original.text("snapshotId");
        if copies
            .iter()
            .any(|c| c.tag(ec2::SOURCE_TAG).as_deref() == Some(sid))
        {
            continue;
        }
        let mut tags: Vec<(String, String)> = original
            .tags()
            .into_iter()
            .filter(|(k, _)| k != ec2::POINT_TAG && k != ec2::KEY_TAG && k != ec2::SOURCE_TAG)
            .collect();
        tags.push((ec2::POINT_TAG.into(), id.clone()));
        tags.push((ec2::KEY_TAG.into(), req.key.clone()));
        tags.push((ec2::SOURCE_TAG.into(), sid.to_owned()));
        target.ec2(
            &Params::action("CopySnapshot")
                .set("SourceRegion", source.region.clone())
                .set("SourceSnapshotId", sid)
                .set(
                    "Description",
                    format!(
                        "Rebound copy of {} from {}",
                        req.recovery_point_id, source.region
                    ),
                )
                .tag_spec("snapshot", &tags)
                .0,
        )?;
    }
    Ok(Operation {
        kind: OperationKind::Replicate,
        site: req.target_site,
        id,
    })
}

/// The state of a snapshot or replicate operation: the point's snapshots.
pub fn status(op: &Operation) -> Result<OperationState, ProviderError> {
    let aws = connect(&op.site)?;
    let snaps = snapshots(&aws, &op.id)?;
    let expected: usize = snaps
        .first()
        .and_then(|s| s.tag(ec2::DISKS_TAG))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    if snaps.is_empty() {
        return Err(ProviderError::NotFound(format!(
            "recovery point '{}' on site '{}'",
            op.id, op.site
        )));
    }
    if let Some(s) = snaps.iter().find(|s| s.text("status") == "error") {
        return Ok(OperationState::Failed(ProviderError::ProviderFailed(
            format!(
                "snapshot {} of recovery point '{}' failed: {}",
                s.text("snapshotId"),
                op.id,
                s.text("stateMessage")
            ),
        )));
    }
    let pending: Vec<&Node> = snaps
        .iter()
        .filter(|s| s.text("status") != "completed")
        .collect();
    if !pending.is_empty() || snaps.len() < expected {
        let percent = pending
            .iter()
            .filter_map(|s| s.text("progress").trim_end_matches('%').parse::<u8>().ok())
            .min();
        return Ok(OperationState::Running(Running {
            percent,
            detail: format!(
                "{} of {expected} snapshot(s) completed",
                snaps.len() - pending.len()
            ),
        }));
    }
    Ok(OperationState::Succeeded(Outcome::RecoveryPoint(point(
        &op.id, &op.site, &snaps,
    ))))
}

/// A point's snapshots in disk order: the boot disk first, then by device.
pub fn ordered(mut snaps: Vec<Node>) -> Vec<Node> {
    snaps.sort_by_key(|s| {
        (
            s.tag(ec2::BOOT_TAG).filter(|b| !b.is_empty()).is_none(),
            s.tag(ec2::DEVICE_TAG).unwrap_or_default(),
        )
    });
    snaps
}

fn point(id: &str, site: &str, snaps: &[Node]) -> RecoveryPoint {
    let snaps = ordered(snaps.to_vec());
    let first = &snaps[0];
    let tag = |k: &str| first.tag(k).unwrap_or_default();
    let (cpus, memory_mib) = ec2::size_of(&tag(ec2::TYPE_TAG));
    let size = |s: &Node| s.text("volumeSize").parse::<u64>().unwrap_or(0) * GIB;
    RecoveryPoint {
        id: id.to_owned(),
        site: site.to_owned(),
        workload_id: tag(ec2::WORKLOAD_TAG),
        captured_at: tag(ec2::CAPTURED_TAG).parse().unwrap_or(0),
        consistency: Consistency::Crash,
        disks: snaps
            .iter()
            .map(|s| DiskCopy {
                disk_id: s.tag(ec2::DISK_TAG).unwrap_or_default(),
                copy_id: s.text("snapshotId").to_owned(),
                size_bytes: size(s),
            })
            .collect(),
        spec: VmSpec {
            name: tag(ec2::NAME_TAG),
            cpus,
            memory_mib,
            firmware: rebound_plugin_sdk::Firmware::Bios,
            disks: snaps
                .iter()
                .map(|s| rebound_plugin_sdk::DiskSpec {
                    id: s.tag(ec2::DISK_TAG).unwrap_or_default(),
                    name: s.tag(ec2::DEVICE_TAG).unwrap_or_default(),
                    size_bytes: size(s),
                    boot_order: s.tag(ec2::BOOT_TAG).and_then(|b| b.parse().ok()),
                })
                .collect(),
            nics: vec![NicSpec {
                network: tag(ec2::SUBNET_TAG),
                mac: None,
                ips: Vec::new(),
            }],
            labels: ec2::decode_labels(&tag(ec2::LABELS_TAG)),
        },
    }
}

/// The byte ranges of a disk that differ between two points, from EBS
/// direct's ListChangedBlocks (block granularity).
pub fn changed_blocks(req: ChangedBlocksRequest) -> Result<Vec<ByteRange>, ProviderError> {
    let aws = connect(&req.site)?;
    let of = |point: &str| -> Result<String, ProviderError> {
        snapshots(&aws, point)?
            .into_iter()
            .find(|s| s.tag(ec2::DISK_TAG).as_deref() == Some(req.disk_id.as_str()))
            .map(|s| s.text("snapshotId").to_owned())
            .ok_or_else(|| {
                ProviderError::NotFound(format!(
                    "disk '{}' in recovery point '{point}' on site '{}'",
                    req.disk_id, req.site
                ))
            })
    };
    let (first, second) = (of(&req.base)?, of(&req.target)?);
    let mut out: Vec<ByteRange> = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut path =
            format!("/snapshots/{second}/changedblocks?firstSnapshotId={first}&maxResults=10000");
        if let Some(t) = &token {
            path.push_str(&format!(
                "&pageToken={}",
                rebound_sigv4::uri_encode(t, false)
            ));
        }
        let page = aws.ebs_get(&path)?;
        let block = page["BlockSize"].as_u64().unwrap_or(524_288);
        for b in page["ChangedBlocks"].as_array().into_iter().flatten() {
            let Some(index) = b["BlockIndex"].as_u64() else {
                continue;
            };
            let offset = index * block;
            match out.last_mut() {
                Some(last) if last.offset + last.length == offset => last.length += block,
                _ => out.push(ByteRange {
                    offset,
                    length: block,
                }),
            }
        }
        token = page["NextToken"].as_str().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_ids_are_stable_per_key() {
        assert_eq!(point_id("run-1/step-2"), point_id("run-1/step-2"));
        assert_ne!(point_id("run-1/step-2"), point_id("run-1/step-3"));
        assert!(point_id("k").starts_with("rp-"));
    }
}

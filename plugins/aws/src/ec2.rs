//! EC2 instances as workloads: the neutral VM spec from an instance, its
//! volumes and tags, and back (instance types by size).

use std::collections::BTreeMap;

use rebound_plugin_sdk::{
    DiskSpec, Firmware, NicSpec, PowerState, ProviderError, VmSpec, Workload,
};

use crate::client::{Aws, Params};
use crate::xml::Node;

pub const GIB: u64 = 1 << 30;

/// Tags the plugin writes; never shown as workload labels.
pub const KEY_TAG: &str = "rebound:key";
pub const POINT_TAG: &str = "rebound:point";
pub const WORKLOAD_TAG: &str = "rebound:workload";
pub const DISK_TAG: &str = "rebound:disk";
pub const DEVICE_TAG: &str = "rebound:device";
pub const BOOT_TAG: &str = "rebound:boot";
pub const DISKS_TAG: &str = "rebound:disks";
pub const CAPTURED_TAG: &str = "rebound:captured";
pub const NAME_TAG: &str = "rebound:name";
pub const TYPE_TAG: &str = "rebound:type";
pub const SUBNET_TAG: &str = "rebound:subnet";
pub const LABELS_TAG: &str = "rebound:labels";
pub const SOURCE_TAG: &str = "rebound:source";
pub const EPOCH_TAG: &str = "rebound:epoch";
pub const FENCED_TAG: &str = "rebound:fenced";

/// (type, vCPUs, MiB), smallest first.
const TYPES: &[(&str, u32, u64)] = &[
    ("t3.micro", 2, 1024),
    ("t3.small", 2, 2048),
    ("t3.medium", 2, 4096),
    ("t3.large", 2, 8192),
    ("m5.xlarge", 4, 16384),
    ("m5.2xlarge", 8, 32768),
    ("m5.4xlarge", 16, 65536),
];

pub fn size_of(kind: &str) -> (u32, u64) {
    TYPES
        .iter()
        .find(|(t, _, _)| *t == kind)
        .map_or((2, 4096), |(_, c, m)| (*c, *m))
}

/// The smallest known type with at least `cpus` and `memory_mib`.
pub fn type_for(cpus: u32, memory_mib: u64) -> &'static str {
    TYPES
        .iter()
        .find(|(_, c, m)| *c >= cpus && *m >= memory_mib)
        .map_or("m5.4xlarge", |(t, _, _)| t)
}

/// The instances of the site that are not terminated.
pub fn instances(aws: &Aws, params: Params) -> Result<Vec<Node>, ProviderError> {
    let reply = aws.ec2(&params.0)?;
    let mut out = Vec::new();
    for reservation in reply.items("reservationSet") {
        for instance in reservation.items("instancesSet") {
            if !matches!(
                instance.text("instanceState/name"),
                "terminated" | "shutting-down"
            ) {
                out.push(instance.clone());
            }
        }
    }
    Ok(out)
}

/// The live instances a mutating call tagged with idempotency key `key`.
pub fn keyed_instances(aws: &Aws, key: &str) -> Result<Vec<Node>, ProviderError> {
    instances(
        aws,
        Params::action("DescribeInstances").filter(&format!("tag:{KEY_TAG}"), key),
    )
}

/// The snapshots of this account a mutating call tagged with idempotency
/// key `key`.
pub fn keyed_snapshots(aws: &Aws, key: &str) -> Result<Vec<Node>, ProviderError> {
    let reply = aws.ec2(
        &Params::action("DescribeSnapshots")
            .set("Owner.1", "self")
            .filter(&format!("tag:{KEY_TAG}"), key)
            .0,
    )?;
    Ok(reply.items("snapshotSet").cloned().collect())
}

pub fn instance(aws: &Aws, id: &str) -> Result<Node, ProviderError> {
    instances(
        aws,
        Params::action("DescribeInstances").set("InstanceId.1", id),
    )
    .map_err(|e| match e {
        ProviderError::InvalidRequest(m) => ProviderError::NotFound(m),
        e => e,
    })?
    .into_iter()
    .next()
    .ok_or_else(|| ProviderError::NotFound(format!("instance '{id}' in site '{}'", aws.site)))
}

/// Volume id → size in GiB.
pub fn volume_sizes(aws: &Aws) -> Result<BTreeMap<String, u64>, ProviderError> {
    let reply = aws.ec2(&Params::action("DescribeVolumes").0)?;
    Ok(reply
        .items("volumeSet")
        .map(|v| {
            (
                v.text("volumeId").to_owned(),
                v.text("size").parse().unwrap_or(0),
            )
        })
        .collect())
}

pub fn labels(instance: &Node) -> Vec<(String, String)> {
    instance
        .tags()
        .into_iter()
        .filter(|(k, _)| k != "Name" && !k.starts_with("aws:") && !k.starts_with("rebound:"))
        .collect()
}

pub fn power(instance: &Node) -> PowerState {
    match instance.text("instanceState/name") {
        "running" => PowerState::Running,
        "stopped" | "stopping" => PowerState::Stopped,
        _ => PowerState::Unknown,
    }
}

pub fn workload(instance: &Node, sizes: &BTreeMap<String, u64>) -> Workload {
    let id = instance.text("instanceId").to_owned();
    let root = instance.text("rootDeviceName");
    let mut disks: Vec<(String, DiskSpec)> = instance
        .items("blockDeviceMapping")
        .map(|m| {
            let device = m.text("deviceName").to_owned();
            let volume = m.text("ebs/volumeId").to_owned();
            (
                device.clone(),
                DiskSpec {
                    size_bytes: sizes.get(&volume).copied().unwrap_or(0) * GIB,
                    boot_order: (device == root).then_some(0),
                    name: device,
                    id: volume,
                },
            )
        })
        .collect();
    disks.sort_by(|a, b| (a.1.boot_order.is_none(), &a.0).cmp(&(b.1.boot_order.is_none(), &b.0)));
    let (cpus, memory_mib) = size_of(instance.text("instanceType"));
    let nics = instance
        .items("networkInterfaceSet")
        .map(|n| NicSpec {
            network: n.text("subnetId").to_owned(),
            mac: Some(n.text("macAddress").to_owned()).filter(|m| !m.is_empty()),
            ips: n
                .items("privateIpAddressesSet")
                .map(|p| p.text("privateIpAddress").to_owned())
                .collect(),
        })
        .collect();
    Workload {
        spec: VmSpec {
            name: instance.tag("Name").unwrap_or_else(|| id.clone()),
            cpus,
            memory_mib,
            firmware: if instance.text("bootMode") == "uefi" {
                Firmware::Uefi
            } else {
                Firmware::Bios
            },
            disks: disks.into_iter().map(|(_, d)| d).collect(),
            nics,
            labels: labels(instance),
        },
        power: power(instance),
        id,
    }
}

/// `k=v;k=v`, as one tag value (AWS tag values hold 256 characters).
pub fn encode_labels(labels: &[(String, String)]) -> String {
    let s: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{}={}", k.replace([';', '='], "_"), v.replace(';', "_")))
        .collect();
    let mut s = s.join(";");
    s.truncate(256);
    s
}

pub fn decode_labels(s: &str) -> Vec<(String, String)> {
    s.split(';')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Create tags on resources.
pub fn tag(aws: &Aws, ids: &[String], tags: &[(String, String)]) -> Result<(), ProviderError> {
    let mut p = Params::action("CreateTags").list("ResourceId", ids);
    for (i, (k, v)) in tags.iter().enumerate() {
        p = p
            .set(format!("Tag.{}.Key", i + 1), k.clone())
            .set(format!("Tag.{}.Value", i + 1), v.clone());
    }
    aws.ec2(&p.0).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_labels_round_trip() {
        assert_eq!(type_for(2, 2048), "t3.small");
        assert_eq!(size_of(type_for(3, 100)), (4, 16384));
        let labels = vec![
            ("app".to_owned(), "shop".to_owned()),
            ("rebound/drill".into(), "d-1".into()),
        ];
        assert_eq!(decode_labels(&encode_labels(&labels)), labels);
    }
}

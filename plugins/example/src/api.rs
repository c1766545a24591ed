//! The example platform's JSON shapes and their mapping to the contract.

use std::collections::BTreeMap;

use rebound_plugin_sdk::{DiskSpec, Firmware, NicSpec, PowerState, VmSpec, Workload};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
pub struct Version {
    pub version: String,
}

#[derive(Deserialize)]
pub struct Created {
    pub id: String,
}

#[derive(Deserialize)]
pub struct Disk {
    pub id: String,
    pub name: String,
    pub size_bytes: u64,
    pub boot_order: Option<u32>,
}

#[derive(Deserialize)]
pub struct Nic {
    pub network: String,
    pub mac: Option<String>,
    #[serde(default)]
    pub ips: Vec<String>,
}

#[derive(Deserialize)]
pub struct Vm {
    pub id: String,
    pub name: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub firmware: String,
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub power: String,
    /// `building` or `active`.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub fenced: bool,
    #[serde(default)]
    pub epoch: u64,
    /// The key of the materialize that made it; none for a VM Rebound did
    /// not make.
    #[serde(default)]
    #[cfg_attr(feature = "contract-0-1", allow(dead_code))]
    pub key: Option<String>,
}

impl Vm {
    pub fn into_workload(self) -> Workload {
        Workload {
            id: self.id,
            power: match self.power.as_str() {
                "running" => PowerState::Running,
                "stopped" => PowerState::Stopped,
                "paused" => PowerState::Paused,
                _ => PowerState::Unknown,
            },
            spec: VmSpec {
                name: self.name,
                cpus: self.cpus,
                memory_mib: self.memory_mib,
                firmware: if self.firmware == "uefi" {
                    Firmware::Uefi
                } else {
                    Firmware::Bios
                },
                disks: self
                    .disks
                    .into_iter()
                    .map(|d| DiskSpec {
                        id: d.id,
                        name: d.name,
                        size_bytes: d.size_bytes,
                        boot_order: d.boot_order,
                    })
                    .collect(),
                nics: self
                    .nics
                    .into_iter()
                    .map(|n| NicSpec {
                        network: n.network,
                        mac: n.mac,
                        ips: n.ips,
                    })
                    .collect(),
                labels: self.labels.into_iter().collect(),
            },
        }
    }
}

#[derive(Deserialize)]
pub struct DiskCopy {
    pub disk_id: String,
    pub copy_id: String,
    pub size_bytes: u64,
}

#[derive(Deserialize)]
pub struct Snapshot {
    pub id: String,
    pub vm_id: String,
    pub status: String,
    pub created_at_ms: u64,
    pub consistency: String,
    pub disks: Vec<DiskCopy>,
    pub vm: Vm,
    pub error: Option<String>,
}

#[derive(Deserialize)]
pub struct Backend {
    pub backend: String,
    pub weight: u8,
}

#[derive(Deserialize)]
pub struct Route {
    pub backends: Vec<Backend>,
    pub key: Option<String>,
}

/// An export or import: a disk image the site serves for the data mover.
#[derive(Deserialize)]
pub struct Transfer {
    pub id: String,
    /// `preparing` or `ready`.
    pub status: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub token: String,
    pub size_bytes: u64,
    /// For an import: the volume being written.
    pub volume_id: Option<String>,
}

/// The VM around imported volumes, as `POST /v1/vms` takes it.
pub fn spec_body(spec: &VmSpec) -> Value {
    json!({
        "cpus": spec.cpus,
        "memory_mib": spec.memory_mib,
        "firmware": match spec.firmware { Firmware::Uefi => "uefi", Firmware::Bios => "bios" },
        "disks": spec.disks.iter().map(|d| json!({
            "name": d.name, "size_bytes": d.size_bytes, "boot_order": d.boot_order,
        })).collect::<Vec<_>>(),
        "nics": spec.nics.iter().map(|n| json!({
            "network": n.network, "mac": n.mac, "ips": n.ips,
        })).collect::<Vec<_>>(),
    })
}

/// A changed byte range.
#[derive(Deserialize)]
pub struct Range {
    pub offset: u64,
    pub length: u64,
}

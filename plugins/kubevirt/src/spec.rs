//! KubeVirt VirtualMachines and the contract's neutral VM spec, both ways:
//! what `inventory` and recovery points report, and the VirtualMachine
//! `materialize` creates (and how `cleanup` tells one from any other).

use std::collections::BTreeMap;

use rebound_plugin_sdk::{DiskSpec, Firmware, NicSpec, PowerState, VmSpec, Workload};
use serde_json::{Value, json};

use crate::names::{self, KEY_ANNOTATION};

/// The annotation with the name of the workload a created VM recovers.
const SOURCE_NAME_ANNOTATION: &str = "rebound.io/source-name";

/// The network name the neutral spec uses for the pod network.
pub const POD_NETWORK: &str = "pod";

/// Sizes of PVCs by claim name: their capacity, else what they ask for.
pub fn claim_sizes(pvcs: &[Value]) -> BTreeMap<String, u64> {
    pvcs.iter()
        .filter_map(|pvc| {
            let name = pvc["metadata"]["name"].as_str()?;
            let size = pvc["status"]["capacity"]["storage"]
                .as_str()
                .or_else(|| pvc["spec"]["resources"]["requests"]["storage"].as_str())
                .and_then(names::quantity)?;
            Some((name.to_owned(), size))
        })
        .collect()
}

/// What a DataVolume (or a VM's DataVolume template) asks for.
pub fn requested_size(dv: &Value) -> Option<u64> {
    ["storage", "pvc"]
        .iter()
        .find_map(|part| dv["spec"][part]["resources"]["requests"]["storage"].as_str())
        .and_then(names::quantity)
}

/// `(volume name, claim)` of a VMI template's PVC-backed volumes, in order.
pub fn volume_claims(template_spec: &Value) -> Vec<(String, String)> {
    template_spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let claim = v["dataVolume"]["name"]
                .as_str()
                .or_else(|| v["persistentVolumeClaim"]["claimName"].as_str())?;
            Some((v["name"].as_str()?.to_owned(), claim.to_owned()))
        })
        .collect()
}

/// The neutral spec of a VirtualMachine (`vm` with `metadata` and `spec`),
/// sizing its disks from `sizes` (by claim) and its own DataVolume
/// templates, and reading addresses from its running instance.
pub fn vm_spec(vm: &Value, sizes: &BTreeMap<String, u64>, vmi: Option<&Value>) -> VmSpec {
    let template = &vm["spec"]["template"]["spec"];
    let domain = &template["domain"];
    let count = |v: &Value| v.as_u64().unwrap_or(1).max(1);
    let cpu = &domain["cpu"];
    let cpus = if cpu.is_object() {
        u32::try_from(count(&cpu["cores"]) * count(&cpu["sockets"]) * count(&cpu["threads"]))
            .unwrap_or(u32::MAX)
    } else {
        domain["resources"]["requests"]["cpu"]
            .as_str()
            .and_then(names::cpus)
            .unwrap_or(1)
    };
    let memory = domain["memory"]["guest"]
        .as_str()
        .or_else(|| domain["resources"]["requests"]["memory"].as_str())
        .and_then(names::quantity)
        .unwrap_or(0);
    let firmware = if domain["firmware"]["bootloader"]["efi"].is_null() {
        Firmware::Bios
    } else {
        Firmware::Uefi
    };
    let template_sizes: BTreeMap<String, u64> = vm["spec"]["dataVolumeTemplates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            Some((
                t["metadata"]["name"].as_str()?.to_owned(),
                requested_size(t)?,
            ))
        })
        .collect();
    let disk_devices = domain["devices"]["disks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let any_boot_order = disk_devices.iter().any(|d| !d["bootOrder"].is_null());
    let disks = volume_claims(template)
        .into_iter()
        .enumerate()
        .map(|(i, (volume, claim))| {
            let boot_order = if any_boot_order {
                disk_devices
                    .iter()
                    .find(|d| d["name"] == volume.as_str())
                    .and_then(|d| d["bootOrder"].as_u64())
                    .and_then(|o| u32::try_from(o.saturating_sub(1)).ok())
            } else {
                u32::try_from(i).ok()
            };
            DiskSpec {
                size_bytes: sizes
                    .get(&claim)
                    .or_else(|| template_sizes.get(&claim))
                    .copied()
                    .unwrap_or(0),
                id: claim,
                name: volume,
                boot_order,
            }
        })
        .collect();
    let networks = template["networks"].as_array().cloned().unwrap_or_default();
    let reported = vmi
        .and_then(|v| v["status"]["interfaces"].as_array().cloned())
        .unwrap_or_default();
    let nics = domain["devices"]["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|iface| {
            let name = iface["name"].as_str().unwrap_or_default();
            let network = networks
                .iter()
                .find(|n| n["name"] == name)
                .map(|n| {
                    n["multus"]["networkName"]
                        .as_str()
                        .unwrap_or(POD_NETWORK)
                        .to_owned()
                })
                .unwrap_or_else(|| POD_NETWORK.to_owned());
            let status = reported.iter().find(|r| r["name"] == name);
            NicSpec {
                network,
                mac: status
                    .and_then(|s| s["mac"].as_str())
                    .or_else(|| iface["macAddress"].as_str())
                    .map(str::to_owned),
                ips: status
                    .and_then(|s| s["ipAddresses"].as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|ip| ip.as_str().map(str::to_owned))
                    .collect(),
            }
        })
        .collect();
    let labels = vm["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect();
    // A VM Rebound created keeps the name of the workload it recovers.
    let name = vm["metadata"]["annotations"][SOURCE_NAME_ANNOTATION]
        .as_str()
        .or_else(|| vm["metadata"]["name"].as_str())
        .unwrap_or_default();
    VmSpec {
        name: name.to_owned(),
        cpus,
        memory_mib: memory >> 20,
        firmware,
        disks,
        nics,
        labels,
    }
}

/// A VirtualMachine as a workload.
pub fn workload(vm: &Value, sizes: &BTreeMap<String, u64>, vmi: Option<&Value>) -> Workload {
    let power = match vm["status"]["printableStatus"].as_str() {
        Some("Running" | "Migrating") => PowerState::Running,
        Some("Stopped" | "Halted") => PowerState::Stopped,
        Some("Paused") => PowerState::Paused,
        _ => PowerState::Unknown,
    };
    Workload {
        id: vm["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        spec: vm_spec(vm, sizes, vmi),
        power,
    }
}

/// Whether `materialize` made this VirtualMachine: it carries the
/// idempotency key and the source name `materialize` annotated it with, and
/// its name is the one `materialize` derives from them — a copy of such a
/// VM's manifest under another name is not Rebound's.
pub fn materialized(vm: &Value) -> bool {
    let metadata = &vm["metadata"];
    match (
        metadata["annotations"][KEY_ANNOTATION].as_str(),
        metadata["annotations"][SOURCE_NAME_ANNOTATION].as_str(),
        metadata["name"].as_str(),
    ) {
        (Some(key), Some(source), Some(name)) => names::derived(source, key) == name,
        _ => false,
    }
}

/// One NIC of a VM to create: its network on this site, and the MAC to
/// keep if any.
pub struct Nic {
    pub network: String,
    pub mac: Option<String>,
}

/// The VirtualMachine `materialize` creates: one DataVolume template per
/// disk (`sources[i]` is its CDI source), the NICs on their networks,
/// `labels` on the VM, its instance and its volumes.
pub struct NewVm<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub key: &'a str,
    pub spec: &'a VmSpec,
    pub sources: Vec<Value>,
    pub nics: Vec<Nic>,
    pub labels: BTreeMap<String, String>,
    pub start: bool,
}

impl NewVm<'_> {
    pub fn manifest(&self) -> Value {
        let mut templates = Vec::new();
        let mut volumes = Vec::new();
        let mut disks = Vec::new();
        for (i, (disk, source)) in self.spec.disks.iter().zip(&self.sources).enumerate() {
            let dv = format!("{}-disk{i}", self.name);
            templates.push(json!({
                "metadata": {"name": dv, "labels": self.labels},
                "spec": {"source": source,
                         "storage": {"accessModes": ["ReadWriteOnce"], "volumeMode": "Block",
                                     "resources": {"requests": {"storage": disk.size_bytes.to_string()}}}},
            }));
            volumes.push(json!({"name": format!("disk{i}"), "dataVolume": {"name": dv}}));
            let mut device = json!({"name": format!("disk{i}"), "disk": {"bus": "virtio"}});
            if let Some(order) = disk.boot_order {
                device["bootOrder"] = json!(order + 1);
            }
            disks.push(device);
        }
        let mut interfaces = Vec::new();
        let mut networks = Vec::new();
        for (i, nic) in self.nics.iter().enumerate() {
            let name = format!("nic{i}");
            let mut iface = if nic.network == POD_NETWORK {
                networks.push(json!({"name": name, "pod": {}}));
                json!({"name": name, "masquerade": {}})
            } else {
                networks.push(json!({"name": name, "multus": {"networkName": nic.network}}));
                json!({"name": name, "bridge": {}})
            };
            if let Some(mac) = &nic.mac {
                iface["macAddress"] = json!(mac);
            }
            interfaces.push(iface);
        }
        let mut domain = json!({
            "cpu": {"cores": self.spec.cpus.max(1)},
            "memory": {"guest": format!("{}Mi", self.spec.memory_mib.max(1))},
            "devices": {"disks": disks, "interfaces": interfaces},
        });
        if self.spec.firmware == Firmware::Uefi {
            domain["firmware"] = json!({"bootloader": {"efi": {"secureBoot": false}}});
        }
        json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": self.labels,
                         "annotations": {KEY_ANNOTATION: self.key,
                                         SOURCE_NAME_ANNOTATION: self.spec.name}},
            "spec": {
                "runStrategy": if self.start { "Always" } else { "Halted" },
                "dataVolumeTemplates": templates,
                "template": {
                    "metadata": {"labels": self.labels},
                    "spec": {"domain": domain, "networks": networks, "volumes": volumes},
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm() -> Value {
        json!({
            "metadata": {"name": "web-1", "labels": {"app": "shop"}},
            "spec": {"running": true, "template": {"spec": {
                "domain": {"cpu": {"cores": 2, "sockets": 2}, "memory": {"guest": "2Gi"},
                           "firmware": {"bootloader": {"efi": {}}},
                           "devices": {"disks": [{"name": "root", "bootOrder": 1}, {"name": "data"}],
                                       "interfaces": [{"name": "default", "bridge": {}}, {"name": "pod"}]}},
                "networks": [{"name": "default", "multus": {"networkName": "prod-net"}}, {"name": "pod", "pod": {}}],
                "volumes": [{"name": "root", "dataVolume": {"name": "web-1-root"}},
                            {"name": "data", "persistentVolumeClaim": {"claimName": "web-1-data"}},
                            {"name": "cloudinit", "cloudInitNoCloud": {}}],
            }}},
            "status": {"printableStatus": "Running"},
        })
    }

    #[test]
    fn a_vm_becomes_a_neutral_spec() {
        let sizes = BTreeMap::from([("web-1-root".to_owned(), 1 << 30)]);
        let vmi = json!({"status": {"interfaces": [{"name": "default", "mac": "02:00:00:00:00:01", "ipAddresses": ["10.0.0.5"]}]}});
        let w = workload(&vm(), &sizes, Some(&vmi));
        assert_eq!(w.power, PowerState::Running);
        let s = w.spec;
        assert_eq!(
            (s.cpus, s.memory_mib, s.firmware),
            (4, 2048, Firmware::Uefi)
        );
        assert_eq!(s.disks.len(), 2, "the cloud-init volume is no disk");
        assert_eq!(
            (
                s.disks[0].id.as_str(),
                s.disks[0].size_bytes,
                s.disks[0].boot_order
            ),
            ("web-1-root", 1 << 30, Some(0))
        );
        assert_eq!(
            (s.disks[1].id.as_str(), s.disks[1].boot_order),
            ("web-1-data", None)
        );
        assert_eq!(s.nics[0].network, "prod-net");
        assert_eq!(s.nics[0].ips, ["10.0.0.5"]);
        assert_eq!(s.nics[1].network, POD_NETWORK);
        assert_eq!(s.labels, [("app".to_owned(), "shop".to_owned())]);
    }

    #[test]
    fn a_new_vm_has_a_template_per_disk() {
        let sizes = BTreeMap::from([
            ("web-1-root".to_owned(), 1 << 30),
            ("web-1-data".to_owned(), 1 << 20),
        ]);
        let spec = vm_spec(&vm(), &sizes, None);
        let new = NewVm {
            name: "web-1-abc",
            namespace: "dr",
            key: "run/step",
            spec: &spec,
            sources: vec![json!({"pvc": {"name": "a"}}), json!({"pvc": {"name": "b"}})],
            nics: vec![
                Nic {
                    network: "dr-net".into(),
                    mac: Some("02:00:00:00:00:01".into()),
                },
                Nic {
                    network: POD_NETWORK.into(),
                    mac: None,
                },
            ],
            labels: BTreeMap::from([("rebound/workload".to_owned(), "web-1".to_owned())]),
            start: true,
        };
        let m = new.manifest();
        assert_eq!(m["spec"]["runStrategy"], "Always");
        assert_eq!(
            m["spec"]["dataVolumeTemplates"][1]["metadata"]["name"],
            "web-1-abc-disk1"
        );
        assert_eq!(
            m["spec"]["dataVolumeTemplates"][0]["spec"]["storage"]["resources"]["requests"]["storage"],
            (1u64 << 30).to_string()
        );
        let t = &m["spec"]["template"]["spec"];
        assert_eq!(t["domain"]["devices"]["disks"][0]["bootOrder"], 1);
        assert_eq!(t["networks"][0]["multus"]["networkName"], "dr-net");
        assert_eq!(
            t["domain"]["devices"]["interfaces"][0]["macAddress"],
            "02:00:00:00:00:01"
        );
        assert!(t["networks"][1]["pod"].is_object());
        // Round trip: the created VM reads back as the spec it came from.
        let back = vm_spec(&m, &BTreeMap::new(), None);
        assert_eq!(
            (back.cpus, back.memory_mib, back.firmware),
            (4, 2048, Firmware::Uefi)
        );
        assert_eq!(back.disks[0].size_bytes, 1 << 30);
        assert_eq!(back.disks[0].boot_order, Some(0));
    }

    #[test]
    fn only_what_materialize_made_counts_as_materialized() {
        let spec = vm_spec(&vm(), &BTreeMap::new(), None);
        let name = names::derived(&spec.name, "run-2/materialize/web-1");
        let made = NewVm {
            name: &name,
            namespace: "dr",
            key: "run-2/materialize/web-1",
            spec: &spec,
            sources: vec![json!({"pvc": {"name": "a"}}), json!({"pvc": {"name": "b"}})],
            nics: vec![],
            labels: BTreeMap::new(),
            start: true,
        }
        .manifest();
        assert!(materialized(&made));
        let mut copy = made.clone();
        copy["metadata"]["name"] = json!("web-1-copy");
        assert!(!materialized(&copy), "the marks belong to the derived name");
        let mut unmarked = made;
        unmarked["metadata"]["annotations"] = json!({SOURCE_NAME_ANNOTATION: "web-1"});
        assert!(!materialized(&unmarked));
        assert!(!materialized(&vm()), "a VM of the site's own");
    }
}

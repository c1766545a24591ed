//! What the plugin hands the host and gets back: operation handles (the
//! `id` of an [`Operation`], JSON that holds everything `status` needs,
//! since the host persists it and may poll from a fresh instance after a
//! restart), recovery point ids, and the VM spec as a handle carries it.

use rebound_plugin_sdk::{
    DiskSpec, Firmware, NicSpec, Operation, OperationKind, ProviderError, VmSpec,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A recovery point on a site: Cinder snapshots of a server's volumes (in
/// disk order), or Cinder backups imported from `source_region` by
/// `replicate` (whose records there are removed with them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Point {
    Snapshots(Vec<String>),
    Backups {
        source_region: String,
        ids: Vec<String>,
    },
}

impl Point {
    /// `snapshots:ID,ID` or `backups@REGION:ID,ID`.
    pub fn id(&self) -> String {
        match self {
            Self::Snapshots(ids) => format!("snapshots:{}", ids.join(",")),
            Self::Backups { source_region, ids } => {
                format!("backups@{source_region}:{}", ids.join(","))
            }
        }
    }

    pub fn parse(id: &str) -> Result<Self, ProviderError> {
        let list = |s: &str| -> Vec<String> {
            s.split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect()
        };
        if let Some(ids) = id.strip_prefix("snapshots:") {
            return Ok(Self::Snapshots(list(ids)));
        }
        if let Some((region, ids)) = id
            .strip_prefix("backups@")
            .and_then(|rest| rest.split_once(':'))
        {
            return Ok(Self::Backups {
                source_region: region.to_owned(),
                ids: list(ids),
            });
        }
        Err(ProviderError::InvalidRequest(format!(
            "'{id}' is not an OpenStack recovery point of this plugin (snapshots:… or backups@…)"
        )))
    }
}

/// The neutral VM spec, serializable, as handles carry it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub name: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub uefi: bool,
    pub disks: Vec<SpecDisk>,
    pub nics: Vec<SpecNic>,
    pub labels: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpecDisk {
    pub id: String,
    pub name: String,
    pub size_bytes: u64,
    pub boot_order: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpecNic {
    pub network: String,
    pub mac: Option<String>,
    pub ips: Vec<String>,
}

impl From<&VmSpec> for Spec {
    fn from(s: &VmSpec) -> Self {
        Self {
            name: s.name.clone(),
            cpus: s.cpus,
            memory_mib: s.memory_mib,
            uefi: s.firmware == Firmware::Uefi,
            disks: s
                .disks
                .iter()
                .map(|d| SpecDisk {
                    id: d.id.clone(),
                    name: d.name.clone(),
                    size_bytes: d.size_bytes,
                    boot_order: d.boot_order,
                })
                .collect(),
            nics: s
                .nics
                .iter()
                .map(|n| SpecNic {
                    network: n.network.clone(),
                    mac: n.mac.clone(),
                    ips: n.ips.clone(),
                })
                .collect(),
            labels: s.labels.clone(),
        }
    }
}

impl Spec {
    pub fn to_vm(&self) -> VmSpec {
        VmSpec {
            name: self.name.clone(),
            cpus: self.cpus,
            memory_mib: self.memory_mib,
            firmware: if self.uefi {
                Firmware::Uefi
            } else {
                Firmware::Bios
            },
            disks: self
                .disks
                .iter()
                .map(|d| DiskSpec {
                    id: d.id.clone(),
                    name: d.name.clone(),
                    size_bytes: d.size_bytes,
                    boot_order: d.boot_order,
                })
                .collect(),
            nics: self
                .nics
                .iter()
                .map(|n| NicSpec {
                    network: n.network.clone(),
                    mac: n.mac.clone(),
                    ips: n.ips.clone(),
                })
                .collect(),
            labels: self.labels.clone(),
        }
    }
}

/// A long operation's state as its handle holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Handle {
    /// Cinder snapshots of `workload`'s volumes, in disk order.
    Snapshot {
        workload: String,
        snapshots: Vec<String>,
        spec: Spec,
    },
    /// Backups of a recovery point's snapshots made in `source_region`,
    /// imported into the handle's site by their ids.
    Replicate {
        workload: String,
        source_region: String,
        backups: Vec<String>,
        captured_at: u64,
        spec: Spec,
    },
    /// A volume served by a mover appliance booted under `key`.
    Transfer {
        export: bool,
        key: String,
        volume: String,
        size_bytes: u64,
    },
    /// Volumes, then the server `server` (Nova's create body) booted from
    /// them under `key`.
    Materialize {
        key: String,
        volumes: Vec<String>,
        server: Value,
        start: bool,
    },
    /// A fenced (or unfenced) server.
    Fence { server: String, epoch: u64 },
    /// A redirect and the state it waits for.
    Redirect(Redirect),
    /// What a cleanup removed within the call, and what `status` still
    /// finishes under the cleanup's `key`: the servers it deleted are
    /// awaited (Nova deletes asynchronously, and holds their volumes until
    /// they are gone), then `volumes` are deleted. Recovery point and
    /// transfer cleanups leave nothing to finish.
    Cleanup {
        removed: Vec<String>,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        key: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        servers: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        volumes: Vec<String>,
    },
}

/// What a redirect changed and expects to see in effect.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Redirect {
    Dns {
        zone: String,
        zone_name: String,
        recordset: String,
        name: String,
        record_type: String,
        ttl: u32,
        records: Vec<String>,
        backends: Vec<(String, u8)>,
    },
    Pool {
        pool: String,
        /// `(member id, weight, backend as the request named it)`.
        members: Vec<(String, u8, String)>,
    },
    FloatingIp {
        address: String,
        id: String,
        port: Option<String>,
        backend: Option<String>,
    },
}

impl Handle {
    pub fn operation(&self, kind: OperationKind, site: &str) -> Operation {
        Operation {
            kind,
            site: site.to_owned(),
            id: serde_json::to_string(self).unwrap_or_default(),
        }
    }

    pub fn parse(id: &str) -> Result<Self, ProviderError> {
        serde_json::from_str(id).map_err(|e| {
            ProviderError::InvalidRequest(format!(
                "this operation handle was not made by the OpenStack plugin ({e})"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_point_ids_round_trip() {
        for point in [
            Point::Snapshots(vec!["a".into(), "b".into()]),
            Point::Backups {
                source_region: "RegionOne".into(),
                ids: vec!["c".into()],
            },
        ] {
            assert_eq!(Point::parse(&point.id()).expect("parse"), point);
        }
        assert!(Point::parse("vol-1").is_err());
    }

    #[test]
    fn handles_round_trip_through_operation_ids() {
        let handle = Handle::Fence {
            server: "s".into(),
            epoch: 3,
        };
        let op = handle.operation(OperationKind::Fence, "east");
        assert!(matches!(
            Handle::parse(&op.id),
            Ok(Handle::Fence { epoch: 3, .. })
        ));
        assert!(Handle::parse("not json").is_err());
    }

    #[test]
    fn a_cleanup_handle_of_an_earlier_version_still_parses() {
        let earlier = r#"{"op":"cleanup","removed":["a"]}"#;
        let Ok(Handle::Cleanup {
            removed,
            key,
            servers,
            volumes,
        }) = Handle::parse(earlier)
        else {
            panic!("not a cleanup");
        };
        assert_eq!(removed, ["a"]);
        assert!(key.is_empty() && servers.is_empty() && volumes.is_empty());
        let done = Handle::Cleanup {
            removed,
            key: String::new(),
            servers: Vec::new(),
            volumes: Vec::new(),
        };
        assert_eq!(done.operation(OperationKind::Cleanup, "east").id, earlier);
    }
}

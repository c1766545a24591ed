//! Workloads: listing VirtualMachines, creating them from recovery points or
//! imported volumes, and fencing them.

use std::collections::BTreeMap;

use rebound_plugin_sdk::{
    DiskSource, FenceReport, FenceRequest, InventoryFilter, MaterializeRequest, Materialized,
    Operation, OperationKind, OperationState, Outcome, ProviderError, Running, Workload, info,
    site, warn,
};
use serde_json::{Value, json};

use crate::kube::Cluster;
use crate::names;
use crate::points;
use crate::replication;
use crate::spec::{self, NewVm, Nic};

/// Whether a VM is fenced, and under which epoch.
const FENCED_ANNOTATION: &str = "rebound.io/fenced";
const EPOCH_ANNOTATION: &str = "rebound.io/fencing-epoch";

/// The network drills attach to unless the site names another.
const ISOLATED_NETWORK: &str = "rebound-isolated";

/// Sizes of the namespace's PVCs by claim name.
type ClaimSizes = BTreeMap<String, u64>;
/// The namespace's running instances by VM name.
type Instances = BTreeMap<String, Value>;

/// Sizes of the namespace's PVCs, and its running instances by name.
fn context(cluster: &Cluster) -> Result<(ClaimSizes, Instances), ProviderError> {
    let sizes = spec::claim_sizes(&cluster.list(&cluster.pvcs(), None)?);
    let vmis = cluster
        .list(&cluster.vmis(), None)?
        .into_iter()
        .filter_map(|vmi| Some((vmi["metadata"]["name"].as_str()?.to_owned(), vmi)))
        .collect();
    Ok((sizes, vmis))
}

pub fn inventory(
    cluster: &Cluster,
    filter: &InventoryFilter,
) -> Result<Vec<Workload>, ProviderError> {
    // Selectable labels narrow the listing on the server; the filter is
    // applied again below either way.
    let selector: Vec<String> = filter
        .labels
        .iter()
        .filter(|(k, v)| names::label_key_ok(k) && names::label_value_ok(v))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let selector = (!selector.is_empty()).then(|| selector.join(","));
    let vms = cluster.list(&cluster.vms(), selector.as_deref())?;
    let (sizes, vmis) = context(cluster)?;
    Ok(vms
        .iter()
        .map(|vm| {
            let name = vm["metadata"]["name"].as_str().unwrap_or_default();
            spec::workload(vm, &sizes, vmis.get(name))
        })
        .filter(|w| filter.workload_ids.is_empty() || filter.workload_ids.contains(&w.id))
        .filter(|w| filter.labels.iter().all(|l| w.spec.labels.contains(l)))
        .collect())
}

fn get_vm(cluster: &Cluster, name: &str) -> Result<Value, ProviderError> {
    cluster
        .get_opt(&format!("{}/{name}", cluster.vms()))?
        .ok_or_else(|| {
            ProviderError::NotFound(format!(
                "no VirtualMachine '{name}' in namespace '{}' of site '{}'",
                cluster.namespace, cluster.site
            ))
        })
}

pub fn materialize(req: &MaterializeRequest) -> Result<Operation, ProviderError> {
    let cluster = Cluster::of(&req.site)?;
    let name = names::derived(&req.spec.name, &req.key);
    // The CDI source of each disk: a clone of an imported volume or of a
    // promoted mirrored PVC, or a restore of the recovery point's volume
    // snapshot. Recovery points stay untouched either way.
    let sources: Vec<Value> = match &req.source {
        DiskSource::Volumes(volumes) => {
            if volumes.len() != req.spec.disks.len() {
                return Err(ProviderError::InvalidRequest(format!(
                    "{} volumes for the {} disks of '{}'",
                    volumes.len(),
                    req.spec.disks.len(),
                    req.spec.name
                )));
            }
            volumes
                .iter()
                .map(|v| json!({"pvc": {"namespace": cluster.namespace, "name": v}}))
                .collect()
        }
        DiskSource::RecoveryPoint(point) if replication::is_replica(point) => {
            replication::promoted_sources(&cluster, point, &req.key, &req.spec)?
        }
        DiskSource::RecoveryPoint(point) => {
            let snapshot = cluster
                .get_opt(&format!("{}/{point}", cluster.snapshots()))?
                .ok_or_else(|| {
                    ProviderError::NotFound(format!(
                        "no recovery point (VirtualMachineSnapshot) '{point}' on site '{}'",
                        req.site
                    ))
                })?;
            let backups = points::backups(&points::content(&cluster, &snapshot)?);
            req.spec
                .disks
                .iter()
                .enumerate()
                .map(|(i, disk)| {
                    backups
                        .iter()
                        .find(|(claim, _, _)| *claim == disk.id)
                        .or_else(|| backups.get(i))
                        .map(|(_, vs, _)| json!({"snapshot": {"namespace": cluster.namespace, "name": vs}}))
                        .ok_or_else(|| {
                            ProviderError::NotFound(format!(
                                "recovery point '{point}' holds no copy of disk '{}'",
                                disk.id
                            ))
                        })
                })
                .collect::<Result<_, _>>()?
        }
    };
    // A drill attaches every NIC to the isolated network only.
    let isolated =
        site::get(&req.site, "isolated_network").unwrap_or_else(|| ISOLATED_NETWORK.into());
    let nics = req
        .spec
        .nics
        .iter()
        .map(|nic| {
            let mapping = req
                .networks
                .iter()
                .find(|m| m.source_network == nic.network);
            Nic {
                network: if req.isolated {
                    isolated.clone()
                } else {
                    mapping.map_or_else(|| nic.network.clone(), |m| m.target_network.clone())
                },
                mac: mapping
                    .filter(|m| m.keep_addresses && !req.isolated)
                    .and(nic.mac.clone()),
            }
        })
        .collect();
    let mut labels = BTreeMap::new();
    for (k, v) in &req.spec.labels {
        if names::label_key_ok(k) && names::label_value_ok(v) {
            labels.insert(k.clone(), v.clone());
        } else {
            warn!("label left off: not a valid Kubernetes label"; "key" => k, "vm" => name);
        }
    }
    let manifest = NewVm {
        name: &name,
        namespace: &cluster.namespace,
        key: &req.key,
        spec: &req.spec,
        sources,
        nics,
        labels,
        start: req.start,
    }
    .manifest();
    cluster.create(&cluster.vms(), &manifest)?;
    info!("VirtualMachine requested"; "vm" => name, "isolated" => req.isolated);
    Ok(Operation {
        kind: OperationKind::Materialize,
        site: req.site.clone(),
        id: name,
    })
}

pub fn materialize_status(cluster: &Cluster, name: &str) -> Result<OperationState, ProviderError> {
    let vm = get_vm(cluster, name)?;
    let printable = vm["status"]["printableStatus"]
        .as_str()
        .unwrap_or("Pending");
    let wants_running = vm["spec"]["runStrategy"] != "Halted";
    let done = if wants_running {
        printable == "Running"
    } else {
        printable == "Stopped"
    };
    if printable.starts_with("Error") || printable == "DataVolumeError" {
        return Ok(OperationState::Failed(ProviderError::ProviderFailed(
            format!("VirtualMachine '{name}' cannot start: {printable}"),
        )));
    }
    if !done {
        return Ok(OperationState::Running(Running {
            percent: None,
            detail: printable.to_owned(),
        }));
    }
    let vmi = cluster.get_opt(&format!("{}/{name}", cluster.vmis()))?;
    let (sizes, _) = context(cluster)?;
    let workload = spec::workload(&vm, &sizes, vmi.as_ref());
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

/// The fencing epoch recorded on a VM, and whether it is fenced.
fn recorded(vm: &Value) -> (u64, bool) {
    let annotations = &vm["metadata"]["annotations"];
    (
        annotations[EPOCH_ANNOTATION]
            .as_str()
            .and_then(|e| e.parse().ok())
            .unwrap_or(0),
        annotations[FENCED_ANNOTATION] == "true",
    )
}

/// Fence (halt, and record the epoch) or unfence (run again under a
/// current epoch) a VM. A call carrying an epoch older than the one
/// recorded is refused: a newer primary exists.
pub fn fence(req: &FenceRequest, fence: bool) -> Result<Operation, ProviderError> {
    let cluster = Cluster::of(&req.site)?;
    let vm = get_vm(&cluster, &req.workload_id)?;
    let (epoch, fenced) = recorded(&vm);
    if epoch > req.epoch {
        return Err(ProviderError::Conflict(format!(
            "VirtualMachine '{}' records fencing epoch {epoch}, newer than {}: the call is stale",
            req.workload_id, req.epoch
        )));
    }
    let strategy = if fence { "Halted" } else { "Always" };
    let settled = fenced == fence
        && epoch == req.epoch
        && vm["spec"]["runStrategy"] == strategy
        && vm["spec"]["running"].is_null();
    if !settled {
        let patch = json!({
            "metadata": {"annotations": {
                FENCED_ANNOTATION: fence.to_string(), EPOCH_ANNOTATION: req.epoch.to_string(),
                "rebound.io/fence-key": req.key,
            }},
            "spec": {"running": null, "runStrategy": strategy},
        });
        cluster.merge_patch(&format!("{}/{}", cluster.vms(), req.workload_id), &patch)?;
        info!("VirtualMachine {}", if fence { "fenced" } else { "unfenced" }; "vm" => req.workload_id, "epoch" => req.epoch);
    }
    Ok(Operation {
        kind: if fence {
            OperationKind::Fence
        } else {
            OperationKind::Unfence
        },
        site: req.site.clone(),
        id: req.workload_id.clone(),
    })
}

/// Done when the VM has stopped (fence) or runs again (unfence).
pub fn fence_status(
    cluster: &Cluster,
    name: &str,
    fence: bool,
) -> Result<OperationState, ProviderError> {
    let vm = get_vm(cluster, name)?;
    let (epoch, _) = recorded(&vm);
    let vmi = cluster.get_opt(&format!("{}/{name}", cluster.vmis()))?;
    let printable = vm["status"]["printableStatus"].as_str().unwrap_or_default();
    let stopped = vmi.is_none() && printable == "Stopped";
    let done = if fence {
        stopped
    } else {
        printable == "Running"
    };
    if !done {
        return Ok(OperationState::Running(Running {
            percent: None,
            detail: if fence { "stopping" } else { "starting" }.into(),
        }));
    }
    Ok(OperationState::Succeeded(Outcome::Fenced(FenceReport {
        workload_id: name.to_owned(),
        epoch,
        write_blocked: stopped && vm["spec"]["runStrategy"] == "Halted",
    })))
}

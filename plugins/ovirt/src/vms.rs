//! VMs as workloads: the neutral spec read from a VM, its disk
//! attachments, NICs (their vNIC profiles' networks) and tags (labels are
//! tags named `key=value`); `materialize` (a clone of a snapshot, or a
//! blank VM with imported disks attached), which marks what it makes in
//! the VM's name and description; removing the VMs so marked, with the
//! disks made for them but not the imported ones they run on; fencing by
//! stop/start with the epoch recorded in tags.

use rebound_plugin_sdk::xml::Element;
use rebound_plugin_sdk::{
    DiskSource, DiskSpec, FenceReport, FenceRequest, Firmware, InventoryFilter, MaterializeRequest,
    Materialized, NicSpec, Operation, OperationKind, OperationState, Outcome, PowerState,
    ProviderError, Running, VmSpec, Workload, info, site,
};

use crate::engine::{Engine, encode, setting, short};

/// Tags recording the fencing epoch and whether the VM is fenced.
/// The label the host puts on a drill's workloads (its sandbox id).
pub const DRILL_LABEL: &str = "rebound/drill";
const EPOCH_TAG: &str = "rebound/epoch=";
const FENCED_TAG: &str = "rebound/fenced=true";
/// How long a call waits for the engine to unlock disks or a VM.
const WAIT_MS: u64 = 15_000;
/// How the description of a VM materialize made starts; the spec's name
/// follows, then how its disks came ([`CLONED`], [`ON_IMPORTED`],
/// [`ON_COPIES`]), then, for a drill, [`in_drill`].
const MATERIALIZED: &str = "rebound materialized ";
/// Cloned from a recovery point: every disk is the clone's, made for it.
const CLONED: &str = "cloned from a recovery point";
/// On the disks the host imported, which outlive the VM.
const ON_IMPORTED: &str = "on imported disks";
/// A drill's: on the engine's copies of the imported disks, made for it.
const ON_COPIES: &str = "on copies of imported disks";

/// Networks by vNIC profile id: `(profile id, network name)`.
fn profiles(engine: &Engine) -> Result<Vec<(String, String)>, ProviderError> {
    let networks = engine.list("/networks")?;
    let name_of = |id: &str| {
        networks
            .iter()
            .find(|n| n.attr("id") == Some(id))
            .and_then(|n| n.text_at(&["name"]))
            .map(str::to_owned)
    };
    Ok(engine
        .list("/vnicprofiles")?
        .iter()
        .filter_map(|p| {
            let id = p.attr("id")?.to_owned();
            let network = p
                .id_at(&["network"])
                .and_then(name_of)
                .or_else(|| p.text_at(&["name"]).map(str::to_owned))?;
            Some((id, network))
        })
        .collect())
}

fn tags(engine: &Engine, vm: &str) -> Result<Vec<(String, String)>, ProviderError> {
    Ok(engine
        .list(&format!("/vms/{vm}/tags"))?
        .iter()
        .filter_map(|t| Some((t.attr("id")?.to_owned(), t.text_at(&["name"])?.to_owned())))
        .collect())
}

fn power(status: &str) -> PowerState {
    match status {
        "up" | "powering_up" | "reboot_in_progress" | "migrating" => PowerState::Running,
        "down" => PowerState::Stopped,
        "paused" | "suspended" | "saving_state" => PowerState::Paused,
        _ => PowerState::Unknown,
    }
}

/// A VM as a workload.
fn workload(
    engine: &Engine,
    vm: &Element,
    profiles: &[(String, String)],
) -> Result<Workload, ProviderError> {
    let id = vm.attr("id").unwrap_or_default().to_owned();
    let number =
        |path: &[&str]| -> u64 { vm.text_at(path).and_then(|v| v.parse().ok()).unwrap_or(1) };
    let cpus = number(&["cpu", "topology", "sockets"])
        * number(&["cpu", "topology", "cores"])
        * number(&["cpu", "topology", "threads"]);
    let mut disks = Vec::new();
    for attachment in engine.list(&format!("/vms/{id}/diskattachments"))? {
        let Some(disk_id) = attachment.id_at(&["disk"]) else {
            continue;
        };
        let disk = engine.get(&format!("/disks/{disk_id}"))?;
        disks.push(DiskSpec {
            id: disk_id.to_owned(),
            name: disk
                .text_at(&["alias"])
                .or_else(|| disk.text_at(&["name"]))
                .unwrap_or(disk_id)
                .to_owned(),
            size_bytes: disk
                .text_at(&["provisioned_size"])
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            boot_order: (attachment.text_at(&["bootable"]) == Some("true")).then_some(0),
        });
    }
    let nics = engine
        .list(&format!("/vms/{id}/nics"))?
        .iter()
        .map(|nic| NicSpec {
            network: nic
                .id_at(&["vnic_profile"])
                .and_then(|p| profiles.iter().find(|(id, _)| id == p))
                .map(|(_, n)| n.clone())
                .unwrap_or_default(),
            mac: nic.text_at(&["mac", "address"]).map(str::to_owned),
            ips: Vec::new(),
        })
        .collect();
    let labels = tags(engine, &id)?
        .into_iter()
        .filter_map(|(_, name)| {
            name.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect();
    Ok(Workload {
        id,
        power: power(vm.text_at(&["status"]).unwrap_or_default()),
        spec: VmSpec {
            name: vm.text_at(&["name"]).unwrap_or_default().to_owned(),
            cpus: u32::try_from(cpus).unwrap_or(1),
            memory_mib: number(&["memory"]) >> 20,
            firmware: if vm
                .text_at(&["bios", "type"])
                .unwrap_or_default()
                .contains("ovmf")
            {
                Firmware::Uefi
            } else {
                Firmware::Bios
            },
            disks,
            nics,
            labels,
        },
    })
}

pub fn inventory(
    engine: &Engine,
    filter: &InventoryFilter,
) -> Result<Vec<Workload>, ProviderError> {
    let profiles = profiles(engine)?;
    let mut out = Vec::new();
    for vm in engine.list("/vms")? {
        let id = vm.attr("id").unwrap_or_default();
        if !filter.workload_ids.is_empty() && !filter.workload_ids.iter().any(|w| w == id) {
            continue;
        }
        let w = workload(engine, &vm, &profiles)?;
        if filter.labels.iter().all(|l| w.spec.labels.contains(l)) {
            out.push(w);
        }
    }
    Ok(out)
}

/// One VM as a workload.
pub fn get_workload(engine: &Engine, id: &str) -> Result<Workload, ProviderError> {
    let vm = engine.get(&format!("/vms/{id}"))?;
    workload(engine, &vm, &profiles(engine)?)
}

/// The VM named `name`, if any.
fn by_name(engine: &Engine, name: &str) -> Result<Option<Element>, ProviderError> {
    Ok(engine
        .list(&format!("/vms?search={}", encode(&format!("name={name}"))))?
        .into_iter()
        .find(|v| v.text_at(&["name"]) == Some(name)))
}

/// Wait (within the call) until `ready` holds for the document at `path`;
/// `transient` if the engine is still busy, so a retry resumes.
pub fn wait_for(
    engine: &Engine,
    path: &str,
    what: &str,
    ready: impl Fn(&Element) -> bool,
) -> Result<Element, ProviderError> {
    let started = site::monotonic_ns();
    loop {
        let doc = engine.get(path)?;
        if ready(&doc) {
            return Ok(doc);
        }
        if site::monotonic_ns() - started > WAIT_MS * 1_000_000 {
            return Err(ProviderError::Transient(format!(
                "{what} is still busy on site '{}' (status {}); retry",
                engine.site,
                doc.text_at(&["status"]).unwrap_or("unknown")
            )));
        }
        site::sleep_ms(200);
    }
}

/// Add a tag unless the VM has it.
fn ensure_tag(engine: &Engine, vm: &str, name: &str, key: &str) -> Result<(), ProviderError> {
    if tags(engine, vm)?.iter().any(|(_, n)| n == name) {
        return Ok(());
    }
    let body = Element::new("tag").with_text("name", name);
    engine
        .send(
            "POST",
            &format!("/vms/{vm}/tags"),
            Some(&body),
            key,
            &format!("tag {name}"),
        )
        .map(drop)
}

pub fn materialize(req: &MaterializeRequest) -> Result<Operation, ProviderError> {
    let engine = Engine::of(&req.site)?;
    let name = format!("{}-{}", req.spec.name, short(&req.key));
    let vm = match by_name(&engine, &name)? {
        Some(vm) => vm,
        None => create(&engine, req, &name)?,
    };
    let id = vm.attr("id").unwrap_or_default().to_owned();
    let vm = wait_for(
        &engine,
        &format!("/vms/{id}"),
        &format!("VM '{name}'"),
        |v| v.text_at(&["status"]) != Some("image_locked"),
    )?;
    if let DiskSource::Volumes(volumes) = &req.source {
        // A drill runs on copies: the recovery point's disks stay as they
        // are, and the drill's go with its VM at cleanup.
        let volumes = if req.isolated {
            volumes
                .iter()
                .map(|v| drill_copy(&engine, v, sandbox(req), &req.key))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            volumes.clone()
        };
        let attached: Vec<String> = engine
            .list(&format!("/vms/{id}/diskattachments"))?
            .iter()
            .filter_map(|a| a.id_at(&["disk"]).map(str::to_owned))
            .collect();
        for (i, volume) in volumes.iter().enumerate() {
            if attached.contains(volume) {
                continue;
            }
            wait_for(
                &engine,
                &format!("/disks/{volume}"),
                &format!("disk '{volume}'"),
                |d| d.text_at(&["status"]) == Some("ok"),
            )?;
            let body = Element::new("disk_attachment")
                .with(Element::new("disk").with_attr("id", volume))
                .with_text("bootable", i == 0)
                .with_text("interface", "virtio_scsi")
                .with_text("active", true);
            engine.send(
                "POST",
                &format!("/vms/{id}/diskattachments"),
                Some(&body),
                &req.key,
                &format!("attach {volume}"),
            )?;
        }
    }
    nics(&engine, req, &id)?;
    for (k, v) in &req.spec.labels {
        ensure_tag(&engine, &id, &format!("{k}={v}"), &req.key)?;
    }
    if req.start && vm.text_at(&["status"]) == Some("down") {
        engine.action(&format!("/vms/{id}/start"), &req.key, "start")?;
    }
    info!("materialized"; "vm" => name, "site" => req.site);
    Ok(Operation {
        kind: OperationKind::Materialize,
        site: req.site.clone(),
        id: format!("{id}/{}", if req.start { "up" } else { "down" }),
    })
}

/// The drill sandbox a materialize is for: its label, else its key.
fn sandbox(req: &MaterializeRequest) -> &str {
    req.spec
        .labels
        .iter()
        .find(|(k, _)| k == DRILL_LABEL)
        .map_or(req.key.as_str(), |(_, v)| v.as_str())
}

/// What a materialized VM says of itself from its creation on: that
/// Rebound made it, from what (so removing it knows which disks are its
/// own), and for a drill its sandbox ([`in_drill`]), so the drill's cleanup
/// finds it even when materialize stopped before tagging it.
fn description(req: &MaterializeRequest) -> String {
    let disks = match (&req.source, req.isolated) {
        (DiskSource::RecoveryPoint(_), _) => CLONED,
        (DiskSource::Volumes(_), false) => ON_IMPORTED,
        (DiskSource::Volumes(_), true) => ON_COPIES,
    };
    let mut text = format!("{MATERIALIZED}{} {disks}", req.spec.name);
    if req.isolated {
        text.push(' ');
        text.push_str(&in_drill(sandbox(req)));
    }
    text
}

/// What materialize made a VM from, read back from its marks.
#[derive(Debug, PartialEq, Eq)]
pub struct Made {
    /// Cloned from a recovery point: all its disks are its own.
    cloned: bool,
    /// The drill sandbox it was made for, whose disk copies are its own.
    drill: Option<String>,
}

/// The marks materialize set on `vm`, if it made it: a description
/// [`description`] wrote, and the name `<spec name>-<key hash>` it gave.
/// A VM only described so (an engine-side clone of one copies its
/// description, not its name) is not Rebound's.
pub fn made_by_rebound(vm: &Element) -> Option<Made> {
    let rest = vm.text_at(&["description"])?.strip_prefix(MATERIALIZED)?;
    let spec_name = rest.split(' ').next().filter(|n| !n.is_empty())?;
    let hash = vm
        .text_at(&["name"])?
        .strip_prefix(spec_name)?
        .strip_prefix('-')?;
    if hash.len() != 12 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let drill_mark = in_drill("");
    Some(Made {
        cloned: rest.contains(CLONED),
        drill: rest
            .rsplit_once(drill_mark.as_str())
            .map(|(_, sandbox)| sandbox.to_owned()),
    })
}

/// The end of the description of a VM materialized for drill `sandbox`.
pub fn in_drill(sandbox: &str) -> String {
    format!("in drill {sandbox}")
}

/// The name prefix of the disks copied for drill sandbox `sandbox`, by
/// which its cleanup finds any its VMs did not take with them.
pub fn drill_prefix(sandbox: &str) -> String {
    format!("drill-{}-", short(sandbox))
}

/// The engine's copy of imported disk `volume` for the drill in
/// `sandbox` (found again by its name): the copy's id.
fn drill_copy(
    engine: &Engine,
    volume: &str,
    sandbox: &str,
    key: &str,
) -> Result<String, ProviderError> {
    let alias = format!("{}{volume}", drill_prefix(sandbox));
    let found = crate::transfer::disk_named(engine, &alias)?;
    if let Some(id) = found.as_ref().and_then(|d| d.attr("id")) {
        return Ok(id.to_owned());
    }
    let base = engine.get(&format!("/disks/{volume}"))?;
    let domain = crate::transfer::storage_domain(engine)?;
    crate::transfer::copy_of(engine, &base, &alias, &domain, key)?
        .and_then(|d| d.attr("id").map(str::to_owned))
        .ok_or_else(|| {
            ProviderError::Conflict(format!(
                "the engine would not copy disk '{volume}' for the drill; a drill never runs on \
                 the recovery point's own disks"
            ))
        })
}

/// The VM a disk is attached to, if any.
pub fn using_disk(engine: &Engine, disk: &str) -> Result<Option<String>, ProviderError> {
    Ok(disks_in_use(engine)?
        .into_iter()
        .find(|(d, _)| d == disk)
        .map(|(_, vm)| vm))
}

/// Every disk attached to a VM: `(disk id, VM name)`.
pub fn disks_in_use(engine: &Engine) -> Result<Vec<(String, String)>, ProviderError> {
    let mut used = Vec::new();
    for vm in engine.list("/vms")? {
        let id = vm.attr("id").unwrap_or_default();
        let name = vm.text_at(&["name"]).unwrap_or(id);
        for a in engine.list(&format!("/vms/{id}/diskattachments"))? {
            if let Some(disk) = a.id_at(&["disk"]) {
                used.push((disk.to_owned(), name.to_owned()));
            }
        }
    }
    Ok(used)
}

/// Power VM `id` off (once the engine has made it: a clone is
/// `image_locked` until its disks are copied) and wait until it is down,
/// as removing it, or detaching its disks, needs.
pub fn stop(engine: &Engine, id: &str, key: &str) -> Result<(), ProviderError> {
    let path = format!("/vms/{id}");
    let what = format!("VM {id}");
    let vm = wait_for(engine, &path, &what, |v| {
        v.text_at(&["status"]) != Some("image_locked")
    })?;
    if !matches!(vm.text_at(&["status"]), Some("down" | "powering_down")) {
        engine.action(&format!("{path}/stop"), key, &format!("stop {id}"))?;
    }
    wait_for(engine, &path, &what, |v| {
        v.text_at(&["status"]) == Some("down")
    })
    .map(drop)
}

/// Remove the VMs `ids` (as `materialize` returned them) — only VMs
/// materialize made ([`made_by_rebound`]), all checked before any goes: any
/// other is `invalid-request` and nothing is removed. One already gone
/// counts as removed. Each is stopped; the disks it was materialized from
/// (imported by the host) are detached first and stay, then the VM goes
/// with the disks made for it (a clone's, a drill's copies). The ids
/// removed, and the disks that went with them.
pub fn remove_materialized(
    engine: &Engine,
    ids: &[String],
    key: &str,
) -> Result<Vec<String>, ProviderError> {
    let mut present = Vec::new();
    for id in ids {
        // Materialize's operation id (`<vm>/up`) names the VM too.
        let vm_id = id.split_once('/').map_or(id.as_str(), |(vm, _)| vm);
        let vm = match engine.get(&format!("/vms/{vm_id}")) {
            Ok(vm) => vm,
            Err(ProviderError::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        let made = made_by_rebound(&vm).ok_or_else(|| {
            ProviderError::InvalidRequest(format!(
                "workload '{id}' ({}) on site '{}' was not materialized by Rebound; it is not \
                 Rebound's to remove, so nothing was removed",
                vm.text_at(&["name"]).unwrap_or("unnamed"),
                engine.site
            ))
        })?;
        present.push((vm_id, made));
    }
    let mut removed: Vec<String> = ids.to_vec();
    for (vm, made) in present {
        stop(engine, vm, key)?;
        let copies = made.drill.as_deref().map(drill_prefix);
        for a in engine.list(&format!("/vms/{vm}/diskattachments"))? {
            let Some(disk) = a.id_at(&["disk"]) else {
                continue;
            };
            let alias = engine
                .get(&format!("/disks/{disk}"))?
                .text_at(&["alias"])
                .unwrap_or_default()
                .to_owned();
            let its_own = made.cloned
                || copies
                    .as_ref()
                    .is_some_and(|p| alias.starts_with(p.as_str()));
            if its_own {
                removed.push(disk.to_owned());
                continue;
            }
            // A disk it was materialized from (the host still counts on
            // it), or one the marks do not vouch was made for it: it stays.
            let attachment = a.attr("id").unwrap_or(disk);
            engine.delete(
                &format!("/vms/{vm}/diskattachments/{attachment}?detach_only=true"),
                key,
                &format!("detach {disk} from {vm}"),
            )?;
            info!("disk kept: not made for the workload"; "disk" => disk, "vm" => vm);
        }
        // What is still attached was made for the VM and goes with it.
        engine.delete(
            &format!("/vms/{vm}?detach_only=false"),
            key,
            &format!("remove {vm}"),
        )?;
    }
    Ok(removed)
}

/// A new VM: cloned from the recovery point's snapshot, or blank.
fn create(engine: &Engine, req: &MaterializeRequest, name: &str) -> Result<Element, ProviderError> {
    let cluster = setting(&req.site, "cluster", "Default");
    let mut body = Element::new("vm")
        .with_text("name", name)
        .with_text("description", description(req))
        .with(Element::new("cluster").with_text("name", cluster))
        .with(Element::new("template").with_text("name", "Blank"))
        .with_text("memory", req.spec.memory_mib << 20)
        .with(
            Element::new("cpu").with(
                Element::new("topology")
                    .with_text("sockets", req.spec.cpus.max(1))
                    .with_text("cores", 1)
                    .with_text("threads", 1),
            ),
        )
        .with(Element::new("bios").with_text(
            "type",
            match req.spec.firmware {
                Firmware::Uefi => "q35_ovmf",
                Firmware::Bios => "q35_sea_bios",
            },
        ));
    let mut path = "/vms".to_owned();
    if let DiskSource::RecoveryPoint(point) = &req.source {
        let (_, snapshot) = crate::points::split(point)?;
        body = body.with(
            Element::new("snapshots").with(Element::new("snapshot").with_attr("id", snapshot)),
        );
        path.push_str("?clone=true");
    }
    engine
        .send("POST", &path, Some(&body), &req.key, "create vm")?
        .ok_or_else(|| ProviderError::ProviderFailed(format!("adding VM '{name}' returned no VM")))
}

/// One NIC per spec NIC, on the mapped network's vNIC profile (the
/// isolated network for a drill).
fn nics(engine: &Engine, req: &MaterializeRequest, vm: &str) -> Result<(), ProviderError> {
    let existing: Vec<String> = engine
        .list(&format!("/vms/{vm}/nics"))?
        .iter()
        .filter_map(|n| n.text_at(&["name"]).map(str::to_owned))
        .collect();
    let profiles = profiles(engine)?;
    let isolated = setting(&req.site, "isolated_network", "isolated");
    for (i, nic) in req.spec.nics.iter().enumerate() {
        let name = format!("nic{}", i + 1);
        if existing.contains(&name) {
            continue;
        }
        let mapping = req
            .networks
            .iter()
            .find(|m| m.source_network == nic.network);
        let network = if req.isolated {
            isolated.clone()
        } else {
            mapping.map_or_else(|| nic.network.clone(), |m| m.target_network.clone())
        };
        let profile = profiles
            .iter()
            .find(|(_, n)| *n == network)
            .map(|(p, _)| p.clone())
            .ok_or_else(|| {
                ProviderError::InvalidRequest(format!(
                    "site '{}' has no network '{network}' (with a vNIC profile); fix the plan's \
                     network mapping",
                    req.site
                ))
            })?;
        let mut body = Element::new("nic")
            .with_text("name", &name)
            .with_text("interface", "virtio")
            .with(Element::new("vnic_profile").with_attr("id", profile));
        if let (Some(mac), Some(m)) = (&nic.mac, mapping)
            && m.keep_addresses
            && !req.isolated
        {
            body = body.with(Element::new("mac").with_text("address", mac));
        }
        engine.send(
            "POST",
            &format!("/vms/{vm}/nics"),
            Some(&body),
            &req.key,
            &name,
        )?;
    }
    Ok(())
}

fn running(detail: &str) -> OperationState {
    OperationState::Running(Running {
        percent: None,
        detail: detail.to_owned(),
    })
}

pub fn materialize_status(engine: &Engine, id: &str) -> Result<OperationState, ProviderError> {
    let (vm, want) = id.split_once('/').unwrap_or((id, "up"));
    let doc = engine.get(&format!("/vms/{vm}"))?;
    let status = doc.text_at(&["status"]).unwrap_or_default();
    if status != want {
        return Ok(running(status));
    }
    let workload = get_workload(engine, vm)?;
    Ok(OperationState::Succeeded(Outcome::Materialized(
        Materialized {
            workload,
            addresses: Vec::new(),
        },
    )))
}

/// The epoch recorded in a VM's tags, and whether it is fenced.
fn recorded(tags: &[(String, String)]) -> (u64, bool) {
    let epoch = tags
        .iter()
        .filter_map(|(_, n)| n.strip_prefix(EPOCH_TAG)?.parse().ok())
        .max()
        .unwrap_or(0);
    (epoch, tags.iter().any(|(_, n)| n == FENCED_TAG))
}

/// Fence (stop, record the epoch and the fence) or unfence (refused for an
/// older epoch than the one recorded; record the epoch, drop the fence,
/// start).
pub fn fence(req: &FenceRequest, fence: bool) -> Result<Operation, ProviderError> {
    let engine = Engine::of(&req.site)?;
    let vm = req.workload_id.as_str();
    let doc = engine.get(&format!("/vms/{vm}"))?;
    let tags = tags(&engine, vm)?;
    let (epoch, fenced) = recorded(&tags);
    if !fence && req.epoch < epoch {
        return Err(ProviderError::Conflict(format!(
            "VM '{vm}' was fenced under epoch {epoch}; epoch {} is stale, a newer primary exists",
            req.epoch
        )));
    }
    let epoch_tag = format!("{EPOCH_TAG}{}", req.epoch.max(epoch));
    for (tag_id, name) in &tags {
        if name.starts_with(EPOCH_TAG) && *name != epoch_tag {
            engine.delete(
                &format!("/vms/{vm}/tags/{tag_id}"),
                &req.key,
                &format!("untag {name}"),
            )?;
        }
    }
    ensure_tag(&engine, vm, &epoch_tag, &req.key)?;
    let status = doc.text_at(&["status"]).unwrap_or_default();
    if fence {
        if !fenced {
            ensure_tag(&engine, vm, FENCED_TAG, &req.key)?;
        }
        if !matches!(status, "down" | "powering_down") {
            engine.action(&format!("/vms/{vm}/stop"), &req.key, "stop")?;
        }
    } else {
        if let Some((tag_id, _)) = tags.iter().find(|(_, n)| n == FENCED_TAG) {
            engine.delete(&format!("/vms/{vm}/tags/{tag_id}"), &req.key, "unfence")?;
        }
        if status == "down" {
            engine.action(&format!("/vms/{vm}/start"), &req.key, "start")?;
        }
    }
    info!("fence"; "vm" => vm, "fenced" => fence, "epoch" => req.epoch);
    Ok(Operation {
        kind: if fence {
            OperationKind::Fence
        } else {
            OperationKind::Unfence
        },
        site: req.site.clone(),
        id: format!("{vm}/{}", req.epoch.max(epoch)),
    })
}

pub fn fence_status(
    engine: &Engine,
    id: &str,
    fence: bool,
) -> Result<OperationState, ProviderError> {
    let (vm, epoch) = id.split_once('/').unwrap_or((id, "0"));
    let status = engine
        .get(&format!("/vms/{vm}"))?
        .text_at(&["status"])
        .unwrap_or_default()
        .to_owned();
    let want = if fence { "down" } else { "up" };
    if status != want {
        return Ok(running(&status));
    }
    Ok(OperationState::Succeeded(Outcome::Fenced(FenceReport {
        workload_id: vm.to_owned(),
        epoch: epoch.parse().unwrap_or(0),
        write_blocked: fence,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(name: &str, description: &str) -> Element {
        Element::new("vm")
            .with_text("name", name)
            .with_text("description", description)
    }

    #[test]
    fn materialize_marks_are_read_back() {
        let cloned = vm(
            "web-1-0123456789ab",
            "rebound materialized web-1 cloned from a recovery point",
        );
        assert_eq!(
            made_by_rebound(&cloned),
            Some(Made {
                cloned: true,
                drill: None
            })
        );
        let drill = vm(
            "web-1-0123456789ab",
            "rebound materialized web-1 on copies of imported disks in drill run-7",
        );
        assert_eq!(
            made_by_rebound(&drill),
            Some(Made {
                cloned: false,
                drill: Some("run-7".into())
            })
        );
        let imported = vm(
            "db-1-abcdefabcdef",
            "rebound materialized db-1 on imported disks",
        );
        assert_eq!(
            made_by_rebound(&imported),
            Some(Made {
                cloned: false,
                drill: None
            })
        );
        // Described alike but named otherwise (an engine-side copy of a
        // standby), or not described so at all: not Rebound's.
        for other in [
            vm("web-1-copy", "rebound materialized web-1 on imported disks"),
            vm(
                "web-1-0123456789ab",
                "rebound materialized db-1 on imported disks",
            ),
            vm("web-1", ""),
            Element::new("vm").with_text("name", "web-1-0123456789ab"),
        ] {
            assert_eq!(made_by_rebound(&other), None, "{other:?}");
        }
    }
}

//! The data path for the host's data mover: image transfers. An export is
//! a download transfer of a recovery point's disk snapshot, an import an
//! upload transfer into a new disk; either is served by imageio at the
//! transfer's `transfer_url` (or `proxy_url` with the site's `use_proxy`),
//! which takes ranged `GET` and `PUT` with `Content-Range` — what the mover
//! sends. An import onto an earlier copy starts from the engine's copy of
//! that disk, so the data mover writes only the blocks that differ —
//! imageio lists no block digests, so the mover hashes the disk by reading
//! it — and reads back what it wrote to verify it.
//!
//! An import's operation id is `<transfer>/<disk>`: the engine drops a
//! finished transfer after a while, and a discarded import still finds the
//! disk it was writing. Releasing a transfer finalizes it; discarding an
//! import cancels its upload and deletes its disk.

use rebound_plugin_sdk::xml::Element;
use rebound_plugin_sdk::{
    DiskEndpoint, DiskFormat, ExportRequest, ImportRequest, Operation, OperationKind,
    OperationState, Outcome, ProviderError, Running, info,
};

use crate::engine::{Engine, encode, setting, short};
use crate::points;
use crate::vms::wait_for;

fn raw_only(format: DiskFormat) -> Result<(), ProviderError> {
    match format {
        DiskFormat::Raw => Ok(()),
        other => Err(ProviderError::Unsupported(format!(
            "the oVirt plugin transfers raw images only, not {other:?}"
        ))),
    }
}

/// A transfer that is not over yet.
fn open(t: &Element) -> bool {
    matches!(
        t.text_at(&["phase"]),
        Some("initializing" | "transferring" | "resuming")
    )
}

pub fn export(req: &ExportRequest) -> Result<Operation, ProviderError> {
    raw_only(req.format)?;
    let engine = Engine::of(&req.site)?;
    let (vm, snap) = points::split(&req.recovery_point_id)?;
    let image = engine
        .list(&format!("/vms/{vm}/snapshots/{snap}/disks"))?
        .into_iter()
        .find(|d| d.attr("id") == Some(req.disk_id.as_str()))
        .and_then(|d| d.text_at(&["image_id"]).map(str::to_owned))
        .ok_or_else(|| {
            ProviderError::NotFound(format!(
                "recovery point '{}' holds no disk '{}'",
                req.recovery_point_id, req.disk_id
            ))
        })?;
    // An open download of the same disk snapshot serves a repeated call.
    let existing = engine.list("/imagetransfers")?.into_iter().find(|t| {
        open(t)
            && t.text_at(&["direction"]) == Some("download")
            && t.id_at(&["snapshot"]) == Some(image.as_str())
    });
    let transfer = match existing {
        Some(t) => t,
        None => {
            let body = Element::new("image_transfer")
                .with(Element::new("snapshot").with_attr("id", &image))
                .with_text("direction", "download")
                .with_text("format", "raw");
            engine
                .send("POST", "/imagetransfers", Some(&body), &req.key, "export")?
                .ok_or_else(|| {
                    ProviderError::ProviderFailed("the transfer returned nothing".into())
                })?
        }
    };
    let id = transfer.attr("id").unwrap_or_default().to_owned();
    info!("export requested"; "transfer" => id, "disk" => req.disk_id);
    Ok(Operation {
        kind: OperationKind::ExportDisk,
        site: req.site.clone(),
        id,
    })
}

pub fn import(req: &ImportRequest) -> Result<Operation, ProviderError> {
    raw_only(req.format)?;
    if req.size_bytes == 0 {
        return Err(ProviderError::InvalidRequest(format!(
            "import '{}' asks for an empty disk",
            req.name
        )));
    }
    let engine = Engine::of(&req.site)?;
    // A new disk each time (the last good copy stays until this one is
    // verified); named after the key, so a repeated call finds it.
    let alias = format!("{}-{}", req.name, short(&req.key));
    let disk = match disk_named(&engine, &alias)? {
        Some(d) => d,
        None => {
            let domain = storage_domain(&engine)?;
            let base = base_disk(&engine, req.volume_id.as_deref(), req.size_bytes)?;
            let copy = match base {
                Some(base) => copy_of(&engine, &base, &alias, &domain, &req.key)?,
                None => None,
            };
            match copy {
                Some(disk) => disk,
                None => {
                    let body = Element::new("disk")
                        .with_text("name", &alias)
                        .with_text("provisioned_size", req.size_bytes)
                        // qcow2, as incremental backup needs; the
                        // transfers still move raw guest data.
                        .with_text("format", "cow")
                        .with_text("sparse", true)
                        .with_text("backup", "incremental")
                        .with(
                            Element::new("storage_domains")
                                .with(Element::new("storage_domain").with_attr("id", domain)),
                        );
                    engine
                        .send("POST", "/disks", Some(&body), &req.key, "disk")?
                        .ok_or_else(|| {
                            ProviderError::ProviderFailed("the disk add returned nothing".into())
                        })?
                }
            }
        }
    };
    let disk_id = disk.attr("id").unwrap_or_default().to_owned();
    let transfers = engine.list("/imagetransfers")?;
    let existing = transfers.iter().find(|t| {
        t.text_at(&["direction"]) == Some("upload") && t.id_at(&["disk"]) == Some(disk_id.as_str())
    });
    let id = match existing {
        Some(t) => t.attr("id").unwrap_or_default().to_owned(),
        None => {
            wait_for(
                &engine,
                &format!("/disks/{disk_id}"),
                &format!("disk '{alias}'"),
                |d| d.text_at(&["status"]) == Some("ok"),
            )?;
            let body = Element::new("image_transfer")
                .with(Element::new("disk").with_attr("id", &disk_id))
                .with_text("direction", "upload")
                .with_text("format", "raw");
            let t = engine
                .send("POST", "/imagetransfers", Some(&body), &req.key, "import")?
                .ok_or_else(|| {
                    ProviderError::ProviderFailed("the transfer returned nothing".into())
                })?;
            t.attr("id").unwrap_or_default().to_owned()
        }
    };
    info!("import requested"; "transfer" => id, "disk" => disk_id);
    Ok(Operation {
        kind: OperationKind::ImportDisk,
        site: req.site.clone(),
        id: format!("{id}/{disk_id}"),
    })
}

/// The transfer of an export's or import's operation id, and an import's
/// disk (an id without one, `<transfer>`, is an export's, or an import's
/// from before the disk was named in it).
fn parts(op_id: &str) -> (&str, Option<&str>) {
    match op_id.split_once('/') {
        Some((transfer, disk)) => (transfer, Some(disk)),
        None => (op_id, None),
    }
}

/// The disk an import starts from: the host's `volume-id` — a disk an
/// earlier import wrote, or a disk snapshot (a recovery point's copy),
/// whose disk's data is the nearest at hand, since the engine copies disks
/// but not a disk snapshot alone. None (a blank disk) when there is none,
/// it is gone, or its size differs; the data mover then writes every block
/// that is not a hole.
fn base_disk(
    engine: &Engine,
    volume: Option<&str>,
    size: u64,
) -> Result<Option<Element>, ProviderError> {
    let Some(volume) = volume else {
        return Ok(None);
    };
    let disk = match engine.get(&format!("/disks/{volume}")) {
        Ok(disk) => Some(disk),
        Err(ProviderError::NotFound(_)) => {
            let domain = storage_domain(engine)?;
            let owner = engine
                .list(&format!("/storagedomains/{domain}/disksnapshots"))?
                .into_iter()
                .find(|s| s.attr("id") == Some(volume))
                .and_then(|s| s.id_at(&["disk"]).map(str::to_owned));
            match owner {
                Some(d) => match engine.get(&format!("/disks/{d}")) {
                    Ok(disk) => Some(disk),
                    Err(ProviderError::NotFound(_)) => None,
                    Err(e) => return Err(e),
                },
                None => None,
            }
        }
        Err(e) => return Err(e),
    };
    let disk = disk.filter(|d| {
        d.text_at(&["provisioned_size"])
            .and_then(|s| s.parse::<u64>().ok())
            == Some(size)
    });
    if disk.is_none() {
        info!("import onto a blank disk"; "base" => volume, "reason" => "no disk of that size holds it");
    }
    Ok(disk)
}

/// Copy `base` to a new disk named `alias` (the engine's disk copy); the
/// new disk, found by its name. A base that is locked (its own transfer
/// still finalizing, a backup) is waited for, and is `transient` if it
/// stays locked: it will be free soon, and starting blank would move the
/// whole disk. None when the engine refuses the copy for a lasting reason
/// (its VM runs): the import then starts blank.
pub fn copy_of(
    engine: &Engine,
    base: &Element,
    alias: &str,
    domain: &str,
    key: &str,
) -> Result<Option<Element>, ProviderError> {
    let id = base.attr("id").unwrap_or_default();
    if base.text_at(&["status"]) != Some("ok") {
        wait_for(
            engine,
            &format!("/disks/{id}"),
            &format!("disk '{id}', the import's base,"),
            |d| d.text_at(&["status"]) == Some("ok"),
        )?;
    }
    let body = Element::new("action")
        .with(Element::new("storage_domain").with_attr("id", domain))
        .with(Element::new("disk").with_text("name", alias));
    match engine.send(
        "POST",
        &format!("/disks/{id}/copy"),
        Some(&body),
        key,
        &format!("copy to {alias}"),
    ) {
        Ok(_) => info!("import starts from a copy"; "base" => id, "disk" => alias),
        Err(ProviderError::Conflict(why)) => {
            info!("import onto a blank disk"; "base" => id, "reason" => why);
            return Ok(None);
        }
        Err(e) => return Err(e),
    }
    disk_named(engine, alias)?.map(Some).ok_or_else(|| {
        ProviderError::Transient(format!(
            "the copy of disk '{id}' to '{alias}' is not listed yet"
        ))
    })
}

/// The disks whose names start with `prefix` (a search `name=prefix*`).
pub fn disks_named(engine: &Engine, prefix: &str) -> Result<Vec<Element>, ProviderError> {
    Ok(engine
        .list(&format!(
            "/disks?search={}",
            encode(&format!("name={prefix}*"))
        ))?
        .into_iter()
        .filter(|d| d.text_at(&["alias"]).is_some_and(|a| a.starts_with(prefix)))
        .collect())
}

/// The disk named `alias`, if the engine has one.
pub fn disk_named(engine: &Engine, alias: &str) -> Result<Option<Element>, ProviderError> {
    Ok(disks_named(engine, alias)?
        .into_iter()
        .find(|d| d.text_at(&["alias"]) == Some(alias)))
}

/// The site's `storage_domain` (a name), else the first data domain.
pub fn storage_domain(engine: &Engine) -> Result<String, ProviderError> {
    let wanted = setting(&engine.site, "storage_domain", "");
    engine
        .list("/storagedomains")?
        .into_iter()
        .find(|d| {
            if wanted.is_empty() {
                d.text_at(&["type"]) == Some("data")
            } else {
                d.text_at(&["name"]) == Some(wanted.as_str())
            }
        })
        .and_then(|d| d.attr("id").map(str::to_owned))
        .ok_or_else(|| {
            ProviderError::NotFound(format!(
                "site '{}' has no data storage domain{}",
                engine.site,
                if wanted.is_empty() {
                    String::new()
                } else {
                    format!(" named '{wanted}'")
                }
            ))
        })
}

/// A transfer's endpoint once it is `transferring`.
pub fn status(engine: &Engine, op_id: &str, import: bool) -> Result<OperationState, ProviderError> {
    let (id, _) = parts(op_id);
    let t = engine.get(&format!("/imagetransfers/{id}"))?;
    let phase = t.text_at(&["phase"]).unwrap_or_default();
    match phase {
        "transferring" => {}
        "initializing" | "resuming" => {
            return Ok(OperationState::Running(Running {
                percent: None,
                detail: phase.to_owned(),
            }));
        }
        other => {
            return Ok(OperationState::Failed(ProviderError::ProviderFailed(
                format!(
                    "image transfer '{id}' is {other}, not transferring; start the export or import again"
                ),
            )));
        }
    }
    let url_field = if setting(&engine.site, "use_proxy", "false") == "true" {
        "proxy_url"
    } else {
        "transfer_url"
    };
    let url = t
        .text_at(&[url_field])
        .ok_or_else(|| {
            ProviderError::ProviderFailed(format!("transfer '{id}' has no {url_field}"))
        })?
        .to_owned();
    let disk = t
        .id_at(&["disk"])
        .ok_or_else(|| ProviderError::ProviderFailed(format!("transfer '{id}' names no disk")))?;
    let size = engine
        .get(&format!("/disks/{disk}"))?
        .text_at(&["provisioned_size"])
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ProviderError::ProviderFailed(format!("disk '{disk}' has no size")))?;
    Ok(OperationState::Succeeded(Outcome::DiskEndpoint(
        DiskEndpoint {
            url,
            format: DiskFormat::Raw,
            size_bytes: size,
            // The ticket in the URL is the credential.
            headers: Vec::new(),
            ranged: true,
            block_digests: false,
            volume_id: import.then(|| disk.to_owned()),
            expires_at: None,
        },
    )))
}

/// Finalize the transfer of an export or import (an upload's disk
/// unlocks); one already over or gone is fine.
pub fn release(engine: &Engine, op_id: &str, key: &str) -> Result<(), ProviderError> {
    let (id, _) = parts(op_id);
    match engine.action(
        &format!("/imagetransfers/{id}/finalize"),
        key,
        &format!("finalize {id}"),
    ) {
        Ok(()) | Err(ProviderError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A transfer phase after which imageio serves the ticket no more, or is
/// about to stop (`finalizing_*`): nothing to cancel.
fn ending(phase: &str) -> bool {
    ["finalizing", "finished", "cancelled"]
        .iter()
        .any(|p| phase.starts_with(p))
}

/// Abandon the imports `ids` (their operation ids), whatever stage they
/// reached: each upload still open is cancelled (the engine then removes
/// the disk itself), and the disk it was writing is deleted once the
/// engine unlocks it — an import finalized before it was abandoned too.
/// Nothing is finalized, so no disk is verified or made usable. What is
/// gone already counts as removed. All are checked first: an id that is
/// no upload, or whose disk a VM now uses (a failed run's workload: remove
/// it first), fails the cleanup before anything changes. The ids, and the
/// disks deleted.
pub fn discard_imports(
    engine: &Engine,
    ids: &[String],
    key: &str,
) -> Result<Vec<String>, ProviderError> {
    let mut imports = Vec::new();
    for op_id in ids {
        let (id, named) = parts(op_id);
        let transfer = match engine.get(&format!("/imagetransfers/{id}")) {
            Ok(t) => Some(t),
            Err(ProviderError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        // The phase of a transfer the engine still has, and its disk.
        let phase = transfer
            .as_ref()
            .map(|t| t.text_at(&["phase"]).unwrap_or_default().to_owned());
        let disk = match &transfer {
            Some(t) => {
                let writes = t.id_at(&["disk"]);
                if t.text_at(&["direction"]) != Some("upload")
                    || named.is_some_and(|d| Some(d) != writes)
                {
                    return Err(ProviderError::InvalidRequest(format!(
                        "operation '{op_id}' on site '{}' is no import (image transfer '{id}' \
                         uploads to no disk '{}'); nothing was discarded",
                        engine.site,
                        named.unwrap_or_default()
                    )));
                }
                writes.or(named)
            }
            None => named,
        };
        if disk.is_none() {
            info!("import already gone, its disk unknown"; "operation" => op_id.as_str());
        }
        imports.push((op_id, id, phase, disk.map(str::to_owned)));
    }
    let in_use = crate::vms::disks_in_use(engine)?;
    for (op_id, _, _, disk) in &imports {
        if let Some((disk, vm)) = in_use
            .iter()
            .find(|(d, _)| Some(d.as_str()) == disk.as_deref())
        {
            return Err(ProviderError::Conflict(format!(
                "disk '{disk}' of import '{op_id}' on site '{}' is attached to VM '{vm}': it is \
                 a workload's disk now; remove that workload (cleanup of workloads keeps the \
                 disks it was materialized from) before discarding the import",
                engine.site
            )));
        }
    }
    let mut removed = Vec::new();
    for (op_id, id, phase, disk) in imports {
        if phase.is_some_and(|p| !ending(&p)) {
            match engine.action(
                &format!("/imagetransfers/{id}/cancel"),
                key,
                &format!("cancel {id}"),
            ) {
                Ok(()) | Err(ProviderError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        removed.push(op_id.clone());
        let Some(disk) = disk else {
            continue;
        };
        // Locked while the transfer ends; the engine may remove it itself.
        let path = format!("/disks/{disk}");
        match wait_for(engine, &path, &format!("disk '{disk}'"), |d| {
            d.text_at(&["status"]) != Some("locked")
        }) {
            Ok(_) => engine.delete(&path, key, &format!("remove {disk}"))?,
            Err(ProviderError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        info!("import discarded"; "operation" => op_id.as_str(), "disk" => disk.as_str());
        removed.push(disk);
    }
    Ok(removed)
}

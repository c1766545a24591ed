//! Changed-block listing through the engine's incremental backups.
//!
//! imageio lists the blocks written since a checkpoint (`extents?context=
//! dirty`) only inside an incremental backup, never between two snapshots.
//! So every recovery point is taken right after a checkpoint — a backup
//! started and finalized at once, its data never read — whose id the
//! snapshot's description keeps; and `changed-blocks` opens an incremental
//! backup of the disk from the base point's checkpoint, reads its dirty
//! extents through an image transfer, and finalizes both. The checkpoint
//! precedes the base point's snapshot and the backup follows the target's,
//! so the blocks listed are a superset of those that differ between the two
//! points: every block written since, on the engine's own write tracking.
//!
//! Checkpoints of points the plan no longer keeps are removed at their
//! cleanup (`prune`). Only backups this plugin started (described
//! `rebound …`), and their checkpoints, are finalized or removed by it; another product's backup in progress is left alone — the point
//! is then taken without a checkpoint, and `changed-blocks` on it answers
//! `unsupported`, so the host compares block digests instead.

use rebound_plugin_sdk::http;
use rebound_plugin_sdk::xml::Element;
use rebound_plugin_sdk::{ByteRange, ChangedBlocksRequest, ProviderError, info, warn};

use crate::engine::{Engine, short};
use crate::points;
use crate::vms::wait_for;

/// What a backup this plugin starts says of itself.
const OURS: &str = "rebound ";

/// A backup phase after which the VM may be backed up again.
fn over(phase: Option<&str>) -> bool {
    matches!(phase, Some("succeeded" | "failed"))
}

/// Bring this plugin's unfinished backups of `vm` to an end (finalized,
/// waited for); another's is a `conflict`.
fn settle(engine: &Engine, vm: &str, key: &str) -> Result<(), ProviderError> {
    for b in engine.list(&format!("/vms/{vm}/backups"))? {
        let phase = b.text_at(&["phase"]);
        if over(phase) {
            continue;
        }
        let id = b.attr("id").unwrap_or_default();
        if !b
            .text_at(&["description"])
            .is_some_and(|d| d.starts_with(OURS))
        {
            return Err(ProviderError::Conflict(format!(
                "VM '{vm}' has a backup in progress that Rebound did not start ({id}, phase {}); \
                 it is left to its owner",
                phase.unwrap_or("unknown")
            )));
        }
        finalize(engine, vm, id, key)?;
    }
    Ok(())
}

/// Finalize a backup once it is ready, and wait until it is over.
fn finalize(engine: &Engine, vm: &str, id: &str, key: &str) -> Result<(), ProviderError> {
    let path = format!("/vms/{vm}/backups/{id}");
    let what = format!("backup '{id}' of VM '{vm}'");
    let doc = wait_for(engine, &path, &what, |b| {
        matches!(
            b.text_at(&["phase"]),
            Some("ready" | "succeeded" | "failed")
        )
    })?;
    if doc.text_at(&["phase"]) == Some("ready") {
        engine.action(&format!("{path}/finalize"), key, &format!("finalize {id}"))?;
    }
    wait_for(engine, &path, &what, |b| over(b.text_at(&["phase"]))).map(drop)
}

/// Start a backup of `disks` of `vm` (from `from`, when incremental) and
/// wait until it is ready: the backup element.
fn start(
    engine: &Engine,
    vm: &str,
    disks: &[String],
    from: Option<&str>,
    key: &str,
    purpose: &str,
) -> Result<Element, ProviderError> {
    let mut body = Element::new("backup").with_text("description", format!("{OURS}{purpose}"));
    if let Some(from) = from {
        body = body.with_text("from_checkpoint_id", from);
    }
    let mut list = Element::new("disks");
    for d in disks {
        list = list.with(Element::new("disk").with_attr("id", d));
    }
    let backup = engine
        .send(
            "POST",
            &format!("/vms/{vm}/backups"),
            Some(&body.with(list)),
            key,
            purpose,
        )?
        .ok_or_else(|| ProviderError::ProviderFailed("the backup returned nothing".into()))?;
    let id = backup.attr("id").unwrap_or_default().to_owned();
    let ready = wait_for(
        engine,
        &format!("/vms/{vm}/backups/{id}"),
        &format!("backup '{id}' of VM '{vm}'"),
        |b| matches!(b.text_at(&["phase"]), Some("ready" | "failed")),
    )?;
    if ready.text_at(&["phase"]) == Some("failed") {
        return Err(ProviderError::ProviderFailed(format!(
            "backup '{id}' of VM '{vm}' failed"
        )));
    }
    Ok(ready)
}

/// Take a checkpoint of every disk of `vm` for the recovery point keyed
/// `key`: its id, or None (logged) when the engine would not take one.
pub fn checkpoint(engine: &Engine, vm: &str, key: &str) -> Option<String> {
    let taken = (|| {
        settle(engine, vm, key)?;
        let disks: Vec<String> = engine
            .list(&format!("/vms/{vm}/diskattachments"))?
            .iter()
            .filter_map(|a| a.id_at(&["disk"]).or_else(|| a.attr("id")))
            .map(str::to_owned)
            .collect();
        let backup = start(engine, vm, &disks, None, key, "checkpoint")?;
        let id = backup.attr("id").unwrap_or_default();
        let checkpoint = backup
            .text_at(&["to_checkpoint_id"])
            .map(str::to_owned)
            .ok_or_else(|| {
                ProviderError::ProviderFailed(format!("backup '{id}' names no checkpoint"))
            })?;
        finalize(engine, vm, id, key)?;
        Ok::<_, ProviderError>(checkpoint)
    })();
    match taken {
        Ok(c) => Some(c),
        Err(e) => {
            warn!("recovery point taken without a checkpoint: changed-blocks will not list its delta"; "vm" => vm, "error" => e.to_string());
            None
        }
    }
}

/// Remove the oldest checkpoints of `vm` that no recovery point needs any
/// more, root first as the engine allows: only ones this plugin made (the
/// checkpoints of its backups), stopping at the first a remaining point
/// was taken after, at another product's, or at one the engine will not
/// remove yet (a backup from it running). So the chain is no longer than
/// the points the plan keeps, with the listings between them. How many
/// went.
pub fn prune(engine: &Engine, vm: &str, key: &str) -> Result<usize, ProviderError> {
    let needed: Vec<String> = engine
        .list(&format!("/vms/{vm}/snapshots"))?
        .iter()
        .filter_map(|s| points::checkpoint_of(s.text_at(&["description"])?).map(str::to_owned))
        .collect();
    let ours: Vec<String> = engine
        .list(&format!("/vms/{vm}/backups"))?
        .iter()
        .filter(|b| {
            b.text_at(&["description"])
                .is_some_and(|d| d.starts_with(OURS))
        })
        .filter_map(|b| b.text_at(&["to_checkpoint_id"]).map(str::to_owned))
        .collect();
    let links: Vec<(String, Option<String>)> = engine
        .list(&format!("/vms/{vm}/checkpoints"))?
        .iter()
        .filter_map(|c| {
            let id = c.attr("id")?.to_owned();
            Some((id, c.text_at(&["parent_id"]).map(str::to_owned)))
        })
        .collect();
    let mut removed = 0;
    for c in chain(&links) {
        if needed.contains(&c) || !ours.contains(&c) {
            break;
        }
        match engine.delete(
            &format!("/vms/{vm}/checkpoints/{c}"),
            key,
            &format!("remove checkpoint {c}"),
        ) {
            Ok(()) => removed += 1,
            Err(ProviderError::Conflict(why)) => {
                info!("checkpoint kept for now"; "vm" => vm, "checkpoint" => c, "reason" => why);
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// A VM's checkpoints as `(id, parent)`, in chain order from the root.
fn chain(links: &[(String, Option<String>)]) -> Vec<String> {
    let known = |id: &Option<String>| {
        id.as_ref()
            .is_some_and(|p| links.iter().any(|(c, _)| c == p))
    };
    let mut out = Vec::new();
    let mut next = links.iter().find(|(_, parent)| !known(parent));
    while let Some((id, _)) = next {
        if out.contains(id) {
            break;
        }
        out.push(id.clone());
        next = links.iter().find(|(_, parent)| parent.as_ref() == Some(id));
    }
    out
}

/// The byte ranges of the disk written since the base point's checkpoint.
pub fn changed_blocks(req: &ChangedBlocksRequest) -> Result<Vec<ByteRange>, ProviderError> {
    let engine = Engine::of(&req.site)?;
    let (vm, base) = points::split(&req.base)?;
    let (target_vm, target) = points::split(&req.target)?;
    if vm != target_vm {
        return Err(ProviderError::InvalidRequest(format!(
            "recovery points '{}' and '{}' are of different VMs",
            req.base, req.target
        )));
    }
    engine.get(&format!("/vms/{vm}/snapshots/{target}"))?;
    let description = engine
        .get(&format!("/vms/{vm}/snapshots/{base}"))?
        .text_at(&["description"])
        .unwrap_or_default()
        .to_owned();
    let checkpoint = points::checkpoint_of(&description).ok_or_else(|| {
        ProviderError::Unsupported(format!(
            "recovery point '{}' was taken without a checkpoint, so the engine lists no \
             changes since it",
            req.base
        ))
    })?;
    let known = engine
        .list(&format!("/vms/{vm}/checkpoints"))?
        .iter()
        .any(|c| c.attr("id") == Some(checkpoint));
    if !known {
        return Err(ProviderError::NotFound(format!(
            "checkpoint '{checkpoint}' of recovery point '{}' is gone from VM '{vm}'",
            req.base
        )));
    }
    // The same request always carries the same correlation ids.
    let key = format!("changed-blocks/{}/{}/{}", req.base, req.target, req.disk_id);
    settle(&engine, vm, &key)?;
    let disks = [req.disk_id.clone()];
    let backup = start(
        &engine,
        vm,
        &disks,
        Some(checkpoint),
        &key,
        "changed-blocks",
    )?;
    let backup = backup.attr("id").unwrap_or_default().to_owned();
    let mut transfer = None;
    let listed = dirty_extents(&engine, &backup, &req.disk_id, &key, &mut transfer);
    if let Some(t) = &transfer {
        crate::transfer::release(&engine, t, &key)?;
    }
    finalize(&engine, vm, &backup, &key)?;
    let ranges = listed?;
    let bytes: u64 = ranges.iter().map(|r| r.length).sum();
    info!("changed blocks listed"; "vm" => vm, "disk" => req.disk_id, "checkpoint" => checkpoint, "bytes" => bytes, "short" => short(&key));
    Ok(ranges)
}

/// Open a download of the backup's disk (its id into `transfer`) and read
/// the dirty extents: the dirty ones, sorted, adjacent ones joined.
fn dirty_extents(
    engine: &Engine,
    backup: &str,
    disk: &str,
    key: &str,
    transfer: &mut Option<String>,
) -> Result<Vec<ByteRange>, ProviderError> {
    let body = Element::new("image_transfer")
        .with(Element::new("disk").with_attr("id", disk))
        .with(Element::new("backup").with_attr("id", backup))
        .with_text("direction", "download")
        .with_text("format", "raw");
    let t = engine
        .send("POST", "/imagetransfers", Some(&body), key, "dirty extents")?
        .ok_or_else(|| ProviderError::ProviderFailed("the transfer returned nothing".into()))?;
    let id = t.attr("id").unwrap_or_default().to_owned();
    *transfer = Some(id.clone());
    let t = wait_for(
        engine,
        &format!("/imagetransfers/{id}"),
        &format!("image transfer '{id}'"),
        |t| {
            !matches!(
                t.text_at(&["phase"]),
                Some("initializing" | "resuming") | None
            )
        },
    )?;
    if t.text_at(&["phase"]) != Some("transferring") {
        return Err(ProviderError::ProviderFailed(format!(
            "image transfer '{id}' is {}, not transferring",
            t.text_at(&["phase"]).unwrap_or("unknown")
        )));
    }
    // Through the engine's imageio proxy (the site's `imageio_proxy`
    // grant), not the hosts' daemons the data mover reads.
    let url = t
        .text_at(&["proxy_url"])
        .or_else(|| t.text_at(&["transfer_url"]))
        .ok_or_else(|| {
            ProviderError::ProviderFailed(format!("image transfer '{id}' has no proxy_url"))
        })?;
    // The ticket in the URL is the transfer's credential: kept out of errors.
    let hide = |e: ProviderError| {
        e.map_message(|m| m.replace(url, &format!("<the proxy URL of transfer {id}>")))
    };
    let extents: Vec<serde_json::Value> = http::get(format!("{url}/extents?context=dirty"))
        .timeout_ms(engine.timeout_ms())
        .send()
        .and_then(http::Response::error_for_status)
        .map_err(hide)?
        .json()?;
    Ok(join(
        extents
            .iter()
            .filter(|e| e["dirty"] == true)
            .filter_map(|e| {
                Some(ByteRange {
                    offset: e["start"].as_u64()?,
                    length: e["length"].as_u64()?,
                })
            }),
    ))
}

/// Sorted ranges with touching ones joined.
fn join(ranges: impl Iterator<Item = ByteRange>) -> Vec<ByteRange> {
    let mut sorted: Vec<ByteRange> = ranges.filter(|r| r.length > 0).collect();
    sorted.sort_by_key(|r| r.offset);
    let mut out: Vec<ByteRange> = Vec::with_capacity(sorted.len());
    for r in sorted {
        match out.last_mut() {
            Some(last) if r.offset <= last.offset + last.length => {
                last.length = last.length.max(r.offset + r.length - last.offset);
            }
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(offset: u64, length: u64) -> ByteRange {
        ByteRange { offset, length }
    }

    #[test]
    fn touching_ranges_join_in_order() {
        let joined = join([r(100, 10), r(0, 10), r(10, 5), r(105, 20), r(50, 0)].into_iter());
        let pairs: Vec<(u64, u64)> = joined.iter().map(|r| (r.offset, r.length)).collect();
        assert_eq!(pairs, [(0, 15), (100, 25)]);
        assert!(over(Some("succeeded")) && over(Some("failed")) && !over(Some("ready")));
    }

    #[test]
    fn checkpoints_chain_from_the_root() {
        let link = |id: &str, parent: Option<&str>| (id.to_owned(), parent.map(str::to_owned));
        let links = [
            link("c3", Some("c2")),
            link("c1", Some("gone")),
            link("c2", Some("c1")),
        ];
        assert_eq!(chain(&links), ["c1", "c2", "c3"]);
        assert!(chain(&[]).is_empty());
    }
}

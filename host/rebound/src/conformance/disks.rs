//! The kit's disk scenarios, as a cross-platform move uses them:
//! `export-disk` (the recovery point's first disk served at an endpoint
//! inside the site's egress, its first 4 KiB read back — and, with guest
//! writes, the range the kit wrote just before the point, which must hold
//! that write and not the one just after), `import-disk` (a
//! volume of that size prepared for writing, and the exported disk copied
//! into it by the data mover — every block and the whole disk verified by
//! digest), and `import-disk` onto that volume (`volume-id`, as a failback
//! resyncs onto the copy it supersedes) after the kit wrote a marker into
//! it: the new endpoint must start from the volume's data — the marker
//! read back from it before the copy — so the resync writes only the block
//! holding the marker. The endpoints are released and the imported volumes
//! deleted afterwards. Last, an import abandoned before its endpoint was
//! asked for is discarded (`cleanup` of `discarded-imports`, contract 0.2),
//! twice.

use std::time::Instant;

use rebound_datamover::{CopyOptions, MemoryCheckpoint, read_range, write_range};
use rebound_engine::mover_endpoint;
use rebound_runtime::bindings::exports::{
    CleanupRequest, CleanupScope, ExportRequest, ImportRequest,
};
use rebound_runtime::bindings::{DiskEndpoint, DiskFormat, Operation, Outcome, RecoveryPoint};

use super::{Kit, TestArgs};

pub(super) const IMPORT: &str = "import-disk";
pub(super) const IMPORT_ONTO: &str = "import-disk onto a volume";
pub(super) const DISCARD: &str = "cleanup (discarded import)";

/// Run the disk scenarios on the point's first disk.
pub(super) async fn scenarios(kit: &mut Kit, args: &TestArgs, site: &str, point: &RecoveryPoint) {
    let skipped = |s: &str| args.skip.iter().any(|x| x == s);
    let exported = if skipped("export-disk") {
        kit.skip("export-disk", "skipped by --skip");
        None
    } else if kit.offers("export-disk") {
        let started = Instant::now();
        match export(kit, site, point).await {
            Ok((op, endpoint, detail)) => {
                // With guest writes: the export is of the point, not of
                // the disk as it is now.
                let result = match point_in_time(kit, site, point, &endpoint).await {
                    None => Ok(detail),
                    Some(Ok(held)) => Ok(format!("{detail}; {held}")),
                    Some(Err(e)) => Err(format!("{detail}; {e}")),
                };
                kit.record("export-disk", started, result);
                Some((op, endpoint))
            }
            Err((op, e)) => {
                kit.record("export-disk", started, Err(e));
                release(kit, site, op.into_iter().collect()).await;
                None
            }
        }
    } else {
        kit.skip("export-disk", "the plugin does not offer `export-disk`");
        None
    };
    let why_not = if skipped(IMPORT) {
        Some("skipped by --skip".to_owned())
    } else if !kit.offers("import-disk") {
        Some("the plugin does not offer `import-disk`".to_owned())
    } else if exported.is_none() {
        Some("needs an export-disk endpoint to copy from".to_owned())
    } else {
        None
    };
    match (why_not, exported) {
        (None, Some((op, source))) => {
            imports(kit, site, &source).await;
            release(kit, site, vec![op]).await;
            discarded_import(kit, site, source.size_bytes).await;
        }
        (why, exported) => {
            let why = why.unwrap_or_default();
            kit.skip(IMPORT, &why);
            kit.skip(IMPORT_ONTO, &why);
            kit.skip(DISCARD, &why);
            if let Some((op, _)) = exported {
                release(kit, site, vec![op]).await;
            }
        }
    }
}

/// Export the point's first disk and read its first block through the
/// endpoint, as the data mover would; the endpoint is left for the imports
/// and released by the caller (on failure too: the operation, if any).
pub(super) async fn export(
    kit: &Kit,
    site: &str,
    point: &RecoveryPoint,
) -> Result<(Operation, DiskEndpoint, String), (Option<Operation>, String)> {
    let disk = point
        .disks
        .first()
        .ok_or((None, "the point has no disk".to_owned()))?;
    let op = kit
        .call(
            &[site],
            ExportRequest {
                key: kit.key("export"),
                site: site.to_owned(),
                recovery_point_id: point.id.clone(),
                disk_id: disk.disk_id.clone(),
                format: DiskFormat::Raw,
            },
        )
        .await
        .map_err(|e| (None, e.to_string()))?;
    let failed = |e: String| (Some(op.clone()), e);
    let endpoint = match kit.finish(&[site], op.clone()).await.map_err(failed)? {
        Outcome::DiskEndpoint(e) => e,
        other => return Err(failed(format!("expected a disk endpoint, got {other:?}"))),
    };
    let grant = &kit.sites[site].grant;
    grant
        .check_data_url(&endpoint.url)
        .map_err(|e| failed(format!("the endpoint is outside the site's egress: {e}")))?;
    // Read as the data mover will: its headers, the site's CA.
    let mover_view = mover_endpoint(&endpoint, grant.ca_pem.as_deref());
    let bytes = rebound_datamover::read_range(&mover_view, 0, 4096.min(endpoint.size_bytes))
        .await
        .map_err(|e| failed(format!("reading the endpoint: {e}")))?;
    if bytes.is_empty() {
        return Err(failed("reading the endpoint answered no bytes".to_owned()));
    }
    let detail = format!(
        "{} bytes of {} readable at the endpoint",
        bytes.len(),
        endpoint.size_bytes
    );
    Ok((op, endpoint, detail))
}

/// What an export of `point` on `site` holds of the kit's guest writes
/// around the first point ([`super::changes::PointInTime`]): whether it
/// reads the write made just before it; `None` without guest writes on
/// that disk.
pub(super) async fn point_in_time(
    kit: &Kit,
    site: &str,
    point: &RecoveryPoint,
    endpoint: &DiskEndpoint,
) -> Option<Result<String, String>> {
    let disk = point.disks.first()?;
    let pit = kit
        .point_in_time
        .as_ref()
        .filter(|p| p.disk == disk.disk_id)?;
    let view = mover_endpoint(endpoint, kit.sites[site].grant.ca_pem.as_deref());
    let (start, end) = (pit.range.offset, pit.range.offset + pit.range.length);
    Some(
        match rebound_datamover::read_range(&view, start, end).await {
            Ok(read) => pit.judge(&read),
            Err(e) => Err(format!("reading the endpoint at {start}: {e}")),
        },
    )
}

/// The two import scenarios, from the exported `source`.
async fn imports(kit: &mut Kit, site: &str, source: &DiskEndpoint) {
    let mut transfers = Vec::new();
    let mut volumes = Vec::new();

    let started = Instant::now();
    let first = import(kit, site, source, None, "import", &mut transfers).await;
    let marker = Marker::new(source.size_bytes, &kit.nonce);
    let first = match first {
        Ok((volume, report, target)) => {
            volumes.push(volume.clone());
            // A marker only this volume holds, for the import onto it.
            let marked = write_range(
                &mover_endpoint(&target, kit.sites[site].grant.ca_pem.as_deref()),
                marker.offset,
                marker.data.clone(),
            )
            .await;
            let result = match marked {
                Ok(()) => Ok(format!(
                    "{} bytes copied into volume {volume} and verified ({})",
                    report.bytes_written, report.mode
                )),
                Err(e) => Err(format!(
                    "copied and verified, but a write of {} bytes at {} to the import's \
                     endpoint failed: {e}",
                    marker.data.len(),
                    marker.offset
                )),
            };
            let ok = result.is_ok();
            kit.record(IMPORT, started, result);
            ok.then_some(volume)
        }
        Err(e) => {
            kit.record(IMPORT, started, Err(e));
            None
        }
    };

    // Released before the volume is imported onto, as the engine releases
    // a transfer once its copy is verified: a platform may hold a disk
    // locked while its transfer is open (oVirt does).
    release(kit, site, std::mem::take(&mut transfers)).await;
    match first {
        None => kit.skip(IMPORT_ONTO, "needs a volume from import-disk"),
        Some(base) => {
            let started = Instant::now();
            let again = import(
                kit,
                site,
                source,
                Some((base.clone(), &marker)),
                "import-onto",
                &mut transfers,
            )
            .await;
            let block = marker.block(CopyOptions::default().block_size, source.size_bytes);
            let result = match again {
                Ok((volume, report, _)) => {
                    if !volumes.contains(&volume) {
                        volumes.push(volume.clone());
                    }
                    if report.bytes_written == block {
                        Ok(format!(
                            "volume {volume} started from {base}, the kit's marker in it: only \
                             that block rewritten, {block} bytes ({})",
                            report.mode
                        ))
                    } else {
                        Err(format!(
                            "the import onto {base} did not start from its data: {} of {} \
                             bytes written where only the marker's block ({block} bytes) \
                             differs; an import given `volume-id` must start from that volume \
                             (or a copy of it), so a failback moves only the changes",
                            report.bytes_written, source.size_bytes
                        ))
                    }
                }
                Err(e) => Err(e),
            };
            kit.record(IMPORT_ONTO, started, result);
        }
    }

    release(kit, site, transfers).await;
    if !volumes.is_empty() {
        let removed = kit
            .call(
                &[site],
                CleanupRequest {
                    key: kit.key("import-volumes"),
                    site: site.to_owned(),
                    scope: CleanupScope::RecoveryPoints(volumes.clone()),
                },
            )
            .await;
        let removed = match removed {
            Ok(op) => kit.finish(&[site], op).await.map(drop),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = removed {
            kit.record(
                "cleanup (imported volumes)",
                Instant::now(),
                Err(format!("deleting the imported volumes {volumes:?}: {e}")),
            );
        }
    }
}

/// A few bytes the kit writes into the first imported volume, which only
/// that volume holds: an import onto it must start with them.
struct Marker {
    offset: u64,
    data: Vec<u8>,
}

impl Marker {
    /// Up to 4 KiB in the middle of a disk of `size` bytes.
    fn new(size: u64, nonce: &str) -> Self {
        let len = size.min(4096);
        let offset = ((size / 2) & !4095).min(size - len);
        let text = format!("rebound conformance marker {nonce} ");
        let data = text.bytes().cycle().take(len as usize).collect();
        Self { offset, data }
    }

    /// The length of the mover's block (of `block_size`) holding it.
    fn block(&self, block_size: u64, size: u64) -> u64 {
        let start = self.offset / block_size * block_size;
        (start + block_size).min(size) - start
    }
}

/// Import a volume of the source's size (onto a base volume if given, which
/// must hold the marker) and copy the source into it: the volume it names,
/// the mover's report and the import's endpoint. The import operation goes
/// to `transfers`, to be released.
async fn import(
    kit: &Kit,
    site: &str,
    source: &DiskEndpoint,
    base: Option<(String, &Marker)>,
    what: &str,
    transfers: &mut Vec<Operation>,
) -> Result<(String, rebound_datamover::CopyReport, DiskEndpoint), String> {
    let (volume_id, marker) = match base {
        Some((volume, marker)) => (Some(volume), Some(marker)),
        None => (None, None),
    };
    let op = kit
        .call(
            &[site],
            ImportRequest {
                key: kit.key(what),
                site: site.to_owned(),
                name: format!("conformance-{}-{what}", kit.nonce),
                size_bytes: source.size_bytes,
                format: DiskFormat::Raw,
                volume_id,
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    transfers.push(op.clone());
    let target = match kit.finish(&[site], op).await? {
        Outcome::DiskEndpoint(e) => e,
        other => return Err(format!("expected a disk endpoint, got {other:?}")),
    };
    let volume = target
        .volume_id
        .clone()
        .ok_or("the import's endpoint names no volume (`volume-id`)")?;
    let grant = &kit.sites[site].grant;
    grant
        .check_data_url(&target.url)
        .map_err(|e| format!("the endpoint is outside the site's egress: {e}"))?;
    let ca = grant.ca_pem.as_deref();
    let endpoint = mover_endpoint(&target, ca);
    if let Some(marker) = marker {
        let end = marker.offset + marker.data.len() as u64;
        let found = read_range(&endpoint, marker.offset, end)
            .await
            .map_err(|e| format!("reading the import's endpoint before the copy: {e}"))?;
        if found[..] != marker.data[..] {
            return Err(format!(
                "volume {volume} does not start from the volume it was given: bytes {}..{end}, \
                 where the kit wrote a marker into that volume, read otherwise; an import given \
                 `volume-id` must start from that volume (or a copy of it), so a failback moves \
                 only the changes",
                marker.offset
            ));
        }
    }
    let report = rebound_datamover::copy(
        &mover_endpoint(source, ca),
        &endpoint,
        CopyOptions::default(),
        &mut MemoryCheckpoint::default(),
    )
    .await
    .map_err(|e| format!("copying the export into volume {volume}: {e}"))?;
    Ok((volume, report, target))
}

/// An import abandoned before its endpoint was asked for, as a stopped
/// run's transfer leaves it: `cleanup` of `discarded-imports` must finish
/// (the plugin tears down whatever stage the import reached, taking it no
/// further), and again under a new key, finding it gone. A plugin of the
/// contract 0.1 has no such scope: noted, not failed.
async fn discarded_import(kit: &mut Kit, site: &str, size_bytes: u64) {
    if kit.plugin.contract() < semver::Version::new(0, 2, 0) {
        kit.skip(
            DISCARD,
            "the plugin is built against the contract 0.1, which has no such scope",
        );
        return;
    }
    let started = Instant::now();
    let result = async {
        let import = ImportRequest {
            key: kit.key("import to discard"),
            site: site.to_owned(),
            name: format!("conformance-{}-discarded", kit.nonce),
            size_bytes,
            format: DiskFormat::Raw,
            volume_id: None,
        };
        let op = kit
            .call(&[site], import)
            .await
            .map_err(|e| format!("import-disk: {e}"))?;
        for what in ["discard", "discard again"] {
            let request = CleanupRequest {
                key: kit.key(what),
                site: site.to_owned(),
                scope: CleanupScope::DiscardedImports(vec![op.id.clone()]),
            };
            let cleanup = kit
                .call(&[site], request)
                .await
                .map_err(|e| format!("{what}: {e}"))?;
            match kit.finish(&[site], cleanup).await {
                Ok(Outcome::Cleaned(_)) => {}
                Ok(other) => {
                    return Err(format!("{what}: expected a cleanup report, got {other:?}"));
                }
                Err(e) => return Err(format!("{what}: {e}")),
            }
        }
        Ok(format!(
            "import {} discarded before its endpoint was asked for; again, it was gone",
            op.id
        ))
    }
    .await;
    kit.record(DISCARD, started, result);
}

/// Release transfer endpoints, best effort (as the engine does).
pub(super) async fn release(kit: &Kit, site: &str, ops: Vec<Operation>) {
    if ops.is_empty() {
        return;
    }
    let request = CleanupRequest {
        key: kit.key(&format!("release-{}", ops[0].id)),
        site: site.to_owned(),
        scope: CleanupScope::Transfers(ops.into_iter().map(|op| op.id).collect()),
    };
    if let Ok(op) = kit.call(&[site], request).await {
        let _ = kit.finish(&[site], op).await;
    }
}

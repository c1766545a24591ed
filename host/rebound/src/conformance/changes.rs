//! The kit's `changed-blocks` scenario: the plugin lists the byte ranges
//! of the point's first disk that changed between that point and a second
//! one the kit takes now (and removes afterwards). The list must be
//! sorted, apart and inside the disk. With `--guest-writes URL` — a
//! simulated site's `/_lab/guest-writes`, which writes into a disk as the
//! workload's guest would — the kit first writes two ranges (a 64 KiB
//! block a third into the disk and the disk's last 4 KiB) and the list
//! must cover every byte written since the first point (those two and the
//! write just after that point, below): a range missed is data a delta
//! resync would not move.
//!
//! The same URL checks that a recovery point is a point in time
//! ([`PointInTime`]): the kit writes 4 KiB half-way into the first disk
//! just before the first snapshot and the same range again just after
//! it; `export-disk` of the point must read the first write back, not the
//! second (an export of the disk as it is now) and not older data. More than was written may be listed (platforms track
//! changes in blocks of their own size); the row says how much.
//! Without it the kit cannot know what changed, so any well-formed list
//! passes, an empty one included, and the row says coverage was not
//! checked.

use std::time::Instant;

use anyhow::{Context, Result};
use rebound_runtime::bindings::exports::{
    ChangedBlocksRequest, CleanupRequest, CleanupScope, SnapshotRequest,
};
use rebound_runtime::bindings::{ByteRange, RecoveryPoint};
use serde_json::json;

use rebound_runtime::bindings::DiskSpec;

use super::{Kit, TestArgs, snapshot};

pub(super) const CHANGED_BLOCKS: &str = "changed-blocks";

/// Writes into a site's disks through its `/_lab/guest-writes`.
pub(super) struct GuestWrites {
    url: String,
    http: reqwest::Client,
}

impl GuestWrites {
    /// A writer for `url`, trusting `ca_pem` (the site's CA) besides the
    /// system's roots.
    pub(super) fn new(url: &str, ca_pem: Option<&str>) -> Result<Self> {
        let mut http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
        if let Some(pem) = ca_pem {
            let ca = reqwest::Certificate::from_pem(pem.as_bytes())
                .context("the site's ca_file is not a PEM certificate")?;
            http = http.add_root_certificate(ca);
        }
        Ok(Self {
            url: url.to_owned(),
            http: http.build().context("an HTTP client for --guest-writes")?,
        })
    }

    /// Write `range` of `disk` as its guest would; the SHA-256 (hex) of
    /// what was written.
    async fn write(&self, disk: &str, range: &ByteRange) -> Result<String, String> {
        let body = json!({ "disk": disk, "offset": range.offset, "length": range.length });
        let reply = self
            .http
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("guest write to {}: {e}", self.url))?;
        if reply.status().is_success() {
            let written: serde_json::Value = reply
                .json()
                .await
                .map_err(|e| format!("guest write to {}: {e}", self.url))?;
            return written["sha256"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("guest write to {}: no sha256 in {written}", self.url));
        }
        let status = reply.status();
        let text = reply.text().await.unwrap_or_default();
        Err(format!(
            "guest write of {} bytes at {} of disk {disk} refused by {} ({status}): {text}",
            range.length, range.offset, self.url
        ))
    }
}

/// The guest writes around the first recovery point: the same range of a
/// disk written just before the snapshot and again just after it.
pub(super) struct PointInTime {
    pub disk: String,
    pub range: ByteRange,
    /// SHA-256 of the write before the point: what the point holds.
    pub before: String,
    /// SHA-256 of the write after it, once made.
    pub after: Option<String>,
}

impl PointInTime {
    /// Write into `disk` before the snapshot; a failure fails a row of
    /// its own and the checks that need it are left out.
    pub(super) async fn write_before(kit: &mut Kit, disk: &DiskSpec) -> Option<Self> {
        let writer = kit.guest_writes.as_ref()?;
        const LEN: u64 = 4096;
        let range = if disk.size_bytes >= 2 * LEN {
            ByteRange {
                offset: disk.size_bytes / 2 / LEN * LEN,
                length: LEN,
            }
        } else {
            ByteRange {
                offset: 0,
                length: disk.size_bytes.min(LEN),
            }
        };
        let started = Instant::now();
        match writer.write(&disk.id, &range).await {
            Ok(before) => Some(Self {
                disk: disk.id.clone(),
                range,
                before,
                after: None,
            }),
            Err(e) => {
                kit.record(GUEST_WRITES, started, Err(e));
                None
            }
        }
    }

    /// Write the same range again, after the snapshot.
    pub(super) async fn write_after(kit: &mut Kit) {
        let (Some(writer), Some(pit)) = (&kit.guest_writes, &kit.point_in_time) else {
            return;
        };
        let started = Instant::now();
        match writer.write(&pit.disk, &pit.range).await {
            Ok(after) => {
                if let Some(pit) = kit.point_in_time.as_mut() {
                    pit.after = Some(after);
                }
            }
            Err(e) => {
                kit.point_in_time = None;
                kit.record(GUEST_WRITES, started, Err(e));
            }
        }
    }

    /// What `read` — the range read from an export of the point — says of
    /// the point.
    pub(super) fn judge(&self, read: &[u8]) -> Result<String, String> {
        use sha2::Digest;
        let got = format!("{:x}", sha2::Sha256::digest(read));
        if got == self.before {
            Ok(format!(
                "the point holds the guest's write at {} made just before it{}",
                self.range.offset,
                if self.after.is_some() {
                    ", not the one just after"
                } else {
                    ""
                }
            ))
        } else if self.after.as_deref() == Some(got.as_str()) {
            Err(format!(
                "the export reads the guest's write at {} made after the point: it serves the \
                 disk as it is now, not the recovery point",
                self.range.offset
            ))
        } else {
            Err(format!(
                "the export does not hold the guest's write of {} bytes at {} made just before \
                 the point: the point is older than its snapshot call, or the export serves \
                 another disk",
                self.range.length, self.range.offset
            ))
        }
    }
}

/// The row a guest write that failed outside a scenario fails.
pub(super) const GUEST_WRITES: &str = "guest writes";

/// The ranges the kit writes on a disk of `size` bytes: 64 KiB a third
/// in and the last 4 KiB (one range when the disk is too small for two).
fn planned_writes(size: u64) -> Vec<ByteRange> {
    const BLOCK: u64 = 64 << 10;
    const TAIL: u64 = 4 << 10;
    if size < 4 * BLOCK {
        return vec![ByteRange {
            offset: 0,
            length: size.min(TAIL),
        }];
    }
    vec![
        ByteRange {
            offset: size / 3 / BLOCK * BLOCK,
            length: BLOCK,
        },
        ByteRange {
            offset: size - TAIL,
            length: TAIL,
        },
    ]
}

/// Run the scenario on the point's first disk.
pub(super) async fn scenario(
    kit: &mut Kit,
    args: &TestArgs,
    site: &str,
    first: &SnapshotRequest,
    point: &RecoveryPoint,
) {
    if args.skip.iter().any(|s| s == CHANGED_BLOCKS) {
        kit.skip(CHANGED_BLOCKS, "skipped by --skip");
        return;
    }
    if !kit.offers(CHANGED_BLOCKS) {
        kit.skip(CHANGED_BLOCKS, "the plugin does not offer `changed-blocks`");
        return;
    }
    let Some(disk) = point.disks.first() else {
        kit.skip(CHANGED_BLOCKS, "the recovery point has no disk");
        return;
    };
    let started = Instant::now();
    let mut written = planned_writes(disk.size_bytes);
    if let Some(writer) = &kit.guest_writes {
        for range in &written {
            if let Err(e) = writer.write(&disk.disk_id, range).await {
                kit.record(CHANGED_BLOCKS, started, Err(e));
                return;
            }
        }
    }
    // The write just after the first point changed the disk too.
    if let Some(pit) = &kit.point_in_time
        && pit.after.is_some()
        && pit.disk == disk.disk_id
    {
        written.push(pit.range);
    }
    let request = SnapshotRequest {
        key: kit.key("snapshot for changed-blocks"),
        ..first.clone()
    };
    let second = match snapshot(kit, site, request).await {
        Ok(p) => p,
        Err(e) => {
            kit.record(
                CHANGED_BLOCKS,
                started,
                Err(format!("a second snapshot: {e}")),
            );
            return;
        }
    };
    let listed = kit
        .call(
            &[site],
            ChangedBlocksRequest {
                site: site.to_owned(),
                disk_id: disk.disk_id.clone(),
                base: point.id.clone(),
                target: second.id.clone(),
            },
        )
        .await;
    let checked = kit.guest_writes.is_some();
    let result = match listed {
        Ok(ranges) => well_formed(&ranges, disk.size_bytes).and_then(|bytes| {
            let summary = format!(
                "{} range(s), {bytes} bytes changed of disk {} between {} and {}",
                ranges.len(),
                disk.disk_id,
                point.id,
                second.id
            );
            if !checked {
                return Ok(format!(
                    "{summary}; coverage not checked (no guest writes: give --guest-writes, or \
                     a lab's sites file)"
                ));
            }
            match missed(&ranges, &written) {
                None => {
                    let total: u64 = written.iter().map(|r| r.length).sum();
                    Ok(format!(
                        "{summary}; covers the {} guest write(s) of {total} bytes",
                        written.len()
                    ))
                }
                Some(r) => Err(format!(
                    "{summary}; the guest wrote {} bytes at {} and the list misses them: a \
                     delta resync would not move them",
                    r.length, r.offset
                )),
            }
        }),
        Err(e) => Err(e.to_string()),
    };
    let removed = kit
        .call(
            &[site],
            CleanupRequest {
                key: kit.key("cleanup of the changed-blocks point"),
                site: site.to_owned(),
                scope: CleanupScope::RecoveryPoints(vec![second.id.clone()]),
            },
        )
        .await;
    let result = match (result, removed) {
        (Ok(detail), Ok(op)) => match kit.finish(&[site], op).await {
            Ok(_) => Ok(detail),
            Err(e) => Err(format!("{detail}; removing the second point: {e}")),
        },
        (Ok(detail), Err(e)) => Err(format!("{detail}; removing the second point: {e}")),
        (Err(e), _) => Err(e),
    };
    kit.record(CHANGED_BLOCKS, started, result);
}

/// The bytes a changed-block list covers, or what is wrong with it.
fn well_formed(ranges: &[ByteRange], size: u64) -> Result<u64, String> {
    let mut end = 0;
    for (i, r) in ranges.iter().enumerate() {
        if r.length == 0 {
            return Err(format!("range {i} at {} is empty", r.offset));
        }
        if i > 0 && r.offset < end {
            return Err(format!(
                "range {i} at {} overlaps or precedes the one before (ending at {end}); the \
                 contract wants them sorted and apart",
                r.offset
            ));
        }
        end = r.offset.saturating_add(r.length);
        if end > size {
            return Err(format!(
                "range {i} ends at {end}, past the disk's {size} bytes"
            ));
        }
    }
    Ok(ranges.iter().map(|r| r.length).sum())
}

/// The first written range some byte of which `listed` (sorted, apart)
/// does not cover.
fn missed<'a>(listed: &[ByteRange], written: &'a [ByteRange]) -> Option<&'a ByteRange> {
    written.iter().find(|w| {
        let mut at = w.offset;
        let end = w.offset + w.length;
        for r in listed {
            if r.offset <= at && at < r.offset + r.length {
                at = r.offset + r.length;
            }
            if at >= end {
                return false;
            }
        }
        true
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(offset: u64, length: u64) -> ByteRange {
        ByteRange { offset, length }
    }

    #[test]
    fn a_write_is_covered_only_when_every_byte_is_listed() {
        let written = [r(100, 50)];
        assert!(missed(&[r(0, 200)], &written).is_none());
        // Adjacent ranges together cover it.
        assert!(missed(&[r(90, 30), r(120, 40)], &written).is_none());
        // One byte short at either end, or a hole inside.
        assert!(missed(&[r(101, 100)], &written).is_some());
        assert!(missed(&[r(0, 149)], &written).is_some());
        assert!(missed(&[r(0, 120), r(121, 100)], &written).is_some());
        assert!(missed(&[], &written).is_some());
    }

    #[test]
    fn an_export_of_the_point_holds_the_write_before_it_only() {
        use sha2::Digest;
        let hash = |b: &[u8]| format!("{:x}", sha2::Sha256::digest(b));
        let pit = PointInTime {
            disk: "d".into(),
            range: r(4096, 4),
            before: hash(b"then"),
            after: Some(hash(b"now!")),
        };
        assert!(pit.judge(b"then").is_ok());
        let now = pit.judge(b"now!").expect_err("the live disk");
        assert!(now.contains("as it is now"), "{now}");
        let older = pit.judge(&[0; 4]).expect_err("older data");
        assert!(older.contains("does not hold"), "{older}");
    }

    #[test]
    fn the_writes_fit_the_disk() {
        for size in [1u64 << 10, 100 << 10, 256 << 10, 1 << 30, (1 << 30) + 512] {
            let writes = planned_writes(size);
            assert!(!writes.is_empty());
            assert!(well_formed(&writes, size).is_ok(), "{size}: {writes:?}");
        }
    }

    #[test]
    fn a_list_out_of_order_or_past_the_disk_is_refused() {
        assert!(well_formed(&[r(0, 10), r(5, 10)], 100).is_err());
        assert!(well_formed(&[r(90, 20)], 100).is_err());
        assert!(well_formed(&[r(0, 0)], 100).is_err());
        assert_eq!(well_formed(&[r(0, 10), r(10, 10)], 100), Ok(20));
    }
}

//! Recovery points are VM snapshots (without memory), each taken right
//! after a checkpoint (`backups`). A point's id is `<vm id>.<snapshot id>`;
//! its disk copies are the snapshot's disk snapshots (their image ids),
//! which image transfers read. The snapshot's description holds the call's
//! idempotency key and the checkpoint's id: `rebound <key> checkpoint <id>`.

use rebound_plugin_sdk::xml::Element;
use rebound_plugin_sdk::{
    Consistency, DiskCopy, Operation, OperationKind, OperationState, Outcome, ProviderError,
    RecoveryPoint, Running, SnapshotRequest, info, site,
};

use crate::engine::Engine;
use crate::{backups, vms};

/// The description that carries a snapshot's idempotency key.
fn description(key: &str) -> String {
    format!("rebound {key}")
}

/// Whether a snapshot's description is the one of the call keyed `key`.
fn keyed(description: &str, key: &str) -> bool {
    let wanted = self::description(key);
    description == wanted
        || description
            .strip_prefix(&wanted)
            .is_some_and(|rest| rest.starts_with(" checkpoint "))
}

/// The checkpoint a snapshot's description names.
pub fn checkpoint_of(description: &str) -> Option<&str> {
    description
        .starts_with("rebound ")
        .then(|| description.rsplit_once(" checkpoint "))
        .flatten()
        .map(|(_, id)| id)
        .filter(|id| !id.is_empty() && !id.contains(' '))
}

/// `(vm, snapshot)` of a recovery point id.
pub fn split(point: &str) -> Result<(&str, &str), ProviderError> {
    point.split_once('.').ok_or_else(|| {
        ProviderError::InvalidRequest(format!(
            "'{point}' is not an oVirt recovery point id (<vm id>.<snapshot id>)"
        ))
    })
}

pub fn snapshot(req: &SnapshotRequest) -> Result<Operation, ProviderError> {
    if req.consistency == Consistency::Application {
        return Err(ProviderError::Unsupported(
            "the oVirt plugin takes crash-consistent snapshots only (no guest freeze)".into(),
        ));
    }
    let engine = Engine::of(&req.site)?;
    let vm = &req.workload_id;
    let path = format!("/vms/{vm}/snapshots");
    let existing = engine.list(&path)?.into_iter().find(|s| {
        s.text_at(&["description"])
            .is_some_and(|d| keyed(d, &req.key))
    });
    let snapshot = match existing {
        Some(s) => s,
        None => {
            // The checkpoint first: every write after it is listed dirty,
            // so none made while the snapshot is taken can be missed.
            let mut wanted = description(&req.key);
            if let Some(c) = backups::checkpoint(&engine, vm, &req.key) {
                wanted = format!("{wanted} checkpoint {c}");
            }
            let body = Element::new("snapshot")
                .with_text("description", &wanted)
                .with_text("persist_memorystate", false);
            engine
                .send("POST", &path, Some(&body), &req.key, "snapshot")?
                .ok_or_else(|| {
                    ProviderError::ProviderFailed(format!("snapshot of VM '{vm}' returned nothing"))
                })?
        }
    };
    let id = snapshot.attr("id").unwrap_or_default();
    info!("snapshot requested"; "vm" => vm, "snapshot" => id);
    Ok(Operation {
        kind: OperationKind::Snapshot,
        site: req.site.clone(),
        id: format!("{vm}.{id}"),
    })
}

pub fn status(engine: &Engine, id: &str) -> Result<OperationState, ProviderError> {
    let (vm, snap) = split(id)?;
    let doc = engine.get(&format!("/vms/{vm}/snapshots/{snap}"))?;
    match doc.text_at(&["snapshot_status"]).unwrap_or_default() {
        "ok" => {}
        "locked" => {
            return Ok(OperationState::Running(Running {
                percent: None,
                detail: "locked".into(),
            }));
        }
        other => {
            return Ok(OperationState::Failed(ProviderError::ProviderFailed(
                format!("snapshot '{snap}' of VM '{vm}' is {other}"),
            )));
        }
    }
    let disks = engine
        .list(&format!("/vms/{vm}/snapshots/{snap}/disks"))?
        .iter()
        .filter_map(|d| {
            Some(DiskCopy {
                disk_id: d.attr("id")?.to_owned(),
                copy_id: d.text_at(&["image_id"])?.to_owned(),
                size_bytes: d.text_at(&["provisioned_size"])?.parse().ok()?,
            })
        })
        .collect();
    // The engine keeps the VM's configuration in the snapshot; the spec
    // here is the VM's as it is now, which `snapshot` just captured.
    let workload = vms::get_workload(engine, vm)?;
    let captured_at = doc
        .text_at(&["date"])
        .and_then(iso_ms)
        .unwrap_or_else(site::now_ms);
    Ok(OperationState::Succeeded(Outcome::RecoveryPoint(
        RecoveryPoint {
            id: id.to_owned(),
            site: engine.site.clone(),
            workload_id: vm.to_owned(),
            captured_at,
            consistency: Consistency::Crash,
            disks,
            spec: workload.spec,
        },
    )))
}

/// Milliseconds since the epoch of the engine's `2026-12-05T10:30:00.123+00:00`.
fn iso_ms(t: &str) -> Option<u64> {
    let (date, time) = t.split_once('T')?;
    let time = time.get(..12).unwrap_or(time);
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut h = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (h.next()??, h.next()??, h.next()??);
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let millis: i64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    u64::try_from((((days * 24 + hh) * 60 + mm) * 60 + ss) * 1000 + millis).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_dates_parse() {
        assert_eq!(split("vm-1.snap-2").ok(), Some(("vm-1", "snap-2")));
        assert!(split("nodot").is_err());
        assert!(keyed("rebound run/1/snap", "run/1/snap"));
        assert!(keyed("rebound run/1/snap checkpoint c-1", "run/1/snap"));
        assert!(!keyed("rebound run/1/snap2", "run/1/snap"));
        assert_eq!(checkpoint_of("rebound k checkpoint c-1"), Some("c-1"));
        assert_eq!(checkpoint_of("rebound k"), None);
        assert_eq!(checkpoint_of("someone checkpoint c-1"), None);
        assert_eq!(iso_ms("1970-01-01T00:00:00.000+00:00"), Some(0));
        assert_eq!(
            iso_ms("2026-11-25T04:09:03.250+00:00"),
            Some(1_795_579_743_250)
        );
    }
}

//! The kit's `cleanup (workloads)` scenario: a failed run's compensation
//! removes the standby incarnations it made (`cleanup` of `workloads`,
//! contract 0.2), and a plugin must remove only what it materialized. The
//! kit materializes one more workload from the point, in its drill
//! sandbox (so the drill cleanup after it removes what a failing plugin
//! leaves), asks to remove it together with the workload under test —
//! which the plugin did not make: the request must be refused whole, with
//! `invalid-request`, both still in the inventory — then alone: gone from
//! the inventory, the workload under test still there. A plugin built
//! against the contract 0.1 has no such scope: noted, not failed.

use std::time::Instant;

use rebound_runtime::Inventory;
use rebound_runtime::bindings::exports::{
    CleanupRequest, CleanupScope, DiskSource, MaterializeRequest,
};
use rebound_runtime::bindings::{Outcome, ProviderError, RecoveryPoint, Workload};

use super::Kit;

pub(super) const WORKLOADS: &str = "cleanup (workloads)";

pub(super) async fn scenario(
    kit: &mut Kit,
    site: &str,
    point: &RecoveryPoint,
    tested: &Workload,
    sandbox: &str,
) {
    if kit.plugin.contract() < semver::Version::new(0, 2, 0) {
        kit.skip(
            WORKLOADS,
            "the plugin is built against the contract 0.1, which has no such scope",
        );
        return;
    }
    let started = Instant::now();
    let result = standby_removed(kit, site, point, tested, sandbox).await;
    kit.record(WORKLOADS, started, result);
}

async fn standby_removed(
    kit: &Kit,
    site: &str,
    point: &RecoveryPoint,
    tested: &Workload,
    sandbox: &str,
) -> Result<String, String> {
    let mut spec = point.spec.clone();
    spec.name = format!("{}-standby", spec.name);
    spec.labels
        .push((rebound_engine::DRILL_LABEL.to_owned(), sandbox.to_owned()));
    let request = MaterializeRequest {
        key: kit.key("materialize a standby"),
        site: site.to_owned(),
        source: DiskSource::RecoveryPoint(point.id.clone()),
        spec,
        networks: Vec::new(),
        isolated: true,
        start: false,
    };
    let op = kit
        .call(&[site], request)
        .await
        .map_err(|e| format!("materialize: {e}"))?;
    let standby = match kit.finish(&[site], op).await? {
        Outcome::Materialized(m) => m.workload,
        other => return Err(format!("expected a materialized workload, got {other:?}")),
    };

    let both = vec![standby.id.clone(), tested.id.clone()];
    let cleanup = |key: &str, ids: Vec<String>| CleanupRequest {
        key: kit.key(key),
        site: site.to_owned(),
        scope: CleanupScope::Workloads(ids),
    };
    match kit.call(&[site], cleanup("remove two", both)).await {
        Err(e) if matches!(e.provider_error(), Some(ProviderError::InvalidRequest(_))) => {}
        Err(e) => {
            return Err(format!(
                "asked to remove '{}' too, which it did not materialize, the plugin failed with \
                 {e} instead of invalid-request",
                tested.id
            ));
        }
        Ok(op) => {
            let _ = kit.finish(&[site], op).await;
            return Err(format!(
                "the plugin took a request to remove '{}', a workload it did not materialize",
                tested.id
            ));
        }
    }
    let (standby_there, tested_there) = present(kit, site, &standby.id, &tested.id).await?;
    if !(standby_there && tested_there) {
        return Err(format!(
            "the refused request removed something: '{}' there: {standby_there}, '{}' there: \
             {tested_there}",
            standby.id, tested.id
        ));
    }

    let op = kit
        .call(
            &[site],
            cleanup("remove the standby", vec![standby.id.clone()]),
        )
        .await
        .map_err(|e| format!("cleanup of '{}': {e}", standby.id))?;
    match kit.finish(&[site], op).await? {
        Outcome::Cleaned(_) => {}
        other => return Err(format!("expected a cleanup report, got {other:?}")),
    }
    // Removal may take a while to show (an instance terminating).
    let deadline = Instant::now() + kit.timeout;
    loop {
        let (standby_there, tested_there) = present(kit, site, &standby.id, &tested.id).await?;
        if !tested_there {
            return Err(format!(
                "'{}' is gone too: only the standby was to be removed",
                tested.id
            ));
        }
        if !standby_there {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "'{}' is still in the inventory {:?} after its cleanup",
                standby.id, kit.timeout
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    Ok(format!(
        "refused along with '{}' (not materialized), then removed '{}' ({})",
        tested.id, standby.spec.name, standby.id
    ))
}

/// Whether the standby and the workload under test are in the inventory.
async fn present(
    kit: &Kit,
    site: &str,
    standby: &str,
    tested: &str,
) -> Result<(bool, bool), String> {
    let all = kit
        .call(&[site], Inventory::all(site))
        .await
        .map_err(|e| format!("inventory: {e}"))?;
    let has = |id: &str| all.iter().any(|w| w.id == id);
    Ok((has(standby), has(tested)))
}

//! Removal of the incarnations promotions superseded.
//!
//! Every promotion fences the old primary's incarnations and leaves them:
//! the failed-over site's after a failback, the original ones after a
//! failover, and with a failback home the site holds its new incarnations
//! beside the fenced old ones. Once the plan is protected again, each
//! replication cycle — after its copy at the standby, so the newest copy
//! there is never an incarnation's own — removes, on both sites, the
//! incarnations Rebound made of the plan's workloads under an epoch older
//! than the current one that are not running (`cleanup` of `workloads`:
//! the plugin removes only what it materialized, with the disks it made
//! for them). One still running is left (it should not be, and is not
//! Rebound's to stop here), and so are drills' and workloads Rebound did
//! not make. Best effort: a plugin that cannot remove them leaves them, the
//! step output says which and why (with one of the contract 0.1, nothing
//! is listed either).

use rebound_runtime::bindings::exports::{CleanupRequest, CleanupScope};
use rebound_runtime::bindings::{InventoryFilter, PowerState, Workload};
use rebound_store::StepRecord;
use serde_json::json;

use super::{DRILL_LABEL, EPOCH_LABEL, PluginSteps, WORKLOAD_LABEL, handle};
use crate::{Started, StepError};

impl PluginSteps {
    pub(super) async fn remove_superseded(&self, step: &StepRecord) -> Result<Started, StepError> {
        let site = step.input["site"].as_str().unwrap_or_default();
        let below = step.input["below_epoch"].as_u64().unwrap_or(0);
        // A plugin of the contract 0.1 cannot remove workloads: not even
        // the listing is worth making.
        // (The version this run calls: the one it is pinned to.)
        let contract = self.pinned(self.site(site)?).await?.plugin.contract();
        if contract < semver::Version::new(0, 2, 0) {
            return Ok(Started::Done(json!({
                "removed": [],
                "reason": format!("the plugin (contract {contract}) cannot remove workloads"),
            })));
        }
        let scope = self.scope(step).await?;
        let plan: Vec<&str> = scope
            .document
            .workloads
            .iter()
            .map(|w| w.id.as_str())
            .collect();
        let everything = InventoryFilter {
            workload_ids: Vec::new(),
            labels: Vec::new(),
        };
        let ids = superseded(&self.matching(site, everything).await?, &plan, below);
        if ids.is_empty() {
            return Ok(Started::Done(json!({"removed": []})));
        }
        let request = CleanupRequest {
            key: step.idempotency_key.clone(),
            site: site.to_owned(),
            scope: CleanupScope::Workloads(ids.clone()),
        };
        match self.call(&[site], request).await {
            Ok(op) => {
                let mut handle = handle(&op);
                handle["workloads"] = json!(ids);
                Ok(Started::Operation(handle))
            }
            Err(e) => {
                tracing::warn!(run = %step.run, "superseded incarnations {ids:?} on '{site}' stay: {e}");
                Ok(Started::Done(
                    json!({"removed": [], "kept": ids, "reason": e.to_string()}),
                ))
            }
        }
    }
}

/// The ids among `found` of incarnations of the `plan`'s workloads made
/// under an epoch below `below`, not running, not a drill's.
fn superseded(found: &[Workload], plan: &[&str], below: u64) -> Vec<String> {
    let label = |w: &Workload, key: &str| {
        w.spec
            .labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    found
        .iter()
        .filter(|w| {
            label(w, WORKLOAD_LABEL).is_some_and(|id| plan.contains(&id.as_str()))
                && label(w, DRILL_LABEL).is_none()
                && label(w, EPOCH_LABEL)
                    .and_then(|e| e.parse::<u64>().ok())
                    .is_some_and(|epoch| epoch < below)
                && w.power != PowerState::Running
        })
        .map(|w| w.id.clone())
        .collect()
}

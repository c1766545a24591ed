//! Automatic failover (a plan's `trigger: {mode: automatic, detection}`):
//! every host is a witness that probes the primary site of each protected
//! automatic plan through its plugin's `health`, at most once per probe
//! interval, and records the result in the store. A failover starts only
//! when at least `witnesses` hosts have each seen `consecutive_failures`
//! failed probes in a row, recently — one host cut off from a healthy site
//! cannot fail a plan over on its own (split brain). The failover is
//! triggered once per fencing epoch (idempotency key), whichever witness
//! gets there first, and recorded as a `failover.triggered` event.

use rebound_domain::plan::TriggerMode;
use rebound_domain::{PlanState, Workflow};
use rebound_store::Store;
use serde_json::json;

use crate::{EngineError, PluginSteps};

/// What one detection round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Detected {
    /// Sites probed by this witness this round.
    pub probed: Vec<String>,
    /// Failover runs started: `(plan, run)`.
    pub failovers: Vec<(String, String)>,
}

/// One round of probes by `witness` at `now` (milliseconds).
pub async fn detect(
    store: &Store,
    steps: &PluginSteps,
    witness: &str,
    now: i64,
) -> Result<Detected, EngineError> {
    let mut out = Detected::default();
    for plan in store.plans().await? {
        let doc = &plan.document;
        let Some(detection) = doc.trigger.detection.as_ref() else {
            continue;
        };
        if doc.trigger.mode != TriggerMode::Automatic
            || plan.lifecycle.state != PlanState::Protected
        {
            continue;
        }
        let site = plan.lifecycle.primary.clone();
        let interval = i64::try_from(detection.probe_interval.0.as_millis()).unwrap_or(i64::MAX);
        let probes = store.probes(&site).await?;
        let mine = probes.iter().find(|p| p.witness == witness);
        if mine.is_none_or(|p| p.at_ms.saturating_add(interval) <= now)
            && !out.probed.contains(&site)
        {
            let (ok, detail) = match steps.health(&site).await {
                Ok(report) => (report.0, report.1),
                Err(e) => (false, e.to_string()),
            };
            if !ok {
                tracing::warn!(site = %site, witness, "probe failed: {detail}");
            }
            store.record_probe(&site, witness, now, ok, &detail).await?;
            out.probed.push(site.clone());
        }
        // Recent enough: within the last few intervals of failures.
        let window = interval.saturating_mul(i64::from(detection.consecutive_failures) + 1);
        let down: Vec<String> = store
            .probes(&site)
            .await?
            .into_iter()
            .filter(|p| p.at_ms >= now.saturating_sub(window))
            .filter(|p| p.failures >= detection.consecutive_failures)
            .map(|p| p.witness)
            .collect();
        if down.len() < usize::try_from(detection.witnesses).unwrap_or(usize::MAX) {
            continue;
        }
        let key = format!("automatic-failover/{}/{}", doc.name, plan.lifecycle.epoch);
        let run = crate::trigger(
            store,
            &doc.name,
            Workflow::Failover,
            Some(&key),
            "policy:automatic",
        )
        .await?;
        let detail = json!({"run": run.id, "site": site, "witnesses": down});
        tracing::warn!(plan = %doc.name, %detail, "primary site down: automatic failover");
        store
            .record_event(&doc.name, "failover.triggered", detail)
            .await?;
        out.failovers.push((doc.name.clone(), run.id));
    }
    Ok(out)
}

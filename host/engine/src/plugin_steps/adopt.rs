//! Adoption of standby incarnations a failed failover left serving.
//!
//! A failover whose primary site was down cannot fence it, so when such a
//! run fails after traffic reached its standbys, its compensation leaves
//! them as they are — running, perhaps holding writes, all that serves
//! (see `compensation_steps`). A retry of the failover must not recover
//! each workload again beside them: two incarnations of one workload under
//! the same epoch would split the writes between them. So a `materialize`
//! first looks for an incarnation an earlier failed run of the plan made
//! of the same workload, on the same site, under the same epoch, that no
//! compensation fenced or removed and that the platform still reports
//! running — and adopts it: the step is done with that run's output
//! (marked `adopted_from`), nothing is called. A compensation never undoes
//! what its run adopted.

use rebound_domain::Workflow;
use rebound_runtime::bindings::PowerState;
use rebound_store::{PlanRuns, RunStatus, StepRecord, StepStatus};
use serde_json::{Value, json};

use super::PluginSteps;
use crate::StepError;

impl PluginSteps {
    /// The output of an earlier failed run's `materialize` of `step`'s
    /// workload on its site under its epoch, if that incarnation still
    /// serves (see the module doc).
    pub(super) async fn adoptable(
        &self,
        plan: &str,
        step: &StepRecord,
    ) -> Result<Option<Value>, StepError> {
        let store_error = |e: rebound_store::StoreError| StepError::Retryable(e.to_string());
        let which = PlanRuns {
            workflows: &[Workflow::Failover],
            statuses: &[RunStatus::Failed, RunStatus::Cancelled],
            limit: None,
        };
        let failed = self
            .store
            .plan_runs(plan, which)
            .await
            .map_err(store_error)?;
        for run in failed.iter().filter(|r| r.id != step.run) {
            let steps = self.store.steps(&run.id).await.map_err(store_error)?;
            let Some((id, output)) = left_serving(&steps, &step.input) else {
                continue;
            };
            let site = step.input["site"].as_str().unwrap_or_default();
            let found = self.find(site, &id).await?;
            if found.is_some_and(|w| w.power == PowerState::Running) {
                tracing::warn!(run = %step.run, from = %run.id, workload = %id, "adopting the incarnation an earlier failed failover left serving");
                let mut output = output;
                output["adopted_from"] = json!(run.id);
                return Ok(Some(output));
            }
        }
        Ok(None)
    }
}

/// The incarnation (its id and the `materialize` output) that `steps`, a
/// failed run's, made of the workload `input` names, on its site under its
/// epoch, when no compensation of that run fenced or removed it.
fn left_serving(steps: &[StepRecord], input: &Value) -> Option<(String, Value)> {
    let made = steps.iter().find(|s| {
        s.input["action"] == "materialize"
            && s.input["isolated"] != true
            && s.status == StepStatus::Succeeded
            && ["site", "workload", "epoch"]
                .iter()
                .all(|field| s.input[field] == input[field])
    })?;
    let output = made.output.clone()?;
    let id = output["workload"].as_str()?.to_owned();
    let undone = steps.iter().any(|s| {
        s.input["compensation"] == true
            && (s.input["workload_id"] == id.as_str()
                || s.input["workloads"]
                    .as_array()
                    .is_some_and(|ids| ids.iter().any(|i| i == id.as_str())))
    });
    (!undone).then_some((id, output))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::left_serving;
    use crate::test_steps::step;

    fn materialize(epoch: u64) -> Value {
        json!({"action": "materialize", "site": "b", "workload": "db-1", "epoch": epoch})
    }

    #[test]
    fn only_an_incarnation_of_the_same_workload_site_and_epoch_left_alone() {
        let made = vec![step(0, materialize(2), Some(json!({"workload": "b-vm-9"})))];
        let (id, output) = left_serving(&made, &materialize(2)).expect("left serving");
        assert_eq!(
            (id.as_str(), output["workload"].clone()),
            ("b-vm-9", json!("b-vm-9"))
        );
        assert!(
            left_serving(&made, &materialize(3)).is_none(),
            "another epoch"
        );
        let mut elsewhere = materialize(2);
        elsewhere["site"] = json!("c");
        assert!(left_serving(&made, &elsewhere).is_none(), "another site");

        for undo in [
            json!({"action": "fence", "site": "b", "workload_id": "b-vm-9", "compensation": true}),
            json!({"action": "cleanup", "site": "b", "workloads": ["b-vm-9"], "compensation": true}),
        ] {
            let mut steps = made.clone();
            steps.push(step(1, undo, None));
            assert!(left_serving(&steps, &materialize(2)).is_none(), "{steps:?}");
        }
    }
}

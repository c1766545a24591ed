//! Adoption of standby incarnations a failed failover left serving.
//!
//! A failover whose primary site was down cannot fence it, so when such a
//! run fails after traffic reached its standbys, its compensation leaves
//! them as they are — running, perhaps holding writes, all that serves
//! (see `compensation_steps`). A retry of the failover must not recover
//! each workload again beside them: two incarnations of one workload under
//! the same epoch would split the writes between them. So when a failover
//! starts, each of its `materialize` steps is given (input `adopt`: the
//! run and its output) the incarnation an earlier failed failover of the
//! plan made of the same workload, on the same site, under the same epoch,
//! that no compensation fenced or removed — read once, here. The step
//! adopts it if the platform still reports it running: it is done with
//! that run's output (marked `adopted_from`), nothing called
//! (`plugin_steps`). A compensation never undoes what its run adopted.

use rebound_domain::Workflow;
use rebound_store::{NewStep, PlanRuns, RunStatus, StepRecord, StepStatus, Store};
use serde_json::{Value, json};

use crate::EngineError;

/// Give each `materialize` of a failover about to start on `plan` the
/// incarnation an earlier failed failover left of its workload, if any.
pub(crate) async fn offer(
    store: &Store,
    plan: &str,
    steps: &mut [NewStep],
) -> Result<(), EngineError> {
    let which = PlanRuns {
        workflows: &[Workflow::Failover],
        statuses: &[RunStatus::Failed, RunStatus::Cancelled],
        limit: None,
    };
    let mut failed = Vec::new();
    for run in store.plan_runs(plan, which).await? {
        failed.push((run.id.clone(), store.steps(&run.id).await?));
    }
    for step in steps.iter_mut() {
        if step.input["action"] != "materialize" || step.input["isolated"] == true {
            continue;
        }
        // The newest failed run that left one.
        let left = failed
            .iter()
            .find_map(|(run, steps)| Some((run, left_serving(steps, &step.input)?)));
        if let Some((run, (_, output))) = left {
            step.input["adopt"] = json!({"run": run, "output": output});
        }
    }
    Ok(())
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

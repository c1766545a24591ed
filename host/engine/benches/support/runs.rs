//! Run history made for the benches: finished runs, stored as a host
//! would leave them.

use std::time::Duration;

use rebound_domain::Workflow;
use rebound_store::{NewStep, RunStatus, Store};

/// A run of `workflow` of the plan named `plan` with `steps`, succeeded.
pub async fn finished(store: &Store, plan: &str, workflow: Workflow, steps: &[NewStep]) {
    let run = store
        .create_run_with_steps(plan, workflow, None, "bench", steps)
        .await
        .expect("run");
    store
        .claim_run("bench", Duration::from_secs(60))
        .await
        .expect("claim")
        .expect("the run just made");
    store
        .set_run_status(&run.id, "bench", RunStatus::Succeeded)
        .await
        .expect("finish");
}

//! What the benches store before they time anything: a fresh SQLite
//! store, filled with finished runs as a host would leave them.

use std::future::Future;
use std::path::Path;
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

/// A fresh SQLite store in `dir`, filled by `fill` before any timing.
pub fn filled<F, Fut>(tokio: &tokio::runtime::Runtime, dir: &Path, fill: F) -> Store
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    tokio.block_on(async {
        let store = rebound_store::testing::fresh_sqlite(dir)
            .await
            .expect("store");
        fill(store.clone()).await;
        store
    })
}

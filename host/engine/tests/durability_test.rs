//! Durable runs survive their executor being killed at any moment: a second
//! replica takes the run over after the lease expires, finishes it, and no
//! provider side effect happens twice. Kill points are random and logged
//! with their seed (`REBOUND_CRASH_SEED` replays one).
//!
//! The executor is killed by aborting its task, which like `kill -9` runs no
//! more of its code; killing a whole host process is the orchestration
//! issue's remaining test.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use rand::{Rng, SeedableRng};
use rebound_domain::{PlanDocument, Workflow};
use rebound_engine::{Executor, ExecutorConfig, Outcome, Progress, Started, StepError, StepRunner};
use rebound_store::{NewStep, RunRecord, RunStatus, StepRecord, StepStatus, Store};
use serde_json::{Value, json};

const PLAN: &str = include_str!("../../../docs/examples/plan.yaml");

/// An idempotent provider that counts side effects per idempotency key.
#[derive(Default)]
struct CountingProvider {
    ops: Mutex<HashMap<String, Instant>>,
    side_effects: Mutex<HashMap<String, u32>>,
    calls: Mutex<u32>,
}

impl CountingProvider {
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl StepRunner for CountingProvider {
    fn start<'a>(&'a self, step: &'a StepRecord) -> BoxFuture<'a, Result<Started, StepError>> {
        Box::pin(async move {
            *Self::lock(&self.calls) += 1;
            let key = step.idempotency_key.clone();
            let latency = Duration::from_millis(step.input["latency_ms"].as_u64().unwrap_or(0));
            let mut ops = Self::lock(&self.ops);
            if !ops.contains_key(&key) {
                ops.insert(key.clone(), Instant::now() + latency);
                *Self::lock(&self.side_effects)
                    .entry(key.clone())
                    .or_default() += 1;
            }
            if latency.is_zero() {
                Ok(Started::Done(json!({ "key": key })))
            } else {
                Ok(Started::Operation(json!({ "key": key })))
            }
        })
    }

    fn poll<'a>(
        &'a self,
        _step: &'a StepRecord,
        operation: &'a Value,
    ) -> BoxFuture<'a, Result<Progress, StepError>> {
        Box::pin(async move {
            let key = operation["key"].as_str().unwrap_or_default();
            match Self::lock(&self.ops).get(key) {
                Some(ready) if Instant::now() >= *ready => {
                    Ok(Progress::Done(json!({ "key": key })))
                }
                Some(_) => Ok(Progress::Running),
                None => Err(StepError::Fatal(format!("unknown operation {key}"))),
            }
        })
    }
}

fn config(owner: &str) -> ExecutorConfig {
    ExecutorConfig {
        lease: Duration::from_millis(150),
        poll_interval: Duration::from_millis(5),
        backoff: Duration::from_millis(5),
        ..ExecutorConfig::new(owner)
    }
}

fn steps(rng: &mut impl Rng) -> Vec<NewStep> {
    [
        "fence",
        "materialize db-1",
        "gate db-1",
        "materialize app-1",
        "materialize web-1",
        "redirect",
    ]
    .iter()
    .map(|name| NewStep {
        name: (*name).to_owned(),
        input: json!({ "latency_ms": if rng.gen_bool(0.3) { 0 } else { rng.gen_range(5..40) } }),
    })
    .collect()
}

async fn kill_and_take_over(store: Store, trials: u32) {
    store
        .put_plan(&PlanDocument::from_yaml(PLAN).expect("plan"), "test")
        .await
        .expect("plan");
    let base: u64 = std::env::var("REBOUND_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    for trial in 0..u64::from(trials) {
        let seed = base.wrapping_add(trial);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let provider = Arc::new(CountingProvider::default());
        let run = store
            .create_run_with_steps("shop", Workflow::Failover, None, "test", &steps(&mut rng))
            .await
            .expect("run");
        let kill_after = Duration::from_millis(rng.gen_range(0..120));
        eprintln!("trial {trial}: seed {seed}, killing the first executor after {kill_after:?}");

        let first = Executor::new(
            store.clone(),
            provider.clone(),
            config(&format!("host-a-{trial}")),
        );
        let doomed = tokio::spawn(async move { first.work_once().await });
        tokio::time::sleep(kill_after).await;
        doomed.abort();
        let _ = doomed.await;
        let done = store
            .steps(&run.id)
            .await
            .expect("steps")
            .iter()
            .filter(|s| s.status == StepStatus::Succeeded)
            .count();
        eprintln!("trial {trial}: killed with {done} of 6 steps done");

        let second = Executor::new(
            store.clone(),
            provider.clone(),
            config(&format!("host-b-{trial}")),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stored = store.run(&run.id).await.expect("run");
            if matches!(stored.status, RunStatus::Succeeded | RunStatus::Failed) {
                break;
            }
            assert!(Instant::now() < deadline, "seed {seed}: run never finished");
            match second.work_once().await.expect("work") {
                Some((_, outcome)) => assert_eq!(outcome, Outcome::Succeeded, "seed {seed}"),
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        assert_eq!(
            store.run(&run.id).await.expect("run").status,
            RunStatus::Succeeded,
            "seed {seed}"
        );
        let stored = store.steps(&run.id).await.expect("steps");
        assert!(
            stored.iter().all(|s| s.status == StepStatus::Succeeded),
            "seed {seed}: {stored:?}"
        );
        let effects = CountingProvider::lock(&provider.side_effects).clone();
        assert_eq!(effects.len(), stored.len(), "seed {seed}: every step acted");
        for s in &stored {
            assert_eq!(
                effects.get(&s.idempotency_key),
                Some(&1),
                "seed {seed}: {} acted twice",
                s.name
            );
        }
    }
}

/// A fresh SQLite store holding the test plan (with `rto`, when given, as
/// its failover RTO) and a drill run of `steps` (each `(name, input)`).
async fn drill_run(
    rto: Option<rebound_domain::Span>,
    steps: &[(&str, Value)],
) -> (Store, RunRecord, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tmp");
    let store = rebound_store::testing::fresh_sqlite(dir.path())
        .await
        .expect("store");
    let mut plan = PlanDocument::from_yaml(PLAN).expect("plan");
    if let Some(rto) = rto {
        plan.objectives.failover.rto = rto;
    }
    store.put_plan(&plan, "test").await.expect("plan");
    let steps: Vec<NewStep> = steps
        .iter()
        .map(|(name, input)| NewStep {
            name: (*name).into(),
            input: input.clone(),
        })
        .collect();
    let run = store
        .create_run_with_steps("shop", Workflow::Drill, None, "t", &steps)
        .await
        .expect("run");
    (store, run, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_random_kills_on_sqlite_repeat_no_side_effect() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = rebound_store::testing::fresh_sqlite(dir.path())
        .await
        .expect("store");
    kill_and_take_over(store, 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_random_kills_on_postgres_repeat_no_side_effect() {
    if let Some(store) = rebound_store::testing::fresh_postgres()
        .await
        .expect("postgres")
    {
        kill_and_take_over(store, 30).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_fails_the_run_and_a_retryable_one_is_retried() {
    struct Flaky(Mutex<u32>);
    impl StepRunner for Flaky {
        fn start<'a>(&'a self, step: &'a StepRecord) -> BoxFuture<'a, Result<Started, StepError>> {
            Box::pin(async move {
                let mut n = self
                    .0
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                *n += 1;
                match step.name.as_str() {
                    "flaky" if *n < 3 => Err(StepError::Retryable("503 from the API".into())),
                    "broken" => Err(StepError::Fatal("quota exceeded".into())),
                    _ => Ok(Started::Done(json!({}))),
                }
            })
        }
        fn poll<'a>(
            &'a self,
            _: &'a StepRecord,
            _: &'a Value,
        ) -> BoxFuture<'a, Result<Progress, StepError>> {
            Box::pin(async { Ok(Progress::Running) })
        }
    }
    let (store, run, _dir) = drill_run(
        None,
        &[
            ("flaky", json!({})),
            ("broken", json!({})),
            ("never", json!({})),
        ],
    )
    .await;
    let executor = Executor::new(
        store.clone(),
        Arc::new(Flaky(Mutex::new(0))),
        config("host"),
    );
    let (_, outcome) = executor.work_once().await.expect("work").expect("a run");
    assert_eq!(
        outcome,
        Outcome::Failed {
            step: 1,
            error: "quota exceeded".into()
        }
    );
    let stored = store.steps(&run.id).await.expect("steps");
    assert_eq!(
        (stored[0].status, stored[0].attempts),
        (StepStatus::Succeeded, 3)
    );
    assert_eq!(stored[1].status, StepStatus::Failed);
    assert_eq!(
        stored[2].status,
        StepStatus::Pending,
        "nothing after a failed step runs"
    );
    assert_eq!(
        store.run(&run.id).await.expect("run").status,
        RunStatus::Failed
    );
}

/// Steps of one stage: `done` finishes, `failing` holds an operation that
/// then fails, `in-flight` holds one still running when the run stops.
/// The runner is handed back both operations the run will not poll again,
/// once each, and not the finished one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_a_stopped_run_leaves_are_abandoned() {
    #[derive(Default)]
    struct Holding(Mutex<Vec<String>>);
    impl StepRunner for Holding {
        fn start<'a>(&'a self, step: &'a StepRecord) -> BoxFuture<'a, Result<Started, StepError>> {
            Box::pin(async move { Ok(Started::Operation(json!({"op": step.name}))) })
        }
        fn poll<'a>(
            &'a self,
            step: &'a StepRecord,
            _: &'a Value,
        ) -> BoxFuture<'a, Result<Progress, StepError>> {
            Box::pin(async move {
                Ok(match step.name.as_str() {
                    "done" => Progress::Done(json!({})),
                    "failing" => Progress::Failed("the import failed".into()),
                    _ => Progress::Running,
                })
            })
        }
        fn abandon<'a>(&'a self, _: &'a StepRecord, operation: &'a Value) -> BoxFuture<'a, ()> {
            Box::pin(async move {
                let op = operation["op"].as_str().unwrap_or_default().to_owned();
                self.0
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(op);
            })
        }
    }
    let (store, _run, _dir) = drill_run(
        None,
        &[
            ("done", json!({"stage": "copies"})),
            ("failing", json!({"stage": "copies"})),
            ("in-flight", json!({"stage": "copies"})),
        ],
    )
    .await;
    let runner = Arc::new(Holding::default());
    let executor = Executor::new(store.clone(), runner.clone(), config("host"));
    let (_, outcome) = executor.work_once().await.expect("work").expect("a run");
    assert!(
        matches!(outcome, Outcome::Failed { step: 1, .. }),
        "{outcome:?}"
    );
    let mut abandoned = runner
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    abandoned.sort();
    assert_eq!(abandoned, ["failing", "in-flight"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_longer_than_the_lease_keeps_the_run() {
    /// Every start takes four leases' time.
    struct Slow;
    impl StepRunner for Slow {
        fn start<'a>(&'a self, _: &'a StepRecord) -> BoxFuture<'a, Result<Started, StepError>> {
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(600)).await;
                Ok(Started::Done(json!({})))
            })
        }
        fn poll<'a>(
            &'a self,
            _: &'a StepRecord,
            _: &'a Value,
        ) -> BoxFuture<'a, Result<Progress, StepError>> {
            Box::pin(async { Ok(Progress::Running) })
        }
    }
    let (store, run, _dir) = drill_run(None, &[("slow", json!({}))]).await;
    let holder = Executor::new(store.clone(), Arc::new(Slow), config("holder"));
    let driving = tokio::spawn(async move { holder.work_once().await });
    // While the slow call runs, the lease stays renewed: nobody else may
    // take the run.
    let rival = Executor::new(store.clone(), Arc::new(Slow), config("rival"));
    let until = Instant::now() + Duration::from_millis(500);
    tokio::time::sleep(Duration::from_millis(50)).await;
    while Instant::now() < until {
        let claimed = rival.work_once().await.expect("rival");
        assert!(
            claimed.is_none(),
            "the rival took a run whose holder is alive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, outcome) = driving.await.expect("join").expect("work").expect("run");
    assert_eq!(outcome, Outcome::Succeeded);
    assert_eq!(
        store.run(&run.id).await.expect("run").status,
        RunStatus::Succeeded
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_where_the_phase_rto_budget_ends() {
    /// Throttled forever.
    struct Throttled;
    impl StepRunner for Throttled {
        fn start<'a>(&'a self, _: &'a StepRecord) -> BoxFuture<'a, Result<Started, StepError>> {
            Box::pin(async { Err(StepError::Retryable("429 Too Many Requests".into())) })
        }
        fn poll<'a>(
            &'a self,
            _: &'a StepRecord,
            _: &'a Value,
        ) -> BoxFuture<'a, Result<Progress, StepError>> {
            Box::pin(async { Ok(Progress::Running) })
        }
    }
    let (store, run, _dir) = drill_run(
        Some(rebound_domain::Span::secs(2)),
        &[("throttled", json!({}))],
    )
    .await;
    let executor = Executor::new(
        store.clone(),
        Arc::new(Throttled),
        ExecutorConfig {
            attempts: 1000,
            backoff: Duration::from_millis(100),
            lease: Duration::from_secs(10),
            ..ExecutorConfig::new("host")
        },
    );
    let (_, outcome) = executor.work_once().await.expect("work").expect("run");
    let Outcome::Failed { error, .. } = outcome else {
        panic!("expected a failure, got {outcome:?}");
    };
    assert!(error.contains("RTO budget of 2 s"), "{error}");
    assert!(error.contains("429"), "{error}");
    // Backoffs of 100, 200, 400, 800 ms fit in 2 s; the next (1.6 s) would
    // not (4 attempts if the machine stalled half a second on the way).
    let stored = store.steps(&run.id).await.expect("steps");
    assert!((4..=5).contains(&stored[0].attempts), "{stored:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_whose_polls_keep_failing_ends_with_the_rto_budget() {
    /// Started, then every poll fails retryably (a data plane answering
    /// 5xx, say).
    struct Unreachable;
    impl StepRunner for Unreachable {
        fn start<'a>(&'a self, _: &'a StepRecord) -> BoxFuture<'a, Result<Started, StepError>> {
            Box::pin(async { Ok(Started::Operation(json!({"op": "copy-1"}))) })
        }
        fn poll<'a>(
            &'a self,
            _: &'a StepRecord,
            _: &'a Value,
        ) -> BoxFuture<'a, Result<Progress, StepError>> {
            Box::pin(async { Err(StepError::Retryable("503 from the data plane".into())) })
        }
    }
    let (store, _run, _dir) =
        drill_run(Some(rebound_domain::Span::secs(1)), &[("copy", json!({}))]).await;
    let executor = Executor::new(
        store.clone(),
        Arc::new(Unreachable),
        ExecutorConfig {
            poll_interval: Duration::from_millis(50),
            lease: Duration::from_secs(10),
            ..ExecutorConfig::new("host")
        },
    );
    let (_, outcome) = executor.work_once().await.expect("work").expect("run");
    let Outcome::Failed { error, .. } = outcome else {
        panic!("expected a failure, got {outcome:?}");
    };
    assert!(error.contains("RTO budget of 1 s"), "{error}");
    assert!(error.contains("503 from the data plane"), "{error}");
}

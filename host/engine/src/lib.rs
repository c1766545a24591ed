//! Durable runs: the executor that claims a run's lease, drives its
//! persisted steps to completion and survives being killed at any moment.
//!
//! The contract with a [`StepRunner`] (the provider side):
//! - every call for a step carries the step's idempotency key
//!   (`<run>/<seq>`, the same on every attempt), so a runner must make
//!   `start` idempotent under it — a repeated start returns the same
//!   operation and repeats no side effect;
//! - the attempt is persisted *before* `start` is called and the returned
//!   operation handle *before* it is polled, so after a crash the next
//!   holder of the lease either polls the persisted handle or calls `start`
//!   again with the same key.
//!
//! [`plan_steps`] derives each workflow's steps from a plan and its
//! lifecycle; a run started with `Store::start_workflow` moves the plan's
//! lifecycle when it finishes. Steps run one after another today (a tier's
//! steps could run in parallel).
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

mod planner;
mod plugin_steps;

pub use planner::plan_steps;
pub use plugin_steps::{BoundSite, DRILL_LABEL, PluginSteps, WORKLOAD_LABEL};

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use rebound_store::{RunRecord, RunStatus, StepRecord, StepStatus, Store, StoreError};
use serde_json::Value;

/// What `start` did.
#[derive(Debug, Clone, PartialEq)]
pub enum Started {
    /// Finished within the call.
    Done(Value),
    /// A long operation to poll; the handle is persisted first.
    Operation(Value),
}

/// What `poll` found.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    Running,
    Done(Value),
    Failed(String),
}

/// Why a runner call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// Worth retrying with the same key (throttled, transient).
    #[error("retryable: {0}")]
    Retryable(String),
    #[error("{0}")]
    Fatal(String),
}

/// The provider side of the steps.
pub trait StepRunner: Send + Sync {
    fn start<'a>(&'a self, step: &'a StepRecord) -> BoxFuture<'a, Result<Started, StepError>>;
    fn poll<'a>(
        &'a self,
        step: &'a StepRecord,
        operation: &'a Value,
    ) -> BoxFuture<'a, Result<Progress, StepError>>;
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// This replica's name, recorded as the lease owner.
    pub owner: String,
    pub lease: Duration,
    pub poll_interval: Duration,
    /// Attempts per step for retryable failures, and the first backoff
    /// (doubling).
    pub attempts: i32,
    pub backoff: Duration,
}

impl ExecutorConfig {
    pub fn new(owner: impl Into<String>) -> Self {
        Self {
            owner: owner.into(),
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(200),
            attempts: 5,
            backoff: Duration::from_millis(200),
        }
    }
}

/// How a driven run ended for this replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed {
        step: i32,
        error: String,
    },
    /// Another replica took the run over; this one stopped touching it.
    LeaseLost,
}

pub struct Executor {
    store: Store,
    runner: Arc<dyn StepRunner>,
    config: ExecutorConfig,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Whether the run fenced the old primary and every fence was confirmed.
fn fences_confirmed(steps: &[StepRecord]) -> bool {
    let fences: Vec<&StepRecord> = steps
        .iter()
        .filter(|s| s.input["action"] == "fence")
        .collect();
    !fences.is_empty()
        && fences.iter().all(|s| {
            s.status == StepStatus::Succeeded
                && s.output.as_ref().is_some_and(|o| o["fenced"] == true)
        })
}

enum Flow {
    Next,
    Stop(Outcome),
}

impl Executor {
    pub fn new(store: Store, runner: Arc<dyn StepRunner>, config: ExecutorConfig) -> Self {
        Self {
            store,
            runner,
            config,
        }
    }

    /// Claim one run whose lease is free or expired and drive it to its
    /// end; `None` when there is nothing to do.
    pub async fn work_once(&self) -> Result<Option<(RunRecord, Outcome)>, EngineError> {
        let Some(run) = self
            .store
            .claim_run(&self.config.owner, self.config.lease)
            .await?
        else {
            return Ok(None);
        };
        let outcome = self.drive(&run).await?;
        Ok(Some((run, outcome)))
    }

    async fn drive(&self, run: &RunRecord) -> Result<Outcome, EngineError> {
        let owner = &self.config.owner;
        if run.status == RunStatus::Pending
            && !self.keep(
                self.store
                    .set_run_status(&run.id, owner, RunStatus::Running)
                    .await,
            )?
        {
            return Ok(Outcome::LeaseLost);
        }
        let mut steps = self.store.steps(&run.id).await?;
        let mut outcome = Outcome::Succeeded;
        for step in &mut steps {
            match self.step(step).await? {
                Flow::Next => {}
                Flow::Stop(Outcome::LeaseLost) => return Ok(Outcome::LeaseLost),
                Flow::Stop(stopped) => {
                    outcome = stopped;
                    break;
                }
            }
        }
        let succeeded = outcome == Outcome::Succeeded;
        if run.lifecycle {
            // Fence steps report whether the old primary's workloads can no
            // longer write; a planned promotion needs all of them confirmed.
            let fenced = fences_confirmed(&steps);
            match self
                .store
                .finish_workflow(&run.id, owner, succeeded, fenced)
                .await
            {
                Ok(RunStatus::Succeeded) => Ok(outcome),
                Ok(_) if succeeded => Ok(Outcome::Failed {
                    step: -1,
                    error: "the plan's lifecycle refused the result (see the audit log)".into(),
                }),
                Ok(_) => Ok(outcome),
                Err(StoreError::Conflict(reason)) => {
                    tracing::warn!(owner = %owner, "stopping: {reason}");
                    Ok(Outcome::LeaseLost)
                }
                Err(e) => Err(e.into()),
            }
        } else {
            let status = if succeeded {
                RunStatus::Succeeded
            } else {
                RunStatus::Failed
            };
            if !self.keep(self.store.set_run_status(&run.id, owner, status).await)? {
                return Ok(Outcome::LeaseLost);
            }
            Ok(outcome)
        }
    }

    /// A store conflict means the lease is gone: stop, do not fail.
    fn keep(&self, result: Result<(), StoreError>) -> Result<bool, EngineError> {
        match result {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict(reason)) => {
                tracing::warn!(owner = %self.config.owner, "stopping: {reason}");
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn save(&self, step: &StepRecord) -> Result<bool, EngineError> {
        let saved = self.store.save_step(&self.config.owner, step).await;
        let held = self.keep(saved)?;
        if held {
            let renewed = self
                .store
                .heartbeat(&step.run, &self.config.owner, self.config.lease)
                .await;
            return self.keep(renewed);
        }
        Ok(false)
    }

    async fn step(&self, step: &mut StepRecord) -> Result<Flow, EngineError> {
        match step.status {
            StepStatus::Succeeded => return Ok(Flow::Next),
            StepStatus::Failed => {
                return Ok(Flow::Stop(Outcome::Failed {
                    step: step.seq,
                    error: step.error.clone().unwrap_or_default(),
                }));
            }
            StepStatus::Pending | StepStatus::Running => {}
        }
        // Start (again, with the same key) unless a handle was persisted.
        let mut backoff = self.config.backoff;
        while step.operation.is_none() {
            step.attempts += 1;
            step.status = StepStatus::Running;
            step.started_at_ms.get_or_insert(now_ms());
            if !self.save(step).await? {
                return Ok(Flow::Stop(Outcome::LeaseLost));
            }
            match self.runner.start(step).await {
                Ok(Started::Done(output)) => return self.finish(step, Ok(output)).await,
                Ok(Started::Operation(op)) => {
                    step.operation = Some(op);
                    if !self.save(step).await? {
                        return Ok(Flow::Stop(Outcome::LeaseLost));
                    }
                }
                Err(StepError::Retryable(reason)) if step.attempts < self.config.attempts => {
                    tracing::info!(run = %step.run, step = step.seq, "retrying after {backoff:?}: {reason}");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                Err(e) => return self.finish(step, Err(e.to_string())).await,
            }
        }
        let operation = step.operation.clone().unwrap_or(Value::Null);
        loop {
            match self.runner.poll(step, &operation).await {
                Ok(Progress::Running) | Err(StepError::Retryable(_)) => {
                    tokio::time::sleep(self.config.poll_interval).await;
                    let renewed = self
                        .store
                        .heartbeat(&step.run, &self.config.owner, self.config.lease)
                        .await;
                    if !self.keep(renewed)? {
                        return Ok(Flow::Stop(Outcome::LeaseLost));
                    }
                }
                Ok(Progress::Done(output)) => return self.finish(step, Ok(output)).await,
                Ok(Progress::Failed(reason)) => return self.finish(step, Err(reason)).await,
                Err(StepError::Fatal(reason)) => return self.finish(step, Err(reason)).await,
            }
        }
    }

    async fn finish(
        &self,
        step: &mut StepRecord,
        result: Result<Value, String>,
    ) -> Result<Flow, EngineError> {
        step.finished_at_ms = Some(now_ms());
        let flow = match result {
            Ok(output) => {
                step.status = StepStatus::Succeeded;
                step.output = Some(output);
                Flow::Next
            }
            Err(error) => {
                step.status = StepStatus::Failed;
                step.error = Some(error.clone());
                Flow::Stop(Outcome::Failed {
                    step: step.seq,
                    error,
                })
            }
        };
        if !self.save(step).await? {
            return Ok(Flow::Stop(Outcome::LeaseLost));
        }
        Ok(flow)
    }
}

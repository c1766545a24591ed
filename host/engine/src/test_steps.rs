//! Step records for the crate's unit tests: a step of run `run-1` that
//! succeeded, started at 1 ms and finished at 2 ms.

use rebound_store::{StepRecord, StepStatus};
use serde_json::Value;

pub fn step(seq: i32, input: Value, output: Option<Value>) -> StepRecord {
    StepRecord {
        run: "run-1".into(),
        seq,
        name: format!("step {seq}"),
        status: StepStatus::Succeeded,
        idempotency_key: format!("run-1/{seq}"),
        operation: None,
        attempts: 1,
        started_at_ms: Some(1),
        finished_at_ms: Some(2),
        error: None,
        input,
        output,
    }
}

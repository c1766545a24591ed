//! What the runtime reports to Prometheus, through the `metrics` facade
//! (the host's `/metrics` renders it; without a recorder it costs
//! nothing): every plugin call by plugin, version, export and outcome, and
//! its duration.

use std::time::Duration;

use crate::CallError;

/// Plugin calls, by `plugin`, `version`, `function` and `outcome`.
pub const CALLS: &str = "rebound_plugin_calls_total";
/// Plugin call durations, by `plugin` and `function` (a histogram).
pub const CALL_SECONDS: &str = "rebound_plugin_call_duration_seconds";
/// The buckets of [`CALL_SECONDS`]: a call takes milliseconds to the
/// budget of a minute.
pub const CALL_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0];

/// Say what each metric means (once a recorder is installed).
pub fn describe() {
    metrics::describe_counter!(
        CALLS,
        "Plugin calls by plugin, version, export (function) and outcome: ok, provider_error, \
         sandbox_refused, deadline_exceeded, memory_limit, trapped (the last three count \
         against the crash budget), quarantined, disabled, host_error."
    );
    metrics::describe_histogram!(
        CALL_SECONDS,
        metrics::Unit::Seconds,
        "Plugin call durations by plugin and export, instantiation included."
    );
}

/// The outcome label of a call's result.
pub(crate) fn outcome<T>(result: &Result<T, CallError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(CallError::Provider { .. }) => "provider_error",
        Err(CallError::Sandbox { .. }) => "sandbox_refused",
        Err(CallError::DeadlineExceeded { .. }) => "deadline_exceeded",
        Err(CallError::MemoryLimit { .. }) => "memory_limit",
        Err(CallError::Trapped { .. }) => "trapped",
        Err(CallError::Quarantined { .. }) => "quarantined",
        Err(CallError::Disabled { .. }) => "disabled",
        Err(CallError::Host { .. }) => "host_error",
    }
}

/// Count one call of `function` of `plugin@version` and time it.
pub(crate) fn call(
    plugin: &str,
    version: &str,
    function: &'static str,
    outcome: &'static str,
    took: Duration,
) {
    metrics::counter!(CALLS, "plugin" => plugin.to_owned(), "version" => version.to_owned(),
        "function" => function, "outcome" => outcome)
    .increment(1);
    metrics::histogram!(CALL_SECONDS, "plugin" => plugin.to_owned(), "function" => function)
        .record(took.as_secs_f64());
}

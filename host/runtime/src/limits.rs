//! The hard limits every plugin call runs under, and the memory limiter that
//! enforces (and explains) the per-instance memory cap.

use std::time::Duration;

/// Limits applied to every call. The defaults suit provider plugins, which
/// make API calls and never move disk data themselves.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Linear memory per instance.
    pub memory_bytes: u64,
    /// The longest any call may run, whatever budget the caller offers.
    pub max_call: Duration,
    /// Largest response body a plugin may receive.
    pub max_response_bytes: u64,
    /// Largest request body a plugin may send.
    pub max_request_bytes: usize,
    /// Outgoing requests open at once within one call.
    pub max_connections: usize,
    /// Log records kept per call; the rest are dropped with one warning.
    pub max_log_records: usize,
    /// Crashes (traps, kills) tolerated within `crash_window` before the
    /// plugin version is quarantined.
    pub crash_budget: usize,
    pub crash_window: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 128 << 20,
            max_call: Duration::from_secs(300),
            max_response_bytes: 16 << 20,
            max_request_bytes: 8 << 20,
            max_connections: 8,
            max_log_records: 1000,
            crash_budget: 5,
            crash_window: Duration::from_secs(600),
        }
    }
}

/// Caps linear memory and tables, recording why growth was refused so the
/// call can report "memory limit" instead of a bare trap.
pub(crate) struct MemoryLimiter {
    limit: usize,
    pub(crate) refused: Option<String>,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            refused: None,
        }
    }
}

const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.refused = Some(format!(
                "grow from {} MiB to {} MiB refused",
                current >> 20,
                desired >> 20
            ));
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.refused = Some(format!("table growth to {desired} elements refused"));
            return Ok(false);
        }
        Ok(true)
    }
}

//! The failures a simulated site can be told to show, shared by the
//! simulators: a rate of errors (5xx, or 429 with `Retry-After`), a hung or
//! down site, added latency and a slow data plane. Each simulator answers
//! them in its platform's own error shape.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The failures a site shows; all off by default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Fraction of calls (0.0–1.0) answered with `status` instead.
    pub error_rate: f64,
    /// The status of injected errors; 503 when unset.
    pub status: Option<u16>,
    /// Seconds sent as `Retry-After` with injected errors.
    pub retry_after: Option<u64>,
    /// Calls get no answer until `hang` is cleared.
    pub hang: bool,
    /// The whole site answers 503, like a site lost in a disaster.
    pub down: bool,
    /// Added to every call.
    pub latency_ms: u64,
    /// Disk copies and image transfers run at this many bytes per second.
    pub data_bytes_per_sec: Option<u64>,
    /// Limit the faults to the calls whose path has this segment (a
    /// service: `compute`, `volume`, …; an API group: `kubevirt.io`,
    /// `cdi.kubevirt.io`, …).
    pub service: Option<String>,
}

impl Faults {
    /// Whether the faults apply to a call of `path`.
    pub fn applies_to(&self, path: &str) -> bool {
        self.service
            .as_deref()
            .is_none_or(|s| path.split('/').any(|segment| segment == s))
    }

    /// How long moving `bytes` takes on a slowed data plane.
    pub fn data_delay(&self, bytes: u64) -> Duration {
        match self.data_bytes_per_sec {
            Some(rate) if rate > 0 => Duration::from_secs_f64(bytes as f64 / rate as f64),
            _ => Duration::ZERO,
        }
    }

    /// Whether this call draws an injected error.
    pub fn draws_error(&self) -> bool {
        self.error_rate > 0.0 && rand::random::<f64>() < self.error_rate
    }

    /// Why these faults cannot be set, if they cannot.
    pub fn invalid(&self) -> Option<String> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Some(format!(
                "error_rate is {}; give 0.0 to 1.0",
                self.error_rate
            ));
        }
        match self.status {
            Some(s) if !(100..=999).contains(&s) => {
                Some(format!("status {s} is not an HTTP status"))
            }
            _ => None,
        }
    }
}

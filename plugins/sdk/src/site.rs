//! A site's config and secrets as the host grants them for this call, and
//! the clock.

use crate::ProviderError;
use crate::bindings::rebound::provider::{config, secrets};

pub use crate::bindings::rebound::provider::secrets::Secret;

/// One setting of `site`, if set.
pub fn get(site: &str, key: &str) -> Option<String> {
    config::get(site, key)
}

/// One setting of `site`, or an error telling the operator what to add.
pub fn require(site: &str, key: &str) -> Result<String, ProviderError> {
    get(site, key).ok_or_else(|| {
        ProviderError::InvalidRequest(format!(
            "site '{site}' has no setting '{key}'; add it to the site's config"
        ))
    })
}

/// Open a secret of `site`. Prefer [`Secret::placeholder`] in requests: the
/// host substitutes the value, so the plugin never holds it.
pub fn secret(site: &str, name: &str) -> Result<Secret, ProviderError> {
    secrets::open(site, name).map_err(ProviderError::Unauthorized)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    let t = wasip2::clocks::wall_clock::now();
    t.seconds.saturating_mul(1000) + u64::from(t.nanoseconds / 1_000_000)
}

/// A monotonic instant in nanoseconds, for measuring durations.
pub fn monotonic_ns() -> u64 {
    wasip2::clocks::monotonic_clock::now()
}

pub fn sleep_ms(ms: u64) {
    wasip2::clocks::monotonic_clock::subscribe_duration(ms.saturating_mul(1_000_000)).block();
}

//! Retries for transient and throttled failures, with doubling backoff that
//! honours a platform's Retry-After. The host bounds the whole call by its
//! deadline, so a retry loop can never outlive the step's budget.

use crate::ProviderError;
use crate::site::sleep_ms;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    pub initial_ms: u64,
    pub max_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            initial_ms: 200,
            max_ms: 5_000,
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `n + 1` after failure `error` on attempt `n`
    /// (0-based), or `None` when the error is final or attempts are spent.
    pub fn delay(&self, attempt: u32, error: &ProviderError) -> Option<u64> {
        if attempt + 1 >= self.attempts || !error.is_retryable() {
            return None;
        }
        let backoff = self
            .initial_ms
            .saturating_mul(1u64 << attempt.min(20))
            .min(self.max_ms);
        Some(match error {
            ProviderError::Throttled(t) => t.retry_after_ms.unwrap_or(backoff).max(backoff),
            _ => backoff,
        })
    }
}

/// Run `op` until it succeeds, fails for good, or attempts run out.
pub fn retry<T>(
    policy: RetryPolicy,
    mut op: impl FnMut() -> Result<T, ProviderError>,
) -> Result<T, ProviderError> {
    let mut attempt = 0;
    loop {
        match op() {
            Ok(v) => return Ok(v),
            Err(e) => match policy.delay(attempt, &e) {
                Some(ms) => {
                    crate::debug!("retrying after {} ms", ms; "error" => e, "attempt" => attempt + 1);
                    sleep_ms(ms);
                    attempt += 1;
                }
                None => return Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Throttle;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_stops() {
        let p = RetryPolicy::default();
        let t = ProviderError::Transient("x".into());
        let delays: Vec<_> = (0..6).map(|n| p.delay(n, &t)).collect();
        assert_eq!(
            delays,
            [Some(200), Some(400), Some(800), Some(1600), None, None]
        );
        assert_eq!(p.delay(0, &ProviderError::NotFound("x".into())), None);
    }

    #[test]
    fn retry_after_is_honoured() {
        let p = RetryPolicy::default();
        let throttled = ProviderError::Throttled(Throttle {
            retry_after_ms: Some(3000),
            message: "slow down".into(),
        });
        assert_eq!(p.delay(0, &throttled), Some(3000));
    }
}

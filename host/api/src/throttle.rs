//! Failed password sign-ins slow down, so a password cannot be guessed at
//! the speed of the host: after `login_attempts` failures in a row for a
//! user, every further attempt — right password or wrong — is refused (429
//! with `Retry-After`) for `login_lockout_seconds`, doubling with each
//! failure after (up to a quarter hour); a success starts the count again.
//! Kept in memory per host process, by user name, so an attacker can make
//! a user wait but not guess faster; API tokens and OIDC sign-ins are not
//! affected.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::StatusCode;

use crate::problem::Problem;

/// Names tracked at most; beyond, names whose wait is over are forgotten
/// first, so made-up names cannot grow the map without bound.
const MAX_TRACKED: usize = 10_000;
/// The longest wait, however many failures.
const MAX_WAIT: Duration = Duration::from_secs(15 * 60);

#[derive(Debug)]
pub(crate) struct LoginThrottle {
    attempts: u32,
    wait: Duration,
    failures: Mutex<HashMap<String, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    /// Until when attempts are refused.
    until: Option<Instant>,
}

impl LoginThrottle {
    pub(crate) fn new(attempts: u32, wait: Duration) -> Self {
        Self {
            attempts: attempts.max(1),
            wait,
            failures: Mutex::default(),
        }
    }

    /// Refuse an attempt for `user` while it must wait.
    pub(crate) fn check(&self, user: &str) -> Result<(), Problem> {
        let failures = self.lock();
        let Some(until) = failures.get(user).and_then(|f| f.until) else {
            return Ok(());
        };
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        let seconds = left.as_secs() + 1;
        let mut problem = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many failed sign-ins for '{user}'; try again in {seconds} s (or sign in \
                 another way: an API token or the identity provider)"
            ),
        )
        .kind("too-many-sign-ins");
        problem.retry_after = Some(seconds);
        Err(problem)
    }

    /// Count a failed attempt for `user`.
    pub(crate) fn failed(&self, user: &str) {
        let mut failures = self.lock();
        if failures.len() >= MAX_TRACKED && !failures.contains_key(user) {
            let now = Instant::now();
            failures.retain(|_, f| f.until.is_some_and(|u| u > now));
            if failures.len() >= MAX_TRACKED {
                return;
            }
        }
        let entry = failures.entry(user.to_owned()).or_insert(Failures {
            count: 0,
            until: None,
        });
        entry.count += 1;
        if entry.count >= self.attempts {
            let doublings = (entry.count - self.attempts).min(16);
            let wait = self.wait.saturating_mul(1 << doublings).min(MAX_WAIT);
            entry.until = Some(Instant::now() + wait);
        }
    }

    /// A success: `user` starts again with no failures.
    pub(crate) fn succeeded(&self, user: &str) {
        self.lock().remove(user);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failures>> {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_past_the_allowance_make_the_user_wait_longer_each_time() {
        let throttle = LoginThrottle::new(3, Duration::from_secs(30));
        for _ in 0..2 {
            throttle.failed("alice");
            assert!(throttle.check("alice").is_ok());
        }
        throttle.failed("alice");
        let refused = throttle.check("alice").expect_err("third failure");
        assert_eq!(refused.status, 429);
        assert_eq!(refused.retry_after, Some(30));
        assert!(throttle.check("bob").is_ok(), "per user");
        throttle.failed("alice");
        assert_eq!(
            throttle.check("alice").expect_err("fourth").retry_after,
            Some(60)
        );
        throttle.succeeded("alice");
        assert!(throttle.check("alice").is_ok());
    }

    #[test]
    fn the_wait_is_capped() {
        let throttle = LoginThrottle::new(1, Duration::from_secs(60));
        for _ in 0..40 {
            throttle.failed("alice");
        }
        let wait = throttle.check("alice").expect_err("locked").retry_after;
        assert_eq!(wait, Some(15 * 60));
    }
}

//! Failed password sign-ins slow down, so a password cannot be guessed at
//! the speed of the host: after `login_attempts` failures in a row for a
//! user, every further attempt — right password or wrong — is refused (429
//! with `Retry-After`) for `login_lockout_seconds`, doubling with each
//! failure after (up to a quarter hour); a success starts the count again.
//! Counted in the store by user name (known or not, so a wait tells
//! nothing about which names exist), so every host replica on one store
//! shares the count: an attacker can make a user wait but not guess faster,
//! however many replicas it spreads its guesses over. API tokens and OIDC
//! sign-ins are not affected.

use std::time::Duration;

use axum::http::StatusCode;
use rebound_store::Store;

use crate::problem::Problem;

/// The longest wait, however many failures.
const MAX_WAIT: Duration = Duration::from_secs(15 * 60);

#[derive(Debug)]
pub(crate) struct LoginThrottle {
    attempts: u32,
    wait: Duration,
}

impl LoginThrottle {
    pub(crate) fn new(attempts: u32, wait: Duration) -> Self {
        Self {
            attempts: attempts.max(1),
            wait,
        }
    }

    /// Refuse an attempt for `user` while it must wait.
    pub(crate) async fn check(&self, store: &Store, user: &str) -> Result<(), Problem> {
        let Some(left) = store.sign_in_wait(user).await? else {
            return Ok(());
        };
        let seconds = u64::try_from(left.as_millis().div_ceil(1000))
            .unwrap_or(u64::MAX)
            .max(1);
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

    /// How long `user` waits after `failures` failures in a row.
    fn wait_after(&self, failures: u32) -> Option<Duration> {
        let doublings = failures.checked_sub(self.attempts)?.min(16);
        Some(self.wait.saturating_mul(1 << doublings).min(MAX_WAIT))
    }

    /// Count a failed attempt for `user`.
    pub(crate) async fn failed(&self, store: &Store, user: &str) -> Result<(), Problem> {
        let failures = store.sign_in_failed(user).await?;
        if let Some(wait) = self.wait_after(failures) {
            store.lock_sign_in(user, wait).await?;
        }
        Ok(())
    }

    /// A success: `user` starts again with no failures.
    pub(crate) async fn succeeded(&self, store: &Store, user: &str) -> Result<(), Problem> {
        Ok(store.sign_in_succeeded(user).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tmp");
        let store = rebound_store::testing::fresh_sqlite(dir.path())
            .await
            .expect("store");
        (dir, store)
    }

    #[tokio::test]
    async fn failures_past_the_allowance_make_the_user_wait_longer_each_time() {
        let (_dir, store) = store().await;
        let throttle = LoginThrottle::new(3, Duration::from_secs(30));
        for _ in 0..2 {
            throttle.failed(&store, "alice").await.expect("count");
            assert!(throttle.check(&store, "alice").await.is_ok());
        }
        throttle.failed(&store, "alice").await.expect("count");
        let refused = throttle
            .check(&store, "alice")
            .await
            .expect_err("third failure");
        assert_eq!(refused.status, 429);
        assert_eq!(refused.retry_after, Some(30));
        assert!(throttle.check(&store, "bob").await.is_ok(), "per user");
        throttle.failed(&store, "alice").await.expect("count");
        assert_eq!(
            throttle
                .check(&store, "alice")
                .await
                .expect_err("fourth")
                .retry_after,
            Some(60)
        );
        throttle.succeeded(&store, "alice").await.expect("reset");
        assert!(throttle.check(&store, "alice").await.is_ok());
    }

    #[test]
    fn the_wait_is_capped() {
        let throttle = LoginThrottle::new(1, Duration::from_secs(60));
        assert_eq!(throttle.wait_after(0), None);
        assert_eq!(throttle.wait_after(1), Some(Duration::from_secs(60)));
        assert_eq!(throttle.wait_after(40), Some(MAX_WAIT));
    }
}

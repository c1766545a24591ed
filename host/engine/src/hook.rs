//! Hooks (a plan's `hooks`): at its points of a run, the host `POST`s the
//! run's context as JSON to the hook's URL and the answer decides: a 2xx
//! lets the run go on; a 5xx, a 429, a timeout or no answer is retried
//! like any retryable step (within the attempts and the RTO budget); any
//! other status fails the step. A hook with `on_failure: continue` records
//! its failure in the step and lets the run go on, untried again.
//!
//! Deny by default: the host calls only origins its operator listed in
//! `hooks.allow`, never a link-local or metadata address whatever the name
//! resolves to (the address checked is the one connected to), and follows
//! no redirect. Every call carries the step's idempotency key
//! (`Idempotency-Key`: a step resumed after a crash calls again with the
//! same key, so the receiver can tell a repeat) and, when the host has a
//! `hooks.secret`, `Rebound-Signature: sha256=<hex HMAC-SHA256 of the
//! body>`. The answer's body is not kept.

use std::time::Duration;

use hmac::{Hmac, Mac};
use rebound_domain::plan::origin;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::StepError;

/// Which origins hooks may call, and the key that signs the calls.
#[derive(Clone, Default)]
pub struct HookPolicy {
    allow: Vec<String>,
    secret: Option<Vec<u8>>,
}

impl std::fmt::Debug for HookPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookPolicy")
            .field("allow", &self.allow)
            .field("signed", &self.secret.is_some())
            .finish()
    }
}

impl HookPolicy {
    /// From the host's config: each `allow` entry a URL whose origin
    /// (scheme, host, port) hooks may call; `secret` signs every call.
    pub fn new(allow: &[String], secret: Option<&str>) -> Result<Self, String> {
        let allow = allow
            .iter()
            .map(|entry| origin(entry).map_err(|e| format!("hooks.allow: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            allow,
            secret: secret
                .filter(|s| !s.is_empty())
                .map(|s| s.as_bytes().to_vec()),
        })
    }

    /// Whether hooks may call `url`; the refusal says what to add.
    pub fn check(&self, url: &str) -> Result<(), String> {
        let origin = origin(url)?;
        if self.allow.contains(&origin) {
            Ok(())
        } else {
            Err(format!(
                "this host does not allow hooks to call {origin}; add \"{origin}\" to \
                 hooks.allow in its config"
            ))
        }
    }
}

/// Call the hook a step's `input` describes with `payload`; the step's
/// output, or its error.
pub(crate) async fn call(
    policy: &HookPolicy,
    input: &Value,
    key: &str,
    payload: &Value,
) -> Result<Value, StepError> {
    let name = input["hook"].as_str().unwrap_or_default();
    let url = input["url"].as_str().unwrap_or_default();
    let timeout = Duration::from_millis(input["timeout_ms"].as_u64().unwrap_or(30_000));
    let outcome = send(policy, url, timeout, key, payload).await;
    match outcome {
        Ok(status) => Ok(json!({"status": status})),
        Err(failure) if input["on_failure"] == "continue" => {
            tracing::warn!(hook = %name, "hook failed; the run goes on: {}", failure.reason);
            Ok(json!({"failed": true, "reason": failure.reason}))
        }
        Err(failure) => {
            let reason = format!("hook '{name}': {}", failure.reason);
            Err(if failure.retryable {
                StepError::Retryable(reason)
            } else {
                StepError::Fatal(reason)
            })
        }
    }
}

struct Failure {
    reason: String,
    retryable: bool,
}

fn fatal(reason: String) -> Failure {
    Failure {
        reason,
        retryable: false,
    }
}

async fn send(
    policy: &HookPolicy,
    url: &str,
    timeout: Duration,
    key: &str,
    payload: &Value,
) -> Result<u16, Failure> {
    policy.check(url).map_err(fatal)?;
    let parsed = url::Url::parse(url).map_err(|e| fatal(e.to_string()))?;
    let host = parsed.host_str().unwrap_or_default().to_owned();
    let port = parsed.port_or_known_default().unwrap_or(443);
    // Connect to an address checked here, not whatever a second lookup
    // returns.
    let lookup_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let addresses: Vec<std::net::SocketAddr> =
        tokio::net::lookup_host((lookup_host.as_str(), port))
            .await
            .map_err(|e| Failure {
                reason: format!("{host}: {e}"),
                retryable: true,
            })?
            .collect();
    let address = addresses
        .iter()
        .find(|a| crate::gate::probeable(a.ip()))
        .copied()
        .ok_or_else(|| {
            fatal(format!(
                "{host} resolves only to link-local, metadata or unspecified addresses \
                 ({addresses:?}): never called"
            ))
        })?;
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .resolve(&lookup_host, address)
        .build()
        .map_err(|e| fatal(format!("HTTP client: {e}")))?;
    let body = serde_json::to_vec(payload).map_err(|e| fatal(e.to_string()))?;
    let mut request = client
        .post(parsed)
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .header("user-agent", concat!("rebound/", env!("CARGO_PKG_VERSION")));
    if let Some(secret) = &policy.secret {
        request = request.header("rebound-signature", signature(secret, &body));
    }
    let response = request.body(body).send().await.map_err(|e| Failure {
        reason: if e.is_timeout() {
            format!("POST {url}: no answer within {timeout:?}")
        } else {
            format!("POST {url}: {e}")
        },
        retryable: true,
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(status.as_u16());
    }
    Err(Failure {
        reason: format!("POST {url} answered {status}"),
        retryable: status.is_server_error() || status.as_u16() == 429,
    })
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::HookPolicy;

    #[test]
    fn only_allowed_origins_are_called() {
        let policy = HookPolicy::new(&["https://ops.example.com".into()], None).expect("policy");
        policy
            .check("https://ops.example.com:443/changes?x=1")
            .expect("same origin");
        let refused = policy
            .check("http://ops.example.com/changes")
            .expect_err("another scheme is another origin");
        assert!(
            refused.contains("add \"http://ops.example.com:80\" to hooks.allow"),
            "{refused}"
        );
        assert!(
            HookPolicy::default()
                .check("https://ops.example.com/")
                .is_err()
        );
        let bad = HookPolicy::new(&["ops.example.com".into()], None).expect_err("not a URL");
        assert!(bad.starts_with("hooks.allow: "), "{bad}");
    }

    #[test]
    fn a_signature_is_the_bodys_hmac() {
        // RFC 4231, test case 2.
        assert_eq!(
            super::signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}

//! A session with one site's engine: the SSO password grant (the password
//! travels as the host's placeholder), XML requests with `Version: 4` and
//! the bearer token, `correlation_id`s derived from idempotency keys on
//! every mutating call, and the engine's `<fault>` documents mapped to the
//! contract's errors.
//!
//! The host instantiates the plugin for every call, so a token lives for
//! one call (cached here per site for the requests it makes).

use std::cell::RefCell;
use std::rc::Rc;

use rebound_plugin_sdk::http::{self, Request, Response};
use rebound_plugin_sdk::retry::{RetryPolicy, retry};
use rebound_plugin_sdk::xml::Element;
use rebound_plugin_sdk::{ProviderError, Throttle, site};
use sha2::{Digest, Sha256};

pub const API: &str = "/ovirt-engine/api";

/// An authenticated session with one engine.
#[derive(Debug)]
pub struct Engine {
    pub site: String,
    base: String,
    token: String,
    timeout_ms: u64,
}

thread_local! {
    static SESSIONS: RefCell<Vec<Rc<Engine>>> = const { RefCell::new(Vec::new()) };
}

/// A setting with a default.
pub fn setting(site_name: &str, key: &str, default: &str) -> String {
    site::get(site_name, key)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

impl Engine {
    /// The session of `site`, authenticating on first use within this call.
    pub fn of(site_name: &str) -> Result<Rc<Engine>, ProviderError> {
        if let Some(found) =
            SESSIONS.with(|s| s.borrow().iter().find(|e| e.site == site_name).cloned())
        {
            return Ok(found);
        }
        let engine = Rc::new(Self::authenticate(site_name)?);
        SESSIONS.with(|s| s.borrow_mut().push(engine.clone()));
        Ok(engine)
    }

    fn authenticate(site_name: &str) -> Result<Self, ProviderError> {
        let base = site::require(site_name, "endpoint")?
            .trim_end_matches('/')
            .trim_end_matches(API)
            .to_owned();
        let user = setting(site_name, "user", "admin@internal");
        let password = site::secret(site_name, "password")?;
        // Shorter than a call's budget, so a hung engine is reported as a
        // transient failure the engine retries, not a call killed.
        let timeout_ms = setting(site_name, "timeout_ms", "")
            .parse()
            .unwrap_or(http::DEFAULT_TIMEOUT_MS);
        let url = format!("{base}/ovirt-engine/sso/oauth/token");
        let what = format!("POST {url}");
        let form = format!(
            "grant_type=password&scope=ovirt-app-api&username={}&password={}",
            encode(&user),
            password.placeholder()
        );
        let request = http::post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(form.into_bytes())
            .timeout_ms(timeout_ms);
        let response = retry(RetryPolicy::default(), || {
            let r = request.clone().send()?;
            if r.status() == 429 || r.status() >= 500 {
                return Err(check(&what, r)
                    .err()
                    .unwrap_or_else(|| ProviderError::Transient(format!("{what} failed"))));
            }
            Ok(r)
        })?;
        let doc: serde_json::Value = response.json().unwrap_or_default();
        if let Some(token) = doc["access_token"]
            .as_str()
            .filter(|_| response.is_success())
        {
            return Ok(Self {
                site: site_name.to_owned(),
                base,
                token: token.to_owned(),
                timeout_ms,
            });
        }
        let why = doc["error_description"]
            .as_str()
            .or_else(|| doc["error"].as_str())
            .unwrap_or("no token issued");
        Err(ProviderError::Unauthorized(format!(
            "the SSO of site '{site_name}' refused user '{user}' ({}): {why}; check the site's \
             user setting and password secret",
            response.status()
        )))
    }

    /// The timeout of one request to this site.
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }

    fn request(&self, method: &str, path: &str) -> Request {
        let url = format!("{}{API}{path}", self.base);
        let request = match method {
            "POST" => http::post(url),
            "PUT" => http::put(url),
            "DELETE" => http::delete(url),
            _ => http::get(url),
        };
        request
            .bearer(&self.token)
            .header("version", "4")
            .header("accept", "application/xml")
            .timeout_ms(self.timeout_ms)
    }

    /// `GET` a document, retrying passing faults.
    pub fn get(&self, path: &str) -> Result<Element, ProviderError> {
        let what = format!("GET {API}{}", path.split('?').next().unwrap_or_default());
        let request = self.request("GET", path);
        let response = retry(RetryPolicy::default(), || {
            check(&what, request.clone().send()?)
        })?;
        parse(&what, &response)
    }

    /// The child elements of a list document.
    pub fn list(&self, path: &str) -> Result<Vec<Element>, ProviderError> {
        Ok(self.get(path)?.children)
    }

    /// A mutating call tagged with a `correlation_id` derived from `key`
    /// and `purpose`, so the engine's jobs and logs tie it to the key.
    /// Answers that say the engine did not act (429, 5xx) are retried; a
    /// lost answer is not, since the engine may have acted: it fails
    /// `transient`, and the retried step looks up what the first attempt
    /// made before acting again.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Element>,
        key: &str,
        purpose: &str,
    ) -> Result<Option<Element>, ProviderError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let path = format!("{path}{sep}correlation_id={}", correlation_id(key, purpose));
        let what = format!(
            "{method} {API}{}",
            path.split('?').next().unwrap_or_default()
        );
        let mut request = self.request(method, &path);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/xml")
                .body(body.to_xml().into_bytes());
        }
        let policy = RetryPolicy::default();
        let mut attempt = 0;
        let response = loop {
            match check(&what, request.clone().send()?) {
                Ok(r) => break r,
                Err(e) => match policy.delay(attempt, &e) {
                    Some(ms) => {
                        site::sleep_ms(ms);
                        attempt += 1;
                    }
                    None => return Err(e),
                },
            }
        };
        if response.body().is_empty() {
            return Ok(None);
        }
        parse(&what, &response).map(Some)
    }

    /// An action (`start`, `stop`, `finalize`, ...) on `path`.
    pub fn action(&self, path: &str, key: &str, purpose: &str) -> Result<(), ProviderError> {
        self.send("POST", path, Some(&Element::new("action")), key, purpose)
            .map(drop)
    }

    /// Delete `path`; one already gone is fine.
    pub fn delete(&self, path: &str, key: &str, purpose: &str) -> Result<(), ProviderError> {
        match self.send("DELETE", path, None, key, purpose) {
            Ok(_) | Err(ProviderError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn parse(what: &str, response: &Response) -> Result<Element, ProviderError> {
    Element::parse(response.body())
        .map_err(|e| ProviderError::ProviderFailed(format!("{what}: malformed XML answer: {e}")))
}

/// The correlation id of the side effect `purpose` of the call keyed
/// `key`: the same key and purpose always give the same id.
pub fn correlation_id(key: &str, purpose: &str) -> String {
    let digest = Sha256::digest(format!("{key}\n{purpose}").as_bytes());
    format!("rebound-{}", hex::encode(&digest[..12]))
}

/// A short, stable token of a key for names (`web-1-<token>`).
pub fn short(key: &str) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..6])
}

pub use rebound_plugin_sdk::http::encode;

/// Turn a non-2xx answer into the contract's error, with the engine's
/// fault reason and detail: 429 is `throttled`, 5xx `transient`, 409 a
/// `conflict` (the engine's "Cannot … VM is running"), other 4xx permanent.
pub fn check(what: &str, response: Response) -> Result<Response, ProviderError> {
    if response.is_success() {
        return Ok(response);
    }
    let status = response.status();
    let message = format!("{what} answered {status}: {}", fault_text(response.body()));
    Err(match status {
        429 => ProviderError::Throttled(Throttle {
            retry_after_ms: response
                .header("retry-after")
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(|s| s.saturating_mul(1000)),
            message,
        }),
        404 => ProviderError::NotFound(message),
        401 | 403 => ProviderError::Unauthorized(message),
        409 => ProviderError::Conflict(message),
        500..=599 => ProviderError::Transient(message),
        400..=499 => ProviderError::InvalidRequest(message),
        _ => ProviderError::ProviderFailed(message),
    })
}

/// `reason: detail` of a `<fault>` document, else the body's start.
pub fn fault_text(body: &[u8]) -> String {
    match Element::parse(body) {
        Ok(doc) if doc.name == "fault" || doc.name == "action" => {
            let doc = doc.child("fault").cloned().unwrap_or(doc);
            format!(
                "{}: {}",
                doc.text_at(&["reason"]).unwrap_or_default(),
                doc.text_at(&["detail"]).unwrap_or_default()
            )
        }
        _ => String::from_utf8_lossy(body).chars().take(300).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlation_ids_are_stable_per_key_and_purpose() {
        let a = correlation_id("run/1/step/2", "snapshot");
        assert_eq!(a, correlation_id("run/1/step/2", "snapshot"));
        assert_ne!(a, correlation_id("run/1/step/2", "start"));
        assert!(a.starts_with("rebound-") && a.len() == 32, "{a}");
    }

    #[test]
    fn faults_read_as_reason_and_detail() {
        let body =
            b"<fault><reason>Operation Failed</reason><detail>[Cannot run VM.]</detail></fault>";
        assert_eq!(fault_text(body), "Operation Failed: [Cannot run VM.]");
        assert_eq!(fault_text(b"plain"), "plain");
        assert_eq!(encode("admin@internal"), "admin%40internal");
    }
}

//! [`ProviderError`] helpers: display, retryability, conversions, and the
//! mapping of HTTP statuses to the contract's error cases.

use crate::{ProviderError, Throttle};

impl ProviderError {
    /// Whether retrying with the same idempotency key may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Throttled(_) | Self::Transient(_))
    }

    /// The same error with its message rewritten by `f` — to keep a
    /// credential that is part of a URL (a ticket, a signed link) out of a
    /// message the host logs.
    pub fn map_message(self, f: impl FnOnce(&str) -> String) -> Self {
        match self {
            Self::NotFound(m) => Self::NotFound(f(&m)),
            Self::Unauthorized(m) => Self::Unauthorized(f(&m)),
            Self::Throttled(mut t) => {
                t.message = f(&t.message);
                Self::Throttled(t)
            }
            Self::Transient(m) => Self::Transient(f(&m)),
            Self::InvalidRequest(m) => Self::InvalidRequest(f(&m)),
            Self::Unsupported(m) => Self::Unsupported(f(&m)),
            Self::Conflict(m) => Self::Conflict(f(&m)),
            Self::ProviderFailed(m) => Self::ProviderFailed(f(&m)),
        }
    }

    /// The error for an HTTP status that is not a success. `what` names the
    /// request (method and URL); `body` is the start of the response.
    pub fn from_status(status: u16, what: &str, retry_after: Option<&str>, body: &[u8]) -> Self {
        let excerpt: String = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        let message = format!("{what} answered {status}: {excerpt}");
        match status {
            404 => Self::NotFound(message),
            401 | 403 => Self::Unauthorized(message),
            409 => Self::Conflict(message),
            429 => Self::Throttled(Throttle {
                retry_after_ms: retry_after.and_then(parse_retry_after),
                message,
            }),
            400 | 422 => Self::InvalidRequest(message),
            500..=599 => Self::Transient(message),
            _ => Self::ProviderFailed(message),
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by the APIs we
/// talk to and is ignored).
pub(crate) fn parse_retry_after(value: &str) -> Option<u64> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| s.saturating_mul(1000))
}

impl From<serde_json::Error> for ProviderError {
    fn from(e: serde_json::Error) -> Self {
        Self::ProviderFailed(format!("malformed JSON response: {e}"))
    }
}

impl From<quick_xml::DeError> for ProviderError {
    fn from(e: quick_xml::DeError) -> Self {
        Self::ProviderFailed(format!("malformed XML response: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_the_contract_cases() {
        let e = |s| ProviderError::from_status(s, "GET http://x/v1", None, b"boom");
        assert!(matches!(e(404), ProviderError::NotFound(_)));
        assert!(matches!(e(401), ProviderError::Unauthorized(_)));
        assert!(matches!(e(403), ProviderError::Unauthorized(_)));
        assert!(matches!(e(409), ProviderError::Conflict(_)));
        assert!(matches!(e(422), ProviderError::InvalidRequest(_)));
        assert!(matches!(e(503), ProviderError::Transient(_)));
        assert!(matches!(e(418), ProviderError::ProviderFailed(_)));
        assert!(
            e(503)
                .to_string()
                .contains("GET http://x/v1 answered 503: boom")
        );
        match ProviderError::from_status(429, "GET x", Some("3"), b"") {
            ProviderError::Throttled(t) => assert_eq!(t.retry_after_ms, Some(3000)),
            other => panic!("{other:?}"),
        }
        assert!(e(500).is_retryable() && !e(404).is_retryable());
    }

    #[test]
    fn a_message_is_rewritten_in_its_case() {
        let e = ProviderError::from_status(404, "GET http://x/images/t1", None, b"gone");
        let hidden = e.map_message(|m| m.replace("http://x/images/t1", "<url>"));
        assert!(
            matches!(&hidden, ProviderError::NotFound(m) if m == "GET <url> answered 404: gone")
        );
        let t = ProviderError::from_status(429, "GET http://x/images/t1", Some("1"), b"");
        match t.map_message(|m| m.replace("t1", "***")) {
            ProviderError::Throttled(t) => {
                assert!(!t.message.contains("t1") && t.retry_after_ms == Some(1000))
            }
            other => panic!("{other:?}"),
        }
    }
}

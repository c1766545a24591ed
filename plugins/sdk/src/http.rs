//! A small blocking HTTP client over `wasi:http/outgoing-handler`. Every
//! request goes through the host's egress policy; a refusal comes back as
//! [`ProviderError::Unauthorized`] and the host's error names the grant.

use serde::Serialize;
use serde::de::DeserializeOwned;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasip2::io::streams::StreamError;

use crate::ProviderError;

/// An HTTP request being built.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout_ms: Option<u64>,
}

/// Percent-encode a path segment, query or form value: RFC 3986's
/// unreserved characters kept, every other byte `%XX`.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char);
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub fn get(url: impl Into<String>) -> Request {
    Request::new(Method::Get, url)
}
pub fn post(url: impl Into<String>) -> Request {
    Request::new(Method::Post, url)
}
pub fn put(url: impl Into<String>) -> Request {
    Request::new(Method::Put, url)
}
pub fn patch(url: impl Into<String>) -> Request {
    Request::new(Method::Patch, url)
}
pub fn delete(url: impl Into<String>) -> Request {
    Request::new(Method::Delete, url)
}

/// A received response with its whole body.
#[derive(Debug, Clone)]
pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    what: String,
}

/// The timeout of a request unless [`Request::timeout_ms`] sets another:
/// a hung API answers a retryable error in time, instead of the call being
/// killed at its deadline (which counts as a crash).
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

impl Request {
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Self {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout_ms: Some(DEFAULT_TIMEOUT_MS),
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// `Authorization: Bearer <token>`; pass a secret's placeholder.
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", format!("Bearer {token}"))
    }

    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Result<Self, ProviderError> {
        self.body = serde_json::to_vec(value).map_err(|e| {
            ProviderError::InvalidRequest(format!("cannot encode request body: {e}"))
        })?;
        Ok(self.header("content-type", "application/json"))
    }

    pub fn body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }

    /// Connect, first-byte and between-bytes timeout (default
    /// [`DEFAULT_TIMEOUT_MS`]); the host bounds them by the call's
    /// remaining budget anyway.
    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = Some(ms);
        self
    }

    /// "GET http://host/path" — the query string is left out of messages.
    fn what(&self) -> String {
        let method = match &self.method {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Head => "HEAD",
            _ => "HTTP",
        };
        format!(
            "{method} {}",
            self.url.split('?').next().unwrap_or_default()
        )
    }

    /// Send and read the whole response. Non-2xx statuses are not errors
    /// here; see [`Response::error_for_status`].
    pub fn send(self) -> Result<Response, ProviderError> {
        let what = self.what();
        let (scheme, authority, path) = split_url(&self.url).ok_or_else(|| {
            ProviderError::InvalidRequest(format!("'{}' is not an http(s) URL", self.url))
        })?;
        let mut entries: Vec<(String, Vec<u8>)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
            .collect();
        if !self.body.is_empty() {
            entries.push((
                "content-length".into(),
                self.body.len().to_string().into_bytes(),
            ));
        }
        let fields = Fields::from_list(&entries)
            .map_err(|e| ProviderError::InvalidRequest(format!("{what}: bad header: {e:?}")))?;
        let request = OutgoingRequest::new(fields);
        let invalid = |part: &str| ProviderError::InvalidRequest(format!("{what}: invalid {part}"));
        request
            .set_method(&self.method)
            .map_err(|()| invalid("method"))?;
        request
            .set_scheme(Some(&scheme))
            .map_err(|()| invalid("scheme"))?;
        request
            .set_authority(Some(authority))
            .map_err(|()| invalid("authority"))?;
        request
            .set_path_with_query(Some(path))
            .map_err(|()| invalid("path"))?;
        let body = request.body().map_err(|()| invalid("body"))?;

        let options = self.timeout_ms.map(|ms| {
            let options = RequestOptions::new();
            let ns = ms.saturating_mul(1_000_000);
            // Setting fails only when the host does not support a timeout.
            let _ = options.set_connect_timeout(Some(ns));
            let _ = options.set_first_byte_timeout(Some(ns));
            let _ = options.set_between_bytes_timeout(Some(ns));
            options
        });
        let pending =
            outgoing_handler::handle(request, options).map_err(|e| from_code(&what, &e))?;
        {
            let stream = body.write().map_err(|()| invalid("body stream"))?;
            for chunk in self.body.chunks(4096) {
                stream.blocking_write_and_flush(chunk).map_err(|e| {
                    ProviderError::Transient(format!("{what}: sending the body failed: {e:?}"))
                })?;
            }
        }
        OutgoingBody::finish(body, None).map_err(|e| from_code(&what, &e))?;

        pending.subscribe().block();
        let response = match pending.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(code))) => return Err(from_code(&what, &code)),
            Some(Err(())) | None => {
                return Err(ProviderError::ProviderFailed(format!(
                    "{what}: the response was lost"
                )));
            }
        };
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let incoming = response
            .consume()
            .map_err(|()| ProviderError::ProviderFailed(format!("{what}: no response body")))?;
        let stream = incoming.stream().map_err(|()| {
            ProviderError::ProviderFailed(format!("{what}: no response body stream"))
        })?;
        let mut data = Vec::new();
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => data.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(match wasip2::http::types::http_error_code(&e) {
                        Some(code) => from_code(&what, &code),
                        None => ProviderError::Transient(format!(
                            "{what}: reading the body failed: {}",
                            e.to_debug_string()
                        )),
                    });
                }
            }
        }
        Ok(Response {
            status,
            headers,
            body: data,
            what,
        })
    }
}

fn split_url(url: &str) -> Option<(Scheme, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return None,
    };
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.is_empty() {
        return None;
    }
    Some((scheme, authority, if path.is_empty() { "/" } else { path }))
}

/// Map a `wasi:http` error code to the contract's error.
pub fn from_code(what: &str, code: &ErrorCode) -> ProviderError {
    match code {
        ErrorCode::HttpRequestDenied => ProviderError::Unauthorized(format!(
            "{what} was denied by the host's egress policy; the host's error names the grant to add"
        )),
        ErrorCode::HttpResponseBodySize(_) => ProviderError::ProviderFailed(format!(
            "{what}: the response exceeds the host's size cap"
        )),
        ErrorCode::HttpRequestBodySize(_) => ProviderError::InvalidRequest(format!(
            "{what}: the request body exceeds the host's size cap"
        )),
        ErrorCode::ConnectionLimitReached => {
            ProviderError::Transient(format!("{what}: too many requests open at once"))
        }
        ErrorCode::DnsError(_)
        | ErrorCode::DnsTimeout
        | ErrorCode::ConnectionRefused
        | ErrorCode::ConnectionTerminated
        | ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::DestinationUnavailable
        | ErrorCode::HttpResponseTimeout
        | ErrorCode::HttpResponseIncomplete => ProviderError::Transient(format!("{what}: {code}")),
        other => ProviderError::ProviderFailed(format!("{what}: {other}")),
    }
}

impl Response {
    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A header's value; names compare case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ProviderError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            ProviderError::ProviderFailed(format!("{}: malformed JSON response: {e}", self.what))
        })
    }

    pub fn xml<T: DeserializeOwned>(&self) -> Result<T, ProviderError> {
        quick_xml::de::from_reader(self.body.as_slice()).map_err(|e| {
            ProviderError::ProviderFailed(format!("{}: malformed XML response: {e}", self.what))
        })
    }

    /// Turn a non-2xx status into the matching [`ProviderError`].
    pub fn error_for_status(self) -> Result<Self, ProviderError> {
        if self.is_success() {
            return Ok(self);
        }
        Err(ProviderError::from_status(
            self.status,
            &self.what,
            self.header("retry-after"),
            &self.body,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_percent_encoded_but_unreserved_characters() {
        assert_eq!(
            encode("run:1/step a~b_c.d-é"),
            "run%3A1%2Fstep%20a~b_c.d-%C3%A9"
        );
    }

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        let (s, a, p) = split_url("https://api.test:8443/v3/auth?x=1").expect("url");
        assert!(matches!(s, Scheme::Https));
        assert_eq!((a, p), ("api.test:8443", "/v3/auth?x=1"));
        let (_, a, p) = split_url("http://127.0.0.1:80").expect("url");
        assert_eq!((a, p), ("127.0.0.1:80", "/"));
        assert!(split_url("ftp://x/").is_none());
        assert!(split_url("http:///path").is_none());
    }

    #[test]
    fn messages_leave_out_the_query() {
        let r = get("http://h/v1/snapshots?key=secret-ish");
        assert_eq!(r.what(), "GET http://h/v1/snapshots");
    }
}

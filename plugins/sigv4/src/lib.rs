//! AWS Signature Version 4, the one signing scheme every AWS API Rebound
//! calls uses (EC2 and ELBv2 query APIs, Route 53 REST-XML, EBS direct
//! REST-JSON). Pure functions over bytes, so the same code signs in the
//! AWS plugin (wasm32-wasip2) and verifies in the lab's AWS front.
//!
//! The canonical request follows the AWS reference: the path URI-encoded
//! once more (as every service but S3 expects), query parameters decoded,
//! re-encoded strictly and sorted, the signed headers lower-cased and
//! trimmed, the payload's SHA-256 (or the `x-amz-content-sha256` header).
//!
//! ```
//! use rebound_sigv4::{Credentials, Request, sign, verify};
//!
//! let creds = Credentials { access_key_id: "AKID", secret_access_key: "secret" };
//! let req = Request {
//!     method: "POST",
//!     host: "127.0.0.1:4566",
//!     path: "/",
//!     query: "",
//!     headers: &[("content-type".into(), "application/x-www-form-urlencoded".into())],
//!     body: b"Action=DescribeInstances&Version=2016-11-15",
//! };
//! let added = sign(&req, &creds, "us-east-1", "ec2", "20261205T103000Z");
//! let mut headers = req.headers.to_vec();
//! headers.extend(added);
//! headers.push(("host".into(), req.host.into()));
//! let signed = Request { headers: &headers, ..req };
//! let scope = verify(&signed, |_| Some("secret".into())).expect("a valid signature");
//! assert_eq!((scope.region.as_str(), scope.service.as_str()), ("us-east-1", "ec2"));
//! assert!(verify(&signed, |_| Some("wrong".into())).is_err());
//! ```
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// An access key pair.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
}

/// The parts of an HTTP request that a signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The `Host` header's value (`host[:port]`).
    pub host: &'a str,
    /// The path as sent (already percent-encoded where needed).
    pub path: &'a str,
    /// The query string as sent, without `?`.
    pub query: &'a str,
    /// Headers as sent (names in any case). When signing, `host`,
    /// `x-amz-date` and `x-amz-content-sha256` are added by [`sign`].
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// Who signed a request and for what, from its `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub access_key_id: String,
    pub date: String,
    pub region: String,
    pub service: String,
}

/// Why a request's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// No `Authorization: AWS4-HMAC-SHA256 ...` header, or a malformed one.
    Missing(String),
    /// The access key id is not known.
    UnknownKey(String),
    /// The signature does not match the request and the key's secret.
    Mismatch,
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing(why) => write!(f, "the request is not SigV4-signed: {why}"),
            Self::UnknownKey(id) => write!(f, "the access key id '{id}' is not known"),
            Self::Mismatch => f.write_str(
                "the request signature we calculated does not match the signature you provided; \
                 check your secret access key",
            ),
        }
    }
}

impl std::error::Error for VerifyError {}

/// Sign `req` with `creds` for `region` and `service` at `amz_date`
/// (`YYYYMMDDTHHMMSSZ`, see [`amz_date`]). Returns the headers to add:
/// `x-amz-date`, `x-amz-content-sha256` and `authorization`. The request's
/// `host` is signed from [`Request::host`].
pub fn sign(
    req: &Request<'_>,
    creds: &Credentials<'_>,
    region: &str,
    service: &str,
    amz_date: &str,
) -> Vec<(String, String)> {
    let payload = hex::encode(Sha256::digest(req.body));
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase();
            k != "authorization" && k != "content-length" && k != "user-agent"
        })
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    headers.retain(|(k, _)| k != "host" && k != "x-amz-date" && k != "x-amz-content-sha256");
    headers.push(("host".into(), req.host.to_owned()));
    headers.push(("x-amz-date".into(), amz_date.to_owned()));
    headers.push(("x-amz-content-sha256".into(), payload.clone()));
    headers.sort();
    let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    let signed = signed.join(";");
    let date = &amz_date[..amz_date.len().min(8)];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let canonical = canonical_request(req, &headers, &signed, &payload);
    let signature = signature(creds.secret_access_key, amz_date, &scope, &canonical);
    vec![
        ("x-amz-date".into(), amz_date.to_owned()),
        ("x-amz-content-sha256".into(), payload),
        (
            "authorization".into(),
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
                creds.access_key_id
            ),
        ),
    ]
}

/// The signer's scope of a request, from its `Authorization` header,
/// without checking the signature (how moto and the lab pick the service
/// and region).
pub fn scope_of(headers: &[(String, String)]) -> Result<Scope, VerifyError> {
    parse_authorization(headers).map(|(scope, _, _)| scope)
}

/// Check `req`'s signature; `secret_of` gives the secret of an access key
/// id, or `None` when the key is unknown. Returns the signer's scope.
pub fn verify(
    req: &Request<'_>,
    secret_of: impl Fn(&str) -> Option<String>,
) -> Result<Scope, VerifyError> {
    let (scope, signed, given) = parse_authorization(req.headers)?;
    let secret = secret_of(&scope.access_key_id)
        .ok_or_else(|| VerifyError::UnknownKey(scope.access_key_id.clone()))?;
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let amz_date = header("x-amz-date")
        .ok_or_else(|| VerifyError::Missing("no x-amz-date header".into()))?
        .to_owned();
    let mut headers = Vec::new();
    for name in signed.split(';') {
        let value = if name == "host" {
            header("host").unwrap_or(req.host)
        } else {
            header(name).ok_or_else(|| {
                VerifyError::Missing(format!("the signed header '{name}' is not sent"))
            })?
        };
        headers.push((name.to_owned(), collapse(value)));
    }
    let payload = header("x-amz-content-sha256")
        .map_or_else(|| hex::encode(Sha256::digest(req.body)), str::to_owned);
    let canonical = canonical_request(req, &headers, &signed, &payload);
    let credential_scope = format!(
        "{}/{}/{}/aws4_request",
        scope.date, scope.region, scope.service
    );
    let expected = signature(&secret, &amz_date, &credential_scope, &canonical);
    if constant_time_eq(expected.as_bytes(), given.as_bytes()) {
        Ok(scope)
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// `YYYYMMDDTHHMMSSZ` of a Unix time in seconds (UTC).
pub fn amz_date(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Percent-encode as SigV4 wants: unreserved characters kept, everything
/// else `%XX` (upper-case); `/` kept only when `keep_slash`.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char);
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Decode `%XX` escapes (and `+` as a space, as form encoding does).
pub fn uri_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 3;
                }
                Err(_) => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_authorization(
    headers: &[(String, String)],
) -> Result<(Scope, String, String), VerifyError> {
    let value = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| VerifyError::Missing("no Authorization header".into()))?;
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| VerifyError::Missing("not AWS4-HMAC-SHA256".into()))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let malformed = |what: &str| VerifyError::Missing(format!("no {what} in Authorization"));
    let credential = credential.ok_or_else(|| malformed("Credential"))?;
    let parts: Vec<&str> = credential.split('/').collect();
    let [key, date, region, service, "aws4_request"] = parts[..] else {
        return Err(malformed("well-formed Credential"));
    };
    Ok((
        Scope {
            access_key_id: key.to_owned(),
            date: date.to_owned(),
            region: region.to_owned(),
            service: service.to_owned(),
        },
        signed.ok_or_else(|| malformed("SignedHeaders"))?.to_owned(),
        signature.ok_or_else(|| malformed("Signature"))?.to_owned(),
    ))
}

fn canonical_request(
    req: &Request<'_>,
    headers: &[(String, String)],
    signed: &str,
    payload: &str,
) -> String {
    let path = if req.path.is_empty() { "/" } else { req.path };
    let mut query: Vec<(String, String)> = req
        .query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&uri_decode(k), false),
                uri_encode(&uri_decode(v), false),
            )
        })
        .collect();
    query.sort();
    let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut canonical_headers = String::new();
    for (k, v) in headers {
        canonical_headers.push_str(k);
        canonical_headers.push(':');
        canonical_headers.push_str(v);
        canonical_headers.push('\n');
    }
    format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed}\n{payload}",
        req.method,
        uri_encode(path, true),
        query.join("&")
    )
}

fn signature(secret: &str, amz_date: &str, scope: &str, canonical: &str) -> String {
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut key = format!("AWS4{secret}").into_bytes();
    for part in scope.split('/') {
        key = hmac(&key, part.as_bytes());
    }
    hex::encode(hmac(&key, to_sign.as_bytes()))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn collapse(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests;

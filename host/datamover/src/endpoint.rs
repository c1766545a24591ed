//! [`Endpoint`]: how to reach a disk image, as a plugin's `disk-endpoint`
//! describes it.

/// A readable or writable disk image over HTTP: `GET` with `Range` reads,
/// `PUT` with `Content-Range` writes, `GET <url>?digests=<block-size>` lists
/// block digests when `block_digests` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    /// Sent with every request (a transfer token); never logged.
    pub headers: Vec<(String, String)>,
    pub size: u64,
    pub ranged: bool,
    pub block_digests: bool,
    /// PEM root certificates to trust for this endpoint besides the public
    /// roots (the platform's own CA, from its site's `ca_pem`).
    pub ca_pem: Option<String>,
}

impl Endpoint {
    /// An endpoint served by a mover agent with a bearer token.
    pub fn agent(url: impl Into<String>, token: &str, size: u64) -> Self {
        Self {
            url: url.into(),
            headers: vec![("authorization".into(), format!("Bearer {token}"))],
            size,
            ranged: true,
            block_digests: true,
            ca_pem: None,
        }
    }
}

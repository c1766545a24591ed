//! The cluster's data plane, on one plain-HTTP port of its own
//! ([`super::KubeVirtSite::data_url`]):
//!
//! - the export proxy (virt-exportproxy): `GET /api/export.kubevirt.io/
//!   v1beta1/namespaces/{ns}/virtualmachineexports/{name}/volumes/{volume}/
//!   disk.img` with the export's token in the `x-kubevirt-export-token`
//!   header (or query parameter), ranged with `Range`;
//! - the upload proxy (cdi-uploadproxy): `PUT /v1beta1/upload` (or
//!   `/v1beta1/upload-async`) with `Authorization: Bearer <token of an
//!   UploadTokenRequest>`.
//!
//! Behind both, each volume is served by a mover agent
//! (`rebound_datamover::agent`) over its disk image, so the host's data
//! mover gets what it needs from a platform without a ranged-I/O API:
//! ranged reads, ranged writes with `Content-Range`, and `?digests=N`.
//! Both are HTTPS with the cluster's CA, as the real servers (an export's
//! links carry it as their `cert`; the host's data mover trusts it through
//! the site's `ca_pem`).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rebound_datamover::agent::{AgentConfig, MAX_RANGE, router, serve_router};

use super::Site;

/// A mover agent serving one disk image on its own loopback port; it stops
/// when dropped.
#[derive(Debug)]
pub(super) struct Agent {
    pub url: String,
    pub token: String,
    task: tokio::task::AbortHandle,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Agent {
    /// Serve `path` (read-only unless `writable`) from inside the site's
    /// runtime.
    pub fn start(path: PathBuf, writable: bool) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
        std::fs::File::open(&path)?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}/disk", listener.local_addr()?);
        let token = hex::encode(rand::random::<[u8; 16]>());
        let config = AgentConfig {
            path,
            token: token.clone(),
            writable,
        };
        let app = router(config)?;
        // Its connections go with it when it is dropped (serve_router).
        let task = runtime.spawn(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => serve_router(listener, app, None, std::future::pending()).await,
                Err(e) => tracing::warn!("kubevirt lab: mover agent stopped: {e}"),
            }
        });
        Ok(Self {
            url,
            token,
            task: task.abort_handle(),
        })
    }
}

/// The volumes a Ready export serves.
#[derive(Debug)]
pub(super) struct Served {
    pub token: String,
    pub expires: SystemTime,
    pub volumes: BTreeMap<String, Agent>,
}

/// Serve the export and upload proxies until the task is aborted.
pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    site: Arc<Site>,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
    shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let app = Router::new()
        .route(
            "/api/export.kubevirt.io/v1beta1/namespaces/{ns}/virtualmachineexports/{name}/volumes/{volume}/{file}",
            get(export),
        )
        .route("/v1beta1/upload", get(upload).put(upload))
        .route("/v1beta1/upload-async", get(upload).put(upload))
        .layer(DefaultBodyLimit::max(MAX_RANGE as usize + (1 << 20)))
        .with_state(site);
    crate::tls::serve_tls(listener, app, tls, shutdown).await;
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

/// Compare secrets in constant time.
fn same(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn export(
    State(site): State<Arc<Site>>,
    Path((ns, name, volume, file)): Path<(String, String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let given = headers
        .get("x-kubevirt-export-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| q.get("x-kubevirt-export-token").cloned())
        .unwrap_or_default();
    let agent = {
        let mut cluster = site.cluster();
        cluster.advance(site.options.latency);
        let Some(served) = cluster.exports.get(&(ns.clone(), name.clone())) else {
            return refuse(
                StatusCode::NOT_FOUND,
                format!("no ready export {ns}/{name}"),
            );
        };
        if !same(&given, &served.token) {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "missing or wrong x-kubevirt-export-token",
            );
        }
        if file != "disk.img" {
            return refuse(
                StatusCode::NOT_FOUND,
                format!("the lab serves volumes as raw disk.img only, not {file}"),
            );
        }
        let Some(agent) = served.volumes.get(&volume) else {
            return refuse(
                StatusCode::NOT_FOUND,
                format!("export {ns}/{name} has no volume {volume}"),
            );
        };
        (agent.url.clone(), agent.token.clone())
    };
    forward(
        &site,
        Method::GET,
        agent,
        &headers,
        q.get("digests"),
        Bytes::new(),
    )
    .await
}

async fn upload(
    State(site): State<Arc<Site>>,
    method: Method,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let agent = {
        let mut cluster = site.cluster();
        cluster.advance(site.options.latency);
        let now = SystemTime::now();
        let Some((claim, _)) = cluster
            .upload_tokens
            .iter()
            .find(|(token, (_, until))| same(&given, token) && *until > now)
            .map(|(_, v)| v.clone())
        else {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "missing, wrong or expired upload token",
            );
        };
        let Some(agent) = cluster.uploads.get(&claim) else {
            return refuse(
                StatusCode::CONFLICT,
                format!(
                    "PVC {}/{} is no longer open for upload (in use, or deleted)",
                    claim.0, claim.1
                ),
            );
        };
        (agent.url.clone(), agent.token.clone())
    };
    forward(&site, method, agent, &headers, q.get("digests"), body).await
}

/// Pass a request on to a mover agent, slowed by the site's data-plane
/// faults.
async fn forward(
    site: &Site,
    method: Method,
    (url, token): (String, String),
    headers: &HeaderMap,
    digests: Option<&String>,
    body: Bytes,
) -> Response {
    let faults = site.cluster().faults.clone();
    if faults.down {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "the cluster is down");
    }
    let mut request = site.http.request(method.clone(), &url).bearer_auth(&token);
    if let Some(d) = digests {
        request = request.query(&[("digests", d)]);
    }
    for name in [header::RANGE, header::CONTENT_RANGE, header::CONTENT_TYPE] {
        if let Some(v) = headers.get(&name) {
            request = request.header(name, v);
        }
    }
    let sent = body.len() as u64;
    if method == Method::PUT {
        request = request.body(body);
    }
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => return refuse(StatusCode::BAD_GATEWAY, format!("volume server: {e}")),
    };
    let status = response.status();
    let passed: Vec<(header::HeaderName, header::HeaderValue)> =
        [header::CONTENT_RANGE, header::CONTENT_TYPE]
            .into_iter()
            .filter_map(|h| response.headers().get(&h).map(|v| (h, v.clone())))
            .collect();
    let data = match response.bytes().await {
        Ok(d) => d,
        Err(e) => return refuse(StatusCode::BAD_GATEWAY, format!("volume server: {e}")),
    };
    let delay = faults.data_delay(sent + data.len() as u64);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut out = (status, data).into_response();
    for (h, v) in passed {
        out.headers_mut().insert(h, v);
    }
    out
}

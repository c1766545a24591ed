//! A simulated site of the "example platform", the small JSON API the
//! example plugin (`plugins/example`) speaks. It is the reference target for
//! plugin authors and the runtime's tests:
//!
//! - `GET /v1/health` → `{"version"}`
//! - `GET /v1/vms` → the workloads
//! - `POST /v1/snapshots` `{"vm_id","key","consistency"}` → 202 `{"id","status"}`;
//!   a snapshot is `creating` for the configured latency, then `available`
//! - `GET /v1/snapshots?key=K`, `GET /v1/snapshots/{id}`, `DELETE /v1/snapshots/{id}`
//! - `GET /huge?bytes=N` → N bytes (default 100 MB), to exercise the
//!   runtime's response cap
//!
//! Every `/v1` request needs `Authorization: Bearer <token>`. The site
//! counts the snapshots it created per idempotency key, so tests can prove
//! that no side effect happened twice.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Options of a simulated example site.
#[derive(Debug, Clone)]
pub struct ExampleOptions {
    pub token: String,
    /// How long a snapshot stays `creating`.
    pub snapshot_latency: Duration,
    /// Added to every `/v1` request, like a slow or distant API.
    pub api_latency: Duration,
    /// Serve HTTPS with the site's own CA (see [`ExampleSite::ca_pem`]).
    pub tls: bool,
    pub vms: Vec<Value>,
}

impl Default for ExampleOptions {
    fn default() -> Self {
        Self {
            token: random_token(),
            snapshot_latency: Duration::from_millis(50),
            api_latency: Duration::ZERO,
            tls: false,
            vms: default_vms(),
        }
    }
}

/// Three small VMs: a web tier, an app tier and a database.
pub fn default_vms() -> Vec<Value> {
    let vm = |id: &str, name: &str, tier: &str, cpus: u32, mem: u64, disk_gib: u64, ip: &str| {
        json!({
            "id": id, "name": name, "cpus": cpus, "memory_mib": mem, "firmware": "uefi",
            "disks": [{"id": format!("{id}-disk0"), "name": "root", "size_bytes": disk_gib << 30, "boot_order": 0}],
            "nics": [{"network": "prod-net", "mac": "52:54:00:12:34:5".to_owned() + &id[id.len()-1..], "ips": [ip]}],
            "labels": {"tier": tier, "app": "shop"},
            "power": "running"
        })
    };
    vec![
        vm("vm-1", "web-1", "web", 2, 2048, 10, "10.0.0.11"),
        vm("vm-2", "app-1", "app", 4, 8192, 20, "10.0.0.21"),
        vm("vm-3", "db-1", "db", 8, 16384, 100, "10.0.0.31"),
    ]
}

fn random_token() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}

#[derive(Debug, Clone, Serialize)]
struct Snapshot {
    id: String,
    vm_id: String,
    key: String,
    consistency: String,
    created_at_ms: u64,
    #[serde(skip)]
    ready_at: Instant,
}

#[derive(Default)]
struct Inner {
    snapshots: BTreeMap<String, Snapshot>,
    creations: HashMap<String, usize>,
    next: u64,
}

struct Site {
    options: ExampleOptions,
    inner: Mutex<Inner>,
}

impl Site {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running example site; stops when dropped.
pub struct ExampleSite {
    pub addr: SocketAddr,
    pub token: String,
    /// The site's CA when it serves HTTPS.
    pub ca_pem: Option<String>,
    site: Arc<Site>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl ExampleSite {
    /// Serve on an ephemeral loopback port.
    pub async fn start(options: ExampleOptions) -> std::io::Result<Self> {
        let tls = if options.tls {
            Some(crate::tls::site_tls().map_err(std::io::Error::other)?)
        } else {
            None
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let token = options.token.clone();
        let site = Arc::new(Site {
            options,
            inner: Mutex::default(),
        });
        let api = Router::new()
            .route("/v1/health", get(health))
            .route("/v1/vms", get(vms))
            .route("/v1/snapshots", get(find_snapshots).post(create_snapshot))
            .route(
                "/v1/snapshots/{id}",
                get(get_snapshot).delete(delete_snapshot),
            )
            .route_layer(middleware::from_fn_with_state(site.clone(), auth));
        let app = api.route("/huge", get(huge)).with_state(site.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let ca_pem = tls.as_ref().map(|t| t.ca_pem.clone());
        match tls {
            None => {
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = rx.await;
                        })
                        .await;
                });
            }
            Some(tls) => {
                tokio::spawn(serve_tls(listener, app, tls.server, rx));
            }
        }
        Ok(Self {
            addr,
            token,
            ca_pem,
            site,
            _shutdown: tx,
        })
    }

    /// The base URL plugins get as the site's `endpoint`.
    pub fn endpoint(&self) -> String {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// How many snapshots were created under each idempotency key.
    pub fn creations(&self) -> HashMap<String, usize> {
        self.site.inner().creations.clone()
    }
}

/// Accept TLS connections and serve the router on each until shutdown.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: Router,
    config: Arc<tokio_rustls::rustls::ServerConfig>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(_) => continue,
            },
            _ = &mut shutdown => return,
        };
        let acceptor = acceptor.clone();
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            // A client that refuses our certificate just goes away.
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
        });
    }
}

fn problem(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn auth(
    State(site): State<Arc<Site>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    tokio::time::sleep(site.options.api_latency).await;
    let expected = format!("Bearer {}", site.options.token);
    match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        Some(given) if given == expected => next.run(request).await,
        Some(_) => problem(StatusCode::UNAUTHORIZED, "invalid bearer token"),
        None => problem(StatusCode::UNAUTHORIZED, "missing Authorization header"),
    }
}

async fn health() -> Json<Value> {
    Json(json!({ "version": "1.4.2" }))
}

async fn vms(State(site): State<Arc<Site>>) -> Json<Value> {
    Json(Value::Array(site.options.vms.clone()))
}

#[derive(Deserialize)]
struct CreateSnapshot {
    vm_id: String,
    key: String,
    #[serde(default = "crash")]
    consistency: String,
}

fn crash() -> String {
    "crash".into()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn create_snapshot(
    State(site): State<Arc<Site>>,
    Json(req): Json<CreateSnapshot>,
) -> Response {
    if !site
        .options
        .vms
        .iter()
        .any(|v| v["id"] == req.vm_id.as_str())
    {
        return problem(StatusCode::NOT_FOUND, &format!("no VM '{}'", req.vm_id));
    }
    if req.key.is_empty() {
        return problem(StatusCode::BAD_REQUEST, "key must not be empty");
    }
    let mut inner = site.inner();
    inner.next += 1;
    let id = format!("snap-{}", inner.next);
    let snapshot = Snapshot {
        id: id.clone(),
        vm_id: req.vm_id,
        key: req.key.clone(),
        consistency: req.consistency,
        created_at_ms: now_ms(),
        ready_at: Instant::now() + site.options.snapshot_latency,
    };
    inner.snapshots.insert(id.clone(), snapshot);
    *inner.creations.entry(req.key).or_default() += 1;
    (
        StatusCode::ACCEPTED,
        Json(json!({ "id": id, "status": "creating" })),
    )
        .into_response()
}

fn render(site: &Site, s: &Snapshot) -> Value {
    let vm = site
        .options
        .vms
        .iter()
        .find(|v| v["id"] == s.vm_id.as_str())
        .cloned()
        .unwrap_or(Value::Null);
    let disks: Vec<Value> = vm["disks"]
        .as_array()
        .map(|disks| {
            disks
                .iter()
                .map(|d| {
                    json!({
                        "disk_id": d["id"],
                        "copy_id": format!("{}-{}", s.id, d["id"].as_str().unwrap_or_default()),
                        "size_bytes": d["size_bytes"],
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let status = if Instant::now() >= s.ready_at {
        "available"
    } else {
        "creating"
    };
    json!({
        "id": s.id, "vm_id": s.vm_id, "key": s.key, "status": status,
        "created_at_ms": s.created_at_ms, "consistency": s.consistency,
        "disks": disks, "vm": vm, "error": null,
    })
}

#[derive(Deserialize)]
struct FindQuery {
    key: Option<String>,
}

async fn find_snapshots(State(site): State<Arc<Site>>, Query(q): Query<FindQuery>) -> Json<Value> {
    let inner = site.inner();
    let found: Vec<Value> = inner
        .snapshots
        .values()
        .filter(|s| q.key.as_ref().is_none_or(|k| *k == s.key))
        .map(|s| render(&site, s))
        .collect();
    Json(Value::Array(found))
}

async fn get_snapshot(State(site): State<Arc<Site>>, Path(id): Path<String>) -> Response {
    let inner = site.inner();
    match inner.snapshots.get(&id) {
        Some(s) => Json(render(&site, s)).into_response(),
        None => problem(StatusCode::NOT_FOUND, &format!("no snapshot '{id}'")),
    }
}

async fn delete_snapshot(State(site): State<Arc<Site>>, Path(id): Path<String>) -> Response {
    match site.inner().snapshots.remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => problem(StatusCode::NOT_FOUND, &format!("no snapshot '{id}'")),
    }
}

#[derive(Deserialize)]
struct HugeQuery {
    bytes: Option<u64>,
}

/// Streams N bytes in 64 KiB chunks without holding them in memory.
async fn huge(Query(q): Query<HugeQuery>) -> Response {
    const CHUNK: usize = 64 << 10;
    let total = q.bytes.unwrap_or(100_000_000);
    let chunks = total.div_ceil(CHUNK as u64);
    let stream = futures_util::stream::iter((0..chunks).map(move |i| {
        let len = if i + 1 == chunks {
            total - i * CHUNK as u64
        } else {
            CHUNK as u64
        };
        Ok::<_, std::convert::Infallible>(bytes::Bytes::from(vec![b'x'; len as usize]))
    }));
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

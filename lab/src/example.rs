//! A simulated site of the "example platform", the small JSON API the
//! example plugin (`plugins/example`) speaks. It is the reference target for
//! plugin authors and the runtime's tests:
//!
//! - `GET /v1/health` → `{"version"}`
//! - `GET /v1/vms[?key=K]`, `GET /v1/vms/{id}`, `DELETE /v1/vms/{id}`
//! - `POST /v1/vms` `{"key","name","from_snapshot","networks","labels","start"}`
//!   → 202 `{"id","status"}`: a VM from a snapshot of this site, `building`
//!   for the configured latency, then `active`
//! - `POST /v1/vms/{id}/fence` / `…/unfence` `{"key","epoch"}`: stop the VM
//!   and block its writes, recording the epoch; unfence under an older
//!   epoch is refused with 409
//! - `POST /v1/snapshots` `{"key","vm_id","consistency"}` or
//!   `{"key","replica_of":{…the source snapshot…}}` → 202 `{"id","status"}`;
//!   a snapshot (or received replica) is `creating` for the configured
//!   latency, then `available`
//! - `GET /v1/snapshots?key=K`, `GET /v1/snapshots/{id}`, `DELETE /v1/snapshots/{id}`
//! - `GET /v1/routes/{name}`, `PUT /v1/routes/{name}` `{"key","backends":[{"backend","weight"}]}`:
//!   traffic weights of a route
//! - With a disk folder (`ExampleOptions::disk_dir`) every disk holds real
//!   data (a sparse raw image, `crate::disk`): a snapshot copies the VM's
//!   disks, and the data path for the host's data mover opens:
//!   `POST /v1/exports` `{"key","snapshot_id","disk_id"}` serves one disk
//!   of a snapshot for reading, `POST /v1/imports`
//!   `{"key","name","size_bytes","base"}` a new volume (a copy of volume or
//!   snapshot copy `base`, when given) for writing — each through a mover
//!   agent on its own loopback port with its own token, answered as
//!   `{"id","status","url","token","size_bytes","volume_id"}`;
//!   `GET /v1/exports?key=K`, `GET|DELETE /v1/exports/{id}` (and the same
//!   for imports) find and stop them; `DELETE /v1/volumes/{id}` removes an
//!   imported volume. `GET /v1/snapshots/{id}/changes?base=B&disk=D` lists
//!   the byte ranges `[{"offset","length"}]` of disk `D` that changed
//!   between snapshot `B` and snapshot `id` of the same VM (changed-block
//!   tracking, 64 KiB granularity). `POST /v1/vms` then takes
//!   `from_volumes` and a `spec` instead of `from_snapshot`. Native
//!   replication of such a site is refused: its data moves through the
//!   data mover.
//! - With `ExampleOptions::guests` the site also plays the software inside
//!   its VMs: loopback addresses, and the ports a VM's `lab.services` label
//!   lists open while it runs, for health gates to probe (`guests`)
//! - `GET /huge?bytes=N` → N bytes (default 100 MB), to exercise the
//!   runtime's response cap
//!
//! Every `/v1` request needs `Authorization: Bearer <token>`. Like most
//! platforms the site does not deduplicate by key itself; it counts the
//! mutating requests it served per idempotency key, so tests can prove that
//! no side effect happened twice.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::disk::Disks;
use crate::guest::Refused;

mod guests;
mod transfers;

pub use guests::SERVICES_LABEL;

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
    /// Keep real disk data in this folder (see the module doc); none keeps
    /// metadata only.
    pub disk_dir: Option<std::path::PathBuf>,
    /// The loopback port to serve on; 0 picks a free one.
    pub port: u16,
    /// Play the software inside the VMs: loopback addresses of the site's
    /// own subnet, and the ports each VM's `lab.services` label lists open
    /// while it runs, for health gates to probe (see `guests`).
    pub guests: bool,
    /// The loopback address the site's mover agents serve exports and
    /// imports on, as a platform's appliances sit on a data network of
    /// their own (any of 127.0.0.0/8; the site's API is on 127.0.0.1).
    pub mover_address: std::net::Ipv4Addr,
}

impl Default for ExampleOptions {
    fn default() -> Self {
        Self {
            token: crate::random_hex(16),
            snapshot_latency: Duration::from_millis(50),
            api_latency: Duration::ZERO,
            tls: false,
            vms: default_vms(),
            disk_dir: None,
            port: 0,
            guests: false,
            mover_address: std::net::Ipv4Addr::LOCALHOST,
        }
    }
}

impl ExampleOptions {
    /// A site holding `vms` whose snapshots are ready after 20 ms, as
    /// tests want them: the other options are the defaults.
    pub fn quick(vms: Vec<Value>) -> Self {
        Self {
            snapshot_latency: Duration::from_millis(20),
            vms,
            ..Self::default()
        }
    }
}

/// Three small VMs: a web tier, an app tier and a database, whose guests
/// serve HTTP on 8080 (web, app) and PostgreSQL's port 5432 (db).
pub fn default_vms() -> Vec<Value> {
    let vm = |id: &str,
              name: &str,
              tier: &str,
              cpus: u32,
              mem: u64,
              disk_gib: u64,
              ip: &str,
              port: &str| {
        json!({
            "id": id, "name": name, "cpus": cpus, "memory_mib": mem, "firmware": "uefi",
            "disks": [{"id": format!("{id}-disk0"), "name": "root", "size_bytes": disk_gib << 30, "boot_order": 0}],
            "nics": [{"network": "prod-net", "mac": "52:54:00:12:34:5".to_owned() + &id[id.len()-1..], "ips": [ip]}],
            "labels": {"tier": tier, "app": "shop", SERVICES_LABEL: port},
            "power": "running"
        })
    };
    vec![
        vm("vm-1", "web-1", "web", 2, 2048, 10, "10.0.0.11", "8080"),
        vm("vm-2", "app-1", "app", 4, 8192, 20, "10.0.0.21", "8080"),
        vm("vm-3", "db-1", "db", 8, 16384, 100, "10.0.0.31", "5432"),
    ]
}

#[derive(Debug, Clone)]
struct Snapshot {
    id: String,
    vm_id: String,
    key: String,
    consistency: String,
    /// When the data was captured (for a replica: at the source).
    created_at_ms: u64,
    /// The VM as it was at capture time.
    vm: Value,
    /// The snapshot this is a replica of, as `<site>/<id>`.
    replica_of: Option<String>,
    ready_at: Instant,
}

#[derive(Debug, Clone)]
struct Vm {
    /// id, name, cpus, memory_mib, firmware, disks, nics, labels.
    doc: Value,
    /// The key it was created under (none for the seeded VMs).
    key: Option<String>,
    running: bool,
    fenced: bool,
    /// The highest fencing epoch recorded on the VM.
    epoch: u64,
    ready_at: Instant,
}

#[derive(Debug, Clone, Default)]
struct Route {
    backends: BTreeMap<String, u8>,
    /// The key of the last change.
    key: Option<String>,
}

#[derive(Default)]
struct Inner {
    vms: BTreeMap<String, Vm>,
    snapshots: BTreeMap<String, Snapshot>,
    routes: BTreeMap<String, Route>,
    transfers: BTreeMap<String, transfers::Transfer>,
    /// Mutating requests per idempotency key.
    effects: HashMap<String, usize>,
    next: u64,
    /// The failures the site shows (`/_lab/faults`, `set_down`).
    faults: crate::faults::Faults,
    /// The last host number handed out in the guests' subnet.
    next_host: u8,
    /// What a guest's port answers, by VM name and port, when not 200.
    service_status: HashMap<(String, u16), StatusCode>,
}

impl Inner {
    fn id(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}-{}", self.next)
    }

    fn effect(&mut self, key: &str) {
        *self.effects.entry(key.to_owned()).or_default() += 1;
    }
}

struct Site {
    options: ExampleOptions,
    /// The guests' subnet, when the site plays them.
    subnet: Option<guests::Subnet>,
    /// Real disk data, when the site keeps it.
    disks: Option<Disks>,
    inner: Mutex<Inner>,
    /// API requests being served now, and the most ever at once.
    in_flight: std::sync::atomic::AtomicUsize,
    most_in_flight: std::sync::atomic::AtomicUsize,
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
    /// Serve on loopback, on `options.port` (by default a free port).
    pub async fn start(options: ExampleOptions) -> std::io::Result<Self> {
        let tls = if options.tls {
            Some(crate::tls::site_tls().map_err(std::io::Error::other)?)
        } else {
            None
        };
        let listener = crate::listen(options.port).await?;
        let addr = listener.local_addr()?;
        let token = options.token.clone();
        let mut inner = Inner::default();
        let disks = options.disk_dir.as_ref().map(Disks::open).transpose()?;
        let subnet = options.guests.then(guests::Subnet::random);
        for doc in &options.vms {
            if let Some(disks) = &disks {
                // Each disk starts with a little data of its own (a boot
                // block), the rest is unwritten.
                for d in doc["disks"].as_array().into_iter().flatten() {
                    let id = d["id"].as_str().unwrap_or_default();
                    disks.create(id, d["size_bytes"].as_u64().unwrap_or_default())?;
                    let boot: Vec<u8> = (0..65_536u32)
                        .map(|i| (i as u8) ^ id.bytes().fold(0u8, |a, b| a.wrapping_add(b)))
                        .collect();
                    disks.write(id, 0, &boot)?;
                }
            }
            let id = doc["id"].as_str().unwrap_or_default().to_owned();
            let running = doc["power"] == "running";
            let mut doc = doc.clone();
            if let Some(doc) = doc.as_object_mut() {
                doc.remove("power");
            }
            if let Some(subnet) = subnet {
                for nic in doc["nics"].as_array_mut().into_iter().flatten() {
                    for ip in nic["ips"].as_array_mut().into_iter().flatten() {
                        if let Some(moved) = ip.as_str().and_then(|ip| subnet.adopt(ip)) {
                            *ip = json!(moved);
                        }
                    }
                }
            }
            let vm = Vm {
                doc,
                key: None,
                running,
                fenced: false,
                epoch: 0,
                ready_at: Instant::now(),
            };
            inner.vms.insert(id, vm);
        }
        let site = Arc::new(Site {
            options,
            subnet,
            disks,
            inner: Mutex::new(inner),
            in_flight: Default::default(),
            most_in_flight: Default::default(),
        });
        let api = Router::new()
            .route("/v1/health", get(health))
            .route("/v1/vms", get(find_vms).post(create_vm))
            .route("/v1/vms/{id}", get(get_vm).delete(delete_vm))
            .route("/v1/vms/{id}/fence", post(fence_vm))
            .route("/v1/vms/{id}/unfence", post(unfence_vm))
            .route("/v1/snapshots", get(find_snapshots).post(create_snapshot))
            .route(
                "/v1/snapshots/{id}",
                get(get_snapshot).delete(delete_snapshot),
            )
            .route("/v1/routes/{name}", get(get_route).put(put_route))
            .route(
                "/v1/exports",
                get(transfers::find_exports).post(transfers::create_export),
            )
            .route(
                "/v1/imports",
                get(transfers::find_imports).post(transfers::create_import),
            )
            .route(
                "/v1/exports/{id}",
                get(transfers::get_transfer).delete(transfers::delete_transfer),
            )
            .route(
                "/v1/imports/{id}",
                get(transfers::get_transfer).delete(transfers::delete_transfer),
            )
            .route("/v1/snapshots/{id}/changes", get(snapshot_changes))
            .route(
                "/v1/volumes/{id}",
                axum::routing::delete(transfers::delete_volume),
            )
            .route_layer(middleware::from_fn_with_state(site.clone(), auth));
        let app = api
            .route("/huge", get(huge))
            .merge(crate::faults::routes::<Site>())
            .with_state(site.clone());
        if subnet.is_some() {
            guests::spawn(Arc::downgrade(&site));
        }
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
                tokio::spawn(crate::tls::serve_tls(listener, app, tls.server, rx));
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

    /// Where tests write into the site's disks as the workloads' guests
    /// would: `POST` a [`crate::guest::GuestWrite`].
    pub fn guest_writes_url(&self) -> String {
        format!("{}/_lab/guest-writes", self.endpoint())
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

    /// How many mutating requests (create, fence, unfence, route change)
    /// the site served under each idempotency key: a key seen twice is a
    /// side effect repeated.
    pub fn effects(&self) -> HashMap<String, usize> {
        self.site.inner().effects.clone()
    }

    /// Take the whole site down (every `/v1` request answers 503) or bring
    /// it back, like a site lost in a disaster.
    pub fn set_down(&self, down: bool) {
        self.site.inner().faults.down = down;
    }

    /// The VMs the site has now, as `GET /v1/vms` renders them.
    pub fn vms(&self) -> Vec<Value> {
        let inner = self.site.inner();
        inner.vms.values().map(render_vm).collect()
    }

    /// A guest write to disk `disk` (index) of VM `vm_id`; a VM that is
    /// fenced or stopped writes nothing.
    pub fn write_disk(
        &self,
        vm_id: &str,
        disk: usize,
        offset: u64,
        data: &[u8],
    ) -> Result<(), String> {
        let id = {
            let inner = self.site.inner();
            let vm = inner.vms.get(vm_id).ok_or(format!("no VM '{vm_id}'"))?;
            vm.doc["disks"][disk]["id"]
                .as_str()
                .ok_or(format!("VM '{vm_id}' has no disk {disk}"))?
                .to_owned()
        };
        write_guest(&self.site, &id, offset, data).map_err(|e| e.to_string())
    }

    /// The whole content of disk `disk` (index) of VM `vm_id`.
    pub fn read_disk(&self, vm_id: &str, disk: usize) -> Result<Vec<u8>, String> {
        let disks = self
            .site
            .disks
            .as_ref()
            .ok_or("the site keeps no disk data")?;
        let id = {
            let inner = self.site.inner();
            let vm = inner.vms.get(vm_id).ok_or(format!("no VM '{vm_id}'"))?;
            vm.doc["disks"][disk]["id"]
                .as_str()
                .ok_or(format!("VM '{vm_id}' has no disk {disk}"))?
                .to_owned()
        };
        disks.read(&id).map_err(|e| e.to_string())
    }

    /// The ids of the snapshots (recovery points) the site keeps.
    pub fn snapshots(&self) -> Vec<String> {
        self.site.inner().snapshots.keys().cloned().collect()
    }

    /// The most API requests the site served at once so far.
    pub fn most_in_flight(&self) -> usize {
        self.site
            .most_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many disk images (VM disks, snapshot copies, volumes) the site
    /// keeps.
    pub fn disk_images(&self) -> usize {
        self.site.disks.as_ref().map_or(0, Disks::count)
    }

    /// Transfer endpoints (exports and imports) the site still serves.
    pub fn open_transfers(&self) -> usize {
        self.site.inner().transfers.len()
    }

    /// What port `port` of the guests of VMs named `vm` answers HTTP
    /// requests with from now on (200 by default): an application that
    /// came up broken.
    pub fn set_service_status(&self, vm: &str, port: u16, status: u16) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut inner = self.site.inner();
        inner.service_status.insert((vm.to_owned(), port), status);
    }

    /// A route's backends and weights.
    pub fn route(&self, name: &str) -> BTreeMap<String, u8> {
        let inner = self.site.inner();
        inner
            .routes
            .get(name)
            .map(|r| r.backends.clone())
            .unwrap_or_default()
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
    use std::sync::atomic::Ordering::SeqCst;
    let now = site.in_flight.fetch_add(1, SeqCst) + 1;
    site.most_in_flight.fetch_max(now, SeqCst);
    let response = serve(&site, &headers, request, next).await;
    site.in_flight.fetch_sub(1, SeqCst);
    response
}

async fn serve(site: &Site, headers: &HeaderMap, request: Request, next: Next) -> Response {
    tokio::time::sleep(site.options.api_latency).await;
    let faults = site.inner().faults.clone();
    let (method, path) = (
        request.method().to_string(),
        request.uri().path().to_owned(),
    );
    if let Some(injected) = faults
        .meet(&method, &path, || site.inner().faults.hang)
        .await
    {
        return injected.respond(|status, down| {
            problem(
                status,
                if down {
                    "the site is down"
                } else {
                    "injected by the lab"
                },
            )
        });
    }
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

/// The guest of the running, unfenced VM that has disk `id` writes
/// `data` at `offset` of it.
fn write_guest(site: &Site, id: &str, offset: u64, data: &[u8]) -> Result<(), Refused> {
    let disks = site
        .disks
        .as_ref()
        .ok_or_else(|| Refused::NoDisk("the site keeps no disk data".into()))?;
    {
        let inner = site.inner();
        let vm = inner
            .vms
            .values()
            .find(|vm| {
                vm.doc["disks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|d| d["id"] == id)
            })
            .ok_or_else(|| Refused::NoDisk(format!("no VM has disk '{id}'")))?;
        if vm.fenced || !vm.running {
            return Err(Refused::NotRunning(format!(
                "VM '{}' is fenced or stopped: it writes nothing",
                vm.doc["id"].as_str().unwrap_or_default()
            )));
        }
    }
    crate::guest::write_image(disks, id, id, offset, data)
}

/// `/_lab/faults`, `/_lab/effects` and `/_lab/guest-writes`
/// ([`crate::faults::routes`]).
impl crate::faults::Scripted for Site {
    fn with_faults<R>(&self, f: impl FnOnce(&mut crate::faults::Faults) -> R) -> R {
        f(&mut self.inner().faults)
    }

    fn effects_json(&self) -> Value {
        json!(self.inner().effects)
    }

    async fn guest_write(
        &self,
        write: &crate::guest::GuestWrite,
        data: &[u8],
    ) -> Result<(), Refused> {
        write_guest(self, &write.disk, write.offset, data)
    }
}

async fn health() -> Json<Value> {
    Json(json!({ "version": "1.4.2" }))
}

fn render_vm(vm: &Vm) -> Value {
    let mut doc = vm.doc.clone();
    let building = Instant::now() < vm.ready_at;
    let power = if vm.running && !building {
        "running"
    } else {
        "stopped"
    };
    if let Some(fields) = doc.as_object_mut() {
        fields.insert("power".into(), json!(power));
        fields.insert(
            "status".into(),
            json!(if building { "building" } else { "active" }),
        );
        fields.insert("fenced".into(), json!(vm.fenced));
        fields.insert("epoch".into(), json!(vm.epoch));
        fields.insert("key".into(), json!(vm.key));
    }
    doc
}

#[derive(Deserialize)]
struct FindQuery {
    key: Option<String>,
}

async fn find_vms(State(site): State<Arc<Site>>, Query(q): Query<FindQuery>) -> Json<Value> {
    let inner = site.inner();
    let found = inner
        .vms
        .values()
        .filter(|vm| q.key.is_none() || vm.key == q.key)
        .map(render_vm)
        .collect();
    Json(Value::Array(found))
}

async fn get_vm(State(site): State<Arc<Site>>, Path(id): Path<String>) -> Response {
    match site.inner().vms.get(&id) {
        Some(vm) => Json(render_vm(vm)).into_response(),
        None => problem(StatusCode::NOT_FOUND, &format!("no VM '{id}'")),
    }
}

async fn delete_vm(State(site): State<Arc<Site>>, Path(id): Path<String>) -> Response {
    match site.inner().vms.remove(&id) {
        Some(vm) => {
            if let Some(disks) = &site.disks {
                for d in vm.doc["disks"].as_array().into_iter().flatten() {
                    let _ = disks.remove(d["id"].as_str().unwrap_or_default());
                }
            }
            StatusCode::NO_CONTENT.into_response()
        }
        None => problem(StatusCode::NOT_FOUND, &format!("no VM '{id}'")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkMap {
    source: String,
    target: String,
    #[serde(default)]
    keep_addresses: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateVm {
    key: String,
    name: String,
    from_snapshot: Option<String>,
    /// Imported volumes, one per disk of `spec`, in order.
    from_volumes: Option<Vec<String>>,
    /// The VM around `from_volumes`: cpus, memory_mib, firmware, disks
    /// (name, size_bytes, boot_order), nics.
    spec: Option<Value>,
    #[serde(default)]
    networks: Vec<NetworkMap>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    start: bool,
}

/// Create a VM from a snapshot on this site: its disks become the VM's.
async fn create_vm(State(site): State<Arc<Site>>, Json(req): Json<CreateVm>) -> Response {
    if req.key.is_empty() {
        return problem(StatusCode::BAD_REQUEST, "key must not be empty");
    }
    let mut inner = site.inner();
    // Where each new disk's data comes from (image ids), and the VM doc.
    let (mut doc, sources): (Value, Vec<String>) = match (
        &req.from_snapshot,
        &req.from_volumes,
        &req.spec,
    ) {
        (Some(from), None, None) => {
            let Some(snapshot) = inner.snapshots.get(from).cloned() else {
                let msg = format!("no snapshot '{from}' on this site");
                return problem(StatusCode::NOT_FOUND, &msg);
            };
            if Instant::now() < snapshot.ready_at {
                let msg = format!("snapshot '{}' is not available yet", snapshot.id);
                return problem(StatusCode::CONFLICT, &msg);
            }
            let sources = snapshot.vm["disks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| format!("{}-{}", snapshot.id, d["id"].as_str().unwrap_or_default()))
                .collect();
            (snapshot.vm.clone(), sources)
        }
        (None, Some(volumes), Some(spec)) => {
            let Some(disks) = &site.disks else {
                return problem(
                    StatusCode::CONFLICT,
                    "this site keeps no disk data, so it has no volumes",
                );
            };
            let wanted = spec["disks"].as_array().cloned().unwrap_or_default();
            if wanted.len() != volumes.len() {
                let msg = format!(
                    "spec has {} disks but {} volumes were given",
                    wanted.len(),
                    volumes.len()
                );
                return problem(StatusCode::BAD_REQUEST, &msg);
            }
            for (volume, d) in volumes.iter().zip(&wanted) {
                match disks.size(volume) {
                    Ok(size) if Some(size) == d["size_bytes"].as_u64() => {}
                    Ok(size) => {
                        let msg = format!(
                            "volume '{volume}' holds {size} bytes, the spec's disk {}",
                            d["size_bytes"]
                        );
                        return problem(StatusCode::BAD_REQUEST, &msg);
                    }
                    Err(_) => {
                        return problem(StatusCode::NOT_FOUND, &format!("no volume '{volume}'"));
                    }
                }
            }
            let mut doc = spec.clone();
            doc["disks"] = json!(wanted.iter().map(|d| json!({"id": d["name"], "name": d["name"], "size_bytes": d["size_bytes"], "boot_order": d["boot_order"]})).collect::<Vec<_>>());
            (doc, volumes.clone())
        }
        _ => {
            return problem(
                StatusCode::BAD_REQUEST,
                "give either from_snapshot, or from_volumes with a spec",
            );
        }
    };
    let id = inner.id("vm");
    let mut nics: Vec<Value> = doc["nics"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|nic| {
            let map = req
                .networks
                .iter()
                .find(|m| nic["network"] == m.source.as_str());
            match map {
                Some(m) if m.keep_addresses => {
                    json!({"network": m.target, "mac": nic["mac"], "ips": nic["ips"]})
                }
                Some(m) => json!({"network": m.target, "mac": null, "ips": []}),
                None => nic,
            }
        })
        .collect();
    if let Some(subnet) = site.subnet {
        guests::assign(&mut inner, subnet, &mut nics);
    }
    let disks: Vec<Value> = doc["disks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|d| json!({"id": format!("{id}-{}", d["name"].as_str().unwrap_or("disk")), "name": d["name"], "size_bytes": d["size_bytes"], "boot_order": d["boot_order"]}))
        .collect();
    // The new VM's disks are copies: the snapshot or imported volumes stay
    // the point-in-time copies they are.
    if let Some(images) = &site.disks {
        for (d, source) in disks.iter().zip(&sources) {
            let target = d["id"].as_str().unwrap_or_default();
            if let Err(e) = images.copy(source, target) {
                let msg = format!("copying '{source}' to the new disk: {e}");
                return problem(StatusCode::CONFLICT, &msg);
            }
        }
    }
    if let Some(fields) = doc.as_object_mut() {
        fields.remove("power");
        fields.insert("id".into(), json!(id));
        fields.insert("name".into(), json!(req.name));
        fields.insert("nics".into(), json!(nics));
        fields.insert("disks".into(), json!(disks));
        fields.insert("labels".into(), json!(req.labels));
    }
    let vm = Vm {
        doc,
        key: Some(req.key.clone()),
        running: req.start,
        fenced: false,
        epoch: 0,
        ready_at: Instant::now() + site.options.snapshot_latency,
    };
    inner.vms.insert(id.clone(), vm);
    inner.effect(&req.key);
    (
        StatusCode::ACCEPTED,
        Json(json!({ "id": id, "status": "building" })),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FenceBody {
    key: String,
    epoch: u64,
}

/// Stop the VM and block its writes, recording the epoch.
async fn fence_vm(
    State(site): State<Arc<Site>>,
    Path(id): Path<String>,
    Json(req): Json<FenceBody>,
) -> Response {
    let mut inner = site.inner();
    let Some(vm) = inner.vms.get_mut(&id) else {
        return problem(StatusCode::NOT_FOUND, &format!("no VM '{id}'"));
    };
    vm.running = false;
    vm.fenced = true;
    vm.epoch = vm.epoch.max(req.epoch);
    let rendered = render_vm(vm);
    inner.effect(&req.key);
    Json(rendered).into_response()
}

/// Lift a fence; refused for an epoch older than the one recorded.
async fn unfence_vm(
    State(site): State<Arc<Site>>,
    Path(id): Path<String>,
    Json(req): Json<FenceBody>,
) -> Response {
    let mut inner = site.inner();
    let Some(vm) = inner.vms.get_mut(&id) else {
        return problem(StatusCode::NOT_FOUND, &format!("no VM '{id}'"));
    };
    if req.epoch < vm.epoch {
        let msg = format!(
            "VM '{id}' was fenced under epoch {}; unfence needs at least that epoch, got {}",
            vm.epoch, req.epoch
        );
        return problem(StatusCode::CONFLICT, &msg);
    }
    vm.running = true;
    vm.fenced = false;
    vm.epoch = req.epoch;
    let rendered = render_vm(vm);
    inner.effect(&req.key);
    Json(rendered).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplicaSource {
    site: String,
    id: String,
    vm_id: String,
    created_at_ms: u64,
    consistency: String,
    vm: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSnapshot {
    key: String,
    vm_id: Option<String>,
    #[serde(default = "crash")]
    consistency: String,
    /// Receive a replica of another site's snapshot instead.
    replica_of: Option<ReplicaSource>,
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
    if req.key.is_empty() {
        return problem(StatusCode::BAD_REQUEST, "key must not be empty");
    }
    let mut inner = site.inner();
    if site.disks.is_some() && req.replica_of.is_some() {
        return problem(
            StatusCode::CONFLICT,
            "this site keeps real disk data, which native replication does not carry: \
             replicate with the host's data mover (replication.mode: data_mover)",
        );
    }
    let (vm_id, vm, created_at_ms, consistency, replica_of) = match (req.vm_id, req.replica_of) {
        (Some(vm_id), None) => {
            let Some(vm) = inner.vms.get(&vm_id) else {
                return problem(StatusCode::NOT_FOUND, &format!("no VM '{vm_id}'"));
            };
            let vm = render_vm(vm);
            (vm_id, vm, now_ms(), req.consistency, None)
        }
        (None, Some(r)) => (
            r.vm_id,
            r.vm,
            r.created_at_ms,
            r.consistency,
            Some(format!("{}/{}", r.site, r.id)),
        ),
        _ => {
            return problem(
                StatusCode::BAD_REQUEST,
                "give exactly one of vm_id (snapshot a VM) and replica_of (receive a replica)",
            );
        }
    };
    let id = inner.id("snap");
    // Capture the data now: each disk is copied as it is at this instant.
    if let Some(disks) = &site.disks {
        for d in vm["disks"].as_array().into_iter().flatten() {
            let disk = d["id"].as_str().unwrap_or_default();
            if let Err(e) = disks.copy(disk, &format!("{id}-{disk}")) {
                return problem(StatusCode::CONFLICT, &format!("copying disk '{disk}': {e}"));
            }
        }
    }
    let snapshot = Snapshot {
        id: id.clone(),
        vm_id,
        key: req.key.clone(),
        consistency,
        created_at_ms,
        vm,
        replica_of,
        ready_at: Instant::now() + site.options.snapshot_latency,
    };
    inner.snapshots.insert(id.clone(), snapshot);
    inner.effect(&req.key);
    (
        StatusCode::ACCEPTED,
        Json(json!({ "id": id, "status": "creating" })),
    )
        .into_response()
}

fn render(s: &Snapshot) -> Value {
    let disks: Vec<Value> = s.vm["disks"]
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
        "disks": disks, "vm": s.vm, "replica_of": s.replica_of, "error": null,
    })
}

async fn find_snapshots(State(site): State<Arc<Site>>, Query(q): Query<FindQuery>) -> Json<Value> {
    let inner = site.inner();
    let found: Vec<Value> = inner
        .snapshots
        .values()
        .filter(|s| q.key.as_ref().is_none_or(|k| *k == s.key))
        .map(render)
        .collect();
    Json(Value::Array(found))
}

async fn get_snapshot(State(site): State<Arc<Site>>, Path(id): Path<String>) -> Response {
    let inner = site.inner();
    match inner.snapshots.get(&id) {
        Some(s) => Json(render(s)).into_response(),
        None => problem(StatusCode::NOT_FOUND, &format!("no snapshot '{id}'")),
    }
}

async fn delete_snapshot(State(site): State<Arc<Site>>, Path(id): Path<String>) -> Response {
    match site.inner().snapshots.remove(&id) {
        Some(s) => {
            if let Some(disks) = &site.disks {
                for d in s.vm["disks"].as_array().into_iter().flatten() {
                    let _ = disks.remove(&format!("{id}-{}", d["id"].as_str().unwrap_or_default()));
                }
            }
            StatusCode::NO_CONTENT.into_response()
        }
        None => problem(StatusCode::NOT_FOUND, &format!("no snapshot '{id}'")),
    }
}

#[derive(Deserialize)]
struct ChangesQuery {
    base: String,
    disk: String,
}

/// Changed-block tracking between two snapshots of one VM.
async fn snapshot_changes(
    State(site): State<Arc<Site>>,
    Path(id): Path<String>,
    Query(q): Query<ChangesQuery>,
) -> Response {
    let Some(disks) = &site.disks else {
        return problem(
            StatusCode::CONFLICT,
            "this site keeps no disk data to compare",
        );
    };
    {
        let inner = site.inner();
        let (Some(newer), Some(older)) = (inner.snapshots.get(&id), inner.snapshots.get(&q.base))
        else {
            let msg = format!("no snapshot '{id}' or '{}' on this site", q.base);
            return problem(StatusCode::NOT_FOUND, &msg);
        };
        if newer.vm_id != older.vm_id {
            let msg = format!(
                "snapshots '{}' and '{id}' are of different VMs; changes are tracked per VM",
                q.base
            );
            return problem(StatusCode::CONFLICT, &msg);
        }
    }
    let (a, b) = (format!("{}-{}", q.base, q.disk), format!("{id}-{}", q.disk));
    match disks.changed_ranges(&a, &b, 65_536) {
        Ok(ranges) => Json(json!(
            ranges
                .iter()
                .map(|(offset, length)| json!({"offset": offset, "length": length}))
                .collect::<Vec<_>>()
        ))
        .into_response(),
        Err(e) => problem(StatusCode::NOT_FOUND, &format!("disk '{}': {e}", q.disk)),
    }
}

fn render_route(name: &str, route: &Route) -> Value {
    let backends: Vec<Value> = route
        .backends
        .iter()
        .map(|(backend, weight)| json!({"backend": backend, "weight": weight}))
        .collect();
    json!({"name": name, "backends": backends, "key": route.key})
}

async fn get_route(State(site): State<Arc<Site>>, Path(name): Path<String>) -> Json<Value> {
    let inner = site.inner();
    let route = inner.routes.get(&name).cloned().unwrap_or_default();
    Json(render_route(&name, &route))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Backend {
    backend: String,
    weight: u8,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutRoute {
    key: String,
    backends: Vec<Backend>,
}

/// Set the weights of the listed backends; others keep theirs.
async fn put_route(
    State(site): State<Arc<Site>>,
    Path(name): Path<String>,
    Json(req): Json<PutRoute>,
) -> Response {
    if let Some(b) = req.backends.iter().find(|b| b.weight > 100) {
        let msg = format!(
            "weight of '{}' is {}; weights are 0..=100",
            b.backend, b.weight
        );
        return problem(StatusCode::BAD_REQUEST, &msg);
    }
    let mut inner = site.inner();
    let route = inner.routes.entry(name.clone()).or_default();
    for b in req.backends {
        route.backends.insert(b.backend, b.weight);
    }
    route.key = Some(req.key.clone());
    let rendered = render_route(&name, route);
    inner.effect(&req.key);
    Json(rendered).into_response()
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

//! A simulated oVirt / Red Hat Virtualization engine: the engine API v4
//! subset Rebound's plugin and ovirt-engine-sdk-python use (`lab/README.md`
//! lists it), plus the imageio data plane, on one loopback port over
//! HTTPS with the engine's own CA, as the real engine (clients are given
//! [`OVirtSite::ca_pem`], or fetch it as they do from a real engine at
//! `/ovirt-engine/services/pki-resource?resource=ca-certificate&format=X509-PEM-CA`).
//!
//! - SSO: `POST /ovirt-engine/sso/oauth/token` (password grant → bearer
//!   token; a wrong password is refused with oVirt's JSON error),
//!   `POST /ovirt-engine/services/sso-logout`.
//! - `/ovirt-engine/api` ([`api`]): XML in and out with the engine's element
//!   names and `href`/`id` attributes; VMs (search by name, add, clone from
//!   a snapshot, start/stop/shutdown with status progressions, removal
//!   with or without its disks: `detach_only`), disk attachments (detached
//!   or removed), NICs, tags, disks (copies included), snapshots (`locked`
//!   → `ok`, a job per `correlation_id`), incremental backups with
//!   checkpoints, image transfers, clusters, storage domains and their disk
//!   snapshots, networks and vNIC profiles;
//!   errors are `<fault><reason/><detail/></fault>`.
//! - `/images/{ticket}` ([`imageio`]): the transfer's data plane.
//! - Disks, snapshot and backup images are sparse files in the state
//!   directory ([`crate::disk`]), copied when the snapshot or backup is
//!   taken.
//! - `/_lab/faults` injects failures ([`crate::Faults`]), `/_lab/effects`
//!   counts mutating API calls by `correlation_id`.
//!
//! Not simulated: hosts, data centers beyond one, templates beyond Blank,
//! memory snapshots, snapshot preview/commit, live storage migration,
//! storage-domain replication and import (DR), quotas, permissions, events,
//! Basic authentication, and imageio's own port (54323; the lab serves the
//! data plane on the engine's port, as the engine's imageio proxy does).

// Handlers bail out with the engine's fault document (`Err(Response)`).
#![allow(clippy::result_large_err)]

mod api;
mod imageio;
mod state;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Form, Json, Router};
use rebound_plugin_sdk::xml::Element;
use serde_json::json;

use crate::disk::Disks;
use crate::faults::Faults;
use crate::guest::Refused;
use state::{Engine, Network, Nic, Source, Stages, Transfer, Vm, disk_image, uuid};

/// The largest read or write the data plane serves at once.
pub(crate) const MAX_IO: usize = 64 << 20;

/// How long each asynchronous operation takes.
#[derive(Debug, Clone)]
pub struct Latencies {
    /// VM `wait_for_launch` → `up`, `powering_down` → `down`.
    pub vm_power: Duration,
    /// Snapshot `locked` → `ok` (and its job `started` → `finished`).
    pub snapshot: Duration,
    /// Backup `initializing` → `ready`, `finalizing` → `succeeded`.
    pub backup: Duration,
    /// Image transfer `initializing` → `transferring`, finalizing.
    pub transfer: Duration,
    /// New disks and VMs cloned from snapshots: `locked` / `image_locked`.
    pub clone_disks: Duration,
}

impl Default for Latencies {
    fn default() -> Self {
        let ms = Duration::from_millis;
        Self {
            vm_power: ms(300),
            snapshot: ms(300),
            backup: ms(300),
            transfer: ms(200),
            clone_disks: ms(200),
        }
    }
}

/// Options of a simulated engine.
#[derive(Debug, Clone)]
pub struct OVirtOptions {
    /// The SSO user, `name@profile`.
    pub user: String,
    pub password: String,
    /// Where disk images live; a fresh temporary directory when `None`.
    pub state_dir: Option<PathBuf>,
    /// Bytes of disk file per GiB of provisioned size for seeded disks.
    pub gib: u64,
    pub latency: Latencies,
    /// Seed VMs `web-1` (one disk) and `db-1` (two disks), running on
    /// `ovirtmgmt`; otherwise the engine starts without VMs.
    pub seed: bool,
    /// The loopback port to serve on; 0 picks a free one.
    pub port: u16,
}

impl Default for OVirtOptions {
    fn default() -> Self {
        Self {
            user: "admin@internal".into(),
            password: hex::encode(rand::random::<[u8; 12]>()),
            state_dir: None,
            gib: 1 << 30,
            latency: Latencies::default(),
            seed: true,
            port: 0,
        }
    }
}

pub(crate) struct Shared {
    pub base: String,
    /// The engine's CA, PEM.
    pub ca_pem: String,
    pub options: OVirtOptions,
    pub disks: Disks,
    state: Mutex<Engine>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Engine> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes an image has allocated (its `actual_size`).
    pub fn allocated(&self, image: &str) -> u64 {
        self.disks
            .path(image)
            .ok()
            .and_then(|p| crate::disk::data_ranges(&p).ok())
            .map_or(0, |r| r.iter().map(|(_, l)| l).sum())
    }

    pub fn data_delay(&self, bytes: u64) -> Duration {
        self.lock().faults.data_delay(bytes)
    }

    /// An upload is about to write `len` bytes at `offset` of its disk:
    /// marked in the checkpoints' dirty bitmaps first, so a backup taken
    /// meanwhile lists the block (at worst once too often, never missed).
    pub fn wrote(&self, t: &Transfer, offset: u64, len: u64) {
        if t.upload && t.source == Source::Disk {
            self.lock().mark_written(&t.disk, offset, len);
        }
    }

    pub fn count_transferred(&self, transfer: &str, bytes: u64) {
        if let Some(t) = self.lock().transfers.get_mut(transfer) {
            t.transferred += bytes;
        }
    }
}

/// The engine's error document.
pub(crate) fn fault(status: StatusCode, reason: &str, detail: &str) -> Response {
    let doc = Element::new("fault")
        .with_text("reason", reason)
        .with_text("detail", detail);
    (
        status,
        [(header::CONTENT_TYPE, "application/xml;charset=UTF-8")],
        doc.to_xml(),
    )
        .into_response()
}

/// A running simulated engine; stops when dropped.
pub struct OVirtSite {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _tempdir: Option<tempfile::TempDir>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl OVirtSite {
    /// Serve on loopback, on `options.port` (by default a free port).
    pub async fn start(options: OVirtOptions) -> std::io::Result<Self> {
        let (state_dir, tempdir) = match &options.state_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("rebound-lab-ovirt-")
                    .tempdir()?;
                (dir.path().to_owned(), Some(dir))
            }
        };
        let disks = Disks::open(state_dir.join("disks"))?;
        let listener = crate::listen(options.port).await?;
        let addr = listener.local_addr()?;
        let tls = crate::tls::site_tls().map_err(std::io::Error::other)?;
        let mut engine = Engine {
            cluster: uuid(),
            storage_domain: uuid(),
            ..Engine::default()
        };
        for name in ["ovirtmgmt", "isolated"] {
            engine.networks.push(Network {
                id: uuid(),
                name: name.into(),
                profile: uuid(),
            });
        }
        let shared = Arc::new(Shared {
            base: format!("https://{addr}"),
            ca_pem: tls.ca_pem,
            options,
            disks,
            state: Mutex::new(engine),
        });
        if shared.options.seed {
            let gib = shared.options.gib;
            seed(&shared, "web-1", 2, &[gib])?;
            seed(&shared, "db-1", 4, &[gib, 2 * gib])?;
        }
        let app = router(&shared);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(crate::tls::serve_tls(listener, app, tls.server, rx));
        Ok(Self {
            addr,
            shared,
            _tempdir: tempdir,
            _shutdown: tx,
        })
    }

    /// Where tests write into the site's disks as the workloads' guests
    /// would: `POST` a [`crate::guest::GuestWrite`].
    pub fn guest_writes_url(&self) -> String {
        format!("{}/_lab/guest-writes", self.endpoint())
    }

    /// The engine's base URL, `https://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        self.shared.base.clone()
    }

    /// The engine's CA (PEM): what a client must trust to connect.
    pub fn ca_pem(&self) -> &str {
        &self.shared.ca_pem
    }

    /// The API URL clients connect to (`…/ovirt-engine/api`).
    pub fn api_url(&self) -> String {
        format!("{}{}", self.shared.base, state::API)
    }

    pub fn options(&self) -> &OVirtOptions {
        &self.shared.options
    }

    /// Replace the injected faults (what `POST /_lab/faults` does).
    pub fn set_faults(&self, faults: Faults) {
        self.shared.lock().faults = faults;
    }

    /// Take the whole engine down (every call answers 503) or bring it back.
    pub fn set_down(&self, down: bool) {
        self.shared.lock().faults.down = down;
    }

    /// Mutating API calls served, keyed by their `correlation_id` when
    /// they sent one, else `"METHOD /path"`: a key seen twice is a side
    /// effect repeated. The data plane's writes are not counted.
    pub fn effects(&self) -> HashMap<String, usize> {
        self.shared.lock().effects.clone()
    }

    /// The id of the VM named `name`.
    pub fn vm_id(&self, name: &str) -> Option<String> {
        let e = self.shared.lock();
        e.vms
            .values()
            .find(|v| v.name == name)
            .map(|v| v.id.clone())
    }

    /// A VM's name, status and tags.
    pub fn vm(&self, id: &str) -> Option<(String, String, Vec<String>)> {
        let e = self.shared.lock();
        e.vms.get(id).map(|v| {
            (
                v.name.clone(),
                v.status.current().to_owned(),
                v.tags.clone(),
            )
        })
    }

    /// Every VM's id.
    pub fn vm_ids(&self) -> Vec<String> {
        self.shared.lock().vms.keys().cloned().collect()
    }

    /// The ids of every disk the engine has.
    pub fn disk_ids(&self) -> Vec<String> {
        self.shared.lock().disks.keys().cloned().collect()
    }

    /// The image files of a VM's disks, in attachment order.
    pub fn vm_disks(&self, id: &str) -> Vec<PathBuf> {
        let e = self.shared.lock();
        e.vms
            .get(id)
            .map(|v| {
                v.disks
                    .iter()
                    .filter_map(|(d, _)| self.shared.disks.path(&disk_image(d)).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The image transfers nobody ended yet (neither finalized nor
    /// cancelled): `(transfer id, disk id)`.
    pub fn open_transfers(&self) -> Vec<(String, String)> {
        self.shared
            .lock()
            .transfers
            .values()
            .filter(|t| {
                let phase = t.phase.current();
                !["finalizing", "finished", "cancelled"]
                    .iter()
                    .any(|p| phase.starts_with(p))
            })
            .map(|t| (t.id.clone(), t.disk.clone()))
            .collect()
    }

    /// How many checkpoints VM `id` has.
    pub fn checkpoints(&self, id: &str) -> usize {
        self.shared
            .lock()
            .checkpoints
            .values()
            .filter(|c| c.vm == id)
            .count()
    }

    /// The image file of disk `id`, while the engine has the disk.
    pub fn disk_path(&self, id: &str) -> Option<PathBuf> {
        let known = self.shared.lock().disks.contains_key(id);
        known
            .then(|| self.shared.disks.path(&disk_image(id)).ok())
            .flatten()
    }

    /// Write into a VM's disk as its guest would; refused unless the VM
    /// is up (a fenced VM cannot write).
    pub fn guest_write(
        &self,
        vm: &str,
        disk: usize,
        offset: u64,
        data: &[u8],
    ) -> std::io::Result<()> {
        let id = {
            let e = self.shared.lock();
            let v = e
                .vms
                .get(vm)
                .ok_or_else(|| std::io::Error::other(format!("no VM {vm}")))?;
            v.disks
                .get(disk)
                .map(|(d, _)| d.clone())
                .ok_or_else(|| std::io::Error::other(format!("VM {vm} has no disk {disk}")))?
        };
        self.shared
            .write_disk(&id, offset, data)
            .map_err(|e| match e {
                Refused::Io(e) => e,
                refused => std::io::Error::other(refused.to_string()),
            })
    }

    /// The disk store (`disk-<id>`, `image-<id>` for snapshot copies,
    /// `backup-<b>-<disk>`, `checkpoint-<c>-<disk>`).
    pub fn disks(&self) -> &Disks {
        &self.shared.disks
    }
}

/// A running VM with disks of `sizes` bytes (the first bootable, a marker
/// written at its start) and one NIC on `ovirtmgmt`.
fn seed(shared: &Shared, name: &str, memory_gib: u64, sizes: &[u64]) -> std::io::Result<()> {
    let mut e = shared.lock();
    let id = uuid();
    let mut disks = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let disk = uuid();
        shared.disks.create(&disk_image(&disk), *size)?;
        shared
            .disks
            .write(&disk_image(&disk), 0, format!("{name} disk {i}").as_bytes())?;
        e.disks.insert(
            disk.clone(),
            state::Disk {
                id: disk.clone(),
                alias: format!("{name}_Disk{}", i + 1),
                size: *size,
                status: Stages::now("ok"),
                description: String::new(),
                format: "cow".into(),
                incremental: true,
            },
        );
        disks.push((disk, i == 0));
    }
    let profile = e.networks[0].profile.clone();
    let vm = Vm {
        id: id.clone(),
        name: name.into(),
        description: String::new(),
        memory: memory_gib << 30,
        sockets: 2,
        bios: "q35_sea_bios".into(),
        status: Stages::now("up"),
        disks,
        nics: vec![Nic {
            id: uuid(),
            name: "nic1".into(),
            profile,
            mac: format!("56:6f:c4:00:00:{:02x}", e.vms.len() + 1),
        }],
        tags: vec![format!("tier={}", name.split('-').next().unwrap_or(name))],
        created: state::now_iso(),
    };
    e.vms.insert(id, vm);
    Ok(())
}

fn router(shared: &Arc<Shared>) -> Router {
    let app = Router::new()
        .route("/ovirt-engine/sso/oauth/token", post(token))
        .route("/ovirt-engine/services/sso-logout", post(logout))
        .route("/ovirt-engine/services/pki-resource", get(pki_resource))
        .route("/ovirt-engine/api", any(api::api))
        .route("/ovirt-engine/api/{*rest}", any(api::api))
        .route(
            "/images/{ticket}",
            get(imageio::read)
                .put(imageio::write)
                .patch(imageio::patch)
                .options(imageio::options)
                // The data mover writes blocks of several MiB.
                .layer(axum::extract::DefaultBodyLimit::max(MAX_IO)),
        )
        .route("/images/{ticket}/extents", get(imageio::extents))
        .with_state(shared.clone())
        .layer(middleware::from_fn_with_state(shared.clone(), front_door));
    let lab = crate::faults::routes::<Shared>().with_state(shared.clone());
    app.merge(lab)
}

#[derive(serde::Deserialize)]
struct PkiQuery {
    resource: String,
    format: String,
}

/// The engine's CA certificate, as clients bootstrap their trust from a
/// real engine (over a connection they cannot verify yet).
async fn pki_resource(
    State(shared): State<Arc<Shared>>,
    axum::extract::Query(q): axum::extract::Query<PkiQuery>,
) -> Response {
    if q.resource != "ca-certificate" || q.format != "X509-PEM-CA" {
        return (
            StatusCode::NOT_FOUND,
            "the simulator serves resource=ca-certificate&format=X509-PEM-CA only",
        )
            .into_response();
    }
    (
        [(header::CONTENT_TYPE, "application/x-x509-ca-cert")],
        shared.ca_pem.clone(),
    )
        .into_response()
}

/// In front of every call: latency, a hung or down engine, injected
/// errors (as faults), and the effects counter.
async fn front_door(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let method = request.method().to_string();
    let faults = shared.lock().faults.clone();
    if let Some(injected) = faults
        .meet(&method, &path, || shared.lock().faults.hang)
        .await
    {
        return injected.respond(|status, down| match down {
            true => fault(status, "Service Unavailable", "The engine is down."),
            false => fault(status, "Operation Failed", "Injected by the lab."),
        });
    }
    let mutating = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if mutating && path.starts_with(state::API) {
        let key = request
            .uri()
            .query()
            .and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("correlation_id="))
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| format!("{} {path}", request.method()));
        *shared.lock().effects.entry(key).or_default() += 1;
    }
    next.run(request).await
}

#[derive(serde::Deserialize)]
struct TokenForm {
    grant_type: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

/// The password grant. Refusals are HTTP 400 with `error_code` and
/// `error`, as the engine's SSO answers them.
async fn token(State(shared): State<Arc<Shared>>, Form(form): Form<TokenForm>) -> Response {
    let refuse = |code: &str, message: String| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error_code": code, "error": message})),
        )
            .into_response()
    };
    if form.grant_type != "password" {
        return refuse(
            "unsupported_grant_type",
            format!("The grant type '{}' is not supported.", form.grant_type),
        );
    }
    if !form.scope.split_whitespace().any(|s| s == "ovirt-app-api") {
        return refuse(
            "invalid_scope",
            "The scope must include ovirt-app-api.".into(),
        );
    }
    let options = &shared.options;
    if form.username != options.user || form.password != options.password {
        return refuse(
            "access_denied",
            format!(
                "Cannot authenticate user '{}': The username or password is incorrect..",
                form.username
            ),
        );
    }
    let token = hex::encode(rand::random::<[u8; 24]>());
    let expires = Instant::now() + Duration::from_secs(3600);
    shared.lock().tokens.insert(token.clone(), expires);
    let exp = chrono::Utc::now().timestamp_millis() + 3_600_000;
    Json(json!({
        "access_token": token, "token_type": "bearer", "exp": exp.to_string(),
        "scope": "ovirt-app-api ovirt-ext=token-info:authz-search",
    }))
    .into_response()
}

#[derive(serde::Deserialize)]
struct LogoutForm {
    #[serde(default)]
    token: String,
}

async fn logout(State(shared): State<Arc<Shared>>, Form(form): Form<LogoutForm>) -> Response {
    shared.lock().tokens.remove(&form.token);
    Json(json!({})).into_response()
}

impl Shared {
    /// The guest of the VM using disk `id` writes `data` at `offset`;
    /// refused unless that VM is up (a fenced VM cannot write).
    fn write_disk(&self, id: &str, offset: u64, data: &[u8]) -> Result<(), Refused> {
        let mut e = self.lock();
        if !e.disks.contains_key(id) {
            return Err(Refused::NoDisk(format!("the engine has no disk {id}")));
        }
        let Some(v) = e
            .vms
            .values()
            .find(|v| v.disks.iter().any(|(d, _)| d == id))
        else {
            return Err(Refused::NotRunning(format!(
                "disk {id} is attached to no VM; only a VM's guest writes"
            )));
        };
        if v.status.current() != "up" {
            return Err(Refused::NotRunning(format!(
                "VM {} is {}, not up",
                v.name,
                v.status.current()
            )));
        }
        let image = disk_image(id);
        crate::guest::fits(id, offset, data.len(), self.disks.size(&image)?)?;
        // Marked before it is written, as qemu's bitmaps do.
        e.mark_written(id, offset, data.len() as u64);
        self.disks.write(&image, offset, data)?;
        Ok(())
    }
}

impl crate::faults::Scripted for Shared {
    async fn guest_write(
        &self,
        write: &crate::guest::GuestWrite,
        data: &[u8],
    ) -> Result<(), Refused> {
        self.write_disk(&write.disk, write.offset, data)
    }

    fn with_faults<R>(&self, f: impl FnOnce(&mut Faults) -> R) -> R {
        f(&mut self.lock().faults)
    }

    fn effects_json(&self) -> serde_json::Value {
        json!(self.lock().effects)
    }
}

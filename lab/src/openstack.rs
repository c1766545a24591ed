//! A simulated OpenStack cloud: the wire-protocol subset of Keystone, Nova,
//! Cinder, Glance, Neutron, Designate and Octavia that Rebound's plugins and
//! openstacksdk use (`lab/README.md` lists it), on one loopback port.
//!
//! - Keystone v3 at `/identity` (global): password auth, token validation.
//! - Per region R: `/R/compute/v2.1`, `/R/volume/v3/{project_id}`,
//!   `/R/image`, `/R/network`, `/R/dns`, `/R/load-balancer`, each with the
//!   version discovery documents the real services return at their roots.
//! - Every service call needs a valid `X-Auth-Token` (401 otherwise); Nova
//!   and Cinder negotiate microversions (`OpenStack-API-Version`).
//! - Volumes, snapshots, backups and images are sparse files in the site's
//!   state directory ([`crate::disk`]); snapshots, backups and images are
//!   real copies of their blocks, made while the resource is `creating`.
//! - A server booted from the image `rebound-mover` is a mover appliance:
//!   it serves its attached volume to the host's data mover ([`mover`]).
//! - `/_lab/faults` injects failures, `/_lab/effects` counts mutating calls.

// Handlers bail out with the service's error response (`Err(Response)`);
// boxing every one would only add noise to a simulator.
#![allow(clippy::result_large_err)]

mod cinder;
mod designate;
mod faults;
mod glance;
mod keystone;
mod mover;
mod neutron;
mod nova;
mod octavia;
mod seed;
mod state;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::middleware;

pub use faults::Faults;
pub use mover::IMAGE_NAME as MOVER_IMAGE;
use state::{Api, Cloud, Shared};

/// How long each asynchronous operation takes before its resource settles.
#[derive(Debug, Clone)]
pub struct Latencies {
    /// Server `BUILD` → `ACTIVE`.
    pub server_build: Duration,
    /// Volume `creating` / `restoring-backup` / `downloading` → `available`.
    pub volume: Duration,
    /// Snapshot `creating` → `available`.
    pub snapshot: Duration,
    /// Backup `creating` / `restoring` → `available`.
    pub backup: Duration,
    /// Image `saving` / `importing` → `active`, volume `uploading`.
    pub image: Duration,
    /// Designate recordset `PENDING` → `ACTIVE`.
    pub dns: Duration,
    /// Octavia `PENDING_UPDATE` → `ACTIVE`.
    pub load_balancer: Duration,
}

impl Default for Latencies {
    fn default() -> Self {
        let ms = Duration::from_millis;
        Self {
            server_build: ms(200),
            volume: ms(100),
            snapshot: ms(300),
            backup: ms(300),
            image: ms(200),
            dns: ms(200),
            load_balancer: ms(200),
        }
    }
}

/// Options of a simulated OpenStack cloud.
#[derive(Debug, Clone)]
pub struct OpenStackOptions {
    /// Region names; the first is where the seeded workload runs.
    pub regions: Vec<String>,
    pub user: String,
    pub password: String,
    /// A value for the site's `mover_key` secret, handed out with the
    /// credentials: the plugin derives its mover appliances' tokens under
    /// it, and the cloud itself never sees it. Random by default.
    pub mover_key: String,
    pub project: String,
    /// The domain of the user and project (its name; the id is `default`).
    pub domain: String,
    /// Where disk images live; a fresh temporary directory when `None`.
    pub state_dir: Option<PathBuf>,
    /// Bytes of disk file per GiB of volume size. Real size by default;
    /// tests use less so that copies stay quick.
    pub gib: u64,
    pub latency: Latencies,
    /// Seed a small workload (servers, volumes, ports, a floating IP, a DNS
    /// zone, a load balancer); otherwise the cloud starts empty.
    pub seed: bool,
    /// Serve HTTPS with the site's own CA (see [`OpenStackSite::ca_pem`]),
    /// as real clouds do; the catalog then lists `https` endpoints.
    pub tls: bool,
    /// The loopback port to serve on; 0 picks a free one.
    pub port: u16,
}

impl Default for OpenStackOptions {
    fn default() -> Self {
        Self {
            regions: vec!["RegionOne".into(), "RegionTwo".into()],
            user: "admin".into(),
            password: state::random_hex(12),
            mover_key: state::random_hex(32),
            project: "admin".into(),
            domain: "Default".into(),
            state_dir: None,
            gib: 1 << 30,
            latency: Latencies::default(),
            seed: true,
            tls: false,
            port: 0,
        }
    }
}

/// A running simulated cloud; stops when dropped.
pub struct OpenStackSite {
    pub addr: SocketAddr,
    /// The site's CA when it serves HTTPS.
    pub ca_pem: Option<String>,
    shared: Arc<Shared>,
    _tempdir: Option<tempfile::TempDir>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl OpenStackSite {
    /// Serve on loopback, on `options.port` (by default a free port).
    pub async fn start(options: OpenStackOptions) -> std::io::Result<Self> {
        if options.regions.is_empty() {
            return Err(std::io::Error::other(
                "an OpenStack site needs at least one region",
            ));
        }
        let (state_dir, tempdir) = match &options.state_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("rebound-lab-openstack-")
                    .tempdir()?;
                (dir.path().to_owned(), Some(dir))
            }
        };
        let disks = crate::disk::Disks::open(state_dir.join("disks"))?;
        let tls = if options.tls {
            Some(crate::tls::site_tls().map_err(std::io::Error::other)?)
        } else {
            None
        };
        let listener = crate::listen(options.port).await?;
        let addr = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let shared = Arc::new(Shared {
            base: format!("{scheme}://{addr}"),
            project_id: state::random_hex(16),
            user_id: state::random_hex(16),
            state: Mutex::new(Cloud::new(&options.regions)),
            disks,
            options,
        });
        if shared.options.seed {
            seed::workload(&shared)?;
        }
        let app = router(&shared);
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
            ca_pem,
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

    /// The base URL, e.g. `http://127.0.0.1:PORT` (`https` with `tls`).
    pub fn endpoint(&self) -> String {
        self.shared.base.clone()
    }

    /// The Keystone URL clients take as `auth_url`.
    pub fn auth_url(&self) -> String {
        format!("{}/identity/v3", self.shared.base)
    }

    pub fn options(&self) -> &OpenStackOptions {
        &self.shared.options
    }

    /// The id of the project the user's tokens are scoped to.
    pub fn project_id(&self) -> &str {
        &self.shared.project_id
    }

    /// Mutating requests served (every `POST`, `PUT`, `PATCH` and `DELETE`
    /// but token requests), keyed by the client's `X-OpenStack-Request-ID`
    /// when it sent one, else by `"METHOD /path"`: a key seen twice is a
    /// side effect repeated.
    pub fn effects(&self) -> HashMap<String, usize> {
        self.shared.lock().effects.clone()
    }

    /// Replace the injected faults (what `POST /_lab/faults` does).
    pub fn set_faults(&self, faults: Faults) {
        self.shared.lock().faults = faults;
    }

    /// Take the whole site down (every call answers 503) or bring it back.
    pub fn set_down(&self, down: bool) {
        self.shared.lock().faults.down = down;
    }

    /// A resource as the API renders it, e.g. `("RegionOne", "volumes", id)`;
    /// kinds: servers, volumes, snapshots, backups, images, ports,
    /// floatingips, zones, recordsets, members.
    pub fn resource(&self, region: &str, kind: &str, id: &str) -> Option<serde_json::Value> {
        let cloud = self.shared.lock();
        cloud.regions.get(region)?.table(kind)?.get(id).cloned()
    }

    /// Every resource of a kind in a region.
    pub fn resources(&self, region: &str, kind: &str) -> Vec<serde_json::Value> {
        let cloud = self.shared.lock();
        cloud
            .regions
            .get(region)
            .and_then(|r| r.table(kind))
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Add a running server to `region` booting from new volumes of
    /// `gibs` GiB each (the first bootable), on its `private` network, as an
    /// operator would have created it: `(server id, volume ids)`.
    pub fn add_server(
        &self,
        region: &str,
        name: &str,
        flavor: &str,
        gibs: &[u64],
    ) -> std::io::Result<(String, Vec<String>)> {
        seed::server(&self.shared, region, name, flavor, gibs)
    }

    /// The disk store holding volumes, snapshots, backups and images, as
    /// files named `volume-<id>`, `snapshot-<id>`, `backup-<id>`, `image-<id>`.
    pub fn disks(&self) -> &crate::disk::Disks {
        &self.shared.disks
    }
}

fn router(shared: &Arc<Shared>) -> Router {
    let mut app = keystone::routes(shared.clone());
    for region in &shared.options.regions {
        let api = Api {
            shared: shared.clone(),
            region: region.as_str().into(),
        };
        app = app
            .merge(nova::routes(&api))
            .merge(cinder::routes(&api))
            .merge(glance::routes(&api))
            .merge(neutron::routes(&api))
            .merge(designate::routes(&api))
            .merge(octavia::routes(&api));
    }
    let app = app.layer(middleware::from_fn_with_state(
        shared.clone(),
        faults::front_door,
    ));
    let lab = crate::faults::routes::<Shared>().with_state(shared.clone());
    app.merge(lab)
}

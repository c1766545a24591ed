//! The lab's AWS site: **moto** (the third-party AWS emulator, run as
//! `moto_server` from the Python environment) behind a thin Rust front on
//! loopback. Clients (the AWS plugin, boto3) talk to the front only:
//!
//! - EC2, ELBv2, Route 53 (and IAM, for seeding) are forwarded to moto
//!   unchanged ([`front`]); moto picks service and region from the SigV4
//!   credential scope, and so does the front.
//! - The front checks every request's SigV4 signature against the site's
//!   access key (moto checks none unless told to; see
//!   [`AwsOptions::moto_auth`]).
//! - moto finishes every operation at once; the front makes snapshots,
//!   snapshot copies and Route 53 changes take a while, rewriting moto's
//!   `completed`/`INSYNC` replies to `pending`/`PENDING` with progress.
//! - Faults (5xx, throttling, hang, site down) are answered in AWS's own
//!   XML error shapes ([`faults`]).
//! - The EBS direct APIs are the lab's own ([`ebs`]), because moto's are a
//!   separate, broken store: volume, snapshot and copy data are sparse
//!   files the lab keeps in step with the EC2 calls it sees pass.
//!
//! `lab/README.md` lists exactly what is moto and what is the lab.

// Handlers bail out with the service's error response (`Err(Response)`);
// boxing every one would only add noise to a simulator.
#![allow(clippy::result_large_err)]

mod appliance;
mod detach;
mod ebs;
mod faults;
mod front;
mod moto;
mod seed;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;

pub use crate::faults::Faults;

/// EBS direct's block size, as the real service reports it.
pub const BLOCK_SIZE: u64 = 512 * 1024;

/// Options of the lab's AWS site.
#[derive(Debug, Clone)]
pub struct AwsOptions {
    /// Regions; the seeded instances run in the first one.
    pub regions: Vec<String>,
    /// The access key the site accepts (replaced by the key moto's IAM
    /// creates when [`Self::moto_auth`] is set).
    pub access_key_id: String,
    pub secret_access_key: String,
    /// The Python interpreter whose environment has moto
    /// (`REBOUND_PYTHON` when unset); `moto_server` is looked up beside it.
    pub python: Option<PathBuf>,
    /// Where volume and snapshot data live; a fresh temporary directory
    /// when `None`.
    pub state_dir: Option<PathBuf>,
    /// Bytes of disk file per GiB of volume size. Real size by default;
    /// tests use less so that copies stay quick.
    pub gib: u64,
    /// How long a snapshot (or an EBS direct one after completion) stays
    /// `pending`.
    pub snapshot_latency: Duration,
    /// How long a cross-region snapshot copy stays `pending`.
    pub copy_latency: Duration,
    /// How long a Route 53 change stays `PENDING`.
    pub dns_latency: Duration,
    /// How long the volumes of a terminated instance stay attached, as EC2
    /// detaches them while the instance shuts down: `DeleteVolume` on one
    /// is refused `VolumeInUse` until then.
    pub detach_latency: Duration,
    /// Seed instances with volumes in the first two regions and a hosted
    /// zone.
    pub seed: bool,
    /// Also make moto check signatures (`INITIAL_NO_AUTH_ACTION_COUNT`): an
    /// IAM user and key are created first, and moto refuses other secrets.
    /// moto's Route 53 refuses even valid signatures then, so sites with
    /// this set serve EC2 and EBS direct only.
    pub moto_auth: bool,
    /// The loopback port of the front; 0 picks a free one.
    pub port: u16,
}

impl Default for AwsOptions {
    fn default() -> Self {
        Self {
            regions: vec!["us-east-1".into(), "us-west-2".into()],
            access_key_id: format!("AKIALAB{}", random_upper(13)),
            secret_access_key: random_upper(40),
            python: None,
            state_dir: None,
            gib: 1 << 30,
            snapshot_latency: Duration::from_millis(300),
            copy_latency: Duration::from_millis(500),
            dns_latency: Duration::from_millis(300),
            detach_latency: Duration::from_millis(500),
            seed: true,
            moto_auth: false,
            port: 0,
        }
    }
}

/// Why the AWS site did not start.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error(
        "moto is not installed: no '{0}'. Install it into the Python environment the lab uses \
         (REBOUND_PYTHON): `$REBOUND_PYTHON -m pip install -r lab/fidelity/aws-requirements.txt`"
    )]
    MotoMissing(String),
    #[error(
        "no Python for moto: set REBOUND_PYTHON to an interpreter whose environment has \
         lab/fidelity/aws-requirements.txt installed"
    )]
    NoPython,
    #[error("moto_server did not start: {0}")]
    MotoFailed(String),
    #[error("seeding moto failed: {0}")]
    Seed(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A snapshot the lab tracks: its data file and when it settles.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub region: String,
    pub size_gib: u64,
    /// When the snapshot reports `completed`; `None` while an EBS direct
    /// snapshot awaits `CompleteSnapshot`.
    pub settles: Option<Instant>,
    pub started: Instant,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub faults: Faults,
    pub snapshots: HashMap<String, Snapshot>,
    /// Route 53 change id → when it becomes `INSYNC`.
    pub changes: HashMap<String, Instant>,
    /// Mutating calls served, by "Service Action" (or "METHOD path").
    pub effects: HashMap<String, usize>,
    /// EBS direct `StartSnapshot` client tokens → the snapshot started.
    pub tokens: HashMap<String, String>,
    /// The mover appliance's AMI in each region.
    pub mover_images: std::collections::HashSet<String>,
    /// The agents of running mover appliances, by instance id.
    pub agents: HashMap<String, crate::mover::Agent>,
    /// Instances terminated: an appliance terminated while it boots never
    /// starts serving.
    pub terminated: std::collections::HashSet<String>,
    /// Volumes of terminated instances still detaching, by id: the
    /// instance, the device it had the volume at, and until when.
    pub detaching: HashMap<String, detach::Detaching>,
}

pub(crate) struct Shared {
    pub moto: String,
    pub options: AwsOptions,
    pub disks: crate::disk::Disks,
    pub http: reqwest::Client,
    pub state: Mutex<State>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn credentials(&self) -> rebound_sigv4::Credentials<'_> {
        rebound_sigv4::Credentials {
            access_key_id: &self.options.access_key_id,
            secret_access_key: &self.options.secret_access_key,
        }
    }
}

/// A running AWS site (moto and the front); both stop when dropped.
pub struct AwsSite {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _moto: moto::Moto,
    _tempdir: Option<tempfile::TempDir>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl AwsError {
    /// Whether the site could not start only because moto (or a Python
    /// for it) is not installed here.
    pub fn is_missing_moto(&self) -> bool {
        matches!(self, Self::NoPython | Self::MotoMissing(_))
    }
}

impl AwsSite {
    /// For tests: start the site, or `None` after saying why when moto is
    /// not installed and `REBOUND_REQUIRE_PYTHON` is not `1` (CI sets it,
    /// so there a missing moto fails). Any other failure panics.
    pub async fn start_or_skip(options: AwsOptions) -> Option<Self> {
        match Self::start(options).await {
            Ok(site) => Some(site),
            Err(e)
                if e.is_missing_moto()
                    && std::env::var("REBOUND_REQUIRE_PYTHON").as_deref() != Ok("1") =>
            {
                eprintln!("skipped: {e}");
                None
            }
            Err(e) => panic!("the lab's AWS site did not start: {e}"),
        }
    }

    /// Start moto and the front on loopback, and seed them.
    pub async fn start(mut options: AwsOptions) -> Result<Self, AwsError> {
        if options.regions.is_empty() {
            return Err(AwsError::Io(std::io::Error::other(
                "an AWS site needs at least one region",
            )));
        }
        let (state_dir, tempdir) = match &options.state_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("rebound-lab-aws-")
                    .tempdir()?;
                (dir.path().to_owned(), Some(dir))
            }
        };
        let disks = crate::disk::Disks::open(state_dir.join("disks"))?;
        let moto = moto::Moto::start(&options).await?;
        let http = reqwest::Client::new();
        if options.moto_auth {
            let (id, secret) = seed::iam_user(&http, &moto.url).await?;
            options.access_key_id = id;
            options.secret_access_key = secret;
        }
        let listener = crate::listen(options.port).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            moto: moto.url.clone(),
            options,
            disks,
            http,
            state: Mutex::new(State::default()),
        });
        let app = router(&shared);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        let site = Self {
            addr,
            shared,
            _moto: moto,
            _tempdir: tempdir,
            _shutdown: tx,
        };
        appliance::register_images(&site.shared).await?;
        if site.shared.options.seed {
            seed::workloads(&site).await?;
        }
        Ok(site)
    }

    /// Where tests write into the site's disks as the workloads' guests
    /// would: `POST` a [`crate::guest::GuestWrite`].
    pub fn guest_writes_url(&self) -> String {
        format!("{}/_lab/guest-writes", self.endpoint())
    }

    /// The front's URL, e.g. `http://127.0.0.1:PORT`: every service's
    /// endpoint (clients pick the service by their signature's scope).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// moto's own URL, behind the front (for tests that compare).
    pub fn moto_endpoint(&self) -> &str {
        &self.shared.moto
    }

    pub fn options(&self) -> &AwsOptions {
        &self.shared.options
    }

    pub fn regions(&self) -> &[String] {
        &self.shared.options.regions
    }

    /// Replace the injected faults (what `POST /_lab/faults` does).
    pub fn set_faults(&self, faults: Faults) {
        self.shared.lock().faults = faults;
    }

    /// Take the whole site down (every call answers 503) or bring it back.
    pub fn set_down(&self, down: bool) {
        self.shared.lock().faults.down = down;
    }

    /// Mutating calls served, keyed `"ec2 CreateSnapshot"`,
    /// `"route53 POST /2013-04-01/hostedzone/Z/rrset"`, `"ebs PutSnapshotBlock"`.
    pub fn effects(&self) -> HashMap<String, usize> {
        self.shared.lock().effects.clone()
    }

    /// The data of volumes and snapshots, as files named by their ids
    /// (`vol-…`, `snap-…`). A volume the lab has not written reads as
    /// zeros and has no file yet ([`Self::volume_data`] creates it).
    pub fn disks(&self) -> &crate::disk::Disks {
        &self.shared.disks
    }

    /// Make sure volume `id` (of `size_gib` GiB) has a data file, as a
    /// guest's writes would; returns its id for [`Self::disks`].
    pub fn volume_data(&self, id: &str, size_gib: u64) -> std::io::Result<String> {
        ensure_volume(&self.shared, id, size_gib)?;
        Ok(id.to_owned())
    }

    /// Sign and send one query-API request (EC2, ELBv2) to moto directly,
    /// as the lab's own client; returns the XML reply.
    pub async fn query(
        &self,
        region: &str,
        service: &str,
        params: &[(&str, &str)],
    ) -> Result<String, AwsError> {
        seed::query(&self.shared, &self.shared.moto, region, service, params)
            .await
            .map_err(AwsError::Seed)
    }

    /// The same through the lab's front, as a client's request: what the
    /// front adds (the mover appliance, snapshot progress, faults) applies
    /// and a mutating call counts in [`Self::effects`].
    pub async fn query_as_client(
        &self,
        region: &str,
        service: &str,
        params: &[(&str, &str)],
    ) -> Result<String, AwsError> {
        seed::query(&self.shared, &self.endpoint(), region, service, params)
            .await
            .map_err(AwsError::Seed)
    }
}

/// The `moto_server` of the Python environment (`python`, else
/// `REBOUND_PYTHON`), or why there is none.
pub fn moto_server(python: Option<&std::path::Path>) -> Result<PathBuf, AwsError> {
    moto::server(python)
}

/// Volume `id`'s data file exists (all holes when new).
pub(crate) fn ensure_volume(shared: &Shared, id: &str, size_gib: u64) -> std::io::Result<()> {
    if !shared.disks.exists(id) {
        shared
            .disks
            .create(id, size_gib.saturating_mul(shared.options.gib))?;
    }
    Ok(())
}

fn router(shared: &Arc<Shared>) -> Router {
    crate::faults::routes::<Shared>()
        .fallback(front::handle)
        .with_state(shared.clone())
}

fn random_upper(n: usize) -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}

/// Extract the text of the first `<tag>…</tag>` in `xml`.
pub(crate) fn xml_text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(&xml[start..end])
}

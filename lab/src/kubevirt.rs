//! A simulated KubeVirt cluster: a Kubernetes-style API over HTTPS with its
//! own CA and a bearer token, enough of it for the platform's own clients
//! (the Python `kubernetes` client, kubectl) and the KubeVirt plugin, with
//! real disk data behind its volumes.
//!
//! - discovery: `/version`, `/api`, `/apis`, `/api/v1`, `/apis/{group}/{version}`;
//!   `/readyz`, `/livez`
//! - namespaced objects of the resources in [`RESOURCES`]: list (with
//!   `fieldSelector` on `metadata.name`/`metadata.namespace` and equality
//!   `labelSelector`), get, create, replace, JSON merge patch, delete (owned
//!   objects go with their owner, as the garbage collector does); every
//!   object carries `uid`, `resourceVersion` and `creationTimestamp`;
//!   missing or clashing names answer `Status` objects with the right
//!   reason and code
//! - watch (`?watch=true`): newline-delimited `ADDED`/`MODIFIED`/`DELETED`
//!   events after the given `resourceVersion` until `timeoutSeconds`
//! - subresources: `PUT /apis/subresources.kubevirt.io/v1/namespaces/{ns}/
//!   virtualmachines/{name}/start|stop` and
//!   `…/virtualmachineinstances/{name}/freeze|unfreeze`
//! - the cluster's controllers, simplified ([`controllers`]): a VM creates
//!   its `dataVolumeTemplates` and runs (a VMI with addresses) once its
//!   volumes are ready, following `running` or `runStrategy`; a DataVolume
//!   provisions a PVC and a real sparse disk (blank, cloned from a PVC or
//!   restored from a volume snapshot); a VirtualMachineSnapshot copies the
//!   VM's disks when created and becomes `readyToUse` after the configured
//!   latency, with its VirtualMachineSnapshotContent; a VirtualMachineExport
//!   becomes `Ready` with a token Secret and links
//! - volume mirroring ([`mirror`]): with a peer ([`KubeVirtSite::pair`]), a
//!   VolumeReplication copies its PVC's changed blocks to the peer every
//!   `schedulingInterval` of its VolumeReplicationClass, into a mirror image
//!   the peer promotes with a VolumeReplication of its own
//! - the data plane ([`data`]): exported volumes are read through the
//!   site's export proxy with `x-kubevirt-export-token`, and PVCs are written
//!   through its upload proxy with an `UploadTokenRequest`'s token, each
//!   volume served by a mover agent (`rebound_datamover::agent`)
//! - the lab surface ([`control`]): faults, `GET|POST|DELETE /_lab/faults`
//!   ([`crate::faults::Faults`]); `GET /_lab/effects`, objects created per
//!   `rebound.io/idempotency-key` annotation; and `POST /_lab/guest-writes`
//!   into a running VM's PVC ([`crate::guest`])
//!
//! Not simulated: the OpenAPI document `kubectl create` fetches unless
//! `--validate=false`, RBAC, quotas, pagination, and of volume mirroring:
//! consistency groups, more than one peer, and Ramen's restore of PVC
//! objects on the peer (the simulator creates them).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::disk::Disks;
use crate::faults::Faults;

mod control;
mod controllers;
mod data;
mod mirror;

/// One resource type the cluster serves.
#[derive(Debug, Clone, Copy)]
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
}

const fn resource(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
) -> Resource {
    Resource {
        group,
        version,
        plural,
        kind,
        namespaced,
    }
}

/// What the simulated cluster serves (indexes named by the constants below).
pub const RESOURCES: [Resource; 15] = [
    resource("", "v1", "namespaces", "Namespace", false),
    resource("", "v1", "services", "Service", true),
    resource("", "v1", "secrets", "Secret", true),
    resource(
        "",
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        true,
    ),
    resource(
        "kubevirt.io",
        "v1",
        "virtualmachines",
        "VirtualMachine",
        true,
    ),
    resource(
        "kubevirt.io",
        "v1",
        "virtualmachineinstances",
        "VirtualMachineInstance",
        true,
    ),
    resource(
        "snapshot.kubevirt.io",
        "v1beta1",
        "virtualmachinesnapshots",
        "VirtualMachineSnapshot",
        true,
    ),
    resource(
        "snapshot.kubevirt.io",
        "v1beta1",
        "virtualmachinesnapshotcontents",
        "VirtualMachineSnapshotContent",
        true,
    ),
    resource(
        "export.kubevirt.io",
        "v1beta1",
        "virtualmachineexports",
        "VirtualMachineExport",
        true,
    ),
    resource(
        "cdi.kubevirt.io",
        "v1beta1",
        "datavolumes",
        "DataVolume",
        true,
    ),
    resource(
        "cdi.kubevirt.io",
        "v1beta1",
        "cdiconfigs",
        "CDIConfig",
        false,
    ),
    resource(
        "upload.cdi.kubevirt.io",
        "v1beta1",
        "uploadtokenrequests",
        "UploadTokenRequest",
        true,
    ),
    resource(
        "replication.storage.openshift.io",
        "v1alpha1",
        "volumereplications",
        "VolumeReplication",
        true,
    ),
    resource("route.openshift.io", "v1", "routes", "Route", true),
    resource(
        "replication.storage.openshift.io",
        "v1alpha1",
        "volumereplicationclasses",
        "VolumeReplicationClass",
        false,
    ),
];

const NAMESPACE: usize = 0;
const SECRET: usize = 2;
const PVC: usize = 3;
const VM: usize = 4;
const VMI: usize = 5;
const SNAPSHOT: usize = 6;
const SNAPSHOT_CONTENT: usize = 7;
const EXPORT: usize = 8;
const DATA_VOLUME: usize = 9;
const CDI_CONFIG: usize = 10;
const UPLOAD_TOKEN_REQUEST: usize = 11;
const VOLUME_REPLICATION: usize = 12;
const VOLUME_REPLICATION_CLASS: usize = 14;

/// The annotation the lab counts created objects by (see
/// [`KubeVirtSite::effects`]).
pub const IDEMPOTENCY_ANNOTATION: &str = "rebound.io/idempotency-key";

impl Resource {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// Options of a simulated cluster.
#[derive(Debug, Clone)]
pub struct KubeVirtOptions {
    pub token: String,
    /// How long snapshots, exports and DataVolumes take.
    pub latency: Duration,
    /// Objects present at start (any of [`RESOURCES`], with `apiVersion`,
    /// `kind` and `metadata.name`/`namespace`); their DataVolumes are
    /// provisioned and their VMs running before the site answers.
    pub objects: Vec<Value>,
    /// Keep the disk images in this folder; none keeps them in a temporary
    /// folder that goes with the site.
    pub disk_dir: Option<PathBuf>,
    /// Write `"<pvc> boot disk"` at the start of every PVC of `objects`.
    pub seed_disks: bool,
    /// How long an `UploadTokenRequest`'s token is honoured.
    pub upload_token_ttl: Duration,
    /// The loopback port of the API server; 0 picks a free one.
    pub port: u16,
    /// The loopback port of the export and upload proxies; 0 picks a free
    /// one.
    pub data_port: u16,
}

impl Default for KubeVirtOptions {
    fn default() -> Self {
        Self {
            token: hex::encode(rand::random::<[u8; 16]>()),
            latency: Duration::from_millis(200),
            objects: default_objects(),
            disk_dir: None,
            seed_disks: true,
            upload_token_ttl: Duration::from_secs(300),
            port: 0,
            data_port: 0,
        }
    }
}

/// A VirtualMachine of namespace `ns` booting from the DataVolume
/// `<name>-root`, on the multus network `network`.
pub fn vm_object(ns: &str, name: &str, labels: Value, network: &str) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "running": true,
            "template": {
                "metadata": {"labels": {"kubevirt.io/domain": name}},
                "spec": {
                    "domain": {"cpu": {"cores": 2}, "memory": {"guest": "2Gi"},
                               "firmware": {"bootloader": {"efi": {"secureBoot": false}}},
                               "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}, "bootOrder": 1}],
                                           "interfaces": [{"name": "default", "bridge": {}}]}},
                    "networks": [{"name": "default", "multus": {"networkName": network}}],
                    "volumes": [{"name": "root", "dataVolume": {"name": format!("{name}-root")}}],
                },
            },
        },
    })
}

/// A blank DataVolume of `size` (a Kubernetes quantity such as `"1Gi"`).
pub fn blank_data_volume(ns: &str, name: &str, size: &str) -> Value {
    json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"source": {"blank": {}},
                 "storage": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}},
    })
}

/// A `prod` namespace with two running VMs, a web and a database, each on
/// a 1 GiB root DataVolume.
pub fn default_objects() -> Vec<Value> {
    let mut objects = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}}),
    ];
    for (name, tier) in [("web-1", "web"), ("db-1", "db")] {
        objects.push(blank_data_volume("prod", &format!("{name}-root"), "1Gi"));
        objects.push(vm_object(
            "prod",
            name,
            json!({"app": "shop", "tier": tier}),
            "prod-net",
        ));
    }
    objects
}

/// An object's key: resource index, namespace ("" when cluster-scoped),
/// name.
type Key = (usize, String, String);

struct Event {
    rv: u64,
    kind: &'static str,
    key: Key,
    object: Value,
}

struct Cluster {
    objects: BTreeMap<Key, (Value, Instant)>,
    events: Vec<Event>,
    rv: u64,
    disks: Disks,
    /// The base URL of the site's export and upload proxies.
    data_url: String,
    /// The cluster's CA (PEM), which export links carry as their `cert`.
    ca_pem: String,
    /// How long an upload token is honoured.
    upload_token_ttl: Duration,
    /// Volumes of Ready exports, by (namespace, export name).
    exports: BTreeMap<(String, String), data::Served>,
    /// Writable agents over PVCs, by (namespace, PVC name).
    uploads: BTreeMap<(String, String), data::Agent>,
    /// Upload tokens: the PVC each opens and until when.
    upload_tokens: HashMap<String, ((String, String), SystemTime)>,
    /// Objects created per idempotency-key annotation.
    effects: BTreeMap<String, u64>,
    faults: Faults,
    /// Addresses handed to VM instances so far.
    addresses: u32,
    /// When each VolumeReplication (by uid) last synced to the peer.
    synced: HashMap<String, Instant>,
}

struct Site {
    options: KubeVirtOptions,
    cluster: Mutex<Cluster>,
    /// What the data proxies forward with.
    http: reqwest::Client,
    /// The cluster of the same storage fabric that VolumeReplications
    /// mirror to (see [`KubeVirtSite::pair`]).
    peer: Mutex<Option<std::sync::Weak<Site>>>,
}

impl Site {
    fn cluster(&self) -> std::sync::MutexGuard<'_, Cluster> {
        self.cluster.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn peer(&self) -> Option<Arc<Site>> {
        self.peer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(std::sync::Weak::upgrade)
    }
}

/// A running simulated cluster; stops when dropped.
pub struct KubeVirtSite {
    pub addr: SocketAddr,
    pub token: String,
    /// The cluster's CA: clients must trust it.
    pub ca_pem: String,
    site: Arc<Site>,
    _disk_dir: Option<tempfile::TempDir>,
    _shutdown: (
        tokio::sync::oneshot::Sender<()>,
        tokio::sync::oneshot::Sender<()>,
    ),
    _data: tokio::task::AbortHandle,
    _mirror: tokio::task::AbortHandle,
}

impl Drop for KubeVirtSite {
    fn drop(&mut self) {
        self._data.abort();
        self._mirror.abort();
        let mut cluster = self.site.cluster();
        cluster.exports.clear();
        cluster.uploads.clear();
    }
}

impl KubeVirtSite {
    /// Serve the API, and the export and upload proxies, over HTTPS with
    /// the cluster's CA, on loopback: on `options.port` and
    /// `options.data_port` (by default free ports).
    pub async fn start(options: KubeVirtOptions) -> std::io::Result<Self> {
        let tls = crate::tls::site_tls().map_err(std::io::Error::other)?;
        let (disks, temp) = match &options.disk_dir {
            Some(dir) => (Disks::open(dir)?, None),
            None => {
                let temp = tempfile::tempdir()?;
                (Disks::open(temp.path())?, Some(temp))
            }
        };
        let listener = crate::listen(options.port).await?;
        let addr = listener.local_addr()?;
        let data_listener = crate::listen(options.data_port).await?;
        let data_url = format!("https://{}", data_listener.local_addr()?);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(std::io::Error::other)?;
        let site = Arc::new(Site {
            cluster: Mutex::new(Cluster {
                objects: BTreeMap::new(),
                events: Vec::new(),
                rv: 0,
                disks,
                data_url: data_url.clone(),
                ca_pem: tls.ca_pem.clone(),
                upload_token_ttl: options.upload_token_ttl,
                exports: BTreeMap::new(),
                uploads: BTreeMap::new(),
                upload_tokens: HashMap::new(),
                effects: BTreeMap::new(),
                faults: Faults::default(),
                addresses: 0,
                synced: HashMap::new(),
            }),
            options,
            http,
            peer: Mutex::new(None),
        });
        {
            let mut cluster = site.cluster();
            let config = json!({
                "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "CDIConfig",
                "metadata": {"name": "config"},
                "spec": {}, "status": {"uploadProxyURL": data_url},
            });
            let _ = cluster.create(CDI_CONFIG, "", config);
            for object in site.options.objects.clone() {
                let Some(r) = resource_of(&object) else {
                    continue;
                };
                let ns = object["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let _ = cluster.create(r, &ns, object);
            }
            // What existed before the lab started is settled already.
            cluster.advance(Duration::ZERO);
            if site.options.seed_disks {
                let pvcs: Vec<(String, String)> = cluster
                    .objects
                    .keys()
                    .filter(|(r, _, _)| *r == PVC)
                    .map(|(_, ns, name)| (ns.clone(), name.clone()))
                    .collect();
                for (ns, name) in pvcs {
                    let id = controllers::pvc_disk(&ns, &name);
                    let _ = cluster
                        .disks
                        .write(&id, 0, format!("{name} boot disk").as_bytes());
                }
            }
        }
        let app = Router::new()
            .merge(crate::faults::routes::<Site>())
            .fallback(dispatch)
            .with_state(site.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(crate::tls::serve_tls(listener, app, tls.server.clone(), rx));
        let (data_tx, data_rx) = tokio::sync::oneshot::channel::<()>();
        let data = tokio::spawn(data::serve(
            data_listener,
            site.clone(),
            tls.server,
            data_rx,
        ));
        let mirror = tokio::spawn(mirror::run(Arc::downgrade(&site)));
        Ok(Self {
            addr,
            token: site.options.token.clone(),
            ca_pem: tls.ca_pem,
            site,
            _disk_dir: temp,
            _shutdown: (tx, data_tx),
            _data: data.abort_handle(),
            _mirror: mirror.abort_handle(),
        })
    }

    /// Make this cluster and `other` mirroring peers, two clusters of one
    /// storage fabric (Ceph RBD mirroring between two pools): a
    /// VolumeReplication on either copies its PVC to the other.
    pub fn pair(&self, other: &KubeVirtSite) {
        for (site, peer) in [(&self.site, &other.site), (&other.site, &self.site)] {
            *site.peer.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::downgrade(peer));
        }
    }

    /// Where tests write into the site's disks as the workloads' guests
    /// would: `POST` a [`crate::guest::GuestWrite`].
    pub fn guest_writes_url(&self) -> String {
        format!("{}/_lab/guest-writes", self.endpoint())
    }

    /// The API server URL.
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The base URL of the export and upload proxies (HTTPS, the cluster's
    /// CA).
    pub fn data_url(&self) -> String {
        self.site.cluster().data_url.clone()
    }

    /// An object as the API would return it.
    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let r = RESOURCES.iter().position(|r| r.plural == plural)?;
        let mut cluster = self.site.cluster();
        cluster.advance(self.site.options.latency);
        cluster
            .objects
            .get(&(r, namespace.to_owned(), name.to_owned()))
            .map(|(o, _)| o.clone())
    }

    /// The objects of a resource in a namespace ("" for every namespace).
    pub fn list(&self, plural: &str, namespace: &str) -> Vec<Value> {
        let Some(r) = RESOURCES.iter().position(|r| r.plural == plural) else {
            return Vec::new();
        };
        let mut cluster = self.site.cluster();
        cluster.advance(self.site.options.latency);
        cluster
            .objects
            .iter()
            .filter(|((kind, ns, _), _)| *kind == r && (namespace.is_empty() || ns == namespace))
            .map(|(_, (o, _))| o.clone())
            .collect()
    }

    /// Create an object as a cluster admin would (`kubectl create`).
    pub fn create(&self, object: Value) -> Result<Value, String> {
        let r = resource_of(&object).ok_or("not a kind the lab serves")?;
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut cluster = self.site.cluster();
        cluster
            .create(r, &ns, object)
            .map_err(|refused| format!("refused with {}", refused.status()))
    }

    /// The whole disk behind a PVC.
    pub fn read_pvc(&self, namespace: &str, pvc: &str) -> std::io::Result<Vec<u8>> {
        let cluster = self.site.cluster();
        cluster.disks.read(&controllers::pvc_disk(namespace, pvc))
    }

    /// The raw image file behind a PVC (to compare with another site's).
    pub fn pvc_path(&self, namespace: &str, pvc: &str) -> std::io::Result<std::path::PathBuf> {
        let cluster = self.site.cluster();
        cluster.disks.path(&controllers::pvc_disk(namespace, pvc))
    }

    /// The PVCs of a VM's volumes, in the order of its volumes.
    pub fn vm_pvcs(&self, namespace: &str, vm: &str) -> Vec<String> {
        self.get("virtualmachines", namespace, vm)
            .map(|vm| controllers::volume_claims(&vm["spec"]["template"]["spec"]))
            .unwrap_or_default()
            .into_iter()
            .map(|(_, claim)| claim)
            .collect()
    }

    /// The guest of a running VM writes `data` at `offset` of its
    /// `volume`-th volume; a VM that is not running cannot write.
    pub fn guest_write(
        &self,
        namespace: &str,
        vm: &str,
        volume: usize,
        offset: u64,
        data: &[u8],
    ) -> Result<(), String> {
        let claims = self.vm_pvcs(namespace, vm);
        let claim = claims
            .get(volume)
            .ok_or_else(|| format!("VM {namespace}/{vm} has no volume {volume}"))?;
        control::write_claim(&self.site.cluster(), namespace, claim, offset, data)
            .map_err(|e| e.to_string())
    }

    /// Replace the site's faults.
    pub fn set_faults(&self, faults: Faults) {
        self.site.cluster().faults = faults;
    }

    /// Take the whole API down (every call answers 503) or bring it back,
    /// like a cluster lost in a disaster.
    pub fn set_down(&self, down: bool) {
        self.site.cluster().faults.down = down;
    }

    /// Objects created through the API per `rebound.io/idempotency-key`
    /// annotation: more than one under a key is a repeated side effect.
    pub fn effects(&self) -> BTreeMap<String, u64> {
        self.site.cluster().effects.clone()
    }

    /// Transfer endpoints still served: volumes of Ready exports and PVCs
    /// open for upload.
    pub fn open_transfers(&self) -> usize {
        let mut cluster = self.site.cluster();
        cluster.advance(self.site.options.latency);
        cluster
            .exports
            .values()
            .map(|s| s.volumes.len())
            .sum::<usize>()
            + cluster.uploads.len()
    }

    /// Disk images the site holds (PVCs and volume snapshots).
    pub fn disk_images(&self) -> usize {
        self.site.cluster().disks.count()
    }
}

fn resource_of(object: &Value) -> Option<usize> {
    let (api_version, kind) = (object["apiVersion"].as_str()?, object["kind"].as_str()?);
    RESOURCES
        .iter()
        .position(|r| r.api_version() == api_version && r.kind == kind)
}

/// RFC 3339 UTC time of `t` (seconds precision), as Kubernetes writes it.
fn timestamp(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A refusal carried through `Result`s.
type Refused = Box<Response>;

/// A Kubernetes `Status` failure.
fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn refuse(code: StatusCode, reason: &str, message: &str) -> Refused {
    Box::new(status(code, reason, message))
}

fn ok_json(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// What a request path names.
struct Target {
    resource: usize,
    namespace: String,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, rest @ ..] => (ns.to_string(), [&[*plural][..], rest].concat()),
        _ => (String::new(), rest.to_vec()),
    };
    let group = if group == "subresources.kubevirt.io" {
        "kubevirt.io"
    } else {
        group
    };
    let resource = RESOURCES.iter().position(|r| {
        r.group == group && r.version == version && Some(&r.plural) == rest.first()
    })?;
    Some(Target {
        resource,
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        subresource: rest.get(2).map(|s| s.to_string()),
    })
}

fn query(uri: &axum::http::Uri) -> BTreeMap<String, String> {
    uri.query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                .map(|(k, v)| (k.to_owned(), percent_decode(v)))
                .collect()
        })
        .unwrap_or_default()
}

fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether an object passes `fieldSelector` and `labelSelector`.
fn selected(object: &Value, q: &BTreeMap<String, String>) -> bool {
    let fields = q
        .get("fieldSelector")
        .map(String::as_str)
        .unwrap_or_default();
    let labels = q
        .get("labelSelector")
        .map(String::as_str)
        .unwrap_or_default();
    let field_ok =
        fields
            .split(',')
            .filter(|s| !s.is_empty())
            .all(|sel| match sel.split_once('=') {
                Some((path, want)) => {
                    let want = want.trim_start_matches('=');
                    let value = path.split('.').fold(object, |v, p| &v[p]);
                    value.as_str() == Some(want)
                }
                None => false,
            });
    let label_ok =
        labels
            .split(',')
            .filter(|s| !s.is_empty())
            .all(|sel| match sel.split_once('=') {
                Some((k, v)) => {
                    object["metadata"]["labels"][k].as_str() == Some(v.trim_start_matches('='))
                }
                None => !object["metadata"]["labels"][sel].is_null(),
            });
    field_ok && label_ok
}

fn authorized(site: &Site, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {}", site.options.token))
}

async fn dispatch(State(site): State<Arc<Site>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    if let Some(refused) = control::front_door(&site, &parts.method, &path).await {
        return refused;
    }
    match path.as_str() {
        "/readyz" | "/livez" | "/healthz" => return "ok".into_response(),
        "/version" => {
            return ok_json(
                StatusCode::OK,
                &json!({"major": "1", "minor": "31", "gitVersion": "v1.31.0-rebound-lab", "platform": "linux/amd64"}),
            );
        }
        _ => {}
    }
    if !authorized(&site, &parts.headers) {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    if let Some(discovery) = discover(&path) {
        return ok_json(StatusCode::OK, &discovery);
    }
    let Some(target) = parse(&path) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the server could not find the requested resource ({path})"),
        );
    };
    let q = query(&parts.uri);
    let body = match axum::body::to_bytes(body, 4 << 20).await {
        Ok(b) => b,
        Err(_) => {
            return status(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                "request body too large",
            );
        }
    };
    if parts.method == Method::GET
        && target.name.is_none()
        && matches!(q.get("watch").map(String::as_str), Some("true" | "1"))
    {
        return watch(site, target, q);
    }
    let mut cluster = site.cluster();
    cluster.advance(site.options.latency);
    handle(&mut cluster, &parts.method, &target, &q, &body)
}

fn discover(path: &str) -> Option<Value> {
    match path.trim_end_matches('/') {
        "/api" => Some(json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})),
        "/apis" => {
            let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
                groups.entry(r.group).or_default().push(r.version);
            }
            groups
                .entry("subresources.kubevirt.io")
                .or_default()
                .push("v1");
            let groups: Vec<Value> = groups
                .into_iter()
                .map(|(g, mut versions)| {
                    versions.dedup();
                    let versions: Vec<Value> = versions
                        .iter()
                        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                        .collect();
                    json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
                })
                .collect();
            Some(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        }
        p => {
            let group_version = p
                .strip_prefix("/api/")
                .map(|v| (String::new(), v.to_owned()))
                .or_else(|| {
                    let rest = p.strip_prefix("/apis/")?;
                    let (g, v) = rest.split_once('/')?;
                    (!v.contains('/')).then(|| (g.to_owned(), v.to_owned()))
                })?;
            if group_version.1.contains('/') {
                return None;
            }
            let resources: Vec<Value> = RESOURCES
                .iter()
                .filter(|r| r.group == group_version.0 && r.version == group_version.1)
                .map(|r| {
                    let verbs = if r.kind == "UploadTokenRequest" {
                        json!(["create"])
                    } else {
                        json!(["create", "delete", "get", "list", "patch", "update", "watch"])
                    };
                    json!({"name": r.plural, "singularName": r.kind.to_lowercase(), "namespaced": r.namespaced,
                           "kind": r.kind, "verbs": verbs})
                })
                .collect();
            if resources.is_empty() {
                return None;
            }
            let gv = if group_version.0.is_empty() {
                group_version.1
            } else {
                format!("{}/{}", group_version.0, group_version.1)
            };
            Some(
                json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
            )
        }
    }
}

fn handle(
    cluster: &mut Cluster,
    method: &Method,
    target: &Target,
    q: &BTreeMap<String, String>,
    body: &Bytes,
) -> Response {
    let res = RESOURCES[target.resource];
    let ns = if res.namespaced {
        target.namespace.clone()
    } else {
        String::new()
    };
    let parse_body = || -> Result<Value, Refused> {
        serde_json::from_slice::<Value>(body)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| {
                refuse(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "the request body is not a JSON object",
                )
            })
    };
    let not_found = |name: &str| {
        status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("{}.{} \"{name}\" not found", res.plural, res.group),
        )
    };
    if target.resource == UPLOAD_TOKEN_REQUEST {
        return match (method.clone(), &target.name) {
            (Method::POST, None) => {
                match parse_body().and_then(|b| cluster.upload_token(&ns, &b)) {
                    Ok(created) => ok_json(StatusCode::CREATED, &created),
                    Err(refused) => *refused,
                }
            }
            _ => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "uploadtokenrequests can only be created",
            ),
        };
    }
    match (method.clone(), &target.name, &target.subresource) {
        (Method::GET, None, None) => {
            let items: Vec<Value> = cluster
                .objects
                .iter()
                .filter(|((r, n, _), _)| *r == target.resource && (ns.is_empty() || *n == ns))
                .map(|(_, (o, _))| o.clone())
                .filter(|o| selected(o, q))
                .collect();
            ok_json(
                StatusCode::OK,
                &json!({
                    "apiVersion": res.api_version(), "kind": format!("{}List", res.kind),
                    "metadata": {"resourceVersion": cluster.rv.to_string()}, "items": items,
                }),
            )
        }
        (Method::POST, None, None) => match parse_body() {
            Ok(object) => {
                let key = object["metadata"]["annotations"][IDEMPOTENCY_ANNOTATION]
                    .as_str()
                    .map(str::to_owned);
                match cluster.create(target.resource, &ns, object) {
                    Ok(created) => {
                        if let Some(key) = key {
                            *cluster.effects.entry(key).or_default() += 1;
                        }
                        ok_json(StatusCode::CREATED, &created)
                    }
                    Err(refused) => *refused,
                }
            }
            Err(refused) => *refused,
        },
        (Method::GET, Some(name), None) => {
            match cluster.objects.get(&(target.resource, ns, name.clone())) {
                Some((o, _)) => ok_json(StatusCode::OK, o),
                None => not_found(name),
            }
        }
        (Method::PUT | Method::PATCH, Some(name), None) => {
            let key = (target.resource, ns, name.clone());
            let incoming = match parse_body() {
                Ok(v) => v,
                Err(refused) => return *refused,
            };
            let Some((current, _)) = cluster.objects.get_mut(&key) else {
                return not_found(name);
            };
            let before = current.clone();
            if *method == Method::PUT {
                let given = incoming["metadata"]["resourceVersion"].as_str();
                if given
                    .is_some_and(|rv| Some(rv) != current["metadata"]["resourceVersion"].as_str())
                {
                    return status(
                        StatusCode::CONFLICT,
                        "Conflict",
                        &format!(
                            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                            res.plural
                        ),
                    );
                }
                let metadata = current["metadata"].clone();
                *current = incoming;
                current["metadata"] = metadata;
                current["apiVersion"] = json!(res.api_version());
                current["kind"] = json!(res.kind);
            } else {
                merge_patch(current, &incoming);
            }
            if let Err(refused) = controllers::validate(res.kind, current) {
                *current = before;
                return *refused;
            }
            let generation = current["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            current["metadata"]["generation"] = json!(generation);
            cluster.bump("MODIFIED", &key);
            if target.resource == VM {
                cluster.ensure_data_volume_templates(&key);
                cluster.reconcile_vm(&key, None);
            }
            ok_json(StatusCode::OK, &cluster.objects[&key].0)
        }
        (Method::DELETE, Some(name), None) => {
            let key = (target.resource, ns, name.clone());
            match cluster.remove(&key) {
                Some(o) => ok_json(StatusCode::OK, &o),
                None => not_found(name),
            }
        }
        (Method::PUT, Some(name), Some(sub)) => {
            let key = (target.resource, ns, name.clone());
            if !cluster.objects.contains_key(&key) {
                return not_found(name);
            }
            match (res.kind, sub.as_str()) {
                ("VirtualMachine", "start" | "stop") => {
                    cluster.start_stop(&key, sub == "start");
                    StatusCode::ACCEPTED.into_response()
                }
                ("VirtualMachineInstance", "freeze" | "unfreeze") => {
                    if let Some((vmi, _)) = cluster.objects.get_mut(&key) {
                        vmi["status"]["fsFreezeStatus"] = json!(if sub == "freeze" {
                            "frozen"
                        } else {
                            "unfrozen"
                        });
                    }
                    cluster.bump("MODIFIED", &key);
                    StatusCode::OK.into_response()
                }
                _ => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("{} has no subresource '{sub}'", res.kind),
                ),
            }
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("{method} is not supported here"),
        ),
    }
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            for (k, v) in fields {
                if k == "metadata" {
                    // Only labels and annotations of metadata are patchable.
                    for part in ["labels", "annotations"] {
                        if !v[part].is_null() {
                            merge_patch(&mut target["metadata"][part], &v[part]);
                        }
                    }
                } else if v.is_null() {
                    if let Some(map) = target.as_object_mut() {
                        map.remove(k);
                    }
                } else {
                    merge_patch(&mut target[k], v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Stream events of a collection as newline-delimited JSON.
fn watch(site: Arc<Site>, target: Target, q: BTreeMap<String, String>) -> Response {
    let since: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(30)
        .min(300);
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let res = RESOURCES[target.resource];
    let ns = if res.namespaced {
        target.namespace.clone()
    } else {
        String::new()
    };
    // From resourceVersion 0 (or none): the current objects as ADDED first.
    let initial: Vec<Bytes> = if since == 0 {
        let mut cluster = site.cluster();
        cluster.advance(site.options.latency);
        cluster
            .objects
            .iter()
            .filter(|((r, n, _), _)| *r == target.resource && (ns.is_empty() || *n == ns))
            .filter(|(_, (o, _))| selected(o, &q))
            .map(|(_, (o, _))| Bytes::from(format!("{}\n", json!({"type": "ADDED", "object": o}))))
            .collect()
    } else {
        Vec::new()
    };
    let start = if since == 0 { site.cluster().rv } else { since };
    let stream =
        futures_util::stream::iter(initial.into_iter().map(Ok::<_, std::io::Error>)).chain(
            futures_util::stream::unfold((site, start), move |(site, mut after)| {
                let (ns, q) = (ns.clone(), q.clone());
                async move {
                    loop {
                        if Instant::now() >= deadline {
                            return None;
                        }
                        let lines: Vec<String> = {
                            let mut cluster = site.cluster();
                            cluster.advance(site.options.latency);
                            let found: Vec<String> = cluster
                                .events
                                .iter()
                                .filter(|e| {
                                    e.rv > after
                                        && e.key.0 == target.resource
                                        && (ns.is_empty() || e.key.1 == ns)
                                })
                                .filter(|e| selected(&e.object, &q))
                                .map(|e| json!({"type": e.kind, "object": e.object}).to_string())
                                .collect();
                            after = cluster.rv;
                            found
                        };
                        if !lines.is_empty() {
                            let chunk = Bytes::from(lines.join("\n") + "\n");
                            return Some((Ok(chunk), (site, after)));
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }),
        );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_579_743);
        assert_eq!(timestamp(t), "2026-11-25T04:09:03Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn resource_indexes_name_their_kinds() {
        let kinds = [
            (NAMESPACE, "Namespace"),
            (SECRET, "Secret"),
            (PVC, "PersistentVolumeClaim"),
            (VM, "VirtualMachine"),
            (VMI, "VirtualMachineInstance"),
            (SNAPSHOT, "VirtualMachineSnapshot"),
            (SNAPSHOT_CONTENT, "VirtualMachineSnapshotContent"),
            (EXPORT, "VirtualMachineExport"),
            (DATA_VOLUME, "DataVolume"),
            (CDI_CONFIG, "CDIConfig"),
            (UPLOAD_TOKEN_REQUEST, "UploadTokenRequest"),
            (VOLUME_REPLICATION, "VolumeReplication"),
            (VOLUME_REPLICATION_CLASS, "VolumeReplicationClass"),
        ];
        for (index, kind) in kinds {
            assert_eq!(RESOURCES[index].kind, kind);
        }
    }

    #[test]
    fn paths_name_resources() {
        let t = parse("/apis/kubevirt.io/v1/namespaces/prod/virtualmachines/web-1").expect("vm");
        assert_eq!(
            (
                RESOURCES[t.resource].kind,
                t.namespace.as_str(),
                t.name.as_deref()
            ),
            ("VirtualMachine", "prod", Some("web-1"))
        );
        let t =
            parse("/apis/subresources.kubevirt.io/v1/namespaces/prod/virtualmachines/web-1/stop")
                .expect("sub");
        assert_eq!(t.subresource.as_deref(), Some("stop"));
        let t = parse("/api/v1/namespaces").expect("namespaces");
        assert_eq!((RESOURCES[t.resource].kind, t.name), ("Namespace", None));
        let t = parse("/api/v1/namespaces/prod").expect("one namespace");
        assert_eq!(t.name.as_deref(), Some("prod"));
        assert!(parse("/apis/nope.io/v1/things").is_none());
    }
}

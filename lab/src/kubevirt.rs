//! A simulated KubeVirt cluster: a Kubernetes-style API over HTTPS with its
//! own CA and a bearer token, enough of it for the platform's own clients
//! (the Python `kubernetes` client, kubectl) and the KubeVirt plugin:
//!
//! - discovery: `/version`, `/api`, `/apis`, `/api/v1`, `/apis/{group}/{version}`;
//!   `/readyz`, `/livez`
//! - namespaced objects of the resources in [`RESOURCES`] (namespaces and
//!   services in core v1; VirtualMachines and VirtualMachineInstances,
//!   VirtualMachineSnapshots, VirtualMachineExports, CDI DataVolumes,
//!   VolumeReplications, OpenShift Routes): list (with `fieldSelector` on
//!   `metadata.name`/`metadata.namespace` and equality `labelSelector`),
//!   get, create, replace, JSON merge patch, delete; every object carries
//!   `uid`, `resourceVersion` and `creationTimestamp`; missing or clashing
//!   names answer `Status` objects with the right reason and code
//! - watch (`?watch=true`): newline-delimited `ADDED`/`MODIFIED`/`DELETED`
//!   events after the given `resourceVersion` until `timeoutSeconds`
//! - subresources: `PUT /apis/subresources.kubevirt.io/v1/namespaces/{ns}/
//!   virtualmachines/{name}/start|stop` and
//!   `…/virtualmachineinstances/{name}/freeze|unfreeze`
//! - the cluster's controllers, simplified: a started VM gets a running
//!   VMI; a snapshot goes `InProgress` → `Succeeded` (`readyToUse`) after
//!   the configured latency; an export goes `Pending` → `Ready` with links;
//!   a DataVolume goes `ImportScheduled` → `ImportInProgress` → `Succeeded`;
//!   a VolumeReplication reports the state its spec asks for.
//!
//! Not simulated yet: the export and import data planes (disk bytes), and
//! the OpenAPI document `kubectl create` fetches unless `--validate=false`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};

/// One resource type the cluster serves.
#[derive(Debug, Clone, Copy)]
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
}

/// What the simulated cluster serves.
pub const RESOURCES: [Resource; 9] = [
    Resource {
        group: "",
        version: "v1",
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "services",
        kind: "Service",
        namespaced: true,
    },
    Resource {
        group: "kubevirt.io",
        version: "v1",
        plural: "virtualmachines",
        kind: "VirtualMachine",
        namespaced: true,
    },
    Resource {
        group: "kubevirt.io",
        version: "v1",
        plural: "virtualmachineinstances",
        kind: "VirtualMachineInstance",
        namespaced: true,
    },
    Resource {
        group: "snapshot.kubevirt.io",
        version: "v1beta1",
        plural: "virtualmachinesnapshots",
        kind: "VirtualMachineSnapshot",
        namespaced: true,
    },
    Resource {
        group: "export.kubevirt.io",
        version: "v1beta1",
        plural: "virtualmachineexports",
        kind: "VirtualMachineExport",
        namespaced: true,
    },
    Resource {
        group: "cdi.kubevirt.io",
        version: "v1beta1",
        plural: "datavolumes",
        kind: "DataVolume",
        namespaced: true,
    },
    Resource {
        group: "replication.storage.openshift.io",
        version: "v1alpha1",
        plural: "volumereplications",
        kind: "VolumeReplication",
        namespaced: true,
    },
    Resource {
        group: "route.openshift.io",
        version: "v1",
        plural: "routes",
        kind: "Route",
        namespaced: true,
    },
];

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
    /// How long snapshots, exports and imports take.
    pub latency: Duration,
    /// Objects present at start (any of [`RESOURCES`], with `apiVersion`,
    /// `kind` and `metadata.name`/`namespace`).
    pub objects: Vec<Value>,
}

impl Default for KubeVirtOptions {
    fn default() -> Self {
        Self {
            token: hex::encode(rand::random::<[u8; 16]>()),
            latency: Duration::from_millis(200),
            objects: default_objects(),
        }
    }
}

/// A `prod` namespace with two running VMs, a web and a database.
pub fn default_objects() -> Vec<Value> {
    let vm = |name: &str, tier: &str| {
        json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": "prod", "labels": {"app": "shop", "tier": tier}},
            "spec": {
                "running": true,
                "template": {"spec": {
                    "domain": {"cpu": {"cores": 2}, "memory": {"guest": "2Gi"},
                               "firmware": {"bootloader": {"efi": {}}},
                               "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}],
                                           "interfaces": [{"name": "default", "bridge": {}}]}},
                    "networks": [{"name": "default", "multus": {"networkName": "prod-net"}}],
                    "volumes": [{"name": "root", "dataVolume": {"name": format!("{name}-root")}}],
                }},
            },
        })
    };
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}}),
        vm("web-1", "web"),
        vm("db-1", "db"),
    ]
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

#[derive(Default)]
struct Cluster {
    objects: BTreeMap<Key, (Value, Instant)>,
    events: Vec<Event>,
    rv: u64,
}

struct Site {
    options: KubeVirtOptions,
    cluster: Mutex<Cluster>,
}

impl Site {
    fn cluster(&self) -> std::sync::MutexGuard<'_, Cluster> {
        self.cluster.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running simulated cluster; stops when dropped.
pub struct KubeVirtSite {
    pub addr: SocketAddr,
    pub token: String,
    /// The cluster's CA: clients must trust it.
    pub ca_pem: String,
    site: Arc<Site>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl KubeVirtSite {
    /// Serve HTTPS on an ephemeral loopback port.
    pub async fn start(options: KubeVirtOptions) -> std::io::Result<Self> {
        let tls = crate::tls::site_tls().map_err(std::io::Error::other)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let site = Arc::new(Site {
            cluster: Mutex::new(Cluster::default()),
            options,
        });
        {
            let mut cluster = site.cluster();
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
        }
        let app = Router::new().fallback(dispatch).with_state(site.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(crate::tls::serve_tls(listener, app, tls.server, rx));
        Ok(Self {
            addr,
            token: site.options.token.clone(),
            ca_pem: tls.ca_pem,
            site,
            _shutdown: tx,
        })
    }

    /// The API server URL.
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
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

fn ok_json(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

impl Cluster {
    fn bump(&mut self, kind: &'static str, key: &Key) {
        self.rv += 1;
        let rv = self.rv;
        if let Some((object, _)) = self.objects.get_mut(key) {
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            let object = object.clone();
            self.events.push(Event {
                rv,
                kind,
                key: key.clone(),
                object,
            });
        }
    }

    fn create(&mut self, r: usize, ns: &str, mut object: Value) -> Result<Value, Refused> {
        let res = RESOURCES[r];
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let name = if name.is_empty() {
            match object["metadata"]["generateName"].as_str() {
                Some(prefix) => format!("{prefix}{}", &hex::encode(rand::random::<[u8; 3]>())[..5]),
                None => {
                    return Err(Box::new(status(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "Invalid",
                        "metadata.name: Required value: name or generateName is required",
                    )));
                }
            }
        } else {
            name
        };
        let key = (
            r,
            if res.namespaced {
                ns.to_owned()
            } else {
                String::new()
            },
            name.clone(),
        );
        if self.objects.contains_key(&key) {
            let msg = format!("{}.{} \"{name}\" already exists", res.plural, res.group);
            return Err(Box::new(status(
                StatusCode::CONFLICT,
                "AlreadyExists",
                &msg,
            )));
        }
        if res.namespaced
            && !self
                .objects
                .contains_key(&(0, String::new(), ns.to_owned()))
        {
            return Err(Box::new(status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("namespaces \"{ns}\" not found"),
            )));
        }
        object["apiVersion"] = json!(res.api_version());
        object["kind"] = json!(res.kind);
        let meta = &mut object["metadata"];
        meta["name"] = json!(name);
        if res.namespaced {
            meta["namespace"] = json!(ns);
        }
        meta["uid"] = json!(uid());
        meta["creationTimestamp"] = json!(timestamp(SystemTime::now()));
        meta["generation"] = json!(1);
        initial_status(res.kind, &mut object);
        self.objects.insert(key.clone(), (object, Instant::now()));
        self.bump("ADDED", &key);
        if res.kind == "VirtualMachine" {
            self.reconcile_vm(&key);
        }
        Ok(self.objects[&key].0.clone())
    }

    /// A VM's instance follows `spec.running`.
    fn reconcile_vm(&mut self, key: &Key) {
        let Some((vm, _)) = self.objects.get(key) else {
            return;
        };
        let running = vm["spec"]["running"] == true || vm["spec"]["runStrategy"] == "Always";
        let vmi_key = (3, key.1.clone(), key.2.clone());
        let has_vmi = self.objects.contains_key(&vmi_key);
        if running && !has_vmi {
            let vmi = json!({
                "metadata": {"name": key.2, "namespace": key.1, "labels": vm["metadata"]["labels"],
                             "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                                                  "name": key.2, "uid": vm["metadata"]["uid"]}]},
                "spec": vm["spec"]["template"]["spec"],
                "status": {"phase": "Running", "interfaces": [], "fsFreezeStatus": "unfrozen"},
            });
            let _ = self.create(3, &key.1.clone(), vmi);
        } else if !running
            && has_vmi
            && let Some((vmi, _)) = self.objects.remove(&vmi_key)
        {
            self.rv += 1;
            self.events.push(Event {
                rv: self.rv,
                kind: "DELETED",
                key: vmi_key,
                object: vmi,
            });
        }
        if let Some((vm, _)) = self.objects.get_mut(key) {
            vm["status"]["printableStatus"] = json!(if running { "Running" } else { "Stopped" });
            vm["status"]["ready"] = json!(running);
            vm["status"]["created"] = json!(running);
        }
        self.bump("MODIFIED", key);
    }

    /// The controllers: move asynchronous objects along.
    fn advance(&mut self, latency: Duration) {
        let due: Vec<Key> = self
            .objects
            .iter()
            .filter(|(_, (o, born))| {
                born.elapsed() >= latency
                    && matches!(
                        o["kind"].as_str(),
                        Some("VirtualMachineSnapshot" | "VirtualMachineExport" | "DataVolume")
                    )
                    && !matches!(
                        o["status"]["phase"].as_str(),
                        Some("Succeeded" | "Ready" | "Failed")
                    )
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let now = timestamp(SystemTime::now());
            let source_vm = self
                .objects
                .get(&key)
                .and_then(|(o, _)| o["spec"]["source"]["name"].as_str().map(str::to_owned));
            let vm_uid = source_vm
                .and_then(|n| self.objects.get(&(2, key.1.clone(), n)))
                .map(|(vm, _)| vm["metadata"]["uid"].clone());
            let Some((o, _)) = self.objects.get_mut(&key) else {
                continue;
            };
            match o["kind"].as_str() {
                Some("VirtualMachineSnapshot") => {
                    o["status"] = json!({
                        "phase": "Succeeded", "readyToUse": true, "creationTime": now,
                        "sourceUID": vm_uid,
                        "virtualMachineSnapshotContentName": format!("vmsnapshot-content-{}", o["metadata"]["uid"].as_str().unwrap_or_default()),
                        "conditions": [
                            {"type": "Progressing", "status": "False", "reason": "Operation complete", "lastTransitionTime": now},
                            {"type": "Ready", "status": "True", "reason": "Operation complete", "lastTransitionTime": now},
                        ],
                    });
                }
                Some("VirtualMachineExport") => {
                    let name = o["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    let ns = key.1.clone();
                    o["status"] = json!({
                        "phase": "Ready", "tokenSecretRef": o["spec"]["tokenSecretRef"],
                        "links": {"internal": {"volumes": [{"name": "root", "formats": [
                            {"format": "raw", "url": format!("https://virt-export-{name}.{ns}.svc/volumes/root/disk.img")}]}]}},
                        "conditions": [{"type": "Ready", "status": "True", "reason": "PodReady", "lastTransitionTime": now}],
                    });
                }
                Some("DataVolume") => {
                    o["status"] = json!({"phase": "Succeeded", "progress": "100.0%",
                        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}]});
                }
                _ => {}
            }
            self.bump("MODIFIED", &key);
        }
    }
}

fn initial_status(kind: &str, object: &mut Value) {
    match kind {
        "VirtualMachineSnapshot" => {
            object["status"] = json!({"phase": "InProgress", "readyToUse": false, "conditions": [
                {"type": "Progressing", "status": "True", "reason": "Source not locked"},
                {"type": "Ready", "status": "False", "reason": "Not ready"}]});
        }
        "VirtualMachineExport" => object["status"] = json!({"phase": "Pending"}),
        "DataVolume" => object["status"] = json!({"phase": "ImportScheduled", "progress": "N/A"}),
        "VolumeReplication" => {
            let state = match object["spec"]["replicationState"].as_str() {
                Some("primary") => "Primary",
                Some("secondary") => "Secondary",
                _ => "Unknown",
            };
            object["status"] = json!({"state": state, "lastSyncTime": timestamp(SystemTime::now()),
                "conditions": [{"type": "Completed", "status": "True"}]});
        }
        "Namespace" => object["status"] = json!({"phase": "Active"}),
        _ => {}
    }
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
                .map(|r| json!({"name": r.plural, "singularName": r.kind.to_lowercase(), "namespaced": r.namespaced,
                    "kind": r.kind, "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}))
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
                Box::new(status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "the request body is not a JSON object",
                ))
            })
    };
    let not_found = |name: &str| {
        status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("{}.{} \"{name}\" not found", res.plural, res.group),
        )
    };
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
            Ok(object) => match cluster.create(target.resource, &ns, object) {
                Ok(created) => ok_json(StatusCode::CREATED, &created),
                Err(refused) => *refused,
            },
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
            let generation = current["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            current["metadata"]["generation"] = json!(generation);
            cluster.bump("MODIFIED", &key);
            if res.kind == "VirtualMachine" {
                cluster.reconcile_vm(&key);
            }
            ok_json(StatusCode::OK, &cluster.objects[&key].0)
        }
        (Method::DELETE, Some(name), None) => {
            let key = (target.resource, ns, name.clone());
            match cluster.objects.remove(&key) {
                Some((o, _)) => {
                    cluster.rv += 1;
                    cluster.events.push(Event {
                        rv: cluster.rv,
                        kind: "DELETED",
                        key,
                        object: o.clone(),
                    });
                    ok_json(StatusCode::OK, &o)
                }
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
                    if let Some((vm, _)) = cluster.objects.get_mut(&key) {
                        vm["spec"]["running"] = json!(sub == "start");
                    }
                    cluster.reconcile_vm(&key);
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

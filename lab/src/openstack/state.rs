//! State shared by the simulated services: one lock over every region's
//! resources (JSON documents as the APIs render them), the tokens, the
//! injected faults and the effects counter; and the helpers every service
//! uses: ids, timestamps, token checks, delayed state changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::OpenStackOptions;
use super::faults::Faults;
use crate::disk::Disks;

pub(super) type Table = BTreeMap<String, Value>;

/// One region's resources, by id.
#[derive(Default)]
pub(crate) struct Region {
    pub servers: Table,
    pub volumes: Table,
    pub snapshots: Table,
    pub backups: Table,
    pub groups: Table,
    pub group_snapshots: Table,
    pub images: Table,
    pub networks: Table,
    pub subnets: Table,
    pub ports: Table,
    pub floatingips: Table,
    pub zones: Table,
    pub recordsets: Table,
    pub loadbalancers: Table,
    pub pools: Table,
    pub members: Table,
    /// The router between the private networks and the external one,
    /// which floating IPs name.
    pub router_id: String,
    /// The mover agents of running mover appliances, by server id.
    pub agents: HashMap<String, crate::mover::Agent>,
}

impl Region {
    pub fn table(&self, kind: &str) -> Option<&Table> {
        Some(match kind {
            "servers" => &self.servers,
            "volumes" => &self.volumes,
            "snapshots" => &self.snapshots,
            "backups" => &self.backups,
            "groups" => &self.groups,
            "group_snapshots" => &self.group_snapshots,
            "images" => &self.images,
            "networks" => &self.networks,
            "subnets" => &self.subnets,
            "ports" => &self.ports,
            "floatingips" => &self.floatingips,
            "zones" => &self.zones,
            "recordsets" => &self.recordsets,
            "loadbalancers" => &self.loadbalancers,
            "pools" => &self.pools,
            "members" => &self.members,
            _ => return None,
        })
    }
}

pub(crate) struct Token {
    pub expires: Instant,
}

pub(crate) struct Cloud {
    pub regions: BTreeMap<String, Region>,
    pub tokens: HashMap<String, Token>,
    pub effects: HashMap<String, usize>,
    pub faults: Faults,
}

impl Cloud {
    pub fn new(regions: &[String]) -> Self {
        Self {
            regions: regions
                .iter()
                .map(|r| (r.clone(), Region::default()))
                .collect(),
            tokens: HashMap::new(),
            effects: HashMap::new(),
            faults: Faults::default(),
        }
    }

    /// A region by name; every region of the options exists from the start.
    pub fn region(&mut self, name: &str) -> &mut Region {
        self.regions.entry(name.to_owned()).or_default()
    }
}

pub(crate) struct Shared {
    pub options: OpenStackOptions,
    /// `http://127.0.0.1:PORT`, or `https://…` with TLS
    pub base: String,
    pub project_id: String,
    pub user_id: String,
    pub disks: Disks,
    pub state: Mutex<Cloud>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Cloud> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a region's handlers get: the cloud and which region they serve.
#[derive(Clone)]
pub(crate) struct Api {
    pub shared: Arc<Shared>,
    pub region: Arc<str>,
}

impl Api {
    /// Run `f` on this region's resources under the lock.
    pub fn with<T>(&self, f: impl FnOnce(&mut Region) -> T) -> T {
        let mut cloud = self.shared.lock();
        f(cloud.region(&self.region))
    }

    /// The URL of a path under this region, e.g. `url("/compute/v2.1")`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}{path}", self.shared.base, self.region)
    }

    /// The path prefix of this region's services, e.g. `/RegionOne`.
    pub fn prefix(&self) -> String {
        format!("/{}", self.region)
    }

    pub fn project_id(&self) -> &str {
        &self.shared.project_id
    }

    pub fn user_id(&self) -> &str {
        &self.shared.user_id
    }

    pub fn latency(&self) -> &super::Latencies {
        &self.shared.options.latency
    }

    /// Bytes of disk file for a size in GiB.
    pub fn disk_bytes(&self, gib: u64) -> u64 {
        gib.saturating_mul(self.shared.options.gib)
    }

    /// After `delay`, run `f` on this region: the end of an asynchronous
    /// operation, like a service's worker finishing.
    pub fn later(&self, delay: Duration, f: impl FnOnce(&mut Region) + Send + 'static) {
        let api = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            api.with(f);
        });
    }

    /// Run blocking disk work `work` next to a `delay`, then hand its result
    /// to `done` under the lock: the operation ends when both have passed.
    /// Await the handle to end a synchronous call with it.
    pub fn later_with_disk<T: Send + 'static>(
        &self,
        delay: Duration,
        work: impl FnOnce(&Disks) -> std::io::Result<T> + Send + 'static,
        done: impl FnOnce(&mut Region, std::io::Result<T>) + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let api = self.clone();
        tokio::spawn(async move {
            let disks = api.shared.disks.clone();
            let (result, ()) = tokio::join!(
                tokio::task::spawn_blocking(move || work(&disks)),
                tokio::time::sleep(delay)
            );
            let result = result.unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
            api.with(|region| done(region, result));
        })
    }
}

/// Token check for every service call (Keystone's middleware in front of
/// each real service): 401 without a valid, unexpired `X-Auth-Token`.
pub(crate) async fn require_token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let valid = headers
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            shared
                .lock()
                .tokens
                .get(t)
                .is_some_and(|t| t.expires > Instant::now())
        });
    if valid {
        return next.run(request).await;
    }
    let mut response = (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"error": {
            "code": 401,
            "title": "Unauthorized",
            "message": "The request you have made requires authentication.",
        }})),
    )
        .into_response();
    let challenge = format!("Keystone uri=\"{}/identity\"", shared.base);
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    response
}

/// A UUID as OpenStack services print them.
pub(crate) fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub(crate) use crate::random_hex;

/// `2024-05-01T12:00:00Z` (Nova, Neutron, Glance, Octavia).
pub(crate) fn time_z() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `2024-05-01T12:00:00.123456` (Cinder, Designate).
pub(crate) fn time_micros() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string()
}

/// `2024-05-01T12:00:00.123456Z` (Keystone), `offset` from now.
pub(crate) fn time_keystone(offset: chrono::Duration) -> String {
    (chrono::Utc::now() + offset)
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// Nova's and Cinder's error body: `{"itemNotFound": {"code", "message"}}`.
pub(crate) fn fault(status: StatusCode, message: impl Into<String>) -> Response {
    let name = match status {
        StatusCode::NOT_FOUND => "itemNotFound",
        StatusCode::BAD_REQUEST => "badRequest",
        StatusCode::CONFLICT => "conflictingRequest",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_ACCEPTABLE => "computeFault",
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => "overLimit",
        _ => "computeFault",
    };
    let body = json!({ name: { "code": status.as_u16(), "message": message.into() } });
    (status, axum::Json(body)).into_response()
}

/// Apply a JSON body's query filters the way Neutron and Designate do:
/// every `key=value` that names a top-level field must match it.
pub(crate) fn matches(doc: &Value, query: &HashMap<String, String>) -> bool {
    const PAGING: [&str; 6] = [
        "limit",
        "marker",
        "fields",
        "sort_key",
        "sort_dir",
        "page_reverse",
    ];
    query.iter().all(|(k, want)| {
        if PAGING.contains(&k.as_str()) {
            return true;
        }
        match doc.get(k) {
            None => true,
            Some(Value::String(s)) => s == want,
            Some(Value::Null) => want.is_empty() || want == "null",
            Some(other) => want.parse::<Value>().is_ok_and(|w| w == *other),
        }
    })
}

/// Set `doc[key] = value` on an object document.
pub(crate) fn set(doc: &mut Value, key: &str, value: Value) {
    if let Some(fields) = doc.as_object_mut() {
        fields.insert(key.to_owned(), value);
    }
}

/// A string field of a document, or "".
pub(crate) fn str_of<'a>(doc: &'a Value, key: &str) -> &'a str {
    doc.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// The microversion a Nova or Cinder call is served at (a request
/// extension), for calls that exist only from some version on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Microversion(pub u32, pub u32);

/// Microversion negotiation for Nova and Cinder: read
/// `OpenStack-API-Version: <service> X.Y` (or `latest`; the minimum when
/// absent), refuse versions out of range with 406, and say which version
/// answered.
pub(crate) async fn microversion(
    service: &'static str,
    min: (u32, u32),
    max: (u32, u32),
    mut request: Request,
    next: Next,
) -> Response {
    let asked = request
        .headers()
        .get_all("openstack-api-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|part| {
            let mut words = part.split_whitespace();
            (words.next()? == service).then(|| words.next().unwrap_or_default().to_owned())
        })
        .or_else(|| {
            let legacy = if service == "compute" {
                "x-openstack-nova-api-version"
            } else {
                "x-openstack-volume-api-version"
            };
            request
                .headers()
                .get(legacy)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
    let version = match asked.as_deref() {
        None => min,
        Some("latest") => max,
        Some(text) => {
            let parsed = text
                .split_once('.')
                .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
            match parsed {
                Some(v) if v >= min && v <= max => v,
                Some(_) => {
                    let msg = format!(
                        "Version {text} is not supported by the API. Minimum is {}.{} and maximum is {}.{}.",
                        min.0, min.1, max.0, max.1
                    );
                    return fault(StatusCode::NOT_ACCEPTABLE, msg);
                }
                None => {
                    let msg = format!("Invalid API version request string {text}.");
                    return fault(StatusCode::BAD_REQUEST, msg);
                }
            }
        }
    };
    request
        .extensions_mut()
        .insert(Microversion(version.0, version.1));
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("{service} {}.{}", version.0, version.1)) {
        headers.insert("openstack-api-version", v);
    }
    if service == "compute"
        && let Ok(v) = HeaderValue::from_str(&format!("{}.{}", version.0, version.1))
    {
        headers.insert("x-openstack-nova-api-version", v);
    }
    headers.insert(
        header::VARY,
        HeaderValue::from_static("OpenStack-API-Version"),
    );
    response
}

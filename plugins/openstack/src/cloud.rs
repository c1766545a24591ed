//! A Keystone session and the calls made with it: password authentication
//! scoped to the site's project, the service catalog, the endpoint of each
//! service in a region, microversion headers, retries, request ids derived
//! from idempotency keys, and OpenStack's error bodies mapped to the
//! contract's errors.
//!
//! The host instantiates the plugin for every call, so a token lives for
//! one call (cached here per site for the calls it makes).

use std::cell::RefCell;
use std::rc::Rc;

use rebound_plugin_sdk::http::{self, Request, Response};
use rebound_plugin_sdk::retry::{RetryPolicy, retry};
use rebound_plugin_sdk::{ProviderError, Throttle, site};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The microversions the plugin speaks (lock reasons need compute 2.73,
/// volumes from backups volume 3.47).
const COMPUTE_VERSION: &str = "compute 2.73";
const VOLUME_VERSION: &str = "volume 3.47";

/// The HTTP methods the plugin uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    Post,
    Put,
    Delete,
}

impl Verb {
    fn build(self, url: String) -> Request {
        match self {
            Self::Get => http::get(url),
            Self::Post => http::post(url),
            Self::Put => http::put(url),
            Self::Delete => http::delete(url),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
        }
    }
}

/// An OpenStack service, by what the plugin calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Compute,
    Volume,
    Image,
    Network,
    Dns,
    LoadBalancer,
}

impl Service {
    /// Catalog types, preferred first.
    fn types(self) -> &'static [&'static str] {
        match self {
            Self::Compute => &["compute"],
            Self::Volume => &["block-storage", "volumev3"],
            Self::Image => &["image"],
            Self::Network => &["network"],
            Self::Dns => &["dns"],
            Self::LoadBalancer => &["load-balancer"],
        }
    }

    /// The API version a catalog URL may leave out (Glance, Neutron,
    /// Designate and Octavia list their roots; Nova and Cinder their
    /// versioned URL).
    fn version_suffix(self) -> Option<&'static str> {
        match self {
            Self::Image | Self::Dns | Self::LoadBalancer => Some("/v2"),
            Self::Network => Some("/v2.0"),
            Self::Compute | Self::Volume => None,
        }
    }

    fn name(self) -> &'static str {
        self.types()[0]
    }
}

#[derive(Debug, Clone)]
struct Endpoint {
    kind: String,
    region: String,
    interface: String,
    url: String,
}

/// An authenticated session with one site's cloud.
#[derive(Debug)]
pub struct Cloud {
    pub site: String,
    /// The site's region: where calls go unless they name another.
    pub region: String,
    interface: String,
    token: String,
    endpoints: Vec<Endpoint>,
    timeout_ms: u64,
}

thread_local! {
    static SESSIONS: RefCell<Vec<Rc<Cloud>>> = const { RefCell::new(Vec::new()) };
}

/// The session of `site`, authenticating on first use within this call.
pub fn connect(site_name: &str) -> Result<Rc<Cloud>, ProviderError> {
    if let Some(found) = SESSIONS.with(|s| s.borrow().iter().find(|c| c.site == site_name).cloned())
    {
        return Ok(found);
    }
    let cloud = Rc::new(Cloud::authenticate(site_name)?);
    SESSIONS.with(|s| s.borrow_mut().push(cloud.clone()));
    Ok(cloud)
}

/// A setting with a default.
pub fn setting(site_name: &str, key: &str, default: &str) -> String {
    site::get(site_name, key)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

impl Cloud {
    fn authenticate(site_name: &str) -> Result<Self, ProviderError> {
        let auth_url = site::require(site_name, "auth_url")?;
        let region = site::require(site_name, "region")?;
        let user = site::require(site_name, "user")?;
        let project = site::require(site_name, "project")?;
        let password = site::secret(site_name, "password")?;
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": user,
                "domain": {"name": setting(site_name, "user_domain", "Default")},
                "password": password.placeholder(),
            }}},
            "scope": {"project": {
                "name": project,
                "domain": {"name": setting(site_name, "project_domain", "Default")},
            }},
        }});
        // Shorter than a call's budget, so a hung API is reported as a
        // transient failure the engine retries, not a call killed.
        let timeout_ms = setting(site_name, "timeout_ms", "")
            .parse()
            .unwrap_or(http::DEFAULT_TIMEOUT_MS);
        let url = format!("{}/auth/tokens", auth_url.trim_end_matches('/'));
        let what = format!("POST {url}");
        let request = http::post(url).json(&body)?.timeout_ms(timeout_ms);
        let response = retry(RetryPolicy::default(), || {
            check(&what, request.clone().send()?)
        })?;
        let token = response
            .header("x-subject-token")
            .ok_or_else(|| {
                ProviderError::ProviderFailed(format!(
                    "Keystone at {auth_url} issued no X-Subject-Token"
                ))
            })?
            .to_owned();
        let doc: Value = response.json()?;
        let mut endpoints = Vec::new();
        for service in doc["token"]["catalog"].as_array().into_iter().flatten() {
            let kind = service["type"].as_str().unwrap_or_default();
            for e in service["endpoints"].as_array().into_iter().flatten() {
                let text = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
                let region = match text("region_id") {
                    r if r.is_empty() => text("region"),
                    r => r,
                };
                endpoints.push(Endpoint {
                    kind: kind.to_owned(),
                    region,
                    interface: text("interface"),
                    url: text("url"),
                });
            }
        }
        Ok(Self {
            site: site_name.to_owned(),
            region,
            interface: setting(site_name, "interface", "public"),
            token,
            endpoints,
            timeout_ms,
        })
    }

    /// The URL of `service` in `region` (the site's when `None`), with the
    /// API version its paths start from.
    pub fn endpoint(
        &self,
        service: Service,
        region: Option<&str>,
    ) -> Result<String, ProviderError> {
        let region = region.unwrap_or(&self.region);
        let found = service.types().iter().find_map(|kind| {
            self.endpoints
                .iter()
                .find(|e| e.kind == *kind && e.region == region && e.interface == self.interface)
        });
        let Some(endpoint) = found else {
            return Err(ProviderError::NotFound(format!(
                "the catalog of site '{}' has no {} endpoint ({} interface) in region '{region}'; \
                 check the site's `region` and `interface` settings",
                self.site,
                service.name(),
                self.interface
            )));
        };
        let url = endpoint.url.trim_end_matches('/').to_owned();
        Ok(match service.version_suffix() {
            Some(v) if !url.ends_with(v) => format!("{url}{v}"),
            _ => url,
        })
    }

    /// A request to `path` of `service` in `region`, authenticated and at
    /// the plugin's microversion.
    fn request(
        &self,
        verb: Verb,
        service: Service,
        region: Option<&str>,
        path: &str,
    ) -> Result<(String, Request), ProviderError> {
        let url = format!("{}{path}", self.endpoint(service, region)?);
        let what = format!(
            "{} {}",
            verb.name(),
            url.split('?').next().unwrap_or_default()
        );
        let mut request = verb
            .build(url)
            .header("x-auth-token", &self.token)
            .header("accept", "application/json")
            .timeout_ms(self.timeout_ms);
        match service {
            Service::Compute => request = request.header("openstack-api-version", COMPUTE_VERSION),
            Service::Volume => request = request.header("openstack-api-version", VOLUME_VERSION),
            _ => {}
        }
        Ok((what, request))
    }

    /// `GET` a JSON document, retrying passing faults.
    pub fn get(&self, service: Service, path: &str) -> Result<Value, ProviderError> {
        self.get_in(service, None, path)
    }

    /// `GET` in another region of the same cloud.
    pub fn get_in(
        &self,
        service: Service,
        region: Option<&str>,
        path: &str,
    ) -> Result<Value, ProviderError> {
        let (what, request) = self.request(Verb::Get, service, region, path)?;
        let response = retry(RetryPolicy::default(), || {
            check(&what, request.clone().send()?)
        })?;
        if response.body().is_empty() {
            return Ok(Value::Null);
        }
        response.json()
    }

    /// A mutating call. `request_id` (from [`request_id`]) tags it, so the
    /// platform's logs tie it to the idempotency key that caused it.
    pub fn send(
        &self,
        verb: Verb,
        service: Service,
        path: &str,
        body: Option<&Value>,
        request_id: &str,
    ) -> Result<Value, ProviderError> {
        self.send_in(verb, service, None, path, body, request_id)
    }

    pub fn send_in(
        &self,
        verb: Verb,
        service: Service,
        region: Option<&str>,
        path: &str,
        body: Option<&Value>,
        request_id: &str,
    ) -> Result<Value, ProviderError> {
        let (what, request) = self.request(verb, service, region, path)?;
        let mut request = request.header("x-openstack-request-id", request_id);
        if let Some(body) = body {
            request = request.json(body)?;
        }
        let response = send_once(&what, &request)?;
        if response.body().is_empty() {
            return Ok(Value::Null);
        }
        // Some services answer an action with a non-JSON body.
        Ok(response.json().unwrap_or(Value::Null))
    }
}

/// Send a mutating request. Answers that say the service did not act (429,
/// 5xx) are retried here; a lost answer (timeout, reset) is not, since the
/// service may have acted: it fails `transient`, and the step's retry looks
/// up what the first attempt created (by its key) before acting again.
fn send_once(what: &str, request: &Request) -> Result<Response, ProviderError> {
    let policy = RetryPolicy::default();
    let mut attempt = 0;
    loop {
        let answer = check(what, request.clone().send()?);
        match answer {
            Ok(response) => return Ok(response),
            Err(e) => match policy.delay(attempt, &e) {
                Some(ms) => {
                    site::sleep_ms(ms);
                    attempt += 1;
                }
                None => return Err(e),
            },
        }
    }
}

/// A request id for the side effect `purpose` of the call keyed `key`, in
/// the `req-<uuid>` form OpenStack accepts from clients: the same key and
/// purpose always give the same id.
pub fn request_id(key: &str, purpose: &str) -> String {
    let digest = Sha256::digest(format!("{key}\n{purpose}").as_bytes());
    let h = hex::encode(&digest[..16]);
    format!(
        "req-{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A short, stable token of a key for names (`rebound-mover-<token>`).
pub fn short(key: &str) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..6])
}

pub use rebound_plugin_sdk::http::encode;

/// Turn a non-2xx answer to `what` ("GET https://…") into the contract's
/// error, with the message the service put in its error body: 429 (and
/// Nova's older 413) with Retry-After is `throttled`, 5xx `transient`, other
/// 4xx permanent.
pub fn check(what: &str, response: Response) -> Result<Response, ProviderError> {
    if response.is_success() {
        return Ok(response);
    }
    let status = response.status();
    let message = format!("{what} answered {status}: {}", api_message(response.body()));
    let retry_after = response.header("retry-after");
    let throttled = status == 429 || (status == 413 && retry_after.is_some());
    Err(match status {
        _ if throttled => ProviderError::Throttled(Throttle {
            retry_after_ms: retry_after
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(|s| s.saturating_mul(1000)),
            message,
        }),
        404 => ProviderError::NotFound(message),
        401 | 403 => ProviderError::Unauthorized(message),
        409 => ProviderError::Conflict(message),
        500..=599 => ProviderError::Transient(message),
        400..=499 => ProviderError::InvalidRequest(message),
        _ => ProviderError::ProviderFailed(message),
    })
}

/// The message of an OpenStack error body: Nova and Cinder
/// `{"itemNotFound": {"message"}}`, Neutron `{"NeutronError": {"message"}}`,
/// Keystone `{"error": {"message"}}`, Designate `{"message"}`, Octavia
/// `{"faultstring"}`, Glance plain text.
pub fn api_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    if let Ok(doc) = serde_json::from_slice::<Value>(body) {
        for pointer in ["/message", "/faultstring", "/error/message", "/description"] {
            if let Some(m) = doc.pointer(pointer).and_then(Value::as_str) {
                return m.to_owned();
            }
        }
        if let Some(m) = doc
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(|v| v["message"].as_str())
        {
            return m.to_owned();
        }
    }
    let text = text.trim();
    text.chars().take(300).collect()
}

//! Fault injection and the front door every service call passes: added
//! latency, a hung or down site, a rate of errors (5xx, or 429 with
//! `Retry-After`), a slow data plane; plus the request id header and the
//! effects counter. Scripted through `/_lab/faults` or
//! [`super::OpenStackSite::set_faults`].

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{Value, json};

use super::state::{Shared, fault, str_of, uuid};
use crate::guest::{GuestWrite, Refused};

pub use crate::faults::Faults;

impl crate::faults::Scripted for Shared {
    fn with_faults<R>(&self, f: impl FnOnce(&mut Faults) -> R) -> R {
        f(&mut self.lock().faults)
    }

    fn effects_json(&self) -> Value {
        json!(self.lock().effects)
    }

    /// The guest of the `ACTIVE` server a Cinder volume is attached to
    /// writes into it (volume ids are unique across regions).
    async fn guest_write(&self, write: &GuestWrite, data: &[u8]) -> Result<(), Refused> {
        {
            let cloud = self.lock();
            let Some(region) = cloud
                .regions
                .values()
                .find(|r| r.volumes.contains_key(&write.disk))
            else {
                return Err(Refused::NoDisk(format!("no Cinder volume {}", write.disk)));
            };
            let volume = &region.volumes[&write.disk];
            let running = volume["attachments"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| region.servers.get(str_of(a, "server_id")))
                .any(|server| str_of(server, "status") == "ACTIVE");
            if !running {
                return Err(Refused::NotRunning(format!(
                    "volume {} is attached to no ACTIVE server; only a running guest writes",
                    write.disk
                )));
            }
        }
        crate::guest::write_image(
            &self.disks,
            &super::cinder::volume_file(&write.disk),
            &write.disk,
            write.offset,
            data,
        )
    }
}

/// In front of every service call.
pub(crate) async fn front_door(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let method = request.method().to_string();
    let faults = shared.lock().faults.clone();
    if let Some(injected) = faults
        .meet(&method, &path, || shared.lock().faults.hang)
        .await
    {
        return injected.respond(|status, down| {
            fault(
                status,
                if down {
                    "The site is down."
                } else if status == StatusCode::TOO_MANY_REQUESTS {
                    "This request was rate-limited."
                } else {
                    "The server has either erred or is incapable of performing the requested operation."
                },
            )
        });
    }
    let mutating = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if mutating && !path.ends_with("/auth/tokens") {
        let key = request
            .headers()
            .get("x-openstack-request-id")
            .and_then(|v| v.to_str().ok())
            .map_or_else(|| format!("{} {path}", request.method()), str::to_owned);
        *shared.lock().effects.entry(key).or_default() += 1;
    }
    let mut response = next.run(request).await;
    if let Ok(id) = HeaderValue::from_str(&format!("req-{}", uuid())) {
        response.headers_mut().insert("x-openstack-request-id", id);
    }
    response
}

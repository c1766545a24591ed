//! The failures a simulated site can be told to show, shared by the
//! simulators: a rate of errors (5xx, or 429 with `Retry-After`), a hung or
//! down site, added latency and a slow data plane. Each simulator answers
//! them in its platform's own error shape. Tests script them, read what
//! each site served, and write into its workloads' disks as their guests
//! would ([`crate::guest`]), through the same control routes on every site
//! ([`routes`]).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::guest::{GuestWrite, Refused};

/// The failures a site shows; all off by default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Fraction of calls (0.0–1.0) answered with `status` instead.
    pub error_rate: f64,
    /// The status of injected errors; 503 when unset.
    pub status: Option<u16>,
    /// Seconds sent as `Retry-After` with injected errors.
    pub retry_after: Option<u64>,
    /// Calls get no answer until `hang` is cleared.
    pub hang: bool,
    /// The whole site answers 503, like a site lost in a disaster.
    pub down: bool,
    /// Added to every call.
    pub latency_ms: u64,
    /// Disk copies and image transfers run at this many bytes per second.
    pub data_bytes_per_sec: Option<u64>,
    /// Limit the faults to the calls whose path has this segment (a
    /// service: `compute`, `volume`, …; an API group: `kubevirt.io`,
    /// `cdi.kubevirt.io`, …).
    pub service: Option<String>,
    /// Limit the faults to the calls of this HTTP method (`POST`: writes
    /// fail while reads work, say).
    pub method: Option<String>,
}

impl Faults {
    /// Whether the faults apply to a `method` call of `path`.
    pub fn applies_to(&self, method: &str, path: &str) -> bool {
        self.service
            .as_deref()
            .is_none_or(|s| path.split('/').any(|segment| segment == s))
            && self.applies_to_method(method)
    }

    /// Whether the faults apply to calls of `method`.
    pub fn applies_to_method(&self, method: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
    }

    /// How long moving `bytes` takes on a slowed data plane.
    pub fn data_delay(&self, bytes: u64) -> Duration {
        match self.data_bytes_per_sec {
            Some(rate) if rate > 0 => Duration::from_secs_f64(bytes as f64 / rate as f64),
            _ => Duration::ZERO,
        }
    }

    /// Whether this call draws an injected error.
    pub fn draws_error(&self) -> bool {
        self.error_rate > 0.0 && rand::random::<f64>() < self.error_rate
    }

    /// Why these faults cannot be set, if they cannot.
    pub fn invalid(&self) -> Option<String> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Some(format!(
                "error_rate is {}; give 0.0 to 1.0",
                self.error_rate
            ));
        }
        match self.status {
            Some(s) if !(100..=999).contains(&s) => {
                Some(format!("status {s} is not an HTTP status"))
            }
            _ => None,
        }
    }
}

/// What a call answers instead, by the faults it met; each simulator
/// renders it in its platform's own error shape.
pub(crate) enum Injected {
    /// The whole site is down (503).
    Down,
    /// An injected error: its status, and the `Retry-After` seconds to send.
    Error {
        status: StatusCode,
        retry_after: Option<u64>,
    },
}

impl Injected {
    /// The answer: `render(status, down)` in the platform's own error
    /// shape (`down`: the whole site is), with `Retry-After` when set.
    pub(crate) fn respond(self, render: impl FnOnce(StatusCode, bool) -> Response) -> Response {
        let (status, down, retry_after) = match self {
            Self::Down => (StatusCode::SERVICE_UNAVAILABLE, true, None),
            Self::Error {
                status,
                retry_after,
            } => (status, false, retry_after),
        };
        let mut response = render(status, down);
        if let Some(secs) = retry_after
            && let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string())
        {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, v);
        }
        response
    }
}

impl Faults {
    /// Meet these faults on a `method` call of `path`: the added latency,
    /// a hang for as long as `hung()` says the site still hangs, then what
    /// to answer instead of serving the call, if anything.
    pub(crate) async fn meet(
        &self,
        method: &str,
        path: &str,
        hung: impl Fn() -> bool,
    ) -> Option<Injected> {
        if !self.applies_to(method, path) {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(self.latency_ms)).await;
        while hung() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if self.down {
            return Some(Injected::Down);
        }
        self.draws_error().then(|| Injected::Error {
            status: self
                .status
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            retry_after: self.retry_after,
        })
    }
}

/// A simulator the control routes reach: its faults and the side effects
/// it has served.
pub(crate) trait Scripted: Send + Sync + 'static {
    /// Run `f` on the site's faults, under the site's lock.
    fn with_faults<R>(&self, f: impl FnOnce(&mut Faults) -> R) -> R;
    /// The mutating calls served so far, by kind.
    fn effects_json(&self) -> Value;
    /// Write into a disk as its workload's guest would.
    fn guest_write(
        &self,
        write: &GuestWrite,
        data: &[u8],
    ) -> impl std::future::Future<Output = Result<(), Refused>> + Send;
}

/// `GET`/`POST` (replace)/`DELETE` (clear) `/_lab/faults`,
/// `GET /_lab/effects` and `POST /_lab/guest-writes`, for the site's router
/// to take with its state.
pub(crate) fn routes<S: Scripted>() -> Router<Arc<S>> {
    Router::new()
        .route(
            "/_lab/faults",
            get(get_faults::<S>)
                .post(set_faults::<S>)
                .delete(clear_faults::<S>),
        )
        .route("/_lab/effects", get(get_effects::<S>))
        .route("/_lab/guest-writes", post(guest_write::<S>))
}

async fn guest_write<S: Scripted>(State(site): State<Arc<S>>, body: Bytes) -> Response {
    match crate::guest::parse(&body) {
        Ok(write) => {
            let data = write.data();
            let result = site.guest_write(&write, &data).await;
            crate::guest::answer(&write, &data, result)
        }
        Err(message) => crate::guest::bad_request(message),
    }
}

async fn get_faults<S: Scripted>(State(site): State<Arc<S>>) -> Json<Faults> {
    Json(site.with_faults(|f| f.clone()))
}

async fn set_faults<S: Scripted>(
    State(site): State<Arc<S>>,
    Json(faults): Json<Faults>,
) -> Response {
    if let Some(msg) = faults.invalid() {
        return (StatusCode::BAD_REQUEST, Json(json!({ "error": msg }))).into_response();
    }
    site.with_faults(|f| *f = faults.clone());
    Json(faults).into_response()
}

async fn clear_faults<S: Scripted>(State(site): State<Arc<S>>) -> StatusCode {
    site.with_faults(|f| *f = Faults::default());
    StatusCode::NO_CONTENT
}

async fn get_effects<S: Scripted>(State(site): State<Arc<S>>) -> Json<Value> {
    Json(site.effects_json())
}

#[cfg(test)]
mod tests {
    use super::Faults;

    #[test]
    fn faults_apply_to_the_service_and_method_they_name() {
        let all = Faults::default();
        assert!(all.applies_to("GET", "/api/vms"));
        let writes = Faults {
            service: Some("diskattachments".into()),
            method: Some("POST".into()),
            ..Faults::default()
        };
        assert!(writes.applies_to("POST", "/api/vms/1/diskattachments"));
        assert!(writes.applies_to("post", "/api/vms/1/diskattachments"));
        assert!(!writes.applies_to("GET", "/api/vms/1/diskattachments"));
        assert!(!writes.applies_to("POST", "/api/vms"));
    }
}

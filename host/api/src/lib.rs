//! Rebound's REST API under `/api/v1`: the axum router, authentication and
//! roles ([`auth`]), RFC 9457 problem+json errors ([`problem`]), and the
//! OpenAPI 3.1 document generated from the handlers ([`openapi`], served at
//! `/api/v1/openapi.json` and browsable at `/api/v1/docs`).
//!
//! This crate owns the HTTP surface only: it starts runs through
//! `rebound_engine::trigger`, reads and writes through `rebound_store`, and
//! never drives a run or calls a plugin itself (data flows API → engine →
//! runtime). Every mutating call names its principal to the store, which
//! audits it in the same transaction as the change.
#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod auth;
mod extract;
pub mod metrics;
pub mod problem;
mod routes;
pub mod seal;
pub mod sign_in;
pub mod sites;
mod throttle;
mod views;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use rebound_runtime::Runtime;
use rebound_store::Store;
use serde::Deserialize;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_scalar::{Scalar, Servable};

pub use auth::{Auth, AuthConfig, Principal, Role};
pub use problem::Problem;

/// The API's settings (the `[api]` table of the host's config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub auth: AuthConfig,
    /// Origins allowed by CORS; empty: no cross-origin access.
    pub cors_origins: Vec<String>,
    /// Largest request body accepted.
    pub body_limit_bytes: usize,
    /// Longest a request may take before its response starts.
    pub request_timeout_seconds: u64,
    /// How often a run's event stream looks at the store.
    pub events_poll_ms: u64,
    /// Largest plugin package `POST /api/v1/plugins` accepts (its
    /// component base64-encoded).
    pub plugin_limit_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            auth: AuthConfig::default(),
            cors_origins: Vec::new(),
            body_limit_bytes: 1024 * 1024,
            request_timeout_seconds: 30,
            events_poll_ms: 500,
            plugin_limit_bytes: 64 * 1024 * 1024,
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub auth: Arc<Auth>,
    /// The plugin runtime, when the host runs one.
    pub runtime: Option<Arc<Runtime>>,
    /// The sites bound to plugins, when the host runs a runtime.
    pub registry: Option<Arc<sites::SiteRegistry>>,
    pub events_poll: Duration,
    pub plugin_limit_bytes: usize,
}

impl ApiState {
    pub fn new(store: Store, auth: Arc<Auth>, config: &ApiConfig) -> Self {
        Self {
            store,
            auth,
            runtime: None,
            registry: None,
            events_poll: Duration::from_millis(config.events_poll_ms.max(10)),
            plugin_limit_bytes: config.plugin_limit_bytes,
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Rebound API",
        description = "Disaster-recovery control plane: protection plans, runs (failover, failback, reprotect, migration, drill), compliance, events and audit. Errors are RFC 9457 problem+json.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "auth", description = "Log in, API tokens"),
        (name = "plans", description = "Protection plans"),
        (name = "runs", description = "Runs of workflows"),
        (name = "observe", description = "Compliance, events, audit"),
        (name = "plugins", description = "Provider plugins and sites"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT or rbt_ API token")
                    .build(),
            ),
        );
    }
}

fn api_router() -> OpenApiRouter<ApiState> {
    routes::all(OpenApiRouter::with_openapi(ApiDoc::openapi()))
}

/// The OpenAPI document of the API, as generated from the handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().split_for_parts().1
}

/// The API router: `/api/v1/...`, `/api/v1/openapi.json`, `/api/v1/docs`
/// and Prometheus `/metrics`, with request ids, tracing, timeouts, body
/// limits, CORS and compression, and every error as problem+json.
pub fn router(state: ApiState, config: &ApiConfig) -> Router {
    let (routes, spec) = api_router().split_for_parts();
    metrics::install();
    let spec_json = Arc::new(spec.to_pretty_json().unwrap_or_default());
    let request_id = HeaderName::from_static("x-request-id");
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(
            config
                .cors_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        ))
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            axum::http::header::AUTHORIZATION,
            axum::http::header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
        ]);
    routes
        .with_state(state)
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let spec = spec_json.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        spec.as_str().to_owned(),
                    )
                }
            }),
        )
        .merge(Scalar::with_url("/api/v1/docs", spec))
        .route("/metrics", axum::routing::get(metrics::serve))
        .layer(DefaultBodyLimit::max(config.body_limit_bytes))
        .layer(CatchPanicLayer::new())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(config.request_timeout_seconds.max(1)),
        ))
        .layer(axum::middleware::from_fn(problem::refuse_control_characters))
        .layer(axum::middleware::map_response(problem::ensure_problem))
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(CompressionLayer::new())
        .layer(cors)
        .layer(TraceLayer::new_for_http().make_span_with(
            |request: &axum::http::Request<axum::body::Body>| {
                let id = request
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                // The path only: query strings may carry filters, never secrets,
                // but headers (Authorization) are never logged.
                tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
            },
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

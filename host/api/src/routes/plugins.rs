//! Provider plugins: list, publish, release from quarantine.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::Engine;
use rebound_runtime::{Plugin, PluginPackage};

use crate::ApiState;
use crate::auth::{Need, Principal};
use crate::problem::{Problem, ProblemDetails};
use crate::views::{PluginList, PluginView, PublishRequest};

fn view(p: &Plugin) -> PluginView {
    view_of(p, true)
}

fn view_of(p: &Plugin, active: bool) -> PluginView {
    let crashes = p.crash_status();
    PluginView {
        name: p.manifest.name.clone(),
        version: p.manifest.version.to_string(),
        platform: p.info.platform.clone(),
        sha256: p.digest.clone(),
        capabilities: p.manifest.capabilities.clone(),
        contract: p.contract().to_string(),
        egress: p.manifest.egress.iter().map(ToString::to_string).collect(),
        recent_crashes: crashes.recent_crashes,
        quarantined: crashes.quarantined,
        enabled: p.enabled(),
        active,
    }
}

/// Installed plugins with their crash status.
#[utoipa::path(get, path = "/api/v1/plugins", tag = "plugins",
    responses(
        (status = 200, body = PluginList),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn list_plugins(
    State(state): State<ApiState>,
    principal: Principal,
) -> Result<axum::Json<PluginList>, Problem> {
    principal.require(Need::Read)?;
    let items = state
        .runtime
        .iter()
        .flat_map(|r| r.list())
        .map(|p| view(&p))
        .collect();
    Ok(axum::Json(PluginList { items }))
}

/// Publish a plugin package (plugin-publisher): the host verifies its
/// digest, signature (against the trusted keys), contract version and
/// imports, then swaps it in atomically (running calls finish on the old
/// version) and keeps it in the store, where every host sharing it (and
/// this one's next start) loads it, verified against its own trusted
/// keys. The same version with another component is refused (409). A
/// refused package changes nothing.
#[utoipa::path(post, path = "/api/v1/plugins", tag = "plugins",
    request_body = PublishRequest,
    responses(
        (status = 201, body = PluginView, description = "verified, installed and active"),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn publish(
    State(state): State<ApiState>,
    principal: Principal,
    body: Body,
) -> Result<(StatusCode, axum::Json<PluginView>), Problem> {
    principal.require(Need::Publish)?;
    let bytes = axum::body::to_bytes(body, state.plugin_limit_bytes)
        .await
        .map_err(|_| {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the plugin package is larger than the host accepts (plugin_limit_bytes)",
            )
        })?;
    let request: PublishRequest = serde_json::from_slice(&bytes).map_err(|e| {
        let status = if e.is_data() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        Problem::new(status, format!("the package is not the expected JSON: {e}"))
            .kind("invalid-body")
    })?;
    let wasm = base64::engine::general_purpose::STANDARD
        .decode(request.wasm.trim())
        .map_err(|e| Problem::bad_request(format!("`wasm` is not base64: {e}")))?;
    let runtime = state.runtime.clone().ok_or_else(|| {
        Problem::new(
            StatusCode::CONFLICT,
            "this host runs no plugin runtime; publish to a host started by `rebound serve`",
        )
    })?;
    let package = PluginPackage {
        manifest: request.manifest,
        wasm,
        signature: request.signature,
    };
    let plugin: Arc<Plugin> = runtime.load(&package).await.map_err(|e| {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            .kind("plugin-refused")
            .title("plugin package refused")
    })?;
    // The store keeps it for every host (and this one's next start).
    let record = rebound_store::PluginPackageRecord {
        name: plugin.manifest.name.clone(),
        version: plugin.manifest.version.to_string(),
        sha256: plugin.digest.clone(),
        manifest: package.manifest,
        wasm: package.wasm,
        signature: package.signature,
        published_by: principal.name.clone(),
        published_at_ms: 0,
    };
    state.store.publish_plugin(&record, &principal.name).await?;
    runtime.install(plugin.clone());
    tracing::info!(plugin = %plugin.manifest.name, version = %plugin.manifest.version, principal = %principal.name, "plugin published");
    Ok((StatusCode::CREATED, axum::Json(view(&plugin))))
}

/// Lift a plugin's quarantine (admin), after a fix upstream.
#[utoipa::path(post, path = "/api/v1/plugins/{name}/release", tag = "plugins",
    params(("name" = String, Path)),
    responses(
        (status = 200, body = PluginView),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn release(
    State(state): State<ApiState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<axum::Json<PluginView>, Problem> {
    principal.require(Need::Administer)?;
    let plugin = state
        .runtime
        .as_ref()
        .and_then(|r| r.active(&name))
        .ok_or_else(|| {
            Problem::not_found(format!(
                "no plugin named '{name}' is installed; GET /api/v1/plugins lists them"
            ))
        })?;
    plugin.release();
    state
        .store
        .audit(
            &principal.name,
            "plugin.release",
            &name,
            serde_json::json!({}),
        )
        .await?;
    tracing::info!(plugin = %name, principal = %principal.name, "quarantine released");
    Ok(axum::Json(view(&plugin)))
}

fn installed(state: &ApiState, name: &str) -> Result<Arc<rebound_runtime::Runtime>, Problem> {
    let runtime = state.runtime.clone().ok_or_else(|| {
        Problem::new(
            StatusCode::CONFLICT,
            "this host runs no plugin runtime; manage plugins on a host started by `rebound serve`",
        )
    })?;
    if runtime.active(name).is_none() {
        return Err(Problem::not_found(format!(
            "no plugin named '{name}' is installed; GET /api/v1/plugins lists them"
        )));
    }
    Ok(runtime)
}

/// Every loaded version of a plugin, newest first, with the active one
/// marked.
#[utoipa::path(get, path = "/api/v1/plugins/{name}/versions", tag = "plugins",
    params(("name" = String, Path)),
    responses(
        (status = 200, body = PluginList),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn versions(
    State(state): State<ApiState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<axum::Json<PluginList>, Problem> {
    principal.require(Need::Read)?;
    let runtime = installed(&state, &name)?;
    let active = runtime.active(&name).map(|p| p.digest.clone());
    let items = runtime
        .versions(&name)
        .iter()
        .map(|p| view_of(p, Some(&p.digest) == active.as_ref()))
        .collect();
    Ok(axum::Json(PluginList { items }))
}

/// Make an earlier (or later) loaded version the active one (admin): a
/// rollback to a known good version. Runs already calling the plugin
/// finish on the version they started with.
#[utoipa::path(post, path = "/api/v1/plugins/{name}/versions/{version}/activate", tag = "plugins",
    params(("name" = String, Path), ("version" = String, Path, description = "a semantic version listed by GET .../versions")),
    responses(
        (status = 200, body = PluginView),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn activate(
    State(state): State<ApiState>,
    principal: Principal,
    Path((name, version)): Path<(String, String)>,
) -> Result<axum::Json<PluginView>, Problem> {
    principal.require(Need::Administer)?;
    let runtime = installed(&state, &name)?;
    let parsed = semver::Version::parse(&version).map_err(|e| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("'{version}' is not a semantic version: {e}"),
        )
    })?;
    // (Published through another host and not synced here yet: loaded
    // from the store now.)
    let loaded =
        rebound_engine::plugins::load_version(&state.store, &runtime, &name, &parsed).await?;
    if loaded.is_none() {
        return Err(Problem::not_found(format!(
            "plugin '{name}' has no version {version} loaded; GET /api/v1/plugins/{name}/versions lists them"
        )));
    }
    state
        .store
        .activate_plugin(&name, &parsed.to_string(), &principal.name)
        .await?;
    let plugin = runtime
        .activate(&name, &parsed)
        .ok_or_else(|| Problem::internal(&"the version vanished"))?;
    tracing::info!(plugin = %name, version = %parsed, principal = %principal.name, "plugin version activated");
    Ok(axum::Json(view(&plugin)))
}

async fn set_enabled(
    state: ApiState,
    principal: Principal,
    name: String,
    enabled: bool,
) -> Result<axum::Json<PluginView>, Problem> {
    principal.require(Need::Administer)?;
    let runtime = installed(&state, &name)?;
    state
        .store
        .set_plugin_enabled(&name, enabled, &principal.name)
        .await?;
    let plugin = runtime
        .set_enabled(&name, enabled)
        .ok_or_else(|| Problem::internal(&"the plugin vanished"))?;
    tracing::info!(plugin = %name, enabled, principal = %principal.name, "plugin enabled state changed");
    Ok(axum::Json(view(&plugin)))
}

/// Disable a plugin (admin): every call to any of its versions fails at
/// once with a message saying so, until it is enabled again; kept across
/// restarts.
#[utoipa::path(post, path = "/api/v1/plugins/{name}/disable", tag = "plugins",
    params(("name" = String, Path)),
    responses(
        (status = 200, body = PluginView),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn disable(
    State(state): State<ApiState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<axum::Json<PluginView>, Problem> {
    set_enabled(state, principal, name, false).await
}

/// Enable a disabled plugin again (admin).
#[utoipa::path(post, path = "/api/v1/plugins/{name}/enable", tag = "plugins",
    params(("name" = String, Path)),
    responses(
        (status = 200, body = PluginView),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn enable(
    State(state): State<ApiState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<axum::Json<PluginView>, Problem> {
    set_enabled(state, principal, name, true).await
}

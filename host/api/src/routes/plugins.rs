//! Provider plugins and the sites bound to them.

use axum::extract::{Path, State};

use crate::ApiState;
use crate::auth::{Need, Principal};
use crate::problem::{Problem, ProblemDetails};
use crate::views::{PluginList, PluginView, SiteList};

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
        .map(|p| {
            let crashes = p.crash_status();
            PluginView {
                name: p.manifest.name.clone(),
                version: p.manifest.version.to_string(),
                platform: p.info.platform.clone(),
                sha256: p.digest.clone(),
                capabilities: p.manifest.capabilities.clone(),
                egress: p.manifest.egress.iter().map(ToString::to_string).collect(),
                recent_crashes: crashes.recent_crashes,
                quarantined: crashes.quarantined,
            }
        })
        .collect();
    Ok(axum::Json(PluginList { items }))
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
    let crashes = plugin.crash_status();
    Ok(axum::Json(PluginView {
        name: plugin.manifest.name.clone(),
        version: plugin.manifest.version.to_string(),
        platform: plugin.info.platform.clone(),
        sha256: plugin.digest.clone(),
        capabilities: plugin.manifest.capabilities.clone(),
        egress: plugin
            .manifest
            .egress
            .iter()
            .map(ToString::to_string)
            .collect(),
        recent_crashes: crashes.recent_crashes,
        quarantined: crashes.quarantined,
    }))
}

/// Sites this host binds to plugins (from its sites file).
#[utoipa::path(get, path = "/api/v1/sites", tag = "plugins",
    responses(
        (status = 200, body = SiteList),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn list_sites(
    State(state): State<ApiState>,
    principal: Principal,
) -> Result<axum::Json<SiteList>, Problem> {
    principal.require(Need::Read)?;
    Ok(axum::Json(SiteList {
        items: state.sites.as_ref().clone(),
    }))
}

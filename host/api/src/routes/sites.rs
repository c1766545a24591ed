//! Sites: register one bound to a plugin (credentials write-only, sealed
//! at rest), list, read, delete, and ask its plugin for its health and its
//! workloads.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use rebound_engine::InventoryError;
use rebound_runtime::bindings::PowerState;
use rebound_store::SiteRecord;

use crate::ApiState;
use crate::auth::{Need, Principal};
use crate::extract::Json;
use crate::problem::{Problem, ProblemDetails};
use crate::sites::{SiteDefinition, SiteRegistry, Source, bind};
use crate::views::{
    SiteHealth, SiteList, SiteRequest, SiteSource, SiteView, WorkloadDisk, WorkloadList,
    WorkloadView,
};

fn registry(state: &ApiState) -> Result<Arc<SiteRegistry>, Problem> {
    state.registry.clone().ok_or_else(|| {
        Problem::new(
            StatusCode::CONFLICT,
            "this host runs no plugin runtime; register sites with a host started by `rebound serve`",
        )
    })
}

fn file_view(name: String, plugin: String) -> SiteView {
    SiteView {
        name,
        plugin,
        source: SiteSource::File,
        config: BTreeMap::new(),
        egress: Vec::new(),
        secrets: Vec::new(),
        ca: false,
        max_calls: None,
        revision: None,
        updated_by: None,
        updated_at_ms: None,
    }
}

fn record_view(record: SiteRecord) -> SiteView {
    SiteView {
        name: record.name,
        plugin: record.plugin,
        source: SiteSource::Api,
        config: record.config,
        egress: record.egress,
        secrets: record.secrets.into_keys().collect(),
        ca: record.ca_pem.is_some(),
        max_calls: record.max_calls.and_then(|n| u32::try_from(n).ok()),
        revision: Some(record.revision),
        updated_by: Some(record.updated_by),
        updated_at_ms: Some(record.updated_at_ms),
    }
}

fn unknown(name: &str) -> Problem {
    Problem::not_found(format!(
        "no site named '{name}' is registered; GET /api/v1/sites lists them"
    ))
}

/// Every site this host binds, in name order.
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
    let Some(registry) = state.registry.clone() else {
        return Ok(axum::Json(SiteList { items: Vec::new() }));
    };
    let mut stored: BTreeMap<String, SiteRecord> = state
        .store
        .sites()
        .await?
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();
    let items = registry
        .list()
        .into_iter()
        .map(
            |(name, plugin, source)| match (source, stored.remove(&name)) {
                (Source::Store { .. }, Some(record)) => record_view(record),
                _ => file_view(name, plugin),
            },
        )
        .collect();
    Ok(axum::Json(SiteList { items }))
}

/// One site.
#[utoipa::path(get, path = "/api/v1/sites/{name}", tag = "plugins",
    params(("name" = String, Path)),
    responses(
        (status = 200, body = SiteView),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn get_site(
    State(state): State<ApiState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<axum::Json<SiteView>, Problem> {
    principal.require(Need::Read)?;
    let registry = registry(&state)?;
    match registry.source(&name) {
        Some(Source::File) => {
            let plugin = registry
                .list()
                .into_iter()
                .find(|(n, ..)| *n == name)
                .map(|(_, p, _)| p)
                .unwrap_or_default();
            Ok(axum::Json(file_view(name, plugin)))
        }
        _ => {
            let record = state
                .store
                .site(&name)
                .await?
                .ok_or_else(|| unknown(&name))?;
            Ok(axum::Json(record_view(record)))
        }
    }
}

const MAX_SECRET: usize = 16 * 1024;

/// Register a site bound to an installed plugin, or replace its definition
/// (admin). The definition is checked and bound before anything is stored:
/// a refused one changes nothing. Credentials are sealed before they reach
/// the store and never come back in a response or a log.
#[utoipa::path(put, path = "/api/v1/sites/{name}", tag = "plugins",
    params(("name" = String, Path, description = "1-64 characters of a-z, 0-9, '-', '_' and '.'")),
    request_body = SiteRequest,
    responses(
        (status = 201, body = SiteView, description = "registered"),
        (status = 200, body = SiteView, description = "replaced"),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn put_site(
    State(state): State<ApiState>,
    principal: Principal,
    Path(name): Path<String>,
    Json(request): Json<SiteRequest>,
) -> Result<(StatusCode, axum::Json<SiteView>), Problem> {
    principal.require(Need::Administer)?;
    let registry = registry(&state)?;
    let invalid = |detail: String| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, detail);
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
    if !valid {
        return Err(invalid(format!(
            "site name '{name}' must be 1-64 characters of a-z, 0-9, '-', '_' and '.'"
        )));
    }
    if registry.source(&name) == Some(Source::File) {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            format!("site '{name}' is defined in the host's sites file; change it there"),
        ));
    }
    for (key, value) in request
        .config
        .iter()
        .chain(request.secrets.iter().flatten())
    {
        if key.is_empty() || key.len() > 64 || key.chars().any(|c| c.is_control()) {
            return Err(invalid(format!(
                "key '{}' must be 1-64 characters without control characters",
                key.escape_debug()
            )));
        }
        if value.len() > MAX_SECRET {
            return Err(invalid(format!(
                "the value of '{key}' is longer than {MAX_SECRET} bytes"
            )));
        }
    }
    let previous = state.store.site(&name).await?;
    let secrets = match (&request.secrets, &previous) {
        (Some(clear), _) => clear.clone(),
        (None, Some(old)) => {
            let mut clear = BTreeMap::new();
            for (key, sealed) in &old.secrets {
                let value = registry
                    .sealer
                    .open(&name, key, sealed)
                    .map_err(|e| Problem::new(StatusCode::CONFLICT, e.to_string()))?;
                clear.insert(key.clone(), value);
            }
            clear
        }
        (None, None) => BTreeMap::new(),
    };
    let definition = SiteDefinition {
        name: name.clone(),
        plugin: request.plugin.clone(),
        config: request.config.clone(),
        secrets,
        egress: request.egress.clone(),
        ca_pem: request.ca_pem.clone(),
        max_calls: request.max_calls.map(|n| n as usize),
    };
    bind(&registry.runtime, &definition)
        .map_err(|e| invalid(e.to_string()).kind("site-refused"))?;
    let sealed = definition
        .secrets
        .iter()
        .map(|(key, value)| (key.clone(), registry.sealer.seal(&name, key, value)))
        .collect();
    let record = state
        .store
        .put_site(
            &SiteRecord {
                name: name.clone(),
                plugin: definition.plugin,
                config: definition.config,
                egress: definition.egress,
                ca_pem: definition.ca_pem,
                max_calls: definition
                    .max_calls
                    .map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
                secrets: sealed,
                revision: 0,
                updated_at_ms: 0,
                updated_by: String::new(),
            },
            &principal.name,
        )
        .await?;
    registry
        .bind_record(&record)
        .map_err(|e| Problem::internal(&e))?;
    tracing::info!(site = %name, plugin = %record.plugin, principal = %principal.name, "site registered");
    let status = if previous.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, axum::Json(record_view(record))))
}

/// Delete a site registered through the API (admin); refused while a plan
/// names it.
#[utoipa::path(delete, path = "/api/v1/sites/{name}", tag = "plugins",
    params(("name" = String, Path)),
    responses(
        (status = 204, description = "deleted"),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn delete_site(
    State(state): State<ApiState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<StatusCode, Problem> {
    principal.require(Need::Administer)?;
    let registry = registry(&state)?;
    if registry.source(&name) == Some(Source::File) {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            format!("site '{name}' is defined in the host's sites file; remove it there"),
        ));
    }
    if !state.store.delete_site(&name, &principal.name).await? {
        return Err(unknown(&name));
    }
    registry.forget(&name);
    Ok(StatusCode::NO_CONTENT)
}

fn bound(state: &ApiState, name: &str) -> Result<Arc<SiteRegistry>, Problem> {
    let registry = registry(state)?;
    if registry.source(name).is_none() {
        return Err(unknown(name));
    }
    Ok(registry)
}

/// Refuse (409) asking a site whose plugin an operator disabled: the
/// site is not broken, the host was told not to call it.
fn serving(registry: &SiteRegistry, name: &str) -> Result<(), Problem> {
    match registry.steps.plugin(name) {
        Some(plugin) if !plugin.enabled() => Err(Problem::new(
            StatusCode::CONFLICT,
            format!(
                "site '{name}' is bound to plugin '{plugin}', which is disabled; enable it with \
                 `POST /api/v1/plugins/{plugin}/enable`",
                plugin = plugin.name()
            ),
        )
        .kind("plugin-disabled")),
        _ => Ok(()),
    }
}

/// Ask the site's plugin whether the site serves.
#[utoipa::path(get, path = "/api/v1/sites/{name}/health", tag = "plugins",
    params(("name" = String, Path)),
    responses(
        (status = 200, body = SiteHealth),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn site_health(
    State(state): State<ApiState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<axum::Json<SiteHealth>, Problem> {
    principal.require(Need::Read)?;
    let registry = bound(&state, &name)?;
    let health = match registry.steps.health(&name).await {
        Ok((serving, detail)) => SiteHealth { serving, detail },
        Err(e) => SiteHealth {
            serving: false,
            detail: e.to_string(),
        },
    };
    Ok(axum::Json(health))
}

/// The workloads the site's plugin discovers there (its inventory), to
/// pick a plan's workloads from.
#[utoipa::path(get, path = "/api/v1/sites/{name}/workloads", tag = "plugins",
    params(("name" = String, Path)),
    responses(
        (status = 200, body = WorkloadList),
        (status = 409, body = ProblemDetails, content_type = "application/problem+json", description = "the plugin refuses the site as configured (a missing setting, refused credentials): fix the site"),
        (status = 502, body = ProblemDetails, content_type = "application/problem+json", description = "the site's platform failed or could not be reached"),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn site_workloads(
    State(state): State<ApiState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<axum::Json<WorkloadList>, Problem> {
    principal.require(Need::Read)?;
    let registry = bound(&state, &name)?;
    serving(&registry, &name)?;
    let found = registry
        .steps
        .inventory(&name)
        .await
        .map_err(|e| inventory_problem(&name, &e))?;
    let items = found
        .into_iter()
        .map(|w| WorkloadView {
            id: w.id,
            name: w.spec.name,
            cpus: w.spec.cpus,
            memory_mib: w.spec.memory_mib,
            disks: w
                .spec
                .disks
                .into_iter()
                .map(|d| WorkloadDisk {
                    id: d.id,
                    name: d.name,
                    size_bytes: d.size_bytes,
                })
                .collect(),
            networks: w.spec.nics.into_iter().map(|n| n.network).collect(),
            labels: w.spec.labels.into_iter().collect(),
            power: match w.power {
                PowerState::Running => "running",
                PowerState::Stopped => "stopped",
                PowerState::Paused => "paused",
                PowerState::Unknown => "unknown",
            }
            .to_owned(),
        })
        .collect();
    Ok(axum::Json(WorkloadList { items }))
}

/// A failed inventory as a problem: the plugin refusing the site as it is
/// configured (a missing setting, refused credentials, a name the platform
/// does not know) is the site's to fix — 409 — while a platform that fails
/// or cannot be reached is a bad gateway.
fn inventory_problem(name: &str, error: &InventoryError) -> Problem {
    use rebound_runtime::bindings::ProviderError as P;
    let refused = match error {
        InventoryError::NotBound(_) => true,
        InventoryError::Call(e) => matches!(
            e.provider_error(),
            Some(P::InvalidRequest(_) | P::NotFound(_) | P::Unauthorized(_) | P::Unsupported(_))
        ),
    };
    if refused {
        Problem::new(
            StatusCode::CONFLICT,
            format!(
                "site '{name}' cannot list its workloads as it is configured: {error}; fix its \
                 config or secrets (PUT /api/v1/sites/{name})"
            ),
        )
        .kind("site-misconfigured")
    } else {
        Problem::new(
            StatusCode::BAD_GATEWAY,
            format!("site '{name}' could not list its workloads: {error}"),
        )
        .kind("site-unavailable")
    }
}

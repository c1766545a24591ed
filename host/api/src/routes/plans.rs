//! Protection plans: the same YAML/JSON documents the engine validates.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use rebound_domain::{Lifecycle, PlanDocument};
use rebound_engine::Forecast;

use crate::ApiState;
use crate::auth::{Need, Principal};
use crate::extract::Json;
use crate::problem::{FieldProblem, Problem, ProblemDetails};
use crate::views::{
    DryRunRequest, PageQuery, PlanPage, PlanView, RecoveryPointList, RecoveryPointView, next_cursor,
};

use super::FORECAST_PARALLELISM;

/// Protection plans in name order.
#[utoipa::path(get, path = "/api/v1/plans", tag = "plans",
    params(PageQuery),
    responses(
        (status = 200, body = PlanPage),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn list_plans(
    State(state): State<ApiState>,
    principal: Principal,
    Query(page): Query<PageQuery>,
) -> Result<axum::Json<PlanPage>, Problem> {
    principal.require(Need::Read)?;
    let limit = page.limit()?;
    let plans = state.store.plans_page(page.after.as_deref(), limit).await?;
    let next = next_cursor(&plans, limit, |p| p.document.name.clone());
    Ok(axum::Json(PlanPage {
        items: plans.iter().map(PlanView::from).collect(),
        next,
    }))
}

/// A plan with its lifecycle.
#[utoipa::path(get, path = "/api/v1/plans/{name}", tag = "plans",
    params(("name" = String, Path)),
    responses(
        (status = 200, body = PlanView),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn get_plan(
    State(state): State<ApiState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<axum::Json<PlanView>, Problem> {
    principal.require(Need::Read)?;
    Ok(axum::Json(PlanView::from(&state.store.plan(&name).await?)))
}

/// Create or update a plan (admin) from its document, YAML
/// (`application/yaml`) or JSON (`application/json`). A refused document
/// lists every problem by field and changes nothing.
#[utoipa::path(put, path = "/api/v1/plans/{name}", tag = "plans",
    params(("name" = String, Path, description = "must equal the document's `name`")),
    request_body(description = "the plan document (see docs/examples/plan.yaml)",
        content((Object = "application/json"), (String = "application/yaml"))),
    responses(
        (status = 200, body = PlanView, description = "updated"),
        (status = 201, body = PlanView, description = "created"),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn put_plan(
    State(state): State<ApiState>,
    principal: Principal,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<PlanView>), Problem> {
    principal.require(Need::Administer)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let text = std::str::from_utf8(&body)
        .map_err(|_| Problem::bad_request("the plan document is not UTF-8 text"))?;
    let document = match media {
        "application/json" => PlanDocument::from_json(text)?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => PlanDocument::from_yaml(text)?,
        _ => {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the plan with `Content-Type: application/yaml` or `application/json`",
            ));
        }
    };
    let document = checked(&state, &name, document).await?;
    let record = state.store.put_plan(&document, &principal.name).await?;
    let status = if record.revision == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(PlanView::from(&record))))
}

/// Delete a plan (admin): only an unprotected one with no run under way
/// (409 otherwise, saying to unprotect it first), so no copy of its
/// workloads is left behind unnamed. It is gone from every list and
/// lookup; its runs, events and audit entries stay. Applying its name
/// again makes a new plan.
#[utoipa::path(delete, path = "/api/v1/plans/{name}", tag = "plans",
    params(("name" = String, Path)),
    responses(
        (status = 204, description = "deleted"),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn delete_plan(
    State(state): State<ApiState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<StatusCode, Problem> {
    principal.require(Need::Administer)?;
    state.store.delete_plan(&name, &principal.name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A parsed plan document checked for what storing it needs: the URL's
/// name, and objectives and sites its plugins can meet.
async fn checked(
    state: &ApiState,
    name: &str,
    document: PlanDocument,
) -> Result<PlanDocument, Problem> {
    if document.name != name {
        let mut p = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "the document's name '{}' differs from the URL's '{name}'",
                document.name
            ),
        )
        .kind("invalid-plan")
        .title("plan document refused");
        p.errors = vec![FieldProblem {
            field: "name".into(),
            reason: format!("must be '{name}', as in the URL"),
        }];
        return Err(p);
    }
    // Impossible objectives and unknown sites are refused before storing
    // (DESIGN.md §6): the source site's plugin says how fine its recovery
    // points can be.
    if let Some(registry) = &state.registry {
        registry.steps.check_feasible(&document).await?;
    }
    Ok(document)
}

/// Preview a workflow: the exact steps and the RTO forecast, changing
/// nothing — of the saved plan, or of an edit sent as `plan` before it is
/// saved (a new plan too). Refused (409) when the plan's state does not
/// allow the workflow, and (422) when the edit would be refused on saving.
#[utoipa::path(post, path = "/api/v1/plans/{name}/dry-run", tag = "plans",
    params(("name" = String, Path)),
    request_body = DryRunRequest,
    responses(
        (status = 200, description = "the steps and the forecast", body = Forecast),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn dry_run(
    State(state): State<ApiState>,
    principal: Principal,
    Path(name): Path<String>,
    Json(request): Json<DryRunRequest>,
) -> Result<axum::Json<Forecast>, Problem> {
    principal.require(Need::Read)?;
    let workflow = request.workflow;
    let (document, lifecycle) = match request.plan {
        None => {
            let saved = state.store.plan(&name).await?;
            (saved.document, saved.lifecycle)
        }
        Some(edit) => {
            let edit = PlanDocument::from_json(&edit.to_string())?;
            let document = checked(&state, &name, edit).await?;
            let lifecycle = match state.store.plan(&name).await {
                Ok(saved) => saved.lifecycle,
                Err(rebound_store::StoreError::NotFound { .. }) => {
                    Lifecycle::new(&document.source, &document.target)
                }
                Err(e) => return Err(e.into()),
            };
            (document, lifecycle)
        }
    };
    let mut lifecycle = lifecycle;
    let mut started = lifecycle.clone();
    started
        .begin(workflow)
        .map_err(rebound_store::StoreError::from)?;
    if let Some(site) = &request.new_standby {
        super::runs::check_new_standby(&state, workflow, &document, &lifecycle.primary, site)
            .await?;
        started
            .retarget(site)
            .map_err(rebound_store::StoreError::from)?;
        lifecycle.standby.clone_from(site);
    }
    let forecast = rebound_engine::dry_run_of(
        &state.store,
        &document,
        &lifecycle,
        workflow,
        FORECAST_PARALLELISM,
    )
    .await?;
    Ok(axum::Json(forecast))
}

/// The plan's runbook: the round trip from where the plan stands
/// (failover, reprotect, failback, each from the state the one before
/// leaves), each workflow's steps stage by stage with expected durations,
/// its forecast against the phase's RTO objective and how to start it, and
/// where the plan stands now — as Markdown, written from the plan and its
/// measured runs at each request. Refused (409) while a run moves the plan
/// between states, and for an unprotected plan.
#[utoipa::path(get, path = "/api/v1/plans/{name}/runbook", tag = "plans",
    params(("name" = String, Path)),
    responses(
        (status = 200, description = "the runbook", body = rebound_engine::runbook::Runbook),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn runbook(
    State(state): State<ApiState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<axum::Json<rebound_engine::runbook::Runbook>, Problem> {
    principal.require(Need::Read)?;
    let book =
        rebound_engine::runbook::runbook(&state.store, &name, rebound_engine::now_ms()).await?;
    Ok(axum::Json(book))
}

/// A plan's recovery points, newest first.
#[utoipa::path(get, path = "/api/v1/plans/{name}/recovery-points", tag = "plans",
    params(("name" = String, Path)),
    responses(
        (status = 200, body = RecoveryPointList),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn recovery_points(
    State(state): State<ApiState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<axum::Json<RecoveryPointList>, Problem> {
    principal.require(Need::Read)?;
    state.store.plan(&name).await?;
    let items = state
        .store
        .recovery_points(&name)
        .await?
        .iter()
        .map(RecoveryPointView::from)
        .collect();
    Ok(axum::Json(RecoveryPointList { items }))
}

//! Runs: start a workflow (with an idempotency key), list, follow, approve,
//! cancel.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt, stream};
use rebound_domain::{PlanDocument, Workflow};
use rebound_store::{RunFilter, RunStatus, Store};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::ApiState;
use crate::auth::{Need, Principal};
use crate::extract::Json;
use crate::problem::{Problem, ProblemDetails};
use crate::views::{
    MAX_LIMIT, RunDetail, RunPage, RunView, StepView, WorkflowRequest, next_cursor,
};

const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Start a workflow on a plan (operator; `unprotect`, which removes
/// every recovery point of the plan, admin). A `permanent_failover` may
/// name a `new_standby`: the plan is then protected from where it serves
/// onto that site, not back onto the old primary. With an `Idempotency-Key`
/// header, repeating the request returns the run the first one started
/// (200, `Idempotent-Replayed: true`) and starts nothing. Refused (409,
/// naming the plan's current state) when the plan's lifecycle does not
/// allow the workflow now.
#[utoipa::path(post, path = "/api/v1/plans/{name}/runs", tag = "runs",
    params(
        ("name" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "1-200 visible ASCII characters; the same key returns the same run"),
    ),
    request_body = WorkflowRequest,
    responses(
        (status = 201, body = RunView, description = "started"),
        (status = 200, body = RunView, description = "the run this idempotency key started before"),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn trigger(
    State(state): State<ApiState>,
    principal: Principal,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(request): Json<WorkflowRequest>,
) -> Result<Response, Problem> {
    // Stopping protection removes every copy: the plans' owners' call.
    principal.require(match request.workflow {
        Workflow::Unprotect => Need::Administer,
        _ => Need::Operate,
    })?;
    let key = idempotency_key(&headers)?;
    // A new standby is checked once: a repeated request's was the first
    // time.
    let nothing_to_check = match (&request.new_standby, key) {
        (None, _) => true,
        (Some(_), Some(key)) => state.store.run_for_idempotency_key(key).await?.is_some(),
        (Some(_), None) => false,
    };
    if let (Some(site), false) = (&request.new_standby, nothing_to_check) {
        let plan = state.store.plan(&name).await?;
        check_new_standby(
            &state,
            request.workflow,
            &plan.document,
            &plan.lifecycle.primary,
            site,
        )
        .await?;
    }
    let started = rebound_engine::trigger_to(
        &state.store,
        &name,
        request.workflow,
        request.new_standby.as_deref(),
        key,
        &principal.name,
    )
    .await?;
    let view = RunView::from(&state.store.run_listing(&started.run.id).await?);
    let mut response = if started.replayed {
        (StatusCode::OK, axum::Json(view)).into_response()
    } else {
        (StatusCode::CREATED, axum::Json(view)).into_response()
    };
    if started.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Refuse a new standby the plan could not be protected onto, before
/// anything starts: 422 for another workflow than a permanent failover, a
/// site this host binds no plugin for, or one that cannot take the plan
/// from its primary (the checks a plan's sites get when it is applied:
/// native replication within one platform, application-consistent
/// snapshots, the primary's snapshot granularity); 409 for a site that does
/// not answer its plugin's health call now. A host without a plugin runtime
/// knows no sites and lets the plan's runs say. The primary itself is left
/// to the lifecycle's refusal.
pub(super) async fn check_new_standby(
    state: &ApiState,
    workflow: Workflow,
    document: &PlanDocument,
    primary: &str,
    site: &str,
) -> Result<(), Problem> {
    if workflow != Workflow::PermanentFailover {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("new_standby: only a permanent_failover takes a new standby, not a {workflow}"),
        ));
    }
    let Some(registry) = &state.registry else {
        return Ok(());
    };
    if registry.steps.plugin(site).is_none() {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "new_standby: no site named '{site}' is registered; GET /api/v1/sites lists them"
            ),
        ));
    }
    if site == primary {
        return Ok(());
    }
    let mut pair = document.clone();
    primary.clone_into(&mut pair.source);
    site.clone_into(&mut pair.target);
    if let Err(e) = registry.steps.check_feasible(&pair).await {
        let reasons: Vec<String> = e.fields().into_iter().map(|f| f.reason).collect();
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "new_standby: the plan cannot be protected from '{primary}' onto '{site}': {}",
                reasons.join("; ")
            ),
        ));
    }
    let detail = match registry.steps.health(site).await {
        Ok((true, _)) => return Ok(()),
        Ok((false, detail)) => detail,
        Err(e) => e.to_string(),
    };
    Err(Problem::new(
        StatusCode::CONFLICT,
        format!(
            "new_standby: site '{site}' does not answer ({detail}); a new standby must be \
             reachable before the plan is protected onto it — GET /api/v1/sites/{site}/health \
             checks it again"
        ),
    ))
}

/// The request's `Idempotency-Key`, when it has a valid one.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, Problem> {
    headers
        .get(IDEMPOTENCY_KEY)
        .map(|v| {
            v.to_str()
                .ok()
                .filter(|k| {
                    !k.is_empty() && k.len() <= 200 && k.bytes().all(|b| b.is_ascii_graphic())
                })
                .ok_or_else(|| {
                    Problem::bad_request(
                        "Idempotency-Key must be 1-200 visible ASCII characters (a UUID, say)",
                    )
                })
        })
        .transpose()
}

/// A site lost: fail over every plan it serves (operator), each plan its
/// own failover run — fences, tiers, gates and approvals as its plan says
/// — driven side by side. A plan that cannot fail over now (failed over
/// already, migrating, unprotected) is left as it is and listed in
/// `skipped` with the reason. With an `Idempotency-Key` header, repeating
/// the request returns the same runs (`replayed`) and starts nothing;
/// after an error, repeat it with the key to finish.
#[utoipa::path(post, path = "/api/v1/sites/{name}/failover", tag = "runs",
    params(
        ("name" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "1-200 visible ASCII characters; the same key returns the same runs"),
    ),
    responses(
        (status = 200, body = rebound_engine::SiteFailover, description = "the plans' failovers started (or started before under the key) and those left"),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn fail_over_site(
    State(state): State<ApiState>,
    principal: Principal,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<axum::Json<rebound_engine::SiteFailover>, Problem> {
    principal.require(Need::Operate)?;
    let key = idempotency_key(&headers)?;
    known_site(&state, &name).await?;
    let done = rebound_engine::fail_over_site(&state.store, &name, key, &principal.name).await?;
    Ok(axum::Json(done))
}

/// A site's failover previewed (any role): each plan whose primary is the
/// site, with its failover's dry-run (the steps and the expected RTO
/// against the failover RTO objective) or the refusal its failover would
/// get now. Nothing is stored.
#[utoipa::path(get, path = "/api/v1/sites/{name}/failover/dry-run", tag = "runs",
    params(("name" = String, Path)),
    responses(
        (status = 200, body = rebound_engine::SiteFailoverPreview, description = "each plan the site serves, previewed"),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn preview_site_failover(
    State(state): State<ApiState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<axum::Json<rebound_engine::SiteFailoverPreview>, Problem> {
    principal.require(Need::Read)?;
    known_site(&state, &name).await?;
    let preview =
        rebound_engine::preview_site_failover(&state.store, &name, super::FORECAST_PARALLELISM)
            .await?;
    Ok(axum::Json(preview))
}

/// Refuse (404) a site neither registered with this host nor named by a
/// plan (a lost site's plans may name one no longer registered).
async fn known_site(state: &ApiState, name: &str) -> Result<(), Problem> {
    let registered = state
        .registry
        .as_ref()
        .is_some_and(|r| r.steps.plugin(name).is_some());
    if registered
        || state
            .store
            .plans()
            .await?
            .iter()
            .any(|p| p.lifecycle.primary == name || p.lifecycle.standby == name)
    {
        return Ok(());
    }
    Err(Problem::not_found(format!(
        "no site named '{name}' is registered or named by a plan; GET /api/v1/sites lists them"
    )))
}

/// Which runs to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunQuery {
    /// Only this plan's runs.
    pub plan: Option<String>,
    /// `pending`, `running`, `waiting_approval`, `succeeded`, `failed` or `cancelled`.
    pub status: Option<String>,
    /// 1 to 500; 50 when absent.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
    /// The previous page's `next`.
    pub after: Option<String>,
}

/// Runs, newest first.
#[utoipa::path(get, path = "/api/v1/runs", tag = "runs",
    params(RunQuery),
    responses(
        (status = 200, body = RunPage),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn list_runs(
    State(state): State<ApiState>,
    principal: Principal,
    Query(query): Query<RunQuery>,
) -> Result<axum::Json<RunPage>, Problem> {
    principal.require(Need::Read)?;
    let limit = match query.limit {
        None => 50,
        Some(n @ 1..=MAX_LIMIT) => n,
        Some(n) => {
            return Err(Problem::bad_request(format!(
                "limit {n} is out of range; use 1 to {MAX_LIMIT}"
            )));
        }
    };
    let status = query
        .status
        .as_deref()
        .map(|s| {
            serde_json::from_value::<RunStatus>(serde_json::Value::String(s.to_owned())).map_err(|_| {
                Problem::bad_request(format!(
                    "status '{s}' is unknown; use pending, running, waiting_approval, succeeded, failed or cancelled"
                ))
            })
        })
        .transpose()?;
    let filter = RunFilter {
        plan: query.plan.as_deref(),
        status,
        after: query.after.as_deref(),
        limit,
    };
    let runs = state.store.runs_page(&filter).await.map_err(|e| match e {
        rebound_store::StoreError::NotFound { .. } => {
            Problem::bad_request("after names no run; pass the previous page's `next`")
        }
        e => e.into(),
    })?;
    let next = next_cursor(&runs, limit, |r| r.run.id.clone());
    Ok(axum::Json(RunPage {
        items: runs.iter().map(RunView::from).collect(),
        next,
    }))
}

/// A run with its steps and its report.
#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "runs",
    params(("id" = String, Path)),
    responses(
        (status = 200, body = RunDetail),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn get_run(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<RunDetail>, Problem> {
    principal.require(Need::Read)?;
    Ok(axum::Json(detail(&state.store, &id).await?))
}

async fn detail(store: &Store, id: &str) -> Result<RunDetail, Problem> {
    let run = store.run_listing(id).await?;
    let steps = store.steps(id).await?;
    let report = rebound_engine::report(store, id).await?;
    Ok(RunDetail {
        run: RunView::from(&run),
        steps: steps.iter().map(StepView::from).collect(),
        report,
        plugins: store.run_plugins(id).await?,
    })
}

/// Approve the run's next approval gate (operator); a run waiting at it
/// goes on.
#[utoipa::path(post, path = "/api/v1/runs/{id}/approve", tag = "runs",
    params(("id" = String, Path)),
    responses(
        (status = 200, body = RunDetail),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn approve(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<RunDetail>, Problem> {
    principal.require(Need::Operate)?;
    state.store.approve(&id, &principal.name).await?;
    Ok(axum::Json(detail(&state.store, &id).await?))
}

/// Cancel a run nobody is driving (pending, or waiting for approval)
/// (operator); a lifecycle run rolls its plan back to where it started.
#[utoipa::path(post, path = "/api/v1/runs/{id}/cancel", tag = "runs",
    params(("id" = String, Path)),
    responses(
        (status = 200, body = RunDetail),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn cancel(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<RunDetail>, Problem> {
    principal.require(Need::Operate)?;
    state.store.cancel_run(&id, &principal.name).await?;
    Ok(axum::Json(detail(&state.store, &id).await?))
}

/// A run's progress as server-sent events: `run` (the run, on start and
/// whenever its status changes), `step` (a step whenever it changes), and
/// a last `end` (the finished run) after which the stream closes.
#[utoipa::path(get, path = "/api/v1/runs/{id}/events", tag = "runs", operation_id = "run_events",
    params(("id" = String, Path)),
    responses(
        (status = 200, content_type = "text/event-stream", body = Object, description = "events `run`, `step`, `end`, each a JSON object"),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn events(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    principal.require(Need::Read)?;
    state.store.run(&id).await?;
    let follow = Follow {
        store: state.store.clone(),
        run: id,
        every: state.events_poll,
        first: true,
        done: false,
        status: None,
        steps: Vec::new(),
    };
    let stream = stream::unfold(follow, |mut f| async move {
        if f.done {
            return None;
        }
        if !f.first {
            tokio::time::sleep(f.every).await;
        }
        f.first = false;
        let events = f.poll().await;
        Some((events, f))
    })
    .flat_map(|events| stream::iter(events.into_iter().map(Ok)));
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

struct Follow {
    store: Store,
    run: String,
    every: Duration,
    first: bool,
    done: bool,
    status: Option<String>,
    steps: Vec<StepView>,
}

fn event(name: &str, data: &impl serde::Serialize) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|_| Event::default().event(name))
}

impl Follow {
    /// What changed since the last look.
    async fn poll(&mut self) -> Vec<Event> {
        let (run, steps) = match (
            self.store.run_listing(&self.run).await,
            self.store.steps(&self.run).await,
        ) {
            (Ok(run), Ok(steps)) => (run, steps),
            (Err(e), _) | (_, Err(e)) => {
                self.done = true;
                tracing::error!(run = %self.run, "following a run: {e}");
                return vec![event(
                    "error",
                    &serde_json::json!({"detail": "the host could not read the run; reconnect to resume"}),
                )];
            }
        };
        let mut out = Vec::new();
        let view = RunView::from(&run);
        if self.status.as_deref() != Some(view.status.as_str()) {
            self.status = Some(view.status.clone());
            out.push(event("run", &view));
        }
        for step in steps.iter().map(StepView::from) {
            let seen = self.steps.iter().find(|s| s.seq == step.seq);
            if seen != Some(&step) {
                out.push(event("step", &step));
            }
        }
        self.steps = steps.iter().map(StepView::from).collect();
        if matches!(
            run.run.status,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
        ) {
            self.done = true;
            out.push(event("end", &view));
        }
        out
    }
}

//! Compliance, events and the audit log.

use axum::extract::{Query, State};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::ApiState;
use crate::auth::{Need, Principal};
use crate::problem::{Problem, ProblemDetails};
use crate::views::{
    AuditPage, AuditView, ComplianceList, EventPage, EventView, PageQuery, next_cursor,
};

/// Which plans' compliance.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PlanQuery {
    /// Only this plan.
    pub plan: Option<String>,
}

/// Where each plan stands against its phase's objectives now: RPO lag and
/// RTO forecast.
#[utoipa::path(get, path = "/api/v1/compliance", tag = "observe",
    params(PlanQuery),
    responses(
        (status = 200, body = ComplianceList),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn compliance(
    State(state): State<ApiState>,
    principal: Principal,
    Query(query): Query<PlanQuery>,
) -> Result<axum::Json<ComplianceList>, Problem> {
    principal.require(Need::Read)?;
    let plans = match &query.plan {
        Some(name) => vec![state.store.plan(name).await?],
        None => state.store.plans().await?,
    };
    let now = rebound_engine::now_ms();
    let items = rebound_engine::policy::compliance_of(&state.store, &plans, now).await?;
    Ok(axum::Json(ComplianceList { items }))
}

/// Which events.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Only this plan's events.
    pub plan: Option<String>,
    /// 1 to 500; 50 when absent.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
    /// The previous page's `next`.
    pub after: Option<String>,
}

/// What the policy engine observed (objectives breached or met,
/// replication scheduled), newest first.
#[utoipa::path(get, path = "/api/v1/events", tag = "observe",
    params(EventQuery),
    responses(
        (status = 200, body = EventPage),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn events(
    State(state): State<ApiState>,
    principal: Principal,
    Query(query): Query<EventQuery>,
) -> Result<axum::Json<EventPage>, Problem> {
    principal.require(Need::Read)?;
    let page = PageQuery {
        limit: query.limit,
        after: query.after,
    };
    let limit = page.limit()?;
    let events = state
        .store
        .events_page(query.plan.as_deref(), page.after_id()?, limit)
        .await?;
    let next = next_cursor(&events, limit, |e| e.id.to_string());
    Ok(axum::Json(EventPage {
        items: events.iter().map(EventView::from).collect(),
        next,
    }))
}

/// The audit log, newest first (admin): every change with its principal.
#[utoipa::path(get, path = "/api/v1/audit", tag = "observe",
    params(PageQuery),
    responses(
        (status = 200, body = AuditPage),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn audit(
    State(state): State<ApiState>,
    principal: Principal,
    Query(page): Query<PageQuery>,
) -> Result<axum::Json<AuditPage>, Problem> {
    principal.require(Need::Administer)?;
    let limit = page.limit()?;
    let entries = state.store.audit_page(page.after_id()?, limit).await?;
    let next = next_cursor(&entries, limit, |e| e.id.to_string());
    Ok(axum::Json(AuditPage {
        items: entries.iter().map(AuditView::from).collect(),
        next,
    }))
}

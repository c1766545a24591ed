//! RFC 9457 problem details: every error the API answers, as
//! `application/problem+json`, with a detail a person can act on.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rebound_engine::EngineError;
use rebound_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

pub const CONTENT_TYPE: &str = "application/problem+json";

/// One problem with one field of the request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldProblem {
    /// Dotted path, e.g. `objectives.failback.rpo`.
    pub field: String,
    pub reason: String,
}

/// An error, as RFC 9457 problem details.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDetails {
    /// A URI naming the kind of problem (`about:blank` when the status
    /// says it all).
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// What happened and what to do next.
    pub detail: String,
    /// Field-level problems of a refused document.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldProblem>,
    /// The plan's state when a workflow was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_state: Option<String>,
    /// Seconds to wait, sent as `Retry-After` (a 429), not in the body.
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

/// An error the API answers with (boxed: errors travel far, small).
#[derive(Debug, Clone)]
pub struct Problem(pub Box<ProblemDetails>);

impl std::ops::Deref for Problem {
    type Target = ProblemDetails;
    fn deref(&self) -> &ProblemDetails {
        &self.0
    }
}

impl std::ops::DerefMut for Problem {
    fn deref_mut(&mut self) -> &mut ProblemDetails {
        &mut self.0
    }
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self(Box::new(ProblemDetails {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            current_state: None,
            retry_after: None,
        }))
    }

    pub fn kind(mut self, kind: &str) -> Self {
        self.kind = format!("https://rebound.dev/problems/{kind}");
        self
    }

    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, detail).kind("unauthenticated")
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, detail).kind("forbidden")
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// An internal failure: the cause is logged, the client gets no
    /// internals.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!("internal error: {cause}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the host failed to complete the request; its log has the cause",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_vec(&*self.0).unwrap_or_default();
        let mut response = (status, Body::from(body)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => Self::not_found(e.to_string()).kind("not-found"),
            StoreError::Conflict(_) => {
                Self::new(StatusCode::CONFLICT, e.to_string()).kind("conflict")
            }
            StoreError::Transition(t) => {
                let mut p = Self::new(StatusCode::CONFLICT, t.to_string())
                    .kind("illegal-transition")
                    .title("workflow not allowed in the plan's current state");
                p.current_state = Some(t.state.to_string());
                p
            }
            StoreError::Plan(plan) => {
                let mut p = Self::new(StatusCode::UNPROCESSABLE_ENTITY, plan.to_string())
                    .kind("invalid-plan")
                    .title("plan document refused");
                p.errors = plan
                    .fields()
                    .into_iter()
                    .map(|f| FieldProblem {
                        field: f.field,
                        reason: f.reason,
                    })
                    .collect();
                p
            }
            StoreError::Database(_) | StoreError::Corrupt { .. } | StoreError::MigrationLock(_) => {
                Self::internal(&e)
            }
        }
    }
}

impl From<EngineError> for Problem {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Store(e) => e.into(),
        }
    }
}

impl From<rebound_domain::PlanError> for Problem {
    fn from(e: rebound_domain::PlanError) -> Self {
        StoreError::Plan(e).into()
    }
}

/// Refuse URLs with control characters (a NUL in an id, say) before any
/// handler sees them: no id or filter contains one, and PostgreSQL would
/// refuse them as text.
pub async fn refuse_control_characters(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let uri = request.uri();
    let encoded = uri.path_and_query().map_or("", |pq| pq.as_str());
    let decoded = percent_decoded(encoded);
    if decoded.iter().any(|b| b.is_ascii_control()) {
        return Problem::bad_request(
            "the URL contains control characters (such as %00); ids and filters are printable text",
        )
        .into_response();
    }
    next.run(request).await
}

fn percent_decoded(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(u8::try_from(h * 16 + l).unwrap_or(0));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// Text a person typed into a name: no control characters, bounded.
pub fn check_name(what: &str, text: &str) -> Result<(), Problem> {
    if text.is_empty() || text.len() > 200 || text.chars().any(char::is_control) {
        Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{what} must be 1-200 characters without control characters"),
        ))
    } else {
        Ok(())
    }
}

/// Any error response the handlers did not shape themselves (axum's
/// rejections of malformed JSON, wrong types, unknown fields, oversized
/// bodies, bad paths; unknown routes; wrong methods) becomes problem+json,
/// its text the detail.
pub async fn ensure_problem(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(CONTENT_TYPE.as_bytes()));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let detail = match (status, text.is_empty()) {
        (StatusCode::NOT_FOUND, true) => "no such endpoint; see /api/v1/openapi.json".to_owned(),
        (StatusCode::METHOD_NOT_ALLOWED, _) => {
            "this endpoint does not accept that method; see /api/v1/openapi.json".to_owned()
        }
        (StatusCode::PAYLOAD_TOO_LARGE, _) => {
            "the request body is larger than the host accepts (body_limit_bytes)".to_owned()
        }
        (StatusCode::REQUEST_TIMEOUT, _) => {
            "the request took longer than the host allows; retry".to_owned()
        }
        (_, true) => status.canonical_reason().unwrap_or("error").to_owned(),
        (_, false) => text,
    };
    let mut out = Problem::new(status, detail).into_response();
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(v) = parts.headers.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}

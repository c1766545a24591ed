//! Logging in, who am I, and API tokens.

use axum::extract::{Path, State};
use axum::http::StatusCode;

use crate::ApiState;
use crate::auth::{IssuedToken, Need, Principal};
use crate::extract::Json;
use crate::problem::{Problem, ProblemDetails};
use crate::views::{CreatedToken, LoginRequest, TokenList, TokenRequest, TokenView};

/// Exchange a local user's password for a bearer token.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", security(()),
    request_body = LoginRequest,
    responses(
        (status = 200, body = IssuedToken, description = "a bearer token"),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn login(
    State(state): State<ApiState>,
    Json(request): Json<LoginRequest>,
) -> Result<axum::Json<IssuedToken>, Problem> {
    crate::problem::check_name("username", &request.username)?;
    match state
        .auth
        .login(&state.store, &request.username, &request.password)
        .await
    {
        Ok((token, principal)) => {
            state
                .store
                .audit(
                    &principal.name,
                    "auth.login",
                    &principal.name,
                    serde_json::json!({}),
                )
                .await?;
            Ok(axum::Json(token))
        }
        Err(problem) => {
            if problem.status == 401 {
                state
                    .store
                    .audit(
                        "anonymous",
                        "auth.login.refused",
                        &format!("user:{}", request.username),
                        serde_json::json!({}),
                    )
                    .await?;
            }
            Err(problem)
        }
    }
}

/// The caller's principal and role.
#[utoipa::path(get, path = "/api/v1/auth/whoami", tag = "auth",
    responses(
        (status = 200, body = Principal),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn whoami(principal: Principal) -> axum::Json<Principal> {
    axum::Json(principal)
}

/// API tokens (admin).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "auth",
    responses(
        (status = 200, body = TokenList),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn list_tokens(
    State(state): State<ApiState>,
    principal: Principal,
) -> Result<axum::Json<TokenList>, Problem> {
    principal.require(Need::Administer)?;
    let items = state
        .store
        .tokens()
        .await?
        .iter()
        .map(TokenView::from)
        .collect();
    Ok(axum::Json(TokenList { items }))
}

/// Create a scoped API token (admin); its secret is in this response only.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "auth",
    request_body = TokenRequest,
    responses(
        (status = 201, body = CreatedToken),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn create_token(
    State(state): State<ApiState>,
    principal: Principal,
    Json(request): Json<TokenRequest>,
) -> Result<(StatusCode, axum::Json<CreatedToken>), Problem> {
    principal.require(Need::Administer)?;
    let name = request.name.trim();
    crate::problem::check_name("the token's name (what it is for)", name)?;
    let (record, secret) = state
        .auth
        .create_token(&state.store, name, request.role, &principal)
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedToken {
            view: TokenView::from(&record),
            token: secret,
        }),
    ))
}

/// Revoke an API token (admin); it stops working at once.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "auth",
    params(("id" = String, Path, description = "the token's id (`tok-…`)")),
    responses(
        (status = 204, description = "revoked"),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn revoke_token(
    State(state): State<ApiState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    principal.require(Need::Administer)?;
    state.store.revoke_token(&id, &principal.name).await?;
    Ok(StatusCode::NO_CONTENT)
}

//! Logging in, who am I, and API tokens.

use axum::extract::{Path, State};
use axum::http::StatusCode;

use crate::ApiState;
use crate::auth::{IssuedToken, Need, Principal};
use crate::extract::Json;
use crate::problem::{Problem, ProblemDetails};
use crate::sign_in::{OidcCodeRequest, OidcDeviceRequest, OidcRefreshRequest};
use crate::views::{
    CreatedToken, LoginRequest, PasswordRequest, SignInProviders, TokenList, TokenRequest,
    TokenView, UserList, UserRequest, UserView,
};

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
    let signed_in = state
        .auth
        .login(&state.store, &request.username, &request.password)
        .await;
    audit_sign_in(
        &state,
        "auth.login",
        signed_in,
        &format!("user:{}", request.username),
        serde_json::json!({}),
    )
    .await
}

/// Audit a sign-in: `action` (`auth.login`, `auth.refresh`) by the
/// principal, or — when refused as unauthenticated or forbidden —
/// `{action}.refused` of `target` by `anonymous`, with `detail` (never a
/// secret) and the refusal's reason.
async fn audit_sign_in(
    state: &ApiState,
    action: &str,
    signed_in: Result<(IssuedToken, Principal), Problem>,
    target: &str,
    detail: serde_json::Value,
) -> Result<axum::Json<IssuedToken>, Problem> {
    match signed_in {
        Ok((token, principal)) => {
            state
                .store
                .audit(&principal.name, action, &principal.name, detail)
                .await?;
            Ok(axum::Json(token))
        }
        Err(problem) => {
            if matches!(problem.status, 401 | 403 | 429) {
                let mut detail = detail;
                detail["reason"] = serde_json::json!(problem.detail);
                state
                    .store
                    .audit("anonymous", &format!("{action}.refused"), target, detail)
                    .await?;
            }
            Err(problem)
        }
    }
}

/// The OIDC issuers the web UI offers sign-in with (authorization code
/// with PKCE): where to send the browser, with which client id and scopes.
#[utoipa::path(get, path = "/api/v1/auth/providers", tag = "auth", security(()),
    responses(
        (status = 200, body = SignInProviders),
    ))]
pub async fn providers(State(state): State<ApiState>) -> axum::Json<SignInProviders> {
    axum::Json(SignInProviders {
        providers: state.auth.providers().to_vec(),
    })
}

/// Redeem the authorization code an OIDC issuer returned to the web UI,
/// with the PKCE verifier, for the issuer's access token — checked as
/// every bearer token is, so one this host would refuse is refused here.
#[utoipa::path(post, path = "/api/v1/auth/oidc", tag = "auth", security(()),
    request_body = OidcCodeRequest,
    responses(
        (status = 200, body = IssuedToken, description = "the issuer's access token, to send as a bearer token"),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
        (status = 502, body = ProblemDetails, content_type = "application/problem+json", description = "the issuer did not answer"),
    ))]
pub async fn sign_in_with_code(
    State(state): State<ApiState>,
    Json(request): Json<OidcCodeRequest>,
) -> Result<axum::Json<IssuedToken>, Problem> {
    let signed_in = state.auth.sign_in_with_code(&request).await;
    audit_sign_in(
        &state,
        "auth.login",
        signed_in,
        &format!("oidc:{}", request.issuer),
        serde_json::json!({"issuer": request.issuer}),
    )
    .await
}

/// Redeem the device code of a device authorization (RFC 8628) for the
/// issuer's access token, once the user has approved the device at the
/// issuer — checked as every bearer token is. Until then it answers 400
/// `authorization-pending` (or `slow-down`): ask again after the interval
/// the issuer gave. `rebound login --oidc --device` polls it.
#[utoipa::path(post, path = "/api/v1/auth/oidc/device", tag = "auth", security(()),
    request_body = OidcDeviceRequest,
    responses(
        (status = 200, body = IssuedToken, description = "the issuer's access token, to send as a bearer token"),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused, or not approved yet (`authorization-pending`, `slow-down`)"),
        (status = 502, body = ProblemDetails, content_type = "application/problem+json", description = "the issuer did not answer"),
    ))]
pub async fn sign_in_with_device_code(
    State(state): State<ApiState>,
    Json(request): Json<OidcDeviceRequest>,
) -> Result<axum::Json<IssuedToken>, Problem> {
    let signed_in = state.auth.sign_in_with_device_code(&request).await;
    audit_sign_in(
        &state,
        "auth.login",
        signed_in,
        &format!("oidc:{}", request.issuer),
        serde_json::json!({"issuer": request.issuer, "grant": "device_code"}),
    )
    .await
}

/// Trade the refresh token of an OIDC sign-in for a new access token (and
/// the refresh token that replaces it), checked as at sign-in — the web UI
/// calls it before its access token expires, so a session lasts as long as
/// the issuer's.
#[utoipa::path(post, path = "/api/v1/auth/oidc/refresh", tag = "auth", security(()),
    request_body = OidcRefreshRequest,
    responses(
        (status = 200, body = IssuedToken, description = "the issuer's new access token"),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused: sign in again"),
        (status = 502, body = ProblemDetails, content_type = "application/problem+json", description = "the issuer did not answer"),
    ))]
pub async fn refresh_sign_in(
    State(state): State<ApiState>,
    Json(request): Json<OidcRefreshRequest>,
) -> Result<axum::Json<IssuedToken>, Problem> {
    let signed_in = state.auth.refresh_sign_in(&request).await;
    audit_sign_in(
        &state,
        "auth.refresh",
        signed_in,
        &format!("oidc:{}", request.issuer),
        serde_json::json!({"issuer": request.issuer}),
    )
    .await
}

/// Renew a local sign-in before its token expires: a new token for the
/// caller, a local user, checked as every call's token is and counting from
/// the same sign-in — refused once that is older than
/// `session_max_seconds`. (OIDC sign-ins are renewed with
/// `POST /api/v1/auth/oidc/refresh`; API tokens do not expire.)
#[utoipa::path(post, path = "/api/v1/auth/renew", tag = "auth",
    responses(
        (status = 200, body = IssuedToken, description = "a new token for the same sign-in"),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused: sign in again"),
    ))]
pub async fn renew(
    State(state): State<ApiState>,
    headers: axum::http::HeaderMap,
) -> Result<axum::Json<IssuedToken>, Problem> {
    let authorization = crate::extract::authorization(&headers)?;
    let (token, principal) = state.auth.renew(&state.store, authorization).await?;
    state
        .store
        .audit(
            &principal.name,
            "auth.renew",
            &principal.name,
            serde_json::json!({}),
        )
        .await?;
    Ok(axum::Json(token))
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

const MIN_PASSWORD: usize = 12;

fn check_password(password: &str) -> Result<(), Problem> {
    if password.chars().count() < MIN_PASSWORD || password.len() > 1024 {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("a password has {MIN_PASSWORD} to 1024 characters"),
        ));
    }
    Ok(())
}

async fn hash(password: String) -> Result<String, Problem> {
    tokio::task::spawn_blocking(move || crate::auth::hash_password(&password))
        .await
        .map_err(|e| Problem::internal(&e))?
        .map_err(|e| Problem::internal(&e))
}

/// Create a local user, or replace its password and role (admin).
#[utoipa::path(put, path = "/api/v1/users/{name}", tag = "auth",
    params(("name" = String, Path, description = "1-64 characters of a-z, 0-9, '-', '_' and '.'")),
    request_body = UserRequest,
    responses(
        (status = 204, description = "stored"),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn put_user(
    State(state): State<ApiState>,
    principal: Principal,
    Path(name): Path<String>,
    Json(request): Json<UserRequest>,
) -> Result<StatusCode, Problem> {
    principal.require(Need::Administer)?;
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
    if !valid {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("user name '{name}' must be 1-64 characters of a-z, 0-9, '-', '_' and '.'"),
        ));
    }
    check_password(&request.password)?;
    let user = rebound_store::UserRecord {
        name,
        password_hash: hash(request.password).await?,
        role: request.role.as_str().to_owned(),
    };
    state.store.put_user(&user, &principal.name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The local users and their roles (admin).
#[utoipa::path(get, path = "/api/v1/users", tag = "auth",
    responses(
        (status = 200, body = UserList),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn list_users(
    State(state): State<ApiState>,
    principal: Principal,
) -> Result<axum::Json<UserList>, Problem> {
    principal.require(Need::Administer)?;
    let items = state
        .store
        .users()
        .await?
        .into_iter()
        .map(|u| {
            Ok(UserView {
                role: u.role.parse().map_err(|e| Problem::internal(&e))?,
                name: u.name,
                created_at_ms: u.created_at_ms,
            })
        })
        .collect::<Result<_, Problem>>()?;
    Ok(axum::Json(UserList { items }))
}

/// Remove a local user (admin); its tokens stop working at once. The only
/// admin cannot be removed.
#[utoipa::path(delete, path = "/api/v1/users/{name}", tag = "auth",
    params(("name" = String, Path, description = "the user's name")),
    responses(
        (status = 204, description = "removed"),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn delete_user(
    State(state): State<ApiState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<StatusCode, Problem> {
    principal.require(Need::Administer)?;
    state.store.delete_user(&name, &principal.name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Change the caller's own password (local users).
#[utoipa::path(post, path = "/api/v1/auth/password", tag = "auth",
    request_body = PasswordRequest,
    responses(
        (status = 204, description = "changed"),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json", description = "refused"),
    ))]
pub async fn change_password(
    State(state): State<ApiState>,
    principal: Principal,
    Json(request): Json<PasswordRequest>,
) -> Result<StatusCode, Problem> {
    let Some(name) = principal.name.strip_prefix("user:") else {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            format!(
                "{} is not a local user; it has no password here",
                principal.name
            ),
        ));
    };
    check_password(&request.new)?;
    // The current password proves it is the user, not a stolen token.
    let (_, verified) = state
        .auth
        .login(&state.store, name, &request.current)
        .await
        .map_err(|p| match p.status {
            // Too many failures: the wait, not a verdict on the password.
            429 => p,
            _ => Problem::forbidden("the current password is wrong"),
        })?;
    let role = state
        .store
        .user(name)
        .await?
        .map(|u| u.role)
        .unwrap_or_else(|| verified.role.as_str().to_owned());
    let user = rebound_store::UserRecord {
        name: name.to_owned(),
        password_hash: hash(request.new).await?,
        role,
    };
    state.store.put_user(&user, &principal.name).await?;
    Ok(StatusCode::NO_CONTENT)
}

//! Browser sign-in through an OIDC issuer: the authorization code flow with
//! PKCE (RFC 7636) for the web UI, a public client. At start the host reads
//! each sign-in issuer's discovery document (`/.well-known/openid-
//! configuration`: its authorization and token endpoints); the UI sends the
//! browser to the authorization endpoint with a code challenge it keeps,
//! and on the way back hands the code and its verifier to the host, which
//! redeems them at the token endpoint and checks the access token exactly
//! as it checks every bearer token — so a token this host would refuse is
//! refused at sign-in, with the reason, not on the next call.

use std::time::Duration;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{AuthSetupError, OidcIssuer};
use crate::problem::Problem;

/// An issuer the web UI offers a "Sign in with …" button for.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SignInProvider {
    /// The issuer (`iss`); names the provider in `POST /api/v1/auth/oidc`.
    pub issuer: String,
    /// The button's label.
    pub name: String,
    /// Where the browser is sent with the authorization request.
    pub authorization_endpoint: String,
    /// The web UI's client id at the issuer.
    pub client_id: String,
    /// The scopes to ask for.
    pub scope: String,
    /// Where the browser is sent to end its session at the provider when
    /// it signs out of Rebound (RP-initiated logout), if the provider has
    /// one; without it, signing out leaves the provider's session.
    pub end_session_endpoint: Option<String>,
    /// Where a device without a browser asks for a user code (the device
    /// authorization grant, RFC 8628: `rebound login --oidc --device`), if
    /// the provider offers it; the code it answers is redeemed with
    /// `POST /api/v1/auth/oidc/device`.
    pub device_authorization_endpoint: Option<String>,
    #[serde(skip)]
    pub(crate) token_endpoint: String,
}

/// Read an issuer's discovery document; `None` when the issuer is not set
/// up for browser sign-in (no `client_id`).
pub(crate) async fn discover(
    client: &reqwest::Client,
    config: &OidcIssuer,
) -> Result<Option<SignInProvider>, AuthSetupError> {
    let Some(client_id) = config.client_id.clone() else {
        return Ok(None);
    };
    let fail = |reason: String| AuthSetupError::Oidc {
        issuer: config.issuer.clone(),
        reason,
    };
    let url = format!(
        "{}/.well-known/openid-configuration",
        config.issuer.trim_end_matches('/')
    );
    let document: serde_json::Value = client
        .get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| fail(format!("fetching {url}: {e}")))?
        .json()
        .await
        .map_err(|e| fail(format!("{url} is not a discovery document: {e}")))?;
    if document["issuer"].as_str() != Some(config.issuer.as_str()) {
        return Err(fail(format!(
            "{url} names issuer {}, not this one; set `issuer` to exactly what the provider publishes",
            document["issuer"]
        )));
    }
    let endpoint = |name: &str| {
        document[name]
            .as_str()
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .map(str::to_owned)
            .ok_or_else(|| fail(format!("{url} has no `{name}`")))
    };
    if let Some(methods) = document["code_challenge_methods_supported"].as_array()
        && !methods.iter().any(|m| m == "S256")
    {
        return Err(fail(
            "the provider does not support PKCE with S256, which browser sign-in needs".into(),
        ));
    }
    let name = config.name.clone().unwrap_or_else(|| {
        config
            .issuer
            .split("://")
            .nth(1)
            .unwrap_or(&config.issuer)
            .trim_end_matches('/')
            .to_owned()
    });
    Ok(Some(SignInProvider {
        issuer: config.issuer.clone(),
        name,
        authorization_endpoint: endpoint("authorization_endpoint")?,
        client_id,
        scope: config.scope.clone(),
        end_session_endpoint: endpoint("end_session_endpoint").ok(),
        device_authorization_endpoint: endpoint("device_authorization_endpoint").ok(),
        token_endpoint: endpoint("token_endpoint")?,
    }))
}

/// The code the issuer returned to the web UI, to redeem for a token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OidcCodeRequest {
    /// The provider's issuer, as `GET /api/v1/auth/providers` lists it.
    pub issuer: String,
    /// The `code` of the redirect back to the UI.
    pub code: String,
    /// The PKCE verifier whose challenge the authorization request sent
    /// (43–128 characters of `A-Z a-z 0-9 - . _ ~`).
    pub code_verifier: String,
    /// The `redirect_uri` of the authorization request, exactly.
    pub redirect_uri: String,
}

impl OidcCodeRequest {
    /// Refuse malformed fields before anything is sent to the issuer.
    pub(crate) fn check(&self) -> Result<(), Problem> {
        let unreserved = |c: char| c.is_ascii_alphanumeric() || "-._~".contains(c);
        if !(43..=128).contains(&self.code_verifier.len())
            || !self.code_verifier.chars().all(unreserved)
        {
            return Err(Problem::bad_request(
                "`code_verifier` must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~ (RFC 7636)",
            ));
        }
        if self.code.is_empty() || self.code.len() > 4096 || self.code.chars().any(char::is_control)
        {
            return Err(Problem::bad_request(
                "`code` must be the authorization code the issuer returned (1 to 4096 characters)",
            ));
        }
        let absolute =
            self.redirect_uri.starts_with("https://") || self.redirect_uri.starts_with("http://");
        if !absolute || self.redirect_uri.len() > 2048 {
            return Err(Problem::bad_request(
                "`redirect_uri` must be the absolute http(s) URL the authorization request named",
            ));
        }
        Ok(())
    }
}

/// A refresh token the issuer gave with an earlier sign-in, to trade for a
/// new access token before the one the web UI holds expires.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OidcRefreshRequest {
    /// The provider's issuer, as `GET /api/v1/auth/providers` lists it.
    pub issuer: String,
    /// The `refresh_token` of the sign-in's (or the last refresh's) answer.
    pub refresh_token: String,
}

impl OidcRefreshRequest {
    /// Refuse a malformed token before anything is sent to the issuer.
    pub(crate) fn check(&self) -> Result<(), Problem> {
        if self.refresh_token.is_empty()
            || self.refresh_token.len() > 8192
            || self.refresh_token.chars().any(char::is_control)
        {
            return Err(Problem::bad_request(
                "`refresh_token` must be the refresh token the issuer gave (1 to 8192 characters)",
            ));
        }
        Ok(())
    }
}

/// The device code of a device authorization (RFC 8628) the user is
/// approving at the issuer, to redeem once they have.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OidcDeviceRequest {
    /// The provider's issuer, as `GET /api/v1/auth/providers` lists it.
    pub issuer: String,
    /// The `device_code` the issuer's device authorization endpoint
    /// answered.
    pub device_code: String,
}

impl OidcDeviceRequest {
    /// Refuse a malformed code before anything is sent to the issuer.
    pub(crate) fn check(&self) -> Result<(), Problem> {
        if self.device_code.is_empty()
            || self.device_code.len() > 4096
            || self.device_code.chars().any(char::is_control)
        {
            return Err(Problem::bad_request(
                "`device_code` must be the device code the issuer answered (1 to 4096 characters)",
            ));
        }
        Ok(())
    }
}

/// What a token endpoint answers.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    id_token: Option<String>,
    refresh_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The tokens an issuer's token endpoint gave.
pub(crate) struct Tokens {
    pub access_token: String,
    pub id_token: Option<String>,
    pub refresh_token: Option<String>,
}

/// Redeem the code at the provider's token endpoint for its access token
/// (and its ID and refresh tokens, when it issues them).
pub(crate) async fn redeem(
    client: &reqwest::Client,
    provider: &SignInProvider,
    request: &OidcCodeRequest,
) -> Result<Tokens, Problem> {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", request.code.as_str()),
        ("redirect_uri", request.redirect_uri.as_str()),
        ("client_id", provider.client_id.as_str()),
        ("code_verifier", request.code_verifier.as_str()),
    ];
    grant(client, provider, &form, "code").await
}

/// Trade a refresh token at the provider's token endpoint for a new access
/// token (and the refresh token that replaces it, where the issuer rotates
/// them).
pub(crate) async fn refresh(
    client: &reqwest::Client,
    provider: &SignInProvider,
    refresh_token: &str,
) -> Result<Tokens, Problem> {
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", provider.client_id.as_str()),
    ];
    grant(client, provider, &form, "refresh token").await
}

/// Redeem a device code at the provider's token endpoint: its tokens once
/// the user has approved the device, `authorization-pending` (400) while
/// they have not, `slow-down` (400) when asked too often (RFC 8628 §3.5).
pub(crate) async fn redeem_device_code(
    client: &reqwest::Client,
    provider: &SignInProvider,
    device_code: &str,
) -> Result<Tokens, Problem> {
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("device_code", device_code),
        ("client_id", provider.client_id.as_str()),
    ];
    grant(client, provider, &form, "device code").await
}

/// Post a grant to the provider's token endpoint; `what` names the
/// credential in a refusal.
async fn grant(
    client: &reqwest::Client,
    provider: &SignInProvider,
    form: &[(&str, &str)],
    what: &str,
) -> Result<Tokens, Problem> {
    let unreachable = |e: &dyn std::fmt::Display| {
        Problem::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "the issuer's token endpoint {} did not answer: {e}",
                provider.token_endpoint
            ),
        )
    };
    let response = client
        .post(&provider.token_endpoint)
        .header("accept", "application/json")
        .form(form)
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .map_err(|e| unreachable(&e))?;
    let status = response.status();
    let body: TokenResponse = response.json().await.map_err(|e| unreachable(&e))?;
    match (body.access_token, body.error) {
        (Some(access_token), None) if status.is_success() => Ok(Tokens {
            access_token,
            id_token: body.id_token,
            refresh_token: body.refresh_token,
        }),
        // The device grant's "not yet" (RFC 8628 §3.5): asked again later.
        (_, Some(error)) if error == "authorization_pending" || error == "slow_down" => {
            let (kind, detail) = if error == "slow_down" {
                (
                    "slow-down",
                    "asked too often: wait 5 s longer between requests",
                )
            } else {
                (
                    "authorization-pending",
                    "the user has not approved the device at the issuer yet: ask again after the interval",
                )
            };
            Err(Problem::bad_request(detail).kind(kind))
        }
        (_, Some(error)) => Err(Problem::unauthorized(format!(
            "the issuer refused the {what}: {error}{}; sign in again",
            body.error_description
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        ))),
        _ => Err(unreachable(&format!("{status} without an access token"))),
    }
}

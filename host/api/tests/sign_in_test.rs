//! Browser sign-in through an OIDC issuer (authorization code with PKCE):
//! the providers the UI is offered, and the code exchange against a fake
//! issuer served here on loopback — discovery, JWKS and a token endpoint
//! that checks the PKCE verifier against the challenge of the code, as a
//! real issuer does, and the device authorization grant (RFC 8628) the CLI
//! uses without a browser. The web UI's own test (host/rebound/tests/ui_test.rs)
//! runs the whole flow in Chromium against node-oidc-provider.

#[path = "support/harness.rs"]
mod harness;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use base64::Engine;
use harness::Api;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rebound_api::ApiConfig;
use rebound_api::auth::OidcIssuer;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// What the fake issuer answers as its ID token.
const ID_TOKEN: &str = "id-token-of-olivia";
const RSA_KEY: &[u8] = include_bytes!("fixtures/oidc-rsa.pem");
const REDIRECT: &str = "http://127.0.0.1:8080/";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

/// What the fake issuer knows: codes it handed out, with their challenge
/// and the claims of the token each is worth, the refresh tokens it gave
/// (each good once: it rotates them) with their claims, and how many token
/// requests reached it.
#[derive(Default)]
struct Issuer {
    url: String,
    codes: HashMap<String, (String, Value)>,
    refresh_tokens: HashMap<String, Value>,
    /// Device codes (RFC 8628): `None` until the user approves the device,
    /// then the claims of the token it is worth.
    devices: HashMap<String, Option<Value>>,
    issued: usize,
    token_requests: usize,
}

type Shared = Arc<Mutex<Issuer>>;

fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn token(
    State(issuer): State<Shared>,
    Form(form): Form<HashMap<String, String>>,
) -> axum::response::Response {
    let mut issuer = issuer.lock().expect("lock");
    issuer.token_requests += 1;
    let refuse = |error: &str, description: &str| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": error, "error_description": description})),
        )
            .into_response()
    };
    if form.get("client_id").map(String::as_str) != Some("rebound-ui") {
        return refuse("invalid_client", "client_id");
    }
    let mut claims = match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            if form.get("redirect_uri").map(String::as_str) != Some(REDIRECT) {
                return refuse("invalid_request", "redirect_uri");
            }
            let Some((expected, claims)) = form.get("code").and_then(|c| issuer.codes.remove(c))
            else {
                return refuse("invalid_grant", "unknown or used code");
            };
            if form.get("code_verifier").map(|v| challenge(v)) != Some(expected) {
                return refuse("invalid_grant", "PKCE verification failed");
            }
            claims
        }
        Some("urn:ietf:params:oauth:grant-type:device_code") => {
            let device = form.get("device_code").cloned().unwrap_or_default();
            match issuer.devices.get(&device) {
                Some(None) => return refuse("authorization_pending", "not approved yet"),
                Some(Some(_)) => issuer.devices.remove(&device).flatten().expect("approved"),
                None => return refuse("invalid_grant", "unknown or used device code"),
            }
        }
        Some("refresh_token") => {
            match form
                .get("refresh_token")
                .and_then(|t| issuer.refresh_tokens.remove(t))
            {
                Some(claims) => claims,
                None => return refuse("invalid_grant", "unknown or used refresh token"),
            }
        }
        _ => return refuse("unsupported_grant_type", "grant_type"),
    };
    issuer.issued += 1;
    let refresh_token = format!("refresh-token-{}", issuer.issued);
    issuer
        .refresh_tokens
        .insert(refresh_token.clone(), claims.clone());
    claims["jti"] = json!(issuer.issued);
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    let jwt = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(RSA_KEY).expect("key"),
    )
    .expect("sign");
    axum::Json(
        json!({"access_token": jwt, "token_type": "Bearer", "expires_in": 600,
        "id_token": ID_TOKEN, "refresh_token": refresh_token}),
    )
    .into_response()
}

/// A host trusting the fake issuer for browser sign-in, which offers the
/// device authorization grant too.
async fn host() -> (Api, Shared, tempfile::TempDir) {
    host_with(true).await
}

async fn host_with(device_grant: bool) -> (Api, Shared, tempfile::TempDir) {
    let issuer: Shared = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    issuer.lock().expect("lock").url.clone_from(&url);
    let mut discovery = json!({
        "issuer": url,
        "authorization_endpoint": format!("{url}/auth"),
        "token_endpoint": format!("{url}/token"),
        "end_session_endpoint": format!("{url}/session/end"),
        "jwks_uri": format!("{url}/jwks"),
        "code_challenge_methods_supported": ["S256"],
    });
    if device_grant {
        discovery["device_authorization_endpoint"] = json!(format!("{url}/device/auth"));
    }
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || async move { axum::Json(discovery) }),
        )
        .route(
            "/jwks",
            axum::routing::get(|| async { include_str!("fixtures/rsa-jwks.json") }),
        )
        .route("/token", axum::routing::post(token))
        .with_state(issuer.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().expect("tmp");
    let store = rebound_store::testing::fresh_sqlite(dir.path())
        .await
        .expect("store");
    let mut config = ApiConfig::default();
    config.auth.oidc = vec![OidcIssuer {
        issuer: url.clone(),
        audience: "rebound-api".into(),
        jwks_url: format!("{url}/jwks"),
        algorithm: "RS256".into(),
        role_claim: "roles".into(),
        client_id: Some("rebound-ui".into()),
        name: Some("Corporate SSO".into()),
        scope: "openid rebound".into(),
    }];
    (Api::with_config(store, config).await, issuer, dir)
}

/// The issuer hands out a code for `claims` under the challenge of
/// `VERIFIER`, as its authorization endpoint would.
fn code(issuer: &Shared, code: &str, claims: Value) {
    issuer
        .lock()
        .expect("lock")
        .codes
        .insert(code.into(), (challenge(VERIFIER), claims));
}

fn claims(issuer: &Shared, aud: &str, roles: Value) -> Value {
    let now = now();
    json!({"sub": "olivia", "iss": issuer.lock().expect("lock").url, "aud": aud,
        "exp": now + 600, "iat": now, "roles": roles})
}

async fn redeem(api: &Api, body: Value) -> harness::Reply {
    api.call(
        "POST",
        "/api/v1/auth/oidc",
        None,
        &[("content-type", "application/json")],
        body.to_string(),
    )
    .await
}

fn request(issuer: &Shared, code: &str, verifier: &str) -> Value {
    json!({"issuer": issuer.lock().expect("lock").url, "code": code,
        "code_verifier": verifier, "redirect_uri": REDIRECT})
}

#[tokio::test]
async fn the_ui_is_offered_the_sign_in_issuers() {
    let (api, issuer, _dir) = host().await;
    let r = api
        .call("GET", "/api/v1/auth/providers", None, &[], Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let url = issuer.lock().expect("lock").url.clone();
    assert_eq!(
        r.json,
        json!({"providers": [{"issuer": url, "name": "Corporate SSO",
            "authorization_endpoint": format!("{url}/auth"), "client_id": "rebound-ui",
            "scope": "openid rebound", "end_session_endpoint": format!("{url}/session/end"),
            "device_authorization_endpoint": format!("{url}/device/auth")}]}),
        "the token endpoint stays the host's business"
    );
}

#[tokio::test]
async fn a_code_and_its_verifier_sign_in_once_and_are_audited() {
    let (api, issuer, _dir) = host().await;
    code(
        &issuer,
        "c-1",
        claims(&issuer, "rebound-api", json!(["operator"])),
    );
    let r = redeem(&api, request(&issuer, "c-1", VERIFIER)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["token_type"], "Bearer");
    // The ID token, for the UI to end the issuer's session at sign-out.
    assert_eq!(r.json["id_token"], ID_TOKEN);
    let expires_in = r.json["expires_in"].as_u64().expect("expires_in");
    assert!((590..=600).contains(&expires_in), "{expires_in}");
    let token = r.json["access_token"].as_str().expect("token");
    let me = api
        .call(
            "GET",
            "/api/v1/auth/whoami",
            Some(token),
            &[],
            Body::empty(),
        )
        .await;
    let url = issuer.lock().expect("lock").url.clone();
    assert_eq!(
        me.json,
        json!({"name": format!("oidc:olivia@{url}"), "role": "operator"})
    );
    // A code is good once: the issuer refuses it again, and says why.
    let again = redeem(&api, request(&issuer, "c-1", VERIFIER)).await;
    let p = again.problem(StatusCode::UNAUTHORIZED);
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("invalid_grant")),
        "{}",
        again.text
    );
    let audit = api
        .get("/api/v1/audit", rebound_api::Role::Admin)
        .await
        .text;
    assert!(audit.contains("\"auth.login\""), "{audit}");
    assert!(audit.contains("auth.login.refused"), "{audit}");
    assert!(!audit.contains(token), "no token in the audit log");
    assert!(!audit.contains(ID_TOKEN), "no ID token in the audit log");
    assert!(!audit.contains(VERIFIER), "no verifier in the audit log");
}

async fn redeem_device(api: &Api, issuer: &Shared, device_code: &str) -> harness::Reply {
    let url = issuer.lock().expect("lock").url.clone();
    redeem_device_at(api, &url, device_code).await
}

async fn redeem_device_at(api: &Api, url: &str, device_code: &str) -> harness::Reply {
    api.call(
        "POST",
        "/api/v1/auth/oidc/device",
        None,
        &[("content-type", "application/json")],
        json!({"issuer": url, "device_code": device_code}).to_string(),
    )
    .await
}

#[tokio::test]
async fn a_device_code_signs_in_once_the_user_has_approved_it() {
    let (api, issuer, _dir) = host().await;
    issuer
        .lock()
        .expect("lock")
        .devices
        .insert("d-1".into(), None);
    // Not approved yet: a 400 the CLI recognizes and asks again after, not
    // a refusal, and nothing audited.
    let pending = redeem_device(&api, &issuer, "d-1").await;
    let p = pending.problem(StatusCode::BAD_REQUEST);
    assert!(
        p["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("/authorization-pending")),
        "{}",
        pending.text
    );
    let audit = api
        .get("/api/v1/audit", rebound_api::Role::Admin)
        .await
        .text;
    assert!(!audit.contains("auth.login"), "{audit}");

    let approved = claims(&issuer, "rebound-api", json!(["operator"]));
    issuer
        .lock()
        .expect("lock")
        .devices
        .insert("d-1".into(), Some(approved));
    let r = redeem_device(&api, &issuer, "d-1").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let token = r.json["access_token"].as_str().expect("token");
    let me = api
        .call(
            "GET",
            "/api/v1/auth/whoami",
            Some(token),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(me.json["role"], "operator");
    assert!(r.json["refresh_token"].is_string());
    // Good once.
    let again = redeem_device(&api, &issuer, "d-1").await;
    let p = again.problem(StatusCode::UNAUTHORIZED);
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("invalid_grant")),
        "{}",
        again.text
    );
    let audit = api
        .get("/api/v1/audit", rebound_api::Role::Admin)
        .await
        .text;
    assert!(
        audit.contains("\"auth.login\"") && audit.contains("device_code"),
        "{audit}"
    );
    assert!(!audit.contains(token), "no token in the audit log");
    assert!(
        !audit.contains("\"d-1\""),
        "no device code in the audit log"
    );

    // Malformed, or an issuer this host does not offer: refused before any
    // issuer is asked.
    let requests = issuer.lock().expect("lock").token_requests;
    redeem_device(&api, &issuer, "")
        .await
        .problem(StatusCode::BAD_REQUEST);
    redeem_device_at(&api, "https://elsewhere.example", "d")
        .await
        .problem(StatusCode::BAD_REQUEST);
    assert_eq!(issuer.lock().expect("lock").token_requests, requests);
}

#[tokio::test]
async fn an_issuer_without_the_device_grant_is_not_asked_for_one() {
    let (api, issuer, _dir) = host_with(false).await;
    let r = redeem_device(&api, &issuer, "d-1").await;
    let p = r.problem(StatusCode::BAD_REQUEST);
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("offers no device authorization")),
        "{}",
        r.text
    );
    assert_eq!(issuer.lock().expect("lock").token_requests, 0);
}

#[tokio::test]
async fn a_wrong_verifier_is_refused_by_the_issuer() {
    let (api, issuer, _dir) = host().await;
    code(
        &issuer,
        "c-2",
        claims(&issuer, "rebound-api", json!(["admin"])),
    );
    let other = "x".repeat(43);
    let r = redeem(&api, request(&issuer, "c-2", &other)).await;
    let p = r.problem(StatusCode::UNAUTHORIZED);
    assert!(
        p["detail"].as_str().is_some_and(|d| d.contains("PKCE")),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn an_access_token_this_host_would_refuse_is_refused_at_sign_in() {
    let (api, issuer, _dir) = host().await;
    code(
        &issuer,
        "aud",
        claims(&issuer, "another-api", json!(["admin"])),
    );
    let r = redeem(&api, request(&issuer, "aud", VERIFIER)).await;
    let p = r.problem(StatusCode::UNAUTHORIZED);
    let detail = p["detail"].as_str().expect("detail");
    assert!(
        detail.contains("wrong audience") && detail.contains("'rebound-api'"),
        "says what to fix: {detail}"
    );
    code(
        &issuer,
        "role",
        claims(&issuer, "rebound-api", json!(["staff"])),
    );
    let r = redeem(&api, request(&issuer, "role", VERIFIER)).await;
    let p = r.problem(StatusCode::FORBIDDEN);
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("no Rebound role") && d.contains("`roles`")),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn malformed_requests_are_refused_before_the_issuer_is_asked() {
    let (api, issuer, _dir) = host().await;
    let url = issuer.lock().expect("lock").url.clone();
    let cases = [
        (
            json!({"issuer": url, "code": "c", "code_verifier": "short", "redirect_uri": REDIRECT}),
            "code_verifier",
        ),
        (
            json!({"issuer": url, "code": "c", "code_verifier": format!("{}!", "a".repeat(43)), "redirect_uri": REDIRECT}),
            "code_verifier",
        ),
        (
            json!({"issuer": url, "code": "", "code_verifier": VERIFIER, "redirect_uri": REDIRECT}),
            "`code`",
        ),
        (
            json!({"issuer": url, "code": "c", "code_verifier": VERIFIER, "redirect_uri": "/relative"}),
            "redirect_uri",
        ),
        (
            json!({"issuer": "https://evil.example", "code": "c", "code_verifier": VERIFIER, "redirect_uri": REDIRECT}),
            "GET /api/v1/auth/providers",
        ),
        (
            json!({"issuer": url, "code": "c", "code_verifier": VERIFIER}),
            "redirect_uri",
        ),
        (
            json!({"issuer": url, "code": "c", "code_verifier": VERIFIER, "redirect_uri": REDIRECT, "client_secret": "x"}),
            "client_secret",
        ),
    ];
    for (body, why) in cases {
        let r = redeem(&api, body.clone()).await;
        let status = r.status;
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.text
        );
        assert!(
            r.json["detail"].as_str().is_some_and(|d| d.contains(why)),
            "{body}: expected '{why}' in {}",
            r.text
        );
    }
    assert_eq!(issuer.lock().expect("lock").token_requests, 0);
}

#[tokio::test]
async fn an_issuer_whose_discovery_names_another_issuer_stops_the_start() {
    let (_api, issuer, dir) = host().await;
    let url = issuer.lock().expect("lock").url.clone();
    let store = rebound_store::testing::fresh_sqlite(&{
        let d = dir.path().join("other");
        std::fs::create_dir_all(&d).expect("dir");
        d
    })
    .await
    .expect("store");
    let mut config = ApiConfig::default();
    config.auth.oidc = vec![OidcIssuer {
        issuer: format!("{url}/"),
        audience: "rebound-api".into(),
        jwks_url: format!("{url}/jwks"),
        algorithm: "RS256".into(),
        role_claim: "roles".into(),
        client_id: Some("rebound-ui".into()),
        name: None,
        scope: "openid".into(),
    }];
    let err = rebound_api::Auth::start(&store, &config.auth)
        .await
        .expect_err("a trailing slash is another issuer");
    assert!(
        err.to_string()
            .contains("set `issuer` to exactly what the provider publishes"),
        "{err}"
    );
}

async fn refresh(api: &Api, body: Value) -> harness::Reply {
    api.call(
        "POST",
        "/api/v1/auth/oidc/refresh",
        None,
        &[("content-type", "application/json")],
        body.to_string(),
    )
    .await
}

#[tokio::test]
async fn a_refresh_token_gives_a_new_access_token_once_and_a_lost_role_ends_the_session() {
    let (api, issuer, _dir) = host().await;
    let url = issuer.lock().expect("lock").url.clone();
    code(
        &issuer,
        "c-r",
        claims(&issuer, "rebound-api", json!(["operator"])),
    );
    let signed_in = redeem(&api, request(&issuer, "c-r", VERIFIER)).await;
    assert_eq!(signed_in.status, StatusCode::OK, "{}", signed_in.text);
    let first = signed_in.json["refresh_token"]
        .as_str()
        .expect("the issuer's refresh token")
        .to_owned();

    // Traded for a new access token and the refresh token that replaces it.
    let r = refresh(&api, json!({"issuer": url, "refresh_token": first})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let token = r.json["access_token"].as_str().expect("token").to_owned();
    assert_ne!(
        token,
        signed_in.json["access_token"].as_str().expect("first")
    );
    let second = r.json["refresh_token"]
        .as_str()
        .expect("rotated")
        .to_owned();
    assert_ne!(second, first);
    assert!(r.json["expires_in"].as_u64().is_some_and(|e| e > 590));
    let me = api
        .call(
            "GET",
            "/api/v1/auth/whoami",
            Some(&token),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(me.json["role"], "operator", "{}", me.text);

    // A used refresh token is refused by the issuer, and the host says so.
    let again = refresh(&api, json!({"issuer": url, "refresh_token": first})).await;
    let detail = again.problem(StatusCode::UNAUTHORIZED)["detail"]
        .as_str()
        .expect("detail")
        .to_owned();
    assert!(
        detail.contains("refused the refresh token: invalid_grant")
            && detail.contains("sign in again"),
        "{detail}"
    );

    // The issuer no longer gives olivia a Rebound role: the refreshed
    // token is checked as at sign-in, and refused.
    issuer
        .lock()
        .expect("lock")
        .refresh_tokens
        .get_mut(&second)
        .expect("the second refresh token")["roles"] = json!(["staff"]);
    let lost = refresh(&api, json!({"issuer": url, "refresh_token": second})).await;
    assert!(
        lost.problem(StatusCode::FORBIDDEN)["detail"]
            .as_str()
            .is_some_and(|d| d.contains("no Rebound role")),
        "{}",
        lost.text
    );

    // Malformed requests never reach the issuer.
    let asked = issuer.lock().expect("lock").token_requests;
    for (body, field) in [
        (json!({"issuer": url, "refresh_token": ""}), "refresh_token"),
        (
            json!({"issuer": url, "refresh_token": "a\nb"}),
            "refresh_token",
        ),
        (
            json!({"issuer": "https://elsewhere.example", "refresh_token": "r"}),
            "not an issuer",
        ),
        (
            json!({"issuer": url, "refresh_token": "r", "scope": "admin"}),
            "scope",
        ),
    ] {
        let r = refresh(&api, body).await;
        assert!(
            r.status.is_client_error() && r.text.contains(field),
            "{}: {}",
            r.status,
            r.text
        );
    }
    assert_eq!(issuer.lock().expect("lock").token_requests, asked);

    let audit = api
        .get("/api/v1/audit", rebound_api::Role::Admin)
        .await
        .text;
    assert!(audit.contains("\"auth.refresh\""), "{audit}");
    assert!(audit.contains("auth.refresh.refused"), "{audit}");
    for secret in [&first, &second, &token] {
        assert!(
            !audit.contains(secret.as_str()),
            "no token in the audit log"
        );
    }
}

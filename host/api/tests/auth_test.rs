//! Authentication: the bootstrap admin, login, API tokens, and every JWT a
//! host must refuse (each a named test), for the local issuer and for OIDC
//! issuers whose keys come from a JWKS endpoint (served here on loopback
//! from the test keys in tests/fixtures).

#[path = "support/harness.rs"]
mod harness;

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::StatusCode;
use harness::Api;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rebound_api::auth::{OidcIssuer, bootstrap_admin};
use rebound_api::{ApiConfig, Role};
use rebound_store::Store;
use serde_json::{Value, json};

const RSA_KEY: &[u8] = include_bytes!("fixtures/oidc-rsa.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("fixtures/oidc-rsa.pub.pem");
const EC_KEY: &[u8] = include_bytes!("fixtures/oidc-ec.pem");
const RSA_ISSUER: &str = "https://idp.example";
const EC_ISSUER: &str = "https://ec-idp.example";

rebound_store::on_both_backends!(
    the_bootstrap_admin_is_created_once_and_logs_in,
    login_refuses_wrong_passwords_and_unknown_users_alike,
    api_tokens_are_shown_once_scoped_and_revocable,
    local_tokens_of_another_host_key_are_refused,
    admins_manage_users_and_users_change_their_own_password,
    removing_a_user_or_setting_its_password_ends_its_sessions,
    a_local_sign_in_is_renewed_until_the_password_changes_or_it_is_too_old,
    repeated_failed_sign_ins_make_the_user_wait_on_every_host,
);

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

async fn whoami(api: &Api, token: &str) -> harness::Reply {
    api.call(
        "GET",
        "/api/v1/auth/whoami",
        Some(token),
        &[],
        Body::empty(),
    )
    .await
}

async fn login(api: &Api, username: &str, password: &str) -> harness::Reply {
    api.call(
        "POST",
        "/api/v1/auth/login",
        None,
        &[("content-type", "application/json")],
        json!({"username": username, "password": password}).to_string(),
    )
    .await
}

async fn the_bootstrap_admin_is_created_once_and_logs_in(store: Store) {
    let password = bootstrap_admin(&store, None)
        .await
        .expect("bootstrap")
        .expect("a generated password on first start");
    assert!(password.len() >= 16);
    assert_eq!(
        bootstrap_admin(&store, Some("other")).await.expect("again"),
        None,
        "a second start creates nothing"
    );
    let api = Api::new(store).await;
    let r = login(&api, "admin", &password).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["token_type"], "Bearer");
    let token = r.json["access_token"].as_str().expect("token");
    let me = whoami(&api, token).await;
    assert_eq!(me.json, json!({"name": "user:admin", "role": "admin"}));
    // The password is never in the audit log.
    let audit = api.get("/api/v1/audit", Role::Admin).await;
    assert!(!audit.text.contains(&password));
    assert!(audit.text.contains("user.bootstrap"), "{}", audit.text);
}

async fn login_refuses_wrong_passwords_and_unknown_users_alike(store: Store) {
    bootstrap_admin(&store, Some("correct horse battery staple"))
        .await
        .expect("bootstrap");
    let api = Api::new(store).await;
    let wrong = login(&api, "admin", "Tr0ub4dor&3").await;
    let unknown = login(&api, "mallory", "correct horse battery staple").await;
    for r in [&wrong, &unknown] {
        let p = r.problem(StatusCode::UNAUTHORIZED);
        assert_eq!(p["detail"], "username or password is wrong");
    }
    let ok = login(&api, "admin", "correct horse battery staple").await;
    assert_eq!(ok.status, StatusCode::OK);
    login(&api, "ad\u{0}min", "x")
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    let audit = api.get("/api/v1/audit", Role::Admin).await;
    assert!(!audit.text.contains("Tr0ub4dor"), "{}", audit.text);
    assert!(audit.text.contains("auth.login.refused"), "{}", audit.text);
}

async fn repeated_failed_sign_ins_make_the_user_wait_on_every_host(store: Store) {
    bootstrap_admin(&store, Some("correct horse battery staple"))
        .await
        .expect("bootstrap");
    let mut config = ApiConfig::default();
    config.auth.login_attempts = 3;
    // Long enough that the checks below fall inside it on a loaded machine.
    config.auth.login_lockout_seconds = 3;
    let api = Api::with_config(store.clone(), config.clone()).await;
    // A second host on the same store, with its own `Auth`.
    let other = Api::with_config(store, config).await;
    let r = api
        .send(
            "PUT",
            "/api/v1/users/bob",
            Role::Admin,
            &json!({"password": "bob's long password", "role": "viewer"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    // Guesses spread over two hosts count together.
    for host in [&api, &other, &api] {
        login(host, "admin", "guess")
            .await
            .problem(StatusCode::UNAUTHORIZED);
    }
    // Now even the right password waits, on either host, and says for how
    // long.
    login(&other, "admin", "correct horse battery staple")
        .await
        .problem(StatusCode::TOO_MANY_REQUESTS);
    let waiting = login(&api, "admin", "correct horse battery staple").await;
    let p = waiting.problem(StatusCode::TOO_MANY_REQUESTS);
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("too many failed sign-ins for 'admin'")),
        "{}",
        waiting.text
    );
    let retry_after: u64 = waiting.headers["retry-after"]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=3).contains(&retry_after), "{retry_after}");
    // Another user is not held up.
    assert_eq!(
        login(&api, "bob", "bob's long password").await.status,
        StatusCode::OK
    );
    let audit = api.get("/api/v1/audit", Role::Admin).await.text;
    assert!(audit.contains("too many failed sign-ins"), "{audit}");
    // After the wait the right password passes, and the count starts
    // again.
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    assert_eq!(
        login(&api, "admin", "correct horse battery staple")
            .await
            .status,
        StatusCode::OK
    );
    login(&api, "admin", "guess")
        .await
        .problem(StatusCode::UNAUTHORIZED);
}

async fn api_tokens_are_shown_once_scoped_and_revocable(store: Store) {
    let api = Api::new(store).await;
    let created = api
        .send(
            "POST",
            "/api/v1/tokens",
            Role::Admin,
            &json!({"name": "ci-pipeline", "role": "operator"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let secret = created.json["token"].as_str().expect("secret").to_owned();
    let id = created.json["id"].as_str().expect("id").to_owned();
    assert!(secret.starts_with("rbt_"), "{secret}");
    assert_eq!(created.json["created_by"], "user:admin");

    let me = whoami(&api, &secret).await;
    assert_eq!(
        me.json,
        json!({"name": format!("token:{id}"), "role": "operator"})
    );
    // Scoped: an operator token may not create tokens.
    api.call(
        "POST",
        "/api/v1/tokens",
        Some(&secret),
        &[("content-type", "application/json")],
        json!({"name": "escalate", "role": "admin"}).to_string(),
    )
    .await
    .problem(StatusCode::FORBIDDEN);

    let listed = api.get("/api/v1/tokens", Role::Admin).await;
    assert_eq!(listed.json["items"][0]["name"], "ci-pipeline");
    assert!(!listed.text.contains(&secret), "shown once only");
    assert!(
        !listed.text.contains(&secret[4..]),
        "nor its digest's input"
    );
    let audit = api.get("/api/v1/audit", Role::Admin).await;
    assert!(!audit.text.contains(&secret));

    let token = api.token(Role::Admin);
    let revoked = api
        .call(
            "DELETE",
            &format!("/api/v1/tokens/{id}"),
            Some(&token),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.text);
    whoami(&api, &secret)
        .await
        .problem(StatusCode::UNAUTHORIZED);
    api.call(
        "DELETE",
        "/api/v1/tokens/tok-nope",
        Some(&token),
        &[],
        Body::empty(),
    )
    .await
    .problem(StatusCode::NOT_FOUND);
    api.send(
        "POST",
        "/api/v1/tokens",
        Role::Admin,
        &json!({"name": "x", "role": "root"}),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY);
}

async fn local_tokens_of_another_host_key_are_refused(store: Store) {
    let api = Api::new(store).await;
    let dir = tempfile::tempdir().expect("tmp");
    let other = Api::new(
        rebound_store::testing::fresh_sqlite(dir.path())
            .await
            .expect("store"),
    )
    .await;
    let foreign = other.token(Role::Admin);
    whoami(&api, &foreign)
        .await
        .problem(StatusCode::UNAUTHORIZED);
}

/// Admins list and remove local users; a removed user's token, and a
/// token issued before the user's password was set again, stop working at
/// once; the only admin can be neither removed nor demoted.
async fn removing_a_user_or_setting_its_password_ends_its_sessions(store: Store) {
    let api = Api::new(store).await;
    let put = |name: &'static str, role: &'static str| {
        let api = &api;
        async move {
            let r = api
                .send(
                    "PUT",
                    &format!("/api/v1/users/{name}"),
                    Role::Admin,
                    &json!({"password": "a long enough password", "role": role}),
                )
                .await;
            assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        }
    };
    put("dora", "operator").await;
    let token = login(&api, "dora", "a long enough password").await.json["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let users = api
        .send("GET", "/api/v1/users", Role::Admin, &json!({}))
        .await;
    assert_eq!(users.status, StatusCode::OK, "{}", users.text);
    let dora = users.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|u| u["name"] == "dora")
        .unwrap_or_else(|| panic!("dora listed: {}", users.text))
        .clone();
    assert_eq!(dora["role"], "operator");
    assert!(dora["created_at_ms"].as_i64().is_some_and(|t| t > 0));
    assert!(
        !users.text.contains("argon2"),
        "no password hash: {}",
        users.text
    );
    api.send("GET", "/api/v1/users", Role::Operator, &json!({}))
        .await
        .problem(StatusCode::FORBIDDEN);

    let detail = |r: &harness::Reply| -> String {
        r.problem(StatusCode::UNAUTHORIZED)["detail"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    // `iat` counts whole seconds: let one pass, so the next change is
    // after the token's second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // A new password and role: the earlier session ends; a new one has
    // the new role.
    put("dora", "viewer").await;
    let old = whoami(&api, &token).await;
    assert!(detail(&old).contains("log in again"), "{}", old.text);
    let token = login(&api, "dora", "a long enough password").await.json["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(
        whoami(&api, &token).await.json,
        json!({"name": "user:dora", "role": "viewer"})
    );
    // Removed: the token is refused, and the removal is audited.
    let r = api
        .send("DELETE", "/api/v1/users/dora", Role::Admin, &json!({}))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let refused = whoami(&api, &token).await;
    assert!(
        detail(&refused).contains("no longer exists"),
        "{}",
        refused.text
    );
    // Made again under the same name, later: the old token stays refused.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    put("dora", "admin").await;
    let refused = whoami(&api, &token).await;
    assert!(
        detail(&refused).contains("log in again"),
        "{}",
        refused.text
    );
    let r = api
        .send("DELETE", "/api/v1/users/dora", Role::Admin, &json!({}))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    api.send("DELETE", "/api/v1/users/dora", Role::Admin, &json!({}))
        .await
        .problem(StatusCode::NOT_FOUND);
    let audit = api.get("/api/v1/audit?limit=5", Role::Admin).await;
    assert!(
        audit.json["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|e| e["action"] == "user.delete" && e["target"] == "dora"),
        "{}",
        audit.text
    );

    // The only admin stays an admin.
    let before = api.audit_len().await;
    for r in [
        api.send("DELETE", "/api/v1/users/admin", Role::Admin, &json!({}))
            .await,
        api.send(
            "PUT",
            "/api/v1/users/admin",
            Role::Admin,
            &json!({"password": "a long enough password", "role": "operator"}),
        )
        .await,
    ] {
        let detail = r.problem(StatusCode::CONFLICT)["detail"].clone();
        assert!(
            detail.as_str().is_some_and(|d| d.contains("only admin")),
            "{detail}"
        );
    }
    assert_eq!(api.audit_len().await, before, "refusals change nothing");
    // With a second admin, the first may go.
    put("erin", "admin").await;
    let r = api
        .send("DELETE", "/api/v1/users/admin", Role::Admin, &json!({}))
        .await;
    // (the caller's own token is the admin's: refused from now on)
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
}

async fn admins_manage_users_and_users_change_their_own_password(store: Store) {
    let api = Api::new(store).await;
    let put = |role: Role, name: &'static str, body: Value| {
        let api = &api;
        async move {
            api.send("PUT", &format!("/api/v1/users/{name}"), role, &body)
                .await
        }
    };
    let r = put(
        Role::Admin,
        "alice",
        json!({"password": "first long password", "role": "operator"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let token = login(&api, "alice", "first long password").await.json["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(
        whoami(&api, &token).await.json,
        json!({"name": "user:alice", "role": "operator"})
    );
    let before = api.audit_len().await;
    put(
        Role::Operator,
        "bob",
        json!({"password": "a long password", "role": "admin"}),
    )
    .await
    .problem(StatusCode::FORBIDDEN);
    put(
        Role::Admin,
        "bob",
        json!({"password": "short", "role": "viewer"}),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY);
    put(
        Role::Admin,
        "Bob!",
        json!({"password": "a long password", "role": "viewer"}),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY);
    put(
        Role::Admin,
        "bob",
        json!({"password": "a long password", "role": "root"}),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(api.audit_len().await, before);
    login(&api, "bob", "a long password")
        .await
        .problem(StatusCode::UNAUTHORIZED);

    let change = |token: String, current: &'static str, new: &'static str| {
        let api = &api;
        async move {
            api.call(
                "POST",
                "/api/v1/auth/password",
                Some(&token),
                &[("content-type", "application/json")],
                json!({"current": current, "new": new}).to_string(),
            )
            .await
        }
    };
    change(token.clone(), "wrong password!", "second long password")
        .await
        .problem(StatusCode::FORBIDDEN);
    change(token.clone(), "first long password", "short")
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    let r = change(token.clone(), "first long password", "second long password").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    login(&api, "alice", "first long password")
        .await
        .problem(StatusCode::UNAUTHORIZED);
    let again = login(&api, "alice", "second long password").await;
    assert_eq!(again.status, StatusCode::OK);
    let me = whoami(&api, again.json["access_token"].as_str().expect("token")).await;
    assert_eq!(me.json["role"], "operator", "the role is kept");

    // An API token has no password to change.
    let created = api
        .send(
            "POST",
            "/api/v1/tokens",
            Role::Admin,
            &json!({"name": "ci", "role": "viewer"}),
        )
        .await;
    let secret = created.json["token"].as_str().expect("secret").to_owned();
    change(secret, "x", "a long new password")
        .await
        .problem(StatusCode::CONFLICT);
    let audit = api.get("/api/v1/audit", Role::Admin).await;
    assert!(audit.text.contains("user.put"), "{}", audit.text);
    assert!(!audit.text.contains("long password"), "{}", audit.text);
}

// ---- JWT refusals, one named test each -------------------------------------

/// A host on SQLite trusting the two test OIDC issuers (JWKS served here),
/// and the local issuer's secret for forging.
async fn host() -> (Api, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tmp");
    let store = rebound_store::testing::fresh_sqlite(dir.path())
        .await
        .expect("store");
    // The local user the local tokens below name.
    let alice = rebound_store::UserRecord {
        name: "alice".into(),
        password_hash: "!".into(),
        role: "admin".into(),
    };
    store.put_user(&alice, "system").await.expect("alice");
    let jwks = axum::Router::new()
        .route(
            "/rsa.json",
            axum::routing::get(|| async { include_str!("fixtures/rsa-jwks.json") }),
        )
        .route(
            "/ec.json",
            axum::routing::get(|| async { include_str!("fixtures/ec-jwks.json") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, jwks).await });
    let mut config = ApiConfig::default();
    config.auth.oidc = vec![
        OidcIssuer {
            issuer: RSA_ISSUER.into(),
            audience: "rebound".into(),
            jwks_url: format!("http://{addr}/rsa.json"),
            algorithm: "RS256".into(),
            role_claim: "roles".into(),
            client_id: None,
            name: None,
            scope: "openid".into(),
        },
        OidcIssuer {
            issuer: EC_ISSUER.into(),
            audience: "rebound".into(),
            jwks_url: format!("http://{addr}/ec.json"),
            algorithm: "ES256".into(),
            role_claim: "groups".into(),
            client_id: None,
            name: None,
            scope: "openid".into(),
        },
    ];
    let secret = store.host_key("jwt-hs256", "unused").await.expect("key");
    let api = Api::with_config(store, config).await;
    (api, secret, dir)
}

fn local_kid(secret: &str) -> String {
    use sha2::Digest;
    format!(
        "local-{}",
        &hex::encode(sha2::Sha256::digest(secret.as_bytes()))[..12]
    )
}

fn claims(iss: &str, aud: &str) -> Value {
    let now = now();
    json!({"sub": "alice", "iss": iss, "aud": aud, "exp": now + 600, "nbf": now - 10, "iat": now, "role": "admin", "roles": ["viewer", "operator"], "groups": "admin"})
}

fn local(secret: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(local_kid(secret));
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

fn rsa(claims: &Value, kid: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_rsa_pem(RSA_KEY).expect("rsa key"),
    )
    .expect("sign")
}

async fn refused(api: &Api, token: &str, why: &str) {
    let r = whoami(api, token).await;
    let p = r.problem(StatusCode::UNAUTHORIZED);
    assert!(
        p["detail"].as_str().is_some_and(|d| d.contains(why)),
        "expected '{why}': {}",
        r.text
    );
}

#[tokio::test]
async fn valid_tokens_of_each_issuer_are_accepted() {
    let (api, secret, _dir) = host().await;
    let me = whoami(&api, &local(&secret, &claims("rebound", "rebound-api"))).await;
    assert_eq!(me.json, json!({"name": "user:alice", "role": "admin"}));
    let me = whoami(&api, &rsa(&claims(RSA_ISSUER, "rebound"), "rsa-1")).await;
    assert_eq!(
        me.json,
        json!({"name": "oidc:alice@https://idp.example", "role": "operator"}),
        "the highest known role of the claim"
    );
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("ec-1".into());
    let ec = jsonwebtoken::encode(
        &header,
        &claims(EC_ISSUER, "rebound"),
        &EncodingKey::from_ec_pem(EC_KEY).expect("ec key"),
    )
    .expect("sign");
    let me = whoami(&api, &ec).await;
    assert_eq!(me.json["role"], "admin", "{}", me.text);
}

#[tokio::test]
async fn an_oidc_token_without_a_rebound_role_is_forbidden() {
    let (api, _, _dir) = host().await;
    let mut c = claims(RSA_ISSUER, "rebound");
    c["roles"] = json!(["employee"]);
    whoami(&api, &rsa(&c, "rsa-1"))
        .await
        .problem(StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let (api, secret, _dir) = host().await;
    let mut c = claims("rebound", "rebound-api");
    c["exp"] = json!(now() - 3600);
    refused(&api, &local(&secret, &c), "expired").await;
    let mut c = claims(RSA_ISSUER, "rebound");
    c["exp"] = json!(now() - 3600);
    refused(&api, &rsa(&c, "rsa-1"), "expired").await;
}

#[tokio::test]
async fn a_token_not_yet_valid_is_refused() {
    let (api, secret, _dir) = host().await;
    let mut c = claims("rebound", "rebound-api");
    c["nbf"] = json!(now() + 3600);
    refused(&api, &local(&secret, &c), "not valid yet").await;
    let mut c = claims(RSA_ISSUER, "rebound");
    c["nbf"] = json!(now() + 3600);
    refused(&api, &rsa(&c, "rsa-1"), "not valid yet").await;
}

#[tokio::test]
async fn a_token_of_an_untrusted_issuer_is_refused() {
    let (api, secret, _dir) = host().await;
    refused(
        &api,
        &local(&secret, &claims("https://evil.example", "rebound-api")),
        "not trusted",
    )
    .await;
    // Signed by the RSA issuer's key but claiming the local issuer.
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(local_kid(&secret));
    let t = jsonwebtoken::encode(
        &header,
        &claims("rebound", "rebound-api"),
        &EncodingKey::from_rsa_pem(RSA_KEY).expect("key"),
    )
    .expect("sign");
    refused(&api, &t, "signs with HS256").await;
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let (api, secret, _dir) = host().await;
    refused(
        &api,
        &local(&secret, &claims("rebound", "other-api")),
        "wrong audience",
    )
    .await;
    refused(
        &api,
        &rsa(&claims(RSA_ISSUER, "other-api"), "rsa-1"),
        "wrong audience",
    )
    .await;
    let mut c = claims("rebound", "x");
    c.as_object_mut().expect("object").remove("aud");
    refused(&api, &local(&secret, &c), "missing claim `aud`").await;
}

#[tokio::test]
async fn an_alg_none_token_is_refused() {
    let (api, _, _dir) = host().await;
    use base64::Engine;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    for alg in ["none", "None", "NONE"] {
        let token = format!(
            "{}.{}.",
            b64(&json!({"alg": alg, "typ": "JWT", "kid": "rsa-1"})),
            b64(&claims(RSA_ISSUER, "rebound"))
        );
        refused(&api, &token, "supported algorithm").await;
    }
}

#[tokio::test]
async fn an_hs256_token_signed_with_the_issuers_public_key_is_refused() {
    // Algorithm confusion: the RSA issuer's public key used as an HMAC secret.
    let (api, _, _dir) = host().await;
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let t = jsonwebtoken::encode(
        &header,
        &claims(RSA_ISSUER, "rebound"),
        &EncodingKey::from_secret(RSA_PUBLIC),
    )
    .expect("sign");
    refused(&api, &t, "signs with RS256, not HS256").await;
}

#[tokio::test]
async fn a_tampered_payload_is_refused() {
    let (api, secret, _dir) = host().await;
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut c = claims("rebound", "rebound-api");
    c["role"] = json!("viewer");
    for token in [
        local(&secret, &c),
        rsa(&claims(RSA_ISSUER, "rebound"), "rsa-1"),
    ] {
        let parts: Vec<&str> = token.split('.').collect();
        let mut payload: Value =
            serde_json::from_slice(&engine.decode(parts[1]).expect("b64")).expect("json");
        payload["role"] = json!("admin");
        payload["roles"] = json!(["admin"]);
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            engine.encode(payload.to_string()),
            parts[2]
        );
        refused(&api, &forged, "signature does not verify").await;
    }
}

#[tokio::test]
async fn a_token_with_an_unknown_key_id_is_refused() {
    let (api, secret, _dir) = host().await;
    refused(
        &api,
        &rsa(&claims(RSA_ISSUER, "rebound"), "rsa-2"),
        "unknown key id 'rsa-2'",
    )
    .await;
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("local-000000000000".into());
    let t = jsonwebtoken::encode(
        &header,
        &claims("rebound", "rebound-api"),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign");
    refused(&api, &t, "unknown key id").await;
    let t = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims(RSA_ISSUER, "rebound"),
        &EncodingKey::from_rsa_pem(RSA_KEY).expect("key"),
    )
    .expect("sign");
    refused(&api, &t, "no `kid`").await;
}

#[tokio::test]
async fn garbage_bearer_values_are_refused() {
    let (api, _, _dir) = host().await;
    for token in ["x", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9.e30.", "rbt_"] {
        whoami(&api, token).await.problem(StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn a_jwks_that_cannot_be_fetched_stops_the_start_with_a_reason() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = rebound_store::testing::fresh_sqlite(dir.path())
        .await
        .expect("store");
    let mut config = ApiConfig::default();
    config.auth.oidc = vec![OidcIssuer {
        issuer: RSA_ISSUER.into(),
        audience: "rebound".into(),
        jwks_url: "http://127.0.0.1:9/jwks.json".into(),
        algorithm: "RS256".into(),
        role_claim: "roles".into(),
        client_id: None,
        name: None,
        scope: "openid".into(),
    }];
    let err = rebound_api::Auth::start(&store, &config.auth)
        .await
        .expect_err("unreachable JWKS");
    assert!(err.to_string().contains("https://idp.example"), "{err}");
    config.auth.oidc[0].algorithm = "HS256".into();
    let err = rebound_api::Auth::start(&store, &config.auth)
        .await
        .expect_err("HS256 for OIDC");
    assert!(err.to_string().contains("use RS256 or ES256"), "{err}");
}

/// A host trusting the RSA issuer, whose JWKS (served here) the test can
/// rotate, counting its fetches; its keys fetched again after
/// `max_age_seconds`.
async fn rotating_host(
    refresh_seconds: u64,
    max_age_seconds: u64,
) -> (
    Api,
    std::sync::Arc<std::sync::Mutex<(String, usize)>>,
    tempfile::TempDir,
) {
    let jwks = std::sync::Arc::new(std::sync::Mutex::new((
        include_str!("fixtures/rsa-jwks.json").to_owned(),
        0usize,
    )));
    let served = jwks.clone();
    let app = axum::Router::new().route(
        "/rsa.json",
        axum::routing::get(move || {
            let served = served.clone();
            async move {
                let mut s = served.lock().expect("lock");
                s.1 += 1;
                s.0.clone()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().expect("tmp");
    let store = rebound_store::testing::fresh_sqlite(dir.path())
        .await
        .expect("store");
    let mut config = ApiConfig::default();
    config.auth.jwks_refresh_seconds = refresh_seconds;
    config.auth.jwks_max_age_seconds = max_age_seconds;
    config.auth.oidc = vec![OidcIssuer {
        issuer: RSA_ISSUER.into(),
        audience: "rebound".into(),
        jwks_url: format!("http://{addr}/rsa.json"),
        algorithm: "RS256".into(),
        role_claim: "roles".into(),
        client_id: None,
        name: None,
        scope: "openid".into(),
    }];
    (Api::with_config(store, config).await, jwks, dir)
}

#[tokio::test]
async fn a_rotated_issuer_key_is_fetched_when_a_token_names_it() {
    let (api, jwks, _dir) = rotating_host(0, 3600).await;
    let token = rsa(&claims(RSA_ISSUER, "rebound"), "rsa-2");
    // Not published yet: fetched again, still unknown, refused.
    refused(&api, &token, "unknown key id 'rsa-2'").await;
    assert_eq!(
        jwks.lock().expect("lock").1,
        2,
        "fetched at start and again"
    );
    // The issuer rotates: the same token is accepted, after one more fetch.
    {
        let mut j = jwks.lock().expect("lock");
        j.0 = j.0.replace("\"rsa-1\"", "\"rsa-2\"");
    }
    let me = whoami(&api, &token).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
    assert_eq!(jwks.lock().expect("lock").1, 3);
    // The retired key is gone with the old document.
    refused(
        &api,
        &rsa(&claims(RSA_ISSUER, "rebound"), "rsa-1"),
        "unknown key id 'rsa-1'",
    )
    .await;
}

#[tokio::test]
async fn unknown_key_ids_do_not_make_the_host_hammer_the_issuer() {
    let (api, jwks, _dir) = rotating_host(60, 3600).await;
    for i in 0..20 {
        let token = rsa(&claims(RSA_ISSUER, "rebound"), &format!("forged-{i}"));
        refused(&api, &token, "unknown key id").await;
    }
    assert_eq!(
        jwks.lock().expect("lock").1,
        1,
        "fetched at start only: the next refresh is a minute away"
    );
    let me = whoami(&api, &rsa(&claims(RSA_ISSUER, "rebound"), "rsa-1")).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
}

#[tokio::test]
async fn a_key_the_issuer_removed_is_refused_once_the_keys_are_past_their_max_age() {
    let retire = |jwks: &std::sync::Mutex<(String, usize)>| {
        let mut j = jwks.lock().expect("lock");
        j.0 = j.0.replace("\"rsa-1\"", "\"rsa-2\"");
    };
    let token = rsa(&claims(RSA_ISSUER, "rebound"), "rsa-1");

    // Keys an hour old at most: the retired key still passes, no fetch.
    let (api, jwks, _dir) = rotating_host(0, 3600).await;
    assert_eq!(whoami(&api, &token).await.status, StatusCode::OK);
    retire(&jwks);
    assert_eq!(whoami(&api, &token).await.status, StatusCode::OK);
    assert_eq!(jwks.lock().expect("lock").1, 1, "fetched at start only");

    // Keys past their age are fetched again before a token is trusted:
    // the retired key is refused, though the token names a known key id.
    let (api, jwks, _dir) = rotating_host(0, 0).await;
    assert_eq!(whoami(&api, &token).await.status, StatusCode::OK);
    retire(&jwks);
    refused(&api, &token, "unknown key id 'rsa-1'").await;
    let fetches = jwks.lock().expect("lock").1;
    assert!(
        fetches >= 3,
        "fetched at start and before each token: {fetches}"
    );

    // An issuer that cannot be reached keeps its keys: nobody is locked out.
    let (api, jwks, _dir) = rotating_host(0, 0).await;
    jwks.lock().expect("lock").0 = "not a JWKS".into();
    assert_eq!(whoami(&api, &token).await.status, StatusCode::OK);
}

async fn renew(api: &Api, token: &str) -> harness::Reply {
    api.call(
        "POST",
        "/api/v1/auth/renew",
        Some(token),
        &[],
        Body::empty(),
    )
    .await
}

/// The claims of a JWT, unverified.
fn payload(token: &str) -> Value {
    use base64::Engine;
    let part = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .expect("base64"),
    )
    .expect("json")
}

async fn a_local_sign_in_is_renewed_until_the_password_changes_or_it_is_too_old(store: Store) {
    let mut config = ApiConfig::default();
    config.auth.session_max_seconds = 2;
    let api = Api::with_config(store, config).await;
    let set_password = |password: &'static str| {
        let api = &api;
        async move {
            let r = api
                .send(
                    "PUT",
                    "/api/v1/users/erin",
                    Role::Admin,
                    &json!({"password": password, "role": "operator"}),
                )
                .await;
            assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        }
    };
    set_password("a long enough password").await;
    let sign_in = || async {
        login(&api, "erin", "a long enough password").await.json["access_token"]
            .as_str()
            .expect("token")
            .to_owned()
    };
    let token = sign_in().await;
    // A second later: a new token for the same sign-in.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = renew(&api, &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let renewed = r.json["access_token"].as_str().expect("token").to_owned();
    assert_ne!(renewed, token);
    assert_eq!(r.json["expires_in"], 3600);
    let (first, second) = (payload(&token), payload(&renewed));
    assert!(second["exp"].as_u64() > first["exp"].as_u64());
    assert_eq!(
        second["auth_time"], first["auth_time"],
        "counted from the sign-in"
    );
    assert_eq!(
        whoami(&api, &renewed).await.json,
        json!({"name": "user:erin", "role": "operator"})
    );
    let audit = api.get("/api/v1/audit", Role::Admin).await.text;
    assert!(audit.contains("\"auth.renew\""), "{audit}");
    assert!(!audit.contains(&renewed), "no token in the audit log");

    // Past session_max_seconds from the sign-in, renewals are refused —
    // though the token itself is still good for its hour.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let old = renew(&api, &renewed).await;
    let detail = old.problem(StatusCode::UNAUTHORIZED)["detail"]
        .as_str()
        .expect("detail")
        .to_owned();
    assert!(
        detail.contains("session_max_seconds") && detail.contains("log in again"),
        "{detail}"
    );
    assert_eq!(whoami(&api, &renewed).await.status, StatusCode::OK);

    // A password set after the sign-in ends it, renewed tokens included.
    let token = sign_in().await;
    let renewed = renew(&api, &token).await.json["access_token"]
        .as_str()
        .expect("renewed")
        .to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    set_password("another long password").await;
    for t in [&token, &renewed] {
        let r = renew(&api, t).await;
        assert!(
            r.problem(StatusCode::UNAUTHORIZED)["detail"]
                .as_str()
                .is_some_and(|d| d.contains("was set after this sign-in")),
            "{}",
            r.text
        );
    }

    // Only local sign-ins are renewed here.
    let created = api
        .send(
            "POST",
            "/api/v1/tokens",
            Role::Admin,
            &json!({"name": "ci", "role": "operator"}),
        )
        .await;
    let api_token = created.json["token"].as_str().expect("secret").to_owned();
    let r = renew(&api, &api_token).await;
    assert!(
        r.problem(StatusCode::BAD_REQUEST)["detail"]
            .as_str()
            .is_some_and(|d| d.contains("does not expire")),
        "{}",
        r.text
    );
}

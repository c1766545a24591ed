//! Keystone v3 at `/identity`: version discovery, password authentication
//! scoped to the one project (201, token in `X-Subject-Token`, the catalog
//! of every region's endpoints in the body), token validation and
//! revocation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::state::{Shared, Token, random_hex, time_keystone};

const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

pub(super) fn routes(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/identity", get(versions))
        .route("/identity/", get(versions))
        .route("/identity/v3", get(version))
        .route("/identity/v3/", get(version))
        .route(
            "/identity/v3/auth/tokens",
            post(issue).get(validate).delete(revoke).head(validate),
        )
        .with_state(shared)
}

fn version_doc(shared: &Shared) -> Value {
    json!({
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": format!("{}/identity/v3/", shared.base)}],
        "media-types": [{
            "base": "application/json",
            "type": "application/vnd.openstack.identity-v3+json"
        }]
    })
}

async fn versions(State(shared): State<Arc<Shared>>) -> Response {
    let body = json!({"versions": {"values": [version_doc(&shared)]}});
    (StatusCode::MULTIPLE_CHOICES, Json(body)).into_response()
}

async fn version(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({"version": version_doc(&shared)}))
}

fn error(status: StatusCode, title: &str, message: &str) -> Response {
    let body = json!({"error": {"code": status.as_u16(), "title": title, "message": message}});
    (status, Json(body)).into_response()
}

fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "The request you have made requires authentication.",
    )
}

/// A domain reference (`{"id"}` or `{"name"}`) names the site's domain.
fn domain_ok(shared: &Shared, domain: &Value) -> bool {
    domain["id"] == "default" || domain["name"] == shared.options.domain.as_str()
}

/// `POST /v3/auth/tokens`: password (or token) auth, project scope.
async fn issue(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let identity = &body["auth"]["identity"];
    let Some(methods) = identity["methods"].as_array() else {
        return error(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "'methods' is a required property",
        );
    };
    let authenticated = if methods.iter().any(|m| m == "password") {
        let user = &identity["password"]["user"];
        let named =
            user["name"] == shared.options.user.as_str() && domain_ok(&shared, &user["domain"]);
        let by_id = user["id"] == shared.user_id.as_str();
        (named || by_id) && user["password"] == shared.options.password.as_str()
    } else if methods.iter().any(|m| m == "token") {
        let given = identity["token"]["id"].as_str().unwrap_or_default();
        shared
            .lock()
            .tokens
            .get(given)
            .is_some_and(|t| t.expires > Instant::now())
    } else {
        false
    };
    if !authenticated {
        return unauthorized();
    }
    let scope = &body["auth"]["scope"];
    let scoped = match scope.get("project") {
        Some(project) => {
            let named = project["name"] == shared.options.project.as_str()
                && domain_ok(&shared, &project["domain"]);
            if !(named || project["id"] == shared.project_id.as_str()) {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                    "User has no access to project",
                );
            }
            true
        }
        None => false,
    };
    let nocatalog = headers.contains_key("nocatalog");
    let token = format!("gAAAAAB{}", random_hex(60));
    shared.lock().tokens.insert(
        token.clone(),
        Token {
            expires: Instant::now() + TOKEN_LIFETIME,
        },
    );
    let mut doc = token_doc(&shared, methods, scoped);
    if nocatalog && let Some(t) = doc["token"].as_object_mut() {
        t.remove("catalog");
    }
    let mut response = (StatusCode::CREATED, Json(doc)).into_response();
    if let Ok(v) = HeaderValue::from_str(&token) {
        response.headers_mut().insert("x-subject-token", v);
    }
    response
}

fn token_doc(shared: &Shared, methods: &[Value], scoped: bool) -> Value {
    let domain = json!({"id": "default", "name": shared.options.domain});
    let mut token = json!({
        "methods": methods,
        "user": {
            "domain": domain,
            "id": shared.user_id,
            "name": shared.options.user,
            "password_expires_at": null
        },
        "audit_ids": [random_hex(11)],
        "expires_at": time_keystone(chrono::Duration::seconds(3600)),
        "issued_at": time_keystone(chrono::Duration::zero()),
    });
    if scoped {
        let t = token.as_object_mut();
        if let Some(t) = t {
            t.insert(
                "project".into(),
                json!({"domain": domain, "id": shared.project_id, "name": shared.options.project}),
            );
            t.insert("is_domain".into(), json!(false));
            t.insert(
                "roles".into(),
                json!([
                    {"id": "6f0b3b7e1c1c4d3e9a9a2d5a3b0c0001", "name": "admin"},
                    {"id": "6f0b3b7e1c1c4d3e9a9a2d5a3b0c0002", "name": "member"},
                    {"id": "6f0b3b7e1c1c4d3e9a9a2d5a3b0c0003", "name": "reader"}
                ]),
            );
            t.insert("catalog".into(), catalog(shared));
        }
    }
    json!({ "token": token })
}

/// Every service of every region, with public, internal and admin
/// interfaces at the same URL, as devstack registers them.
fn catalog(shared: &Shared) -> Value {
    let services: [(&str, &str, String); 8] = [
        ("identity", "keystone", "/identity".into()),
        ("compute", "nova", "/compute/v2.1".into()),
        (
            "block-storage",
            "cinder",
            format!("/volume/v3/{}", shared.project_id),
        ),
        (
            "volumev3",
            "cinderv3",
            format!("/volume/v3/{}", shared.project_id),
        ),
        ("image", "glance", "/image".into()),
        ("network", "neutron", "/network".into()),
        ("dns", "designate", "/dns".into()),
        ("load-balancer", "octavia", "/load-balancer".into()),
    ];
    let entries: Vec<Value> = services
        .iter()
        .enumerate()
        .map(|(n, (kind, name, path))| {
            let mut endpoints = Vec::new();
            for (r, region) in shared.options.regions.iter().enumerate() {
                let url = if *kind == "identity" {
                    format!("{}{path}", shared.base)
                } else {
                    format!("{}/{region}{path}", shared.base)
                };
                for (i, interface) in ["public", "internal", "admin"].iter().enumerate() {
                    endpoints.push(json!({
                        "id": format!("{n:08x}{r:08x}{i:016x}"),
                        "interface": interface,
                        "region": region,
                        "region_id": region,
                        "url": url,
                    }));
                }
            }
            json!({
                "endpoints": endpoints,
                "id": format!("{n:032x}"),
                "type": kind,
                "name": name,
            })
        })
        .collect();
    Value::Array(entries)
}

/// `GET /v3/auth/tokens`: 200 with the token's body if `X-Subject-Token`
/// is valid (the caller also needs a valid `X-Auth-Token`), else 404.
async fn validate(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let valid = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| {
                shared
                    .lock()
                    .tokens
                    .get(t)
                    .is_some_and(|t| t.expires > Instant::now())
            })
    };
    if !valid("x-auth-token") {
        return unauthorized();
    }
    if !valid("x-subject-token") {
        return error(StatusCode::NOT_FOUND, "Not Found", "Could not find token.");
    }
    let methods = [json!("password")];
    let mut response = Json(token_doc(&shared, &methods, true)).into_response();
    if let Some(v) = headers.get("x-subject-token") {
        response.headers_mut().insert("x-subject-token", v.clone());
    }
    response
}

/// `DELETE /v3/auth/tokens`: revoke the `X-Subject-Token`.
async fn revoke(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let subject = headers
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match shared.lock().tokens.remove(subject) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => error(StatusCode::NOT_FOUND, "Not Found", "Could not find token."),
    }
}

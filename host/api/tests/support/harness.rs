// Shared by several test files; each uses part of it.
#![allow(dead_code)]

//! The API under test: a router over a fresh store, tokens for each role,
//! and one call helper that returns status, headers and the JSON body.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use rebound_api::{ApiConfig, ApiState, Auth, Role, SiteInfo};
use rebound_store::Store;
use serde_json::Value;
use tower::ServiceExt;

pub const PLAN_YAML: &str = include_str!("../../../../docs/examples/plan.yaml");

pub struct Api {
    pub router: Router,
    pub store: Store,
    pub auth: Arc<Auth>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    /// Assert a problem+json refusal with this status; returns the problem.
    #[track_caller]
    pub fn problem(&self, status: StatusCode) -> &Value {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(
            self.headers["content-type"], "application/problem+json",
            "{}",
            self.text
        );
        assert_eq!(self.json["status"], status.as_u16(), "{}", self.text);
        assert!(
            self.json["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{}",
            self.text
        );
        &self.json
    }
}

impl Api {
    pub async fn new(store: Store) -> Self {
        Self::with_config(store, ApiConfig::default()).await
    }

    pub async fn with_config(store: Store, config: ApiConfig) -> Self {
        let auth = Arc::new(Auth::start(&store, &config.auth).await.expect("auth"));
        let mut state = ApiState::new(store.clone(), auth.clone(), &config);
        state.events_poll = std::time::Duration::from_millis(20);
        state.sites = Arc::new(vec![SiteInfo {
            name: "openstack-east".into(),
            plugin: "example".into(),
        }]);
        Self {
            router: rebound_api::router(state, &config),
            store,
            auth,
        }
    }

    /// A local token of user `role` with that role.
    pub fn token(&self, role: Role) -> String {
        self.auth
            .issue(role.as_str(), role)
            .expect("issue")
            .access_token
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(body.into()).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            json,
        }
    }

    /// GET as `role`.
    pub async fn get(&self, path: &str, role: Role) -> Reply {
        let token = self.token(role);
        self.call("GET", path, Some(&token), &[], Body::empty())
            .await
    }

    /// A JSON request as `role`.
    pub async fn send(&self, method: &str, path: &str, role: Role, body: &Value) -> Reply {
        let token = self.token(role);
        self.call(
            method,
            path,
            Some(&token),
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await
    }

    /// PUT a plan document (YAML) as admin.
    pub async fn put_plan_yaml(&self, name: &str, yaml: &str) -> Reply {
        let token = self.token(Role::Admin);
        self.call(
            "PUT",
            &format!("/api/v1/plans/{name}"),
            Some(&token),
            &[("content-type", "application/yaml")],
            yaml.to_owned(),
        )
        .await
    }

    /// Audit entries so far (to prove a refusal wrote nothing).
    pub async fn audit_len(&self) -> usize {
        self.store.audit_log(10_000).await.expect("audit").len()
    }
}

/// The example plan renamed.
pub fn plan_named(name: &str) -> String {
    PLAN_YAML.replacen("name: shop", &format!("name: {name}"), 1)
}

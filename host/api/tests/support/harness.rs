// Shared by several test files; each uses part of it.
#![allow(dead_code)]

//! The API under test: a router over a fresh store, tokens for each role,
//! and one call helper that returns status, headers and the JSON body.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use rebound_api::seal::Sealer;
use rebound_api::sites::SiteRegistry;
use rebound_api::{ApiConfig, ApiState, Auth, Role};
use rebound_store::Store;
use serde_json::Value;
use tower::ServiceExt;

pub const PLAN_YAML: &str = include_str!("../../../../docs/examples/plan.yaml");

pub struct Api {
    pub router: Router,
    pub store: Store,
    pub auth: Arc<Auth>,
    /// The host's sites: the example plugin installed, the example plan's
    /// two sites bound to one lab example site.
    pub registry: Arc<SiteRegistry>,
    pub site: Arc<rebound_lab::example::ExampleSite>,
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
        // The users `token(role)` issues tokens for (a local user's token is
        // good only while the user exists) where a test has not made them;
        // no password logs them in.
        for role in [
            Role::Admin,
            Role::Operator,
            Role::Viewer,
            Role::PluginPublisher,
        ] {
            if store.user(role.as_str()).await.expect("user").is_some() {
                continue;
            }
            let user = rebound_store::UserRecord {
                name: role.as_str().to_owned(),
                password_hash: "!".to_owned(),
                role: role.as_str().to_owned(),
            };
            store.put_user(&user, "system").await.expect("user");
        }
        let mut state = ApiState::new(store.clone(), auth.clone(), &config);
        state.events_poll = std::time::Duration::from_millis(20);
        let registry = Arc::new(registry(&store).await);
        let site = Arc::new(
            rebound_lab::example::ExampleSite::start(Default::default())
                .await
                .expect("lab site"),
        );
        for name in ["openstack-east", "kubevirt-west"] {
            let url = format!("http://{}", site.addr);
            let definition = rebound_api::sites::SiteDefinition {
                name: name.into(),
                plugin: "example".into(),
                config: [("endpoint".to_owned(), url.clone())].into(),
                secrets: [("token".to_owned(), site.token.clone())].into(),
                egress: vec![url],
                ca_pem: None,
                max_calls: None,
            };
            let bound = rebound_api::sites::bind(&registry.runtime, &definition).expect("bind");
            registry.steps.bind(name, bound);
        }
        state.registry = Some(registry.clone());
        Self {
            router: rebound_api::router(state, &config),
            store,
            auth,
            registry,
            site,
        }
    }

    /// Another host of the same store (its own runtime and bindings, the
    /// same seal key), answering through this API's router type.
    pub async fn replica(&self) -> Api {
        let config = ApiConfig::default();
        let mut state = ApiState::new(self.store.clone(), self.auth.clone(), &config);
        let registry = Arc::new(registry(&self.store).await);
        state.registry = Some(registry.clone());
        Api {
            router: rebound_api::router(state, &config),
            store: self.store.clone(),
            auth: self.auth.clone(),
            registry,
            site: self.site.clone(),
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

    /// Drive the runs waiting to be driven, through the example plugin
    /// against the lab site, until none is left.
    pub async fn drive(&self) {
        let executor = rebound_engine::Executor::new(
            self.store.clone(),
            self.registry.steps.clone(),
            rebound_engine::ExecutorConfig {
                poll_interval: std::time::Duration::from_millis(20),
                ..rebound_engine::ExecutorConfig::new("api-test")
            },
        );
        while executor.work_once().await.expect("work").is_some() {}
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

/// The seal key every test host shares (as every host of one store must).
pub const SEAL_KEY: [u8; 32] = [42; 32];

/// A site registry over a fresh runtime with the example plugin installed.
pub async fn registry(store: &Store) -> SiteRegistry {
    let runtime = Arc::new(rebound_runtime::testing::runtime());
    rebound_runtime::testing::load(&runtime, "example").await;
    let steps = Arc::new(rebound_engine::PluginSteps::new(
        runtime.clone(),
        store.clone(),
        Default::default(),
    ));
    SiteRegistry::new(steps, runtime, Sealer::from_key(SEAL_KEY), Vec::new())
}

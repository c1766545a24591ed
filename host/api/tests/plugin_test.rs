//! Publishing plugins through the API: a signed package is verified,
//! installed, kept for the next start and audited; a tampered, unsigned or
//! malformed one is refused and changes nothing; only plugin-publishers and
//! admins may publish; an admin lifts a quarantine. Needs the built
//! plugins (`REBOUND_PLUGIN_DIR`, as every plugin test).

#[path = "support/harness.rs"]
mod harness;

use std::sync::Arc;

use axum::http::StatusCode;
use base64::Engine;
use harness::Api;
use rebound_api::Role;
use rebound_runtime::{PluginPackage, Runtime, RuntimeConfig};
use serde_json::{Value, json};

fn body(package: &PluginPackage) -> Value {
    json!({
        "manifest": package.manifest,
        "wasm": base64::engine::general_purpose::STANDARD.encode(&package.wasm),
        "signature": package.signature,
    })
}

async fn host(dir: &std::path::Path) -> (Api, Arc<Runtime>) {
    let store = rebound_store::testing::fresh_sqlite(dir)
        .await
        .expect("store");
    let mut api = Api::new(store.clone()).await;
    // Not the shared compilation cache: that one is not this test's to write.
    let runtime = Arc::new(
        Runtime::new(RuntimeConfig {
            trust: rebound_runtime::testing::trust(),
            ..RuntimeConfig::default()
        })
        .expect("runtime"),
    );
    let config = rebound_api::ApiConfig::default();
    let mut state = rebound_api::ApiState::new(store, api.auth.clone(), &config);
    state.runtime = Some(runtime.clone());
    state.plugin_dir = Some(dir.join("plugins"));
    std::fs::create_dir_all(dir.join("plugins")).expect("plugins dir");
    api.router = rebound_api::router(state, &config);
    (api, runtime)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_package_is_verified_installed_kept_and_audited() {
    let dir = tempfile::tempdir().expect("tmp");
    let (api, runtime) = host(dir.path()).await;
    let package = rebound_runtime::testing::package("example");
    let before = api.audit_len().await;

    // Refused packages change nothing.
    let mut tampered = package.clone();
    tampered.wasm.push(0);
    let r = api
        .send(
            "POST",
            "/api/v1/plugins",
            Role::PluginPublisher,
            &body(&tampered),
        )
        .await;
    assert!(
        r.problem(StatusCode::UNPROCESSABLE_ENTITY)["detail"]
            .as_str()
            .is_some_and(|d| d.contains("digest")),
        "{}",
        r.text
    );
    let mut unsigned = package.clone();
    unsigned.signature = None;
    let r = api
        .send(
            "POST",
            "/api/v1/plugins",
            Role::PluginPublisher,
            &body(&unsigned),
        )
        .await;
    assert!(r.text.contains("unsigned"), "{}", r.text);
    r.problem(StatusCode::UNPROCESSABLE_ENTITY);
    let mut bad = body(&package);
    bad["wasm"] = json!("not base64!");
    api.send("POST", "/api/v1/plugins", Role::PluginPublisher, &bad)
        .await
        .problem(StatusCode::BAD_REQUEST);
    bad = body(&package);
    bad["extra"] = json!(1);
    api.send("POST", "/api/v1/plugins", Role::PluginPublisher, &bad)
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    for role in [Role::Viewer, Role::Operator] {
        api.send("POST", "/api/v1/plugins", role, &body(&package))
            .await
            .problem(StatusCode::FORBIDDEN);
    }
    assert!(runtime.list().is_empty());
    assert_eq!(api.audit_len().await, before);
    assert!(!dir.path().join("plugins/example").exists());

    for role in [Role::PluginPublisher, Role::Admin] {
        let r = api
            .send("POST", "/api/v1/plugins", role, &body(&package))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.json["name"], "example");
    }
    assert_eq!(runtime.list().len(), 1);
    let listed = api.get("/api/v1/plugins", Role::Viewer).await;
    assert_eq!(listed.json["items"][0]["name"], "example");
    assert_eq!(listed.json["items"][0]["contract"], "0.2.0");
    // Kept where the next start loads it, with no publish leftovers.
    let kept = PluginPackage::read_dir(&dir.path().join("plugins/example")).expect("kept");
    assert_eq!(kept.wasm, package.wasm);
    let mut leftovers: Vec<_> = std::fs::read_dir(dir.path().join("plugins"))
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    leftovers.sort();
    assert_eq!(leftovers, [".versions", "example"]);
    let audit = api.get("/api/v1/audit", Role::Admin).await;
    assert_eq!(audit.json["items"][0]["action"], "plugin.publish");
    assert_eq!(audit.json["items"][0]["principal"], "user:admin");
    assert_eq!(audit.json["items"][1]["principal"], "user:plugin-publisher");

    // An admin lifts a quarantine; others may not.
    api.send(
        "POST",
        "/api/v1/plugins/example/release",
        Role::Operator,
        &json!({}),
    )
    .await
    .problem(StatusCode::FORBIDDEN);
    let r = api
        .send(
            "POST",
            "/api/v1/plugins/example/release",
            Role::Admin,
            &json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["quarantined"], false);
}

/// A plugin built against the contract 0.1 is published like any other,
/// and its listing says which contract it speaks (the UI flags it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_of_the_contract_0_1_is_published_and_listed_as_such() {
    let dir = tempfile::tempdir().expect("tmp");
    let (api, runtime) = host(dir.path()).await;
    let package = rebound_runtime::testing::package("example-contract-0-1");
    let r = api
        .send(
            "POST",
            "/api/v1/plugins",
            Role::PluginPublisher,
            &body(&package),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["contract"], "0.1.0");
    assert_eq!(runtime.list().len(), 1);
    let listed = api.get("/api/v1/plugins", Role::Viewer).await;
    assert_eq!(listed.json["items"][0]["contract"], "0.1.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_listed_rolled_back_and_plugins_disabled_by_admins_only() {
    let dir = tempfile::tempdir().expect("tmp");
    let (api, runtime) = host(dir.path()).await;
    for number in ["0.2.0", "0.3.0"] {
        let r = api
            .send(
                "POST",
                "/api/v1/plugins",
                Role::PluginPublisher,
                &body(&rebound_runtime::testing::release("example", number)),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let listed = api
        .get("/api/v1/plugins/example/versions", Role::Viewer)
        .await;
    let pairs: Vec<(String, bool)> = listed.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|v| {
            (
                v["version"].as_str().unwrap_or_default().to_owned(),
                v["active"] == true,
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [("0.3.0".to_owned(), true), ("0.2.0".to_owned(), false)]
    );
    assert!(
        dir.path()
            .join("plugins/.versions/example/0.2.0/plugin.wasm")
            .is_file()
    );

    // Roll back to 0.2.0: admins only; an unknown version is a 404.
    let before = api.audit_len().await;
    for role in [Role::Viewer, Role::Operator, Role::PluginPublisher] {
        for path in [
            "/api/v1/plugins/example/versions/0.2.0/activate",
            "/api/v1/plugins/example/disable",
            "/api/v1/plugins/example/enable",
        ] {
            api.send("POST", path, role, &json!({}))
                .await
                .problem(StatusCode::FORBIDDEN);
        }
    }
    api.send(
        "POST",
        "/api/v1/plugins/example/versions/9.9.9/activate",
        Role::Admin,
        &json!({}),
    )
    .await
    .problem(StatusCode::NOT_FOUND);
    api.send(
        "POST",
        "/api/v1/plugins/example/versions/latest/activate",
        Role::Admin,
        &json!({}),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY);
    api.send(
        "POST",
        "/api/v1/plugins/nope/disable",
        Role::Admin,
        &json!({}),
    )
    .await
    .problem(StatusCode::NOT_FOUND);
    assert_eq!(api.audit_len().await, before);
    let r = api
        .send(
            "POST",
            "/api/v1/plugins/example/versions/0.2.0/activate",
            Role::Admin,
            &json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        runtime.active("example").expect("active").version(),
        "0.2.0"
    );
    let kept =
        std::fs::read_to_string(dir.path().join("plugins/example/manifest.toml")).expect("kept");
    assert!(kept.contains("version = \"0.2.0\""), "{kept}");

    // Disabled: every call fails at once, saying how to enable it; kept
    // across restarts by its marker; enabled again by an admin.
    let r = api
        .send(
            "POST",
            "/api/v1/plugins/example/disable",
            Role::Admin,
            &json!({}),
        )
        .await;
    assert_eq!(r.json["enabled"], false, "{}", r.text);
    assert!(dir.path().join("plugins/.disabled/example").is_file());
    let plugin = runtime.active("example").expect("active");
    let ctx = rebound_runtime::CallContext::new(Vec::new(), std::time::Duration::from_secs(5));
    let err = runtime
        .call(&plugin, &ctx, rebound_runtime::Describe)
        .await
        .expect_err("disabled");
    assert!(err.to_string().contains("/enable"), "{err}");
    let listed = api.get("/api/v1/plugins", Role::Viewer).await;
    assert_eq!(listed.json["items"][0]["enabled"], false);
    let r = api
        .send(
            "POST",
            "/api/v1/plugins/example/enable",
            Role::Admin,
            &json!({}),
        )
        .await;
    assert_eq!(r.json["enabled"], true, "{}", r.text);
    assert!(!dir.path().join("plugins/.disabled/example").exists());
    runtime
        .call(&plugin, &ctx, rebound_runtime::Describe)
        .await
        .expect("enabled again");
    let audit = api.get("/api/v1/audit", Role::Admin).await;
    let actions: Vec<&str> = audit.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .take(3)
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        ["plugin.enable", "plugin.disable", "plugin.activate"]
    );
}

//! Publishing plugins through the API: a signed package is verified,
//! installed, kept in the store (for the next start and every other host
//! on it) and audited; a tampered, unsigned or
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
    host_on(store).await
}

/// A runtime trusting the test publisher's key. Not the shared
/// compilation cache: that one is not this test's to write.
fn new_runtime(trust: rebound_runtime::TrustPolicy) -> Arc<Runtime> {
    Arc::new(
        Runtime::new(RuntimeConfig {
            trust,
            ..RuntimeConfig::default()
        })
        .expect("runtime"),
    )
}

/// A host's API with a plugin runtime of its own on `store`.
async fn host_on(store: rebound_store::Store) -> (Api, Arc<Runtime>) {
    let mut api = Api::new(store.clone()).await;
    let runtime = new_runtime(rebound_runtime::testing::trust());
    let config = rebound_api::ApiConfig::default();
    let mut state = rebound_api::ApiState::new(store, api.auth.clone(), &config);
    state.runtime = Some(runtime.clone());
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
    assert!(
        api.store
            .plugin_versions()
            .await
            .expect("versions")
            .is_empty()
    );

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
    // Kept in the store, where the next start loads it.
    let kept = api
        .store
        .plugin_package("example", "0.1.0")
        .await
        .expect("store")
        .expect("kept");
    assert_eq!(
        (kept.wasm, kept.signature),
        (package.wasm.clone(), package.signature.clone())
    );
    let restarted = new_runtime(rebound_runtime::testing::trust());
    let sync = rebound_engine::plugins::PluginSync::new(api.store.clone(), restarted.clone());
    let synced = sync.once().await.expect("sync");
    assert_eq!(synced.loaded, ["example 0.1.0"]);
    assert_eq!(
        restarted.active("example").expect("loaded").digest,
        kept.sha256
    );
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
    let settings = api.store.plugin_settings().await.expect("settings");
    assert_eq!(settings[0].active.as_deref(), Some("0.2.0"));

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
    assert!(!api.store.plugin_settings().await.expect("settings")[0].enabled);
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
    assert!(api.store.plugin_settings().await.expect("settings")[0].enabled);
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

/// What one host's API publishes, activates, disables and enables, every
/// other host on the store follows at its next sync, each verifying the
/// packages against its own trusted keys; a version published again with
/// another component is refused and changes nothing.
async fn hosts_on_one_store_share_published_plugins(store: rebound_store::Store) {
    use rebound_engine::plugins::PluginSync;
    let (a, _) = host_on(store.clone()).await;
    let b_runtime = new_runtime(rebound_runtime::testing::trust());
    let b = PluginSync::new(store.clone(), b_runtime.clone());
    let wary = new_runtime(rebound_runtime::TrustPolicy {
        trusted_keys: Vec::new(),
        allow_unsigned: false,
    });
    let c = PluginSync::new(store.clone(), wary.clone());
    let publish = async |package: &PluginPackage| {
        a.send(
            "POST",
            "/api/v1/plugins",
            Role::PluginPublisher,
            &body(package),
        )
        .await
    };
    for number in ["0.2.0", "0.3.0"] {
        let r = publish(&rebound_runtime::testing::release("example", number)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let synced = b.once().await.expect("sync");
    assert_eq!(synced.loaded, ["example 0.2.0", "example 0.3.0"]);
    let version = |rt: &Runtime| rt.active("example").map(|p| p.version());
    assert_eq!(version(&b_runtime).as_deref(), Some("0.3.0"));
    assert_eq!(
        b.once().await.expect("sync"),
        Default::default(),
        "nothing new"
    );
    // A host that trusts no key loads none of them, and says so once.
    assert_eq!(c.once().await.expect("sync"), Default::default());
    assert!(wary.list().is_empty());

    // The same version, another component: refused.
    let before = a.audit_len().await;
    let other = rebound_runtime::testing::release("example-contract-0-1", "0.3.0");
    let r = publish(&other).await;
    assert!(
        r.problem(StatusCode::CONFLICT)["detail"]
            .as_str()
            .is_some_and(|d| d.contains("publish the change as a new version")),
        "{}",
        r.text
    );
    assert_eq!(a.audit_len().await, before);

    // Rolled back and disabled on one host: on the other too.
    let r = a
        .send(
            "POST",
            "/api/v1/plugins/example/versions/0.2.0/activate",
            Role::Admin,
            &json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    a.send(
        "POST",
        "/api/v1/plugins/example/disable",
        Role::Admin,
        &json!({}),
    )
    .await;
    let synced = b.once().await.expect("sync");
    assert_eq!(
        (synced.activated, synced.switched),
        (vec!["example 0.2.0".to_owned()], vec!["example".to_owned()])
    );
    let active = b_runtime.active("example").expect("active");
    assert_eq!(
        (active.version(), active.enabled()),
        ("0.2.0".to_owned(), false)
    );
    a.send(
        "POST",
        "/api/v1/plugins/example/enable",
        Role::Admin,
        &json!({}),
    )
    .await;
    b.once().await.expect("sync");
    assert!(b_runtime.active("example").expect("active").enabled());

    // A version another host published, activated on a host that has not
    // synced yet (it has only the package of its own plugin folder):
    // loaded from the store on the spot.
    let (d, d_runtime) = host_on(store.clone()).await;
    let own = d_runtime
        .load(&rebound_runtime::testing::package("example"))
        .await
        .expect("own package");
    d_runtime.install(own);
    let r = d
        .send(
            "POST",
            "/api/v1/plugins/example/versions/0.3.0/activate",
            Role::Admin,
            &json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(version(&d_runtime).as_deref(), Some("0.3.0"));
    assert_eq!(
        d_runtime.versions("example").len(),
        2,
        "0.3.0 beside its own"
    );
    b.once().await.expect("sync");
    assert_eq!(version(&b_runtime).as_deref(), Some("0.3.0"));
}

rebound_store::on_both_backends!(hosts_on_one_store_share_published_plugins);

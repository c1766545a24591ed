//! Sites through the API: an admin registers a site of an installed plugin
//! against a running lab site; its health and workloads come from the
//! plugin; its credentials are sealed in the store and never shown back,
//! not even in the audit log; bad definitions are refused and change
//! nothing; another host of the store picks the site up; a site a plan
//! names cannot be deleted. Needs the built plugins (`REBOUND_PLUGIN_DIR`).

#[path = "support/harness.rs"]
mod harness;

use axum::http::StatusCode;
use harness::{Api, PLAN_YAML};
use rebound_api::Role;
use rebound_lab::example::{ExampleOptions, ExampleSite};
use rebound_store::Store;
use serde_json::{Value, json};

rebound_store::on_both_backends!(
    a_registered_site_serves_health_and_workloads_and_keeps_its_secret,
    bad_site_definitions_are_refused_and_change_nothing,
    another_host_binds_the_site_and_a_named_site_is_not_deleted,
    plans_on_unknown_sites_or_below_the_snapshot_granularity_are_refused,
);

fn body(site: &ExampleSite, token: &str) -> Value {
    let url = format!("http://{}", site.addr);
    json!({
        "plugin": "example",
        "config": {"endpoint": url},
        "secrets": {"token": token},
        "egress": [url],
    })
}

async fn a_registered_site_serves_health_and_workloads_and_keeps_its_secret(store: Store) {
    let site = ExampleSite::start(ExampleOptions::default())
        .await
        .expect("site");
    let api = Api::new(store.clone()).await;
    let r = api
        .send(
            "PUT",
            "/api/v1/sites/east",
            Role::Admin,
            &body(&site, &site.token),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["source"], "api");
    assert_eq!(r.json["secrets"], json!(["token"]));
    assert_eq!(r.json["revision"], 1);
    assert!(!r.text.contains(&site.token), "{}", r.text);

    let health = api.get("/api/v1/sites/east/health", Role::Viewer).await;
    assert_eq!(health.json["serving"], true, "{}", health.text);
    let workloads = api.get("/api/v1/sites/east/workloads", Role::Viewer).await;
    let names: Vec<&str> = workloads.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|w| w["name"].as_str())
        .collect();
    assert_eq!(names, ["web-1", "app-1", "db-1"], "{}", workloads.text);
    assert_eq!(
        workloads.json["items"][2]["disks"][0]["size_bytes"],
        100u64 << 30
    );

    // Listed and read back without the secret's value, anywhere.
    let list = api.get("/api/v1/sites", Role::Viewer).await;
    assert_eq!(list.json["items"][0]["name"], "east");
    assert_eq!(
        list.json["items"][0]["max_calls"],
        Value::Null,
        "the default"
    );
    let mut limited = body(&site, &site.token);
    limited["max_calls"] = json!(3);
    let r = api
        .send("PUT", "/api/v1/sites/east", Role::Admin, &limited)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (&r.json["max_calls"], &r.json["revision"]),
        (&json!(3), &json!(2))
    );
    assert_eq!(
        api.get("/api/v1/sites/east", Role::Viewer).await.json["max_calls"],
        3
    );
    let r = api
        .send(
            "PUT",
            "/api/v1/sites/east",
            Role::Admin,
            &body(&site, &site.token),
        )
        .await;
    assert_eq!(r.json["max_calls"], Value::Null, "{}", r.text);
    let one = api.get("/api/v1/sites/east", Role::Viewer).await;
    assert_eq!(
        one.json["config"]["endpoint"],
        format!("http://{}", site.addr)
    );
    let audit = api.get("/api/v1/audit", Role::Admin).await;
    assert!(audit.text.contains("site.create"), "{}", audit.text);
    for text in [&list.text, &one.text, &audit.text] {
        assert!(!text.contains(&site.token), "{text}");
    }
    let stored = store.site("east").await.expect("site").expect("stored");
    assert!(!stored.secrets["token"].contains(&site.token));

    // An update without `secrets` keeps the stored credential.
    let mut update = body(&site, "unused");
    update.as_object_mut().expect("object").remove("secrets");
    update["config"]["region"] = json!("one");
    let r = api
        .send("PUT", "/api/v1/sites/east", Role::Admin, &update)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["revision"], 4, "after the two updates of max_calls");
    let health = api.get("/api/v1/sites/east/health", Role::Viewer).await;
    assert_eq!(health.json["serving"], true, "{}", health.text);

    // A disabled plugin is the operator's choice, not a broken site: 409
    // saying how to enable it, never a 5xx.
    api.registry.runtime.set_enabled("example", false);
    let refused = api.get("/api/v1/sites/east/workloads", Role::Viewer).await;
    refused.problem(StatusCode::CONFLICT);
    assert!(
        refused.text.contains("/api/v1/plugins/example/enable"),
        "{}",
        refused.text
    );
    api.registry.runtime.set_enabled("example", true);

    // A platform that is down is a bad gateway, not the site's to fix.
    site.set_down(true);
    let down = api.get("/api/v1/sites/east/workloads", Role::Viewer).await;
    assert_eq!(
        down.problem(StatusCode::BAD_GATEWAY)["type"],
        "https://rebound.dev/problems/site-unavailable"
    );
    site.set_down(false);

    // A wrong credential: the plugin says so, nothing crashes; the site is
    // the operator's to fix (409), and the secret is not echoed.
    let r = api
        .send(
            "PUT",
            "/api/v1/sites/east",
            Role::Admin,
            &body(&site, "wrong"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let workloads = api.get("/api/v1/sites/east/workloads", Role::Viewer).await;
    let problem = workloads.problem(StatusCode::CONFLICT);
    assert_eq!(
        problem["type"], "https://rebound.dev/problems/site-misconfigured",
        "{}",
        workloads.text
    );
    assert!(!workloads.text.contains("wrong\""), "{}", workloads.text);

    // So is a missing setting (schemathesis found it as a 502): the
    // message names the setting to add.
    let mut bare = body(&site, &site.token);
    bare["config"]
        .as_object_mut()
        .expect("config")
        .remove("endpoint");
    let r = api
        .send("PUT", "/api/v1/sites/east", Role::Admin, &bare)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let workloads = api.get("/api/v1/sites/east/workloads", Role::Viewer).await;
    workloads.problem(StatusCode::CONFLICT);
    assert!(workloads.text.contains("endpoint"), "{}", workloads.text);

    api.send("DELETE", "/api/v1/sites/east", Role::Admin, &json!({}))
        .await;
    api.get("/api/v1/sites/east", Role::Viewer)
        .await
        .problem(StatusCode::NOT_FOUND);
    api.get("/api/v1/sites/east/health", Role::Viewer)
        .await
        .problem(StatusCode::NOT_FOUND);
    assert_eq!(api.registry.list(), Vec::new());
}

async fn bad_site_definitions_are_refused_and_change_nothing(store: Store) {
    let site = ExampleSite::start(ExampleOptions::default())
        .await
        .expect("site");
    let api = Api::new(store).await;
    let good = body(&site, &site.token);
    let before = api.audit_len().await;
    let with = |field: &str, value: Value| {
        let mut b = good.clone();
        b[field] = value;
        b
    };
    let cases: Vec<(&str, Value, StatusCode, &str)> = vec![
        (
            "east",
            with("plugin", json!("nope")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no plugin named 'nope'",
        ),
        (
            "east",
            with("egress", json!(["not a url"])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "egress 'not a url'",
        ),
        (
            "east",
            with("ca_pem", json!("hello")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "ca_pem",
        ),
        (
            "East!",
            good.clone(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "site name",
        ),
        (
            "east",
            with("password", json!("x")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field",
        ),
        (
            "east",
            with("config", json!({"endpoint": 5})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid type",
        ),
        (
            "east",
            with("max_calls", json!(0)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "max_calls must be at least 1",
        ),
        (
            "east",
            with("max_calls", json!(-2)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "max_calls",
        ),
    ];
    for (name, b, status, says) in cases {
        let r = api
            .send("PUT", &format!("/api/v1/sites/{name}"), Role::Admin, &b)
            .await;
        let problem = r.problem(status);
        assert!(
            problem["detail"].as_str().is_some_and(|d| d.contains(says)),
            "{name} {b}: {}",
            r.text
        );
    }
    api.send("PUT", "/api/v1/sites/east", Role::Operator, &good)
        .await
        .problem(StatusCode::FORBIDDEN);
    assert_eq!(api.audit_len().await, before);
    assert_eq!(
        api.get("/api/v1/sites", Role::Viewer).await.json["items"],
        json!([])
    );
    api.send("DELETE", "/api/v1/sites/east", Role::Admin, &json!({}))
        .await
        .problem(StatusCode::NOT_FOUND);
}

async fn another_host_binds_the_site_and_a_named_site_is_not_deleted(store: Store) {
    let site = ExampleSite::start(ExampleOptions::default())
        .await
        .expect("site");
    let api = Api::new(store).await;
    let other = api.replica().await;
    for name in ["openstack-east", "kubevirt-west"] {
        let r = api
            .send(
                "PUT",
                &format!("/api/v1/sites/{name}"),
                Role::Admin,
                &body(&site, &site.token),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    other
        .get("/api/v1/sites/openstack-east/health", Role::Viewer)
        .await
        .problem(StatusCode::NOT_FOUND);
    let refused = other.registry.refresh(&other.store).await.expect("refresh");
    assert!(refused.is_empty(), "{refused:?}");
    let health = other
        .get("/api/v1/sites/openstack-east/health", Role::Viewer)
        .await;
    assert_eq!(health.json["serving"], true, "{}", health.text);

    // The example plan names both sites.
    api.put_plan_yaml("shop", PLAN_YAML).await;
    let r = api
        .send(
            "DELETE",
            "/api/v1/sites/kubevirt-west",
            Role::Admin,
            &json!({}),
        )
        .await;
    assert!(
        r.problem(StatusCode::CONFLICT)["detail"]
            .as_str()
            .is_some_and(|d| d.contains("shop")),
        "{}",
        r.text
    );

    // A host with another seal key cannot open the credential and says so.
    let stranger = rebound_api::sites::SiteRegistry::new(
        other.registry.steps.clone(),
        other.registry.runtime.clone(),
        rebound_api::seal::Sealer::from_key([1; 32]),
        Vec::new(),
    );
    let refused = stranger.refresh(&other.store).await.expect("refresh");
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused[0].1.contains("seal key"), "{refused:?}");
}

async fn plans_on_unknown_sites_or_below_the_snapshot_granularity_are_refused(store: Store) {
    let api = Api::new(store).await;
    let before = api.audit_len().await;
    let put = |yaml: String| {
        let api = &api;
        async move {
            let token = api.token(Role::Admin);
            api.call(
                "PUT",
                "/api/v1/plans/shop",
                Some(&token),
                &[("content-type", "application/yaml")],
                yaml,
            )
            .await
        }
    };
    let r = put(PLAN_YAML.replace("source: openstack-east", "source: nowhere")).await;
    let problem = r.problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["errors"][0]["field"], "source", "{}", r.text);
    assert!(r.text.contains("not registered"), "{}", r.text);
    // The example platform keeps recovery points a minute apart at best.
    let r = put(PLAN_YAML
        .replace("interval: 5m", "interval: 10s")
        .replace("rpo: 15m", "rpo: 30s"))
    .await;
    let problem = r.problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.text.contains("60s") || r.text.contains("1m"),
        "{}",
        r.text
    );
    assert!(problem["errors"].as_array().is_some_and(|e| !e.is_empty()));
    assert_eq!(api.audit_len().await, before);
    api.get("/api/v1/plans/shop", Role::Viewer)
        .await
        .problem(StatusCode::NOT_FOUND);
}

//! Every endpoint's success and refusal paths, the role matrix, bad input
//! that changes nothing, idempotent triggers and run progress as events —
//! on SQLite always and on PostgreSQL when `REBOUND_TEST_POSTGRES_URL` is
//! set. The OpenAPI document is checked against docs/api/openapi.json.

#[path = "support/harness.rs"]
mod harness;

use axum::body::Body;
use axum::http::StatusCode;
use harness::{Api, PLAN_YAML, plan_named};
use rebound_api::Role;
use rebound_store::{RecoveryPointRecord, Store};
use serde_json::{Value, json};

rebound_store::on_both_backends!(
    plans_are_created_updated_listed_and_read,
    refused_plan_documents_change_nothing,
    bad_bodies_are_4xx_problems_and_change_nothing,
    an_idempotency_key_returns_the_same_run,
    a_site_fails_over_every_plan_it_serves,
    a_permanent_failover_protects_onto_a_new_standby,
    an_illegal_transition_is_a_conflict_naming_the_state,
    runs_are_listed_filtered_paginated_and_detailed,
    approve_and_cancel_follow_the_run_and_events_stream_to_its_end,
    dry_run_previews_without_changing_anything,
    dry_run_previews_unsaved_edits,
    compliance_events_audit_and_recovery_points,
    plugins_and_sites,
    the_role_matrix_holds_for_every_mutating_endpoint,
    a_plan_is_deleted_once_unprotected_and_its_history_stays,
    every_endpoint_refuses_an_anonymous_caller,
    unknown_routes_and_methods_are_problems,
);

async fn plans_are_created_updated_listed_and_read(store: Store) {
    let api = Api::new(store).await;
    let created = api.put_plan_yaml("shop", PLAN_YAML).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.json["revision"], 1);
    assert_eq!(created.json["lifecycle"]["state"], "protected");
    assert_eq!(created.json["lifecycle"]["primary"], "openstack-east");
    assert_eq!(
        created.json["document"]["objectives"]["failback"]["rto"],
        "2h"
    );

    // The same document as JSON updates it.
    let mut doc = created.json["document"].clone();
    doc["description"] = json!("updated");
    let updated = api
        .send("PUT", "/api/v1/plans/shop", Role::Admin, &doc)
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.text);
    assert_eq!(updated.json["revision"], 2);

    let one = api.get("/api/v1/plans/shop", Role::Viewer).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json["document"]["description"], "updated");

    for name in ["alpha", "beta"] {
        let r = api.put_plan_yaml(name, &plan_named(name)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let page = api.get("/api/v1/plans?limit=2", Role::Viewer).await;
    let names: Vec<_> = page.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert_eq!(names, [json!("alpha"), json!("beta")]);
    assert_eq!(page.json["next"], "beta");
    let rest = api
        .get("/api/v1/plans?limit=2&after=beta", Role::Viewer)
        .await;
    assert_eq!(rest.json["items"][0]["name"], "shop");
    assert_eq!(rest.json["items"].as_array().map(Vec::len), Some(1));
    assert!(rest.json["next"].is_null());

    api.get("/api/v1/plans/nope", Role::Viewer)
        .await
        .problem(StatusCode::NOT_FOUND);
    api.get("/api/v1/plans?limit=0", Role::Viewer)
        .await
        .problem(StatusCode::BAD_REQUEST);
    api.get("/api/v1/plans?limit=501", Role::Viewer)
        .await
        .problem(StatusCode::BAD_REQUEST);
    api.get("/api/v1/plans?limit=ten", Role::Viewer)
        .await
        .problem(StatusCode::BAD_REQUEST);
    api.get("/api/v1/plans?colour=red", Role::Viewer)
        .await
        .problem(StatusCode::BAD_REQUEST);
}

async fn refused_plan_documents_change_nothing(store: Store) {
    let api = Api::new(store).await;
    let before = api.audit_len().await;

    // Every rule broken is listed by field.
    let bad = PLAN_YAML
        .replace("target: kubevirt-west", "target: openstack-east")
        .replace(
            "failback: { rto: 2h, rpo: 0s }",
            "failback: { rto: 0s, rpo: 0s }",
        );
    let r = api.put_plan_yaml("shop", &bad).await;
    let problem = r.problem(StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert!(fields.contains(&"target"), "{}", r.text);

    // An unknown field names its place.
    let unknown = PLAN_YAML.replace("  retention: 6", "  retention: 6\n  colour: red");
    let r = api.put_plan_yaml("shop", &unknown).await;
    let problem = r.problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        problem["errors"][0]["field"], "replication.colour",
        "{}",
        r.text
    );
    assert!(r.text.contains("colour"), "{}", r.text);

    // A hook to an origin this host does not allow says what to add.
    let hooked = format!(
        "{PLAN_YAML}hooks:\n  - {{ name: warm, at: after_recovery, url: https://ops.example.com/warm }}\n"
    );
    let r = api.put_plan_yaml("shop", &hooked).await;
    let problem = r.problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["errors"][0]["field"], "hooks[0].url", "{}", r.text);
    assert!(
        r.text
            .contains("add \\\"https://ops.example.com:443\\\" to hooks.allow"),
        "{}",
        r.text
    );

    // A wrong type, malformed YAML, malformed JSON, the wrong name.
    let wrong_type = PLAN_YAML.replace("retention: 6", "retention: many");
    api.put_plan_yaml("shop", &wrong_type)
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    api.put_plan_yaml("shop", "name: [unclosed")
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    let token = api.token(Role::Admin);
    api.call(
        "PUT",
        "/api/v1/plans/shop",
        Some(&token),
        &[("content-type", "application/json")],
        "{\"name\": ",
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY);
    let r = api.put_plan_yaml("other", PLAN_YAML).await;
    assert_eq!(
        r.problem(StatusCode::UNPROCESSABLE_ENTITY)["errors"][0]["field"],
        "name"
    );

    // A body that is neither YAML nor JSON, or not text at all.
    api.call(
        "PUT",
        "/api/v1/plans/shop",
        Some(&token),
        &[("content-type", "text/plain")],
        PLAN_YAML,
    )
    .await
    .problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    api.call(
        "PUT",
        "/api/v1/plans/shop",
        Some(&token),
        &[("content-type", "application/yaml")],
        vec![0xff_u8, 0xfe, 0x00],
    )
    .await
    .problem(StatusCode::BAD_REQUEST);

    // Oversized.
    let huge = format!("{PLAN_YAML}\n# {}\n", "x".repeat(2 * 1024 * 1024));
    api.put_plan_yaml("shop", &huge)
        .await
        .problem(StatusCode::PAYLOAD_TOO_LARGE);

    api.get("/api/v1/plans/shop", Role::Admin)
        .await
        .problem(StatusCode::NOT_FOUND);
    assert_eq!(api.audit_len().await, before, "nothing was written");
}

async fn bad_bodies_are_4xx_problems_and_change_nothing(store: Store) {
    let api = Api::new(store).await;
    api.put_plan_yaml("shop", PLAN_YAML).await;
    let before = api.audit_len().await;
    let token = api.token(Role::Operator);
    let runs = "/api/v1/plans/shop/runs";
    let json_ct = [("content-type", "application/json")];
    for (body, status) in [
        ("{\"workflow\": ", StatusCode::BAD_REQUEST),
        ("[1, 2", StatusCode::BAD_REQUEST),
        // serde_json reports a number where an enum goes as a syntax error.
        ("{\"workflow\": 7}", StatusCode::BAD_REQUEST),
        ("{\"workflow\": true}", StatusCode::BAD_REQUEST),
        ("{\"workflow\": [\"failover\"]}", StatusCode::BAD_REQUEST),
        (
            "{\"workflow\": \"explode\"}",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "{\"workflow\": \"failover\", \"force\": true}",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("{}", StatusCode::UNPROCESSABLE_ENTITY),
        ("null", StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let r = api.call("POST", runs, Some(&token), &json_ct, body).await;
        r.problem(status);
    }
    // No JSON content type.
    api.call(
        "POST",
        runs,
        Some(&token),
        &[],
        "{\"workflow\": \"failover\"}",
    )
    .await
    .problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Oversized.
    let huge = format!("{{\"workflow\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    api.call("POST", runs, Some(&token), &json_ct, huge)
        .await
        .problem(StatusCode::PAYLOAD_TOO_LARGE);
    // A bad idempotency key.
    api.call(
        "POST",
        runs,
        Some(&token),
        &[
            ("content-type", "application/json"),
            ("idempotency-key", "has spaces in it"),
        ],
        "{\"workflow\": \"failover\"}",
    )
    .await
    .problem(StatusCode::BAD_REQUEST);
    // Bad ids.
    api.send(
        "POST",
        "/api/v1/runs/run-nope/approve",
        Role::Operator,
        &json!({}),
    )
    .await
    .problem(StatusCode::NOT_FOUND);
    for path in [
        "/api/v1/runs/%00abc",
        "/api/v1/runs/%ff",
        "/api/v1/runs?plan=a%00b",
        "/api/v1/plans/sh%0Aop",
    ] {
        api.get(path, Role::Viewer)
            .await
            .problem(StatusCode::BAD_REQUEST);
    }
    api.send(
        "POST",
        "/api/v1/tokens",
        Role::Admin,
        &json!({"name": "a\u{0}b", "role": "viewer"}),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY);
    api.send(
        "POST",
        "/api/v1/plans/nope/runs",
        Role::Operator,
        &json!({"workflow": "failover"}),
    )
    .await
    .problem(StatusCode::NOT_FOUND);

    assert_eq!(api.audit_len().await, before, "nothing was written");
    let listed = api.get("/api/v1/runs", Role::Viewer).await;
    assert_eq!(listed.json["items"], json!([]), "no run was started");
    let plan = api.get("/api/v1/plans/shop", Role::Viewer).await;
    assert_eq!(plan.json["lifecycle"]["state"], "protected");
}

async fn an_idempotency_key_returns_the_same_run(store: Store) {
    let api = Api::new(store).await;
    api.put_plan_yaml("shop", PLAN_YAML).await;
    let token = api.token(Role::Operator);
    let keyed = |plan: &'static str, workflow: &'static str, key: &'static str| {
        let token = token.clone();
        let api = &api;
        async move {
            api.call(
                "POST",
                &format!("/api/v1/plans/{plan}/runs"),
                Some(&token),
                &[
                    ("content-type", "application/json"),
                    ("idempotency-key", key),
                ],
                json!({ "workflow": workflow }).to_string(),
            )
            .await
        }
    };
    let trigger = |workflow| keyed("shop", workflow, "pipeline-42");
    let first = trigger("failover").await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert_eq!(first.json["status"], "pending");
    assert_eq!(first.json["workflow"], "failover");
    assert_eq!(first.json["idempotency_key"], "pipeline-42");
    let again = trigger("failover").await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.json["id"], first.json["id"]);
    // The same key for another request is a conflict.
    trigger("drill").await.problem(StatusCode::CONFLICT);
    let listed = api.get("/api/v1/runs", Role::Viewer).await;
    assert_eq!(listed.json["items"].as_array().map(Vec::len), Some(1));
    // A request and its retry arriving at once (at two hosts, say): one
    // run, started by one of them and replayed to the other.
    api.put_plan_yaml("crm", &plan_named("crm")).await;
    let (a, b) = tokio::join!(
        keyed("crm", "drill", "pipeline-43"),
        keyed("crm", "drill", "pipeline-43")
    );
    assert_eq!(a.json["id"], b.json["id"], "{} {}", a.text, b.text);
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CREATED]);
    let replayed = if a.status == StatusCode::OK { &a } else { &b };
    assert_eq!(replayed.headers["idempotent-replayed"], "true");
    // The trigger is audited with its principal.
    let audit = api.get("/api/v1/audit", Role::Admin).await;
    assert!(
        audit.json["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|e| e["action"] == "plan.failover.begin" && e["principal"] == "user:operator"),
        "{}",
        audit.text
    );
}

/// A site lost: one request fails over every plan the site serves, names
/// the ones it cannot, and with its key returns the same runs again.
async fn a_site_fails_over_every_plan_it_serves(store: Store) {
    let api = Api::new(store).await;
    api.put_plan_yaml("shop", PLAN_YAML).await;
    api.put_plan_yaml("crm", &plan_named("crm")).await;
    let elsewhere = plan_named("mail").replace("source: openstack-east", "source: aws-east");
    api.put_plan_yaml("mail", &elsewhere).await;
    let token = api.token(Role::Operator);
    let fail_over = |site: &'static str, key: &'static str| {
        let token = token.clone();
        let api = &api;
        async move {
            api.call(
                "POST",
                &format!("/api/v1/sites/{site}/failover"),
                Some(&token),
                &[("idempotency-key", key)],
                Body::empty(),
            )
            .await
        }
    };
    let before = api.audit_len().await;
    let r = fail_over("nowhere", "k1").await;
    r.problem(StatusCode::NOT_FOUND);
    assert!(r.text.contains("no site named 'nowhere'"), "{}", r.text);
    let r = fail_over("openstack-east", "").await;
    r.problem(StatusCode::BAD_REQUEST);
    assert!(r.text.contains("Idempotency-Key must be"), "{}", r.text);
    assert_eq!(api.audit_len().await, before, "refusals change nothing");
    // The CRM plan is failing over already.
    let crm = api
        .send(
            "POST",
            "/api/v1/plans/crm/runs",
            Role::Operator,
            &json!({"workflow": "failover"}),
        )
        .await;
    assert_eq!(crm.status, StatusCode::CREATED, "{}", crm.text);
    // Previewed first (any role): the shop's forecast, the CRM's refusal,
    // the mail plan (served elsewhere) absent; nothing started.
    let audit = api.audit_len().await;
    let preview = api
        .get(
            "/api/v1/sites/openstack-east/failover/dry-run",
            Role::Viewer,
        )
        .await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.text);
    let plans = preview.json["plans"].as_array().expect("plans");
    let names: Vec<&str> = plans.iter().filter_map(|p| p["plan"].as_str()).collect();
    assert_eq!(names, ["crm", "shop"], "{}", preview.text);
    assert!(plans[0]["forecast"].is_null(), "{}", preview.text);
    assert!(
        plans[0]["refusal"]
            .as_str()
            .is_some_and(|r| r.contains("failing_over")),
        "{}",
        preview.text
    );
    let shop = &plans[1]["forecast"];
    assert_eq!(plans[1]["standby"], "kubevirt-west");
    assert_eq!(shop["workflow"], "failover", "{}", preview.text);
    assert!(shop["rto_ms"].as_i64().is_some_and(|ms| ms > 0));
    assert_eq!(shop["objective_rto_ms"], 30 * 60 * 1000);
    assert!(plans[1]["refusal"].is_null());
    // The plan's own preview of its failover says the same.
    let own = api
        .send(
            "POST",
            "/api/v1/plans/shop/dry-run",
            Role::Viewer,
            &json!({"workflow": "failover"}),
        )
        .await;
    assert_eq!(&own.json, shop);
    let r = api
        .get("/api/v1/sites/nowhere/failover/dry-run", Role::Viewer)
        .await;
    r.problem(StatusCode::NOT_FOUND);
    assert_eq!(api.audit_len().await, audit);
    assert_eq!(
        api.get("/api/v1/runs", Role::Viewer).await.json["items"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let first = fail_over("openstack-east", "outage-7").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(first.json["site"], "openstack-east");
    let started = first.json["started"].as_array().expect("started");
    assert_eq!(started.len(), 1, "{}", first.text);
    assert_eq!(started[0]["plan"], "shop");
    assert_eq!(started[0]["replayed"], false);
    assert_eq!(first.json["skipped"][0]["plan"], "crm");
    assert!(
        first.json["skipped"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("failing_over")),
        "{}",
        first.text
    );
    let run = started[0]["run"].as_str().expect("run");
    let detail = api.get(&format!("/api/v1/runs/{run}"), Role::Viewer).await;
    assert_eq!(detail.json["workflow"], "failover");
    assert_eq!(detail.json["plan"], "shop");
    let again = fail_over("openstack-east", "outage-7").await;
    assert_eq!(again.json["started"][0]["run"], run);
    assert_eq!(again.json["started"][0]["replayed"], true);
    let runs = api.get("/api/v1/runs", Role::Viewer).await;
    assert_eq!(runs.json["items"].as_array().map(Vec::len), Some(2));
    let audit = api.get("/api/v1/audit", Role::Admin).await;
    let entries = audit.json["items"].as_array().expect("items");
    let site = entries
        .iter()
        .filter(|e| e["action"] == "site.failover")
        .collect::<Vec<_>>();
    assert_eq!(site.len(), 1, "{}", audit.text);
    assert_eq!(site[0]["principal"], "user:operator");
    assert_eq!(site[0]["target"], "openstack-east");
}

/// The old primary lost for good: a permanent failover names the site that
/// becomes the standby, previewed first; a wrong one is refused and changes
/// nothing.
async fn a_permanent_failover_protects_onto_a_new_standby(store: Store) {
    let api = Api::new(store).await;
    let url = format!("http://{}", api.site.addr);
    let spare = json!({
        "plugin": "example",
        "config": {"endpoint": url},
        "secrets": {"token": api.site.token},
        "egress": [url],
    });
    let r = api
        .send("PUT", "/api/v1/sites/spare", Role::Admin, &spare)
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    // A site that does not answer: nothing listens on its port.
    let dark = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let dark = format!("http://{dark}");
    let r = api
        .send(
            "PUT",
            "/api/v1/sites/dark",
            Role::Admin,
            &json!({
                "plugin": "example",
                "config": {"endpoint": dark},
                "secrets": {"token": "t"},
                "egress": [dark],
            }),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    // A site of another platform, where native replication cannot reach.
    rebound_runtime::testing::load(&api.registry.runtime, "openstack").await;
    let r = api
        .send(
            "PUT",
            "/api/v1/sites/elsewhere",
            Role::Admin,
            &json!({"plugin": "openstack", "config": {}, "secrets": {}, "egress": []}),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    // One of the lab site's VMs, without health gates.
    let plan = "name: shop\nsource: openstack-east\ntarget: kubevirt-west\n\
                workloads:\n  - id: vm-1\nreplication: { mode: native, interval: 5m }\n\
                objectives:\n  failover: { rto: 30m, rpo: 15m }\n  failback: { rto: 2h, rpo: 0s }\n";
    let r = api.put_plan_yaml("shop", plan).await;
    assert!(r.status.is_success(), "{}", r.text);
    let start = |body: Value| {
        let api = &api;
        async move {
            api.send("POST", "/api/v1/plans/shop/runs", Role::Operator, &body)
                .await
        }
    };
    let r = start(json!({"workflow": "replication"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    api.drive().await;
    let r = start(json!({"workflow": "failover"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    api.drive().await;
    let before = api.get("/api/v1/plans/shop", Role::Viewer).await.json;
    assert_eq!(before["lifecycle"]["state"], "failed_over", "{before}");
    let audit = api.audit_len().await;
    for (body, status, says) in [
        (
            json!({"workflow": "reprotect", "new_standby": "spare"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "only a permanent_failover takes a new standby",
        ),
        (
            json!({"workflow": "permanent_failover", "new_standby": "nowhere"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no site named 'nowhere'",
        ),
        (
            json!({"workflow": "permanent_failover", "new_standby": "elsewhere"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "cannot be protected from 'kubevirt-west' onto 'elsewhere': native replication \
             copies within one platform",
        ),
        (
            json!({"workflow": "permanent_failover", "new_standby": "dark"}),
            StatusCode::CONFLICT,
            "site 'dark' does not answer",
        ),
        (
            json!({"workflow": "permanent_failover", "new_standby": "kubevirt-west"}),
            StatusCode::CONFLICT,
            "the new standby must be another site than the primary 'kubevirt-west'",
        ),
        (
            json!({"workflow": "permanent_failover", "new_standby": 7}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "new_standby",
        ),
    ] {
        for path in ["/api/v1/plans/shop/runs", "/api/v1/plans/shop/dry-run"] {
            let r = api.send("POST", path, Role::Operator, &body).await;
            r.problem(status);
            assert!(r.text.contains(says), "{path} {body}: {}", r.text);
        }
    }
    assert_eq!(api.audit_len().await, audit, "refusals change nothing");
    assert_eq!(
        api.get("/api/v1/plans/shop", Role::Viewer).await.json,
        before
    );
    // The preview copies to the new site and leaves the old primary alone.
    let body = json!({"workflow": "permanent_failover", "new_standby": "spare"});
    let preview = api
        .send("POST", "/api/v1/plans/shop/dry-run", Role::Viewer, &body)
        .await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.text);
    let names: Vec<&str> = preview.json["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(names.iter().any(|n| n.contains("→ spare")), "{names:?}");
    assert!(
        !names.iter().any(|n| n.contains("openstack-east")),
        "{names:?}"
    );
    let r = start(body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    api.drive().await;
    let run = api
        .get(
            &format!("/api/v1/runs/{}", r.json["id"].as_str().expect("id")),
            Role::Viewer,
        )
        .await;
    assert_eq!(run.json["status"], "succeeded", "{}", run.text);
    let after = api.get("/api/v1/plans/shop", Role::Viewer).await.json;
    assert_eq!(after["lifecycle"]["state"], "protected");
    assert_eq!(after["lifecycle"]["primary"], "kubevirt-west");
    assert_eq!(after["lifecycle"]["standby"], "spare");
}

async fn an_illegal_transition_is_a_conflict_naming_the_state(store: Store) {
    let api = Api::new(store).await;
    api.put_plan_yaml("shop", PLAN_YAML).await;
    let r = api
        .send(
            "POST",
            "/api/v1/plans/shop/runs",
            Role::Operator,
            &json!({"workflow": "failback"}),
        )
        .await;
    let problem = r.problem(StatusCode::CONFLICT);
    assert_eq!(problem["current_state"], "protected");
    assert!(r.text.contains("cannot start failback"), "{}", r.text);
    let started = api
        .send(
            "POST",
            "/api/v1/plans/shop/runs",
            Role::Operator,
            &json!({"workflow": "failover"}),
        )
        .await;
    assert_eq!(started.status, StatusCode::CREATED);
    let r = api
        .send(
            "POST",
            "/api/v1/plans/shop/runs",
            Role::Operator,
            &json!({"workflow": "drill"}),
        )
        .await;
    assert_eq!(
        r.problem(StatusCode::CONFLICT)["current_state"],
        "failing_over"
    );
}

async fn runs_are_listed_filtered_paginated_and_detailed(store: Store) {
    let api = Api::new(store).await;
    api.put_plan_yaml("shop", PLAN_YAML).await;
    api.put_plan_yaml("alpha", &plan_named("alpha")).await;
    let mut ids = Vec::new();
    for plan in ["shop", "alpha", "shop"] {
        let r = api
            .send(
                "POST",
                &format!("/api/v1/plans/{plan}/runs"),
                Role::Operator,
                &json!({"workflow": "replication"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        ids.push(r.json["id"].as_str().expect("id").to_owned());
    }
    let shop = api.get("/api/v1/runs?plan=shop", Role::Viewer).await;
    assert_eq!(shop.json["items"].as_array().map(Vec::len), Some(2));
    let pending = api.get("/api/v1/runs?status=pending", Role::Viewer).await;
    assert_eq!(pending.json["items"].as_array().map(Vec::len), Some(3));
    let none = api.get("/api/v1/runs?status=succeeded", Role::Viewer).await;
    assert_eq!(none.json["items"], json!([]));

    // Pages of two: every run exactly once.
    let first = api.get("/api/v1/runs?limit=2", Role::Viewer).await;
    let next = first.json["next"].as_str().expect("next").to_owned();
    let second = api
        .get(&format!("/api/v1/runs?limit=2&after={next}"), Role::Viewer)
        .await;
    let mut seen: Vec<String> = first.json["items"]
        .as_array()
        .into_iter()
        .chain(second.json["items"].as_array())
        .flatten()
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect();
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids);

    api.get("/api/v1/runs?status=exploded", Role::Viewer)
        .await
        .problem(StatusCode::BAD_REQUEST);
    api.get("/api/v1/runs?after=run-nope", Role::Viewer)
        .await
        .problem(StatusCode::BAD_REQUEST);
    api.get("/api/v1/runs?limit=-1", Role::Viewer)
        .await
        .problem(StatusCode::BAD_REQUEST);

    let detail = api
        .get(&format!("/api/v1/runs/{}", ids[0]), Role::Viewer)
        .await;
    assert_eq!(detail.status, StatusCode::OK, "{}", detail.text);
    assert_eq!(detail.json["id"], ids[0].as_str());
    assert!(
        detail.json["steps"]
            .as_array()
            .is_some_and(|s| !s.is_empty()),
        "{}",
        detail.text
    );
    assert_eq!(detail.json["report"]["run"], ids[0].as_str());
    api.get("/api/v1/runs/run-nope", Role::Viewer)
        .await
        .problem(StatusCode::NOT_FOUND);
}

async fn approve_and_cancel_follow_the_run_and_events_stream_to_its_end(store: Store) {
    let api = Api::new(store).await;
    let gated = PLAN_YAML.replace("  failover: false", "  failover: true");
    api.put_plan_yaml("shop", &gated).await;
    let run = api
        .send(
            "POST",
            "/api/v1/plans/shop/runs",
            Role::Operator,
            &json!({"workflow": "failover"}),
        )
        .await;
    let id = run.json["id"].as_str().expect("id").to_owned();
    let approved = api
        .send(
            "POST",
            &format!("/api/v1/runs/{id}/approve"),
            Role::Operator,
            &json!({}),
        )
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.text);
    api.send(
        "POST",
        &format!("/api/v1/runs/{id}/approve"),
        Role::Operator,
        &json!({}),
    )
    .await
    .problem(StatusCode::CONFLICT);

    let cancelled = api
        .send(
            "POST",
            &format!("/api/v1/runs/{id}/cancel"),
            Role::Operator,
            &json!({}),
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text);
    assert_eq!(cancelled.json["status"], "cancelled");
    let plan = api.get("/api/v1/plans/shop", Role::Viewer).await;
    assert_eq!(plan.json["lifecycle"]["state"], "protected", "rolled back");
    api.send(
        "POST",
        &format!("/api/v1/runs/{id}/cancel"),
        Role::Operator,
        &json!({}),
    )
    .await
    .problem(StatusCode::CONFLICT);

    // The event stream of a finished run: the run, its steps, the end.
    let events = api
        .get(&format!("/api/v1/runs/{id}/events"), Role::Viewer)
        .await;
    assert_eq!(events.status, StatusCode::OK);
    assert_eq!(events.headers["content-type"], "text/event-stream");
    assert!(events.text.starts_with("event: run\n"), "{}", events.text);
    assert!(events.text.contains("event: step\n"), "{}", events.text);
    assert!(
        events
            .text
            .trim_end()
            .rsplit("\n\n")
            .next()
            .is_some_and(|last| last.starts_with("event: end\n")
                && last.contains("\"status\":\"cancelled\"")),
        "{}",
        events.text
    );
    api.get("/api/v1/runs/run-nope/events", Role::Viewer)
        .await
        .problem(StatusCode::NOT_FOUND);
}

async fn dry_run_previews_without_changing_anything(store: Store) {
    let api = Api::new(store).await;
    api.put_plan_yaml("shop", PLAN_YAML).await;
    let before = api.audit_len().await;
    let r = api
        .send(
            "POST",
            "/api/v1/plans/shop/dry-run",
            Role::Viewer,
            &json!({"workflow": "failover"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["workflow"], "failover");
    assert!(
        r.json["rto_ms"].as_i64().is_some_and(|ms| ms > 0),
        "{}",
        r.text
    );
    assert_eq!(r.json["objective_rto_ms"], 30 * 60 * 1000);
    assert!(r.json["steps"].as_array().is_some_and(|s| !s.is_empty()));
    let r = api
        .send(
            "POST",
            "/api/v1/plans/shop/dry-run",
            Role::Viewer,
            &json!({"workflow": "failback"}),
        )
        .await;
    assert_eq!(
        r.problem(StatusCode::CONFLICT)["current_state"],
        "protected"
    );
    api.send(
        "POST",
        "/api/v1/plans/nope/dry-run",
        Role::Viewer,
        &json!({"workflow": "failover"}),
    )
    .await
    .problem(StatusCode::NOT_FOUND);
    assert_eq!(api.audit_len().await, before);
    let runs = api.get("/api/v1/runs", Role::Viewer).await;
    assert_eq!(runs.json["items"], json!([]));
}

/// An edit is previewed before it is saved: its steps and forecast, not
/// the saved plan's; a new plan too; an edit saving would refuse is
/// refused with the same field messages; nothing is stored.
async fn dry_run_previews_unsaved_edits(store: Store) {
    let api = Api::new(store).await;
    api.put_plan_yaml("shop", PLAN_YAML).await;
    let saved = api.get("/api/v1/plans/shop", Role::Viewer).await.json;
    let dry_run = |name: &'static str, body: Value| {
        let api = &api;
        async move {
            api.send(
                "POST",
                &format!("/api/v1/plans/{name}/dry-run"),
                Role::Viewer,
                &body,
            )
            .await
        }
    };
    let before = dry_run("shop", json!({"workflow": "failover"})).await;
    assert_eq!(before.status, StatusCode::OK, "{}", before.text);

    // A fourth workload and a tighter RTO, unsaved.
    let mut edit = saved["document"].clone();
    edit["workloads"]
        .as_array_mut()
        .expect("workloads")
        .push(json!({"id": "cache-1", "depends_on": ["db-1"]}));
    edit["objectives"]["failover"]["rto"] = json!("1s");
    let r = dry_run("shop", json!({"workflow": "failover", "plan": edit})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["objective_rto_ms"], 1000);
    assert_eq!(r.json["within_objective"], false, "{}", r.text);
    let names = |v: &Value| {
        v["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .filter(|s| s["name"].as_str().is_some_and(|n| n.contains("cache-1")))
            .count()
    };
    assert_eq!(names(&before.json), 0);
    assert!(
        names(&r.json) > 0,
        "the edit's workload is in the preview: {}",
        r.text
    );

    // A plan not saved yet is previewed as a new one.
    let mut new = saved["document"].clone();
    new["name"] = json!("fresh");
    let r = dry_run("fresh", json!({"workflow": "failover", "plan": new})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = dry_run("fresh", json!({"workflow": "failback", "plan": new})).await;
    assert_eq!(
        r.problem(StatusCode::CONFLICT)["current_state"],
        "protected"
    );

    // Refused as saving would refuse it, naming the field.
    let mut bad = saved["document"].clone();
    bad["objectives"]["failback"]["rpo"] = json!("soon");
    let r = dry_run("shop", json!({"workflow": "failover", "plan": bad})).await;
    let p = r.problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        p["errors"]
            .as_array()
            .is_some_and(|e| e.iter().any(|f| f["field"] == "objectives.failback.rpo")),
        "{}",
        r.text
    );
    let r = dry_run("shop", json!({"workflow": "failover", "plan": new})).await;
    assert_eq!(
        r.problem(StatusCode::UNPROCESSABLE_ENTITY)["errors"][0]["field"],
        "name"
    );

    let after = api.get("/api/v1/plans/shop", Role::Viewer).await.json;
    assert_eq!(after, saved, "nothing saved");
    api.get("/api/v1/plans/fresh", Role::Viewer)
        .await
        .problem(StatusCode::NOT_FOUND);
}

async fn compliance_events_audit_and_recovery_points(store: Store) {
    let api = Api::new(store.clone()).await;
    api.put_plan_yaml("shop", PLAN_YAML).await;
    let c = api.get("/api/v1/compliance", Role::Viewer).await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.text);
    assert_eq!(c.json["items"][0]["plan"], "shop");
    assert_eq!(c.json["items"][0]["rpo_objective_ms"], 15 * 60 * 1000);
    let one = api.get("/api/v1/compliance?plan=shop", Role::Viewer).await;
    assert_eq!(one.json["items"].as_array().map(Vec::len), Some(1));
    api.get("/api/v1/compliance?plan=nope", Role::Viewer)
        .await
        .problem(StatusCode::NOT_FOUND);

    for n in 0..3 {
        store
            .record_event("shop", "rpo.breach", json!({ "n": n }))
            .await
            .expect("event");
    }
    let page = api
        .get("/api/v1/events?plan=shop&limit=2", Role::Viewer)
        .await;
    assert_eq!(page.json["items"][0]["detail"]["n"], 2, "{}", page.text);
    let next = page.json["next"].as_str().expect("next").to_owned();
    let rest = api
        .get(
            &format!("/api/v1/events?limit=2&after={next}"),
            Role::Viewer,
        )
        .await;
    assert_eq!(rest.json["items"][0]["detail"]["n"], 0, "{}", rest.text);
    assert!(rest.json["next"].is_null());
    api.get("/api/v1/events?after=x", Role::Viewer)
        .await
        .problem(StatusCode::BAD_REQUEST);

    let audit = api.get("/api/v1/audit?limit=1", Role::Admin).await;
    assert_eq!(
        audit.json["items"][0]["action"], "plan.create",
        "{}",
        audit.text
    );
    assert_eq!(audit.json["items"][0]["principal"], "user:admin");
    api.get("/api/v1/audit", Role::Operator)
        .await
        .problem(StatusCode::FORBIDDEN);

    store
        .record_recovery_point(&RecoveryPointRecord {
            site: "kubevirt-west".into(),
            id: "snap-1".into(),
            plan: "shop".into(),
            workload: "db-1".into(),
            captured_at_ms: 1_700_000_000_000,
            run: "run-x".into(),
            detail: json!({"secret_looking": "not shown"}),
            drill: false,
        })
        .await
        .expect("point");
    let points = api
        .get("/api/v1/plans/shop/recovery-points", Role::Viewer)
        .await;
    assert_eq!(points.json["items"][0]["id"], "snap-1", "{}", points.text);
    assert_eq!(
        points.json["items"][0]["consistency"], "crash",
        "unknown: crash"
    );
    assert!(!points.text.contains("secret_looking"));
    api.get("/api/v1/plans/nope/recovery-points", Role::Viewer)
        .await
        .problem(StatusCode::NOT_FOUND);

    // The runbook, for any role: the round trip from where the plan stands.
    let book = api.get("/api/v1/plans/shop/runbook", Role::Viewer).await;
    assert_eq!(book.status, StatusCode::OK, "{}", book.text);
    let markdown = book.json["markdown"].as_str().expect("markdown");
    assert!(markdown.starts_with("# Runbook: shop\n"), "{markdown}");
    assert!(markdown.contains("\n## 1. Failover — "), "{markdown}");
    assert_eq!(book.json["plan"], "shop");
    api.get("/api/v1/plans/nope/runbook", Role::Viewer)
        .await
        .problem(StatusCode::NOT_FOUND);
    // None while a run moves the plan between states.
    let failover = api
        .send(
            "POST",
            "/api/v1/plans/shop/runs",
            Role::Operator,
            &json!({"workflow": "failover"}),
        )
        .await;
    assert!(failover.status.is_success(), "{}", failover.text);
    let refused = api.get("/api/v1/plans/shop/runbook", Role::Viewer).await;
    refused.problem(StatusCode::CONFLICT);
    assert!(
        refused.text.contains("wait for its run to end"),
        "{}",
        refused.text
    );
}

async fn plugins_and_sites(store: Store) {
    let api = Api::new(store).await;
    let plugins = api.get("/api/v1/plugins", Role::Viewer).await;
    assert_eq!(plugins.status, StatusCode::OK);
    assert_eq!(plugins.json["items"], json!([]));
    api.send(
        "POST",
        "/api/v1/plugins/nope/release",
        Role::Admin,
        &json!({}),
    )
    .await
    .problem(StatusCode::NOT_FOUND);
    let sites = api.get("/api/v1/sites", Role::Viewer).await;
    assert_eq!(sites.json["items"], json!([]));
}

/// A site of the example plugin (nothing listens there; binding does not
/// call it).
fn site_body() -> Value {
    json!({
        "plugin": "example",
        "config": {"endpoint": "http://127.0.0.1:9"},
        "secrets": {"token": "not-a-real-token"},
        "egress": ["http://127.0.0.1:9"],
    })
}

/// Who may call each mutating endpoint.
const MATRIX: &[(&str, &[Role])] = &[
    ("put plan", &[Role::Admin]),
    ("trigger", &[Role::Operator, Role::Admin]),
    ("fail over site", &[Role::Operator, Role::Admin]),
    ("approve", &[Role::Operator, Role::Admin]),
    ("cancel", &[Role::Operator, Role::Admin]),
    (
        "dry-run",
        &[
            Role::Viewer,
            Role::Operator,
            Role::PluginPublisher,
            Role::Admin,
        ],
    ),
    ("create token", &[Role::Admin]),
    ("put user", &[Role::Admin]),
    ("delete user", &[Role::Admin]),
    ("revoke token", &[Role::Admin]),
    ("release plugin", &[Role::Admin]),
    ("publish plugin", &[Role::PluginPublisher, Role::Admin]),
    ("activate plugin", &[Role::Admin]),
    ("disable plugin", &[Role::Admin]),
    ("enable plugin", &[Role::Admin]),
    ("put site", &[Role::Admin]),
    ("delete site", &[Role::Admin]),
    // Stopping protection removes every copy of the plan's workloads.
    ("unprotect", &[Role::Admin]),
    ("delete plan", &[Role::Admin]),
];

const ROLES: [Role; 4] = [
    Role::Viewer,
    Role::PluginPublisher,
    Role::Operator,
    Role::Admin,
];

async fn the_role_matrix_holds_for_every_mutating_endpoint(store: Store) {
    let api = Api::new(store).await;
    let gated = PLAN_YAML.replace("  failover: false", "  failover: true");
    api.put_plan_yaml("shop", &gated).await;
    for (endpoint, allowed) in MATRIX {
        for role in ROLES {
            // A fresh waiting run and token for each call, so an allowed
            // call succeeds and a refused one is seen to change nothing.
            let run = match *endpoint {
                "approve" | "cancel" => {
                    let r = api
                        .send(
                            "POST",
                            "/api/v1/plans/shop/runs",
                            Role::Admin,
                            &json!({"workflow": "failover"}),
                        )
                        .await;
                    r.json["id"].as_str().expect("id").to_owned()
                }
                _ => String::new(),
            };
            let token_id = if *endpoint == "revoke token" {
                let r = api
                    .send(
                        "POST",
                        "/api/v1/tokens",
                        Role::Admin,
                        &json!({"name": "ci", "role": "viewer"}),
                    )
                    .await;
                r.json["id"].as_str().expect("id").to_owned()
            } else {
                String::new()
            };
            if *endpoint == "delete user" {
                let r = api
                    .send(
                        "PUT",
                        "/api/v1/users/carol",
                        Role::Admin,
                        &json!({"password": "a long enough password", "role": "viewer"}),
                    )
                    .await;
                assert!(r.status.is_success(), "{}", r.text);
            }
            if *endpoint == "delete plan" {
                // An unprotected plan, so that an allowed call succeeds.
                let r = api.put_plan_yaml("retired", &plan_named("retired")).await;
                assert!(r.status.is_success(), "{}", r.text);
                let r = api
                    .send(
                        "POST",
                        "/api/v1/plans/retired/runs",
                        Role::Admin,
                        &json!({"workflow": "unprotect"}),
                    )
                    .await;
                assert!(r.status.is_success(), "{}", r.text);
                api.drive().await;
            }
            if *endpoint == "delete site" {
                let r = api
                    .send("PUT", "/api/v1/sites/spare", Role::Admin, &site_body())
                    .await;
                assert!(r.status.is_success(), "{}", r.text);
            }
            let before = api.audit_len().await;
            let r = match *endpoint {
                "put plan" => api.put_plan_yaml("shop", &gated).await,
                "activate plugin" | "disable plugin" | "enable plugin" => {
                    let path = match *endpoint {
                        "activate plugin" => "/api/v1/plugins/example/versions/1.0.0/activate",
                        "disable plugin" => "/api/v1/plugins/example/disable",
                        _ => "/api/v1/plugins/example/enable",
                    };
                    api.send("POST", path, role, &json!({})).await
                }
                "put site" => {
                    api.send("PUT", "/api/v1/sites/spare", role, &site_body())
                        .await
                }
                "delete site" => {
                    api.send("DELETE", "/api/v1/sites/spare", role, &json!({}))
                        .await
                }
                "trigger" => {
                    api.send(
                        "POST",
                        "/api/v1/plans/shop/runs",
                        role,
                        &json!({"workflow": "replication"}),
                    )
                    .await
                }
                "fail over site" => {
                    api.send(
                        "POST",
                        "/api/v1/sites/openstack-east/failover",
                        role,
                        &json!({}),
                    )
                    .await
                }
                "delete plan" => {
                    api.send("DELETE", "/api/v1/plans/retired", role, &json!({}))
                        .await
                }
                "unprotect" => {
                    api.send(
                        "POST",
                        "/api/v1/plans/shop/runs",
                        role,
                        &json!({"workflow": "unprotect"}),
                    )
                    .await
                }
                "approve" => {
                    api.send(
                        "POST",
                        &format!("/api/v1/runs/{run}/approve"),
                        role,
                        &json!({}),
                    )
                    .await
                }
                "cancel" => {
                    api.send(
                        "POST",
                        &format!("/api/v1/runs/{run}/cancel"),
                        role,
                        &json!({}),
                    )
                    .await
                }
                "dry-run" => {
                    api.send(
                        "POST",
                        "/api/v1/plans/shop/dry-run",
                        role,
                        &json!({"workflow": "drill"}),
                    )
                    .await
                }
                "create token" => {
                    api.send(
                        "POST",
                        "/api/v1/tokens",
                        role,
                        &json!({"name": "ci", "role": "viewer"}),
                    )
                    .await
                }
                "put user" => {
                    api.send(
                        "PUT",
                        "/api/v1/users/alice",
                        role,
                        &json!({"password": "a long enough password", "role": "viewer"}),
                    )
                    .await
                }
                "delete user" => {
                    api.send("DELETE", "/api/v1/users/carol", role, &json!({}))
                        .await
                }
                "revoke token" => {
                    let token = api.token(role);
                    api.call(
                        "DELETE",
                        &format!("/api/v1/tokens/{token_id}"),
                        Some(&token),
                        &[],
                        Body::empty(),
                    )
                    .await
                }
                "release plugin" => {
                    api.send("POST", "/api/v1/plugins/example/release", role, &json!({}))
                        .await
                }
                // A package that would be refused: an allowed role gets
                // past the role check to the package's problem.
                "publish plugin" => {
                    api.send(
                        "POST",
                        "/api/v1/plugins",
                        role,
                        &json!({"manifest": "", "wasm": ""}),
                    )
                    .await
                }
                other => unreachable!("{other}"),
            };
            // `put plan` is always sent as admin by the helper; check its
            // refusal separately below.
            let allowed_here = *endpoint == "put plan" || allowed.contains(&role);
            if allowed_here {
                assert!(
                    r.status != StatusCode::FORBIDDEN && r.status != StatusCode::UNAUTHORIZED,
                    "{endpoint} as {role}: {}",
                    r.text
                );
                // (no plugin is installed: release answers 404 to an admin;
                // this test host runs no plugin runtime: publish answers 409)
                if !endpoint.ends_with(" plugin") {
                    assert!(r.status.is_success(), "{endpoint} as {role}: {}", r.text);
                }
            } else {
                r.problem(StatusCode::FORBIDDEN);
                assert_eq!(
                    api.audit_len().await,
                    before,
                    "{endpoint} as {role} changed something"
                );
            }
            // Leave no run pending for the next trigger (a cancelled
            // unprotect leaves the plan protected).
            let run = match *endpoint {
                "unprotect" => r.json["id"].as_str().unwrap_or_default().to_owned(),
                "fail over site" => r.json["started"][0]["run"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                _ => run,
            };
            if !run.is_empty() {
                let _ = api
                    .send(
                        "POST",
                        &format!("/api/v1/runs/{run}/cancel"),
                        Role::Admin,
                        &json!({}),
                    )
                    .await;
            }
        }
    }
    // `put plan` as every other role.
    for role in [Role::Viewer, Role::PluginPublisher, Role::Operator] {
        let token = api.token(role);
        let before = api.audit_len().await;
        api.call(
            "PUT",
            "/api/v1/plans/shop",
            Some(&token),
            &[("content-type", "application/yaml")],
            gated.clone(),
        )
        .await
        .problem(StatusCode::FORBIDDEN);
        assert_eq!(api.audit_len().await, before);
    }
}

/// Every endpoint but login, with a sample path.
const ENDPOINTS: &[(&str, &str)] = &[
    ("GET", "/api/v1/auth/whoami"),
    ("POST", "/api/v1/auth/renew"),
    ("POST", "/api/v1/auth/password"),
    ("GET", "/api/v1/users"),
    ("PUT", "/api/v1/users/alice"),
    ("DELETE", "/api/v1/users/alice"),
    ("GET", "/api/v1/tokens"),
    ("POST", "/api/v1/tokens"),
    ("DELETE", "/api/v1/tokens/tok-1"),
    ("GET", "/api/v1/plans"),
    ("GET", "/api/v1/plans/shop"),
    ("PUT", "/api/v1/plans/shop"),
    ("POST", "/api/v1/plans/shop/dry-run"),
    ("GET", "/api/v1/plans/shop/recovery-points"),
    ("GET", "/api/v1/plans/shop/runbook"),
    ("POST", "/api/v1/plans/shop/runs"),
    ("POST", "/api/v1/sites/east/failover"),
    ("GET", "/api/v1/sites/east/failover/dry-run"),
    ("GET", "/api/v1/runs"),
    ("GET", "/api/v1/runs/run-1"),
    ("POST", "/api/v1/runs/run-1/approve"),
    ("POST", "/api/v1/runs/run-1/cancel"),
    ("GET", "/api/v1/runs/run-1/events"),
    ("GET", "/api/v1/compliance"),
    ("GET", "/api/v1/events"),
    ("GET", "/api/v1/audit"),
    ("GET", "/api/v1/plugins"),
    ("POST", "/api/v1/plugins"),
    ("POST", "/api/v1/plugins/example/release"),
    ("GET", "/api/v1/plugins/example/versions"),
    ("POST", "/api/v1/plugins/example/versions/1.0.0/activate"),
    ("POST", "/api/v1/plugins/example/disable"),
    ("POST", "/api/v1/plugins/example/enable"),
    ("GET", "/api/v1/sites"),
    ("GET", "/api/v1/sites/east"),
    ("PUT", "/api/v1/sites/east"),
    ("DELETE", "/api/v1/sites/east"),
    ("DELETE", "/api/v1/plans/shop"),
    ("GET", "/api/v1/sites/east/health"),
    ("GET", "/api/v1/sites/east/workloads"),
];

async fn every_endpoint_refuses_an_anonymous_caller(store: Store) {
    let api = Api::new(store).await;
    api.put_plan_yaml("shop", PLAN_YAML).await;
    let before = api.audit_len().await;
    for (method, path) in ENDPOINTS {
        for auth in [
            None,
            Some("Basic YWRtaW46YWRtaW4="),
            Some("Bearer "),
            Some("Bearer rbt_nope"),
        ] {
            let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", *a)).collect();
            let r = api.call(method, path, None, &headers, Body::empty()).await;
            r.problem(StatusCode::UNAUTHORIZED);
            assert_eq!(r.headers["www-authenticate"], "Bearer", "{method} {path}");
        }
    }
    assert_eq!(api.audit_len().await, before);
    // The spec lists exactly these endpoints, and the sign-in ones open to
    // anonymous callers (tested in auth_test and sign_in_test).
    let spec = rebound_api::openapi();
    let mut listed: Vec<(String, String)> = Vec::new();
    for (path, item) in spec.paths.paths {
        let value = serde_json::to_value(item).expect("path item");
        for method in ["get", "put", "post", "delete"] {
            if value.get(method).is_some() {
                listed.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    let mut expected: Vec<(String, String)> = ENDPOINTS
        .iter()
        .map(|(m, p)| {
            let template = p
                .replace("/shop", "/{name}")
                .replace("/example/", "/{name}/")
                .replace("/1.0.0/", "/{version}/")
                .replace("/run-1", "/{id}")
                .replace("/tok-1", "/{id}")
                .replace("/alice", "/{name}")
                .replace("/east", "/{name}");
            ((*m).to_owned(), template)
        })
        .collect();
    for (method, path) in [
        ("POST", "/api/v1/auth/login"),
        ("GET", "/api/v1/auth/providers"),
        ("POST", "/api/v1/auth/oidc"),
        ("POST", "/api/v1/auth/oidc/refresh"),
        ("POST", "/api/v1/auth/oidc/device"),
    ] {
        expected.push((method.into(), path.into()));
    }
    listed.sort();
    expected.sort();
    assert_eq!(
        listed, expected,
        "a new endpoint needs its refusal tested here"
    );
}

async fn unknown_routes_and_methods_are_problems(store: Store) {
    let api = Api::new(store).await;
    api.get("/api/v1/nothing-here", Role::Viewer)
        .await
        .problem(StatusCode::NOT_FOUND);
    let r = api
        .send("DELETE", "/api/v1/plans", Role::Admin, &json!({}))
        .await;
    r.problem(StatusCode::METHOD_NOT_ALLOWED);
    let spec = api
        .call("GET", "/api/v1/openapi.json", None, &[], Body::empty())
        .await;
    assert_eq!(spec.status, StatusCode::OK);
    assert!(
        spec.json["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1"))
    );
    let docs = api
        .call("GET", "/api/v1/docs", None, &[], Body::empty())
        .await;
    assert_eq!(docs.status, StatusCode::OK);
    assert!(docs.text.contains("<html"), "{}", docs.text);
    // Every response carries a request id.
    assert!(docs.headers.contains_key("x-request-id"));
}

/// Clients generate one function or type per operation id (the web UI's
/// openapi-typescript among them), so each must be unique (OpenAPI 3.1
/// requires it).
#[test]
fn every_operation_id_is_unique() {
    let spec = serde_json::to_value(rebound_api::openapi()).expect("spec");
    let mut seen = std::collections::BTreeMap::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if let Some(id) = op["operationId"].as_str()
                && let Some(first) = seen.insert(id.to_owned(), format!("{method} {path}"))
            {
                panic!("operationId '{id}' names both {first} and {method} {path}");
            }
        }
    }
}

/// The checked-in spec is what the code generates.
#[test]
fn the_checked_in_openapi_document_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api/openapi.json");
    let generated = format!(
        "{}\n",
        rebound_api::openapi().to_pretty_json().expect("spec")
    );
    if std::env::var_os("REBOUND_UPDATE_OPENAPI").is_some() {
        std::fs::create_dir_all(std::path::Path::new(path).parent().expect("dir")).expect("mkdir");
        std::fs::write(path, &generated).expect("write spec");
        return;
    }
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "docs/api/openapi.json is out of date with the code; regenerate it with\n  \
         REBOUND_UPDATE_OPENAPI=1 cargo test -p rebound-api --test api_test the_checked_in_openapi_document_matches_the_code\n\
         and commit the result"
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_template() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = rebound_store::testing::fresh_sqlite(dir.path())
        .await
        .expect("store");
    let api = Api::new(store).await;
    // The process's one recorder counts every test's requests: compare
    // before and after.
    let sample = |text: &str, series: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0)
    };
    let requests =
        "rebound_http_requests_total{method=\"GET\",route=\"/api/v1/runs/{id}\",status=\"404\"}";
    let durations = "rebound_http_request_duration_seconds_count{route=\"/api/v1/runs/{id}\"}";
    let before = api.call("GET", "/metrics", None, &[], Body::empty()).await;
    api.get("/api/v1/runs/run-abc", Role::Viewer).await;
    api.get("/api/v1/runs/run-def", Role::Viewer).await;
    let m = api.call("GET", "/metrics", None, &[], Body::empty()).await;
    assert_eq!(m.status, StatusCode::OK);
    assert!(
        sample(&m.text, requests) >= sample(&before.text, requests) + 2,
        "{}",
        m.text
    );
    assert!(sample(&m.text, durations) >= sample(&before.text, durations) + 2);
    assert!(!m.text.contains("run-abc"), "ids never become labels");
    assert!(
        m.text
            .contains("# HELP rebound_http_requests_total API requests answered."),
        "{}",
        m.text
    );
}

/// A plan is deleted only once unprotected (no copy of its workloads left
/// behind unnamed), by an admin: gone from lookups and lists, its runs and
/// audit entries kept; its name applied again makes a new plan.
async fn a_plan_is_deleted_once_unprotected_and_its_history_stays(store: Store) {
    let api = Api::new(store).await;
    let created = api.put_plan_yaml("gone", &plan_named("gone")).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let delete = async |role| {
        api.send("DELETE", "/api/v1/plans/gone", role, &json!({}))
            .await
    };
    let before = api.audit_len().await;
    let refused = delete(Role::Admin).await;
    assert!(
        refused.problem(StatusCode::CONFLICT)["detail"]
            .as_str()
            .is_some_and(|d| d.contains("is protected; unprotect it first")),
        "{}",
        refused.text
    );
    assert_eq!(api.audit_len().await, before, "a refusal changes nothing");

    let run = api
        .send(
            "POST",
            "/api/v1/plans/gone/runs",
            Role::Admin,
            &json!({"workflow": "unprotect"}),
        )
        .await;
    assert_eq!(run.status, StatusCode::CREATED, "{}", run.text);
    let run = run.json["id"].as_str().expect("run id").to_owned();
    delete(Role::Admin).await.problem(StatusCode::CONFLICT);
    api.drive().await;
    let plan = api.get("/api/v1/plans/gone", Role::Viewer).await;
    assert_eq!(
        plan.json["lifecycle"]["state"], "unprotected",
        "{}",
        plan.text
    );

    for role in [Role::Viewer, Role::Operator, Role::PluginPublisher] {
        delete(role).await.problem(StatusCode::FORBIDDEN);
    }
    assert_eq!(delete(Role::Admin).await.status, StatusCode::NO_CONTENT);
    api.get("/api/v1/plans/gone", Role::Viewer)
        .await
        .problem(StatusCode::NOT_FOUND);
    let listed = api.get("/api/v1/plans", Role::Viewer).await;
    assert!(!listed.text.contains("\"gone\""), "{}", listed.text);
    api.send(
        "POST",
        "/api/v1/plans/gone/runs",
        Role::Admin,
        &json!({"workflow": "replication"}),
    )
    .await
    .problem(StatusCode::NOT_FOUND);
    delete(Role::Admin).await.problem(StatusCode::NOT_FOUND);
    // Its history stays.
    let kept = api.get(&format!("/api/v1/runs/{run}"), Role::Viewer).await;
    assert_eq!(kept.json["status"], "succeeded", "{}", kept.text);
    let audit = api.get("/api/v1/audit", Role::Admin).await;
    assert_eq!(audit.json["items"][0]["action"], "plan.delete");
    assert_eq!(audit.json["items"][0]["target"], "gone");

    // Applied again: a new plan, protected.
    let again = api.put_plan_yaml("gone", &plan_named("gone")).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text);
    assert_eq!(again.json["lifecycle"]["state"], "protected");
}

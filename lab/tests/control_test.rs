//! The lab's control routes, the same on every simulator that has them
//! (`lab/src/faults.rs`): `/_lab/faults` read, replaced, refused when
//! invalid and cleared, and `/_lab/effects`. The oVirt engine always; the
//! AWS front when moto is installed (`REBOUND_PYTHON`). The OpenStack
//! simulator's are exercised by `openstack_test.rs`.
//!
//! `cargo test -p rebound-lab --test control_test`.

use rebound_lab::{AwsOptions, AwsSite, Faults, OVirtOptions, OVirtSite};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn read(http: &reqwest::Client, faults: &str) -> Faults {
    let answer = http.get(faults).send().await.expect("GET faults");
    answer.json().await.expect("faults")
}

/// Drive the control routes of the site at `base` (its `/_lab/…` root),
/// trusting `ca_pem` when it serves HTTPS with a CA of its own.
async fn control_routes_work(base: &str, ca_pem: Option<&str>, what: &str) {
    let mut http = reqwest::Client::builder();
    if let Some(pem) = ca_pem {
        http =
            http.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).expect("CA"));
    }
    let http = http.build().expect("client");
    let faults = format!("{base}/_lab/faults");
    let got = read(&http, &faults).await;
    assert_eq!(got, Faults::default(), "{what}: none at start");

    // Invalid faults are refused with the reason and change nothing.
    let refused = http
        .post(&faults)
        .json(&json!({"error_rate": 2.0}))
        .send()
        .await
        .expect("POST");
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{what}");
    let body: Value = refused.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("0.0 to 1.0")),
        "{what}: {body}"
    );
    let unknown = http
        .post(&faults)
        .json(&json!({"error_rat": 0.5}))
        .send()
        .await
        .expect("POST");
    assert!(unknown.status().is_client_error(), "{what}: unknown field");
    let got = read(&http, &faults).await;
    assert_eq!(got, Faults::default(), "{what}: unchanged after refusals");

    let set = json!({"error_rate": 0.25, "status": 429, "retry_after": 3, "latency_ms": 1});
    let answered = http.post(&faults).json(&set).send().await.expect("POST");
    assert_eq!(answered.status(), StatusCode::OK, "{what}");
    let got = read(&http, &faults).await;
    assert_eq!(
        (got.error_rate, got.status, got.retry_after, got.latency_ms),
        (0.25, Some(429), Some(3), 1),
        "{what}"
    );
    let cleared = http.delete(&faults).send().await.expect("DELETE");
    assert_eq!(cleared.status(), StatusCode::NO_CONTENT, "{what}");
    let got = read(&http, &faults).await;
    assert_eq!(got, Faults::default(), "{what}: cleared");

    let effects: Value = http
        .get(format!("{base}/_lab/effects"))
        .send()
        .await
        .expect("GET effects")
        .json()
        .await
        .expect("json");
    assert!(effects.is_object(), "{what}: {effects}");
}

#[tokio::test]
async fn the_ovirt_engine_answers_the_control_routes() {
    let site = OVirtSite::start(OVirtOptions::default())
        .await
        .expect("oVirt simulator");
    control_routes_work(&site.endpoint(), Some(site.ca_pem()), "oVirt").await;
}

#[tokio::test]
async fn the_aws_front_answers_the_control_routes() {
    let Some(site) = AwsSite::start_or_skip(AwsOptions {
        gib: 1 << 20,
        seed: false,
        ..AwsOptions::default()
    })
    .await
    else {
        return;
    };
    control_routes_work(&site.endpoint(), None, "AWS").await;
}

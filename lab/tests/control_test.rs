//! The lab's control routes, the same on every simulator that has them
//! (`lab/src/faults.rs`): `/_lab/faults` read, replaced, refused when
//! invalid and cleared, and `/_lab/effects`. The oVirt engine always; the
//! AWS front when moto is installed (`REBOUND_PYTHON`). The OpenStack
//! simulator's are exercised by `openstack_test.rs`. And
//! `/_lab/guest-writes` (`lab/src/guest.rs`): a write lands in a running
//! workload's disk, and a bad one is refused with what to fix.
//!
//! `cargo test -p rebound-lab --test control_test`.

use rebound_lab::{
    AwsOptions, AwsSite, ExampleOptions, ExampleSite, Faults, OVirtOptions, OVirtSite,
};
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

/// `POST` a guest write; its status and JSON answer.
async fn guest_write(http: &reqwest::Client, url: &str, body: Value) -> (StatusCode, Value) {
    let answer = http.post(url).json(&body).send().await.expect("POST");
    let status = answer.status();
    (status, answer.json().await.expect("json"))
}

#[tokio::test]
async fn guest_writes_land_on_a_running_workload_and_bad_ones_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    // Small disks: the test reads them whole.
    let mut vms = rebound_lab::example::default_vms();
    for vm in &mut vms {
        vm["disks"][0]["size_bytes"] = json!(1 << 20);
    }
    let site = ExampleSite::start(ExampleOptions {
        disk_dir: Some(dir.path().to_owned()),
        vms,
        ..ExampleOptions::default()
    })
    .await
    .expect("example site");
    let http = reqwest::Client::new();
    let url = site.guest_writes_url();
    let before = site.read_disk("vm-1", 0).expect("disk");
    let (status, body) = guest_write(
        &http,
        &url,
        json!({"disk": "vm-1-disk0", "offset": 8192, "length": 4096}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["length"], 4096);
    let after = site.read_disk("vm-1", 0).expect("disk");
    assert_eq!(before[..8192], after[..8192], "nothing before the write");
    assert!(
        after[8192..12288].iter().all(|b| *b != 0),
        "the write landed"
    );
    assert_eq!(before[12288..], after[12288..], "nothing after it");

    let size = after.len();
    for (body, status, says) in [
        (
            json!({"disk": "vm-9-disk0", "offset": 0, "length": 1}),
            404,
            "no VM has disk",
        ),
        (
            json!({"disk": "vm-1-disk0", "offset": size, "length": 1}),
            400,
            "past the end",
        ),
        (
            json!({"disk": "vm-1-disk0", "offset": 0, "length": 0}),
            400,
            "give 1 to",
        ),
        (
            json!({"disk": "vm-1-disk0", "offset": 0}),
            400,
            "not a guest write",
        ),
    ] {
        let (got, answer) = guest_write(&http, &url, body.clone()).await;
        assert_eq!(got.as_u16(), status, "{body}: {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| e.contains(says)),
            "{body}: {answer}"
        );
    }
    assert_eq!(
        site.read_disk("vm-1", 0).expect("disk"),
        after,
        "refusals wrote nothing"
    );

    // A fenced VM's guest writes nothing.
    let fenced = http
        .post(format!("{}/v1/vms/vm-1/fence", site.endpoint()))
        .bearer_auth(&site.token)
        .json(&json!({"key": "k", "epoch": 2}))
        .send()
        .await
        .expect("fence");
    assert!(fenced.status().is_success(), "{}", fenced.status());
    let (got, answer) = guest_write(
        &http,
        &url,
        json!({"disk": "vm-1-disk0", "offset": 0, "length": 512}),
    )
    .await;
    assert_eq!(got, StatusCode::CONFLICT, "{answer}");
    assert_eq!(site.read_disk("vm-1", 0).expect("disk"), after);
}

#[tokio::test]
async fn an_ovirt_guest_write_is_refused_past_the_disk_and_for_an_unknown_disk() {
    let site = OVirtSite::start(OVirtOptions::default())
        .await
        .expect("oVirt simulator");
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(site.ca_pem().as_bytes()).expect("CA"))
        .build()
        .expect("client");
    let url = site.guest_writes_url();
    let disk = site.disk_ids().into_iter().next().expect("a seeded disk");
    let (status, body) = guest_write(
        &http,
        &url,
        json!({"disk": disk, "offset": 0, "length": 65536}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = guest_write(
        &http,
        &url,
        json!({"disk": "no-such-disk", "offset": 0, "length": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = guest_write(
        &http,
        &url,
        json!({"disk": disk, "offset": u64::MAX - 1, "length": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

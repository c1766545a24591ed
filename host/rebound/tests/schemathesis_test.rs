//! The REST API under generated and malformed requests: schemathesis (from
//! PyPI) reads the OpenAPI document a real `rebound serve` serves and sends
//! every operation examples, boundary values and fuzzed inputs as an admin
//! (the role that may call everything), against a host with two lab sites
//! bound. It fails on any 5xx, on a response that breaks the document, or
//! when the host dies; the host must still answer afterwards.
//!
//! Needs `REBOUND_PYTHON`, an interpreter with
//! `host/rebound/tests/schemathesis/requirements.txt` installed (`.ci/run`
//! makes one); skipped with a note without it, unless
//! `REBOUND_REQUIRE_PYTHON=1`, when it fails. Bounded: a few examples per
//! operation and a time limit. Reproduce a run with the seed it prints:
//!
//! ```text
//! REBOUND_PYTHON=/path/to/venv/bin/python REBOUND_FUZZ_SEED=1234 \
//!   cargo test -p rebound --test schemathesis_test
//! ```

#[path = "support/host.rs"]
mod host;
#[path = "support/http.rs"]
mod http;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http::http;
use rebound_lab::{ExampleOptions, ExampleSite};

fn schemathesis() -> Option<PathBuf> {
    let python = std::env::var("REBOUND_PYTHON")
        .ok()
        .filter(|p| !p.is_empty());
    let Some(python) = python else {
        assert!(
            std::env::var("REBOUND_REQUIRE_PYTHON").as_deref() != Ok("1"),
            "REBOUND_REQUIRE_PYTHON=1 but REBOUND_PYTHON is unset"
        );
        eprintln!(
            "skipped: set REBOUND_PYTHON to a Python with \
             host/rebound/tests/schemathesis/requirements.txt installed"
        );
        return None;
    };
    let bin = PathBuf::from(python).with_file_name("schemathesis");
    assert!(
        bin.is_file(),
        "{} is missing: pip install -r host/rebound/tests/schemathesis/requirements.txt",
        bin.display()
    );
    Some(bin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_and_malformed_requests_never_get_a_server_error() {
    let Some(schemathesis) = schemathesis() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let a = ExampleSite::start(ExampleOptions::default())
        .await
        .expect("site a");
    let b = ExampleSite::start(ExampleOptions {
        vms: Vec::new(),
        ..ExampleOptions::default()
    })
    .await
    .expect("site b");
    let mut host = host::serve(
        dir.path(),
        &[("lab-a", &a), ("lab-b", &b)],
        &["--policy-seconds", "0"],
        &[
            ("REBOUND_ADMIN_PASSWORD", "schemathesis-admin"),
            ("RUST_LOG", "warn"),
        ],
        true,
    )
    .await;
    let addr = host.addr().to_owned();
    let login = http(
        &addr,
        "POST",
        "/api/v1/auth/login",
        "",
        r#"{"username": "admin", "password": "schemathesis-admin"}"#,
    );
    let token = login
        .split("\"access_token\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("login")
        .to_owned();

    let mut command = Command::new(&schemathesis);
    command
        .arg("run")
        .arg(format!("http://{addr}/api/v1/openapi.json"))
        .args(["--url", &format!("http://{addr}")])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,content_type_conformance,status_code_conformance",
        ])
        .args(["--max-examples", "12", "--workers", "2"])
        .args(["--request-timeout", "20"])
        .env("NO_COLOR", "1")
        .current_dir(dir.path());
    if let Ok(seed) = std::env::var("REBOUND_FUZZ_SEED") {
        command.args(["--seed", &seed]);
    }
    let started = Instant::now();
    let mut run = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("schemathesis");
    let limit = Duration::from_secs(300);
    let status = loop {
        if let Some(status) = run.try_wait().expect("wait") {
            break Some(status);
        }
        if started.elapsed() > limit {
            // Stopped, so that what it printed so far says where it was.
            let _ = run.kill();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let output = run.wait_with_output().expect("output");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    eprintln!("{text}");
    eprintln!("schemathesis took {:.1?}", started.elapsed());
    let Some(status) = status else {
        panic!("schemathesis ran over {limit:?}; what it printed is above");
    };
    assert!(host.running(), "the host died under schemathesis");
    let health = http(&addr, "GET", "/healthz", "", "");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(
        status.success(),
        "schemathesis found failures (status {status}); see its report above"
    );
    // It really exercised the API.
    assert!(
        text.contains("Test Phase") || text.contains("passed"),
        "{text}"
    );
}

//! Fidelity: the real Kubernetes Python client (`kubernetes` on PyPI)
//! against the KubeVirt simulator (`lab/fidelity/kubevirt_client.py`).
//! The interpreter comes from `REBOUND_PYTHON` (a venv with
//! `lab/fidelity/requirements.txt`; CI makes one). Without it the test says
//! so and passes, unless `REBOUND_REQUIRE_PYTHON=1`.

use std::process::Command;
use std::time::Duration;

use rebound_lab::{KubeVirtOptions, KubeVirtSite};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_python_client_works_against_the_simulator() {
    let Ok(python) = std::env::var("REBOUND_PYTHON") else {
        assert!(
            std::env::var("REBOUND_REQUIRE_PYTHON").as_deref() != Ok("1"),
            "REBOUND_REQUIRE_PYTHON=1 but REBOUND_PYTHON is unset"
        );
        eprintln!("skipped: set REBOUND_PYTHON to a Python with lab/fidelity/requirements.txt");
        return;
    };
    let site = KubeVirtSite::start(KubeVirtOptions {
        latency: Duration::from_millis(300),
        ..KubeVirtOptions::default()
    })
    .await
    .expect("cluster");
    let dir = tempfile::tempdir().expect("dir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &site.ca_pem).expect("ca");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/fidelity/kubevirt_client.py");
    let (endpoint, token) = (site.endpoint(), site.token.clone());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args([script, &endpoint, &token])
            .arg(&ca)
            .output()
            .expect("run python")
    })
    .await
    .expect("join");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    assert!(text.contains("snapshot watched to ready"), "{text}");
    // The simulator's own view agrees with what the client did.
    let snap = site
        .get("virtualmachinesnapshots", "prod", "web-1-snap")
        .expect("snapshot");
    assert_eq!(snap["status"]["readyToUse"], true);
    let vm = site.get("virtualmachines", "prod", "web-1").expect("vm");
    assert_eq!(vm["spec"]["running"], false);
}

//! Points the real openstacksdk at the OpenStack simulator: the script
//! `lab/fidelity/openstack_client.py` authenticates, lists servers and
//! volumes, snapshots a volume and waits for it, snapshots a group of
//! volumes together, moves a floating IP,
//! creates a Designate recordset, then restores a Cinder backup in the other
//! region, round-trips a Glance image and shifts an Octavia member weight.
//!
//! Needs `REBOUND_PYTHON`, an interpreter with `lab/fidelity/requirements.txt`
//! installed (`.ci/run` makes one). Without it the test is skipped with a
//! note, unless `REBOUND_REQUIRE_PYTHON=1`, when it fails.
//!
//! ```text
//! python3 -m venv /tmp/venv && /tmp/venv/bin/pip install -r lab/fidelity/requirements.txt
//! REBOUND_PYTHON=/tmp/venv/bin/python cargo test -p rebound-lab --test openstack_fidelity_test
//! ```

use std::path::Path;
use std::time::Duration;

use rebound_lab::{OpenStackOptions, OpenStackSite};

fn python() -> Option<String> {
    match std::env::var("REBOUND_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            assert!(
                std::env::var("REBOUND_REQUIRE_PYTHON").as_deref() != Ok("1"),
                "REBOUND_REQUIRE_PYTHON=1 but REBOUND_PYTHON is unset: point it at a Python \
                 with lab/fidelity/requirements.txt installed"
            );
            eprintln!(
                "skipped: set REBOUND_PYTHON to a Python with lab/fidelity/requirements.txt \
                 installed to run the openstacksdk fidelity check"
            );
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openstacksdk_works_against_the_simulator() {
    let Some(python) = python() else {
        return;
    };
    // HTTPS with the site's own CA, as real clouds serve their APIs.
    let site = OpenStackSite::start(OpenStackOptions {
        gib: 1 << 20,
        tls: true,
        ..OpenStackOptions::default()
    })
    .await
    .expect("start the OpenStack simulator");
    let ca = tempfile::NamedTempFile::new().expect("a file for the CA");
    std::fs::write(ca.path(), site.ca_pem.as_deref().expect("the site's CA"))
        .expect("write the CA");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fidelity/openstack_client.py");
    let options = site.options();
    let mut command = tokio::process::Command::new(&python);
    command
        .arg(&script)
        .env("LAB_OS_AUTH_URL", site.auth_url())
        .env("LAB_OS_USERNAME", &options.user)
        .env("LAB_OS_PASSWORD", &options.password)
        .env("LAB_OS_PROJECT_NAME", &options.project)
        .env("LAB_OS_REGION", &options.regions[0])
        .env("LAB_OS_SECOND_REGION", &options.regions[1])
        .env("LAB_OS_CACERT", ca.path())
        .env_remove("OS_CLOUD")
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the fidelity script finished within 2 minutes")
        .unwrap_or_else(|e| panic!("running {python} {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "openstacksdk failed against the simulator ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("fidelity: all checks passed"), "{stdout}");
    assert!(site.auth_url().starts_with("https://"));

    // The client's changes are the simulator's state.
    let region = &options.regions[0];
    let snapshots = site.resources(region, "snapshots");
    assert_eq!(
        snapshots.len(),
        3,
        "one alone, two in a group: {snapshots:?}"
    );
    let single: Vec<_> = snapshots
        .iter()
        .filter(|s| s["name"] == "fidelity-snap")
        .collect();
    assert_eq!(single.len(), 1, "{snapshots:?}");
    assert_eq!(single[0]["status"], "available");
    let id = single[0]["id"].as_str().expect("snapshot id");
    let copy = site
        .disks()
        .read_at(&format!("snapshot-{id}"), 0, 13)
        .expect("the snapshot's blocks are on disk");
    assert_eq!(
        copy, b"web-1 boot di",
        "the snapshot copies the volume's blocks"
    );
    let effects = site.effects();
    let snapshot_posts: usize = effects
        .iter()
        .filter(|(k, _)| k.starts_with("POST ") && k.ends_with("/snapshots"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(snapshot_posts, 1, "{effects:?}");
}

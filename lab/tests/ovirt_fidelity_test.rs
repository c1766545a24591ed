//! Fidelity: the real oVirt Python SDK (`ovirt-engine-sdk-python` on PyPI)
//! against the oVirt simulator (`lab/fidelity/ovirt_client.py`), over HTTPS
//! with the engine's CA (refused without it; the CA fetched from the
//! engine's pki-resource as clients bootstrap it): SSO, VM
//! listing and search, a snapshot waited to `ok` with its job, a disk
//! downloaded through an image transfer, an incremental backup's dirty
//! extents, a raw disk refused incremental backup, and a refused stop. The interpreter comes from `REBOUND_PYTHON`
//! (a venv with `lab/fidelity/requirements.txt`; CI makes one). Without it
//! the test says so and passes, unless `REBOUND_REQUIRE_PYTHON=1`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use rebound_lab::ovirt::Latencies;
use rebound_lab::{OVirtOptions, OVirtSite};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ovirt_python_sdk_works_against_the_simulator() {
    let Ok(python) = std::env::var("REBOUND_PYTHON") else {
        assert!(
            std::env::var("REBOUND_REQUIRE_PYTHON").as_deref() != Ok("1"),
            "REBOUND_REQUIRE_PYTHON=1 but REBOUND_PYTHON is unset"
        );
        eprintln!("skipped: set REBOUND_PYTHON to a Python with lab/fidelity/requirements.txt");
        return;
    };
    let ms = Duration::from_millis;
    let site = OVirtSite::start(OVirtOptions {
        gib: 64 << 20,
        latency: Latencies {
            vm_power: ms(200),
            snapshot: ms(300),
            backup: ms(200),
            transfer: ms(100),
            clone_disks: ms(100),
        },
        ..OVirtOptions::default()
    })
    .await
    .expect("engine");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/fidelity/ovirt_client.py");
    let options = site.options().clone();
    let ca = tempfile::NamedTempFile::new().expect("ca file");
    std::fs::write(ca.path(), site.ca_pem()).expect("write the CA");
    let ca_path = ca.path().to_string_lossy().into_owned();
    let mut child = Command::new(python)
        .args([
            script,
            &site.api_url(),
            &options.user,
            &options.password,
            &ca_path,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    let stdout = child.stdout.take().expect("stdout");
    let mut stdin = child.stdin.take().expect("stdin");
    let db = site.vm_id("db-1").expect("db-1");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("line");
            if line.starts_with("CHECKPOINT") {
                tx.send(()).expect("signal");
            }
            lines.push(line);
        }
        lines
    });
    // Between the full and the incremental backup, the guest writes two
    // places of its first disk: exactly those are dirty.
    let reached = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
        .await
        .expect("join")
        .is_ok();
    if reached {
        site.guest_write(&db, 0, 5 << 20, b"after the checkpoint")
            .expect("write");
        site.guest_write(&db, 0, 40 << 20, &[9u8; 100_000])
            .expect("write");
        stdin.write_all(b"go\n").expect("resume the script");
    }
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("python finished");
    let lines = reader.join().expect("reader");
    let text = format!(
        "{}\n{}",
        lines.join("\n"),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    assert!(text.contains("snapshot waited to ok"), "{text}");
    assert!(text.contains("disk copied"), "{text}");
    assert!(
        text.contains("incremental backup needs a qcow2 disk"),
        "{text}"
    );
    assert!(text.contains("fidelity: all checks passed"), "{text}");
    let dirty: Vec<(u64, u64)> = lines
        .iter()
        .find_map(|l| l.strip_prefix("DIRTY "))
        .map(|j| serde_json::from_str(j).expect("dirty extents"))
        .expect("dirty extents printed");
    let chunk = 64 << 10;
    assert_eq!(
        dirty,
        [
            (5 << 20, chunk),
            (40 << 20, 100_000u64.div_ceil(chunk) * chunk),
        ],
        "the dirty extents are the two writes"
    );
    // The simulator's view agrees with what the client did.
    let (_, status, _) = site.vm(&db).expect("vm");
    assert_eq!(status, "down");
    assert_eq!(site.effects().get("fidelity-snap"), Some(&1));
}

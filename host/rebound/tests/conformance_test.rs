//! The conformance kit (`rebound plugin test`) against the lab: the
//! example plugin passes every scenario, faults included, between two lab
//! sites keeping real disk data; a plugin that traps fails it with exit 6.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rebound_lab::{ExampleOptions, ExampleSite};

fn kit(dir: &Path, package: &str, env: &[(&str, &str)], extra: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rebound"));
    command
        .args(["plugin", "test", package, "--sites", "sites.toml"])
        .args(["--site", "lab-a", "--target", "lab-b"])
        .args(extra)
        .args(["--trusted-key", "publisher.pub", "--timeout-secs", "30"])
        .current_dir(dir);
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("rebound plugin test");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sites_file(dir: &Path, plugin: &str, a: &ExampleSite, b: &ExampleSite) {
    let site = |name: &str, site: &ExampleSite, var: &str| {
        format!(
            "[sites.{name}]\nplugin = \"{plugin}\"\nconfig = {{ endpoint = \"{e}\" }}\n\
             secrets = {{ token = \"env:{var}\" }}\negress = [\"{e}\"]\n",
            e = site.endpoint()
        )
    };
    std::fs::write(
        dir.join("sites.toml"),
        site("lab-a", a, "LAB_A_TOKEN") + &site("lab-b", b, "LAB_B_TOKEN"),
    )
    .expect("sites");
}

fn setup(dir: &Path, plugin: &str) {
    rebound_runtime::testing::package(plugin)
        .write_dir(&dir.join(plugin))
        .expect("package");
    std::fs::write(
        dir.join("publisher.pub"),
        rebound_runtime::package::encode_verifying_key(
            &rebound_runtime::testing::publisher_key().verifying_key(),
        ),
    )
    .expect("key");
}

/// The example platform's sites either keep real disk data (export-disk
/// works, native replication is refused: it would not carry the data) or
/// metadata only (native replication works, nothing to export): the kit
/// runs once on each kind, skipping what that kind cannot do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_plugin_passes_the_kit_faults_included() {
    for with_disks in [true, false] {
        run_example(with_disks).await;
    }
}

async fn run_example(with_disks: bool) {
    let dir = tempfile::tempdir().expect("tmp");
    let options = |vms, disks: &str| ExampleOptions {
        snapshot_latency: Duration::from_millis(20),
        vms,
        disk_dir: with_disks.then(|| dir.path().join(disks)),
        ..ExampleOptions::default()
    };
    let a = ExampleSite::start(options(rebound_lab::example::default_vms(), "disks-a"))
        .await
        .expect("site a");
    let b = ExampleSite::start(options(Vec::new(), "disks-b"))
        .await
        .expect("site b");
    setup(dir.path(), "example");
    sites_file(dir.path(), "example", &a, &b);
    let path = dir.path().to_owned();
    let (ta, tb) = (a.token.clone(), b.token.clone());
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        let skip = if with_disks {
            "replicate"
        } else {
            "export-disk"
        };
        kit(
            &path,
            "example",
            &[("LAB_A_TOKEN", &ta), ("LAB_B_TOKEN", &tb)],
            &["--skip", skip],
        )
    })
    .await
    .expect("join");
    assert_eq!(code, 0, "{out}\n{err}");
    let tested = if with_disks {
        "export-disk"
    } else {
        "replicate"
    };
    for scenario in [
        "describe",
        "health",
        "inventory",
        "snapshot again (same key)",
        tested,
        "materialize (isolated)",
        "fence",
        "unfence",
        "cleanup",
        "fault: 429 with Retry-After",
        "fault: 503",
        "fault: hang",
    ] {
        let row = out
            .lines()
            .find(|l| l.contains(scenario))
            .unwrap_or_else(|| panic!("no row for {scenario}:\n{out}"));
        assert!(row.contains("pass"), "{scenario}: {row}\n{out}");
    }
    assert!(out.contains(" 0 failed, 1 skipped"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_traps_fails_the_kit() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = ExampleSite::start(ExampleOptions::default())
        .await
        .expect("site a");
    let b = ExampleSite::start(ExampleOptions::default())
        .await
        .expect("site b");
    setup(dir.path(), "hostile-trap");
    sites_file(dir.path(), "hostile-trap", &a, &b);
    let path = dir.path().to_owned();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        kit(
            &path,
            "hostile-trap",
            &[("LAB_A_TOKEN", "x"), ("LAB_B_TOKEN", "y")],
            &[],
        )
    })
    .await
    .expect("join");
    assert_eq!(code, 6, "{out}\n{err}");
    assert!(out.contains("FAIL"), "{out}");
}

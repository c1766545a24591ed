//! The conformance kit (`rebound plugin test`) against the lab: the
//! example, OpenStack, KubeVirt, oVirt and AWS plugins pass every scenario they offer,
//! faults included, each against its platform's simulated sites; the
//! example plugin built against the contract 0.1 passes what 0.1 can do; a
//! plugin that traps fails it with exit 6.

use std::path::Path;
use std::process::Command;

use rebound_lab::{ExampleOptions, ExampleSite};

#[path = "support/kit.rs"]
mod kit_table;
use kit_table::{assert_passed, row};

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
    rebound_runtime::testing::install(plugin, &dir.join(plugin), dir.join("publisher.pub"));
}

/// The example platform's sites either keep real disk data (export-disk
/// works, native replication is refused: it would not carry the data) or
/// metadata only (native replication works, nothing to export): the kit
/// runs once on each kind, skipping what that kind cannot do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_plugin_passes_the_kit_faults_included() {
    for with_disks in [true, false] {
        run_example(with_disks, "example").await;
    }
}

/// The example plugin built against the contract 0.1 passes too: what 0.1
/// cannot do (removing a standby workload) is skipped, not failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_of_the_contract_0_1_passes_the_kit() {
    run_example(true, "example-contract-0-1").await;
}

/// The kit on the example platform through `package` (a built plugin).
async fn run_example(with_disks: bool, package: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    let options = |vms, disks: &str| ExampleOptions {
        disk_dir: with_disks.then(|| dir.path().join(disks)),
        ..ExampleOptions::quick(vms)
    };
    let a = ExampleSite::start(options(rebound_lab::example::default_vms(), "disks-a"))
        .await
        .expect("site a");
    let b = ExampleSite::start(options(Vec::new(), "disks-b"))
        .await
        .expect("site b");
    setup(dir.path(), package);
    sites_file(dir.path(), "example", &a, &b);
    let path = dir.path().to_owned();
    let contract_0_1 = package.ends_with("contract-0-1");
    let package = package.to_owned();
    let (ta, tb) = (a.token.clone(), b.token.clone());
    let writes = a.guest_writes_url();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        // A site without disk data has none to export or compare.
        let skip: &[&str] = if with_disks {
            &["--skip", "replicate", "--guest-writes", &writes]
        } else {
            &["--skip", "export-disk", "--skip", "changed-blocks"]
        };
        kit(
            &path,
            &package,
            &[("LAB_A_TOKEN", &ta), ("LAB_B_TOKEN", &tb)],
            skip,
        )
    })
    .await
    .expect("join");
    assert_eq!(code, 0, "{out}\n{err}");
    let tested: &[&str] = if with_disks {
        &[
            "export-disk",
            "import-disk",
            "import-disk onto a volume",
            "changed-blocks",
        ]
    } else {
        &["replicate"]
    };
    // A plugin of the contract 0.1 cannot remove a workload, nor discard
    // an import.
    let added_in_0_2: &[&str] = if contract_0_1 {
        for scenario in [WORKLOADS, DISCARD] {
            assert_row(&out, scenario, "contract 0.1");
            assert_skipped(&out, scenario);
        }
        &[]
    } else if with_disks {
        &[WORKLOADS, DISCARD]
    } else {
        &[WORKLOADS]
    };
    let common = [
        "describe",
        "health",
        "inventory",
        "snapshot again (same key)",
        "materialize (isolated)",
        "fence",
        "unfence",
        "cleanup",
        "fault: 429 with Retry-After",
        "fault: 503",
        "fault: hang",
    ];
    let all: Vec<&str> = tested
        .iter()
        .chain(added_in_0_2)
        .chain(&common)
        .copied()
        .collect();
    assert_passed(&out, &all);
    if with_disks {
        assert_row(&out, COVERED.0, COVERED.1);
        assert_row(&out, POINT_IN_TIME.0, POINT_IN_TIME.1);
    }
    // Without disks, the imports have no export to copy from.
    let skipped = if with_disks { 1 } else { 5 } + 2 * usize::from(contract_0_1);
    assert!(
        out.contains(&format!(" 0 failed, {skipped} skipped")),
        "{out}"
    );
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

/// The row of `scenario` says `what`.
fn assert_row(out: &str, scenario: &str, what: &str) {
    let row = row(out, scenario);
    assert!(row.contains(what), "{row}\n{out}");
}

const WORKLOADS: &str = "cleanup (workloads)";
const DISCARD: &str = "cleanup (discarded import)";

/// The kit's guest writes: changed-blocks covered them, and the export
/// of the point held the one made just before it, not the one after.
const COVERED: (&str, &str) = ("changed-blocks", "covers the 3 guest write(s)");
const POINT_IN_TIME: (&str, &str) = ("export-disk", "made just before it, not the one just after");
/// The replica, exported on the target, held that write too.
const REPLICA_HOLDS_IT: (&str, &str) = (
    "replicate",
    "exported there, the point holds the guest's write",
);

/// The row of `scenario` says `skip`.
fn assert_skipped(out: &str, scenario: &str) {
    let row = row(out, scenario);
    assert!(row.contains("skip"), "{row}");
}

/// Every scenario but these.
fn all_but(skipped: &[&str]) -> Vec<&'static str> {
    EVERY_SCENARIO
        .iter()
        .copied()
        .filter(|s| !skipped.contains(s))
        .collect()
}

const EVERY_SCENARIO: &[&str] = &[
    "describe",
    "health",
    "inventory",
    "snapshot again (same key)",
    "changed-blocks",
    "replicate",
    "export-disk",
    "import-disk",
    "import-disk onto a volume",
    "cleanup (discarded import)",
    "materialize (isolated)",
    "fence",
    "unfence",
    "cleanup (workloads)",
    "cleanup",
    "fault: 429 with Retry-After",
    "fault: 503",
    "fault: hang",
];

/// The OpenStack plugin against the OpenStack simulator, one region as
/// the site under test and the other as the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openstack_plugin_passes_the_kit_faults_included() {
    let dir = tempfile::tempdir().expect("tmp");
    let cloud = rebound_lab::OpenStackSite::start(rebound_lab::OpenStackOptions::default())
        .await
        .expect("OpenStack simulator");
    let options = cloud.options();
    setup(dir.path(), "openstack");
    let site = |name: &str, region: &str| {
        format!(
            "[sites.{name}]\nplugin = \"openstack\"\n\
             config = {{ auth_url = \"{auth}\", region = \"{region}\", user = \"{user}\", project = \"{project}\" }}\n\
             secrets = {{ password = \"env:OS_PASSWORD\", mover_key = \"env:OS_MOVER_KEY\" }}\n\
             egress = [\"{e}\"]\n",
            auth = cloud.auth_url(),
            user = options.user,
            project = options.project,
            e = cloud.endpoint()
        )
    };
    std::fs::write(
        dir.path().join("sites.toml"),
        site("lab-a", "RegionOne") + &site("lab-b", "RegionTwo"),
    )
    .expect("sites");
    let path = dir.path().to_owned();
    let (password, mover_key) = (options.password.clone(), options.mover_key.clone());
    let writes = cloud.guest_writes_url();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        kit(
            &path,
            "openstack",
            &[("OS_PASSWORD", &password), ("OS_MOVER_KEY", &mover_key)],
            &["--guest-writes", &writes],
        )
    })
    .await
    .expect("join");
    assert_eq!(code, 0, "{out}\n{err}");
    assert_passed(&out, &all_but(&["changed-blocks"]));
    assert_skipped(&out, "changed-blocks");
    assert_row(&out, POINT_IN_TIME.0, POINT_IN_TIME.1);
    assert_row(&out, REPLICA_HOLDS_IT.0, REPLICA_HOLDS_IT.1);
    assert!(out.contains(" 0 failed, 1 skipped"), "{out}");
}

/// The KubeVirt plugin against two KubeVirt simulators (HTTPS with their
/// own CA, bearer tokens) whose storage mirrors volumes between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubevirt_plugin_passes_the_kit_faults_included() {
    use rebound_lab::{KubeVirtOptions, KubeVirtSite};
    let dir = tempfile::tempdir().expect("tmp");
    let options = || {
        let mut objects = rebound_lab::kubevirt::default_objects();
        objects.push(serde_json::json!({
            "apiVersion": "replication.storage.openshift.io/v1alpha1",
            "kind": "VolumeReplicationClass", "metadata": {"name": "rbd-mirror"},
            "spec": {"provisioner": "openshift-storage.rbd.csi.ceph.com",
                     "parameters": {"schedulingInterval": "1m"}},
        }));
        KubeVirtOptions {
            objects,
            ..KubeVirtOptions::default()
        }
    };
    let a = KubeVirtSite::start(options()).await.expect("cluster a");
    let b = KubeVirtSite::start(options()).await.expect("cluster b");
    a.pair(&b);
    setup(dir.path(), "kubevirt");
    let site = |name: &str, cluster: &KubeVirtSite, var: &str| {
        let ca = dir.path().join(format!("{name}-ca.pem"));
        std::fs::write(&ca, &cluster.ca_pem).expect("ca");
        format!(
            "[sites.{name}]\nplugin = \"kubevirt\"\n\
             config = {{ endpoint = \"{e}\", namespace = \"prod\", \
             volume_replication_class = \"rbd-mirror\" }}\n\
             secrets = {{ token = \"env:{var}\" }}\negress = [\"{e}\"]\nca_file = \"{ca}\"\n",
            e = cluster.endpoint(),
            ca = ca.display()
        )
    };
    std::fs::write(
        dir.path().join("sites.toml"),
        site("lab-a", &a, "KV_A_TOKEN") + &site("lab-b", &b, "KV_B_TOKEN"),
    )
    .expect("sites");
    let path = dir.path().to_owned();
    let (ta, tb) = (a.token.clone(), b.token.clone());
    let writes = a.guest_writes_url();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        kit(
            &path,
            "kubevirt",
            &[("KV_A_TOKEN", &ta), ("KV_B_TOKEN", &tb)],
            &["--guest-writes", &writes],
        )
    })
    .await
    .expect("join");
    assert_eq!(code, 0, "{out}\n{err}");
    // Native replication included: VolumeReplication mirrors the
    // recovery point to lab-b; no changed-block listing is offered. The
    // mirror is exported only once promoted, so the kit notes that it did
    // not read the replica.
    assert_row(&out, "replicate", "its data not checked");
    assert_passed(&out, &all_but(&["changed-blocks"]));
    assert_skipped(&out, "changed-blocks");
    assert_row(&out, POINT_IN_TIME.0, POINT_IN_TIME.1);
    assert!(out.contains(" 0 failed, 1 skipped"), "{out}");
}

/// The oVirt plugin against two oVirt engine simulators. oVirt has no
/// native replication the plugin drives (storage-domain replication), so
/// `replicate` is skipped on the plugin's own typed `unsupported`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ovirt_plugin_passes_the_kit_faults_included() {
    use rebound_lab::{OVirtOptions, OVirtSite};
    let dir = tempfile::tempdir().expect("tmp");
    // A password a form body would break on: the host writes it where the
    // plugin's placeholder stands, percent-encoded as the form needs.
    let options = || OVirtOptions {
        gib: 64 << 20,
        password: "p&ss=w%rd+ \"ü".into(),
        ..OVirtOptions::default()
    };
    let a = OVirtSite::start(options()).await.expect("engine a");
    let b = OVirtSite::start(options()).await.expect("engine b");
    setup(dir.path(), "ovirt");
    let site = |name: &str, engine: &OVirtSite, var: &str| {
        let ca = dir.path().join(format!("{name}-ca.pem"));
        std::fs::write(&ca, engine.ca_pem()).expect("ca");
        format!(
            "[sites.{name}]\nplugin = \"ovirt\"\n\
             config = {{ endpoint = \"{e}\", user = \"{user}\" }}\n\
             secrets = {{ password = \"env:{var}\" }}\negress = [\"{e}\"]\nca_file = \"{ca}\"\n",
            e = engine.endpoint(),
            user = engine.options().user,
            ca = ca.display(),
        )
    };
    std::fs::write(
        dir.path().join("sites.toml"),
        site("lab-a", &a, "OVIRT_A_PASSWORD") + &site("lab-b", &b, "OVIRT_B_PASSWORD"),
    )
    .expect("sites");
    let path = dir.path().to_owned();
    let (pa, pb) = (a.options().password.clone(), b.options().password.clone());
    let writes = a.guest_writes_url();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        kit(
            &path,
            "ovirt",
            &[("OVIRT_A_PASSWORD", &pa), ("OVIRT_B_PASSWORD", &pb)],
            &["--guest-writes", &writes],
        )
    })
    .await
    .expect("join");
    assert_eq!(code, 0, "{out}\n{err}");
    // changed-blocks through an incremental backup included: the dirty
    // bitmap of the checkpoint before the second point holds the kit's
    // guest writes.
    assert_passed(&out, &all_but(&["replicate"]));
    assert_row(&out, COVERED.0, COVERED.1);
    assert_row(&out, POINT_IN_TIME.0, POINT_IN_TIME.1);
    assert_skipped(&out, "replicate");
    assert!(out.contains(" 0 failed, 1 skipped"), "{out}");
    // Nothing of the drill is left on the engine, and no call was repeated.
    assert_eq!(a.vm_ids().len(), 2, "only the seeded VMs remain");
    let repeated: Vec<_> = a.effects().into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(repeated.is_empty(), "repeated: {repeated:?}");
}

/// The AWS plugin against the lab's AWS site (moto behind the lab's
/// front), region us-east-1 under test and us-west-2 as the replication
/// target; every scenario runs (export and import through the plugin's
/// mover appliance), guest writes included. Skipped when
/// moto is not installed, unless `REBOUND_REQUIRE_PYTHON=1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_plugin_passes_the_kit_faults_included() {
    use rebound_lab::{AwsOptions, AwsSite};
    // Volumes of their real size in GiB (sparse files): the plugin sizes
    // its export endpoint from the GiB EC2 reports.
    let Some(site) = AwsSite::start_or_skip(AwsOptions::default()).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    setup(dir.path(), "aws");
    let entry = |name: &str, region: &str| {
        format!(
            "[sites.{name}]\nplugin = \"aws\"\n\
             config = {{ endpoint = \"{e}\", region = \"{region}\" }}\n\
             secrets = {{ access_key_id = \"env:AWS_KEY_ID\", secret_access_key = \"env:AWS_SECRET\" }}\n\
             egress = [\"{e}\"]\n",
            e = site.endpoint()
        )
    };
    let regions = site.regions().to_vec();
    std::fs::write(
        dir.path().join("sites.toml"),
        entry("lab-a", &regions[0]) + &entry("lab-b", &regions[1]),
    )
    .expect("sites");
    let path = dir.path().to_owned();
    let (id, secret) = (
        site.options().access_key_id.clone(),
        site.options().secret_access_key.clone(),
    );
    let writes = site.guest_writes_url();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        kit(
            &path,
            "aws",
            &[("AWS_KEY_ID", &id), ("AWS_SECRET", &secret)],
            &["--guest-writes", &writes],
        )
    })
    .await
    .expect("join");
    assert_eq!(code, 0, "{out}\n{err}");
    assert_passed(&out, EVERY_SCENARIO);
    assert_row(&out, COVERED.0, COVERED.1);
    assert_row(&out, POINT_IN_TIME.0, POINT_IN_TIME.1);
    assert_row(&out, REPLICA_HOLDS_IT.0, REPLICA_HOLDS_IT.1);
    assert!(out.contains(" 0 failed, 0 skipped"), "{out}");
    // Replication copied the snapshots into the other region.
    let effects = site.effects();
    assert!(
        effects.get("ec2 CopySnapshot").is_some_and(|n| *n >= 1),
        "{effects:?}"
    );
}

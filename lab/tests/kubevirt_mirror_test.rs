//! Volume mirroring between two paired KubeVirt simulators
//! (VolumeReplication over a shared storage fabric): a primary PVC's
//! blocks really land on the peer, changed blocks follow every
//! `schedulingInterval`, a peer that is down degrades the replication, and
//! promotion on the peer is refused while the source is still primary
//! (forced when the source is unreachable).
//!
//! `cargo test -p rebound-lab --test kubevirt_mirror_test`

use std::time::Duration;

use rebound_lab::kubevirt::{blank_data_volume, vm_object};
use rebound_lab::{KubeVirtOptions, KubeVirtSite};
use serde_json::{Value, json};

const NS: &str = "prod";
/// The mirror's block: what it copies at least when a byte changes.
const BLOCK: u64 = 64 << 10;
const MIRROR: &str = "lab.rebound.io/mirror-image";

fn class(interval: &str) -> Value {
    json!({"apiVersion": "replication.storage.openshift.io/v1alpha1", "kind": "VolumeReplicationClass",
           "metadata": {"name": "rbd-mirror"},
           "spec": {"provisioner": "openshift-storage.rbd.csi.ceph.com",
                    "parameters": {"mirroringMode": "snapshot", "schedulingInterval": interval}}})
}

/// Cluster a runs `web-1` (8 MiB root, its first bytes seeded) and `db-1`;
/// cluster b has the namespace; both know the class; they are paired.
async fn pair(interval: &str) -> (KubeVirtSite, KubeVirtSite) {
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}});
    let mut objects = vec![namespace.clone(), class(interval)];
    for vm in ["web-1", "db-1"] {
        objects.push(blank_data_volume(NS, &format!("{vm}-root"), "8Mi"));
        objects.push(vm_object(NS, vm, json!({"app": "shop"}), "prod-net"));
    }
    let options = |objects| KubeVirtOptions {
        latency: Duration::from_millis(20),
        objects,
        ..KubeVirtOptions::default()
    };
    let a = KubeVirtSite::start(options(objects)).await.expect("a");
    let b = KubeVirtSite::start(options(vec![namespace, class(interval)]))
        .await
        .expect("b");
    a.pair(&b);
    (a, b)
}

fn replication(pvc: &str, state: &str) -> Value {
    json!({"apiVersion": "replication.storage.openshift.io/v1alpha1", "kind": "VolumeReplication",
           "metadata": {"name": pvc, "namespace": NS},
           "spec": {"volumeReplicationClass": "rbd-mirror", "replicationState": state,
                    "dataSource": {"apiGroup": "", "kind": "PersistentVolumeClaim", "name": pvc}}})
}

/// A VolumeReplication's condition of `kind`: (status, reason, message).
fn condition(vr: &Value, kind: &str) -> Option<(String, String, String)> {
    let c = vr["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)?;
    let text = |f: &str| c[f].as_str().unwrap_or_default().to_owned();
    Some((text("status"), text("reason"), text("message")))
}

/// Poll `site`'s VolumeReplication `name` until `done` holds (10 s at most).
async fn until(site: &KubeVirtSite, name: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..500 {
        if let Some(vr) = site.get("volumereplications", NS, name) {
            if done(&vr) {
                return vr;
            }
            last = vr;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("VolumeReplication {name} never got there: {last:#}");
}

/// Change `spec.replicationState` as a client would (a merge patch).
async fn set_state(site: &KubeVirtSite, name: &str, state: &str) {
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(site.ca_pem.as_bytes()).expect("ca"))
        .build()
        .expect("client");
    let url = format!(
        "{}/apis/replication.storage.openshift.io/v1alpha1/namespaces/{NS}/volumereplications/{name}",
        site.endpoint()
    );
    let response = http
        .patch(url)
        .bearer_auth(&site.token)
        .header("content-type", "application/merge-patch+json")
        .body(json!({"spec": {"replicationState": state}}).to_string())
        .send()
        .await
        .expect("patch");
    assert!(response.status().is_success(), "{}", response.status());
}

fn is_mirror(site: &KubeVirtSite, pvc: &str) -> bool {
    site.get("persistentvolumeclaims", NS, pvc)
        .unwrap_or_else(|| panic!("no PVC {pvc}"))["metadata"]["annotations"][MIRROR]
        == "true"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_volume_is_mirrored_block_for_block_and_resynced_every_interval() {
    let (a, b) = pair("2s").await;
    a.create(replication("web-1-root", "primary"))
        .expect("create");
    let vr = until(&a, "web-1-root", |vr| {
        !vr["status"]["lastSyncTime"].is_null()
    })
    .await;
    assert_eq!(vr["status"]["state"], "Primary");
    assert_eq!(
        condition(&vr, "Completed").map(|c| c.0),
        Some("True".into())
    );
    assert_eq!(
        condition(&vr, "Degraded").map(|c| c.0),
        Some("False".into())
    );
    assert!(vr["status"]["lastSyncDuration"].is_string(), "{vr:#}");
    // Only the seeded boot block holds data; holes stay holes.
    assert_eq!(vr["status"]["lastSyncBytes"], BLOCK, "{vr:#}");
    assert_eq!(
        b.read_pvc(NS, "web-1-root").expect("mirror"),
        a.read_pvc(NS, "web-1-root").expect("source"),
        "the mirror, block for block"
    );
    assert!(is_mirror(&b, "web-1-root"));
    assert!(!is_mirror(&a, "web-1-root"));
    assert!(b.get("persistentvolumeclaims", NS, "db-1-root").is_none());

    // The guest writes two blocks' worth; the next sync moves just those.
    a.guest_write(NS, "web-1", 0, 4 << 20, &vec![0x5A; 100 << 10])
        .expect("write");
    let vr = until(&a, "web-1-root", |vr| {
        vr["status"]["lastSyncBytes"] == 2 * BLOCK
    })
    .await;
    assert_eq!(vr["status"]["state"], "Primary");
    assert_eq!(
        b.read_pvc(NS, "web-1-root").expect("mirror"),
        a.read_pvc(NS, "web-1-root").expect("source"),
        "the resynced mirror, block for block"
    );

    // A mirror image is read-only: no clone, no upload, no VM on it.
    b.create(
        json!({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
                    "metadata": {"name": "copy", "namespace": NS},
                    "spec": {"source": {"pvc": {"namespace": NS, "name": "web-1-root"}},
                             "storage": {"resources": {"requests": {"storage": "8Mi"}}}}}),
    )
    .expect("create");
    let mut phase = Value::Null;
    for _ in 0..200 {
        phase = b.get("datavolumes", NS, "copy").expect("dv")["status"]["phase"].clone();
        if phase == "Failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(phase, "Failed", "a clone of a mirror image");
    let dv = b.get("datavolumes", NS, "copy").expect("dv");
    let message = dv["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("non-primary mirror image"), "{dv:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_is_down_degrades_the_replication_and_gets_nothing() {
    let (a, b) = pair("1s").await;
    b.set_down(true);
    a.create(replication("web-1-root", "primary"))
        .expect("create");
    let vr = until(&a, "web-1-root", |vr| {
        condition(vr, "Degraded").is_some_and(|c| c.0 == "True")
    })
    .await;
    let (_, reason, message) = condition(&vr, "Degraded").expect("degraded");
    assert_eq!(reason, "VolumeDegraded");
    assert!(message.contains("unreachable"), "{message}");
    assert!(vr["status"]["lastSyncTime"].is_null(), "{vr:#}");
    assert!(b.get("persistentvolumeclaims", NS, "web-1-root").is_none());

    // Back up: the next attempt mirrors everything.
    b.set_down(false);
    let vr = until(&a, "web-1-root", |vr| {
        !vr["status"]["lastSyncTime"].is_null()
    })
    .await;
    assert_eq!(
        condition(&vr, "Degraded").map(|c| c.0),
        Some("False".into())
    );
    assert_eq!(
        b.read_pvc(NS, "web-1-root").expect("mirror"),
        a.read_pvc(NS, "web-1-root").expect("source")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_waits_for_the_source_to_demote_unless_the_source_is_down() {
    let (a, b) = pair("1s").await;
    for pvc in ["web-1-root", "db-1-root"] {
        a.create(replication(pvc, "primary")).expect("create");
        until(&a, pvc, |vr| !vr["status"]["lastSyncTime"].is_null()).await;
    }

    // Both primary would be a split brain: refused, the mirror stays one.
    b.create(replication("web-1-root", "primary"))
        .expect("create");
    let vr = until(&b, "web-1-root", |vr| {
        condition(vr, "Completed").is_some_and(|c| c.0 == "False")
    })
    .await;
    let (_, reason, message) = condition(&vr, "Completed").expect("completed");
    assert_eq!(reason, "FailedToPromote");
    assert!(message.contains("split the brain"), "{message}");
    assert!(is_mirror(&b, "web-1-root"));

    // The source demotes: the peer's promotion goes through, and the old
    // source is a mirror image now.
    set_state(&a, "web-1-root", "secondary").await;
    let demoted = until(&a, "web-1-root", |vr| vr["status"]["state"] == "Secondary").await;
    assert_eq!(
        condition(&demoted, "Completed").map(|c| c.1),
        Some("Demoted".into())
    );
    let promoted = until(&b, "web-1-root", |vr| vr["status"]["state"] == "Primary").await;
    assert_eq!(
        condition(&promoted, "Completed").map(|c| (c.0, c.1)),
        Some(("True".into(), "Promoted".into()))
    );
    assert!(!is_mirror(&b, "web-1-root"));
    assert!(is_mirror(&a, "web-1-root"));
    assert_eq!(
        b.read_pvc(NS, "web-1-root").expect("promoted"),
        a.read_pvc(NS, "web-1-root").expect("old source")
    );

    // The source lost: promotion is forced.
    a.set_down(true);
    b.create(replication("db-1-root", "primary"))
        .expect("create");
    let forced = until(&b, "db-1-root", |vr| vr["status"]["state"] == "Primary").await;
    let (_, _, message) = condition(&forced, "Completed").expect("completed");
    assert!(message.contains("forced"), "{message}");
    assert!(!is_mirror(&b, "db-1-root"));
    // Mirroring back to the lost source then fails: the replication is
    // degraded, and still promoted (what a plugin waiting on the promotion
    // reads).
    let degraded = until(&b, "db-1-root", |vr| {
        condition(vr, "Degraded").is_some_and(|c| c.0 == "True")
    })
    .await;
    let (status, _, message) = condition(&degraded, "Completed").expect("completed");
    assert_eq!(status, "True", "{degraded:#}");
    assert!(message.contains("forced"), "{message}");
}

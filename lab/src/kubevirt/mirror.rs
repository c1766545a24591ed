//! Volume mirroring between paired clusters: csi-addons VolumeReplication
//! over a storage fabric both clusters share (Ceph RBD snapshot-based
//! mirroring between two pools, as OpenShift Data Foundation's Regional-DR
//! sets it up), simplified.
//!
//! A VolumeReplication names a VolumeReplicationClass (its
//! `spec.parameters.schedulingInterval`, a Go duration, 5m by default) and a
//! PVC (`spec.dataSource`). While `spec.replicationState` is `primary`, the
//! PVC's changed blocks are copied to the peer cluster into a PVC of the
//! same namespace and name, created there when missing as a mirror image
//! (annotated [`MIRROR_ANNOTATION`]): not usable by VMs, clones, exports or
//! uploads until promoted. The first sync runs as soon as the controller
//! sees the object, the next every `schedulingInterval`; `status` has
//! `state`, `lastSyncTime`, `lastSyncDuration`, `lastSyncBytes` and the
//! `Completed`/`Degraded`/`Resyncing` conditions. With the peer down (its
//! `down` fault) the VolumeReplication is `Degraded` and nothing moves.
//!
//! `primary` on a mirror image promotes it: refused (`Completed` false,
//! `FailedToPromote`) while the peer is up and its VolumeReplication of
//! that PVC is still primary — a split brain — and forced when the peer is
//! unreachable (as the csi-addons controller retries a failed promotion
//! with `force`). `secondary` demotes a PVC to a mirror image; `resync`
//! does the same and reports `Resyncing` (the peer's primary pushes the
//! data). Deleting a VolumeReplication ends its mirroring and leaves both
//! PVCs as they are (real RBD would delete the peer's non-primary image).

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use super::controllers::{parse_duration, pvc_disk};
use super::timestamp;
use super::{Cluster, Key, NAMESPACE, PVC, Site, VOLUME_REPLICATION, VOLUME_REPLICATION_CLASS};

/// The lab's mark of a PVC that is a non-primary mirror image.
pub const MIRROR_ANNOTATION: &str = "lab.rebound.io/mirror-image";

/// How often the controller looks at VolumeReplications.
const TICK: Duration = Duration::from_millis(20);
/// The granularity changed blocks are found and copied at.
const BLOCK: u64 = 64 << 10;
/// A class without `schedulingInterval`.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);

/// Whether a PVC object is a non-primary mirror image.
pub(super) fn is_mirror(pvc: &Value) -> bool {
    pvc["metadata"]["annotations"][MIRROR_ANNOTATION] == "true"
}

/// The controller's loop, until the site goes.
pub(super) async fn run(site: Weak<Site>) {
    loop {
        tokio::time::sleep(TICK).await;
        let Some(site) = site.upgrade() else {
            return;
        };
        // Disk copies block; the cluster locks are held only briefly.
        if tokio::task::spawn_blocking(move || reconcile(&site))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Work that needs the peer, done without holding this cluster's lock.
enum Job {
    Promote,
    Sync {
        source: PathBuf,
        size: u64,
        pvc: Value,
    },
}

struct Task {
    key: Key,
    uid: String,
    ns: String,
    pvc: String,
    job: Job,
}

/// What became of a task.
enum Done {
    Promoted {
        forced: bool,
    },
    Synced {
        bytes: u64,
        took: Duration,
    },
    Failed {
        reason: &'static str,
        message: String,
    },
}

fn reconcile(site: &Arc<Site>) {
    let tasks = {
        let mut cluster = site.cluster();
        // A cluster that is down runs no controllers either.
        if cluster.faults.down {
            return;
        }
        cluster.plan_mirroring()
    };
    for task in tasks {
        let done = match &task.job {
            Job::Promote => promote(site, &task),
            Job::Sync { source, size, pvc } => sync(site, &task, source, *size, pvc),
        };
        site.cluster().mirrored(&task, done);
    }
}

/// Whether the peer lets `task`'s PVC be promoted here.
fn promote(site: &Site, task: &Task) -> Done {
    let Some(peer) = site.peer() else {
        return Done::Promoted { forced: false };
    };
    let peer = peer.cluster();
    if peer.faults.down {
        return Done::Promoted { forced: true };
    }
    let still_primary = peer.objects.iter().any(|((r, ns, _), (vr, _))| {
        *r == VOLUME_REPLICATION
            && *ns == task.ns
            && vr["spec"]["dataSource"]["name"] == task.pvc.as_str()
            && vr["status"]["state"] == "Primary"
    });
    if still_primary {
        return Done::Failed {
            reason: "FailedToPromote",
            message: format!(
                "PVC {}/{} is still primary on the peer cluster: promoting it here too would \
                 split the brain; demote it there first (replicationState: secondary)",
                task.ns, task.pvc
            ),
        };
    }
    Done::Promoted { forced: false }
}

/// Copy the changed blocks of `source` to the peer's PVC of the same name,
/// creating it as a mirror image when missing.
fn sync(site: &Site, task: &Task, source: &PathBuf, size: u64, pvc: &Value) -> Done {
    let failed = |reason, message: String| Done::Failed { reason, message };
    let Some(peer) = site.peer() else {
        return failed(
            "VolumeDegraded",
            "the cluster has no mirroring peer".to_owned(),
        );
    };
    let target = {
        let mut peer = peer.cluster();
        if peer.faults.down {
            return failed(
                "VolumeDegraded",
                "the peer cluster is unreachable; the mirror is not updated".to_owned(),
            );
        }
        let key = (PVC, task.ns.clone(), task.pvc.clone());
        match peer.objects.get(&key) {
            Some((existing, _)) if !is_mirror(existing) => {
                return failed(
                    "VolumeDegraded",
                    format!(
                        "PVC {}/{} is primary on the peer cluster as well (split brain); demote \
                         one side",
                        task.ns, task.pvc
                    ),
                );
            }
            Some(_) => {}
            None => {
                if !peer
                    .objects
                    .contains_key(&(NAMESPACE, String::new(), task.ns.clone()))
                {
                    return failed(
                        "VolumeDegraded",
                        format!("namespace {} does not exist on the peer cluster", task.ns),
                    );
                }
                let mirror = json!({
                    "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": task.pvc, "namespace": task.ns,
                                 "labels": pvc["metadata"]["labels"],
                                 "annotations": {MIRROR_ANNOTATION: "true"}},
                    "spec": pvc["spec"], "status": pvc["status"],
                });
                if let Err(e) = peer.disks.create(&pvc_disk(&task.ns, &task.pvc), size) {
                    return failed("VolumeDegraded", format!("the peer's image: {e}"));
                }
                let _ = peer.create(PVC, &task.ns, mirror);
            }
        }
        let disk = pvc_disk(&task.ns, &task.pvc);
        if peer.disks.size(&disk).ok() != Some(size)
            && let Err(e) = peer.disks.resize(&disk, size)
        {
            return failed("VolumeDegraded", format!("the peer's image: {e}"));
        }
        match peer.disks.path(&disk) {
            Ok(path) => path,
            Err(e) => return failed("VolumeDegraded", e.to_string()),
        }
    };
    let started = Instant::now();
    match copy_changed(source, &target) {
        Ok(bytes) => Done::Synced {
            bytes,
            took: started.elapsed(),
        },
        Err(e) => failed("VolumeDegraded", format!("copying to the peer: {e}")),
    }
}

/// Copy the blocks where `from` and `to` differ; the bytes copied.
fn copy_changed(from: &PathBuf, to: &PathBuf) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let ranges = crate::disk::changed_ranges(from, to, BLOCK)?;
    let (source, target) = (
        std::fs::File::open(from)?,
        std::fs::OpenOptions::new().write(true).open(to)?,
    );
    let mut buf = vec![0u8; BLOCK as usize];
    let mut bytes = 0;
    for (start, len) in ranges {
        let mut at = start;
        while at < start + len {
            let n = usize::try_from((start + len - at).min(BLOCK)).unwrap_or(buf.len());
            source.read_exact_at(&mut buf[..n], at)?;
            target.write_all_at(&buf[..n], at)?;
            at += n as u64;
            bytes += n as u64;
        }
    }
    target.sync_data()?;
    Ok(bytes)
}

/// A csi-addons condition.
fn condition(kind: &str, status: bool, reason: &str, message: &str, now: &str) -> Value {
    json!({"type": kind, "status": if status { "True" } else { "False" }, "reason": reason,
           "message": message, "lastTransitionTime": now})
}

/// A Go duration of `d` with millisecond precision (`"0.012s"`).
fn go_duration(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

impl Cluster {
    /// Replace what a VolumeReplication's status says (`fields` merged in),
    /// announcing a change only.
    fn vr_status(&mut self, key: &Key, fields: Value) {
        let Some((vr, _)) = self.objects.get_mut(key) else {
            return;
        };
        let before = vr["status"].clone();
        if !vr["status"].is_object() {
            vr["status"] = json!({});
        }
        if let Some(map) = fields.as_object() {
            for (k, v) in map {
                vr["status"][k] = v.clone();
            }
        }
        vr["status"]["observedGeneration"] = vr["metadata"]["generation"].clone();
        // A condition's transition time moves only when it does.
        let changed = |v: &Value| {
            let mut v = v.clone();
            for c in v["conditions"].as_array_mut().into_iter().flatten() {
                c["lastTransitionTime"] = Value::Null;
            }
            v
        };
        if changed(&vr["status"]) != changed(&before) {
            self.bump("MODIFIED", key);
        } else {
            vr["status"] = before;
        }
    }

    /// A VolumeReplication that cannot do what it asks: `Degraded` with the
    /// reason. A primary whose mirroring fails is still promoted, so its
    /// `Completed` condition (a forced promotion's, say) stays as it was.
    fn vr_error(&mut self, key: &Key, state: &str, reason: &str, message: &str) {
        let now = timestamp(SystemTime::now());
        let promoted = (state == "Primary")
            .then(|| {
                let (vr, _) = self.objects.get(key)?;
                vr["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .find(|c| c["type"] == "Completed" && c["status"] == "True")
                    .cloned()
            })
            .flatten();
        let completed =
            promoted.unwrap_or_else(|| condition("Completed", false, reason, message, &now));
        self.vr_status(
            key,
            json!({"state": state, "message": message, "conditions": [
                completed,
                condition("Degraded", true, reason, message, &now),
                condition("Resyncing", false, "NotResyncing", "", &now),
            ]}),
        );
    }

    /// Mark a PVC as a mirror image or not.
    fn set_mirror(&mut self, ns: &str, name: &str, mirror: bool) {
        let key = (PVC, ns.to_owned(), name.to_owned());
        let Some((pvc, _)) = self.objects.get_mut(&key) else {
            return;
        };
        if is_mirror(pvc) == mirror {
            return;
        }
        if mirror {
            pvc["metadata"]["annotations"][MIRROR_ANNOTATION] = json!("true");
        } else if let Some(a) = pvc["metadata"]["annotations"].as_object_mut() {
            a.remove(MIRROR_ANNOTATION);
        }
        self.bump("MODIFIED", &key);
    }

    /// Settle what needs no peer; list what does.
    fn plan_mirroring(&mut self) -> Vec<Task> {
        let vrs: Vec<(Key, Value)> = self
            .objects
            .iter()
            .filter(|(k, _)| k.0 == VOLUME_REPLICATION)
            .map(|(k, (o, _))| (k.clone(), o.clone()))
            .collect();
        let known: std::collections::HashSet<String> = vrs
            .iter()
            .filter_map(|(_, vr)| vr["metadata"]["uid"].as_str().map(str::to_owned))
            .collect();
        self.synced.retain(|uid, _| known.contains(uid));
        let mut tasks = Vec::new();
        for (key, vr) in vrs {
            let spec = &vr["spec"];
            let ns = key.1.clone();
            let class_name = spec["volumeReplicationClass"].as_str().unwrap_or_default();
            let Some((class, _)) = self.objects.get(&(
                VOLUME_REPLICATION_CLASS,
                String::new(),
                class_name.to_owned(),
            )) else {
                let message = format!("VolumeReplicationClass \"{class_name}\" not found");
                self.vr_error(&key, "Unknown", "Error", &message);
                continue;
            };
            let interval = class["spec"]["parameters"]["schedulingInterval"]
                .as_str()
                .and_then(parse_duration)
                .unwrap_or(DEFAULT_INTERVAL);
            let source = &spec["dataSource"];
            let pvc_name = source["name"].as_str().unwrap_or_default().to_owned();
            if source["kind"] != "PersistentVolumeClaim" {
                let message = "spec.dataSource must be a PersistentVolumeClaim";
                self.vr_error(&key, "Unknown", "Error", message);
                continue;
            }
            let Some((pvc, _)) = self.objects.get(&(PVC, ns.clone(), pvc_name.clone())) else {
                let message = format!("PersistentVolumeClaim {ns}/{pvc_name} not found");
                self.vr_error(&key, "Unknown", "Error", &message);
                continue;
            };
            let pvc = pvc.clone();
            let uid = vr["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let now = timestamp(SystemTime::now());
            match spec["replicationState"].as_str() {
                Some(state @ ("secondary" | "resync")) => {
                    self.set_mirror(&ns, &pvc_name, true);
                    self.synced.remove(&uid);
                    let resync = state == "resync";
                    self.vr_status(
                        &key,
                        json!({"state": "Secondary", "message": "volume is demoted", "conditions": [
                            condition("Completed", true, "Demoted", "is demoted", &now),
                            condition("Degraded", false, "Healthy", "", &now),
                            if resync {
                                condition("Resyncing", true, "ResyncTriggered", "resyncing from the primary", &now)
                            } else {
                                condition("Resyncing", false, "NotResyncing", "", &now)
                            },
                        ]}),
                    );
                }
                Some("primary") if is_mirror(&pvc) => tasks.push(Task {
                    key,
                    uid,
                    ns,
                    pvc: pvc_name,
                    job: Job::Promote,
                }),
                Some("primary") => {
                    let due = self
                        .synced
                        .get(&uid)
                        .is_none_or(|t| t.elapsed() >= interval);
                    let disk = pvc_disk(&ns, &pvc_name);
                    let found = self.disks.path(&disk).and_then(|p| {
                        let size = self.disks.size(&disk)?;
                        Ok((p, size))
                    });
                    match found {
                        Ok((source, size)) if due => tasks.push(Task {
                            key,
                            uid,
                            ns,
                            pvc: pvc_name,
                            job: Job::Sync { source, size, pvc },
                        }),
                        Ok(_) => {}
                        Err(e) => {
                            let message = format!("the image of PVC {ns}/{pvc_name}: {e}");
                            self.vr_error(&key, "Primary", "VolumeDegraded", &message);
                        }
                    }
                }
                other => {
                    let message = format!(
                        "spec.replicationState {other:?} is not one of primary, secondary, resync"
                    );
                    self.vr_error(&key, "Unknown", "Error", &message);
                }
            }
        }
        tasks
    }

    /// Record what a task did, unless its VolumeReplication went meanwhile.
    fn mirrored(&mut self, task: &Task, done: Done) {
        let current = self
            .objects
            .get(&task.key)
            .and_then(|(vr, _)| vr["metadata"]["uid"].as_str())
            == Some(task.uid.as_str());
        if !current {
            return;
        }
        let now = timestamp(SystemTime::now());
        match done {
            Done::Promoted { forced } => {
                self.set_mirror(&task.ns, &task.pvc, false);
                let message = if forced {
                    "is promoted (forced: the peer cluster is unreachable)"
                } else {
                    "is promoted"
                };
                self.vr_status(
                    &task.key,
                    json!({"state": "Primary", "message": message, "conditions": [
                        condition("Completed", true, "Promoted", message, &now),
                        condition("Degraded", false, "Healthy", "", &now),
                        condition("Resyncing", false, "NotResyncing", "", &now),
                    ]}),
                );
            }
            Done::Synced { bytes, took } => {
                self.synced.insert(task.uid.clone(), Instant::now());
                self.vr_status(
                    &task.key,
                    json!({"state": "Primary", "message": "volume is mirrored to the peer",
                           "lastSyncTime": now, "lastSyncDuration": go_duration(took),
                           "lastSyncBytes": bytes, "conditions": [
                        condition("Completed", true, "Promoted", "is promoted", &now),
                        condition("Degraded", false, "Healthy", "", &now),
                        condition("Resyncing", false, "NotResyncing", "", &now),
                    ]}),
                );
            }
            Done::Failed { reason, message } => {
                let state = if reason == "FailedToPromote" {
                    "Secondary"
                } else {
                    "Primary"
                };
                self.vr_error(&task.key, state, reason, &message);
            }
        }
    }
}

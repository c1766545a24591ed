//! The simulated cluster's controllers: what KubeVirt, CDI and the garbage
//! collector do with the objects clients create. Disk work (provisioning,
//! cloning, snapshot copies) happens on real sparse files when an object is
//! created; its status catches up after the site's latency, in
//! [`Cluster::advance`], which every request runs first.

use std::time::{Duration, Instant, SystemTime};

use axum::http::StatusCode;
use base64::Engine as _;
use serde_json::{Value, json};

use super::data::{Agent, Served};
use super::mirror::is_mirror;
use super::{
    Cluster, DATA_VOLUME, EXPORT, Key, NAMESPACE, PVC, RESOURCES, Refused, SECRET, SNAPSHOT,
    SNAPSHOT_CONTENT, VM, VMI, refuse, timestamp, uid,
};

/// The disk image of a PVC.
pub(super) fn pvc_disk(ns: &str, pvc: &str) -> String {
    format!("pvc-{ns}-{pvc}")
}

/// The disk image of a volume snapshot.
fn snapshot_disk(ns: &str, volume_snapshot: &str) -> String {
    format!("vs-{ns}-{volume_snapshot}")
}

/// `(volume name, claim name)` of a VMI template's PVC-backed volumes.
pub(super) fn volume_claims(template_spec: &Value) -> Vec<(String, String)> {
    template_spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let claim = v["dataVolume"]["name"]
                .as_str()
                .or_else(|| v["persistentVolumeClaim"]["claimName"].as_str())?;
            Some((v["name"].as_str()?.to_owned(), claim.to_owned()))
        })
        .collect()
}

/// Bytes of a Kubernetes quantity (`"10Gi"`, `"512M"`, `"1048576"`).
pub(crate) fn parse_quantity(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let multiplier: u128 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        _ => return None,
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let scale = 10u128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
    let digits: u128 = format!("{whole}{fraction}").parse().ok()?;
    u64::try_from((digits * multiplier).div_ceil(scale)).ok()
}

/// A Go duration (`"2h"`, `"1h30m"`, `"90s"`).
pub(super) fn parse_duration(d: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = d.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let split = rest.find(|c: char| !c.is_ascii_digit())?;
        let n: u64 = rest[..split].parse().ok()?;
        rest = &rest[split..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        total += match &rest[..unit_len] {
            "h" => Duration::from_secs(n * 3600),
            "m" => Duration::from_secs(n * 60),
            "s" => Duration::from_secs(n),
            "ms" => Duration::from_millis(n),
            _ => return None,
        };
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// The storage a DataVolume asks for.
fn requested_size(dv: &Value) -> Option<u64> {
    ["storage", "pvc"]
        .iter()
        .find_map(|part| dv["spec"][part]["resources"]["requests"]["storage"].as_str())
        .and_then(parse_quantity)
}

fn owner(object: &Value) -> Value {
    json!({
        "apiVersion": object["apiVersion"], "kind": object["kind"],
        "name": object["metadata"]["name"], "uid": object["metadata"]["uid"],
        "controller": true, "blockOwnerDeletion": true,
    })
}

/// What the API server's validation refuses of an object.
pub(super) fn validate(kind: &str, object: &Value) -> Result<(), Refused> {
    let invalid = |message: String| {
        Err(refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            &message,
        ))
    };
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    match kind {
        "Route" => {
            let alternates = object["spec"]["alternateBackends"]
                .as_array()
                .map_or(0, Vec::len);
            if alternates > 3 {
                return invalid(format!(
                    "Route.route.openshift.io \"{name}\" is invalid: spec.alternateBackends: Too many: {alternates}: must have at most 3 items"
                ));
            }
            let backends = std::iter::once(&object["spec"]["to"]).chain(
                object["spec"]["alternateBackends"]
                    .as_array()
                    .into_iter()
                    .flatten(),
            );
            for b in backends {
                if b["weight"].as_u64().is_some_and(|w| w > 256) {
                    return invalid(format!(
                        "Route.route.openshift.io \"{name}\" is invalid: spec.to.weight: Invalid value: {}: must be between 0 and 256",
                        b["weight"]
                    ));
                }
            }
            Ok(())
        }
        "VirtualMachine" => {
            if !object["spec"]["running"].is_null() && !object["spec"]["runStrategy"].is_null() {
                return invalid(format!(
                    "VirtualMachine.kubevirt.io \"{name}\" is invalid: spec.running: Invalid value: running and runStrategy are mutually exclusive"
                ));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn initial_status(kind: &str, object: &mut Value) {
    match kind {
        "VirtualMachineSnapshot" => {
            object["status"] = json!({"phase": "InProgress", "readyToUse": false, "conditions": [
                {"type": "Progressing", "status": "True", "reason": "Source locked and operation in progress"},
                {"type": "Ready", "status": "False", "reason": "Not ready"}]});
        }
        "VirtualMachineExport" => object["status"] = json!({"phase": "Pending"}),
        "DataVolume" => {
            let source = &object["spec"]["source"];
            let phase = if !source["upload"].is_null() {
                "UploadScheduled"
            } else if !source["pvc"].is_null() || !source["snapshot"].is_null() {
                "CloneScheduled"
            } else {
                "ImportScheduled"
            };
            object["status"] = json!({"phase": phase, "progress": "N/A"});
        }
        "Route" => {
            object["status"] = json!({"ingress": [{
                "host": object["spec"]["host"], "routerName": "default",
                "conditions": [{"type": "Admitted", "status": "True"}]}]});
        }
        "Namespace" => object["status"] = json!({"phase": "Active"}),
        _ => {}
    }
}

impl Cluster {
    pub(super) fn bump(&mut self, kind: &'static str, key: &Key) {
        self.rv += 1;
        let rv = self.rv;
        if let Some((object, _)) = self.objects.get_mut(key) {
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            let object = object.clone();
            self.events.push(super::Event {
                rv,
                kind,
                key: key.clone(),
                object,
            });
        }
    }

    pub(super) fn create(
        &mut self,
        r: usize,
        ns: &str,
        mut object: Value,
    ) -> Result<Value, Refused> {
        let res = RESOURCES[r];
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let name = if name.is_empty() {
            match object["metadata"]["generateName"].as_str() {
                Some(prefix) => format!("{prefix}{}", &hex::encode(rand::random::<[u8; 3]>())[..5]),
                None => {
                    return Err(refuse(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "Invalid",
                        "metadata.name: Required value: name or generateName is required",
                    ));
                }
            }
        } else {
            name
        };
        let key = (
            r,
            if res.namespaced {
                ns.to_owned()
            } else {
                String::new()
            },
            name.clone(),
        );
        if self.objects.contains_key(&key) {
            let msg = format!("{}.{} \"{name}\" already exists", res.plural, res.group);
            return Err(refuse(StatusCode::CONFLICT, "AlreadyExists", &msg));
        }
        if res.namespaced
            && !self
                .objects
                .contains_key(&(NAMESPACE, String::new(), ns.to_owned()))
        {
            return Err(refuse(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("namespaces \"{ns}\" not found"),
            ));
        }
        object["apiVersion"] = json!(res.api_version());
        object["kind"] = json!(res.kind);
        {
            let meta = &mut object["metadata"];
            meta["name"] = json!(name);
            if res.namespaced {
                meta["namespace"] = json!(ns);
            }
            meta["uid"] = json!(uid());
            meta["creationTimestamp"] = json!(timestamp(SystemTime::now()));
            meta["generation"] = json!(1);
        }
        validate(res.kind, &object)?;
        initial_status(res.kind, &mut object);
        self.objects.insert(key.clone(), (object, Instant::now()));
        self.bump("ADDED", &key);
        match r {
            VM => {
                self.ensure_data_volume_templates(&key);
                self.reconcile_vm(&key, None);
            }
            DATA_VOLUME => self.provision(&key),
            SNAPSHOT => self.take_snapshot(&key),
            _ => {}
        }
        Ok(self.objects[&key].0.clone())
    }

    /// Delete an object, what it owns (as the garbage collector does with
    /// background propagation) and the data behind them.
    pub(super) fn remove(&mut self, key: &Key) -> Option<Value> {
        let (object, _) = self.objects.remove(key)?;
        self.rv += 1;
        self.events.push(super::Event {
            rv: self.rv,
            kind: "DELETED",
            key: key.clone(),
            object: object.clone(),
        });
        let (ns, name) = (key.1.clone(), key.2.clone());
        match key.0 {
            PVC => {
                self.uploads.remove(&(ns.clone(), name.clone()));
                let _ = self.disks.remove(&pvc_disk(&ns, &name));
            }
            SNAPSHOT_CONTENT => {
                for backup in object["spec"]["volumeBackups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    if let Some(vs) = backup["volumeSnapshotName"].as_str() {
                        let _ = self.disks.remove(&snapshot_disk(&ns, vs));
                    }
                }
            }
            EXPORT => {
                self.exports.remove(&(ns.clone(), name.clone()));
            }
            // A VM outlives its instance: it shows it stopped (or restarts).
            VMI => {
                let vm = (VM, ns.clone(), name.clone());
                if self.objects.contains_key(&vm) {
                    self.reconcile_vm(&vm, None);
                }
            }
            _ => {}
        }
        let owner_uid = object["metadata"]["uid"].clone();
        let owned: Vec<Key> = self
            .objects
            .iter()
            .filter(|(_, (o, _))| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| r["uid"] == owner_uid)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in owned {
            self.remove(&k);
        }
        Some(object)
    }

    /// A VM's `dataVolumeTemplates` become DataVolumes it owns.
    pub(super) fn ensure_data_volume_templates(&mut self, key: &Key) {
        let Some((vm, _)) = self.objects.get(key) else {
            return;
        };
        let owner = owner(vm);
        let templates: Vec<Value> = vm["spec"]["dataVolumeTemplates"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for template in templates {
            let Some(name) = template["metadata"]["name"].as_str() else {
                continue;
            };
            if self
                .objects
                .contains_key(&(DATA_VOLUME, key.1.clone(), name.to_owned()))
            {
                continue;
            }
            let mut dv = template.clone();
            dv["apiVersion"] = json!("cdi.kubevirt.io/v1beta1");
            dv["kind"] = json!("DataVolume");
            dv["metadata"]["namespace"] = json!(key.1);
            dv["metadata"]["ownerReferences"] = json!([owner]);
            let _ = self.create(DATA_VOLUME, &key.1.clone(), dv);
        }
    }

    /// Whether a VM should run: `running`, or its `runStrategy`; `Manual`
    /// keeps what the last start or stop asked (`wanted`).
    fn wants_running(vm: &Value, has_vmi: bool, wanted: Option<bool>) -> bool {
        match vm["spec"]["runStrategy"].as_str() {
            Some("Always" | "RerunOnFailure") => true,
            Some("Halted") => false,
            Some(_) => wanted.unwrap_or(has_vmi),
            None => vm["spec"]["running"] == true,
        }
    }

    /// Whether a PVC is a non-primary mirror image (see [`super::mirror`]).
    pub(super) fn mirror_image(&self, ns: &str, pvc: &str) -> bool {
        self.objects
            .get(&(PVC, ns.to_owned(), pvc.to_owned()))
            .is_some_and(|(pvc, _)| is_mirror(pvc))
    }

    /// What keeps a VM's volumes from use, as its printable status.
    fn volumes_blocked(&self, ns: &str, vm: &Value) -> Option<&'static str> {
        for (_, claim) in volume_claims(&vm["spec"]["template"]["spec"]) {
            // A mirror image is read-only until promoted.
            if self.mirror_image(ns, &claim) {
                return Some("ErrorPvcNotUsable");
            }
            let dv = self
                .objects
                .get(&(DATA_VOLUME, ns.to_owned(), claim.clone()));
            match dv.map(|(dv, _)| dv["status"]["phase"].as_str().unwrap_or_default()) {
                Some("Succeeded") => {}
                Some("Failed") => return Some("DataVolumeError"),
                Some(_) => return Some("Provisioning"),
                None if self.objects.contains_key(&(PVC, ns.to_owned(), claim)) => {}
                None => return Some("ErrorPvcNotFound"),
            }
        }
        None
    }

    /// A VM's instance follows what it wants once its volumes are ready.
    pub(super) fn reconcile_vm(&mut self, key: &Key, wanted: Option<bool>) {
        let Some((vm, _)) = self.objects.get(key) else {
            return;
        };
        let vm = vm.clone();
        let vmi_key = (VMI, key.1.clone(), key.2.clone());
        let has_vmi = self.objects.contains_key(&vmi_key);
        let running = Self::wants_running(&vm, has_vmi, wanted);
        let blocked = self.volumes_blocked(&key.1, &vm);
        if running && !has_vmi && blocked.is_none() {
            self.start_instance(key, &vm);
        } else if !running && has_vmi {
            self.remove(&vmi_key);
        }
        let up = self.objects.contains_key(&vmi_key);
        let printable = if up {
            "Running"
        } else if running {
            blocked.unwrap_or("Starting")
        } else {
            "Stopped"
        };
        let Some((vm, _)) = self.objects.get_mut(key) else {
            return;
        };
        let before = vm["status"].clone();
        vm["status"]["printableStatus"] = json!(printable);
        vm["status"]["ready"] = json!(up);
        vm["status"]["created"] = json!(up);
        if vm["status"] != before {
            self.bump("MODIFIED", key);
        }
    }

    /// A VM instance with addresses; an upload into its PVCs ends (a running
    /// VM holds them).
    fn start_instance(&mut self, key: &Key, vm: &Value) {
        let template = &vm["spec"]["template"];
        let mut labels = template["metadata"]["labels"].clone();
        if !labels.is_object() {
            labels = json!({});
        }
        labels["vm.kubevirt.io/name"] = json!(key.2);
        let interfaces: Vec<Value> = template["spec"]["domain"]["devices"]["interfaces"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| {
                self.addresses += 1;
                let n = self.addresses;
                let mac = i["macAddress"].as_str().map_or_else(
                    || {
                        format!(
                            "02:00:00:{:02x}:{:02x}:{:02x}",
                            (n >> 16) & 0xff,
                            (n >> 8) & 0xff,
                            n & 0xff
                        )
                    },
                    str::to_owned,
                );
                let ip = format!("10.128.{}.{}", n / 250, n % 250 + 2);
                json!({"name": i["name"], "mac": mac, "ipAddress": ip, "ipAddresses": [ip],
                       "interfaceName": "eth0", "infoSource": "domain, guest-agent"})
            })
            .collect();
        let vmi = json!({
            "metadata": {"name": key.2, "namespace": key.1, "labels": labels,
                         "ownerReferences": [owner(vm)]},
            "spec": template["spec"],
            "status": {"phase": "Running", "nodeName": "lab-node-1", "interfaces": interfaces,
                       "fsFreezeStatus": "unfrozen",
                       "conditions": [{"type": "Ready", "status": "True"},
                                      {"type": "AgentConnected", "status": "True"}]},
        });
        let _ = self.create(VMI, &key.1.clone(), vmi);
        for (_, claim) in volume_claims(&template["spec"]) {
            self.uploads.remove(&(key.1.clone(), claim));
        }
    }

    /// The `start` and `stop` subresources.
    pub(super) fn start_stop(&mut self, key: &Key, start: bool) {
        if let Some((vm, _)) = self.objects.get_mut(key) {
            let spec = &mut vm["spec"];
            if !spec["running"].is_null() {
                spec["running"] = json!(start);
            } else {
                match (spec["runStrategy"].as_str(), start) {
                    (Some("Halted"), true) => spec["runStrategy"] = json!("Always"),
                    (Some("Always" | "RerunOnFailure"), false) => {
                        spec["runStrategy"] = json!("Halted")
                    }
                    _ => {}
                }
            }
        }
        self.bump("MODIFIED", key);
        self.reconcile_vm(key, Some(start));
    }

    fn fail(&mut self, key: &Key, reason: &str, message: &str) {
        if let Some((o, _)) = self.objects.get_mut(key) {
            let now = timestamp(SystemTime::now());
            o["status"]["phase"] = json!("Failed");
            o["status"]["conditions"] = json!([{"type": "Ready", "status": "False", "reason": reason,
                                               "message": message, "lastTransitionTime": now}]);
            if o["kind"] == "VirtualMachineSnapshot" {
                o["status"]["error"] = json!({"message": message, "time": now});
            }
        }
        self.bump("MODIFIED", key);
    }

    /// CDI: a DataVolume gets its PVC and its disk — empty, or a copy of
    /// the PVC or volume snapshot it names. An HTTP source is not fetched:
    /// the lab provisions it empty.
    fn provision(&mut self, key: &Key) {
        let Some((dv, _)) = self.objects.get(key) else {
            return;
        };
        let dv = dv.clone();
        let (ns, name) = (key.1.clone(), key.2.clone());
        let source = &dv["spec"]["source"];
        let copy_from = if let Some(src) = source["pvc"]["name"].as_str() {
            let src_ns = source["pvc"]["namespace"].as_str().unwrap_or(&ns);
            if self.mirror_image(src_ns, src) {
                let msg = format!(
                    "PVC {src_ns}/{src} is a non-primary mirror image; promote it (a \
                     VolumeReplication with replicationState: primary) before cloning it"
                );
                return self.fail(key, "CloneValidationFailed", &msg);
            }
            Some((pvc_disk(src_ns, src), format!("PVC {src_ns}/{src}")))
        } else if let Some(src) = source["snapshot"]["name"].as_str() {
            let src_ns = source["snapshot"]["namespace"].as_str().unwrap_or(&ns);
            Some((
                snapshot_disk(src_ns, src),
                format!("VolumeSnapshot {src_ns}/{src}"),
            ))
        } else {
            None
        };
        if self.objects.contains_key(&(PVC, ns.clone(), name.clone())) {
            let msg = format!("PVC {name} already exists and is not owned by this DataVolume");
            return self.fail(key, "ErrExceededQuota", &msg);
        }
        let disk = pvc_disk(&ns, &name);
        let size = match copy_from {
            Some((from, what)) => {
                let Ok(source_size) = self.disks.size(&from) else {
                    return self.fail(key, "CloneSourceNotFound", &format!("{what} not found"));
                };
                let size = requested_size(&dv).unwrap_or(source_size);
                if size < source_size {
                    let msg =
                        format!("target size {size} is smaller than the source's {source_size}");
                    return self.fail(key, "CloneValidationFailed", &msg);
                }
                if let Err(e) = self
                    .disks
                    .copy(&from, &disk)
                    .and_then(|_| self.disks.resize(&disk, size))
                {
                    return self.fail(key, "CloneFailed", &e.to_string());
                }
                size
            }
            None => {
                let Some(size) = requested_size(&dv) else {
                    let msg = "spec.storage.resources.requests.storage is required";
                    return self.fail(key, "InvalidSize", msg);
                };
                if let Err(e) = self.disks.create(&disk, size) {
                    return self.fail(key, "ProvisioningFailed", &e.to_string());
                }
                size
            }
        };
        let pvc = json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": ns, "labels": dv["metadata"]["labels"],
                         "ownerReferences": [owner(&dv)]},
            "spec": {"accessModes": ["ReadWriteOnce"], "volumeMode": "Block",
                     "resources": {"requests": {"storage": size.to_string()}}},
            "status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"],
                       "capacity": {"storage": size.to_string()}},
        });
        let _ = self.create(PVC, &ns, pvc);
    }

    /// A VirtualMachineSnapshot copies the VM's volumes now (the source is
    /// frozen meanwhile when it runs) into volume snapshots listed in a
    /// VirtualMachineSnapshotContent; it is ready after the latency.
    fn take_snapshot(&mut self, key: &Key) {
        let Some((snapshot, _)) = self.objects.get(key) else {
            return;
        };
        let snapshot = snapshot.clone();
        let ns = key.1.clone();
        let source = snapshot["spec"]["source"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let Some((vm, _)) = self.objects.get(&(VM, ns.clone(), source.clone())) else {
            let msg = format!("VirtualMachine {ns}/{source} does not exist");
            return self.fail(key, "SourceDoesNotExist", &msg);
        };
        let vm = vm.clone();
        let online = self
            .objects
            .contains_key(&(VMI, ns.clone(), source.clone()));
        let snap_uid = snapshot["metadata"]["uid"].as_str().unwrap_or_default();
        let mut backups = Vec::new();
        let mut included = Vec::new();
        for (volume, claim) in volume_claims(&vm["spec"]["template"]["spec"]) {
            let Some((pvc, _)) = self.objects.get(&(PVC, ns.clone(), claim.clone())) else {
                let msg = format!("PVC {ns}/{claim} of volume {volume} not found");
                return self.fail(key, "VolumeNotFound", &msg);
            };
            let pvc = pvc.clone();
            let vs = format!("vmsnapshot-{snap_uid}-volume-{volume}");
            if let Err(e) = self
                .disks
                .copy(&pvc_disk(&ns, &claim), &snapshot_disk(&ns, &vs))
            {
                return self.fail(key, "SnapshotFailed", &e.to_string());
            }
            included.push(json!(volume));
            backups.push(json!({
                "volumeName": volume, "volumeSnapshotName": vs,
                "persistentVolumeClaim": {"metadata": {"name": claim, "namespace": ns,
                                                       "labels": pvc["metadata"]["labels"]},
                                          "spec": pvc["spec"]},
            }));
        }
        let content_name = format!("vmsnapshot-content-{snap_uid}");
        let content = json!({
            "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshotContent",
            "metadata": {"name": content_name, "namespace": ns, "ownerReferences": [owner(&snapshot)]},
            "spec": {
                "source": {"virtualMachine": {
                    "metadata": {"name": source, "namespace": ns, "labels": vm["metadata"]["labels"],
                                 "annotations": vm["metadata"]["annotations"], "uid": vm["metadata"]["uid"]},
                    "spec": vm["spec"],
                }},
                "virtualMachineSnapshotName": snapshot["metadata"]["name"],
                "volumeBackups": backups,
            },
            "status": {"readyToUse": false},
        });
        let _ = self.create(SNAPSHOT_CONTENT, &ns, content);
        if let Some((o, _)) = self.objects.get_mut(key) {
            o["status"]["sourceUID"] = vm["metadata"]["uid"].clone();
            o["status"]["virtualMachineSnapshotContentName"] = json!(content_name);
            o["status"]["snapshotVolumes"] = json!({"includedVolumes": included});
            o["status"]["indications"] = if online {
                json!(["Online", "GuestAgent"])
            } else {
                json!([])
            };
        }
        self.bump("MODIFIED", key);
    }

    /// The controllers: move asynchronous objects along, end expired
    /// exports and upload tokens.
    pub(super) fn advance(&mut self, latency: Duration) {
        let due: Vec<Key> = self
            .objects
            .iter()
            .filter(|(_, (o, born))| {
                born.elapsed() >= latency
                    && matches!(
                        o["kind"].as_str(),
                        Some("VirtualMachineSnapshot" | "VirtualMachineExport" | "DataVolume")
                    )
                    && !matches!(
                        o["status"]["phase"].as_str(),
                        Some("Succeeded" | "Ready" | "Failed" | "UploadReady")
                    )
            })
            .map(|(k, _)| k.clone())
            .collect();
        let mut volumes_changed = false;
        for key in due {
            let now = timestamp(SystemTime::now());
            match key.0 {
                SNAPSHOT => self.snapshot_ready(&key, &now),
                EXPORT => self.export_ready(&key, &now),
                DATA_VOLUME => {
                    volumes_changed = true;
                    if let Some((o, _)) = self.objects.get_mut(&key) {
                        let upload = !o["spec"]["source"]["upload"].is_null();
                        o["status"] = json!({
                        "phase": if upload { "UploadReady" } else { "Succeeded" },
                        "progress": if upload { "N/A" } else { "100.0%" },
                        "claimName": key.2,
                        "conditions": [
                            {"type": "Bound", "status": "True", "reason": "Bound", "lastTransitionTime": now},
                            {"type": "Ready", "status": if upload { "False" } else { "True" }, "lastTransitionTime": now},
                        ]});
                    }
                    self.bump("MODIFIED", &key);
                }
                _ => {}
            }
        }
        if volumes_changed {
            let vms: Vec<Key> = self.objects.keys().filter(|k| k.0 == VM).cloned().collect();
            for vm in vms {
                self.reconcile_vm(&vm, None);
            }
        }
        let now = SystemTime::now();
        let expired: Vec<(String, String)> = self
            .exports
            .iter()
            .filter(|(_, s)| s.expires <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for (ns, name) in expired {
            self.remove(&(EXPORT, ns, name));
        }
        self.upload_tokens.retain(|_, (_, until)| *until > now);
        // An upload server goes once no token opens it any more.
        let open: std::collections::BTreeSet<(String, String)> = self
            .upload_tokens
            .values()
            .map(|(pvc, _)| pvc.clone())
            .collect();
        self.uploads.retain(|pvc, _| open.contains(pvc));
    }

    fn snapshot_ready(&mut self, key: &Key, now: &str) {
        let content = self.objects.get(key).and_then(|(o, _)| {
            o["status"]["virtualMachineSnapshotContentName"]
                .as_str()
                .map(str::to_owned)
        });
        let created = self
            .objects
            .get(key)
            .map(|(o, _)| o["metadata"]["creationTimestamp"].clone());
        if let Some(content) = content {
            let content_key = (SNAPSHOT_CONTENT, key.1.clone(), content);
            if let Some((c, _)) = self.objects.get_mut(&content_key) {
                let statuses: Vec<Value> = c["spec"]["volumeBackups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|b| json!({"volumeSnapshotName": b["volumeSnapshotName"], "readyToUse": true, "creationTime": created}))
                    .collect();
                c["status"] = json!({"readyToUse": true, "creationTime": created, "volumeSnapshotStatus": statuses});
                self.bump("MODIFIED", &content_key);
            }
        }
        if let Some((o, _)) = self.objects.get_mut(key) {
            o["status"]["phase"] = json!("Succeeded");
            o["status"]["readyToUse"] = json!(true);
            // The data was captured when the snapshot was created.
            o["status"]["creationTime"] = created.unwrap_or_else(|| json!(now));
            o["status"]["conditions"] = json!([
                {"type": "Progressing", "status": "False", "reason": "Operation complete", "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "reason": "Operation complete", "lastTransitionTime": now},
            ]);
        }
        self.bump("MODIFIED", key);
    }

    /// The volumes an export serves: `(name, disk image)`; an error says
    /// why it stays pending.
    fn export_volumes(&self, ns: &str, export: &Value) -> Result<Vec<(String, String)>, String> {
        let source = &export["spec"]["source"];
        let name = source["name"].as_str().unwrap_or_default().to_owned();
        let in_use = |claim: &str| {
            self.objects
                .iter()
                .filter(|(k, _)| k.0 == VMI && k.1 == ns)
                .any(|(_, (vmi, _))| volume_claims(&vmi["spec"]).iter().any(|(_, c)| c == claim))
        };
        match source["kind"].as_str() {
            Some("VirtualMachineSnapshot") => {
                let Some((snapshot, _)) =
                    self.objects.get(&(SNAPSHOT, ns.to_owned(), name.clone()))
                else {
                    return Err(format!("VirtualMachineSnapshot {ns}/{name} not found"));
                };
                if snapshot["status"]["readyToUse"] != true {
                    return Err(format!(
                        "VirtualMachineSnapshot {ns}/{name} is not ready to use"
                    ));
                }
                let content = snapshot["status"]["virtualMachineSnapshotContentName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let Some((content, _)) =
                    self.objects
                        .get(&(SNAPSHOT_CONTENT, ns.to_owned(), content))
                else {
                    return Err(format!("the content of snapshot {ns}/{name} is missing"));
                };
                Ok(content["spec"]["volumeBackups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|b| {
                        let claim = b["persistentVolumeClaim"]["metadata"]["name"].as_str()?;
                        let vs = b["volumeSnapshotName"].as_str()?;
                        Some((claim.to_owned(), snapshot_disk(ns, vs)))
                    })
                    .collect())
            }
            Some("PersistentVolumeClaim") => {
                if !self
                    .objects
                    .contains_key(&(PVC, ns.to_owned(), name.clone()))
                {
                    return Err(format!("PersistentVolumeClaim {ns}/{name} not found"));
                }
                if in_use(&name) {
                    return Err(format!("PersistentVolumeClaim {ns}/{name} is in use"));
                }
                if self.mirror_image(ns, &name) {
                    return Err(format!(
                        "PersistentVolumeClaim {ns}/{name} is a non-primary mirror image"
                    ));
                }
                Ok(vec![(name.clone(), pvc_disk(ns, &name))])
            }
            Some("VirtualMachine") => {
                let Some((vm, _)) = self.objects.get(&(VM, ns.to_owned(), name.clone())) else {
                    return Err(format!("VirtualMachine {ns}/{name} not found"));
                };
                if self
                    .objects
                    .contains_key(&(VMI, ns.to_owned(), name.clone()))
                {
                    return Err(format!("VirtualMachine {ns}/{name} is running"));
                }
                Ok(volume_claims(&vm["spec"]["template"]["spec"])
                    .into_iter()
                    .map(|(_, claim)| {
                        let disk = pvc_disk(ns, &claim);
                        (claim, disk)
                    })
                    .collect())
            }
            other => Err(format!(
                "cannot export a {}",
                other.unwrap_or("source without a kind")
            )),
        }
    }

    /// The export's token: the Secret `spec.tokenSecretRef` names, or one
    /// the export generates (and owns).
    fn export_token(&mut self, ns: &str, export: &Value) -> Result<(String, String), String> {
        if let Some(secret) = export["spec"]["tokenSecretRef"].as_str() {
            let Some((s, _)) = self
                .objects
                .get(&(SECRET, ns.to_owned(), secret.to_owned()))
            else {
                return Err(format!("token Secret {ns}/{secret} not found"));
            };
            let token = s["data"]["token"]
                .as_str()
                .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .ok_or_else(|| format!("Secret {ns}/{secret} has no data.token"))?;
            return Ok((secret.to_owned(), token));
        }
        let name = format!(
            "export-token-{}",
            export["metadata"]["name"].as_str().unwrap_or_default()
        );
        let token = hex::encode(rand::random::<[u8; 24]>());
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": ns, "ownerReferences": [owner(export)]},
            "data": {"token": base64::engine::general_purpose::STANDARD.encode(&token)},
        });
        self.create(SECRET, ns, secret)
            .map_err(|_| format!("token Secret {ns}/{name} could not be created"))?;
        Ok((name, token))
    }

    fn export_ready(&mut self, key: &Key, now: &str) {
        let Some((export, _)) = self.objects.get(key) else {
            return;
        };
        let export = export.clone();
        let ns = key.1.clone();
        let pending = |cluster: &mut Self, message: String| {
            if let Some((o, _)) = cluster.objects.get_mut(key) {
                let before = o["status"].clone();
                o["status"]["conditions"] = json!([{"type": "Ready", "status": "False",
                                                    "reason": "pending", "message": message}]);
                if o["status"] != before {
                    cluster.bump("MODIFIED", key);
                }
            }
        };
        let volumes = match self.export_volumes(&ns, &export) {
            Ok(v) => v,
            Err(message) => return pending(self, message),
        };
        let (secret, token) = match self.export_token(&ns, &export) {
            Ok(t) => t,
            Err(message) => return pending(self, message),
        };
        let mut served = Vec::new();
        for (volume, disk) in &volumes {
            let agent = self
                .disks
                .path(disk)
                .and_then(|path| Agent::start(path, false));
            match agent {
                Ok(agent) => served.push((volume.clone(), agent)),
                Err(e) => return pending(self, format!("export server: {e}")),
            }
        }
        let ttl = export["spec"]["ttlDuration"]
            .as_str()
            .and_then(parse_duration)
            .unwrap_or(Duration::from_secs(2 * 3600));
        let expires = SystemTime::now() + ttl;
        let name = key.2.clone();
        let base = format!(
            "{}/api/export.kubevirt.io/v1beta1/namespaces/{ns}/virtualmachineexports/{name}/volumes",
            self.data_url
        );
        let link = |base: &str| {
            json!({"cert": self.ca_pem, "volumes": volumes.iter().map(|(v, _)| json!({
                "name": v, "formats": [{"format": "raw", "url": format!("{base}/{v}/disk.img")}],
            })).collect::<Vec<_>>()})
        };
        let external = link(&base);
        let internal = link(&format!("https://virt-export-{name}.{ns}.svc/volumes"));
        self.exports.insert(
            (ns.clone(), name.clone()),
            Served {
                token,
                expires,
                volumes: served.into_iter().collect(),
            },
        );
        if let Some((o, _)) = self.objects.get_mut(key) {
            o["status"] = json!({
                "phase": "Ready", "tokenSecretRef": secret,
                "serviceName": format!("virt-export-{name}"),
                "virtualMachineName": export["spec"]["source"]["name"],
                "ttlExpirationTime": timestamp(expires),
                "links": {"external": external, "internal": internal},
                "conditions": [{"type": "Ready", "status": "True", "reason": "podReady", "lastTransitionTime": now}],
            });
        }
        self.bump("MODIFIED", key);
    }

    /// `POST …/uploadtokenrequests`: a token for writing a PVC through the
    /// upload proxy. Real CDI hands these out for `source: upload`
    /// DataVolumes only and takes whole images; the lab's proxy stands in
    /// for a mover agent attached to any provisioned PVC (see the README).
    pub(super) fn upload_token(&mut self, ns: &str, body: &Value) -> Result<Value, Refused> {
        let Some(claim) = body["spec"]["pvcName"].as_str().map(str::to_owned) else {
            return Err(refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                "UploadTokenRequest.upload.cdi.kubevirt.io is invalid: spec.pvcName: Required value",
            ));
        };
        if !self
            .objects
            .contains_key(&(PVC, ns.to_owned(), claim.clone()))
        {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("persistentvolumeclaims \"{claim}\" not found"),
            ));
        }
        if self.mirror_image(ns, &claim) {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("PVC {claim} is a non-primary mirror image and cannot be written"),
            ));
        }
        if let Some((dv, _)) = self
            .objects
            .get(&(DATA_VOLUME, ns.to_owned(), claim.clone()))
        {
            let phase = dv["status"]["phase"].as_str().unwrap_or_default();
            if !matches!(phase, "Succeeded" | "UploadReady") {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("PVC {claim} is not ready for upload (DataVolume phase {phase})"),
                ));
            }
        }
        let in_use = self
            .objects
            .iter()
            .filter(|(k, _)| k.0 == VMI && k.1 == ns)
            .any(|(_, (vmi, _))| volume_claims(&vmi["spec"]).iter().any(|(_, c)| *c == claim));
        if in_use {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("PVC {claim} is in use by a running VM"),
            ));
        }
        let upload_key = (ns.to_owned(), claim.clone());
        if !self.uploads.contains_key(&upload_key) {
            let agent = self
                .disks
                .path(&pvc_disk(ns, &claim))
                .and_then(|path| Agent::start(path, true))
                .map_err(|e| {
                    refuse(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "ServiceUnavailable",
                        &format!("upload server: {e}"),
                    )
                })?;
            self.uploads.insert(upload_key.clone(), agent);
        }
        let token = hex::encode(rand::random::<[u8; 24]>());
        self.upload_tokens.insert(
            token.clone(),
            (upload_key, SystemTime::now() + self.upload_token_ttl),
        );
        Ok(json!({
            "apiVersion": "upload.cdi.kubevirt.io/v1beta1", "kind": "UploadTokenRequest",
            "metadata": {"name": body["metadata"]["name"], "namespace": ns,
                         "creationTimestamp": timestamp(SystemTime::now())},
            "spec": {"pvcName": claim},
            "status": {"token": token},
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_bytes() {
        assert_eq!(parse_quantity("1Gi"), Some(1 << 30));
        assert_eq!(parse_quantity("64Mi"), Some(64 << 20));
        assert_eq!(parse_quantity("1G"), Some(1_000_000_000));
        assert_eq!(parse_quantity("67108864"), Some(67_108_864));
        assert_eq!(parse_quantity("1.5Gi"), Some(3 << 29));
        assert_eq!(parse_quantity("2x"), None);
        assert_eq!(parse_quantity(""), None);
    }

    #[test]
    fn durations_are_go_durations() {
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("5x"), None);
    }
}

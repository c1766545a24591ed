//! The engine's state: VMs, disks, snapshots, jobs, backups with their
//! checkpoints, image transfers, tags, and the fixed cluster, storage
//! domain, networks and vNIC profiles; each rendered as the engine's XML.
//! Asynchronous statuses are [`Stages`]: what an object shows depends on
//! how long ago its operation started, so nothing needs a background task.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rebound_plugin_sdk::xml::Element;

/// The API's root path.
pub const API: &str = "/ovirt-engine/api";

/// A status that moves through stages as time passes.
#[derive(Debug, Clone)]
pub struct Stages {
    started: Instant,
    stages: Vec<(Duration, &'static str)>,
}

impl Stages {
    pub fn now(status: &'static str) -> Self {
        Self {
            started: Instant::now(),
            stages: vec![(Duration::ZERO, status)],
        }
    }

    /// `first` now, then each `(after, status)` counted from now.
    pub fn progress(first: &'static str, then: &[(Duration, &'static str)]) -> Self {
        let mut stages = vec![(Duration::ZERO, first)];
        stages.extend_from_slice(then);
        Self {
            started: Instant::now(),
            stages,
        }
    }

    pub fn current(&self) -> &'static str {
        let elapsed = self.started.elapsed();
        self.stages
            .iter()
            .rev()
            .find(|(after, _)| *after <= elapsed)
            .map_or("", |(_, s)| *s)
    }
}

#[derive(Debug, Clone)]
pub struct Vm {
    pub id: String,
    pub name: String,
    pub description: String,
    pub memory: u64,
    pub sockets: u32,
    pub bios: String,
    pub status: Stages,
    /// `(disk id, bootable)`, in attachment order.
    pub disks: Vec<(String, bool)>,
    pub nics: Vec<Nic>,
    /// Tag names assigned to the VM.
    pub tags: Vec<String>,
    pub created: String,
}

#[derive(Debug, Clone)]
pub struct Nic {
    pub id: String,
    pub name: String,
    pub profile: String,
    pub mac: String,
}

#[derive(Debug, Clone)]
pub struct Disk {
    pub id: String,
    pub alias: String,
    pub size: u64,
    pub status: Stages,
    pub description: String,
    /// `cow` (qcow2) or `raw`: only a `cow` disk can have incremental
    /// backup enabled, as the engine requires.
    pub format: String,
    /// `backup: incremental`: its writes are tracked in checkpoints.
    pub incremental: bool,
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: String,
    pub vm: String,
    pub description: String,
    pub status: Stages,
    pub date: String,
    /// Disk id → the disk snapshot (image) id holding the copy.
    pub images: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub description: String,
    pub correlation_id: String,
    pub status: Stages,
    pub start: String,
}

#[derive(Debug, Clone)]
pub struct Backup {
    pub id: String,
    pub vm: String,
    pub description: Option<String>,
    pub disks: Vec<String>,
    pub from_checkpoint: Option<String>,
    pub to_checkpoint: String,
    /// Of an incremental backup: per disk, the byte ranges written since
    /// `from_checkpoint`, as its bitmaps held them when the backup began.
    pub dirty: BTreeMap<String, Vec<(u64, u64)>>,
    pub phase: Stages,
    pub created: String,
}

#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub id: String,
    pub vm: String,
    pub parent: Option<String>,
    pub created: String,
    /// The dirty bitmap of each disk of the checkpoint: the indexes of the
    /// [`DIRTY_CHUNK`] chunks written since it was taken (every write to
    /// the disk, by its guest or an upload, marks them).
    pub written: BTreeMap<String, BTreeSet<u64>>,
}

/// The granularity of dirty bitmaps (qemu's default for oVirt's is 64 KiB).
pub const DIRTY_CHUNK: u64 = 64 << 10;

impl Checkpoint {
    /// The written chunks of `disk` as sorted, merged byte ranges.
    pub fn dirty_ranges(&self, disk: &str) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for &chunk in self.written.get(disk).into_iter().flatten() {
            let start = chunk * DIRTY_CHUNK;
            match out.last_mut() {
                Some((s, l)) if *s + *l == start => *l += DIRTY_CHUNK,
                _ => out.push((start, DIRTY_CHUNK)),
            }
        }
        out
    }
}

impl Engine {
    /// Mark bytes `offset..offset + len` of `disk` written in the bitmap of
    /// every checkpoint that tracks it.
    pub fn mark_written(&mut self, disk: &str, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let chunks = offset / DIRTY_CHUNK..=(offset + len - 1) / DIRTY_CHUNK;
        for c in self.checkpoints.values_mut() {
            if let Some(bitmap) = c.written.get_mut(disk) {
                bitmap.extend(chunks.clone());
            }
        }
    }
}

/// What an image transfer reads or writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The disk's current image.
    Disk,
    /// A disk snapshot's image.
    Snapshot(String),
    /// A backup's point-in-time image of the disk.
    Backup(String),
}

#[derive(Debug, Clone)]
pub struct Transfer {
    pub id: String,
    pub disk: String,
    pub source: Source,
    pub upload: bool,
    pub ticket: String,
    pub phase: Stages,
    /// The image file the ticket serves.
    pub image: String,
    pub transferred: u64,
}

/// A network and its vNIC profile (one per network, named alike).
#[derive(Debug, Clone)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub profile: String,
}

#[derive(Default)]
pub struct Engine {
    pub vms: BTreeMap<String, Vm>,
    pub disks: BTreeMap<String, Disk>,
    pub snapshots: BTreeMap<String, Snapshot>,
    /// Disk snapshot (image) id → image file.
    pub images: HashMap<String, String>,
    pub jobs: BTreeMap<String, Job>,
    pub backups: BTreeMap<String, Backup>,
    pub checkpoints: BTreeMap<String, Checkpoint>,
    pub transfers: BTreeMap<String, Transfer>,
    pub networks: Vec<Network>,
    pub tokens: HashMap<String, Instant>,
    pub effects: HashMap<String, usize>,
    pub faults: crate::faults::Faults,
    pub cluster: String,
    pub storage_domain: String,
}

pub fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub fn now_iso() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3f+00:00")
        .to_string()
}

/// An element with `id` and `href` attributes, as the engine links them.
pub fn linked(name: &str, href: &str, id: &str) -> Element {
    Element::new(name)
        .with_attr("href", format!("{API}/{href}"))
        .with_attr("id", id)
}

/// A list element of `items`.
pub fn list(name: &str, items: impl IntoIterator<Item = Element>) -> Element {
    items
        .into_iter()
        .fold(Element::new(name), |list, item| list.with(item))
}

/// The image file of a disk's current state.
pub fn disk_image(disk: &str) -> String {
    format!("disk-{disk}")
}

impl Engine {
    pub fn network_by_profile(&self, profile: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.profile == profile)
    }

    pub fn render_vm(&self, vm: &Vm) -> Element {
        let href = format!("vms/{}", vm.id);
        let mut e = linked("vm", &href, &vm.id)
            .with_text("name", &vm.name)
            .with_text("description", &vm.description)
            .with_text("status", vm.status.current())
            .with_text("memory", vm.memory)
            .with(
                Element::new("cpu").with(
                    Element::new("topology")
                        .with_text("sockets", vm.sockets)
                        .with_text("cores", 1)
                        .with_text("threads", 1),
                ),
            )
            .with(Element::new("bios").with_text("type", &vm.bios))
            .with_text("creation_time", &vm.created)
            .with_text("type", "server")
            .with(linked(
                "cluster",
                &format!("clusters/{}", self.cluster),
                &self.cluster,
            ))
            .with(linked(
                "template",
                "templates/00000000-0000-0000-0000-000000000000",
                "00000000-0000-0000-0000-000000000000",
            ));
        for rel in [
            "diskattachments",
            "nics",
            "snapshots",
            "tags",
            "backups",
            "checkpoints",
        ] {
            e = e.with(
                Element::new("link")
                    .with_attr("href", format!("{API}/{href}/{rel}"))
                    .with_attr("rel", rel),
            );
        }
        e
    }

    pub fn render_attachment(&self, vm: &str, disk: &str, bootable: bool) -> Element {
        linked(
            "disk_attachment",
            &format!("vms/{vm}/diskattachments/{disk}"),
            disk,
        )
        .with_text("active", true)
        .with_text("bootable", bootable)
        .with_text("interface", "virtio_scsi")
        .with_text("pass_discard", false)
        .with_text("read_only", false)
        .with(linked("disk", &format!("disks/{disk}"), disk))
        .with(linked("vm", &format!("vms/{vm}"), vm))
    }

    pub fn render_disk(&self, disk: &Disk, actual: u64) -> Element {
        linked("disk", &format!("disks/{}", disk.id), &disk.id)
            .with_text("name", &disk.alias)
            .with_text("alias", &disk.alias)
            .with_text("description", &disk.description)
            .with_text("provisioned_size", disk.size)
            .with_text("actual_size", actual)
            .with_text("total_size", actual)
            .with_text("status", disk.status.current())
            .with_text("format", &disk.format)
            .with_text("sparse", true)
            .with_text("content_type", "data")
            .with_text("storage_type", "image")
            .with_text(
                "backup",
                if disk.incremental {
                    "incremental"
                } else {
                    "none"
                },
            )
            .with(list(
                "storage_domains",
                [linked(
                    "storage_domain",
                    &format!("storagedomains/{}", self.storage_domain),
                    &self.storage_domain,
                )],
            ))
    }

    pub fn render_nic(&self, vm: &str, nic: &Nic) -> Element {
        linked("nic", &format!("vms/{vm}/nics/{}", nic.id), &nic.id)
            .with_text("name", &nic.name)
            .with_text("interface", "virtio")
            .with_text("linked", true)
            .with_text("plugged", true)
            .with(Element::new("mac").with_text("address", &nic.mac))
            .with(linked(
                "vnic_profile",
                &format!("vnicprofiles/{}", nic.profile),
                &nic.profile,
            ))
            .with(linked("vm", &format!("vms/{vm}"), vm))
    }

    pub fn render_snapshot(&self, s: &Snapshot) -> Element {
        linked(
            "snapshot",
            &format!("vms/{}/snapshots/{}", s.vm, s.id),
            &s.id,
        )
        .with_text("description", &s.description)
        .with_text("date", &s.date)
        .with_text("snapshot_status", s.status.current())
        .with_text("snapshot_type", "regular")
        .with_text("persist_memorystate", false)
        .with(linked("vm", &format!("vms/{}", s.vm), &s.vm))
    }

    /// The "Active VM" snapshot every VM lists first, as the engine does.
    pub fn render_active_snapshot(&self, vm: &Vm) -> Element {
        let id = format!("{}-active", &vm.id[..vm.id.len().min(28)]);
        linked("snapshot", &format!("vms/{}/snapshots/{id}", vm.id), &id)
            .with_text("description", "Active VM")
            .with_text("date", &vm.created)
            .with_text("snapshot_status", "ok")
            .with_text("snapshot_type", "active")
            .with_text("persist_memorystate", false)
            .with(linked("vm", &format!("vms/{}", vm.id), &vm.id))
    }

    pub fn render_job(&self, j: &Job) -> Element {
        let status = j.status.current();
        let mut e = linked("job", &format!("jobs/{}", j.id), &j.id)
            .with_text("description", &j.description)
            .with_text("status", status)
            .with_text("start_time", &j.start)
            .with_text("last_updated", now_iso())
            .with_text("external", false)
            .with_text("auto_cleared", true)
            .with_text("correlation_id", &j.correlation_id);
        if status != "started" {
            e = e.with_text("end_time", now_iso());
        }
        e
    }

    pub fn render_backup(&self, b: &Backup) -> Element {
        let phase = b.phase.current();
        let mut e = linked("backup", &format!("vms/{}/backups/{}", b.vm, b.id), &b.id)
            .with_text("phase", phase)
            .with_text("creation_date", &b.created)
            .with(linked("vm", &format!("vms/{}", b.vm), &b.vm))
            .with(list(
                "disks",
                b.disks
                    .iter()
                    .map(|d| linked("disk", &format!("disks/{d}"), d)),
            ));
        if let Some(d) = &b.description {
            e = e.with_text("description", d);
        }
        if let Some(from) = &b.from_checkpoint {
            e = e.with_text("from_checkpoint_id", from);
        }
        if phase != "initializing" {
            e = e.with_text("to_checkpoint_id", &b.to_checkpoint);
        }
        e
    }

    pub fn render_checkpoint(&self, c: &Checkpoint) -> Element {
        let mut e = linked(
            "checkpoint",
            &format!("vms/{}/checkpoints/{}", c.vm, c.id),
            &c.id,
        )
        .with_text("creation_date", &c.created)
        .with_text("state", "created")
        .with(linked("vm", &format!("vms/{}", c.vm), &c.vm));
        if let Some(parent) = &c.parent {
            e = e.with_text("parent_id", parent);
        }
        e
    }

    pub fn render_transfer(&self, t: &Transfer, base: &str) -> Element {
        let phase = t.phase.current();
        let mut e = linked("image_transfer", &format!("imagetransfers/{}", t.id), &t.id)
            .with_text("phase", phase)
            .with_text("direction", if t.upload { "upload" } else { "download" })
            .with_text("format", "raw")
            .with_text("active", phase == "transferring")
            .with_text("transferred", t.transferred)
            .with_text("inactivity_timeout", 60)
            .with_text("timeout_policy", "legacy")
            .with(linked("disk", &format!("disks/{}", t.disk), &t.disk))
            .with(Element::new("image").with_attr("id", &t.disk));
        match &t.source {
            Source::Snapshot(s) => e = e.with(Element::new("snapshot").with_attr("id", s)),
            Source::Backup(b) => e = e.with(Element::new("backup").with_attr("id", b)),
            Source::Disk => {}
        }
        if phase == "transferring" {
            let url = format!("{base}/images/{}", t.ticket);
            e = e
                .with_text("transfer_url", &url)
                .with_text("proxy_url", &url);
        }
        e
    }
}

//! The oVirt plugin (WebAssembly, in the runtime's sandbox) against the
//! lab's oVirt engine, call by call, where a round trip does not reach:
//! cleanup of a failed run's standby VMs (only those materialize made,
//! without the imported disks they ran on) and of abandoned imports (their
//! upload cancelled, their disk deleted).
//!
//! It lives with the engine's tests because it needs what they need (the
//! runtime, the lab). Build the plugins first: `cargo xtask build-plugins`,
//! then `cargo test -p rebound-engine --test ovirt_plugin_test`.

#[path = "support/ovirt.rs"]
mod ovirt;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rebound_lab::OVirtSite;
use rebound_runtime::bindings::exports::{
    CleanupRequest, CleanupScope, DiskSource, ExportRequest, ImportRequest, MaterializeRequest,
    SnapshotRequest,
};
use rebound_runtime::bindings::{
    Consistency, DiskFormat, Operation, OperationState, Outcome, ProviderError, RecoveryPoint,
    Workload,
};
use rebound_runtime::{CallContext, CallError, Export, Inventory, Plugin, Runtime, Status};

const SITE: &str = "ovirt-a";
const MIB: u64 = 1 << 20;

struct Lab {
    site: OVirtSite,
    rt: Runtime,
    plugin: Arc<Plugin>,
}

impl Lab {
    async fn start() -> Self {
        let site = ovirt::site(8 * MIB).await;
        let rt = rebound_runtime::testing::runtime();
        let plugin = rebound_runtime::testing::load(&rt, "ovirt").await;
        Self { site, rt, plugin }
    }

    fn ctx(&self) -> CallContext {
        let grant = ovirt::grant(&self.site, SITE);
        CallContext::new(vec![grant], Duration::from_secs(60))
    }

    async fn call<E: Export>(&self, request: E) -> Result<E::Output, CallError> {
        self.rt.call(&self.plugin, &self.ctx(), request).await
    }

    async fn ok<E: Export>(&self, request: E) -> E::Output {
        let name = E::NAME;
        self.call(request)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// Poll an operation to its end.
    async fn finish(&self, op: &Operation) -> Outcome {
        for _ in 0..400 {
            match self.ok(Status(op.clone())).await {
                OperationState::Running(_) => tokio::time::sleep(Duration::from_millis(25)).await,
                OperationState::Succeeded(outcome) => return outcome,
                OperationState::Failed(e) => panic!("{:?} {} failed: {e:?}", op.kind, op.id),
            }
        }
        panic!("{:?} {} never finished", op.kind, op.id);
    }

    fn cleanup(&self, key: &str, scope: CleanupScope) -> CleanupRequest {
        CleanupRequest {
            key: key.into(),
            site: SITE.into(),
            scope,
        }
    }

    /// Clean up, polled to its report: what was removed.
    async fn cleaned(&self, key: &str, scope: CleanupScope) -> Vec<String> {
        let op = self.ok(self.cleanup(key, scope)).await;
        match self.finish(&op).await {
            Outcome::Cleaned(report) => report.removed,
            other => panic!("cleanup ended {other:?}"),
        }
    }

    async fn workload(&self, name: &str) -> Workload {
        let id = self.site.vm_id(name).expect("seeded VM");
        let all = self.ok(Inventory::all(SITE)).await;
        all.into_iter().find(|w| w.id == id).expect("in inventory")
    }

    async fn snapshot(&self, key: &str, vm: &str) -> RecoveryPoint {
        let op = self
            .ok(SnapshotRequest {
                key: key.into(),
                site: SITE.into(),
                workload_id: self.site.vm_id(vm).expect("seeded VM"),
                consistency: Consistency::Crash,
                base: None,
            })
            .await;
        match self.finish(&op).await {
            Outcome::RecoveryPoint(p) => p,
            other => panic!("{other:?}"),
        }
    }

    fn import(&self, key: &str, name: &str) -> ImportRequest {
        ImportRequest {
            key: key.into(),
            site: SITE.into(),
            name: name.into(),
            size_bytes: 4 * MIB,
            format: DiskFormat::Raw,
            volume_id: None,
        }
    }

    /// Materialize `spec`'s VM (started) from `source`: its id.
    async fn materialize(&self, key: &str, spec: &Workload, source: DiskSource) -> String {
        let mut spec = spec.spec.clone();
        spec.name = format!("{}-standby", spec.name);
        let op = self
            .ok(MaterializeRequest {
                key: key.into(),
                site: SITE.into(),
                source,
                spec,
                networks: vec![],
                isolated: false,
                start: true,
            })
            .await;
        match self.finish(&op).await {
            Outcome::Materialized(m) => m.workload.id,
            other => panic!("{other:?}"),
        }
    }

    fn vms(&self) -> BTreeSet<String> {
        self.site.vm_ids().into_iter().collect()
    }

    fn disks(&self) -> BTreeSet<String> {
        self.site.disk_ids().into_iter().collect()
    }

    /// The disk ids of VM `id`, by its attachments.
    async fn vm_disk_ids(&self, id: &str) -> BTreeSet<String> {
        let all = self.ok(Inventory::all(SITE)).await;
        let vm = all.into_iter().find(|w| w.id == id).expect("VM");
        vm.spec.disks.into_iter().map(|d| d.id).collect()
    }
}

fn provider_error(e: &CallError) -> ProviderError {
    e.provider_error()
        .cloned()
        .unwrap_or_else(|| panic!("not a provider error: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_of_workloads_removes_only_what_materialize_made() {
    let lab = Lab::start().await;
    let web = lab.workload("web-1").await;
    let db_id = lab.site.vm_id("db-1").expect("seeded VM");
    let seeded_disks = lab.vm_disk_ids(&web.id).await;

    // A standby cloned from a recovery point: its disks are the clone's.
    let point = lab.snapshot("run-1/snapshot/web-1", "web-1").await;
    let cloned = lab
        .materialize(
            "run-1/materialize/web-1",
            &web,
            DiskSource::RecoveryPoint(point.id.clone()),
        )
        .await;
    let clone_disks = lab.vm_disk_ids(&cloned).await;
    assert_eq!(clone_disks.len(), 1);
    assert!(clone_disks.is_disjoint(&seeded_disks));

    // A standby on a disk the host imported (written, then released).
    let import_op = lab
        .ok(lab.import("run-1/import/web-1", "web-1-disk0"))
        .await;
    let volume = match lab.finish(&import_op).await {
        Outcome::DiskEndpoint(d) => d.volume_id.expect("an import names its volume"),
        other => panic!("{other:?}"),
    };
    lab.cleaned(
        "run-1/release",
        CleanupScope::Transfers(vec![import_op.id.clone()]),
    )
    .await;
    let on_import = lab
        .materialize(
            "run-2/materialize/web-1",
            &web,
            DiskSource::Volumes(vec![volume.clone()]),
        )
        .await;
    assert_eq!(
        lab.vm_disk_ids(&on_import).await,
        BTreeSet::from([volume.clone()])
    );

    // The import runs a workload now: discarding it is refused.
    let in_use = lab
        .call(lab.cleanup(
            "run-2/discard",
            CleanupScope::DiscardedImports(vec![import_op.id.clone()]),
        ))
        .await
        .expect_err("the disk is a workload's");
    assert!(
        matches!(provider_error(&in_use), ProviderError::Conflict(ref m) if m.contains(&volume)),
        "{in_use}"
    );
    assert!(lab.disks().contains(&volume));

    // A VM the lab seeded spoils the whole request: nothing goes.
    let (vms, disks) = (lab.vms(), lab.disks());
    let refused = lab
        .call(lab.cleanup(
            "run-2/cleanup",
            CleanupScope::Workloads(vec![cloned.clone(), on_import.clone(), db_id.clone()]),
        ))
        .await
        .expect_err("db-1 is no standby");
    match provider_error(&refused) {
        ProviderError::InvalidRequest(m) => assert!(
            m.contains(&db_id) && m.contains("not materialized by Rebound"),
            "{m}"
        ),
        other => panic!("expected invalid-request, got {other:?}"),
    }
    assert_eq!((lab.vms(), lab.disks()), (vms.clone(), disks.clone()));
    assert_eq!(
        lab.site.vm(&cloned).map(|(_, status, _)| status).as_deref(),
        Some("up"),
        "not even stopped"
    );

    // The standbys go — the clone's disks with them, the imported disk not
    // — and a repeat finds them gone, which is success.
    for attempt in ["run-2/cleanup", "run-3/cleanup"] {
        let removed = lab
            .cleaned(
                attempt,
                CleanupScope::Workloads(vec![cloned.clone(), on_import.clone()]),
            )
            .await;
        assert!(
            removed.contains(&cloned) && removed.contains(&on_import),
            "{attempt}: {removed:?}"
        );
        assert!(!removed.contains(&volume), "{attempt}: {removed:?}");
    }
    let expected_vms: BTreeSet<String> = vms
        .iter()
        .filter(|v| **v != cloned && **v != on_import)
        .cloned()
        .collect();
    assert_eq!(lab.vms(), expected_vms);
    let expected_disks: BTreeSet<String> = disks.difference(&clone_disks).cloned().collect();
    assert_eq!(
        lab.disks(),
        expected_disks,
        "the clone's disks went, the imported one and the seeded ones stayed"
    );
    assert!(lab.site.disk_path(&volume).is_some(), "its data too");
    assert_eq!(lab.vm_disk_ids(&web.id).await, seeded_disks);

    // Detached, the import is no workload's any more and can be discarded.
    let removed = lab
        .cleaned(
            "run-3/discard",
            CleanupScope::DiscardedImports(vec![import_op.id.clone()]),
        )
        .await;
    assert!(removed.contains(&volume), "{removed:?}");
    assert!(!lab.disks().contains(&volume));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discarded_imports_lose_their_transfer_and_their_disk() {
    let lab = Lab::start().await;
    let before = lab.disks();

    // An import abandoned before its endpoint was ever polled.
    let op = lab.ok(lab.import("run-1/import/db-1", "db-1-disk0")).await;
    let open = lab.site.open_transfers();
    assert_eq!(open.len(), 1, "{open:?}");
    let (_, disk) = open[0].clone();
    assert_eq!(lab.disks(), &before | &BTreeSet::from([disk.clone()]));

    for attempt in ["run-1/discard", "run-1/discard-again"] {
        let removed = lab
            .cleaned(attempt, CleanupScope::DiscardedImports(vec![op.id.clone()]))
            .await;
        assert!(removed.contains(&op.id), "{attempt}: {removed:?}");
        assert_eq!(
            lab.site.open_transfers(),
            vec![],
            "the endpoint is released"
        );
        assert_eq!(lab.disks(), before, "{attempt}: the disk it wrote is gone");
    }

    // One abandoned after its transfer was finalized: the engine keeps a
    // finished upload's disk, so the plugin must delete it.
    let op = lab.ok(lab.import("run-2/import/db-1", "db-1-disk0")).await;
    let volume = match lab.finish(&op).await {
        Outcome::DiskEndpoint(d) => d.volume_id.expect("volume"),
        other => panic!("{other:?}"),
    };
    lab.cleaned(
        "run-2/release",
        CleanupScope::Transfers(vec![op.id.clone()]),
    )
    .await;
    assert!(lab.site.open_transfers().is_empty());
    assert!(lab.disks().contains(&volume), "releasing keeps the disk");
    let removed = lab
        .cleaned(
            "run-2/discard",
            CleanupScope::DiscardedImports(vec![op.id.clone()]),
        )
        .await;
    assert!(removed.contains(&volume), "{removed:?}");
    assert_eq!(lab.disks(), before);

    // An export is no import: nothing of its disk is touched.
    let point = lab.snapshot("run-3/snapshot/db-1", "db-1").await;
    let export = lab
        .ok(ExportRequest {
            key: "run-3/export/0".into(),
            site: SITE.into(),
            recovery_point_id: point.id.clone(),
            disk_id: point.disks[0].disk_id.clone(),
            format: DiskFormat::Raw,
        })
        .await;
    let disks = lab.disks();
    let refused = lab
        .call(lab.cleanup(
            "run-3/discard",
            CleanupScope::DiscardedImports(vec![export.id.clone()]),
        ))
        .await
        .expect_err("an export is no import");
    assert!(
        matches!(provider_error(&refused), ProviderError::InvalidRequest(_)),
        "{refused}"
    );
    assert_eq!(lab.disks(), disks);
    assert_eq!(
        lab.site.open_transfers().len(),
        1,
        "the export still serves"
    );
}

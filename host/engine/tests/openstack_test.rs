//! The OpenStack plugin (WebAssembly, in the sandbox) against the lab's
//! OpenStack simulator, one site per region of one cloud (`east` is
//! RegionOne, `west` RegionTwo):
//!
//! - each export on its own: describe, health, inventory, snapshot and
//!   native replication (Cinder backups exported and imported across
//!   regions), materialize, export and import through mover appliances and
//!   the host's data mover, fence and unfence, the three redirects, cleanup
//!   (drills, retention, transfers, a failed run's standbys, discarded
//!   imports);
//!   idempotency keys; throttling, 5xx, hangs, a site down and 4xx answers
//!   injected through the simulator's faults;
//! - the engine's round trip of a plan of three servers (one with two
//!   volumes) between the regions — replication, failover, reprotect, a
//!   drill, failback — with native replication and with the data mover,
//!   every disk checked block for block after each move, and no side
//!   effect served twice. On SQLite and PostgreSQL.
//!
//! Run: `cargo xtask build-plugins && cargo test -p rebound-engine --test
//! openstack_test`.

#[path = "support/cross.rs"]
mod cross;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rebound_datamover::{CopyOptions, MemoryCheckpoint};
use rebound_domain::{PlanDocument, PlanState, Workflow};
use rebound_engine::{BoundSite, Outcome, PluginSteps, WORKLOAD_LABEL};
use rebound_lab::openstack::{Faults, Latencies};
use rebound_lab::{OpenStackOptions, OpenStackSite};
use rebound_runtime::bindings::exports::{
    CleanupRequest, CleanupScope, DiskSource, ExportRequest, FenceRequest, ImportRequest,
    MaterializeRequest, NetworkMapping, RedirectRequest, ReplicateRequest, SnapshotRequest,
};
use rebound_runtime::bindings::{
    Capabilities, Consistency, DiskEndpoint, DiskFormat, DnsRecord, HealthStatus, InventoryFilter,
    Operation, OperationState, Outcome as Done, PowerState, ProviderError, RecoveryPoint,
    RedirectTarget, WeightedBackend,
};
use rebound_runtime::{
    CallContext, CallError, Describe, Export, Fence, Health, Inventory, Plugin, Runtime, SiteGrant,
    Status, Unfence,
};
use rebound_store::Store;
use serde_json::Value;

const EAST: &str = "east";
const WEST: &str = "west";
const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

struct Cloud {
    site: OpenStackSite,
    runtime: Arc<Runtime>,
    plugin: Arc<Plugin>,
}

async fn cloud() -> Cloud {
    let ms = Duration::from_millis;
    let site = OpenStackSite::start(OpenStackOptions {
        // Real sizes: the files are sparse, and the mover appliance serves
        // a volume of exactly its Cinder size.
        gib: GIB,
        latency: Latencies {
            server_build: ms(60),
            volume: ms(40),
            snapshot: ms(40),
            backup: ms(60),
            image: ms(40),
            dns: ms(40),
            load_balancer: ms(40),
        },
        ..OpenStackOptions::default()
    })
    .await
    .expect("OpenStack simulator");
    let runtime = Arc::new(rebound_runtime::testing::runtime());
    let plugin = rebound_runtime::testing::load(&runtime, "openstack").await;
    Cloud {
        site,
        runtime,
        plugin,
    }
}

/// What an operator configures for a site: the cloud's Keystone, the
/// region, the user and project, the password and the key of the mover
/// appliances' tokens as secrets, and a grant of the (loopback) API host.
fn grant(site: &OpenStackSite, name: &str, timeout_ms: u64) -> SiteGrant {
    keyless_grant(site, name, timeout_ms).secret("mover_key", &site.options().mover_key)
}

/// [`grant`] without the secret `mover_key`.
fn keyless_grant(site: &OpenStackSite, name: &str, timeout_ms: u64) -> SiteGrant {
    let options = site.options();
    let region = if name == EAST {
        "RegionOne"
    } else {
        "RegionTwo"
    };
    SiteGrant::new(name)
        .config("auth_url", &site.auth_url())
        .config("region", region)
        .config("user", &options.user)
        .config("project", &options.project)
        .config("timeout_ms", &timeout_ms.to_string())
        .secret("password", &options.password)
        .grant(&site.endpoint())
        .expect("grant")
}

impl Cloud {
    fn ctx(&self, sites: &[&str]) -> CallContext {
        let grants = sites.iter().map(|s| grant(&self.site, s, 5_000)).collect();
        CallContext::new(grants, Duration::from_secs(60))
    }

    async fn call<E: Export>(&self, sites: &[&str], request: E) -> Result<E::Output, CallError> {
        self.runtime
            .call(&self.plugin, &self.ctx(sites), request)
            .await
    }

    /// Poll an operation to its end, as the engine does.
    async fn finish(&self, op: &Operation) -> Result<Done, ProviderError> {
        let started = Instant::now();
        loop {
            let state = self
                .call(&[&op.site], Status(op.clone()))
                .await
                .unwrap_or_else(|e| panic!("status of {op:?}: {e}"));
            match state {
                OperationState::Running(_) if started.elapsed() < Duration::from_secs(30) => {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                OperationState::Running(r) => panic!("{op:?} still running: {}", r.detail),
                OperationState::Succeeded(done) => return Ok(done),
                OperationState::Failed(e) => return Err(e),
            }
        }
    }

    async fn recovery_point(&self, op: &Operation) -> RecoveryPoint {
        match self.finish(op).await {
            Ok(Done::RecoveryPoint(p)) => p,
            other => panic!("{op:?}: {other:?}"),
        }
    }

    async fn endpoint(&self, op: &Operation) -> DiskEndpoint {
        match self.finish(op).await {
            Ok(Done::DiskEndpoint(e)) => e,
            other => panic!("{op:?}: {other:?}"),
        }
    }

    fn region(name: &str) -> &'static str {
        if name == EAST {
            "RegionOne"
        } else {
            "RegionTwo"
        }
    }

    fn server(&self, site: &str, name: &str) -> Value {
        self.site
            .resources(Self::region(site), "servers")
            .into_iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("server {name} on {site}"))
    }

    /// A server's fixed address (from its Neutron port).
    fn fixed_ip(&self, site: &str, server: &str) -> String {
        self.site
            .resources(Self::region(site), "ports")
            .into_iter()
            .find(|p| p["device_id"] == server)
            .and_then(|p| p["fixed_ips"][0]["ip_address"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("no port of {server} on {site}"))
    }

    /// Mutating requests the cloud served more than once.
    fn repeated(&self) -> Vec<(String, usize)> {
        self.site
            .effects()
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .collect()
    }

    /// Whether two disk images (`volume-…`, `snapshot-…`, `backup-…`) hold
    /// the same bytes, block for block.
    fn same(&self, a: &str, b: &str) -> bool {
        let disks = self.site.disks();
        disks.size(a).expect("size") == disks.size(b).expect("size")
            && disks.changed_ranges(a, b, MIB).expect("compare").is_empty()
    }

    /// Wait until `check` holds (the simulator settles deletions later).
    async fn eventually(&self, what: &str, check: impl Fn(&Self) -> bool) {
        for _ in 0..200 {
            if check(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let servers: Vec<Value> = ["RegionOne", "RegionTwo"]
            .iter()
            .flat_map(|r| self.site.resources(r, "servers"))
            .map(|s| {
                serde_json::json!([
                    s["name"],
                    s["status"],
                    s["OS-EXT-STS:task_state"],
                    s["os-extended-volumes:volumes_attached"]
                ])
            })
            .collect();
        let volumes: Vec<Value> = ["RegionOne", "RegionTwo"]
            .iter()
            .flat_map(|r| self.site.resources(r, "volumes"))
            .map(|v| serde_json::json!([v["id"], v["name"], v["status"]]))
            .collect();
        panic!("never: {what}\nservers: {servers:?}\nvolumes: {volumes:?}");
    }
}

fn id(doc: &Value) -> String {
    doc["id"].as_str().expect("id").to_owned()
}

fn volumes(server: &Value) -> Vec<String> {
    server["os-extended-volumes:volumes_attached"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(id)
        .collect()
}

fn provider_error(e: CallError) -> ProviderError {
    e.provider_error()
        .cloned()
        .unwrap_or_else(|| panic!("not a provider error: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_health_and_inventory() {
    let cloud = cloud().await;
    let info = cloud.call(&[], Describe).await.expect("describe");
    assert_eq!(
        (info.name.as_str(), info.platform.as_str()),
        ("openstack", "openstack")
    );
    assert!(info.capabilities.contains(
        Capabilities::NATIVE_REPLICATION
            | Capabilities::FENCING
            | Capabilities::EXPORT_DISK
            | Capabilities::IMPORT_DISK
            | Capabilities::WEIGHTED_REDIRECT
    ));
    assert!(!info.capabilities.contains(Capabilities::CHANGED_BLOCKS));
    assert_eq!(info.export_formats, [DiskFormat::Raw]);

    let health = cloud
        .call(&[EAST], Health(EAST.into()))
        .await
        .expect("health");
    assert_eq!(health.status, HealthStatus::Healthy, "{}", health.detail);
    assert_eq!(health.api_version.as_deref(), Some("compute 2.96"));

    let east = cloud
        .call(&[EAST], Inventory::all(EAST))
        .await
        .expect("inventory");
    let mut names: Vec<&str> = east.iter().map(|w| w.spec.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["db-1", "web-1"]);
    let web = east.iter().find(|w| w.spec.name == "web-1").expect("web-1");
    assert_eq!(web.power, PowerState::Running);
    assert_eq!((web.spec.cpus, web.spec.memory_mib), (1, 2048));
    assert_eq!(web.spec.disks.len(), 1);
    assert_eq!(web.spec.disks[0].size_bytes, GIB);
    assert_eq!(web.spec.disks[0].boot_order, Some(0));
    assert_eq!(web.spec.disks[0].name, "web-1-root");
    assert_eq!(web.spec.nics[0].network, "private");
    assert!(
        web.spec.nics[0].ips[0].starts_with("10.0.0."),
        "{:?}",
        web.spec.nics
    );
    assert!(web.spec.nics[0].mac.is_some());

    let west = cloud
        .call(&[WEST], Inventory::all(WEST))
        .await
        .expect("inventory");
    assert!(west.is_empty());
    let labelled = cloud
        .call(
            &[EAST],
            Inventory {
                site: EAST.into(),
                filter: InventoryFilter {
                    workload_ids: vec![],
                    labels: vec![("tier".into(), "web".into())],
                },
            },
        )
        .await
        .expect("inventory");
    assert!(labelled.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_point_replicates_to_the_other_region_and_boots_there() {
    let cloud = cloud().await;
    let web = cloud.server(EAST, "web-1");
    let volume = volumes(&web)[0].clone();
    let request = SnapshotRequest {
        key: "run-1/1".into(),
        site: EAST.into(),
        workload_id: id(&web),
        consistency: Consistency::Crash,
        base: None,
    };
    let op = cloud
        .call(&[EAST], request.clone())
        .await
        .expect("snapshot");
    let again = cloud.call(&[EAST], request.clone()).await.expect("again");
    assert_eq!(op.id, again.id, "the same key, the same operation");
    let point = cloud.recovery_point(&op).await;
    assert!(point.id.starts_with("snapshots:"), "{}", point.id);
    assert_eq!(point.disks.len(), 1);
    assert_eq!(
        (point.disks[0].disk_id.as_str(), point.disks[0].size_bytes),
        (volume.as_str(), GIB)
    );
    assert_eq!(point.spec.name, "web-1");
    assert_eq!(point.workload_id, id(&web));
    assert!(point.captured_at > 1_700_000_000_000);
    let snapshot = format!("snapshot-{}", point.disks[0].copy_id);
    // The server keeps writing after its recovery point.
    cloud
        .site
        .disks()
        .write(&format!("volume-{volume}"), 0, b"written afterwards")
        .expect("write");
    let unknown = SnapshotRequest {
        workload_id: "no-such-server".into(),
        key: "run-1/9".into(),
        ..request
    };
    match provider_error(cloud.call(&[EAST], unknown).await.expect_err("unknown")) {
        ProviderError::NotFound(m) => assert!(m.contains("could not be found"), "{m}"),
        other => panic!("{other:?}"),
    }

    let replicate = ReplicateRequest {
        key: "run-1/2".into(),
        source_site: EAST.into(),
        target_site: WEST.into(),
        recovery_point_id: point.id.clone(),
        base: None,
    };
    let op = cloud
        .call(&[EAST, WEST], replicate.clone())
        .await
        .expect("replicate");
    assert_eq!(
        cloud
            .call(&[EAST, WEST], replicate)
            .await
            .expect("again")
            .id,
        op.id
    );
    let replica = cloud.recovery_point(&op).await;
    assert_eq!(replica.site, WEST);
    assert!(
        replica.id.starts_with("backups@RegionOne:"),
        "{}",
        replica.id
    );
    assert_eq!(replica.disks[0].disk_id, volume);
    assert_eq!(replica.captured_at, point.captured_at);
    let backup = replica.disks[0].copy_id.clone();
    assert!(
        cloud.same(&format!("backup-{backup}"), &snapshot),
        "the backup holds the snapshot, block for block"
    );

    let mut spec = replica.spec.clone();
    spec.labels.push((WORKLOAD_LABEL.into(), "web".into()));
    let materialize = MaterializeRequest {
        key: "run-2/1".into(),
        site: WEST.into(),
        source: DiskSource::RecoveryPoint(replica.id.clone()),
        spec,
        networks: vec![NetworkMapping {
            source_network: "private".into(),
            target_network: "private".into(),
            keep_addresses: false,
        }],
        isolated: false,
        start: true,
    };
    let op = cloud
        .call(&[WEST], materialize.clone())
        .await
        .expect("materialize");
    let Ok(Done::Materialized(done)) = cloud.finish(&op).await else {
        panic!("materialize failed");
    };
    assert_eq!(
        cloud.call(&[WEST], materialize).await.expect("again").id,
        op.id
    );
    let Ok(Done::Materialized(again)) = cloud.finish(&op).await else {
        panic!("materialize failed");
    };
    assert_eq!(again.workload.id, done.workload.id, "one server per key");
    assert_eq!(done.workload.power, PowerState::Running);
    assert!(
        done.addresses[0].starts_with("10.1.0."),
        "{:?}",
        done.addresses
    );
    assert!(
        done.workload
            .spec
            .labels
            .contains(&(WORKLOAD_LABEL.into(), "web".into()))
    );
    let recovered = cloud.server(WEST, "web-1");
    assert_eq!(id(&recovered), done.workload.id);
    assert!(
        cloud.same(&format!("volume-{}", volumes(&recovered)[0]), &snapshot),
        "the recovered disk is the recovery point, not what was written after it"
    );
    let found = cloud
        .call(
            &[WEST],
            Inventory {
                site: WEST.into(),
                filter: InventoryFilter {
                    workload_ids: vec![],
                    labels: vec![(WORKLOAD_LABEL.into(), "web".into())],
                },
            },
        )
        .await
        .expect("inventory");
    assert_eq!(found.len(), 1);

    // Retention: the replica goes from both regions' backup services, the
    // snapshot from east.
    for (site, point) in [(WEST, &replica.id), (EAST, &point.id)] {
        let op = cloud
            .call(
                &[site],
                CleanupRequest {
                    key: format!("run-3/{site}"),
                    site: site.into(),
                    scope: CleanupScope::RecoveryPoints(vec![point.clone()]),
                },
            )
            .await
            .expect("cleanup");
        let Ok(Done::Cleaned(report)) = cloud.finish(&op).await else {
            panic!("cleanup failed");
        };
        assert_eq!(report.removed, std::slice::from_ref(point));
    }
    cloud
        .eventually("backups and snapshots gone", |c| {
            ["RegionOne", "RegionTwo"]
                .iter()
                .all(|r| c.site.resources(r, "backups").is_empty())
                && c.site.resources("RegionOne", "snapshots").is_empty()
        })
        .await;
    assert!(cloud.repeated().is_empty(), "{:?}", cloud.repeated());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disks_move_through_mover_appliances_and_the_data_mover() {
    let cloud = cloud().await;
    let db = cloud.server(EAST, "db-1");
    let disk = volumes(&db)[0].clone();
    let snapshot = |key: &str| SnapshotRequest {
        key: key.into(),
        site: EAST.into(),
        workload_id: id(&db),
        consistency: Consistency::Crash,
        base: None,
    };
    let first = cloud
        .recovery_point(
            &cloud
                .call(&[EAST], snapshot("t-1/1"))
                .await
                .expect("snapshot"),
        )
        .await;
    cloud
        .site
        .disks()
        .write(&format!("volume-{disk}"), 0, b"DB-1 BOOT DISK, REWRITTEN")
        .expect("write");

    let export = |key: &str, point: &str| ExportRequest {
        key: key.into(),
        site: EAST.into(),
        recovery_point_id: point.into(),
        disk_id: disk.clone(),
        format: DiskFormat::Raw,
    };
    let import = |key: &str, base: Option<String>| ImportRequest {
        key: key.into(),
        site: WEST.into(),
        name: "db-1-disk0".into(),
        size_bytes: 2 * GIB,
        format: DiskFormat::Raw,
        volume_id: base,
    };
    let qcow = ExportRequest {
        format: DiskFormat::Qcow2,
        ..export("t-1/2", &first.id)
    };
    assert!(matches!(
        provider_error(cloud.call(&[EAST], qcow).await.expect_err("qcow2")),
        ProviderError::Unsupported(_)
    ));
    // Without the site's mover_key no appliance could be given a token:
    // refused, saying what to add, before any volume is made.
    let volume_count = cloud.site.resources("RegionOne", "volumes").len();
    let keyless = CallContext::new(
        vec![keyless_grant(&cloud.site, EAST, 5_000)],
        Duration::from_secs(60),
    );
    let refused = cloud
        .runtime
        .call(&cloud.plugin, &keyless, export("t-1/2", &first.id))
        .await
        .expect_err("no mover_key");
    match provider_error(refused) {
        ProviderError::InvalidRequest(m) => assert!(m.contains("secret 'mover_key'"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        cloud.site.resources("RegionOne", "volumes").len(),
        volume_count
    );

    let export_op = cloud
        .call(&[EAST], export("t-1/2", &first.id))
        .await
        .expect("export");
    let import_op = cloud
        .call(&[WEST], import("t-1/3", None))
        .await
        .expect("import");
    let source = cloud.endpoint(&export_op).await;
    let target = cloud.endpoint(&import_op).await;
    assert!(source.ranged && source.block_digests && source.volume_id.is_none());
    assert_eq!((source.size_bytes, target.size_bytes), (2 * GIB, 2 * GIB));
    let copy = target.volume_id.clone().expect("the imported volume");
    let appliances = |c: &Cloud| {
        ["RegionOne", "RegionTwo"]
            .iter()
            .flat_map(|r| c.site.resources(r, "servers"))
            .filter(|s| {
                s["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("rebound-mover-"))
            })
            .count()
    };
    assert_eq!(appliances(&cloud), 2, "one appliance per transfer");
    // Each appliance has its token in its user data, never in metadata
    // any member of the project reads.
    for (endpoint, region) in [(&source, "RegionOne"), (&target, "RegionTwo")] {
        use base64::Engine;
        let token = endpoint.headers[0]
            .1
            .trim_start_matches("Bearer ")
            .to_owned();
        let appliance = cloud
            .site
            .resources(region, "servers")
            .into_iter()
            .find(|s| s["metadata"]["rebound:mover_mode"].is_string())
            .expect("an appliance");
        assert!(!appliance["metadata"].to_string().contains(&token));
        let user_data = appliance["OS-EXT-SRV-ATTR:user_data"]
            .as_str()
            .expect("user data");
        assert!(
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(user_data)
                    .expect("base64")
            )
            .expect("text")
            .contains(&format!("REBOUND_MOVER_TOKEN={token}"))
        );
    }

    let endpoint = |d: &DiskEndpoint| rebound_engine::mover_endpoint(d, None);
    let report = rebound_datamover::copy(
        &endpoint(&source),
        &endpoint(&target),
        CopyOptions::default(),
        &mut MemoryCheckpoint::default(),
    )
    .await
    .expect("copy");
    assert_eq!(
        report.bytes_written,
        4 * MIB,
        "only the data block, not the holes"
    );
    let first_copy = format!("snapshot-{}", first.disks[0].copy_id);
    assert!(cloud.same(&format!("volume-{copy}"), &first_copy));

    let release = |site: &str, key: &str, op: &Operation| CleanupRequest {
        key: key.into(),
        site: site.into(),
        scope: CleanupScope::Transfers(vec![op.id.clone()]),
    };
    for (site, key, op) in [(EAST, "t-1/4", &export_op), (WEST, "t-1/5", &import_op)] {
        let cleaned = cloud
            .call(&[site], release(site, key, op))
            .await
            .expect("release");
        cloud.finish(&cleaned).await.expect("released");
    }
    cloud
        .eventually("appliances and the export volume gone", |c| {
            appliances(c) == 0
                && c.site.resources("RegionOne", "volumes").len() == 2
                && c.site
                    .resource("RegionTwo", "volumes", &copy)
                    .is_some_and(|v| v["status"] == "available")
        })
        .await;

    // A resync onto the earlier copy: written into a clone of it, only the
    // changed block moves, and the earlier copy stays as it was.
    let second = cloud
        .recovery_point(
            &cloud
                .call(&[EAST], snapshot("t-2/1"))
                .await
                .expect("snapshot"),
        )
        .await;
    let export_op = cloud
        .call(&[EAST], export("t-2/2", &second.id))
        .await
        .expect("export");
    let import_op = cloud
        .call(&[WEST], import("t-2/3", Some(copy.clone())))
        .await
        .expect("import");
    let (source, target) = (
        cloud.endpoint(&export_op).await,
        cloud.endpoint(&import_op).await,
    );
    let resynced = target.volume_id.clone().expect("volume");
    assert_ne!(resynced, copy);
    let report = rebound_datamover::copy(
        &endpoint(&source),
        &endpoint(&target),
        CopyOptions::default(),
        &mut MemoryCheckpoint::default(),
    )
    .await
    .expect("copy");
    assert_eq!(report.bytes_written, 4 * MIB, "{report:?}");
    assert!(cloud.same(
        &format!("volume-{resynced}"),
        &format!("snapshot-{}", second.disks[0].copy_id)
    ));
    assert!(
        cloud.same(&format!("volume-{copy}"), &first_copy),
        "the base copy is intact"
    );
    for (site, key, op) in [(EAST, "t-2/4", &export_op), (WEST, "t-2/5", &import_op)] {
        let cleaned = cloud
            .call(&[site], release(site, key, op))
            .await
            .expect("release");
        cloud.finish(&cleaned).await.expect("released");
    }
    cloud
        .eventually("the second transfer's appliances gone", |c| {
            appliances(c) == 0
        })
        .await;

    // A drill boots a clone of the copy in isolation, and goes.
    let mut spec = first.spec.clone();
    spec.name = "db-1-drill".into();
    spec.labels
        .push(("rebound/drill".into(), "drill-run".into()));
    let op = cloud
        .call(
            &[WEST],
            MaterializeRequest {
                key: "d-1/1".into(),
                site: WEST.into(),
                source: DiskSource::Volumes(vec![copy.clone()]),
                spec,
                networks: vec![],
                isolated: true,
                start: true,
            },
        )
        .await
        .expect("materialize");
    let Ok(Done::Materialized(drill)) = cloud.finish(&op).await else {
        panic!("drill materialize failed");
    };
    assert!(drill.addresses.is_empty(), "isolated: no network");
    let drill_disk = volumes(&cloud.server(WEST, "db-1-drill"))[0].clone();
    assert_ne!(drill_disk, copy, "the drill writes into a clone");
    let op = cloud
        .call(
            &[WEST],
            CleanupRequest {
                key: "d-1/2".into(),
                site: WEST.into(),
                scope: CleanupScope::Drill("drill-run".into()),
            },
        )
        .await
        .expect("cleanup");
    let Ok(Done::Cleaned(report)) = cloud.finish(&op).await else {
        panic!("cleanup failed");
    };
    assert_eq!(
        report.removed,
        [drill.workload.id.clone(), drill_disk.clone()]
    );
    cloud
        .eventually("the drill and its disk gone", |c| {
            c.site.resources("RegionTwo", "servers").is_empty()
                && c.site
                    .resource("RegionTwo", "volumes", &drill_disk)
                    .is_none()
                && c.site.resource("RegionTwo", "volumes", &copy).is_some()
        })
        .await;
    assert!(cloud.repeated().is_empty(), "{:?}", cloud.repeated());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_server_is_stopped_and_locked_until_unfenced_under_its_epoch() {
    let cloud = cloud().await;
    let web = id(&cloud.server(EAST, "web-1"));
    let request = |key: &str, epoch: u64| FenceRequest {
        key: key.into(),
        site: EAST.into(),
        workload_id: web.clone(),
        epoch,
    };
    let op = cloud
        .call(&[EAST], Fence(request("f/1", 2)))
        .await
        .expect("fence");
    let Ok(Done::Fenced(report)) = cloud.finish(&op).await else {
        panic!("fence failed");
    };
    assert_eq!((report.epoch, report.write_blocked), (2, true));
    let server = cloud.server(EAST, "web-1");
    assert_eq!(
        (server["status"].as_str(), server["locked"].as_bool()),
        (Some("SHUTOFF"), Some(true))
    );
    assert!(
        server["locked_reason"]
            .as_str()
            .is_some_and(|r| r.contains("epoch 2"))
    );
    assert_eq!(server["metadata"]["rebound:fence_epoch"], "2");
    let effects = cloud.site.effects();
    cloud
        .call(&[EAST], Fence(request("f/1", 2)))
        .await
        .expect("again");
    assert_eq!(
        cloud.site.effects(),
        effects,
        "fenced already: nothing repeated"
    );

    match provider_error(
        cloud
            .call(&[EAST], Unfence(request("u/1", 1)))
            .await
            .expect_err("stale"),
    ) {
        ProviderError::Conflict(m) => assert!(m.contains("epoch 2"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(cloud.server(EAST, "web-1")["locked"], true, "still fenced");
    let op = cloud
        .call(&[EAST], Unfence(request("u/2", 2)))
        .await
        .expect("unfence");
    let Ok(Done::Fenced(report)) = cloud.finish(&op).await else {
        panic!("unfence failed");
    };
    assert!(!report.write_blocked);
    let server = cloud.server(EAST, "web-1");
    assert_eq!(
        (server["status"].as_str(), server["locked"].as_bool()),
        (Some("ACTIVE"), Some(false))
    );
    assert!(cloud.repeated().is_empty(), "{:?}", cloud.repeated());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_moves_by_dns_pool_weights_and_floating_ip() {
    let cloud = cloud().await;
    let (web, db) = (cloud.server(EAST, "web-1"), cloud.server(EAST, "db-1"));
    let db_ip = cloud.fixed_ip(EAST, &id(&db));
    let redirect =
        |key: &str, target: RedirectTarget, backends: Vec<(String, u8)>| RedirectRequest {
            key: key.into(),
            site: EAST.into(),
            target,
            backends: backends
                .into_iter()
                .map(|(backend, weight)| WeightedBackend { backend, weight })
                .collect(),
        };
    let done = |d: Result<Done, ProviderError>| match d {
        Ok(Done::Redirected(r)) => r,
        other => panic!("{other:?}"),
    };

    let dns = RedirectTarget::DnsRecord(DnsRecord {
        zone: "example.org.".into(),
        name: "www.example.org.".into(),
        record_type: "A".into(),
        ttl_secs: 60,
    });
    let op = cloud
        .call(&[EAST], redirect("r/1", dns, vec![(id(&db), 100)]))
        .await
        .expect("dns");
    let report = done(cloud.finish(&op).await);
    assert_eq!(report.backends[0].backend, id(&db));
    let www = cloud
        .site
        .resources("RegionOne", "recordsets")
        .into_iter()
        .find(|s| s["name"] == "www.example.org.")
        .expect("www");
    assert_eq!(
        (www["records"].clone(), www["status"].as_str()),
        (serde_json::json!([db_ip]), Some("ACTIVE"))
    );

    let pool = RedirectTarget::LoadBalancerPool("web-lb-pool".into());
    let op = cloud
        .call(
            &[EAST],
            redirect(
                "r/2",
                pool,
                vec![("web-1-standby".into(), 90), (id(&web), 10)],
            ),
        )
        .await
        .expect("pool");
    let report = done(cloud.finish(&op).await);
    let weights: HashMap<String, u8> = report
        .backends
        .iter()
        .map(|b| (b.backend.clone(), b.weight))
        .collect();
    assert_eq!(
        weights,
        HashMap::from([("web-1-standby".into(), 90), (id(&web), 10)])
    );

    let fip = cloud
        .site
        .resources("RegionOne", "floatingips")
        .into_iter()
        .find(|f| f["port_id"].is_string())
        .expect("web-1's floating IP");
    let address = fip["floating_ip_address"]
        .as_str()
        .expect("address")
        .to_owned();
    let op = cloud
        .call(
            &[EAST],
            redirect(
                "r/3",
                RedirectTarget::FloatingIp(address.clone()),
                vec![(id(&db), 100), (id(&web), 0)],
            ),
        )
        .await
        .expect("floating ip");
    done(cloud.finish(&op).await);
    let db_port = cloud
        .site
        .resources("RegionOne", "ports")
        .into_iter()
        .find(|p| p["device_id"] == id(&db).as_str())
        .expect("db port");
    let moved = cloud
        .site
        .resource("RegionOne", "floatingips", &id(&fip))
        .expect("fip");
    assert_eq!(moved["port_id"], db_port["id"]);

    let route = redirect("r/4", RedirectTarget::Route("shop/www".into()), vec![]);
    assert!(matches!(
        provider_error(cloud.call(&[EAST], route).await.expect_err("route")),
        ProviderError::Unsupported(_)
    ));
    assert!(cloud.repeated().is_empty(), "{:?}", cloud.repeated());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_errors_hangs_and_outages_map_to_the_contract() {
    let cloud = cloud().await;
    let compute = |faults: Faults| Faults {
        service: Some("compute".into()),
        ..faults
    };

    // 429 with Retry-After: retried after the hint, then throttled.
    cloud.site.set_faults(compute(Faults {
        error_rate: 1.0,
        status: Some(429),
        retry_after: Some(1),
        ..Faults::default()
    }));
    let started = Instant::now();
    let err = provider_error(
        cloud
            .call(&[EAST], Inventory::all(EAST))
            .await
            .expect_err("429"),
    );
    match err {
        ProviderError::Throttled(t) => {
            assert_eq!(t.retry_after_ms, Some(1000));
            assert!(t.message.contains("rate-limited"), "{}", t.message);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "waited as told between attempts"
    );

    // 5xx: retried, then transient (the engine retries the step).
    cloud.site.set_faults(compute(Faults {
        error_rate: 1.0,
        status: Some(503),
        ..Faults::default()
    }));
    assert!(matches!(
        provider_error(
            cloud
                .call(&[EAST], Inventory::all(EAST))
                .await
                .expect_err("503")
        ),
        ProviderError::Transient(_)
    ));

    // A hung service: each request times out, and health says degraded.
    cloud.site.set_faults(compute(Faults {
        hang: true,
        ..Faults::default()
    }));
    let impatient = CallContext::new(vec![grant(&cloud.site, EAST, 300)], Duration::from_secs(30));
    let health = cloud
        .runtime
        .call(&cloud.plugin, &impatient, Health(EAST.into()))
        .await
        .expect("health");
    assert_eq!(health.status, HealthStatus::Degraded, "{}", health.detail);

    // The whole site down: unreachable.
    cloud.site.set_faults(Faults::default());
    cloud.site.set_down(true);
    let health = cloud
        .call(&[EAST], Health(EAST.into()))
        .await
        .expect("health");
    assert_eq!(
        health.status,
        HealthStatus::Unreachable,
        "{}",
        health.detail
    );
    cloud.site.set_down(false);

    // A 4xx carries the API's own message.
    let fence = FenceRequest {
        key: "f/1".into(),
        site: EAST.into(),
        workload_id: "no-such-server".into(),
        epoch: 1,
    };
    match provider_error(cloud.call(&[EAST], Fence(fence)).await.expect_err("404")) {
        ProviderError::NotFound(m) => {
            assert!(
                m.contains("Instance no-such-server could not be found."),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_runs_standbys_go_with_their_clones_but_not_what_they_came_from() {
    let cloud = cloud().await;
    let web = cloud.server(EAST, "web-1");
    let web_volume = volumes(&web)[0].clone();
    // What standbys are materialized from: a recovery point of web-1, and
    // a volume the data mover imported (its appliance released).
    let snapshot = SnapshotRequest {
        key: "w-1/1".into(),
        site: EAST.into(),
        workload_id: id(&web),
        consistency: Consistency::Crash,
        base: None,
    };
    let point = cloud
        .recovery_point(&cloud.call(&[EAST], snapshot).await.expect("snapshot"))
        .await;
    let import = ImportRequest {
        key: "w-1/2".into(),
        site: EAST.into(),
        name: "web-1-disk0".into(),
        size_bytes: GIB,
        format: DiskFormat::Raw,
        volume_id: None,
    };
    let import = cloud.call(&[EAST], import).await.expect("import");
    let imported = cloud
        .endpoint(&import)
        .await
        .volume_id
        .expect("the imported volume");
    let release = CleanupRequest {
        key: "w-1/3".into(),
        site: EAST.into(),
        scope: CleanupScope::Transfers(vec![import.id.clone()]),
    };
    let released = cloud.call(&[EAST], release).await.expect("release");
    cloud.finish(&released).await.expect("released");
    cloud
        .eventually("the imported volume free", |c| {
            c.site
                .resource("RegionOne", "volumes", &imported)
                .is_some_and(|v| v["status"] == "available")
        })
        .await;

    let mut standbys = Vec::new();
    for (key, name, source) in [
        (
            "w-2/1",
            "web-1-standby",
            DiskSource::RecoveryPoint(point.id.clone()),
        ),
        (
            "w-2/2",
            "web-1-imported",
            DiskSource::Volumes(vec![imported.clone()]),
        ),
    ] {
        let mut spec = point.spec.clone();
        spec.name = name.into();
        let request = MaterializeRequest {
            key: key.into(),
            site: EAST.into(),
            source,
            spec,
            networks: vec![],
            isolated: false,
            start: true,
        };
        let op = cloud.call(&[EAST], request).await.expect("materialize");
        let Ok(Done::Materialized(done)) = cloud.finish(&op).await else {
            panic!("materialize {name} failed");
        };
        standbys.push(done.workload.id);
    }
    let clone = volumes(&cloud.server(EAST, "web-1-standby"))[0].clone();
    assert_ne!(clone, web_volume, "a clone of the recovery point's copy");
    assert_eq!(
        volumes(&cloud.server(EAST, "web-1-imported")),
        std::slice::from_ref(&imported),
        "the imported volume as it is"
    );
    // A standby fenced after the failed run: Rebound's lock does not keep
    // it.
    let fence = FenceRequest {
        key: "w-2/3".into(),
        site: EAST.into(),
        workload_id: standbys[1].clone(),
        epoch: 1,
    };
    let op = cloud.call(&[EAST], Fence(fence)).await.expect("fence");
    cloud.finish(&op).await.expect("fenced");

    let cleanup = |key: &str, ids: &[String]| CleanupRequest {
        key: key.into(),
        site: EAST.into(),
        scope: CleanupScope::Workloads(ids.to_vec()),
    };
    // A server Rebound did not materialize is refused, and the standby
    // named before it stays too.
    let refused = cloud
        .call(&[EAST], cleanup("w-3/1", &[standbys[0].clone(), id(&web)]))
        .await
        .expect_err("web-1 is no standby");
    match provider_error(refused) {
        ProviderError::InvalidRequest(m) => {
            assert!(
                m.contains(&id(&web)) && m.contains("not materialized by Rebound"),
                "{m}"
            );
        }
        other => panic!("{other:?}"),
    }
    for name in ["web-1", "web-1-standby", "web-1-imported"] {
        let server = cloud.server(EAST, name);
        assert!(
            server["OS-EXT-STS:task_state"].is_null() && server["status"] != "ERROR",
            "{name} untouched: {server}"
        );
    }
    assert!(
        cloud
            .site
            .resource("RegionOne", "volumes", &clone)
            .is_some_and(|v| v["status"] == "in-use")
    );

    let op = cloud
        .call(&[EAST], cleanup("w-3/2", &standbys))
        .await
        .expect("cleanup");
    let Ok(Done::Cleaned(report)) = cloud.finish(&op).await else {
        panic!("cleanup failed");
    };
    for removed in standbys.iter().chain([&clone]) {
        assert!(report.removed.contains(removed), "{removed}: {report:?}");
    }
    for kept in [&imported, &web_volume] {
        assert!(!report.removed.contains(kept), "{kept}: {report:?}");
    }
    cloud
        .eventually("the standbys and the clone gone", |c| {
            standbys
                .iter()
                .all(|s| c.site.resource("RegionOne", "servers", s).is_none())
                && c.site.resource("RegionOne", "volumes", &clone).is_none()
        })
        .await;
    // What they were materialized from stays as it was.
    assert!(
        cloud
            .site
            .resource("RegionOne", "volumes", &imported)
            .is_some_and(|v| v["status"] == "available"),
        "the imported volume stays"
    );
    assert!(
        cloud
            .site
            .resource("RegionOne", "snapshots", &point.disks[0].copy_id)
            .is_some()
    );
    assert_eq!(cloud.server(EAST, "web-1")["status"], "ACTIVE");
    assert!(
        cloud
            .site
            .resource("RegionOne", "volumes", &web_volume)
            .is_some_and(|v| v["status"] == "in-use")
    );

    // Again: what is gone counts as removed.
    let op = cloud
        .call(&[EAST], cleanup("w-3/3", &standbys))
        .await
        .expect("again");
    let Ok(Done::Cleaned(report)) = cloud.finish(&op).await else {
        panic!("cleanup failed");
    };
    assert_eq!(report.removed, standbys);
    assert!(cloud.repeated().is_empty(), "{:?}", cloud.repeated());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discarded_imports_lose_their_appliances_and_volumes_and_boot_nothing() {
    let cloud = cloud().await;
    let import = |key: &str, name: &str| ImportRequest {
        key: key.into(),
        site: WEST.into(),
        name: name.into(),
        size_bytes: GIB,
        format: DiskFormat::Raw,
        volume_id: None,
    };
    let appliances_of = |c: &Cloud, key: &str| {
        c.site
            .resources("RegionTwo", "servers")
            .into_iter()
            .filter(|s| s["metadata"]["rebound:key"] == key)
            .count()
    };
    // Imports at each stage: one served (its appliance up), one whose
    // volume is made but that was never polled (no appliance yet), one
    // whose volume is still being made.
    let served = cloud
        .call(&[WEST], import("i-1/1", "db-1-disk0"))
        .await
        .expect("import");
    let served_volume = cloud
        .endpoint(&served)
        .await
        .volume_id
        .expect("the imported volume");
    assert_eq!(appliances_of(&cloud, "i-1/1"), 1);
    let volume_of = |c: &Cloud, key: &str| {
        c.site
            .resources("RegionTwo", "volumes")
            .into_iter()
            .find(|v| v["metadata"]["rebound:key"] == key)
    };
    let ready = cloud
        .call(&[WEST], import("i-1/3", "app-1-disk0"))
        .await
        .expect("import");
    cloud
        .eventually("the never polled import's volume made", |c| {
            volume_of(c, "i-1/3").is_some_and(|v| v["status"] == "available")
        })
        .await;
    let ready_volume = id(&volume_of(&cloud, "i-1/3").expect("volume"));

    let discard = |key: &str, ids: Vec<String>| CleanupRequest {
        key: key.into(),
        site: WEST.into(),
        scope: CleanupScope::DiscardedImports(ids),
    };
    // Not an import of the plugin: refused before anything goes.
    let refused = cloud
        .call(
            &[WEST],
            discard("i-2/0", vec![served.id.clone(), "no-such-import".into()]),
        )
        .await
        .expect_err("not an import");
    match provider_error(refused) {
        ProviderError::InvalidRequest(m) => assert!(m.contains("no-such-import"), "{m}"),
        other => panic!("{other:?}"),
    }
    let appliance = cloud
        .site
        .resources("RegionTwo", "servers")
        .into_iter()
        .find(|s| s["metadata"]["rebound:key"] == "i-1/1")
        .expect("the served import's appliance");
    assert!(appliance["OS-EXT-STS:task_state"].is_null(), "{appliance}");

    // The last one's volume takes a second to make (a slow data plane).
    cloud.site.set_faults(Faults {
        data_bytes_per_sec: Some(GIB),
        ..Faults::default()
    });
    let fresh = cloud
        .call(&[WEST], import("i-1/2", "web-1-disk0"))
        .await
        .expect("import");
    cloud.site.set_faults(Faults::default());
    let fresh_volume = id(&volume_of(&cloud, "i-1/2").expect("the fresh import's volume"));

    let op = cloud
        .call(
            &[WEST],
            discard(
                "i-2/1",
                vec![fresh.id.clone(), served.id.clone(), ready.id.clone()],
            ),
        )
        .await
        .expect("discard");
    assert_eq!(
        volume_of(&cloud, "i-1/2").map(|v| v["status"].clone()),
        Some(serde_json::json!("creating")),
        "discarded while its volume is being made"
    );
    // Polled to its end, as the engine does, never booting an appliance for
    // the imports that had none.
    let started = Instant::now();
    let report = loop {
        for key in ["i-1/2", "i-1/3"] {
            assert_eq!(
                appliances_of(&cloud, key),
                0,
                "an appliance booted for discarded import {key}"
            );
        }
        let state = cloud
            .call(&[WEST], Status(op.clone()))
            .await
            .expect("status");
        match state {
            OperationState::Running(_) if started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            OperationState::Succeeded(Done::Cleaned(report)) => break report,
            other => panic!("{other:?}"),
        }
    };
    for removed in [
        &fresh_volume,
        &ready_volume,
        &served_volume,
        &id(&appliance),
    ] {
        assert!(report.removed.contains(removed), "{removed}: {report:?}");
    }
    cloud
        .eventually("the appliance and the volumes gone", |c| {
            c.site.resources("RegionTwo", "servers").is_empty()
                && c.site.resources("RegionTwo", "volumes").is_empty()
        })
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        cloud.site.resources("RegionTwo", "servers").is_empty(),
        "nothing booted afterwards"
    );

    // Again: what is gone counts as removed.
    let op = cloud
        .call(
            &[WEST],
            discard(
                "i-2/2",
                vec![fresh.id.clone(), served.id.clone(), ready.id.clone()],
            ),
        )
        .await
        .expect("again");
    let Ok(Done::Cleaned(report)) = cloud.finish(&op).await else {
        panic!("discard failed");
    };
    for removed in [&fresh_volume, &ready_volume, &served_volume] {
        assert!(report.removed.contains(removed), "{removed}: {report:?}");
    }
    assert!(cloud.repeated().is_empty(), "{:?}", cloud.repeated());
}

// ---- The engine's round trip between the two regions ----

struct Lab {
    cloud: Cloud,
    steps: Arc<PluginSteps>,
    /// Plan workload id → server name.
    names: HashMap<String, String>,
}

async fn lab(store: &Store) -> Lab {
    let cloud = cloud().await;
    // A third server with a data volume beside its root.
    cloud
        .site
        .add_server("RegionOne", "app-1", "2", &[1, 1])
        .expect("app-1");
    let sites = [EAST, WEST]
        .iter()
        .map(|s| {
            (
                (*s).to_owned(),
                BoundSite {
                    plugin: cloud.plugin.clone(),
                    grant: grant(&cloud.site, s, 5_000),
                },
            )
        })
        .collect();
    let steps = Arc::new(PluginSteps::new(
        cloud.runtime.clone(),
        store.clone(),
        sites,
    ));
    let names = ["web-1", "db-1", "app-1"]
        .iter()
        .map(|n| (id(&cloud.server(EAST, n)), (*n).to_owned()))
        .collect();
    Lab {
        cloud,
        steps,
        names,
    }
}

fn plan(lab: &Lab, mode: &str) -> PlanDocument {
    let by_name = |name: &str| {
        lab.names
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(id, _)| id.clone())
            .expect("workload")
    };
    PlanDocument::from_yaml(&format!(
        r#"
name: shop
source: east
target: west
workloads:
  - id: {db}
  - id: {app}
    depends_on: [{db}]
  - id: {web}
    depends_on: [{app}]
replication: {{ mode: {mode}, interval: 5m, retention: 2 }}
objectives:
  failover: {{ rto: 30m, rpo: 15m }}
  failback: {{ rto: 2h, rpo: 0s }}
network_mapping:
  - {{ source: private, target: private }}
redirect:
  target: {{ kind: dns_record, zone: example.org., name: www.example.org., record_type: A, ttl: 60 }}
  canary: [50, 100]
"#,
        db = by_name("db-1"),
        app = by_name("app-1"),
        web = by_name("web-1"),
    ))
    .expect("plan")
}

async fn run(store: &Store, lab: &Lab, workflow: Workflow) -> String {
    let (run, outcome) = cross::finish(store, &lab.steps, "shop", workflow).await;
    assert_eq!(outcome, Outcome::Succeeded, "{workflow}");
    run
}

/// What both regions hold that a drill could leave behind, by kind: the
/// ids of servers (mover appliances, which come and go, aside), volumes
/// (theirs aside), snapshots, backups and images.
fn holdings(cloud: &Cloud) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for region in ["RegionOne", "RegionTwo"] {
        let movers: Vec<String> = cloud
            .site
            .resources(region, "servers")
            .iter()
            .filter(|s| s["metadata"]["rebound:mover_mode"].is_string())
            .flat_map(volumes)
            .collect();
        for kind in ["servers", "volumes", "snapshots", "backups", "images"] {
            let mut ids: Vec<String> = cloud
                .site
                .resources(region, kind)
                .iter()
                .filter(|r| r["metadata"]["rebound:mover_mode"].is_null())
                .map(id)
                .filter(|i| !movers.contains(i))
                .collect();
            ids.sort();
            out.push(ids);
        }
    }
    out
}

/// The server serving plan workload `workload` on a site: labelled by
/// Rebound, running, newest epoch.
fn serving(cloud: &Cloud, site: &str, workload: &str) -> Option<Value> {
    cloud
        .site
        .resources(Cloud::region(site), "servers")
        .into_iter()
        .filter(|s| s["metadata"]["rebound:workload"] == workload && s["status"] == "ACTIVE")
        .max_by_key(|s| {
            s["metadata"]["rebound:epoch"]
                .as_str()
                .and_then(|e| e.parse::<u64>().ok())
        })
}

/// The disk image files of a recovery point's copies, in disk order.
fn copies(point: &rebound_store::RecoveryPointRecord) -> Vec<String> {
    let prefix = if point.id.starts_with("snapshots:") {
        "snapshot"
    } else if point.id.starts_with("backups@") {
        "backup"
    } else {
        "volume"
    };
    point.detail["disks"]
        .as_array()
        .expect("disks")
        .iter()
        .map(|d| format!("{prefix}-{}", d["copy_id"].as_str().expect("copy")))
        .collect()
}

async fn newest(store: &Store, site: &str, workload: &str) -> rebound_store::RecoveryPointRecord {
    store
        .recovery_points("shop")
        .await
        .expect("points")
        .into_iter()
        .find(|p| p.site == site && p.workload == workload)
        .unwrap_or_else(|| panic!("no recovery point of {workload} at {site}"))
}

/// Write into every disk of each workload's server on `site` (the
/// original servers on east until the failback), at a different place each
/// `round`, as the guests would.
fn write_everywhere(lab: &Lab, site: &str, round: u64) {
    for workload in lab.names.keys() {
        let server = match serving(&lab.cloud, site, workload) {
            Some(server) => server,
            None => lab.cloud.server(site, &lab.names[workload]),
        };
        for (i, volume) in volumes(&server).iter().enumerate() {
            let data = format!("{workload} disk {i} round {round}");
            lab.cloud
                .site
                .disks()
                .write(
                    &format!("volume-{volume}"),
                    round * 100 * MIB + 4096,
                    data.as_bytes(),
                )
                .expect("write");
        }
    }
}

async fn round_trip(store: Store, mode: &str) {
    let lab = lab(&store).await;
    let plan = plan(&lab, mode);
    lab.steps.check_feasible(&plan).await.expect("feasible");
    store.put_plan(&plan, "operator").await.expect("plan");
    let cloud = &lab.cloud;
    let at_start = holdings(cloud);
    write_everywhere(&lab, EAST, 0);

    run(&store, &lab, Workflow::Replication).await;
    for workload in lab.names.keys() {
        let source = newest(&store, EAST, workload).await;
        let replica = newest(&store, WEST, workload).await;
        let (a, b) = (copies(&source), copies(&replica));
        assert_eq!(a.len(), b.len());
        for (a, b) in a.iter().zip(&b) {
            assert!(cloud.same(a, b), "{workload}: {a} and {b} differ");
        }
    }
    let app = lab
        .names
        .iter()
        .find(|(_, n)| *n == "app-1")
        .map(|(id, _)| id.clone())
        .expect("app-1");
    assert_eq!(
        copies(&newest(&store, WEST, &app).await).len(),
        2,
        "both of app-1's disks"
    );

    // Written after the cycle: lost on an unplanned failover (the RPO).
    write_everywhere(&lab, EAST, 1);
    run(&store, &lab, Workflow::Failover).await;
    let l = store.plan("shop").await.expect("plan").lifecycle;
    assert_eq!(
        (l.state, l.primary.as_str(), l.epoch),
        (PlanState::FailedOver, WEST, 2)
    );
    let mut addresses = Vec::new();
    for (workload, name) in &lab.names {
        let recovered = serving(cloud, WEST, workload).unwrap_or_else(|| panic!("{name} on west"));
        assert_eq!(recovered["name"], name.as_str());
        let point = newest(&store, EAST, workload).await;
        for (volume, copy) in volumes(&recovered).iter().zip(copies(&point)) {
            assert!(
                cloud.same(&format!("volume-{volume}"), &copy),
                "{name}: the recovery point, block for block"
            );
        }
        let old = cloud.server(EAST, name);
        assert_eq!(
            (old["status"].as_str(), old["locked"].as_bool()),
            (Some("SHUTOFF"), Some(true)),
            "{name} fenced"
        );
        assert!(
            !cloud.same(&format!("volume-{}", volumes(&old)[0]), &copies(&point)[0]),
            "{name}'s later writes are not in the copy"
        );
        addresses.push(cloud.fixed_ip(WEST, &id(&recovered)));
    }
    let www = cloud
        .site
        .resources("RegionTwo", "recordsets")
        .into_iter()
        .find(|s| s["name"] == "www.example.org.")
        .expect("www in west");
    let mut records: Vec<String> = serde_json::from_value(www["records"].clone()).expect("records");
    records.sort();
    addresses.sort();
    assert_eq!(records, addresses, "DNS points at the recovered servers");

    // Writes on the new primary, then reverse replication.
    write_everywhere(&lab, WEST, 2);
    run(&store, &lab, Workflow::Reprotect).await;
    assert_eq!(
        store.plan("shop").await.expect("plan").lifecycle.state,
        PlanState::ReadyForFailback
    );
    for workload in lab.names.keys() {
        let (source, copy) = (
            newest(&store, WEST, workload).await,
            newest(&store, EAST, workload).await,
        );
        for (a, b) in copies(&source).iter().zip(copies(&copy)) {
            assert!(cloud.same(a, &b), "{workload}: reverse copy differs");
        }
    }

    // A round-trip drill on the standby (east) and back onto west leaves
    // both regions as it found them: no sandbox, volume, snapshot, backup
    // or image of it stays, and the store keeps no copy of it.
    // (The reprotect's mover appliances, holding its imports, go first.)
    cloud
        .eventually("the mover appliances gone", |c| {
            ["RegionOne", "RegionTwo"].iter().all(|r| {
                c.site
                    .resources(r, "servers")
                    .iter()
                    .all(|s| s["metadata"]["rebound:mover_mode"].is_null())
            })
        })
        .await;
    let before = holdings(cloud);
    cross::round_trip_drill(&store, &lab.steps, &plan, WEST).await;
    cloud
        .eventually("the drill's sandboxes and copies gone", |c| {
            holdings(c) == before
        })
        .await;
    // More writes, then the planned failback: nothing is lost.
    write_everywhere(&lab, WEST, 3);
    run(&store, &lab, Workflow::Failback).await;
    let l = store.plan("shop").await.expect("plan").lifecycle;
    assert_eq!(
        (l.state, l.primary.as_str(), l.epoch),
        (PlanState::Protected, EAST, 3)
    );
    for (workload, name) in &lab.names {
        let back = serving(cloud, EAST, workload).unwrap_or_else(|| panic!("{name} back on east"));
        let west = cloud
            .site
            .resources("RegionTwo", "servers")
            .into_iter()
            .find(|s| s["metadata"]["rebound:workload"] == workload.as_str())
            .expect("west incarnation");
        assert_eq!(
            (west["status"].as_str(), west["locked"].as_bool()),
            (Some("SHUTOFF"), Some(true)),
            "{name} fenced on west"
        );
        for (a, b) in volumes(&back).iter().zip(volumes(&west)) {
            assert!(
                cloud.same(&format!("volume-{a}"), &format!("volume-{b}")),
                "{name}: every last write, block for block"
            );
        }
    }

    // Protected again: a cycle runs and retention holds.
    run(&store, &lab, Workflow::Replication).await;
    let points = store.recovery_points("shop").await.expect("points");
    for site in [EAST, WEST] {
        for workload in lab.names.keys() {
            let kept = points
                .iter()
                .filter(|p| p.site == site && p.workload == *workload)
                .count();
            assert!(kept <= 2, "{site} {workload}: {kept} recovery points");
        }
    }

    // Unprotected: no snapshot, backup or image of the plan left in either
    // region, no server of it on west, the servers on east serving as they
    // were.
    let serving_east: Vec<Value> = lab
        .names
        .keys()
        .filter_map(|w| serving(cloud, EAST, w))
        .collect();
    run(&store, &lab, Workflow::Unprotect).await;
    // Snapshots, backups and images by region, less what the clouds held
    // before the plan (the images the servers boot from) and what Cinder
    // is deleting (it goes on its own).
    let now = holdings(cloud);
    for (i, kinds) in now.iter().enumerate() {
        let (region, name) = if i < 5 {
            ("RegionOne", "east")
        } else {
            ("RegionTwo", "west")
        };
        let kind = ["servers", "volumes", "snapshots", "backups", "images"][i % 5];
        let left: Vec<Value> = cloud
            .site
            .resources(region, kind)
            .into_iter()
            .filter(|r| kinds.contains(&id(r)) && !at_start[i].contains(&id(r)))
            .filter(|r| !r["status"].as_str().is_some_and(|s| s.starts_with("delet")))
            .collect();
        if matches!(kind, "snapshots" | "backups" | "images") || name == "west" {
            assert!(
                left.is_empty(),
                "{name}: {kind} of the plan left: {left:#?}"
            );
        }
    }
    let still: Vec<Value> = lab
        .names
        .keys()
        .filter_map(|w| serving(cloud, EAST, w))
        .collect();
    assert_eq!(
        still.iter().map(id).collect::<Vec<_>>(),
        serving_east.iter().map(id).collect::<Vec<_>>()
    );
    assert!(
        cloud.repeated().is_empty(),
        "repeated side effects: {:?}",
        cloud.repeated()
    );
}

async fn native_round_trip(store: Store) {
    round_trip(store, "native").await;
}

async fn data_mover_round_trip(store: Store) {
    round_trip(store, "data_mover").await;
}

rebound_store::on_both_backends!(native_round_trip, data_mover_round_trip);

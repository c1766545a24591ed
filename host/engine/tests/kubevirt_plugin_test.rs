//! The KubeVirt plugin (WebAssembly, in the runtime's sandbox) against the
//! lab's KubeVirt simulator, function by function: what each call does on
//! the cluster, that a repeated idempotency key repeats nothing, that the
//! data path moves real bytes, and how API faults come back.
//!
//! It lives with the engine's tests because it needs what they need (the
//! runtime, the data mover, the lab). Build the plugins first:
//! `cargo xtask build-plugins`, then
//! `cargo test -p rebound-engine --test kubevirt_plugin_test`.

use std::sync::Arc;
use std::time::Duration;

use rebound_datamover::{CopyOptions, Endpoint, MemoryCheckpoint};
use rebound_lab::kubevirt::{blank_data_volume, vm_object};
use rebound_lab::{Faults, KubeVirtOptions, KubeVirtSite};
use rebound_runtime::bindings::exports::{
    CleanupRequest, CleanupScope, DiskSource, ExportRequest, FenceRequest, ImportRequest,
    MaterializeRequest, NetworkMapping, RedirectRequest, ReplicateRequest, SnapshotRequest,
};
use rebound_runtime::bindings::{
    Capabilities, Consistency, DiskEndpoint, DiskFormat, HealthStatus, InventoryFilter, Operation,
    OperationState, Outcome, PowerState, ProviderError, RecoveryPoint, RedirectTarget,
    WeightedBackend,
};
use rebound_runtime::{
    CallContext, CallError, Describe, Export, Fence, Health, Inventory, Plugin, Runtime, SiteGrant,
    Status, Unfence,
};
use serde_json::json;

const MIB: u64 = 1 << 20;
const SITE: &str = "kv-a";

struct Lab {
    site: KubeVirtSite,
    rt: Runtime,
    plugin: Arc<Plugin>,
}

fn grant(site: &KubeVirtSite, namespace: &str, token: &str) -> SiteGrant {
    named_grant(SITE, site, namespace, token)
}

fn named_grant(name: &str, site: &KubeVirtSite, namespace: &str, token: &str) -> SiteGrant {
    let mut grant = SiteGrant::new(name)
        .config("endpoint", &site.endpoint())
        .config("namespace", namespace)
        .secret("token", token)
        .grant(&site.endpoint())
        .expect("grant");
    grant.ca_pem = Some(site.ca_pem.clone());
    grant
}

impl Lab {
    async fn start(objects: Vec<serde_json::Value>) -> Self {
        let site = KubeVirtSite::start(KubeVirtOptions {
            latency: Duration::from_millis(50),
            objects,
            ..KubeVirtOptions::default()
        })
        .await
        .expect("cluster");
        let rt = rebound_runtime::testing::runtime();
        let plugin = rebound_runtime::testing::load(&rt, "kubevirt").await;
        Self { site, rt, plugin }
    }

    fn ctx(&self) -> CallContext {
        CallContext::new(
            vec![grant(&self.site, "prod", &self.site.token)],
            Duration::from_secs(30),
        )
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
        self.finish_in(&self.ctx(), op).await
    }

    /// Poll an operation to its end with the sites of `ctx`.
    async fn finish_in(&self, ctx: &CallContext, op: &Operation) -> Outcome {
        for _ in 0..200 {
            let state = self
                .rt
                .call(&self.plugin, ctx, Status(op.clone()))
                .await
                .unwrap_or_else(|e| panic!("status: {e}"));
            match state {
                OperationState::Running(_) => tokio::time::sleep(Duration::from_millis(25)).await,
                OperationState::Succeeded(outcome) => return outcome,
                OperationState::Failed(e) => panic!("{:?} {} failed: {e:?}", op.kind, op.id),
            }
        }
        panic!("{:?} {} never finished", op.kind, op.id);
    }

    async fn snapshot(&self, key: &str, vm: &str) -> RecoveryPoint {
        let op = self
            .ok(SnapshotRequest {
                key: key.into(),
                site: SITE.into(),
                workload_id: vm.into(),
                consistency: Consistency::Crash,
                base: None,
            })
            .await;
        match self.finish(&op).await {
            Outcome::RecoveryPoint(p) => p,
            other => panic!("{other:?}"),
        }
    }

    async fn endpoint(&self, op: &Operation) -> DiskEndpoint {
        match self.finish(op).await {
            Outcome::DiskEndpoint(d) => d,
            other => panic!("{other:?}"),
        }
    }
}

/// `prod` with one running VM on an 8 MiB root volume, and a Route to it.
fn small() -> Vec<serde_json::Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}}),
        blank_data_volume("prod", "web-1-root", "8Mi"),
        vm_object(
            "prod",
            "web-1",
            json!({"app": "shop", "tier": "web"}),
            "prod-net",
        ),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-1", "namespace": "prod"},
               "spec": {"selector": {"vm.kubevirt.io/name": "web-1"},
                        "ports": [{"name": "https", "port": 443, "targetPort": 8443}]}}),
        json!({"apiVersion": "route.openshift.io/v1", "kind": "Route",
               "metadata": {"name": "www", "namespace": "prod"},
               "spec": {"host": "www.example.org", "to": {"kind": "Service", "name": "web-1", "weight": 100}}}),
    ]
}

impl Lab {
    /// The data mover's view of `d`, trusting the cluster's CA.
    fn mover(&self, d: &DiskEndpoint) -> Endpoint {
        rebound_engine::mover_endpoint(d, Some(&self.site.ca_pem))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_health_and_inventory() {
    let lab = Lab::start(rebound_lab::kubevirt::default_objects()).await;
    let info = lab.ok(Describe).await;
    assert_eq!(
        (info.name.as_str(), info.platform.as_str()),
        ("kubevirt", "kubevirt")
    );
    assert!(
        info.capabilities.contains(
            Capabilities::EXPORT_DISK | Capabilities::IMPORT_DISK | Capabilities::FENCING
        )
    );
    assert!(info.capabilities.contains(Capabilities::NATIVE_REPLICATION));
    assert!(!info.capabilities.contains(Capabilities::CHANGED_BLOCKS));

    let health = lab.ok(Health(SITE.into())).await;
    assert_eq!(health.status, HealthStatus::Healthy, "{}", health.detail);
    assert_eq!(health.api_version.as_deref(), Some("v1.31.0-rebound-lab"));
    let probe = |namespace: &str, token: &str| {
        let ctx = CallContext::new(
            vec![grant(&lab.site, namespace, token)],
            Duration::from_secs(10),
        );
        let (rt, plugin) = (&lab.rt, &lab.plugin);
        async move {
            rt.call(plugin, &ctx, Health(SITE.into()))
                .await
                .expect("health")
        }
    };
    let wrong = probe("prod", "not-the-token").await;
    assert_eq!(wrong.status, HealthStatus::Degraded);
    assert!(
        wrong.detail.contains("token was refused"),
        "{}",
        wrong.detail
    );
    let missing = probe("nowhere", &lab.site.token).await;
    assert!(
        missing
            .detail
            .contains("namespace 'nowhere' does not exist"),
        "{}",
        missing.detail
    );
    lab.site.set_down(true);
    let down = lab.ok(Health(SITE.into())).await;
    assert_eq!(down.status, HealthStatus::Unreachable, "{}", down.detail);
    lab.site.set_down(false);

    let all = lab.ok(Inventory::all(SITE)).await;
    let names: Vec<&str> = all.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(names, ["db-1", "web-1"]);
    let web = &all[1];
    assert_eq!(web.power, PowerState::Running);
    let s = &web.spec;
    assert_eq!((s.cpus, s.memory_mib), (2, 2048));
    assert_eq!(s.disks.len(), 1);
    assert_eq!(
        (
            s.disks[0].id.as_str(),
            s.disks[0].size_bytes,
            s.disks[0].boot_order
        ),
        ("web-1-root", 1 << 30, Some(0))
    );
    assert_eq!(s.nics[0].network, "prod-net");
    assert_eq!(
        s.nics[0].ips.len(),
        1,
        "addresses come from the running instance"
    );
    let db = lab
        .ok(Inventory {
            site: SITE.into(),
            filter: InventoryFilter {
                workload_ids: vec![],
                labels: vec![("tier".into(), "db".into())],
            },
        })
        .await;
    assert_eq!(db.len(), 1);
    assert_eq!(db[0].id, "db-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_exports_and_imports_move_real_data() {
    let lab = Lab::start(small()).await;
    lab.site
        .guest_write("prod", "web-1", 0, 3 * MIB, b"captured")
        .expect("write");
    let request = SnapshotRequest {
        key: "run-1/snapshot".into(),
        site: SITE.into(),
        workload_id: "web-1".into(),
        consistency: Consistency::Crash,
        base: None,
    };
    let op = lab.ok(request.clone()).await;
    assert_eq!(
        lab.ok(request).await.id,
        op.id,
        "a repeated key finds the same snapshot"
    );
    lab.site
        .guest_write("prod", "web-1", 0, 3 * MIB, b"too late")
        .expect("write");
    let Outcome::RecoveryPoint(point) = lab.finish(&op).await else {
        panic!("not a recovery point");
    };
    assert_eq!(
        (point.id.as_str(), point.workload_id.as_str()),
        (op.id.as_str(), "web-1")
    );
    assert!(
        point.captured_at > 1_700_000_000_000,
        "{}",
        point.captured_at
    );
    assert_eq!(point.disks.len(), 1);
    assert_eq!(
        (point.disks[0].disk_id.as_str(), point.disks[0].size_bytes),
        ("web-1-root", 8 * MIB)
    );
    assert_eq!(point.spec.name, "web-1");
    let missing = lab
        .call(SnapshotRequest {
            key: "run-1/nothing".into(),
            site: SITE.into(),
            workload_id: "no-such-vm".into(),
            consistency: Consistency::Crash,
            base: None,
        })
        .await
        .expect_err("no VM");
    assert!(
        matches!(missing.provider_error(), Some(ProviderError::NotFound(_))),
        "{missing}"
    );

    let export = ExportRequest {
        key: "run-1/export/0".into(),
        site: SITE.into(),
        recovery_point_id: point.id.clone(),
        disk_id: "web-1-root".into(),
        format: DiskFormat::Raw,
    };
    let qcow2 = lab
        .call(ExportRequest {
            format: DiskFormat::Qcow2,
            ..export.clone()
        })
        .await
        .expect_err("qcow2");
    assert!(
        matches!(qcow2.provider_error(), Some(ProviderError::Unsupported(_))),
        "{qcow2}"
    );
    let export_op = lab.ok(export.clone()).await;
    assert_eq!(lab.ok(export).await.id, export_op.id);
    let source = lab.endpoint(&export_op).await;
    assert_eq!(source.size_bytes, 8 * MIB);
    assert!(
        source
            .headers
            .iter()
            .any(|(k, _)| k == "x-kubevirt-export-token")
    );
    assert!(source.expires_at.is_some());

    let import = ImportRequest {
        key: "run-1/import/0".into(),
        site: SITE.into(),
        name: "web-1-disk0".into(),
        size_bytes: 8 * MIB,
        format: DiskFormat::Raw,
        volume_id: None,
    };
    let import_op = lab.ok(import.clone()).await;
    assert_eq!(lab.ok(import).await.id, import_op.id);
    let target = lab.endpoint(&import_op).await;
    let volume = target.volume_id.clone().expect("volume");

    // The export and upload servers are HTTPS with the cluster's CA: a
    // mover that does not trust it moves nothing.
    let untrusted = rebound_datamover::copy(
        &rebound_engine::mover_endpoint(&source, None),
        &lab.mover(&target),
        CopyOptions::default(),
        &mut MemoryCheckpoint::default(),
    )
    .await
    .expect_err("the cluster's certificate is not trusted without its CA");
    assert!(
        matches!(untrusted, rebound_datamover::MoveError::Http { .. }),
        "{untrusted}"
    );

    let report = rebound_datamover::copy(
        &lab.mover(&source),
        &lab.mover(&target),
        CopyOptions::default(),
        &mut MemoryCheckpoint::default(),
    )
    .await
    .expect("copy");
    assert_eq!(
        report.bytes_written,
        4 * MIB,
        "only the block holding data: {report:?}"
    );
    let copied = lab.site.read_pvc("prod", &volume).expect("read");
    assert_eq!(&copied[3 * MIB as usize..3 * MIB as usize + 8], b"captured");
    assert_eq!(copied[..15], *b"web-1-root boot");

    // A delta import starts from a clone of the last copy.
    let delta = lab
        .ok(ImportRequest {
            key: "run-2/import/0".into(),
            site: SITE.into(),
            name: "web-1-disk0".into(),
            size_bytes: 8 * MIB,
            format: DiskFormat::Raw,
            volume_id: Some(volume.clone()),
        })
        .await;
    let onto = lab.endpoint(&delta).await;
    assert_ne!(onto.volume_id, target.volume_id);
    let again = rebound_datamover::copy(
        &lab.mover(&source),
        &lab.mover(&onto),
        CopyOptions::default(),
        &mut MemoryCheckpoint::default(),
    )
    .await
    .expect("copy");
    assert_eq!(
        again.bytes_written, 0,
        "the clone already holds it: {again:?}"
    );
    let wrong_size = lab
        .call(ImportRequest {
            key: "run-3/import/0".into(),
            site: SITE.into(),
            name: "web-1-disk0".into(),
            size_bytes: 4 * MIB,
            format: DiskFormat::Raw,
            volume_id: Some(volume.clone()),
        })
        .await
        .expect_err("size");
    assert!(matches!(
        wrong_size.provider_error(),
        Some(ProviderError::InvalidRequest(_))
    ));

    // Releasing the transfers removes the export; imported volumes stay.
    lab.ok(CleanupRequest {
        key: "run-1/release".into(),
        site: SITE.into(),
        scope: CleanupScope::Transfers(vec![export_op.id.clone(), import_op.id.clone()]),
    })
    .await;
    assert!(lab.site.list("virtualmachineexports", "prod").is_empty());
    assert!(lab.site.get("datavolumes", "prod", &volume).is_some());
    // Recovery points past retention: the snapshot and a volume.
    let onto_volume = onto.volume_id.clone().expect("volume");
    lab.ok(CleanupRequest {
        key: "run-9/prune".into(),
        site: SITE.into(),
        scope: CleanupScope::RecoveryPoints(vec![point.id.clone(), onto_volume.clone()]),
    })
    .await;
    assert!(
        lab.site
            .get("virtualmachinesnapshots", "prod", &point.id)
            .is_none()
    );
    assert!(lab.site.get("datavolumes", "prod", &onto_volume).is_none());

    let repeated: Vec<_> = lab
        .site
        .effects()
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(repeated.is_empty(), "repeated side effects: {repeated:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn materialize_fence_unfence_and_drills() {
    let lab = Lab::start(small()).await;
    lab.site
        .guest_write("prod", "web-1", 0, MIB, b"web data")
        .expect("write");
    let point = lab.snapshot("run-1/snapshot", "web-1").await;
    let mut spec = point.spec.clone();
    spec.labels = vec![
        ("rebound/workload".into(), "web-1".into()),
        ("rebound/epoch".into(), "2".into()),
    ];
    let request = MaterializeRequest {
        key: "run-2/materialize/web-1".into(),
        site: SITE.into(),
        source: DiskSource::RecoveryPoint(point.id.clone()),
        spec: spec.clone(),
        networks: vec![NetworkMapping {
            source_network: "prod-net".into(),
            target_network: "dr-net".into(),
            keep_addresses: false,
        }],
        isolated: false,
        start: true,
    };
    let op = lab.ok(request.clone()).await;
    assert_eq!(
        lab.ok(request).await.id,
        op.id,
        "a repeated key finds the same VM"
    );
    let Outcome::Materialized(m) = lab.finish(&op).await else {
        panic!("not materialized");
    };
    assert_eq!(m.workload.power, PowerState::Running);
    assert_eq!(m.workload.spec.nics[0].network, "dr-net");
    assert_eq!(m.addresses.len(), 1);
    assert!(
        m.workload
            .spec
            .labels
            .contains(&("rebound/workload".into(), "web-1".into())),
        "{:?}",
        m.workload.spec.labels
    );
    let restored = lab.site.vm_pvcs("prod", &m.workload.id);
    assert_eq!(
        lab.site.read_pvc("prod", &restored[0]).expect("read"),
        lab.site.read_pvc("prod", "web-1-root").expect("read"),
        "restored from the snapshot"
    );

    // Fence: halted, epoch recorded, the guest cannot write.
    let fence = FenceRequest {
        key: "run-2/fence/web-1".into(),
        site: SITE.into(),
        workload_id: "web-1".into(),
        epoch: 2,
    };
    let op = lab.ok(Fence(fence.clone())).await;
    let Outcome::Fenced(report) = lab.finish(&op).await else {
        panic!("not fenced");
    };
    assert_eq!((report.epoch, report.write_blocked), (2, true));
    assert!(lab.site.guest_write("prod", "web-1", 0, 0, b"x").is_err());
    let vm = lab
        .site
        .get("virtualmachines", "prod", "web-1")
        .expect("vm");
    assert_eq!(vm["spec"]["runStrategy"], "Halted");
    assert_eq!(
        vm["metadata"]["annotations"]["rebound.io/fencing-epoch"],
        "2"
    );
    let stale = lab
        .call(Unfence(FenceRequest {
            epoch: 1,
            key: "old".into(),
            ..fence.clone()
        }))
        .await
        .expect_err("stale epoch");
    assert!(
        matches!(stale.provider_error(), Some(ProviderError::Conflict(_))),
        "{stale}"
    );
    let op = lab
        .ok(Unfence(FenceRequest {
            key: "run-3/unfence".into(),
            ..fence
        }))
        .await;
    let Outcome::Fenced(report) = lab.finish(&op).await else {
        panic!("not unfenced");
    };
    assert!(!report.write_blocked);
    lab.site
        .guest_write("prod", "web-1", 0, 0, b"x")
        .expect("running again");

    // A drill: isolated, labelled, and gone with its volumes after cleanup.
    spec.labels = vec![("rebound/drill".into(), "drill-run-7".into())];
    spec.name = "web-1-drill".into();
    let op = lab
        .ok(MaterializeRequest {
            key: "drill-run-7/materialize/web-1".into(),
            site: SITE.into(),
            source: DiskSource::RecoveryPoint(point.id.clone()),
            spec,
            networks: vec![],
            isolated: true,
            start: true,
        })
        .await;
    let Outcome::Materialized(drill) = lab.finish(&op).await else {
        panic!("not materialized");
    };
    assert_eq!(drill.workload.spec.nics[0].network, "rebound-isolated");
    let volumes_before = lab.site.list("datavolumes", "prod").len();
    let op = lab
        .ok(CleanupRequest {
            key: "drill-run-7/cleanup".into(),
            site: SITE.into(),
            scope: CleanupScope::Drill("drill-run-7".into()),
        })
        .await;
    let Outcome::Cleaned(cleaned) = lab.finish(&op).await else {
        panic!("not cleaned");
    };
    assert_eq!(cleaned.removed, std::slice::from_ref(&drill.workload.id));
    assert!(
        lab.site
            .get("virtualmachines", "prod", &drill.workload.id)
            .is_none()
    );
    assert_eq!(
        lab.site.list("datavolumes", "prod").len(),
        volumes_before - 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_weighs_route_backends() {
    let lab = Lab::start(small()).await;
    let redirect = |key: &str, backends: Vec<(&str, u8)>| RedirectRequest {
        key: key.into(),
        site: SITE.into(),
        target: RedirectTarget::Route("prod/www".into()),
        backends: backends
            .into_iter()
            .map(|(b, weight)| WeightedBackend {
                backend: b.into(),
                weight,
            })
            .collect(),
    };
    let weights = |outcome: Outcome| match outcome {
        Outcome::Redirected(r) => r
            .backends
            .into_iter()
            .map(|b| (b.backend, b.weight))
            .collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    let op = lab
        .ok(redirect("run-1/canary", vec![("web-1-dr", 10)]))
        .await;
    assert_eq!(
        weights(lab.finish(&op).await),
        [("web-1".into(), 100), ("web-1-dr".into(), 10)]
    );
    let service = lab
        .site
        .get("services", "prod", "web-1-dr")
        .expect("a Service per backend");
    assert_eq!(
        service["spec"]["selector"]["vm.kubevirt.io/name"],
        "web-1-dr"
    );
    assert_eq!(
        service["spec"]["ports"][0]["port"], 443,
        "ports of the Route's Service"
    );
    let op = lab
        .ok(redirect(
            "run-1/cutover",
            vec![("web-1-dr", 100), ("web-1", 0)],
        ))
        .await;
    assert_eq!(
        weights(lab.finish(&op).await),
        [("web-1".into(), 0), ("web-1-dr".into(), 100)]
    );
    let route = lab.site.get("routes", "prod", "www").expect("route");
    assert_eq!(route["spec"]["alternateBackends"][0]["weight"], 100);

    // Four live backends fill a Route; a fifth needs one drained first.
    let op = lab
        .ok(redirect(
            "run-2/more",
            vec![("b", 10), ("c", 10), ("d", 10)],
        ))
        .await;
    lab.finish(&op).await;
    let err = lab
        .call(redirect("run-2/too-many", vec![("e", 10)]))
        .await
        .expect_err("five backends");
    assert!(
        matches!(err.provider_error(), Some(ProviderError::InvalidRequest(_))),
        "{err}"
    );

    // A plain Service is switched, not weighed.
    let op = lab
        .ok(RedirectRequest {
            target: RedirectTarget::Route("prod/web-1".into()),
            ..redirect("run-3/service", vec![("web-1-dr", 100)])
        })
        .await;
    assert_eq!(weights(lab.finish(&op).await), [("web-1-dr".into(), 100)]);
    let missing = lab
        .call(RedirectRequest {
            target: RedirectTarget::Route("prod/nothing".into()),
            ..redirect("run-4", vec![])
        })
        .await
        .expect_err("missing route");
    assert!(
        matches!(missing.provider_error(), Some(ProviderError::NotFound(_))),
        "{missing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_faults_are_retried_or_reported_as_the_contract_says() {
    let lab = Lab::start(small()).await;
    // Passing 503s: retried within the call until the cluster answers.
    lab.site.set_faults(Faults {
        error_rate: 1.0,
        service: Some("kubevirt.io".into()),
        ..Faults::default()
    });
    let clear = {
        let faults = lab.site.endpoint();
        async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            faults
        }
    };
    let (listed, _) = tokio::join!(lab.call(Inventory::all(SITE)), async {
        clear.await;
        lab.site.set_faults(Faults::default());
    });
    assert_eq!(listed.expect("inventory after retries").len(), 1);

    // Throttling that persists: `throttled` with the cluster's Retry-After.
    lab.site.set_faults(Faults {
        error_rate: 1.0,
        status: Some(429),
        retry_after: Some(1),
        ..Faults::default()
    });
    let err = lab.call(Inventory::all(SITE)).await.expect_err("throttled");
    match err.provider_error() {
        Some(ProviderError::Throttled(t)) => {
            assert_eq!(t.retry_after_ms, Some(1000));
            assert!(t.message.contains("TooManyRequests"), "{}", t.message);
        }
        other => panic!("{other:?}"),
    }

    // A hung API: the call ends at its budget, the host unharmed.
    lab.site.set_faults(Faults {
        hang: true,
        ..Faults::default()
    });
    let ctx = CallContext::new(
        vec![grant(&lab.site, "prod", &lab.site.token)],
        Duration::from_secs(2),
    );
    let started = std::time::Instant::now();
    let hung = lab.rt.call(&lab.plugin, &ctx, Inventory::all(SITE)).await;
    assert!(hung.is_err(), "a hung API cannot answer");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    lab.site.set_faults(Faults::default());
    assert_eq!(
        lab.ok(Inventory::all(SITE)).await.len(),
        1,
        "the plugin works again"
    );

    // A refused request is permanent, with the API's own message.
    let err = lab
        .call(Fence(FenceRequest {
            key: "k".into(),
            site: SITE.into(),
            workload_id: "no-such-vm".into(),
            epoch: 1,
        }))
        .await
        .expect_err("no VM");
    assert!(
        matches!(err.provider_error(), Some(ProviderError::NotFound(_))),
        "{err}"
    );
}

/// The VolumeReplicationClass of the lab's mirrored storage.
fn mirror_class() -> serde_json::Value {
    json!({"apiVersion": "replication.storage.openshift.io/v1alpha1", "kind": "VolumeReplicationClass",
           "metadata": {"name": "rbd-mirror"},
           "spec": {"provisioner": "openshift-storage.rbd.csi.ceph.com",
                    "parameters": {"mirroringMode": "snapshot", "schedulingInterval": "1m"}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_mirrors_a_recovery_point_to_the_peer_cluster() {
    let mut objects = small();
    objects.push(mirror_class());
    let lab = Lab::start(objects).await;
    let peer = KubeVirtSite::start(KubeVirtOptions {
        latency: Duration::from_millis(50),
        objects: vec![
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}}),
            mirror_class(),
        ],
        ..KubeVirtOptions::default()
    })
    .await
    .expect("peer cluster");
    lab.site.pair(&peer);
    let with_class = |mut grant: SiteGrant| {
        grant
            .config
            .insert("volume_replication_class".into(), "rbd-mirror".into());
        grant
    };
    let a = with_class(grant(&lab.site, "prod", &lab.site.token));
    let b = with_class(named_grant("kv-b", &peer, "prod", &peer.token));
    let both = CallContext::new(vec![a.clone(), b.clone()], Duration::from_secs(30));
    let only_b = CallContext::new(vec![b.clone()], Duration::from_secs(30));

    lab.site
        .guest_write("prod", "web-1", 0, MIB, b"replicated data")
        .expect("write");
    let point = lab.snapshot("run-1/snapshot", "web-1").await;
    let at_snapshot = lab.site.read_pvc("prod", "web-1-root").expect("read");
    lab.site
        .guest_write("prod", "web-1", 0, 2 * MIB, b"after the snapshot")
        .expect("write");

    let request = ReplicateRequest {
        key: "run-1/replicate/web-1".into(),
        source_site: SITE.into(),
        target_site: "kv-b".into(),
        recovery_point_id: point.id.clone(),
        base: None,
    };
    let op = lab
        .rt
        .call(&lab.plugin, &both, request.clone())
        .await
        .expect("replicate");
    assert_eq!(op.site, "kv-b", "the copy is finished at the target");
    let again = lab
        .rt
        .call(&lab.plugin, &both, request)
        .await
        .expect("again");
    assert_eq!(again.id, op.id, "a repeated key repeats nothing");

    // Until the replicate is done the source holds the copy primary: a
    // promotion on the peer would split the brain and is refused.
    let mut mirrored_yet = false;
    for _ in 0..200 {
        mirrored_yet = peer
            .list("persistentvolumeclaims", "prod")
            .iter()
            .any(|pvc| !pvc["metadata"]["labels"]["rebound.io/replica"].is_null());
        if mirrored_yet {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(mirrored_yet, "the first sync reaches the peer");
    let mut spec = point.spec.clone();
    spec.labels = vec![("rebound/workload".into(), "web-1".into())];
    let materialize = |id: &str| MaterializeRequest {
        key: "run-2/materialize/web-1".into(),
        site: "kv-b".into(),
        source: DiskSource::RecoveryPoint(id.into()),
        spec: spec.clone(),
        networks: vec![],
        isolated: false,
        start: true,
    };
    let point_id = serde_json::from_str::<serde_json::Value>(&op.id).expect("handle")["point"]
        .as_str()
        .expect("point")
        .to_owned();
    let err = lab
        .rt
        .call(&lab.plugin, &only_b, materialize(&point_id))
        .await
        .expect_err("split brain");
    assert!(
        matches!(err.provider_error(), Some(ProviderError::Conflict(m)) if m.contains("split the brain")),
        "{err}"
    );

    let Outcome::RecoveryPoint(replica) = lab.finish_in(&both, &op).await else {
        panic!("not a recovery point");
    };
    assert_eq!(replica.site, "kv-b");
    assert_eq!(replica.workload_id, "web-1");
    assert_eq!(replica.captured_at, point.captured_at);
    assert_eq!(replica.spec.name, "web-1");
    assert_eq!(replica.disks.len(), 1);
    assert_eq!(replica.disks[0].disk_id, "web-1-root");
    let mirrored = replica.disks[0].copy_id.clone();
    assert_eq!(
        peer.read_pvc("prod", &mirrored).expect("mirror"),
        at_snapshot,
        "the recovery point on the peer, block for block"
    );
    // The source side is demoted once the copy is final.
    let source_vr = lab
        .site
        .get("volumereplications", "prod", &mirrored)
        .expect("source VolumeReplication");
    assert_eq!(source_vr["spec"]["replicationState"], "secondary");
    let Outcome::RecoveryPoint(again) = lab.finish_in(&both, &op).await else {
        panic!("not a recovery point");
    };
    assert_eq!(
        (again.id.as_str(), again.disks[0].copy_id.as_str()),
        (replica.id.as_str(), mirrored.as_str()),
        "status is idempotent"
    );

    // Materialize on the peer alone, the refused call again: the copy is
    // promoted now, then cloned into the VM.
    assert_eq!(replica.id, point_id);
    let op = lab
        .rt
        .call(&lab.plugin, &only_b, materialize(&replica.id))
        .await
        .expect("materialize");
    let Outcome::Materialized(m) = lab.finish_in(&only_b, &op).await else {
        panic!("not materialized");
    };
    let disk = peer
        .vm_pvcs("prod", &m.workload.id)
        .into_iter()
        .next()
        .expect("a disk");
    assert_eq!(peer.read_pvc("prod", &disk).expect("read"), at_snapshot);
    let pvc = peer
        .get("persistentvolumeclaims", "prod", &mirrored)
        .expect("the promoted copy");
    assert_eq!(
        pvc["metadata"]["annotations"]["rebound.io/promoted"],
        "true"
    );
    assert!(pvc["metadata"]["annotations"]["lab.rebound.io/mirror-image"].is_null());
    assert!(
        peer.list("volumereplications", "prod").is_empty(),
        "the promoted copy mirrors nothing back"
    );

    // Cleanup removes the replica at the target, and the point-in-time
    // copies with the snapshot at the source.
    let cleanup = |site: &str, id: &str| CleanupRequest {
        key: format!("run-3/cleanup/{site}"),
        site: site.into(),
        scope: CleanupScope::RecoveryPoints(vec![id.into()]),
    };
    lab.rt
        .call(&lab.plugin, &only_b, cleanup("kv-b", &replica.id))
        .await
        .expect("cleanup b");
    assert!(
        peer.get("persistentvolumeclaims", "prod", &mirrored)
            .is_none()
    );
    lab.ok(cleanup(SITE, &point.id)).await;
    assert!(
        lab.site
            .get("persistentvolumeclaims", "prod", &mirrored)
            .is_none()
    );
    assert!(lab.site.list("volumereplications", "prod").is_empty());
    for site in [&lab.site, &peer] {
        let repeated: Vec<_> = site.effects().into_iter().filter(|(_, n)| *n > 1).collect();
        assert!(repeated.is_empty(), "repeated side effects: {repeated:?}");
    }

    // A site without a VolumeReplicationClass says what to set.
    let plain = CallContext::new(
        vec![
            grant(&lab.site, "prod", &lab.site.token),
            named_grant("kv-b", &peer, "prod", &peer.token),
        ],
        Duration::from_secs(30),
    );
    let point = lab.snapshot("run-4/snapshot", "web-1").await;
    let err = lab
        .rt
        .call(
            &lab.plugin,
            &plain,
            ReplicateRequest {
                key: "run-4/replicate/web-1".into(),
                source_site: SITE.into(),
                target_site: "kv-b".into(),
                recovery_point_id: point.id,
                base: None,
            },
        )
        .await
        .expect_err("no class");
    assert!(
        matches!(err.provider_error(), Some(ProviderError::Unsupported(m)) if m.contains("volume_replication_class")),
        "{err}"
    );
}

impl Lab {
    /// Run a cleanup to its end: what it reports removed.
    async fn cleanup(&self, key: &str, scope: CleanupScope) -> Vec<String> {
        let op = self
            .ok(CleanupRequest {
                key: key.into(),
                site: SITE.into(),
                scope,
            })
            .await;
        match self.finish(&op).await {
            Outcome::Cleaned(report) => report.removed,
            other => panic!("{other:?}"),
        }
    }

    /// A cleanup that must be refused: its error.
    async fn refused_cleanup(&self, scope: CleanupScope) -> ProviderError {
        let err = self
            .call(CleanupRequest {
                key: "refused/cleanup".into(),
                site: SITE.into(),
                scope,
            })
            .await
            .expect_err("the cleanup is refused");
        err.provider_error()
            .cloned()
            .unwrap_or_else(|| panic!("not a provider error: {err}"))
    }

    fn has(&self, plural: &str, name: &str) -> bool {
        self.site.get(plural, "prod", name).is_some()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_removes_only_the_workloads_materialize_made() {
    let lab = Lab::start(small()).await;
    let point = lab.snapshot("run-1/snapshot", "web-1").await;
    // The data mover's copy of the disk, which the first standby VM is
    // materialized from.
    let import = lab
        .ok(ImportRequest {
            key: "run-1/import/0".into(),
            site: SITE.into(),
            name: "web-1-root".into(),
            size_bytes: 8 * MIB,
            format: DiskFormat::Raw,
            volume_id: None,
        })
        .await;
    let imported = lab.endpoint(&import).await.volume_id.expect("volume");
    let mut spec = point.spec.clone();
    spec.labels = vec![("rebound/workload".into(), "web-1".into())];
    let mut standby = Vec::new();
    for (key, source) in [
        (
            "run-2/materialize/web-1",
            DiskSource::Volumes(vec![imported.clone()]),
        ),
        (
            "run-3/materialize/web-1",
            DiskSource::RecoveryPoint(point.id.clone()),
        ),
    ] {
        let op = lab
            .ok(MaterializeRequest {
                key: key.into(),
                site: SITE.into(),
                source,
                spec: spec.clone(),
                networks: vec![],
                isolated: false,
                start: true,
            })
            .await;
        let Outcome::Materialized(m) = lab.finish(&op).await else {
            panic!("not materialized");
        };
        standby.push(m.workload.id);
    }
    let disks: Vec<String> = standby
        .iter()
        .flat_map(|vm| lab.site.vm_pvcs("prod", vm))
        .collect();
    assert_eq!(disks.len(), 2, "{disks:?}");
    assert!(
        !disks.contains(&imported),
        "the VM clones the imported volume"
    );
    // A VM carrying a standby's marks under a name of its own (its
    // manifest copied) is not one materialize made.
    let mut copy = vm_object("prod", "web-1-copy", json!({}), "prod-net");
    copy["metadata"]["annotations"] = lab
        .site
        .get("virtualmachines", "prod", &standby[0])
        .expect("standby")["metadata"]["annotations"]
        .clone();
    lab.site.create(copy).expect("copy");

    for (ids, offender) in [
        (vec![standby[0].clone(), "web-1".into()], "web-1"),
        (vec![standby[1].clone(), "web-1-copy".into()], "web-1-copy"),
        (vec!["../web-1".into()], "../web-1"),
    ] {
        match lab.refused_cleanup(CleanupScope::Workloads(ids)).await {
            ProviderError::InvalidRequest(m) => assert!(
                m.contains(&format!("'{offender}'")) && m.contains("not materialized by Rebound"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
    }
    for vm in standby
        .iter()
        .map(String::as_str)
        .chain(["web-1", "web-1-copy"])
    {
        assert!(lab.has("virtualmachines", vm), "{vm} was removed");
    }
    for disk in &disks {
        assert!(lab.has("datavolumes", disk) && lab.has("persistentvolumeclaims", disk));
    }

    let removed = lab
        .cleanup("run-4/cleanup", CleanupScope::Workloads(standby.clone()))
        .await;
    assert_eq!(removed, standby);
    for vm in &standby {
        assert!(!lab.has("virtualmachines", vm), "{vm} stays");
        assert!(!lab.has("virtualmachineinstances", vm), "{vm} runs on");
    }
    for disk in &disks {
        assert!(!lab.has("datavolumes", disk), "{disk} stays");
        assert!(!lab.has("persistentvolumeclaims", disk), "{disk} stays");
    }
    // What they were materialized from stays, as does the site's own VM.
    assert!(lab.has("datavolumes", &imported) && lab.has("persistentvolumeclaims", &imported));
    assert_eq!(
        lab.site.read_pvc("prod", &imported).expect("read").len(),
        8 * MIB as usize
    );
    assert!(lab.has("virtualmachinesnapshots", &point.id));
    for vm in ["web-1", "web-1-copy"] {
        assert!(lab.has("virtualmachines", vm));
    }
    assert!(lab.has("persistentvolumeclaims", "web-1-root"));
    lab.site
        .guest_write("prod", "web-1", 0, 0, b"x")
        .expect("web-1 still runs");

    // Gone is removed: a repeat succeeds.
    let again = lab
        .cleanup("run-5/cleanup", CleanupScope::Workloads(standby.clone()))
        .await;
    assert_eq!(again, standby);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_discards_abandoned_imports() {
    let lab = Lab::start(small()).await;
    let import = |key: &str, volume_id: Option<String>| ImportRequest {
        key: key.into(),
        site: SITE.into(),
        name: "web-1-disk0".into(),
        size_bytes: 8 * MIB,
        format: DiskFormat::Raw,
        volume_id,
    };
    // A finished import, kept: the base of a delta import.
    let kept = lab.ok(import("run-1/import/0", None)).await;
    let base = lab.endpoint(&kept).await.volume_id.expect("volume");
    let images = lab.site.disk_images();
    let open = lab.site.open_transfers();
    // Abandoned: one whose endpoint the mover had, and two never polled to
    // the end (a blank one and a delta onto the kept copy).
    let served = lab.ok(import("run-2/import/0", None)).await;
    lab.endpoint(&served).await;
    assert_eq!(lab.site.open_transfers(), open + 1);
    let fresh = lab.ok(import("run-2/import/1", None)).await;
    let delta = lab.ok(import("run-2/import/2", Some(base.clone()))).await;
    let discarded = vec![served.id.clone(), fresh.id.clone(), delta.id.clone()];
    for id in &discarded {
        assert!(lab.has("datavolumes", id) && lab.has("persistentvolumeclaims", id));
    }

    // A volume that is no import is refused, and nothing goes.
    match lab
        .refused_cleanup(CleanupScope::DiscardedImports(vec![
            fresh.id.clone(),
            "web-1-root".into(),
        ]))
        .await
    {
        ProviderError::InvalidRequest(m) => assert!(m.contains("'web-1-root'"), "{m}"),
        other => panic!("{other:?}"),
    }
    // So is one that is a VM's disk.
    let mut user = vm_object("prod", "user", json!({}), "prod-net");
    user["spec"]["running"] = json!(false);
    user["spec"]["template"]["spec"]["volumes"][0]["dataVolume"]["name"] = json!(base);
    lab.site.create(user).expect("a VM on the kept copy");
    match lab
        .refused_cleanup(CleanupScope::DiscardedImports(vec![
            fresh.id.clone(),
            base.clone(),
        ]))
        .await
    {
        ProviderError::Conflict(m) => assert!(m.contains("'user'"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(lab.has("datavolumes", &fresh.id) && lab.has("datavolumes", "web-1-root"));

    let removed = lab
        .cleanup(
            "run-2/discard",
            CleanupScope::DiscardedImports(discarded.clone()),
        )
        .await;
    assert_eq!(removed, discarded);
    // Nothing the imports would still have done happens after.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for id in &discarded {
        assert!(!lab.has("datavolumes", id), "{id} stays");
        assert!(!lab.has("persistentvolumeclaims", id), "{id} stays");
    }
    assert_eq!(lab.site.open_transfers(), open, "the endpoint is released");
    assert_eq!(lab.site.disk_images(), images, "their disks are gone");
    assert!(
        lab.has("persistentvolumeclaims", &base),
        "the delta's base stays"
    );
    let err = lab.call(Status(fresh)).await.expect_err("discarded");
    assert!(
        matches!(err.provider_error(), Some(ProviderError::NotFound(_))),
        "{err}"
    );

    // Gone is discarded: a repeat succeeds.
    let again = lab
        .cleanup(
            "run-3/discard",
            CleanupScope::DiscardedImports(discarded.clone()),
        )
        .await;
    assert_eq!(again, discarded);
}

//! The provider contract's versions side by side: the example plugin built
//! against 0.1.0 loads and runs every kind of call on a host that speaks
//! 0.2.0 (each request lowered to 0.1's records), and what only 0.2 can say
//! — the cleanup scopes it added — reaches a 0.1 plugin as `unsupported`
//! without calling it. The added scopes themselves, on the example plugin.

mod support;

use std::sync::Arc;
use std::time::Duration;

use rebound_lab::{ExampleOptions, ExampleSite};
use rebound_runtime::bindings::exports::{
    CleanupRequest, CleanupScope, DiskSource, FenceRequest, ImportRequest, MaterializeRequest,
    NetworkMapping, SnapshotRequest,
};
use rebound_runtime::bindings::{
    Consistency, DiskFormat, HealthStatus, Operation, OperationState, Outcome, ProviderError,
    RecoveryPoint,
};
use rebound_runtime::{CallContext, CallError, Describe, Fence, Health, Plugin, Runtime, Status};
use support::*;

/// The example plugin as built against the contract 0.1.0.
const CONTRACT_0_1: &str = "example-contract-0-1";

async fn finish(rt: &Runtime, plugin: &Arc<Plugin>, ctx: &CallContext, op: Operation) -> Outcome {
    for _ in 0..500 {
        match rt
            .call(plugin, ctx, Status(op.clone()))
            .await
            .expect("status")
        {
            OperationState::Running(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            OperationState::Succeeded(outcome) => return outcome,
            OperationState::Failed(e) => panic!("{op:?} failed: {e:?}"),
        }
    }
    panic!("{op:?} did not finish");
}

async fn snapshot(
    rt: &Runtime,
    plugin: &Arc<Plugin>,
    ctx: &CallContext,
    vm: &str,
) -> RecoveryPoint {
    let request = SnapshotRequest {
        key: format!("snap-{vm}"),
        site: "lab-a".into(),
        workload_id: vm.into(),
        consistency: Consistency::Crash,
        base: None,
    };
    let op = rt.call(plugin, ctx, request).await.expect("snapshot");
    match finish(rt, plugin, ctx, op).await {
        Outcome::RecoveryPoint(point) => point,
        other => panic!("snapshot ended {other:?}"),
    }
}

/// Materialize `point` on lab-a as a new workload; returns its id.
async fn materialize(
    rt: &Runtime,
    plugin: &Arc<Plugin>,
    ctx: &CallContext,
    point: &RecoveryPoint,
    key: &str,
) -> String {
    let mut spec = point.spec.clone();
    spec.name = format!("{}-standby", spec.name);
    let request = MaterializeRequest {
        key: key.into(),
        site: "lab-a".into(),
        source: DiskSource::RecoveryPoint(point.id.clone()),
        spec,
        networks: vec![NetworkMapping {
            source_network: "prod-net".into(),
            target_network: "dr".into(),
            keep_addresses: true,
        }],
        isolated: false,
        start: false,
    };
    let op = rt.call(plugin, ctx, request).await.expect("materialize");
    match finish(rt, plugin, ctx, op).await {
        Outcome::Materialized(m) => m.workload.id,
        other => panic!("materialize ended {other:?}"),
    }
}

fn cleanup(scope: CleanupScope) -> CleanupRequest {
    CleanupRequest {
        key: "cleanup-1".into(),
        site: "lab-a".into(),
        scope,
    }
}

/// The example site keeping real disk data in `dir`.
async fn site_with_disks(dir: &tempfile::TempDir) -> ExampleSite {
    ExampleSite::start(ExampleOptions {
        disk_dir: Some(dir.path().to_owned()),
        ..Default::default()
    })
    .await
    .expect("site")
}

fn vm_ids(site: &ExampleSite) -> Vec<String> {
    site.vms()
        .iter()
        .map(|vm| vm["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn a_plugin_built_against_0_1_loads_and_runs_every_kind_of_call() {
    let rt = runtime();
    let site = example_site().await;
    let plugin = load(&rt, CONTRACT_0_1).await;
    assert_eq!(plugin.contract(), semver::Version::new(0, 1, 0));
    let ctx = ctx(vec![grant(&site, "lab-a")]);

    let info = rt.call(&plugin, &ctx, Describe).await.expect("describe");
    assert_eq!(info.name, "example");
    let health = rt
        .call(&plugin, &ctx, Health("lab-a".into()))
        .await
        .expect("health: the 0.1 config and secrets imports answer");
    assert_eq!(health.status, HealthStatus::Healthy);

    // Requests of the provider interface, lowered to 0.1's records.
    let point = snapshot(&rt, &plugin, &ctx, "vm-2").await;
    assert_eq!(point.workload_id, "vm-2");
    let id = materialize(&rt, &plugin, &ctx, &point, "materialize-1").await;
    let vm = site
        .vms()
        .into_iter()
        .find(|vm| vm["id"] == id.as_str())
        .expect("the materialized VM");
    assert_eq!(
        vm["nics"][0]["network"], "dr",
        "the network mapping arrived"
    );
    let fence = FenceRequest {
        key: "fence-1".into(),
        site: "lab-a".into(),
        workload_id: id.clone(),
        epoch: 3,
    };
    let op = rt.call(&plugin, &ctx, Fence(fence)).await.expect("fence");
    assert!(matches!(
        finish(&rt, &plugin, &ctx, op).await,
        Outcome::Fenced(_)
    ));
    let cleanup_points = cleanup(CleanupScope::RecoveryPoints(vec![point.id.clone()]));
    let op = rt
        .call(&plugin, &ctx, cleanup_points)
        .await
        .expect("a 0.1 scope");
    assert!(matches!(
        finish(&rt, &plugin, &ctx, op).await,
        Outcome::Cleaned(_)
    ));
}

#[tokio::test]
async fn the_cleanup_scopes_added_in_0_2_reach_a_0_1_plugin_as_unsupported_and_change_nothing() {
    let rt = runtime();
    let site = example_site().await;
    let plugin = load(&rt, CONTRACT_0_1).await;
    let ctx = ctx(vec![grant(&site, "lab-a")]);
    let point = snapshot(&rt, &plugin, &ctx, "vm-1").await;
    let id = materialize(&rt, &plugin, &ctx, &point, "materialize-1").await;
    let before = vm_ids(&site);

    for scope in [
        CleanupScope::Workloads(vec![id.clone()]),
        CleanupScope::DiscardedImports(vec!["imp-1".into()]),
    ] {
        match rt.call(&plugin, &ctx, cleanup(scope)).await {
            Err(CallError::Provider {
                error: ProviderError::Unsupported(message),
                ..
            }) => assert!(
                message.contains("0.2.0") && message.contains("rebuild"),
                "{message}"
            ),
            other => panic!("expected unsupported, got {other:?}"),
        }
    }
    assert_eq!(vm_ids(&site), before, "nothing was removed");
}

#[tokio::test]
async fn the_example_plugin_removes_only_workloads_it_materialized() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = site_with_disks(&dir).await;
    let rt = runtime();
    let plugin = load(&rt, "example").await;
    assert_eq!(plugin.contract(), semver::Version::new(0, 2, 0));
    let ctx = ctx(vec![grant(&site, "lab-a")]);
    let point = snapshot(&rt, &plugin, &ctx, "vm-3").await;
    let standby = materialize(&rt, &plugin, &ctx, &point, "materialize-1").await;
    let before = vm_ids(&site);
    assert!(before.contains(&standby) && before.contains(&"vm-1".to_owned()));

    // One the lab seeded (not materialized by Rebound) spoils the request.
    match rt
        .call(
            &plugin,
            &ctx,
            cleanup(CleanupScope::Workloads(vec![
                standby.clone(),
                "vm-1".into(),
            ])),
        )
        .await
    {
        Err(CallError::Provider {
            error: ProviderError::InvalidRequest(message),
            ..
        }) => assert!(
            message.contains("vm-1") && message.contains("not materialized"),
            "{message}"
        ),
        other => panic!("expected invalid-request, got {other:?}"),
    }
    assert_eq!(vm_ids(&site), before, "nothing was removed");

    let images = site.disk_images();
    for attempt in 0..2 {
        let op = rt
            .call(
                &plugin,
                &ctx,
                cleanup(CleanupScope::Workloads(vec![standby.clone()])),
            )
            .await
            .unwrap_or_else(|e| panic!("cleanup (attempt {attempt}): {e}"));
        assert!(matches!(
            finish(&rt, &plugin, &ctx, op).await,
            Outcome::Cleaned(_)
        ));
    }
    let after = vm_ids(&site);
    assert!(!after.contains(&standby), "{after:?}");
    assert_eq!(after.len(), before.len() - 1, "only the standby went");
    assert_eq!(
        site.disk_images(),
        images - point.disks.len(),
        "the standby's own disks (copies of the point) went with it; the point's stayed"
    );
}

#[tokio::test]
async fn a_discarded_import_loses_its_endpoint_and_its_volume() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = site_with_disks(&dir).await;
    let rt = runtime();
    let plugin = load(&rt, "example").await;
    let ctx = ctx(vec![grant(&site, "lab-a")]);
    let images = site.disk_images();
    let import = ImportRequest {
        key: "import-1".into(),
        site: "lab-a".into(),
        name: "db-1-disk".into(),
        size_bytes: 4 << 20,
        format: DiskFormat::Raw,
        volume_id: None,
    };
    let op = rt.call(&plugin, &ctx, import).await.expect("import");
    assert_eq!((site.disk_images(), site.open_transfers()), (images + 1, 1));

    let discard = cleanup(CleanupScope::DiscardedImports(vec![op.id.clone()]));
    let cleaned = rt.call(&plugin, &ctx, discard).await.expect("discard");
    match finish(&rt, &plugin, &ctx, cleaned).await {
        Outcome::Cleaned(report) => assert!(report.removed.contains(&op.id), "{report:?}"),
        other => panic!("cleanup ended {other:?}"),
    }
    assert_eq!(
        (site.disk_images(), site.open_transfers()),
        (images, 0),
        "the volume and the endpoint are gone"
    );
}

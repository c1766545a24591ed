//! The AWS plugin's signing and error mapping against the lab's AWS site:
//! its SigV4 signatures pass moto's own check (moto started with
//! `INITIAL_NO_AUTH_ACTION_COUNT`, the plugin pointed at moto directly, not
//! at the lab's front), a wrong secret is refused as `unauthorized` with a
//! message saying what to check, and the front's throttling (AWS's XML
//! `RequestLimitExceeded` with `Retry-After`) comes back as `throttled`.
//! Beside those: redirect through an ELBv2 listener, and cleanup — pruning
//! imported points, the 0.2 `workloads` scope (only the standbys the plugin
//! materialized, never what they were made from) and `discarded-imports`
//! (no appliance launched for an import that had none).
//!
//! Needs moto (`lab/fidelity/aws-requirements.txt` in `REBOUND_PYTHON`'s
//! environment); skipped without it unless `REBOUND_REQUIRE_PYTHON=1`.
//! `cargo xtask build-plugins`, then
//! `cargo test -p rebound-engine --test aws_plugin_test`.

#[path = "support/aws.rs"]
mod aws;

use std::sync::Arc;
use std::time::Duration;

use aws::texts;
use rebound_lab::{AwsOptions, AwsSite, Faults};
use rebound_runtime::bindings::ProviderError;
use rebound_runtime::{CallContext, Inventory, Plugin, Runtime};

fn context(endpoint: &str, region: &str, key: &str, secret: &str) -> CallContext {
    let grant = aws::grant_with("aws", endpoint, region, key, secret);
    CallContext::new(vec![grant], Duration::from_secs(30))
}

/// A site in front of moto (`seeded`: with the lab's instances), the AWS
/// plugin loaded, and a call context granting its first region; `None`
/// when moto is not installed.
struct Setup {
    site: AwsSite,
    runtime: Runtime,
    plugin: Arc<Plugin>,
    region: String,
    ctx: CallContext,
}

async fn setup(seeded: bool) -> Option<Setup> {
    let site = AwsSite::start_or_skip(AwsOptions {
        gib: 1 << 20,
        seed: seeded,
        ..AwsOptions::default()
    })
    .await?;
    let runtime = rebound_runtime::testing::runtime();
    let plugin = rebound_runtime::testing::load(&runtime, "aws").await;
    let options = site.options();
    let region = site.regions()[0].clone();
    let ctx = context(
        &site.endpoint(),
        &region,
        &options.access_key_id,
        &options.secret_access_key,
    );
    Some(Setup {
        site,
        runtime,
        plugin,
        region,
        ctx,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_accepts_the_plugins_signatures_and_refuses_a_wrong_secret() {
    let Some(site) = AwsSite::start_or_skip(AwsOptions {
        gib: 1 << 20,
        moto_auth: true,
        ..AwsOptions::default()
    })
    .await
    else {
        return;
    };
    let runtime = rebound_runtime::testing::runtime();
    let plugin = rebound_runtime::testing::load(&runtime, "aws").await;
    let options = site.options();
    let region = &site.regions()[0];
    let moto = site.moto_endpoint();

    let ctx = context(
        moto,
        region,
        &options.access_key_id,
        &options.secret_access_key,
    );
    let found = runtime
        .call(&plugin, &ctx, Inventory::all("aws"))
        .await
        .expect("moto accepts the plugin's signature");
    let mut names: Vec<&str> = found.iter().map(|w| w.spec.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["db-1", "web-1"]);
    let web = found
        .iter()
        .find(|w| w.spec.name == "web-1")
        .expect("web-1");
    assert_eq!(web.spec.disks.len(), 2);
    assert_eq!(web.spec.disks[0].boot_order, Some(0));
    assert_eq!(web.spec.disks[0].size_bytes, 8 << 30);
    assert_eq!((web.spec.cpus, web.spec.memory_mib), (2, 2048));

    let wrong = context(moto, region, &options.access_key_id, "not-the-secret");
    let err = runtime
        .call(&plugin, &wrong, Inventory::all("aws"))
        .await
        .expect_err("moto refuses a wrong secret");
    match err.provider_error() {
        Some(ProviderError::Unauthorized(message)) => {
            assert!(message.contains("secret_access_key"), "{message}");
        }
        other => panic!("expected unauthorized, got {other:?} ({err})"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_in_awss_shape_is_throttled_with_its_retry_after() {
    let Some(site) = AwsSite::start_or_skip(AwsOptions {
        gib: 1 << 20,
        ..AwsOptions::default()
    })
    .await
    else {
        return;
    };
    let runtime = rebound_runtime::testing::runtime();
    let plugin = rebound_runtime::testing::load(&runtime, "aws").await;
    let options = site.options();
    let ctx = context(
        &site.endpoint(),
        &site.regions()[0],
        &options.access_key_id,
        &options.secret_access_key,
    );
    site.set_faults(Faults {
        error_rate: 1.0,
        status: Some(429),
        retry_after: Some(1),
        service: Some("ec2".into()),
        ..Faults::default()
    });
    let err = runtime
        .call(&plugin, &ctx, Inventory::all("aws"))
        .await
        .expect_err("every call throttled");
    match err.provider_error() {
        Some(ProviderError::Throttled(t)) => {
            assert_eq!(t.retry_after_ms, Some(1000), "{t:?}");
            assert!(t.message.contains("RequestLimitExceeded"), "{t:?}");
        }
        other => panic!("expected throttled, got {other:?} ({err})"),
    }
    // Once the throttling stops, the same call works: it was retryable.
    site.set_faults(Faults::default());
    let found = runtime
        .call(&plugin, &ctx, Inventory::all("aws"))
        .await
        .expect("inventory");
    assert_eq!(found.len(), 2);
}

/// The listener ARN and the target groups (ARN, weight) it forwards to.
async fn listener(site: &AwsSite) -> (String, Vec<(String, u32)>) {
    let region = &site.regions()[0];
    let lbs = site
        .query(
            region,
            "elasticloadbalancing",
            &[("Action", "DescribeLoadBalancers")],
        )
        .await
        .expect("load balancers");
    let lb = texts(&lbs, "LoadBalancerArn")[0].to_owned();
    let xml = site
        .query(
            region,
            "elasticloadbalancing",
            &[
                ("Action", "DescribeListeners"),
                ("LoadBalancerArn", lb.as_str()),
            ],
        )
        .await
        .expect("listeners");
    let arn = texts(&xml, "ListenerArn")[0].to_owned();
    let groups = xml
        .split("<TargetGroups>")
        .nth(1)
        .map(|g| {
            g.split("<member>")
                .skip(1)
                .map(|m| {
                    (
                        texts(m, "TargetGroupArn")[0].to_owned(),
                        texts(m, "Weight")
                            .first()
                            .and_then(|w| w.parse().ok())
                            .unwrap_or(1),
                    )
                })
                .collect()
        })
        .unwrap_or_else(|| vec![(texts(&xml, "TargetGroupArn")[0].to_owned(), 1)]);
    (arn, groups)
}

/// A canary through an ELBv2 listener: the seeded listener forwards to
/// `shop-web`; redirecting to a new instance at weight 50 gives it a target
/// group of its own beside `shop-web` (which keeps its weight), weight 100
/// then raises it, and a repeated call changes nothing. The report names
/// the backend, not its target group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_elbv2_listener_shifts_weight_to_the_recovered_instance() {
    use rebound_runtime::Status;
    use rebound_runtime::bindings::exports::{RedirectRequest, RedirectTarget, WeightedBackend};
    use rebound_runtime::bindings::{OperationState, Outcome};

    let Some(Setup {
        site,
        runtime,
        plugin,
        ctx,
        ..
    }) = setup(true).await
    else {
        return;
    };
    let (arn, before) = listener(&site).await;
    assert_eq!(before.len(), 1, "{before:?}");
    let found = runtime
        .call(&plugin, &ctx, Inventory::all("aws"))
        .await
        .expect("inventory");
    // db-1 stands in for an instance a failback recovered.
    let recovered = found
        .iter()
        .find(|w| w.spec.name == "db-1")
        .expect("db-1")
        .id
        .clone();
    let mut groups = Vec::new();
    for (step, weight) in [("canary", 50u8), ("full", 100), ("again", 100)] {
        let op = runtime
            .call(
                &plugin,
                &ctx,
                RedirectRequest {
                    key: format!("redirect-{step}"),
                    site: "aws".into(),
                    target: RedirectTarget::LoadBalancerPool(arn.clone()),
                    backends: vec![WeightedBackend {
                        backend: recovered.clone(),
                        weight,
                    }],
                },
            )
            .await
            .unwrap_or_else(|e| panic!("redirect {step}: {e}"));
        let report = match runtime.call(&plugin, &ctx, Status(op)).await {
            Ok(OperationState::Succeeded(Outcome::Redirected(r))) => r,
            other => panic!("{step}: {other:?}"),
        };
        let weights: Vec<(String, u8)> = report
            .backends
            .iter()
            .map(|b| (b.backend.clone(), b.weight))
            .collect();
        assert_eq!(
            weights,
            vec![(before[0].0.clone(), 1), (recovered.clone(), weight)],
            "{step}: shop-web keeps its weight, the recovered instance has its own"
        );
        let (_, now) = listener(&site).await;
        assert_eq!(now.len(), 2, "{step}: {now:?}");
        assert_eq!(now[1].1, u32::from(weight), "{step}");
        groups.push(now[1].0.clone());
    }
    assert!(
        groups.windows(2).all(|w| w[0] == w[1]),
        "one target group for the backend: {groups:?}"
    );
    let effects = site.effects();
    assert_eq!(
        effects
            .get("elasticloadbalancing CreateTargetGroup")
            .copied(),
        Some(1),
        "{effects:?}"
    );
}

/// A recovery point the data mover wrote onto AWS is its imported volumes:
/// pruning it deletes them, pruning it again finds nothing to do, and one
/// still attached to an instance shutting down is deleted once detached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_an_imported_point_deletes_its_volumes() {
    use rebound_runtime::Status;
    use rebound_runtime::bindings::exports::{CleanupRequest, CleanupScope};
    use rebound_runtime::bindings::{OperationState, Outcome};

    let Some(Setup {
        site,
        runtime,
        plugin,
        region,
        ctx,
    }) = setup(false).await
    else {
        return;
    };
    let volume = volume(&site, &region).await;
    for attempt in ["prune", "prune again"] {
        let op = runtime
            .call(
                &plugin,
                &ctx,
                CleanupRequest {
                    key: format!("cleanup-{attempt}"),
                    site: "aws".into(),
                    scope: CleanupScope::RecoveryPoints(vec![volume.clone()]),
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{attempt}: {e}"));
        match runtime.call(&plugin, &ctx, Status(op)).await {
            Ok(OperationState::Succeeded(Outcome::Cleaned(report))) => {
                assert_eq!(report.removed, vec![volume.clone()], "{attempt}");
            }
            other => panic!("{attempt}: {other:?}"),
        }
        let left = site
            .query(&region, "ec2", &[("Action", "DescribeVolumes")])
            .await
            .expect("DescribeVolumes");
        assert!(!left.contains(&volume), "{attempt}: {left}");
    }

    // A volume still attached to an instance that is shutting down (EC2
    // refuses to delete it until it detaches): the cleanup runs on until
    // it can delete it.
    let images = site
        .query(
            &region,
            "ec2",
            &[
                ("Action", "DescribeImages"),
                ("Filter.1.Name", "name"),
                ("Filter.1.Value.1", "rebound-mover"),
            ],
        )
        .await
        .expect("DescribeImages");
    let image = texts(&images, "imageId")[0].to_owned();
    let launched = site
        .query(
            &region,
            "ec2",
            &[
                ("Action", "RunInstances"),
                ("ImageId", image.as_str()),
                ("MinCount", "1"),
                ("MaxCount", "1"),
                ("BlockDeviceMapping.1.DeviceName", "/dev/sdf"),
                ("BlockDeviceMapping.1.Ebs.VolumeSize", "1"),
                ("BlockDeviceMapping.1.Ebs.DeleteOnTermination", "false"),
            ],
        )
        .await
        .expect("RunInstances");
    let instance = texts(&launched, "instanceId")[0].to_owned();
    let volume = texts(&launched, "volumeId")
        .last()
        .expect("the volume at /dev/sdf")
        .to_string();
    site.query_as_client(
        &region,
        "ec2",
        &[
            ("Action", "TerminateInstances"),
            ("InstanceId.1", &instance),
        ],
    )
    .await
    .expect("TerminateInstances");
    let op = runtime
        .call(
            &plugin,
            &ctx,
            CleanupRequest {
                key: "cleanup-attached".into(),
                site: "aws".into(),
                scope: CleanupScope::RecoveryPoints(vec![volume.clone()]),
            },
        )
        .await
        .expect("cleanup");
    let mut polls = 0;
    let report = loop {
        polls += 1;
        match runtime.call(&plugin, &ctx, Status(op.clone())).await {
            Ok(OperationState::Running(r)) if polls < 200 => {
                assert!(r.detail.contains(&volume), "{}", r.detail);
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
            Ok(OperationState::Succeeded(Outcome::Cleaned(report))) => break report,
            other => panic!("{other:?}"),
        }
    };
    assert!(polls > 1, "pending while attached");
    assert_eq!(report.removed, vec![volume.clone()]);
    let left = site
        .query(&region, "ec2", &[("Action", "DescribeVolumes")])
        .await
        .expect("DescribeVolumes");
    assert!(!left.contains(&volume), "{left}");
}

/// Poll `op` until it is no longer running: its end, and how many polls
/// it took.
async fn finish(
    runtime: &rebound_runtime::Runtime,
    plugin: &std::sync::Arc<rebound_runtime::Plugin>,
    ctx: &CallContext,
    op: rebound_runtime::bindings::Operation,
) -> (rebound_runtime::bindings::Outcome, usize) {
    use rebound_runtime::Status;
    use rebound_runtime::bindings::OperationState;

    for polls in 1..=400 {
        match runtime.call(plugin, ctx, Status(op.clone())).await {
            Ok(OperationState::Running(_)) => {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Ok(OperationState::Succeeded(outcome)) => return (outcome, polls),
            other => panic!("{} {}: {other:?}", op.id, polls),
        }
    }
    panic!("{} still running after 400 polls", op.id)
}

/// A 1 GiB volume made in `region` directly in moto, as the host's data
/// mover would have left it: no tag of the plugin's.
async fn volume(site: &AwsSite, region: &str) -> String {
    let zone = format!("{region}a");
    let made = site
        .query(
            region,
            "ec2",
            &[
                ("Action", "CreateVolume"),
                ("AvailabilityZone", zone.as_str()),
                ("Size", "1"),
            ],
        )
        .await
        .expect("CreateVolume");
    texts(&made, "volumeId")[0].to_owned()
}

/// The ids of every `<idTag>` in the reply to `action` filtered by `filter`
/// (a name and value), asked of moto.
async fn ids(
    site: &AwsSite,
    region: &str,
    action: &str,
    filter: Option<(&str, &str)>,
    id_tag: &str,
) -> Vec<String> {
    let mut params = vec![("Action", action)];
    if action == "DescribeImages" || action == "DescribeSnapshots" {
        params.push(("Owner.1", "self"));
    }
    if let Some((name, value)) = filter {
        params.extend([("Filter.1.Name", name), ("Filter.1.Value.1", value)]);
    }
    let xml = site.query(region, "ec2", &params).await.expect(action);
    let mut found: Vec<String> = texts(&xml, id_tag).into_iter().map(str::to_owned).collect();
    found.sort();
    found.dedup();
    found
}

/// The `workloads` cleanup of a failed run's standbys: one materialized
/// from an imported volume, one from a recovery point. Naming an instance
/// the plugin did not materialize (the seeded `web-1`) beside them refuses
/// the whole request and removes nothing; naming the standbys terminates
/// them, with the volumes launched for them, their AMIs and the staging
/// snapshots — while the imported volume, the point's snapshots and
/// `web-1` stay. A repeat finds them gone and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_removes_only_the_standbys_it_materialized_and_keeps_their_sources() {
    use rebound_runtime::bindings::exports::{
        CleanupRequest, CleanupScope, DiskSource, MaterializeRequest, SnapshotRequest,
    };
    use rebound_runtime::bindings::{Consistency, Outcome};

    let Some(Setup {
        site,
        runtime,
        plugin,
        region,
        ctx,
    }) = setup(true).await
    else {
        return;
    };
    let found = runtime
        .call(&plugin, &ctx, Inventory::all("aws"))
        .await
        .expect("inventory");
    let web = found
        .iter()
        .find(|w| w.spec.name == "web-1")
        .expect("web-1")
        .clone();

    // A recovery point of web-1 and a standby from it.
    let op = runtime
        .call(
            &plugin,
            &ctx,
            SnapshotRequest {
                key: "run-1/snapshot/web-1".into(),
                site: "aws".into(),
                workload_id: web.id.clone(),
                consistency: Consistency::Crash,
                base: None,
            },
        )
        .await
        .expect("snapshot");
    let (Outcome::RecoveryPoint(point), _) = finish(&runtime, &plugin, &ctx, op).await else {
        panic!("no recovery point");
    };
    let point_snapshots = ids(
        &site,
        &region,
        "DescribeSnapshots",
        Some(("tag:rebound:point", &point.id)),
        "snapshotId",
    )
    .await;
    assert_eq!(point_snapshots.len(), 2, "{point_snapshots:?}");
    // An imported volume and a standby from it.
    let imported = volume(&site, &region).await;
    let mut standbys = Vec::new();
    for (key, source) in [
        (
            "run-2/materialize/web-1",
            DiskSource::RecoveryPoint(point.id.clone()),
        ),
        (
            "run-2/materialize/db-1",
            DiskSource::Volumes(vec![imported.clone()]),
        ),
    ] {
        let mut spec = web.spec.clone();
        spec.name = key.rsplit('/').next().unwrap_or_default().to_owned() + "-standby";
        let op = runtime
            .call(
                &plugin,
                &ctx,
                MaterializeRequest {
                    key: key.into(),
                    site: "aws".into(),
                    source,
                    spec,
                    networks: vec![],
                    isolated: false,
                    start: true,
                },
            )
            .await
            .unwrap_or_else(|e| panic!("materialize {key}: {e}"));
        let (Outcome::Materialized(m), _) = finish(&runtime, &plugin, &ctx, op).await else {
            panic!("{key} not materialized");
        };
        standbys.push((key, m.workload.id));
    }
    let made: Vec<String> = {
        let mut made = Vec::new();
        for (_, id) in &standbys {
            let described = aws::instances(&site, &region, &[("instance-id", id)]).await;
            let (_, state, volumes) = &described[0];
            assert_eq!(state, "running", "{id}");
            assert!(!volumes.is_empty(), "{id} has volumes");
            assert!(!volumes.contains(&imported), "{id} runs on a copy");
            made.extend(volumes.iter().cloned());
        }
        made
    };
    let staging = ids(
        &site,
        &region,
        "DescribeSnapshots",
        Some(("tag:rebound:staging", "materialize")),
        "snapshotId",
    )
    .await;
    assert_eq!(
        staging.len(),
        1,
        "one staging snapshot of the imported volume"
    );
    let amis = ids(
        &site,
        &region,
        "DescribeImages",
        Some(("tag-key", "rebound:key")),
        "imageId",
    )
    .await;
    assert_eq!(amis.len(), 2, "an AMI per standby: {amis:?}");
    let standby_ids: Vec<String> = standbys.iter().map(|(_, id)| id.clone()).collect();

    // web-1 was not materialized by Rebound: the request is refused, and
    // nothing is removed — not even the standby named before it.
    let before = site.effects();
    let mut spoiled = standby_ids.clone();
    spoiled.insert(1, web.id.clone());
    let refused = runtime
        .call(
            &plugin,
            &ctx,
            CleanupRequest {
                key: "run-2/compensate/refused".into(),
                site: "aws".into(),
                scope: CleanupScope::Workloads(spoiled),
            },
        )
        .await
        .expect_err("web-1 is not a standby");
    match refused.provider_error() {
        Some(ProviderError::InvalidRequest(message)) => {
            assert!(
                message.contains(&web.id) && message.contains("not materialized by Rebound"),
                "{message}"
            );
        }
        other => panic!("expected invalid-request, got {other:?} ({refused})"),
    }
    assert_eq!(site.effects(), before, "no side effect at all");
    for id in standby_ids.iter().chain([&web.id]) {
        let described = aws::instances(&site, &region, &[("instance-id", id)]).await;
        assert_eq!(described[0].1, "running", "{id}");
    }

    for attempt in ["remove", "remove again"] {
        let op = runtime
            .call(
                &plugin,
                &ctx,
                CleanupRequest {
                    key: format!("run-2/compensate/{attempt}"),
                    site: "aws".into(),
                    scope: CleanupScope::Workloads(standby_ids.clone()),
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{attempt}: {e}"));
        let (Outcome::Cleaned(report), _) = finish(&runtime, &plugin, &ctx, op).await else {
            panic!("{attempt}: not cleaned");
        };
        for id in &standby_ids {
            assert!(report.removed.contains(id), "{attempt}: {report:?}");
        }
        for (_, id) in &standbys {
            let described = aws::instances(&site, &region, &[("instance-id", id)]).await;
            assert_eq!(described[0].1, "terminated", "{attempt}: {id}");
        }
        let volumes = ids(&site, &region, "DescribeVolumes", None, "volumeId").await;
        for v in &made {
            assert!(!volumes.contains(v), "{attempt}: {v} went with its standby");
        }
        assert!(
            volumes.contains(&imported),
            "{attempt}: the imported volume stays"
        );
        for v in &web.spec.disks {
            assert!(volumes.contains(&v.id), "{attempt}: web-1's {} stays", v.id);
        }
        let snapshots = ids(&site, &region, "DescribeSnapshots", None, "snapshotId").await;
        for s in &point_snapshots {
            assert!(snapshots.contains(s), "{attempt}: the point's {s} stays");
        }
        for s in &staging {
            assert!(!snapshots.contains(s), "{attempt}: staging {s} deleted");
        }
        let images = ids(&site, &region, "DescribeImages", None, "imageId").await;
        for a in &amis {
            assert!(!images.contains(a), "{attempt}: AMI {a} deregistered");
        }
        let described = aws::instances(&site, &region, &[("instance-id", &web.id)]).await;
        assert_eq!(described[0].1, "running", "{attempt}: web-1 runs on");
    }
    let effects = site.effects();
    assert_eq!(
        effects.get("ec2 TerminateInstances").copied(),
        Some(1),
        "the repeat terminates nothing: {effects:?}"
    );
}

/// `discarded-imports`: an import onto a base volume that got as far as
/// its staging snapshot (completed: a `status` now would launch the mover
/// appliance) is discarded without a `status` — the snapshot goes, no
/// appliance is ever launched, the base stays. An import that had launched
/// its appliance loses it and the volume it was writing (deleted once
/// detached), and so does one whose appliance a `transfers` cleanup
/// released before (its volume found by tag). Repeats succeed. And the
/// control: polling the first kind of import does launch an appliance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discarding_an_import_launches_nothing_and_deletes_what_it_wrote() {
    use rebound_runtime::Status;
    use rebound_runtime::bindings::exports::{CleanupRequest, CleanupScope, ImportRequest};
    use rebound_runtime::bindings::{DiskFormat, Outcome};

    let Some(Setup {
        site,
        runtime,
        plugin,
        region,
        ctx,
    }) = setup(false).await
    else {
        return;
    };
    let import = |key: &str, base: Option<String>| ImportRequest {
        key: key.into(),
        site: "aws".into(),
        name: "db-1-disk0".into(),
        size_bytes: 1 << 30,
        format: DiskFormat::Raw,
        volume_id: base,
    };
    let cleanup = |key: &str, scope: CleanupScope| CleanupRequest {
        key: key.into(),
        site: "aws".into(),
        scope,
    };
    let appliances = || {
        let (site, region) = (&site, &region);
        async move { aws::instances(site, region, &[("tag-key", "rebound:mover-mode")]).await }
    };
    let launched = || site.effects().get("ec2 RunInstances").copied().unwrap_or(0);
    let staged = |key: &'static str| {
        let site = &site;
        let region = &region;
        async move {
            let xml = site
                .query_as_client(
                    region,
                    "ec2",
                    &[
                        ("Action", "DescribeSnapshots"),
                        ("Owner.1", "self"),
                        ("Filter.1.Name", "tag:rebound:key"),
                        ("Filter.1.Value.1", key),
                    ],
                )
                .await
                .expect("DescribeSnapshots");
            texts(&xml, "snapshotId")
                .into_iter()
                .map(str::to_owned)
                .zip(texts(&xml, "status").into_iter().map(str::to_owned))
                .collect::<Vec<_>>()
        }
    };

    // 1. Onto a base volume: import-disk snapshots the base first.
    let base = volume(&site, &region).await;
    let op = runtime
        .call(&plugin, &ctx, import("run-1/import/0", Some(base.clone())))
        .await
        .expect("import");
    let snapshot = loop {
        let snaps = staged("run-1/import/0").await;
        assert_eq!(snaps.len(), 1, "{snaps:?}");
        if snaps[0].1 == "completed" {
            break snaps[0].0.clone();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    for attempt in ["discard", "discard again"] {
        let discard = runtime
            .call(
                &plugin,
                &ctx,
                cleanup(
                    &format!("run-1/{attempt}"),
                    CleanupScope::DiscardedImports(vec![op.id.clone()]),
                ),
            )
            .await
            .unwrap_or_else(|e| panic!("{attempt}: {e}"));
        let (Outcome::Cleaned(report), _) = finish(&runtime, &plugin, &ctx, discard).await else {
            panic!("{attempt}: not cleaned");
        };
        assert!(report.removed.contains(&op.id), "{attempt}: {report:?}");
        assert_eq!(launched(), 0, "{attempt}: no appliance was launched");
        assert!(appliances().await.is_empty(), "{attempt}");
        assert!(staged("run-1/import/0").await.is_empty(), "{attempt}");
        assert_eq!(
            ids(&site, &region, "DescribeVolumes", None, "volumeId").await,
            vec![base.clone()],
            "{attempt}: the base stays, and no volume was made"
        );
    }
    assert!(
        ids(&site, &region, "DescribeSnapshots", None, "snapshotId")
            .await
            .iter()
            .all(|s| *s != snapshot)
    );

    // 2. Empty imports launch their appliance at once; one is released
    //    first, as the host releases a transfer's endpoints.
    let mut ops = Vec::new();
    for key in ["run-2/import/0", "run-2/import/1"] {
        ops.push(
            runtime
                .call(&plugin, &ctx, import(key, None))
                .await
                .expect("import"),
        );
    }
    let running = appliances().await;
    assert_eq!((launched(), running.len()), (2, 2), "{running:?}");
    let written: Vec<String> = ids(&site, &region, "DescribeVolumes", None, "volumeId")
        .await
        .into_iter()
        .filter(|v| *v != base)
        .filter(|v| running.iter().any(|(_, _, vs)| vs.contains(v)))
        .collect();
    assert!(written.len() >= 2, "{written:?}");
    let released = runtime
        .call(
            &plugin,
            &ctx,
            cleanup(
                "run-2/release",
                CleanupScope::Transfers(vec![ops[1].id.clone()]),
            ),
        )
        .await
        .expect("release");
    finish(&runtime, &plugin, &ctx, released).await;
    for attempt in ["discard", "discard again"] {
        let discard = runtime
            .call(
                &plugin,
                &ctx,
                cleanup(
                    &format!("run-2/{attempt}"),
                    CleanupScope::DiscardedImports(ops.iter().map(|o| o.id.clone()).collect()),
                ),
            )
            .await
            .unwrap_or_else(|e| panic!("{attempt}: {e}"));
        let (Outcome::Cleaned(report), polls) = finish(&runtime, &plugin, &ctx, discard).await
        else {
            panic!("{attempt}: not cleaned");
        };
        for o in &ops {
            assert!(report.removed.contains(&o.id), "{attempt}: {report:?}");
        }
        if attempt == "discard" {
            assert!(polls > 1, "the volume was deleted once detached");
        }
        assert_eq!(launched(), 2, "{attempt}: nothing more launched");
        for (id, state, _) in appliances().await {
            assert_eq!(state, "terminated", "{attempt}: {id}");
        }
        assert_eq!(
            ids(&site, &region, "DescribeVolumes", None, "volumeId").await,
            vec![base.clone()],
            "{attempt}: the volumes the imports wrote are gone, the base stays"
        );
    }

    // An export handle is no import: refused before anything is removed.
    let export_id = ops[0].id.replacen("import:", "export:", 1);
    let refused = runtime
        .call(
            &plugin,
            &ctx,
            cleanup(
                "run-3/discard",
                CleanupScope::DiscardedImports(vec![op.id.clone(), export_id]),
            ),
        )
        .await
        .expect_err("an export is refused");
    assert!(
        matches!(
            refused.provider_error(),
            Some(ProviderError::InvalidRequest(_))
        ),
        "{refused}"
    );

    // The control: the same import, polled, launches its appliance.
    let polled = runtime
        .call(&plugin, &ctx, import("run-4/import/0", Some(base.clone())))
        .await
        .expect("import");
    for _ in 0..200 {
        if launched() > 2 {
            break;
        }
        runtime
            .call(&plugin, &ctx, Status(polled.clone()))
            .await
            .expect("status");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(launched(), 3, "status moves an import on to its appliance");
}

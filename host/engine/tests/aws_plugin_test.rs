//! The AWS plugin's signing and error mapping against the lab's AWS site:
//! its SigV4 signatures pass moto's own check (moto started with
//! `INITIAL_NO_AUTH_ACTION_COUNT`, the plugin pointed at moto directly, not
//! at the lab's front), a wrong secret is refused as `unauthorized` with a
//! message saying what to check, and the front's throttling (AWS's XML
//! `RequestLimitExceeded` with `Retry-After`) comes back as `throttled`.
//!
//! Needs moto (`lab/fidelity/aws-requirements.txt` in `REBOUND_PYTHON`'s
//! environment); skipped without it unless `REBOUND_REQUIRE_PYTHON=1`.
//! `cargo xtask build-plugins`, then
//! `cargo test -p rebound-engine --test aws_plugin_test`.

#[path = "support/aws.rs"]
mod aws;

use std::time::Duration;

use aws::texts;
use rebound_lab::{AwsOptions, AwsSite, Faults};
use rebound_runtime::bindings::ProviderError;
use rebound_runtime::{CallContext, Inventory};

fn context(endpoint: &str, region: &str, key: &str, secret: &str) -> CallContext {
    let grant = aws::grant_with("aws", endpoint, region, key, secret);
    CallContext::new(vec![grant], Duration::from_secs(30))
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

    let Some(site) = AwsSite::start_or_skip(AwsOptions {
        gib: 1 << 20,
        seed: false,
        ..AwsOptions::default()
    })
    .await
    else {
        return;
    };
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
    let zone = format!("{region}a");
    let made = site
        .query(
            &region,
            "ec2",
            &[
                ("Action", "CreateVolume"),
                ("AvailabilityZone", zone.as_str()),
                ("Size", "1"),
            ],
        )
        .await
        .expect("CreateVolume");
    let volume = texts(&made, "volumeId")[0].to_owned();
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

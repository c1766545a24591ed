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

use std::time::Duration;

use rebound_lab::aws::AwsError;
use rebound_lab::{AwsOptions, AwsSite, Faults};
use rebound_runtime::bindings::ProviderError;
use rebound_runtime::{CallContext, Inventory, SiteGrant};

async fn site(options: AwsOptions) -> Option<AwsSite> {
    match AwsSite::start(options).await {
        Ok(site) => Some(site),
        Err(e @ (AwsError::NoPython | AwsError::MotoMissing(_)))
            if std::env::var("REBOUND_REQUIRE_PYTHON").as_deref() != Ok("1") =>
        {
            eprintln!("skipped: {e}");
            None
        }
        Err(e) => panic!("the lab's AWS site: {e}"),
    }
}

fn context(endpoint: &str, region: &str, key: &str, secret: &str) -> CallContext {
    let grant = SiteGrant::new("aws")
        .config("endpoint", endpoint)
        .config("region", region)
        .secret("access_key_id", key)
        .secret("secret_access_key", secret)
        .grant(endpoint)
        .expect("grant");
    CallContext::new(vec![grant], Duration::from_secs(30))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_accepts_the_plugins_signatures_and_refuses_a_wrong_secret() {
    let Some(site) = site(AwsOptions {
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
    let Some(site) = site(AwsOptions {
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

//! The example plugin against the lab's example site: the contract's happy
//! path, idempotency keys, secrets injected by the host, and egress grants.

mod support;

use std::time::Duration;

use rebound_runtime::bindings::exports::SnapshotRequest;
use rebound_runtime::bindings::{
    Consistency, HealthStatus, InventoryFilter, OperationState, Outcome, ProviderError,
};
use rebound_runtime::{CallError, Describe, Health, Inventory, SiteGrant, Status};
use support::*;

#[tokio::test]
async fn describe_health_and_inventory() {
    let rt = runtime();
    let site = example_site().await;
    let plugin = load(&rt, "example").await;
    let ctx = ctx(vec![grant(&site, "lab-a")]);

    let info = rt.call(&plugin, &ctx, Describe).await.expect("describe");
    assert_eq!(
        (info.name.as_str(), info.version.as_str()),
        ("example", "0.1.0")
    );

    let health = rt
        .call(&plugin, &ctx, Health("lab-a".into()))
        .await
        .expect("health");
    assert_eq!(health.status, HealthStatus::Healthy);
    assert_eq!(health.api_version.as_deref(), Some("1.4.2"));

    let all = rt
        .call(&plugin, &ctx, Inventory::all("lab-a"))
        .await
        .expect("inventory");
    assert_eq!(all.len(), 3);
    let db = rt
        .call(
            &plugin,
            &ctx,
            Inventory {
                site: "lab-a".into(),
                filter: InventoryFilter {
                    workload_ids: vec![],
                    labels: vec![("tier".into(), "db".into())],
                },
            },
        )
        .await
        .expect("inventory");
    assert_eq!(db.len(), 1);
    assert_eq!(db[0].spec.name, "db-1");
    assert_eq!(db[0].spec.disks[0].size_bytes, 100 << 30);
}

#[tokio::test]
async fn a_snapshot_is_polled_to_a_recovery_point_and_a_repeated_key_repeats_nothing() {
    let rt = runtime();
    let site = example_site().await;
    let plugin = load(&rt, "example").await;
    let ctx = ctx(vec![grant(&site, "lab-a")]);
    let request = SnapshotRequest {
        key: "run-1/step-3".into(),
        site: "lab-a".into(),
        workload_id: "vm-2".into(),
        consistency: Consistency::Crash,
        base: None,
    };
    let op = rt
        .call(&plugin, &ctx, request.clone())
        .await
        .expect("snapshot");
    let again = rt
        .call(&plugin, &ctx, request)
        .await
        .expect("snapshot again");
    assert_eq!(op.id, again.id, "the same key returns the same operation");
    assert_eq!(
        site.effects().get("run-1/step-3"),
        Some(&1),
        "the side effect happened once"
    );

    let point = loop {
        match rt
            .call(&plugin, &ctx, Status(op.clone()))
            .await
            .expect("status")
        {
            OperationState::Running(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            OperationState::Succeeded(Outcome::RecoveryPoint(point)) => break point,
            other => panic!("unexpected state {other:?}"),
        }
    };
    assert_eq!(point.workload_id, "vm-2");
    assert_eq!(point.disks.len(), 1);
    assert_eq!(point.spec.name, "app-1");
}

#[tokio::test]
async fn the_token_reaches_the_site_without_the_plugin_holding_it() {
    let rt = runtime();
    let site = example_site().await;
    let plugin = load(&rt, "example").await;

    // The example plugin only ever sees a placeholder; the site accepts the
    // request, so the host filled in the real token.
    let ok = rt
        .call(
            &plugin,
            &ctx(vec![grant(&site, "lab-a")]),
            Inventory::all("lab-a"),
        )
        .await;
    assert!(ok.is_ok(), "{ok:?}");

    let wrong = SiteGrant::new("lab-a")
        .config("endpoint", &site.endpoint())
        .secret("token", "not-the-token")
        .grant(&site.endpoint())
        .expect("grant");
    let err = rt
        .call(&plugin, &ctx(vec![wrong]), Health("lab-a".into()))
        .await
        .expect_err("refused");
    assert!(
        matches!(
            err,
            CallError::Provider {
                error: ProviderError::Unauthorized(_),
                ..
            }
        ),
        "{err}"
    );
    assert!(
        !err.to_string().contains("not-the-token"),
        "secrets never appear in errors: {err}"
    );
}

#[tokio::test]
async fn egress_without_the_operators_grant_is_denied_with_the_entry_to_add() {
    let rt = runtime();
    let site = example_site().await;
    let plugin = load(&rt, "example").await;
    let ungranted = SiteGrant::new("lab-a")
        .config("endpoint", &site.endpoint())
        .secret("token", &site.token);
    let err = rt
        .call(&plugin, &ctx(vec![ungranted]), Health("lab-a".into()))
        .await
        .expect_err("denied");
    assert!(matches!(err, CallError::Sandbox { .. }), "{err}");
    let text = err.to_string();
    let entry = format!("add \"http://{}\" to the site's egress grant", site.addr);
    assert!(text.contains(&entry), "{text}");
}

#[tokio::test]
async fn a_site_with_its_own_ca_is_reached_over_https_only_with_that_ca() {
    let rt = runtime();
    let site = rebound_lab::ExampleSite::start(rebound_lab::ExampleOptions {
        tls: true,
        ..Default::default()
    })
    .await
    .expect("https site");
    assert!(site.endpoint().starts_with("https://"));
    let plugin = load(&rt, "example").await;

    let trusted = grant(&site, "lab-a");
    let health = rt
        .call(&plugin, &ctx(vec![trusted.clone()]), Health("lab-a".into()))
        .await
        .expect("health over TLS with the site's CA");
    assert_eq!(health.status, HealthStatus::Healthy);

    let mut untrusted = trusted;
    untrusted.ca_pem = None;
    let err = rt
        .call(&plugin, &ctx(vec![untrusted]), Health("lab-a".into()))
        .await
        .expect_err("an unknown CA is refused");
    assert!(matches!(err, CallError::Provider { .. }), "{err}");
}

#[tokio::test]
async fn a_call_only_sees_its_own_sites() {
    let rt = runtime();
    let site = example_site().await;
    let plugin = load(&rt, "example").await;
    let err = rt
        .call(
            &plugin,
            &ctx(vec![grant(&site, "lab-a")]),
            Health("lab-b".into()),
        )
        .await
        .expect_err("lab-b is not part of the call");
    assert!(matches!(err, CallError::Provider { .. }), "{err}");
}

/// Collects what a `tracing` subscriber writes.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn plugin_logs_reach_tracing_with_the_plugin_name_and_version() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let rt = runtime();
    let site = example_site().await;
    let plugin = load(&rt, "example").await;
    let request = SnapshotRequest {
        key: "logged".into(),
        site: "lab-a".into(),
        workload_id: "vm-1".into(),
        consistency: Consistency::Crash,
        base: None,
    };
    rt.call(&plugin, &ctx(vec![grant(&site, "lab-a")]), request)
        .await
        .expect("snapshot");
    let text = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf8");
    let line = text
        .lines()
        .find(|l| l.contains("snapshot started"))
        .unwrap_or_else(|| panic!("no plugin log in:\n{text}"));
    assert!(line.contains("rebound::plugin"), "{line}");
    assert!(
        line.contains("plugin=example") && line.contains("version=0.1.0"),
        "{line}"
    );
    assert!(line.contains("workload=vm-1"), "{line}");
    assert!(
        !text.contains(&site.token),
        "the token never reaches the logs"
    );
}

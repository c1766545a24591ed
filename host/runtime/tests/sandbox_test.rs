//! Hostile plugins are contained with a clear, specific error while the host
//! keeps serving other plugins' calls concurrently.

mod support;

use std::time::{Duration, Instant};

use rebound_runtime::{
    AuditEvent, AuditSink, CallContext, CallError, Health, Inventory, Limits, RuntimeConfig,
    SiteGrant,
};
use support::*;

fn hostile_config() -> RuntimeConfig {
    RuntimeConfig {
        limits: Limits {
            memory_bytes: 64 << 20,
            crash_budget: 100,
            ..Limits::default()
        },
        ..RuntimeConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_are_contained_while_other_calls_are_served() {
    let rt = runtime_with(hostile_config());
    let site = example_site().await;
    let example = load(&rt, "example").await;
    let names = [
        "hostile-spin",
        "hostile-memory-bomb",
        "hostile-trap",
        "hostile-huge-response",
        "hostile-egress-denied",
        "hostile-egress-metadata",
        "hostile-connection-flood",
    ];
    let mut hostile = Vec::new();
    for name in names {
        hostile.push(load(&rt, name).await);
    }

    let grant = grant(&site, "lab-a");
    // The spinning plugin must be stopped by its deadline; every other
    // hostile plugin must be stopped by its own limit well before a
    // generous one (a loaded machine streams 16 MB slower than 1.5 s).
    let budget = Duration::from_millis(1500);
    let hostile_calls = hostile.iter().map(|plugin| {
        let limit = if plugin.name() == "hostile-spin" {
            budget
        } else {
            Duration::from_secs(20)
        };
        let ctx = CallContext::new(vec![grant.clone()], limit);
        let rt = &rt;
        async move {
            (
                plugin.name().to_owned(),
                rt.call(plugin, &ctx, Health("lab-a".into())).await,
            )
        }
    });
    let started = Instant::now();
    let served = async {
        let mut ok = 0;
        let mut slowest = Duration::ZERO;
        while started.elapsed() < budget + Duration::from_millis(500) {
            let t = Instant::now();
            let workloads = rt
                .call(&example, &ctx(vec![grant.clone()]), Inventory::all("lab-a"))
                .await
                .expect("example inventory keeps working during the hostile calls");
            assert_eq!(workloads.len(), 3);
            slowest = slowest.max(t.elapsed());
            ok += 1;
        }
        (ok, slowest)
    };
    let (results, (served_ok, slowest)) =
        tokio::join!(futures_util::future::join_all(hostile_calls), served);
    assert!(
        served_ok >= 5,
        "only {served_ok} example calls completed while hostile plugins ran"
    );
    assert!(
        slowest < budget,
        "an example call took {slowest:?}: a hostile plugin blocked the host"
    );

    for (name, result) in results {
        let err = result.expect_err(&format!("{name} must fail"));
        let text = err.to_string();
        match name.as_str() {
            "hostile-spin" => {
                assert!(
                    matches!(err, CallError::DeadlineExceeded { .. }),
                    "{name}: {text}"
                );
                assert!(text.contains("deadline"), "{text}");
            }
            "hostile-memory-bomb" => {
                assert!(
                    matches!(err, CallError::MemoryLimit { limit_mib: 64, .. }),
                    "{name}: {text}"
                );
                assert!(text.contains("memory limit of 64 MiB"), "{text}");
            }
            "hostile-trap" => {
                assert!(matches!(err, CallError::Trapped { .. }), "{name}: {text}");
                assert!(
                    text.contains("deliberate panic"),
                    "the panic message is reported: {text}"
                );
            }
            "hostile-huge-response" => {
                assert!(matches!(err, CallError::Sandbox { .. }), "{name}: {text}");
                assert!(text.contains("byte cap"), "{text}");
            }
            "hostile-egress-denied" => {
                assert!(matches!(err, CallError::Sandbox { .. }), "{name}: {text}");
                assert!(text.contains("https://example.com:443"), "{text}");
                assert!(
                    text.contains("does not request it in its manifest"),
                    "{text}"
                );
            }
            "hostile-egress-metadata" => {
                assert!(matches!(err, CallError::Sandbox { .. }), "{name}: {text}");
                assert!(text.contains("169.254.169.254"), "{text}");
            }
            "hostile-connection-flood" => {
                assert!(matches!(err, CallError::Sandbox { .. }), "{name}: {text}");
                assert!(text.contains("more than 8 requests open at once"), "{text}");
            }
            other => panic!("unexpected plugin {other}"),
        }
    }

    // And the host still serves afterwards.
    let report = rt
        .call(&example, &ctx(vec![grant]), Health("lab-a".into()))
        .await
        .expect("health");
    assert_eq!(report.api_version.as_deref(), Some("1.4.2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_keeps_crashing_is_quarantined_until_released() {
    let rt = runtime_with(RuntimeConfig {
        limits: Limits {
            crash_budget: 3,
            ..Limits::default()
        },
        ..RuntimeConfig::default()
    });
    let trap = load(&rt, "hostile-trap").await;
    let site = SiteGrant::new("lab-a");
    let ctx = CallContext::new(vec![site], Duration::from_secs(5));
    for _ in 0..3 {
        let err = rt
            .call(&trap, &ctx, Health("lab-a".into()))
            .await
            .expect_err("trap");
        assert!(matches!(err, CallError::Trapped { .. }), "{err}");
    }
    let err = rt
        .call(&trap, &ctx, Health("lab-a".into()))
        .await
        .expect_err("quarantined");
    assert!(
        matches!(err, CallError::Quarantined { crashes: 3, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("POST /api/v1/plugins/hostile-trap/release"),
        "{err}"
    );
    assert!(trap.crash_status().quarantined);

    trap.release();
    let err = rt
        .call(&trap, &ctx, Health("lab-a".into()))
        .await
        .expect_err("runs again");
    assert!(matches!(err, CallError::Trapped { .. }), "{err}");
}

#[derive(Default)]
struct Audit(std::sync::Mutex<Vec<AuditEvent>>);

impl AuditSink for Audit {
    fn record(&self, event: AuditEvent) {
        self.0.lock().expect("lock").push(event);
    }
}

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
async fn a_revealed_secret_is_audited_and_never_leaves_in_logs_or_errors() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let audit = std::sync::Arc::new(Audit::default());
    let rt = runtime_with(RuntimeConfig {
        audit: Some(audit.clone()),
        ..RuntimeConfig::default()
    });
    let leak = load(&rt, "hostile-secret-leak").await;
    let site = SiteGrant::new("lab-a").secret("token", "s3cr3t-t0ken-value");
    let err = rt
        .call(
            &leak,
            &CallContext::new(vec![site], Duration::from_secs(5)),
            Health("lab-a".into()),
        )
        .await
        .expect_err("the plugin fails");
    let text = err.to_string();
    assert!(text.contains("token=***"), "{text}");
    assert!(
        !text.contains("s3cr3t-t0ken-value") && !text.contains("rebound-secret-"),
        "{text}"
    );

    let logs = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf8");
    assert!(logs.contains("the token is ***"), "{logs}");
    assert!(!logs.contains("s3cr3t-t0ken-value"), "{logs}");

    let events = audit.0.lock().expect("lock").clone();
    assert_eq!(
        events,
        vec![AuditEvent::SecretRevealed {
            plugin: "hostile-secret-leak".into(),
            version: "0.1.0".into(),
            site: "lab-a".into(),
            secret: "token".into(),
        }]
    );
}

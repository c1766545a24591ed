//! Prometheus `/metrics` (text exposition format): the process's recorder
//! for the `metrics` facade, installed once, rendering what every crate
//! reports — the API's requests by method, route template and status and
//! their durations (here), plugin calls ([`rebound_runtime::metrics`]),
//! runs, steps, objectives and call waits ([`rebound_engine::metrics`]).
//! Labels are route templates (`/api/v1/runs/{id}`), never concrete ids,
//! so the series stay few.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// API requests answered, by `method`, `route` and `status`.
pub const REQUESTS: &str = "rebound_http_requests_total";
/// Time until a response started, by `route` (a histogram).
pub const REQUEST_SECONDS: &str = "rebound_http_request_duration_seconds";
/// The buckets of [`REQUEST_SECONDS`].
const REQUEST_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// How long a gauge nobody sets stays rendered (see [`keep_gauges_for`]).
static GAUGES_KEPT: OnceLock<Duration> = OnceLock::new();

/// Render a gauge only while something sets it at least every `kept`: a
/// plan's gauges, set on each policy tick, then go within `kept` of its
/// leaving the states objectives are judged in (unprotected, failing over).
/// Call before the recorder is installed (the first router built); without
/// it, gauges stay until the process ends.
pub fn keep_gauges_for(kept: Duration) {
    let _ = GAUGES_KEPT.set(kept);
}

/// The recorder's builder: the histograms' buckets, and gauges kept for
/// `gauges_kept` since last set (`None`: for good).
fn builder(gauges_kept: Option<Duration>) -> PrometheusBuilder {
    let buckets = [
        (REQUEST_SECONDS, &REQUEST_BUCKETS[..]),
        (
            rebound_runtime::metrics::CALL_SECONDS,
            &rebound_runtime::metrics::CALL_BUCKETS,
        ),
        (
            rebound_engine::metrics::STEP_SECONDS,
            &rebound_engine::metrics::STEP_BUCKETS,
        ),
        (
            rebound_engine::metrics::CALL_WAIT_SECONDS,
            &rebound_engine::metrics::CALL_WAIT_BUCKETS,
        ),
    ];
    let mut builder =
        PrometheusBuilder::new().idle_timeout(metrics_util::MetricKindMask::GAUGE, gauges_kept);
    for (name, bounds) in buckets {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.to_owned()), bounds)
            .expect("bucket bounds are not empty");
    }
    builder
}

/// The process's recorder, installed by the first router built. Another
/// recorder installed first (a test harness's) keeps the metrics; this
/// one then renders none.
fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = builder(GAUGES_KEPT.get().copied());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "a metrics recorder was installed before the API's: /metrics renders nothing"
            );
        }
        metrics::describe_counter!(REQUESTS, "API requests answered.");
        metrics::describe_histogram!(
            REQUEST_SECONDS,
            metrics::Unit::Seconds,
            "Time until the response started."
        );
        rebound_runtime::metrics::describe();
        rebound_engine::metrics::describe();
        handle
    })
}

/// Install the process's recorder (at once, so what the host does before
/// its first `/metrics` request is counted).
pub fn install() {
    recorder();
}

/// Count and time every request by its route template.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(REQUESTS, "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(REQUEST_SECONDS, "route" => route).record(started.elapsed().as_secs_f64());
    response
}

pub async fn serve() -> Response {
    let recorder = recorder();
    recorder.run_upkeep();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        recorder.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn a_gauge_nobody_sets_any_more_goes_after_the_time_kept() {
        let recorder = super::builder(Some(Duration::from_millis(200))).build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::gauge!("plan_gauge", "plan" => "gone").set(1.0);
            metrics::gauge!("plan_gauge", "plan" => "kept").set(1.0);
            metrics::counter!("runs").increment(1);
        });
        assert!(handle.render().contains("plan=\"gone\""));
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(100));
            metrics::with_local_recorder(&recorder, || {
                metrics::gauge!("plan_gauge", "plan" => "kept").set(2.0);
            });
        }
        let text = handle.render();
        assert!(!text.contains("plan=\"gone\""), "{text}");
        assert!(text.contains("plan_gauge{plan=\"kept\"} 2"), "{text}");
        assert!(text.contains("runs 1"), "counters stay: {text}");
    }
}

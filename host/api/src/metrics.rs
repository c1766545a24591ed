//! Prometheus metrics of the API at `/metrics` (text exposition format):
//! requests by method, route template and status, and their durations.
//! Labels are route templates (`/api/v1/runs/{id}`), never concrete ids,
//! so the series stay few.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Upper bounds of the duration buckets, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

#[derive(Default)]
struct Series {
    /// (method, route, status) → count.
    requests: BTreeMap<(String, String, u16), u64>,
    /// route → (bucket counts, sum, count).
    durations: BTreeMap<String, ([u64; BUCKETS.len()], f64, u64)>,
}

/// The API's request metrics.
#[derive(Default)]
pub struct Metrics {
    // Held only to add a number or copy the series out; never across an await.
    series: Mutex<Series>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    fn record(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        *series
            .requests
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default() += 1;
        let (buckets, sum, count) = series.durations.entry(route.to_owned()).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                buckets[i] += 1;
            }
        }
        *sum += seconds;
        *count += 1;
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        out.push_str("# HELP rebound_http_requests_total API requests answered.\n");
        out.push_str("# TYPE rebound_http_requests_total counter\n");
        for ((method, route, status), n) in &series.requests {
            let _ = writeln!(
                out,
                "rebound_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP rebound_http_request_duration_seconds Time until the response started.\n",
        );
        out.push_str("# TYPE rebound_http_request_duration_seconds histogram\n");
        for (route, (buckets, sum, count)) in &series.durations {
            for (bound, n) in BUCKETS.iter().zip(buckets) {
                let _ = writeln!(
                    out,
                    "rebound_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "rebound_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "rebound_http_request_duration_seconds_sum{{route=\"{route}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "rebound_http_request_duration_seconds_count{{route=\"{route}\"}} {count}"
            );
        }
        out
    }
}

/// Count and time every request by its route template.
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    metrics.record(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

pub async fn serve(State(metrics): State<Arc<Metrics>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}

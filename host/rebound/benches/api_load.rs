//! API latency under a fixed request rate (`cargo xtask bench`): a release
//! `rebound serve` on its embedded SQLite store with two lab sites, one
//! plan and a few finished runs, sent a mix of authenticated reads at a
//! fixed rate, open loop (each request leaves at its scheduled time whether
//! or not earlier ones have answered, and its latency counts from that
//! time, so a stall is not hidden by the load generator waiting). Beside
//! it, the same rate of `GET /healthz` (no auth, no store) as the
//! baseline of the server and the load generator themselves. Bounded:
//! `REBOUND_LOAD_RATE` requests per second (default 200) for
//! `REBOUND_LOAD_SECONDS` (default 15) per run.
//!
//! Then the web UI's dashboard load — its four reads (every plan, every
//! plan's compliance, recent runs, recent events), sent together as the
//! page sends them — timed with the one plan, and again after
//! `REBOUND_LOAD_PLANS` more plans (default 300) are stored: the admins'
//! "no multi-second spinner with a few hundred plans"; then each of the
//! four alone, to see which one the load waits on. Where the web UI
//! is built into this binary and Chromium and node are at hand, the same
//! two loads are also timed in the browser (`web-ui/e2e/dashboard-load.mjs`):
//! from navigation start until every plan's row is drawn.

#[path = "../tests/support/browser.rs"]
mod browser;
#[path = "../tests/support/host.rs"]
mod host;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rebound_lab::{ExampleOptions, ExampleSite};
use serde_json::{Value, json};

const PLAN: &str = r#"
name: shop
source: lab-a
target: lab-b
workloads:
  - id: vm-2
  - id: vm-1
    depends_on: [vm-2]
replication: { mode: native, interval: 5m }
objectives:
  failover: { rto: 30m, rpo: 15m }
  failback: { rto: 2h, rpo: 0s }
"#;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Report {
    histogram: Histogram<u64>,
    errors: u64,
}

/// Send `paths` round-robin at `rate` per second for `seconds`.
async fn drive(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    paths: &[String],
    rate: u64,
    seconds: u64,
) -> Report {
    let shared = Arc::new(Mutex::new(Report {
        histogram: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
        errors: 0,
    }));
    let total = rate * seconds;
    let start = Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for i in 0..total {
        let scheduled = start + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        let request = client
            .get(format!("{base}{}", paths[(i as usize) % paths.len()]))
            .bearer_auth(token);
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let ok = match request.send().await {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            };
            let micros = u64::try_from(scheduled.elapsed().as_micros()).unwrap_or(u64::MAX);
            let mut report = shared.lock().expect("report");
            if ok {
                let _ = report.histogram.record(micros.max(1));
            } else {
                report.errors += 1;
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    Arc::try_unwrap(shared)
        .ok()
        .expect("every request finished")
        .into_inner()
        .expect("report")
}

fn print(name: &str, rate: u64, seconds: u64, r: &Report) {
    let ms = |q: f64| r.histogram.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "api_load {name:<28} {rate} req/s x {seconds} s: n={} errors={} p50={:.2} ms p90={:.2} ms p99={:.2} ms max={:.2} ms",
        r.histogram.len(),
        r.errors,
        ms(0.5),
        ms(0.9),
        ms(0.99),
        r.histogram.max() as f64 / 1000.0
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; a filter that excludes us means skip.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"api_load".contains(&a))
    {
        return;
    }
    let rate = env_number("REBOUND_LOAD_RATE", 200).max(1);
    let seconds = env_number("REBOUND_LOAD_SECONDS", 15).max(1);
    let dir = tempfile::tempdir().expect("tmp");
    let a = ExampleSite::start(ExampleOptions::default())
        .await
        .expect("site a");
    let b = ExampleSite::start(ExampleOptions {
        vms: Vec::new(),
        ..ExampleOptions::default()
    })
    .await
    .expect("site b");
    let host = host::serve(
        dir.path(),
        &[("lab-a", &a), ("lab-b", &b)],
        &["--policy-seconds", "0"],
        &[
            ("REBOUND_ADMIN_PASSWORD", "load-test-admin"),
            ("RUST_LOG", "warn"),
        ],
        false,
    )
    .await;
    let addr = host.url.clone();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    let login: Value = client
        .post(format!("{addr}/api/v1/auth/login"))
        .json(&json!({"username": "admin", "password": "load-test-admin"}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("token");
    let token = login["access_token"].as_str().expect("token").to_owned();
    let put = client
        .put(format!("{addr}/api/v1/plans/shop"))
        .bearer_auth(&token)
        .header("content-type", "application/yaml")
        .body(PLAN)
        .send()
        .await
        .expect("plan");
    assert!(
        put.status().is_success(),
        "{}",
        put.text().await.unwrap_or_default()
    );
    // A few finished replication runs, so run reads have steps to show.
    let mut run = String::new();
    for _ in 0..3 {
        let r: Value = client
            .post(format!("{addr}/api/v1/plans/shop/runs"))
            .bearer_auth(&token)
            .json(&json!({"workflow": "replication"}))
            .send()
            .await
            .expect("trigger")
            .json()
            .await
            .expect("run");
        run = r["id"].as_str().expect("run id").to_owned();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r: Value = client
                .get(format!("{addr}/api/v1/runs/{run}"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("run")
                .json()
                .await
                .expect("run");
            if r["status"] == "succeeded" {
                break;
            }
            assert!(Instant::now() < deadline, "run did not finish: {r}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mixed: Vec<String> = [
        "/api/v1/plans",
        "/api/v1/plans/shop",
        "/api/v1/runs?limit=20",
        "/api/v1/plans",
        &format!("/api/v1/runs/{run}"),
        "/api/v1/compliance",
        "/api/v1/plans/shop",
        "/api/v1/events?limit=20",
        "/api/v1/runs?plan=shop&limit=20",
        "/api/v1/plans/shop/recovery-points",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    // Warm the connection pool and the host's caches.
    let _ = drive(&client, &addr, &token, &mixed, rate, 2).await;
    let baseline = drive(
        &client,
        &addr,
        &token,
        &["/healthz".to_owned()],
        rate,
        seconds,
    )
    .await;
    let reads = drive(&client, &addr, &token, &mixed, rate, seconds).await;
    print("GET /healthz (baseline)", rate, seconds, &baseline);
    print("mixed authenticated reads", rate, seconds, &reads);
    let p99 = |r: &Report| r.histogram.value_at_quantile(0.99).max(1) as f64;
    println!(
        "api_load p99 ratio mixed reads / baseline: {:.2}",
        p99(&reads) / p99(&baseline)
    );

    let one = dashboard(&client, &addr, &token).await;
    let one_browser = in_browser(&addr, 1);
    let plans = env_number("REBOUND_LOAD_PLANS", 300);
    for i in 0..plans {
        let name = format!("shop-{i:04}");
        let put = client
            .put(format!("{addr}/api/v1/plans/{name}"))
            .bearer_auth(&token)
            .header("content-type", "application/yaml")
            .body(PLAN.replacen("name: shop", &format!("name: {name}"), 1))
            .send()
            .await
            .expect("plan");
        assert!(put.status().is_success(), "plan {name}: {}", put.status());
    }
    let many = dashboard(&client, &addr, &token).await;
    for (path, median) in dashboard_reads(&client, &addr, &token).await {
        println!(
            "dashboard read alone, {} plans: GET {path} median {:.1} ms",
            plans + 1,
            median.as_secs_f64() * 1e3
        );
    }
    let many_browser = in_browser(&addr, plans + 1);
    let median = |d: &[Duration]| d[d.len() / 2].as_secs_f64() * 1000.0;
    let max = |d: &[Duration]| d[d.len() - 1].as_secs_f64() * 1000.0;
    println!(
        "dashboard load, 1 plan: median {:.1} ms, max {:.1} ms ({} loads)",
        median(&one),
        max(&one),
        one.len()
    );
    println!(
        "dashboard load, {} plans: median {:.1} ms, max {:.1} ms ({} loads); ratio of medians {:.1}",
        plans + 1,
        median(&many),
        max(&many),
        many.len(),
        median(&many) / median(&one)
    );
    if let (Some(one), Some(many)) = (one_browser, many_browser) {
        let median = |ms: &[f64]| ms[ms.len() / 2];
        println!(
            "dashboard in Chromium, 1 plan: median {:.0} ms, max {:.0} ms ({} loads)",
            median(&one),
            one[one.len() - 1],
            one.len()
        );
        println!(
            "dashboard in Chromium, {} plans: median {:.0} ms, max {:.0} ms ({} loads); ratio of medians {:.1}",
            plans + 1,
            median(&many),
            many[many.len() - 1],
            many.len(),
            median(&many) / median(&one)
        );
    }
}

/// The dashboard's load times in Chromium with `plans` plans, sorted (ms);
/// `None`, with the reason printed, where the browser cannot run.
fn in_browser(addr: &str, plans: u64) -> Option<Vec<f64>> {
    if let Some(what) = browser::missing() {
        println!("dashboard in Chromium not measured: {what}");
        return None;
    }
    let out = std::process::Command::new("node")
        .arg("e2e/dashboard-load.mjs")
        .current_dir(browser::web_ui())
        .env("REBOUND_URL", addr)
        .env("REBOUND_ADMIN_PASSWORD", "load-test-admin")
        .env("REBOUND_CHROMIUM", browser::chromium())
        .env("REBOUND_PLANS", plans.to_string())
        .output()
        .expect("node");
    assert!(
        out.status.success(),
        "dashboard-load.mjs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    serde_json::from_value(line["ms"].clone()).ok()
}

/// The reads the dashboard sends when it loads.
const DASHBOARD: [&str; 4] = [
    "/api/v1/plans?limit=500",
    "/api/v1/compliance",
    "/api/v1/runs?limit=500",
    "/api/v1/events?limit=500",
];

/// One of the dashboard's reads, answered in full.
async fn dashboard_read(client: &reqwest::Client, addr: &str, token: &str, path: &str) {
    let r = client
        .get(format!("{addr}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("dashboard read");
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.bytes().await.expect("body");
}

/// Each of the dashboard's reads alone, 10 times: its median.
async fn dashboard_reads(
    client: &reqwest::Client,
    addr: &str,
    token: &str,
) -> Vec<(&'static str, Duration)> {
    let mut out = Vec::new();
    for path in DASHBOARD {
        let mut times = Vec::new();
        for _ in 0..10 {
            let started = Instant::now();
            dashboard_read(client, addr, token, path).await;
            times.push(started.elapsed());
        }
        times.sort();
        out.push((path, times[times.len() / 2]));
    }
    out
}

/// The dashboard's reads, sent together as the page sends them, 20 times:
/// each load's time until the last answer, sorted.
async fn dashboard(client: &reqwest::Client, addr: &str, token: &str) -> Vec<Duration> {
    let mut times = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let get = |path| dashboard_read(client, addr, token, path);
        tokio::join!(
            get(DASHBOARD[0]),
            get(DASHBOARD[1]),
            get(DASHBOARD[2]),
            get(DASHBOARD[3])
        );
        times.push(started.elapsed());
    }
    times.sort();
    times
}

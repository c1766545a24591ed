//! The admin web UI end to end: a real `rebound serve` (with the web UI
//! embedded by `rebound-ui`) driving the lab's example platform, and the
//! browser tests of `web-ui/e2e/` — node's test runner driving Debian's
//! Chromium through playwright-core — signing in, registering a site,
//! writing a plan, running a drill, approving a failback and checking what
//! a viewer is shown — and signing in through an OpenID provider
//! (node-oidc-provider, `web-ui/e2e/idp.mjs`, started here before the host,
//! which trusts it for browser sign-in) — from the web UI, and from the CLI
//! (`rebound login --oidc`, `web-ui/e2e/cli-login.test.mjs`).
//!
//! It needs node, `web-ui/node_modules` (npm ci), a built UI and Chromium
//! (`/usr/bin/chromium`, or `REBOUND_CHROMIUM`); `cargo xtask test` and CI
//! provide them. Without them the test says what is missing and passes,
//! unless `REBOUND_REQUIRE_BROWSER=1` (CI sets it).
//!
//! `cargo xtask screenshots` runs the ignored `screenshots` test: the same
//! host with a few plans and runs, photographed into `docs/ui/`.

#[path = "support/browser.rs"]
mod browser;
#[path = "support/host.rs"]
mod host;

use browser::{chromium, missing, web_ui};

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use rebound_lab::{ExampleOptions, ExampleSite};

const ADMIN_PASSWORD: &str = "correct-horse-battery";

/// A child process killed with the test.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Skip (or, where the browser is required, fail) when something is missing.
fn ready() -> bool {
    let Some(what) = missing() else {
        return true;
    };
    assert!(
        std::env::var("REBOUND_REQUIRE_BROWSER").as_deref() != Ok("1"),
        "REBOUND_REQUIRE_BROWSER=1 but {what}"
    );
    eprintln!("skipped: {what}");
    false
}

/// Two lab sites of the example platform and a host bound to the first
/// (`lab-a`, from its sites file); the second (`lab-b`) is left for the
/// tests to register.
struct Lab {
    _dir: tempfile::TempDir,
    _host: host::Host,
    _idp: Process,
    url: String,
    b: ExampleSite,
    _a: ExampleSite,
}

async fn lab(policy_seconds: &str) -> Lab {
    let dir = tempfile::tempdir().expect("tmp");
    let options = ExampleOptions::quick;
    let a = ExampleSite::start(options(rebound_lab::example::default_vms()))
        .await
        .expect("site a");
    let b = ExampleSite::start(options(Vec::new()))
        .await
        .expect("site b");
    // The host's address is chosen first: the provider must know where to
    // send the browser back.
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    let (idp, issuer) = start_idp(&format!("http://{listen}/")).await;
    std::fs::write(
        dir.path().join("rebound.toml"),
        format!(
            "[[api.auth.oidc]]\nissuer = \"{issuer}\"\naudience = \"rebound-api\"\n\
             jwks_url = \"{issuer}/jwks\"\nalgorithm = \"RS256\"\nclient_id = \"rebound-ui\"\n\
             name = \"Lab IdP\"\nscope = \"openid rebound\"\n"
        ),
    )
    .expect("config");
    // Only lab-a is bound; lab-b is left for the tests to register.
    let host = host::serve(
        dir.path(),
        &[("lab-a", &a)],
        &[
            "--config",
            "rebound.toml",
            "--listen",
            &listen,
            "--policy-seconds",
            policy_seconds,
        ],
        &[("REBOUND_ADMIN_PASSWORD", ADMIN_PASSWORD)],
        false,
    )
    .await;
    let url = host.url.clone();
    Lab {
        _dir: dir,
        _host: host,
        _idp: idp,
        url,
        b,
        _a: a,
    }
}

/// The browser tests' OpenID provider, redirecting to `ui`: the process
/// and its issuer URL.
async fn start_idp(ui: &str) -> (Process, String) {
    let mut child = Command::new("node")
        .arg("e2e/idp.mjs")
        .current_dir(web_ui())
        .env("REBOUND_UI_URL", ui)
        .stdout(Stdio::piped())
        .spawn()
        .expect("node e2e/idp.mjs");
    let stdout = child.stdout.take().expect("stdout");
    let process = Process(child);
    let issuer = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("idp on ") {
                std::thread::spawn(move || lines.for_each(drop));
                return url.to_owned();
            }
        }
        panic!("e2e/idp.mjs did not print its address");
    })
    .await
    .expect("join");
    (process, issuer)
}

/// Run a node script of web-ui/ against the lab; its output is shown.
async fn node(lab: &Lab, args: &[&str], extra: &[(&str, String)]) {
    let mut command = Command::new("node");
    command
        .args(args)
        .current_dir(web_ui())
        .env("REBOUND_URL", &lab.url)
        .env("REBOUND_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("REBOUND_CHROMIUM", chromium())
        .env("LAB_B_ENDPOINT", lab.b.endpoint())
        .env("LAB_B_TOKEN", &lab.b.token)
        .env("REBOUND_BIN", env!("CARGO_BIN_EXE_rebound"));
    for (k, v) in extra {
        command.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || command.output().expect("run node"))
        .await
        .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(out.status.success(), "node {args:?} failed: {}", out.status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_works_in_a_real_browser() {
    if !ready() {
        return;
    }
    let lab = lab("0").await;
    node(
        &lab,
        &[
            "--test",
            "--test-concurrency=1",
            "--test-reporter=spec",
            "e2e/",
        ],
        &[],
    )
    .await;
}

/// `cargo xtask screenshots`: the main pages, photographed into docs/ui/.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes docs/ui/*.png; run by cargo xtask screenshots"]
async fn screenshots() {
    if !ready() {
        return;
    }
    let lab = lab("2").await;
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/ui");
    node(
        &lab,
        &["scripts/screenshots.mjs"],
        &[("REBOUND_SCREENSHOTS", out.display().to_string())],
    )
    .await;
}

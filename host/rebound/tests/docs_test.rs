//! The docs' runnable examples: every ```sh block of
//! docs/plugin-authoring.md runs as written, in order, in a scratch folder
//! with the built `rebound` on PATH — from `rebound plugin new` through
//! `cargo build`, `rebound lab up` and the conformance kit to `rebound lab
//! down` — and `rebound serve` starts on its embedded SQLite default,
//! creates the bootstrap admin, and answers the admin's API calls with the
//! packaged plugin.

#[path = "support/http.rs"]
mod http;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use http::http;

fn plugin_dir() -> PathBuf {
    let dir = std::env::var_os("REBOUND_PLUGIN_DIR")
        .map(PathBuf::from)
        .expect("REBOUND_PLUGIN_DIR is set by `cargo xtask test`");
    assert!(
        dir.join("example/plugin.wasm").is_file(),
        "run `cargo xtask build-plugins` first"
    );
    dir
}

fn sh_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), text) => {
                block.push_str(text);
                block.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

/// This build's target folder (`<target>/debug/rebound`): the doc's
/// `cargo build` shares it, so the SDK's dependencies compile once.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_rebound"))
        .ancestors()
        .nth(2)
        .expect("the target folder")
        .to_owned()
}

/// Stops the lab the doc starts, whatever the test did.
struct Lab(PathBuf);

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_rebound"))
            .args(["lab", "down", "--dir"])
            .arg(&self.0)
            .output();
    }
}

fn run_docs(scratch: &Path) -> String {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/plugin-authoring.md"
    ))
    .expect("read docs");
    let blocks = sh_blocks(&doc);
    assert!(!blocks.is_empty(), "the doc has runnable examples");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_rebound"));
    let path = format!(
        "{}:{}",
        bin.parent().expect("bin dir").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut output = String::new();
    for block in blocks {
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &block])
            .current_dir(scratch)
            .env("PATH", &path)
            .env("REBOUND_PLUGIN_DIR", plugin_dir())
            .env("CARGO_TARGET_DIR", target_dir())
            .output()
            .expect("run bash");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "doc block failed:\n{block}\nstdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        output.push_str(&stdout);
    }
    output
}

#[test]
fn the_plugin_authoring_commands_work_as_written() {
    let scratch = tempfile::tempdir().expect("tmp");
    let _lab = Lab(scratch.path().join("mycloud/lab"));
    // Not a component an earlier run left: the one the doc's build makes.
    let _ = std::fs::remove_file(
        target_dir().join("wasm32-wasip2/release/rebound_plugin_mycloud.wasm"),
    );
    let output = run_docs(scratch.path());
    assert!(output.contains("mycloud@0.1.0 verified"), "{output}");
    assert!(output.contains(" 0 failed"), "{output}");
    assert!(output.contains("stopped the lab"), "{output}");
    assert!(output.contains("name:         example"), "{output}");
    assert!(output.contains("signed:       yes"), "{output}");

    // The same package refused under another publisher's key.
    let bin = env!("CARGO_BIN_EXE_rebound");
    let other = scratch.path().join("other");
    let status = Command::new(bin)
        .args(["plugin", "keygen", "--out"])
        .arg(&other)
        .status()
        .expect("keygen");
    assert!(status.success());
    let out = Command::new(bin)
        .args([
            "plugin",
            "inspect",
            "example-pkg",
            "--trusted-key",
            "other.pub",
        ])
        .current_dir(scratch.path())
        .output()
        .expect("inspect");
    assert!(!out.status.success(), "an untrusted signature must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("signature does not verify"), "{stderr}");

    // And `rebound serve` loads it and lists it.
    let mut server = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--plugins", "."])
        .args(["--trusted-key", "publisher.pub"])
        .env("REBOUND_ADMIN_PASSWORD", "docs-test-password")
        .current_dir(scratch.path())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let stderr = server.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("rebound serving on http://")
                .map(str::to_owned)
        })
        .expect("serve prints its address");
    let health = http(&addr, "GET", "/healthz", "", "");
    let ready = http(&addr, "GET", "/readyz", "", "");
    let anonymous = http(&addr, "GET", "/api/v1/plugins", "", "");
    let login = http(
        &addr,
        "POST",
        "/api/v1/auth/login",
        "",
        r#"{"username": "admin", "password": "docs-test-password"}"#,
    );
    let token = login
        .split("\"access_token\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_owned();
    let plugins = http(&addr, "GET", "/api/v1/plugins", &token, "");
    let missing = http(&addr, "POST", "/api/v1/plugins/nope/release", &token, "");
    let _ = server.kill();
    let _ = server.wait();
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(
        scratch.path().join("rebound.db").is_file(),
        "the embedded SQLite store is created on first start"
    );
    assert!(anonymous.starts_with("HTTP/1.1 401"), "{anonymous}");
    assert!(login.starts_with("HTTP/1.1 200"), "{login}");
    assert!(plugins.contains("\"name\":\"example\""), "{plugins}");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    assert!(missing.contains("application/problem+json"), "{missing}");
}

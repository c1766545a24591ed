//! `rebound lab up|status|down` as a user runs them: `up` starts the lab in
//! the background and prints every site's endpoint and credentials; each
//! site answers its platform's clients with them (the example API, Keystone,
//! the KubeVirt API over HTTPS with its CA and bearer token); `up` again
//! shows the same lab; the example plugin passes the conformance kit on the
//! sites of the lab's sites file, and `rebound serve` binds all of its
//! sites and finds each healthy through its plugin; `down` stops the
//! process and closes every port. And the refusals: a port in use, nothing
//! running.
//!
//! `cargo xtask build-plugins`, then `cargo test -p rebound --test lab_test`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

#[path = "support/kit.rs"]
mod kit_table;

use serde_json::Value;

fn rebound(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rebound"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run rebound")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Stops the lab of a folder whatever the test did, so no process leaks.
struct Lab(PathBuf);

impl Lab {
    fn arg(&self) -> &str {
        self.0.to_str().expect("utf-8 path")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_rebound"))
            .args(["lab", "down", "--dir"])
            .arg(&self.0)
            .output();
    }
}

/// A `rebound serve` under test, killed when dropped.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn site<'a>(state: &'a Value, name: &str) -> &'a Value {
    state["sites"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no site {name} in {state}"))
}

fn site_names(state: &Value) -> Vec<String> {
    state["sites"]
        .as_array()
        .expect("sites")
        .iter()
        .map(|s| s["name"].as_str().expect("name").to_owned())
        .collect()
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

/// Whether the process runs: a zombie has closed its ports and files, and
/// only waits for its parent (here init, since the lab is detached).
fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X')
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_up_serves_every_site_and_down_stops_them() {
    let scratch = tempfile::tempdir().expect("tmp");
    let lab = Lab(scratch.path().join("lab"));
    let dir = scratch.path().to_owned();

    let up = rebound(&dir, &["lab", "up", "--dir", lab.arg()]);
    assert!(up.status.success(), "{}", text(&up));
    let state: Value = serde_json::from_slice(
        &std::fs::read(lab.0.join("lab.json")).expect("lab up writes lab.json"),
    )
    .expect("lab.json");
    let stdout = String::from_utf8_lossy(&up.stdout).into_owned();
    // The AWS site runs moto from REBOUND_PYTHON's environment; without
    // it the lab comes up without that site and says why.
    let moto = rebound_lab::aws::moto_server(None).is_ok();
    let mut expected = vec![
        "example-a",
        "example-b",
        "openstack-east",
        "openstack-west",
        "kubevirt-a",
        "kubevirt-b",
        "ovirt-a",
        "ovirt-b",
    ];
    if moto {
        expected.extend(["aws-east", "aws-west"]);
    } else {
        assert!(
            String::from_utf8_lossy(&up.stderr).contains("no AWS site: "),
            "{}",
            text(&up)
        );
    }
    assert_eq!(site_names(&state), expected);
    for name in site_names(&state) {
        let name = name.as_str();
        let endpoint = site(&state, name)["endpoint"].as_str().expect("endpoint");
        assert!(
            stdout.contains(name) && stdout.contains(endpoint),
            "{name}: {stdout}"
        );
    }
    assert!(stdout.contains("sites.toml"), "{stdout}");
    // Every site takes guest writes at the URL it prints, and names what
    // it does not have.
    for name in site_names(&state) {
        let s = site(&state, &name);
        let url = s["guest_writes"].as_str().expect("guest_writes");
        assert!(stdout.contains(url), "{name}: {stdout}");
        let mut http = reqwest::Client::builder();
        if let Some(ca) = s["ca_file"].as_str() {
            let pem = std::fs::read(ca).expect("ca");
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"));
        }
        let answer = http
            .build()
            .expect("client")
            .post(url)
            .json(&serde_json::json!({"disk": "no-such-disk", "offset": 0, "length": 1}))
            .send()
            .await
            .expect("guest write");
        assert_eq!(answer.status(), reqwest::StatusCode::NOT_FOUND, "{name}");
        let body: Value = answer.json().await.expect("json");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("no-such-disk")),
            "{name}: {body}"
        );
    }
    let pid = state["pid"].as_u64().expect("pid");
    assert!(alive(pid), "the lab runs after `lab up` returned");

    // The oVirt engine: over HTTPS with its CA, SSO with the printed
    // password, then its VMs.
    let ovirt = site(&state, "ovirt-a");
    let engine = ovirt["config"]["endpoint"].as_str().expect("endpoint");
    assert!(engine.starts_with("https://"), "{engine}");
    let ca = std::fs::read(ovirt["ca_file"].as_str().expect("ca_file")).expect("ca");
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("pem"))
        .build()
        .expect("client");
    let token: Value = http
        .post(format!("{engine}/ovirt-engine/sso/oauth/token"))
        .header("accept", "application/json")
        .form(&[
            ("grant_type", "password"),
            ("scope", "ovirt-app-api"),
            ("username", ovirt["config"]["user"].as_str().expect("user")),
            (
                "password",
                ovirt["secrets"]["password"].as_str().expect("password"),
            ),
        ])
        .send()
        .await
        .expect("sso")
        .json()
        .await
        .expect("sso json");
    let vms = http
        .get(format!("{engine}/ovirt-engine/api/vms"))
        .bearer_auth(token["access_token"].as_str().expect("access token"))
        .send()
        .await
        .expect("vms")
        .text()
        .await
        .expect("vms xml");
    assert!(
        vms.contains("<name>web-1</name>") && vms.contains("<name>db-1</name>"),
        "{vms}"
    );

    // The example site, with its token.
    let http = reqwest::Client::new();
    let example = site(&state, "example-a");
    let health = http
        .get(format!(
            "{}/v1/health",
            example["endpoint"].as_str().expect("url")
        ))
        .bearer_auth(example["secrets"]["token"].as_str().expect("token"))
        .send()
        .await
        .expect("example health");
    assert_eq!(health.status(), 200);
    let vms: Value = http
        .get(format!(
            "{}/v1/vms",
            example["endpoint"].as_str().expect("url")
        ))
        .bearer_auth(example["secrets"]["token"].as_str().expect("token"))
        .send()
        .await
        .expect("vms")
        .json()
        .await
        .expect("vms json");
    assert_eq!(vms.as_array().map(Vec::len), Some(3), "{vms}");

    // Keystone issues a token for the printed user and password.
    let east = site(&state, "openstack-east");
    let auth = serde_json::json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": east["config"]["user"], "domain": {"name": "Default"},
            "password": east["secrets"]["password"]}}},
        "scope": {"project": {"name": east["config"]["project"], "domain": {"name": "Default"}}}}});
    let token = http
        .post(format!(
            "{}/auth/tokens",
            east["endpoint"].as_str().expect("url")
        ))
        .json(&auth)
        .send()
        .await
        .expect("keystone");
    assert_eq!(token.status(), 201);
    assert!(token.headers().contains_key("x-subject-token"));
    assert_eq!(east["workloads"], serde_json::json!(["db-1", "web-1"]));

    // The KubeVirt API over HTTPS: only with the lab's CA, and its token.
    let kv = site(&state, "kubevirt-a");
    let ca = std::fs::read(kv["ca_file"].as_str().expect("ca_file")).expect("ca");
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("pem"))
        .build()
        .expect("client");
    let kv_url = kv["endpoint"].as_str().expect("url");
    let kv_token = kv["secrets"]["token"].as_str().expect("token");
    let api = https
        .get(format!("{kv_url}/api"))
        .bearer_auth(kv_token)
        .send()
        .await
        .expect("kubevirt /api");
    assert_eq!(api.status(), 200);
    let vms: Value = https
        .get(format!(
            "{kv_url}/apis/kubevirt.io/v1/namespaces/prod/virtualmachines"
        ))
        .bearer_auth(kv_token)
        .send()
        .await
        .expect("vms")
        .json()
        .await
        .expect("vm list");
    assert_eq!(vms["items"].as_array().map(Vec::len), Some(3), "{vms}");
    assert!(
        reqwest::Client::new()
            .get(format!("{kv_url}/api"))
            .send()
            .await
            .is_err(),
        "the cluster's CA is its own"
    );

    // `up` again: the same lab, said so.
    let again = rebound(&dir, &["lab", "up", "--dir", lab.arg()]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already up"),
        "{}",
        text(&again)
    );
    assert!(
        String::from_utf8_lossy(&again.stdout).contains(example["endpoint"].as_str().expect("url")),
        "{}",
        text(&again)
    );
    let status = rebound(&dir, &["lab", "status", "--dir", lab.arg(), "-o", "json"]);
    assert!(status.status.success(), "{}", text(&status));
    let shown: Value = serde_json::from_slice(&status.stdout).expect("status -o json");
    assert_eq!(shown["pid"].as_u64(), Some(pid));

    // The example plugin passes the kit on the lab's sites file.
    rebound_runtime::testing::install(
        "example",
        &dir.join("example-pkg"),
        dir.join("publisher.pub"),
    );
    let sites = lab.0.join("sites.toml");
    let kit = tokio::task::spawn_blocking({
        let dir = dir.clone();
        let sites = sites.to_str().expect("utf-8").to_owned();
        move || {
            rebound(
                &dir,
                &[
                    "plugin",
                    "test",
                    "example-pkg",
                    "--sites",
                    &sites,
                    "--site",
                    "example-a",
                    "--trusted-key",
                    "publisher.pub",
                    "--timeout-secs",
                    "30",
                ],
            )
        }
    })
    .await
    .expect("join");
    assert!(kit.status.success(), "{}", text(&kit));
    let table = String::from_utf8_lossy(&kit.stdout);
    // The sites file is the lab's: the kit found the site's guest writes
    // in lab.json and checked against them.
    assert!(
        String::from_utf8_lossy(&kit.stderr).contains("/_lab/guest-writes"),
        "{}",
        text(&kit)
    );
    assert!(table.contains("covers the 3 guest write(s)"), "{table}");
    assert!(
        table.contains("made just before it, not the one just after"),
        "{table}"
    );
    for scenario in [
        "health",
        "inventory",
        "snapshot",
        "changed-blocks",
        "export-disk",
        "cleanup",
    ] {
        let row = kit_table::row(&table, scenario);
        assert!(row.contains("pass"), "{row}");
    }

    // `rebound serve` binds every site of the file to its plugin, and
    // each answers its plugin's health check.
    for plugin in ["example", "openstack", "kubevirt", "ovirt", "aws"] {
        rebound_runtime::testing::package(plugin)
            .write_dir(&dir.join("plugins").join(plugin))
            .expect("package");
    }
    let mut serve = Command::new(env!("CARGO_BIN_EXE_rebound"))
        .args(["serve", "--listen", "127.0.0.1:0", "--plugins", "plugins"])
        .args(["--trusted-key", "publisher.pub", "--sites"])
        .arg(&sites)
        .env("REBOUND_ADMIN_PASSWORD", "lab-test-password")
        .current_dir(&dir)
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let stderr = serve.stderr.take().expect("stderr");
    let serve = Serve(serve);
    let host = tokio::task::spawn_blocking(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("rebound serving on ").map(str::to_owned))
    })
    .await
    .expect("join")
    .expect("serve prints its address");
    let login: Value = http
        .post(format!("{host}/api/v1/auth/login"))
        .json(&serde_json::json!({"username": "admin", "password": "lab-test-password"}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("login json");
    let admin = login["access_token"].as_str().expect("token").to_owned();
    for name in site_names(&state) {
        let health: Value = http
            .get(format!("{host}/api/v1/sites/{name}/health"))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("site health")
            .json()
            .await
            .expect("health json");
        assert_eq!(health["serving"], true, "{name}: {health}");
    }
    drop(serve);

    // `down`: the process is gone, every port closed, the state removed.
    let ports: Vec<u16> = state["sites"]
        .as_array()
        .expect("sites")
        .iter()
        .flat_map(|s| {
            [s["endpoint"].as_str(), s["data_url"].as_str()]
                .into_iter()
                .flatten()
                .map(port_of)
        })
        .collect();
    let down = rebound(&dir, &["lab", "down", "--dir", lab.arg()]);
    assert!(down.status.success(), "{}", text(&down));
    let said = String::from_utf8_lossy(&down.stdout);
    assert!(
        said.contains("stopped") && said.contains("kubevirt-b"),
        "{said}"
    );
    assert!(!alive(pid), "the lab's process is gone");
    for port in ports {
        assert!(
            std::net::TcpStream::connect_timeout(
                &([127, 0, 0, 1], port).into(),
                Duration::from_secs(1)
            )
            .is_err(),
            "port {port} still open"
        );
    }
    assert!(!lab.0.join("lab.json").exists() && !sites.exists());
    assert!(lab.0.join("lab.log").exists(), "the log stays");

    // Nothing running now: `down` and `status` say so.
    let again = rebound(&dir, &["lab", "down", "--dir", lab.arg()]);
    assert_eq!(again.status.code(), Some(5), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("no lab is running"),
        "{}",
        text(&again)
    );
    let status = rebound(&dir, &["lab", "status", "--dir", lab.arg()]);
    assert_eq!(status.status.code(), Some(5), "{}", text(&status));
}

#[test]
fn a_port_in_use_is_refused_and_nothing_is_left_running() {
    let scratch = tempfile::tempdir().expect("tmp");
    let lab = Lab(scratch.path().join("lab"));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let up = rebound(
        scratch.path(),
        &[
            "lab",
            "up",
            "--dir",
            lab.arg(),
            "--sites",
            "example",
            "--port",
            &port,
        ],
    );
    assert_eq!(up.status.code(), Some(1), "{}", text(&up));
    let err = String::from_utf8_lossy(&up.stderr);
    assert!(
        err.contains(&format!("127.0.0.1:{port} is in use")) && err.contains("example-a"),
        "{err}"
    );
    assert!(!lab.0.join("lab.json").exists());

    // A folder that cannot be a lab's: a file stands where it would go.
    let file = scratch.path().join("file");
    std::fs::write(&file, "").expect("file");
    let up = rebound(
        scratch.path(),
        &["lab", "up", "--dir", "file/lab", "--sites", "example"],
    );
    assert_eq!(up.status.code(), Some(1), "{}", text(&up));
    assert!(
        String::from_utf8_lossy(&up.stderr).contains("cannot create the lab folder"),
        "{}",
        text(&up)
    );
}

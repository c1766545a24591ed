//! The CLI round trip against a real host: `rebound serve` drives runs
//! through the example plugin between two lab sites, and the CLI logs in,
//! applies a plan, replicates, drills with `--wait`, reads the drill's
//! report, and manages an API token — as an operator would.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rebound_lab::{ExampleOptions, ExampleSite};

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
approvals: { failover: true }
"#;

struct Host(Child);

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run the CLI in `dir`; returns (success, stdout, stderr).
fn cli(dir: &Path, server: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rebound"));
    command
        .args(args)
        .current_dir(dir)
        .env("REBOUND_SERVER", server)
        .env("REBOUND_CREDENTIALS", dir.join("credentials.json"))
        .env_remove("REBOUND_TOKEN");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("run rebound");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_apply_replicate_drill_and_report_through_the_cli() {
    let dir = tempfile::tempdir().expect("tmp");
    let options = |vms| ExampleOptions {
        snapshot_latency: Duration::from_millis(20),
        vms,
        ..ExampleOptions::default()
    };
    let a = ExampleSite::start(options(rebound_lab::example::default_vms()))
        .await
        .expect("site a");
    let b = ExampleSite::start(options(Vec::new()))
        .await
        .expect("site b");
    rebound_runtime::testing::package("example")
        .write_dir(&dir.path().join("plugins/example"))
        .expect("package");
    std::fs::write(
        dir.path().join("publisher.pub"),
        rebound_runtime::package::encode_verifying_key(
            &rebound_runtime::testing::publisher_key().verifying_key(),
        ),
    )
    .expect("key");
    let site = |name: &str, site: &ExampleSite, var: &str| {
        format!(
            "[sites.{name}]\nplugin = \"example\"\nconfig = {{ endpoint = \"{e}\" }}\n\
             secrets = {{ token = \"env:{var}\" }}\negress = [\"{e}\"]\n",
            e = site.endpoint()
        )
    };
    std::fs::write(
        dir.path().join("sites.toml"),
        site("lab-a", &a, "LAB_A_TOKEN") + &site("lab-b", &b, "LAB_B_TOKEN"),
    )
    .expect("sites");
    std::fs::write(dir.path().join("plan.yaml"), PLAN).expect("plan");

    let mut child = Command::new(env!("CARGO_BIN_EXE_rebound"))
        .args(["serve", "--listen", "127.0.0.1:0", "--policy-seconds", "0"])
        .args(["--plugins", "plugins", "--trusted-key", "publisher.pub"])
        .args(["--sites", "sites.toml"])
        // Its own compilation cache: the shared one is not this test's to write.
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .current_dir(dir.path())
        .env("LAB_A_TOKEN", &a.token)
        .env("LAB_B_TOKEN", &b.token)
        .env_remove("REBOUND_ADMIN_PASSWORD")
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let stderr = child.stderr.take().expect("stderr");
    let _host = Host(child);
    // The bootstrap admin's password is printed once, before the address.
    let (password, server) = tokio::task::spawn_blocking(move || {
        let mut password = None;
        let mut lines = BufReader::new(stderr).lines();
        for line in lines.by_ref().map_while(Result::ok) {
            if let Some(rest) = line.split("with password ").nth(1) {
                password = rest.split_whitespace().next().map(str::to_owned);
            }
            if let Some(addr) = line.strip_prefix("rebound serving on ") {
                // Keep draining so the host never blocks on a full pipe.
                std::thread::spawn(move || lines.for_each(drop));
                return (password.expect("password printed"), addr.to_owned());
            }
        }
        panic!("serve did not print its address");
    })
    .await
    .expect("join");

    let path = dir.path().to_owned();
    let run = move |args: &[&str], env: Vec<(&'static str, String)>| {
        let path = path.clone();
        let server = server.clone();
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        async move {
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
                cli(&path, &server, &args, &env)
            })
            .await
            .expect("join")
        }
    };

    let (ok, _, err) = run(&["get", "plans"], vec![]).await;
    assert!(!ok && err.contains("rebound login"), "{err}");
    let (ok, _, err) = run(&["login"], vec![("REBOUND_PASSWORD", "wrong".into())]).await;
    assert!(
        !ok && err.contains("username or password is wrong"),
        "{err}"
    );
    let (ok, _, err) = run(&["login"], vec![("REBOUND_PASSWORD", password)]).await;
    assert!(ok, "{err}");

    // Republish the loaded plugin: verified by the host and swapped in.
    let (ok, out, err) = run(&["plugin", "publish", "plugins/example"], vec![]).await;
    assert!(ok, "{err}");
    assert!(out.starts_with("plugin example "), "{out}");
    let (ok, out, err) = run(&["plugin", "list"], vec![]).await;
    assert!(ok && out.contains("\"example\""), "{out}{err}");

    let (ok, out, err) = run(&["apply", "-f", "plan.yaml"], vec![]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("plan 'shop' created (revision 1, \"protected\")"),
        "{out}"
    );

    let (ok, out, err) = run(&["run", "replication", "shop", "--wait"], vec![]).await;
    assert!(ok, "{out}\n{err}");
    let (ok, out, err) = run(
        &[
            "run",
            "drill",
            "shop",
            "--wait",
            "--idempotency-key",
            "drill-1",
        ],
        vec![],
    )
    .await;
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("succeeded: measured RTO"), "{out}");
    let id = out
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("run "))
        .and_then(|l| l.split(':').next())
        .expect("run id")
        .to_owned();

    // The same idempotency key returns the same run: nothing new starts.
    let (ok, again, err) = run(
        &["run", "drill", "shop", "--idempotency-key", "drill-1"],
        vec![],
    )
    .await;
    assert!(ok, "{err}");
    assert!(again.starts_with(&format!("run {id}:")), "{again}");

    let (ok, out, err) = run(&["get", "run", &id], vec![]).await;
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(report["status"], "succeeded");
    assert_eq!(report["report"]["workflow"], "drill");
    assert!(
        report["report"]["measured_rto_ms"].as_i64().is_some(),
        "{out}"
    );
    assert_eq!(report["report"]["rto_met"], true, "{out}");

    // A failover waits at its approval gate; cancelled, the plan is
    // protected again and the run can no longer be approved.
    let (ok, out, err) = run(&["run", "failback", "shop"], vec![]).await;
    assert!(!ok && err.contains("the plan is protected"), "{out}{err}");
    let (ok, out, err) = run(&["run", "failover", "shop"], vec![]).await;
    assert!(ok, "{err}");
    let failover = out
        .split_whitespace()
        .nth(1)
        .map(|id| id.trim_end_matches(':').to_owned())
        .expect("run id");
    // The host claims it and stops at the gate (a run it is driving could
    // not be cancelled).
    for _ in 0..100 {
        let (_, detail, _) = run(&["get", "run", &failover], vec![]).await;
        if detail.contains("\"status\": \"waiting_approval\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ok, out, err) = run(&["cancel", &failover], vec![]).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("run {failover}: cancelled"));
    let (ok, _, err) = run(&["approve", &failover], vec![]).await;
    assert!(!ok && err.contains("409"), "{err}");
    let (_, plan, _) = run(&["get", "plan", "shop"], vec![]).await;
    assert!(plan.contains("\"state\": \"protected\""), "{plan}");

    // An API token for a pipeline: shown once, works, revoked.
    let (ok, secret, err) = run(
        &["token", "create", "--name", "ci", "--role", "viewer"],
        vec![],
    )
    .await;
    assert!(ok, "{err}");
    let secret = secret.trim().to_owned();
    assert!(secret.starts_with("rbt_"), "{secret}");
    let (ok, out, err) = run(&["get", "plans"], vec![("REBOUND_TOKEN", secret.clone())]).await;
    assert!(ok && out.contains("\"shop\""), "{out}{err}");
    let (ok, _, err) = run(
        &["run", "drill", "shop"],
        vec![("REBOUND_TOKEN", secret.clone())],
    )
    .await;
    assert!(!ok && err.contains("viewer role"), "{err}");
    let (ok, list, _) = run(&["token", "list"], vec![]).await;
    assert!(ok && !list.contains(&secret));
    let token_id =
        serde_json::from_str::<serde_json::Value>(&list).expect("json")["items"][0]["id"]
            .as_str()
            .expect("id")
            .to_owned();
    let (ok, _, err) = run(&["token", "revoke", &token_id], vec![]).await;
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["get", "plans"], vec![("REBOUND_TOKEN", secret)]).await;
    assert!(!ok && err.contains("revoked"), "{err}");
}

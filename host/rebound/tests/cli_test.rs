//! The CLI round trip against a real host: `rebound serve` drives runs
//! through the example plugin between two lab sites, and the CLI logs in,
//! applies a plan, replicates (the disks moved by the data mover, each
//! transfer's figures printed), drills with `--wait`, reads the drill's
//! report, and manages an API token — as an operator would.

#[path = "support/host.rs"]
mod host;

use std::path::Path;
use std::process::Command;
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
replication: { mode: data_mover, interval: 5m }
objectives:
  failover: { rto: 30m, rpo: 15m }
  failback: { rto: 2h, rpo: 0s }
approvals: { failover: true }
"#;

/// Run the CLI in `dir`; returns (exit code, stdout, stderr).
fn cli(dir: &Path, server: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
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
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_apply_replicate_drill_and_report_through_the_cli() {
    let dir = tempfile::tempdir().expect("tmp");
    // Sites that keep disk data, so replication moves the disks through
    // the host's data mover; small disks keep the copies quick.
    let options = |vms, disks: &str| ExampleOptions {
        disk_dir: Some(dir.path().join(disks)),
        ..ExampleOptions::quick(vms)
    };
    let mut vms = rebound_lab::example::default_vms();
    for vm in &mut vms {
        vm["disks"][0]["size_bytes"] = serde_json::json!(4 << 20);
    }
    let a = ExampleSite::start(options(vms, "disks-a"))
        .await
        .expect("site a");
    let b = ExampleSite::start(options(Vec::new(), "disks-b"))
        .await
        .expect("site b");
    std::fs::write(dir.path().join("plan.yaml"), PLAN).expect("plan");
    let host = host::serve(
        dir.path(),
        &[("lab-a", &a), ("lab-b", &b)],
        &["--policy-seconds", "0"],
        &[],
        false,
    )
    .await;
    let password = host.password();
    let server = host.url.clone();

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

    let (code, _, err) = run(&["get", "plans"], vec![]).await;
    assert!(code == 4 && err.contains("rebound login"), "{code} {err}");
    let (code, _, err) = run(&["login"], vec![("REBOUND_PASSWORD", "wrong".into())]).await;
    assert!(
        code != 0 && err.contains("username or password is wrong"),
        "{err}"
    );
    // This host trusts no issuer for sign-in: `--oidc` says what to set.
    let (code, _, err) = run(&["login", "--oidc", "--no-browser"], vec![]).await;
    assert!(
        code == 3 && err.contains("the host offers no OIDC sign-in"),
        "{code} {err}"
    );
    let (code, _, err) = run(&["login"], vec![("REBOUND_PASSWORD", password)]).await;
    assert!(code == 0, "{err}");

    // A stored token in its last quarter hour is renewed by the next
    // command, and the file keeps the new one.
    let credentials = dir.path().join("credentials.json");
    let read = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(&credentials).expect("credentials"))
            .expect("json")
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let mut stored = read();
    assert!(
        stored["expires_at"]
            .as_u64()
            .is_some_and(|e| e > now + 3000),
        "{stored}"
    );
    stored["expires_at"] = serde_json::json!(now + 60);
    std::fs::write(&credentials, stored.to_string()).expect("write");
    let (code, _, err) = run(&["get", "plans"], vec![]).await;
    assert!(code == 0 && err.is_empty(), "{code} {err}");
    let renewed = read();
    assert!(
        renewed["expires_at"]
            .as_u64()
            .is_some_and(|e| e > now + 3000),
        "{renewed}"
    );

    // Republish the loaded plugin: verified by the host and swapped in.
    let (code, out, err) = run(&["plugin", "publish", "plugins/example"], vec![]).await;
    assert!(code == 0, "{err}");
    assert!(out.starts_with("plugin example "), "{out}");
    let (code, out, err) = run(&["plugin", "list"], vec![]).await;
    assert!(code == 0 && out.contains("example"), "{out}{err}");

    let (code, out, err) = run(&["apply", "-f", "plan.yaml"], vec![]).await;
    assert!(code == 0, "{err}");
    assert!(
        out.contains("plan 'shop' created (revision 1, \"protected\")"),
        "{out}"
    );
    assert!(
        out.contains("+name: shop"),
        "the diff shows what is new: {out}"
    );
    // Declarative: applying the same document again changes nothing.
    let (code, out, err) = run(&["apply", "-f", "plan.yaml"], vec![]).await;
    assert!(code == 0, "{err}");
    assert_eq!(out.trim(), "plan 'shop' unchanged (revision 1)");
    // A changed objective shows as a diff; --dry-run stores nothing.
    std::fs::write(
        dir.path().join("plan2.yaml"),
        PLAN.replace("rpo: 15m", "rpo: 10m"),
    )
    .expect("plan2");
    let (code, out, err) = run(&["apply", "-f", "plan2.yaml", "--dry-run"], vec![]).await;
    assert!(code == 0, "{err}");
    assert!(
        out.contains("-    rpo: 15m") && out.contains("+    rpo: 10m"),
        "{out}"
    );
    assert!(out.contains("(dry run: nothing changed)"), "{out}");
    // A document the host refuses: exit 3, the field named, nothing stored.
    std::fs::write(
        dir.path().join("bad.yaml"),
        PLAN.replace("rpo: 15m", "rpo: 10s"),
    )
    .expect("bad");
    let (code, _, err) = run(&["apply", "-f", "bad.yaml"], vec![]).await;
    assert!(
        code == 3 && err.contains("objectives.failover.rpo"),
        "{code} {err}"
    );
    // Valid on its face, but finer than the site keeps recovery points:
    // the host refuses it.
    std::fs::write(
        dir.path().join("fine.yaml"),
        PLAN.replace("rpo: 15m", "rpo: 30s")
            .replace("interval: 5m", "interval: 10s"),
    )
    .expect("fine");
    let (code, _, err) = run(&["apply", "-f", "fine.yaml"], vec![]).await;
    assert!(code == 3 && err.contains("422"), "{code} {err}");
    let (code, out, _) = run(&["get", "plans"], vec![]).await;
    assert!(
        code == 0 && out.contains("shop") && out.contains("protected"),
        "{out}"
    );
    assert!(out.contains("STATE"), "a table: {out}");
    let (code, _, err) = run(&["get", "plan", "nope"], vec![]).await;
    assert!(code == 5, "{code} {err}");

    let (code, out, err) = run(&["run", "replication", "shop", "--wait"], vec![]).await;
    assert!(code == 0, "{out}\n{err}");
    // Each disk transfer says what the data mover did, and the report
    // what the run moved altogether: the two workloads' 4 MiB disks.
    let transfers: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(" transfer ") && l.contains(" succeeded "))
        .collect();
    assert!(
        transfers.len() >= 2
            && transfers
                .iter()
                .all(|l| l.contains("of 4.00 MiB") && l.contains("every block verified")),
        "{out}"
    );
    assert!(
        out.contains("data   moved") && out.contains("of 8.00 MiB in 2 disk transfer(s)"),
        "{out}"
    );
    let (code, out, err) = run(
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
    assert!(code == 0, "{out}\n{err}");
    assert!(out.contains("succeeded\n  RTO measured"), "{out}");
    assert!(
        out.contains("\n  plugins example "),
        "the versions it ran on: {out}"
    );
    assert!(out.contains("met"), "{out}");
    let id = out
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("run "))
        .and_then(|l| l.split(':').next())
        .expect("run id")
        .to_owned();

    // The host's /metrics counts what it did: the runs by outcome, their
    // steps, the plugin calls and their waits for the site's max_calls.
    let metrics = reqwest::get(format!("{}/metrics", host.url))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for series in [
        "rebound_runs_total{workflow=\"replication\",outcome=\"succeeded\"} 1",
        "rebound_runs_total{workflow=\"drill\",outcome=\"succeeded\"} 1",
        "rebound_step_duration_seconds_count{action=\"materialize\",status=\"succeeded\"} ",
        "rebound_plugin_call_duration_seconds_count{plugin=\"example\",function=\"materialize\"} ",
        "rebound_site_call_wait_seconds_count{site=\"lab-a\"} ",
    ] {
        assert!(metrics.contains(series), "{series} not in\n{metrics}");
    }
    assert!(
        metrics.lines().any(
            |l| l.starts_with("rebound_plugin_calls_total{plugin=\"example\"")
                && l.contains("function=\"snapshot\",outcome=\"ok\"}")
        ),
        "{metrics}"
    );

    // The same idempotency key returns the same run: nothing new starts.
    let (code, again, err) = run(
        &["run", "drill", "shop", "--idempotency-key", "drill-1"],
        vec![],
    )
    .await;
    assert!(code == 0, "{err}");
    assert!(again.starts_with(&format!("run {id}:")), "{again}");

    let (code, out, err) = run(&["get", "run", &id, "-o", "json"], vec![]).await;
    assert!(code == 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(report["status"], "succeeded");
    assert_eq!(report["report"]["workflow"], "drill");
    assert!(
        report["report"]["measured_rto_ms"].as_i64().is_some(),
        "{out}"
    );
    assert_eq!(report["report"]["rto_met"], true, "{out}");

    // The runbook: the failover's steps now expected from the drill's.
    let (code, book, err) = run(&["runbook", "shop"], vec![]).await;
    assert!(code == 0, "{err}");
    assert!(book.starts_with("# Runbook: shop\n"), "{book}");
    assert!(
        book.contains(&format!("durations measured up to run `{id}`")),
        "{book}"
    );

    // A failover waits at its approval gate; cancelled, the plan is
    // protected again and the run can no longer be approved.
    let (code, out, err) = run(&["run", "failback", "shop"], vec![]).await;
    assert!(
        code != 0 && err.contains("the plan is protected"),
        "{out}{err}"
    );
    let (code, out, err) = run(&["run", "failover", "shop"], vec![]).await;
    assert!(code == 0, "{err}");
    let failover = out
        .split_whitespace()
        .nth(1)
        .map(|id| id.trim_end_matches(':').to_owned())
        .expect("run id");
    // The host claims it and stops at the gate (a run it is driving could
    // not be cancelled).
    for _ in 0..100 {
        let (_, detail, _) = run(&["get", "run", &failover], vec![]).await;
        if detail.contains("\nstatus: waiting_approval") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, out, err) = run(&["cancel", &failover], vec![]).await;
    assert!(code == 0, "{err}");
    assert_eq!(out.trim(), format!("run {failover}: cancelled"));
    let (code, _, err) = run(&["approve", &failover], vec![]).await;
    assert!(code == 3 && err.contains("409"), "{code} {err}");
    let (_, plan, _) = run(&["get", "plan", "shop", "-o", "yaml"], vec![]).await;
    assert!(plan.contains("state: protected"), "{plan}");

    // Unprotect (an admin's): every copy goes from both sites, the VMs
    // stay as they are, and nothing runs until the plan is applied again.
    assert!(b.disk_images() > 0 && !a.snapshots().is_empty());
    let vms = a.vms();
    let (code, out, err) = run(&["run", "unprotect", "shop", "--wait"], vec![]).await;
    assert!(code == 0, "{out}{err}");
    assert_eq!((b.disk_images(), b.snapshots().len()), (0, 0), "{out}");
    assert!(a.snapshots().is_empty(), "{:?}", a.snapshots());
    assert_eq!(a.vms(), vms);
    let (_, plan, _) = run(&["get", "plan", "shop", "-o", "yaml"], vec![]).await;
    assert!(plan.contains("state: unprotected"), "{plan}");
    let (code, _, err) = run(&["run", "drill", "shop"], vec![]).await;
    assert!(
        code == 3 && err.contains("apply the plan's document again"),
        "{code} {err}"
    );
    let (code, out, err) = run(&["apply", "-f", "plan.yaml"], vec![]).await;
    assert!(code == 0, "{out}{err}");
    let (_, plan, _) = run(&["get", "plan", "shop", "-o", "yaml"], vec![]).await;
    assert!(plan.contains("state: protected"), "{plan}");
    // A protected plan is not deleted: it says what to do first.
    let (code, _, err) = run(&["delete", "plan", "shop"], vec![]).await;
    assert!(
        code == 3 && err.contains("unprotect it first"),
        "{code} {err}"
    );

    // An API token for a pipeline: shown once, works, revoked.
    let (code, secret, err) = run(
        &["token", "create", "--name", "ci", "--role", "viewer"],
        vec![],
    )
    .await;
    assert!(code == 0, "{err}");
    let secret = secret.trim().to_owned();
    assert!(secret.starts_with("rbt_"), "{secret}");
    let (code, out, err) = run(&["get", "plans"], vec![("REBOUND_TOKEN", secret.clone())]).await;
    assert!(code == 0 && out.contains("shop"), "{out}{err}");
    let (code, _, err) = run(
        &["run", "drill", "shop"],
        vec![("REBOUND_TOKEN", secret.clone())],
    )
    .await;
    assert!(code == 4 && err.contains("viewer role"), "{code} {err}");
    let (code, list, _) = run(&["token", "list"], vec![]).await;
    assert!(
        code == 0 && !list.contains(&secret) && list.contains("ci"),
        "{list}"
    );
    let token_id = list
        .split_whitespace()
        .find(|w| w.starts_with("tok"))
        .expect("a token id in the table")
        .to_owned();
    let (code, _, err) = run(&["token", "revoke", &token_id], vec![]).await;
    assert!(code == 0, "{err}");
    let (code, _, err) = run(&["get", "plans"], vec![("REBOUND_TOKEN", secret)]).await;
    assert!(code != 0 && err.contains("revoked"), "{err}");

    // Unprotected, then deleted: gone from the list, its runs kept.
    let (code, out, err) = run(&["run", "unprotect", "shop", "--wait"], vec![]).await;
    assert!(code == 0, "{out}{err}");
    let (code, out, err) = run(&["delete", "plan", "shop"], vec![]).await;
    assert!(
        code == 0 && out.trim() == "plan 'shop' deleted",
        "{out}{err}"
    );
    let (_, plans, _) = run(&["get", "plans"], vec![]).await;
    assert!(!plans.contains("shop"), "{plans}");
    let (code, _, err) = run(&["get", "run", &id], vec![]).await;
    assert!(code == 0, "the drill's run stays: {err}");

    // Logging out forgets the session: the next command must log in again.
    let (code, _, err) = run(&["logout"], vec![]).await;
    assert!(code == 0 && err.contains("logged out of"), "{err}");
    assert!(!dir.path().join("credentials.json").exists());
    let (code, _, err) = run(&["get", "plans"], vec![]).await;
    assert!(code == 4 && err.contains("rebound login"), "{code} {err}");
    let (code, _, err) = run(&["logout"], vec![]).await;
    assert!(code == 0 && err.contains("nothing to do"), "{err}");
}

/// A site lost: `run failover --site` fails over every plan the site
/// serves through a real host, waits for each run's report, and names what
/// it leaves; repeated with its key it starts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_fails_over_every_plan_it_serves_through_the_cli() {
    let dir = tempfile::tempdir().expect("tmp");
    let options = ExampleOptions::quick;
    let a = ExampleSite::start(options(rebound_lab::example::default_vms()))
        .await
        .expect("site a");
    let b = ExampleSite::start(options(Vec::new()))
        .await
        .expect("site b");
    let c = ExampleSite::start(options(Vec::new()))
        .await
        .expect("site c");
    let plan = |name: &str, vm: &str| {
        format!(
            "name: {name}\nsource: lab-a\ntarget: lab-b\nworkloads:\n  - id: {vm}\n\
             replication: {{ mode: native, interval: 5m }}\n\
             objectives:\n  failover: {{ rto: 30m, rpo: 15m }}\n  failback: {{ rto: 2h, rpo: 0s }}\n"
        )
    };
    std::fs::write(dir.path().join("shop.yaml"), plan("shop", "vm-1")).expect("plan");
    std::fs::write(dir.path().join("crm.yaml"), plan("crm", "vm-2")).expect("plan");
    let host = host::serve(
        dir.path(),
        &[("lab-a", &a), ("lab-b", &b), ("lab-c", &c)],
        &["--policy-seconds", "0"],
        &[],
        false,
    )
    .await;
    let password = host.password();
    let (path, server) = (dir.path().to_owned(), host.url.clone());
    let run = move |args: &[&str]| {
        let (path, server) = (path.clone(), server.clone());
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let password = password.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                cli(&path, &server, &args, &[("REBOUND_PASSWORD", &password)])
            })
            .await
            .expect("join")
        }
    };
    let (code, _, err) = run(&["login"]).await;
    assert!(code == 0, "{err}");
    for plan in ["shop", "crm"] {
        let (code, out, err) = run(&["apply", "-f", &format!("{plan}.yaml")]).await;
        assert!(code == 0, "{out}{err}");
        let (code, out, err) = run(&["run", "replication", plan, "--wait"]).await;
        assert!(code == 0, "{out}{err}");
    }
    let (code, _, err) = run(&["run", "drill", "--site", "lab-a"]).await;
    assert!(
        code == 3 && err.contains("--site fails a whole site over: use it with `failover`"),
        "{code} {err}"
    );
    let (code, _, err) = run(&["run", "failover", "--site", "nowhere"]).await;
    assert!(
        code == 5 && err.contains("no site named 'nowhere'"),
        "{code} {err}"
    );
    // Previewed first: each plan's failover forecast, nothing started
    // (the runs counted below).
    let (code, out, err) = run(&["run", "failover", "--site", "lab-a", "--dry-run"]).await;
    assert!(code == 0, "{out}{err}");
    assert!(
        out.starts_with("dry run: failover of site 'lab-a' (nothing started), 2 plan(s)\n"),
        "{out}"
    );
    for plan in ["crm", "shop"] {
        assert!(
            out.contains(&format!("  plan '{plan}' → lab-b: RTO expected ")),
            "{out}"
        );
    }
    let (code, out, err) = run(&["run", "failover", "shop", "--dry-run"]).await;
    assert!(
        code == 0
            && out.starts_with("dry run: failover of plan 'shop' (nothing started)\n")
            && out.contains("(failover phase)\n"),
        "{out}{err}"
    );
    assert!(out.contains(" step   0 "), "{out}");
    let (code, _, err) = run(&["run", "failover", "shop", "--dry-run", "--wait"]).await;
    assert!(
        code == 2 && err.contains("cannot be used with"),
        "{code} {err}"
    );

    let (code, out, err) = run(&[
        "run",
        "failover",
        "--site",
        "lab-a",
        "--wait",
        "--idempotency-key",
        "outage-1",
    ])
    .await;
    assert!(code == 0, "{out}\n{err}");
    for plan in ["crm", "shop"] {
        assert!(
            out.contains(&format!(": failover of plan '{plan}'\n")),
            "{out}"
        );
    }
    assert_eq!(
        out.matches(" succeeded\n  RTO measured").count(),
        2,
        "{out}"
    );
    assert!(
        out.ends_with("site 'lab-a': 2 plan(s) failed over\n"),
        "{out}"
    );
    assert_eq!(b.vms().len(), 2, "both recovered on lab-b");
    // Again with the key: the same runs, nothing started.
    let (code, again, err) = run(&[
        "run",
        "failover",
        "--site",
        "lab-a",
        "--idempotency-key",
        "outage-1",
    ])
    .await;
    assert!(code == 0, "{err}");
    assert_eq!(
        again.matches("(started before under this key)").count(),
        2,
        "{again}"
    );
    let (_, runs, _) = run(&["get", "runs", "-o", "json"]).await;
    let runs: serde_json::Value = serde_json::from_str(&runs).expect("json");
    let failovers = runs["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|r| r["workflow"] == "failover")
        .count();
    assert_eq!(failovers, 2);
    // lab-b serves both plans now, failed over: nothing more to do there.
    let (code, out, err) = run(&["run", "failover", "--site", "lab-b"]).await;
    assert!(code == 0, "{err}");
    assert!(
        out.contains("plan 'shop' left as it is: cannot start failover: the plan is failed_over")
            && out.contains("site 'lab-b' serves no plan that can fail over now"),
        "{out}"
    );
    let (code, out, err) = run(&["run", "failover", "--site", "lab-b", "--dry-run"]).await;
    assert!(
        code == 0
            && out.contains(
                "  plan 'shop' would be left as it is: cannot start failover: the plan is \
                 failed_over"
            ),
        "{out}{err}"
    );
    let (code, _, err) = run(&["run", "failover", "--site", "nowhere", "--dry-run"]).await;
    assert!(code == 5, "{code} {err}");

    // lab-a is lost for good: the shop is protected from lab-b onto lab-c.
    let (code, _, err) = run(&["run", "reprotect", "shop", "--new-standby", "lab-c"]).await;
    assert!(
        code == 3 && err.contains("only a permanent_failover takes a new standby"),
        "{code} {err}"
    );
    assert!(c.snapshots().is_empty());
    // Previewed: the copies go to lab-c; nothing is started, and a site
    // the host binds no plugin for is refused.
    let (code, out, err) = run(&[
        "run",
        "permanent_failover",
        "shop",
        "--new-standby",
        "lab-c",
        "--dry-run",
    ])
    .await;
    assert!(code == 0 && out.contains("lab-b → lab-c"), "{out}\n{err}");
    let (code, _, err) = run(&[
        "run",
        "permanent_failover",
        "shop",
        "--new-standby",
        "nowhere",
        "--dry-run",
    ])
    .await;
    assert!(
        code == 3 && err.contains("no site named 'nowhere'"),
        "{code} {err}"
    );
    assert!(c.snapshots().is_empty());
    let (code, out, err) = run(&[
        "run",
        "permanent_failover",
        "shop",
        "--new-standby",
        "lab-c",
        "--wait",
    ])
    .await;
    assert!(code == 0, "{out}\n{err}");
    assert!(
        out.contains("lab-b → lab-c"),
        "the copy goes to lab-c: {out}"
    );
    let (_, plan, _) = run(&["get", "plan", "shop", "-o", "yaml"]).await;
    assert!(
        plan.contains("state: protected")
            && plan.contains("primary: lab-b")
            && plan.contains("standby: lab-c"),
        "{plan}"
    );
    assert!(!c.snapshots().is_empty(), "a copy at lab-c");
}

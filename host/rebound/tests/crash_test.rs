//! Crash safety of real host processes. `rebound serve` drives round trips
//! (replication, failover, reprotect, failback, again and again) of a plan through the
//! example wasm plugin against two simulated sites, and the test kills the
//! host with SIGKILL at a random point of every run: after a random number
//! of the run's steps finished, plus a random delay. A fresh host takes the
//! run over after the lease expires. Every run must finish, the plan must
//! end each workflow in the right lifecycle state, and no mutating request
//! may have reached a site twice under one idempotency key.
//!
//! The points come from a seed printed at the start; `REBOUND_CRASH_SEED`
//! replays a run of the test, `REBOUND_CRASH_TRIALS` sets how many failovers
//! and failbacks are killed (at least 30 by default).
//!
//! On PostgreSQL two hosts run at once and the one holding the run is the
//! one killed; the other takes the run over. There the plan replicates
//! through the data mover (the sites keep real disk data), so kills land in
//! exports, imports and copies too, and at the end every disk must hold
//! exactly the data it started with.
//!
//! A failover that fails at a health gate is killed anywhere too, its
//! compensation included (fence the standbys, unfence the primary, remove
//! the standbys): it still ends failed with the plan protected, the
//! primary serving and nothing left on the standby.
//!
//! The same harness shows a real host's policy engine scheduling the
//! replication a protected plan needs to meet its RPO.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rebound_domain::{PlanDocument, PlanState, Workflow};
use rebound_lab::{ExampleOptions, ExampleSite};
use rebound_store::{RunStatus, StepStatus, Store};

const PLAN: &str = r#"
name: shop
source: lab-a
target: lab-b
workloads:
  - id: vm-3
  - id: vm-2
    depends_on: [vm-3]
  - id: vm-1
    depends_on: [vm-2]
replication: { mode: native, interval: 5m }
objectives:
  failover: { rto: 30m, rpo: 15m }
  failback: { rto: 2h, rpo: 0s }
network_mapping:
  - { source: prod-net, target: dr-net }
redirect:
  target: { kind: route, route: shop/www }
  canary: [10, 100]
"#;

/// A run's lease: how long a killed host's run waits for a successor.
const LEASE_SECONDS: &str = "1";

struct Lab {
    dir: tempfile::TempDir,
    a: ExampleSite,
    b: ExampleSite,
    store_url: String,
    store: Store,
    /// Live hosts by owner name.
    hosts: Vec<(String, Child)>,
    started: usize,
    /// `--lease-seconds` of the hosts started next.
    lease_seconds: &'static str,
}

impl Lab {
    /// Two example sites and a plan between them; with `data_mover` the
    /// sites keep real disk data (64 MiB disks) and the plan replicates
    /// through the host's data mover.
    async fn new(store_url: String, data_mover: bool) -> Self {
        Self::with_latency(store_url, data_mover, Duration::ZERO).await
    }

    /// [`Lab::new`] with sites adding `api_latency` to every request.
    async fn with_latency(store_url: String, data_mover: bool, api_latency: Duration) -> Self {
        Self::build(store_url, data_mover, api_latency, false).await
    }

    /// [`Lab::new`] whose plan gates app-1 on its HTTP health check (1 s),
    /// the VMs' guests answering on loopback addresses.
    async fn gated(store_url: String) -> Self {
        Self::build(store_url, false, Duration::ZERO, true).await
    }

    async fn build(
        store_url: String,
        data_mover: bool,
        api_latency: Duration,
        gated: bool,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let options = |vms, name: &str| ExampleOptions {
            snapshot_latency: Duration::from_millis(30),
            api_latency,
            vms,
            disk_dir: data_mover.then(|| dir.path().join(name)),
            guests: gated,
            ..ExampleOptions::default()
        };
        let mut vms = rebound_lab::example::default_vms();
        if data_mover {
            for vm in &mut vms {
                vm["disks"][0]["size_bytes"] = serde_json::json!(64 << 20);
            }
        }
        let a = ExampleSite::start(options(vms, "disks-a"))
            .await
            .expect("site a");
        let b = ExampleSite::start(options(Vec::new(), "disks-b"))
            .await
            .expect("site b");
        // The signed example plugin, the key that trusts it, and the sites.
        rebound_runtime::testing::install(
            "example",
            &dir.path().join("plugins/example"),
            dir.path().join("publisher.pub"),
        );
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
        let store = Store::connect(&store_url).await.expect("store");
        let mut plan = if data_mover {
            PLAN.replace("mode: native", "mode: data_mover")
        } else {
            PLAN.to_owned()
        };
        if gated {
            plan = plan.replace(
                "    depends_on: [vm-3]\n",
                "    depends_on: [vm-3]\n    health_gate: { check: http, port: 8080, path: /healthz, expect_status: 200, timeout: 1s }\n",
            );
        }
        store
            .put_plan(&PlanDocument::from_yaml(&plan).expect("plan"), "operator")
            .await
            .expect("put plan");
        Self {
            dir,
            a,
            b,
            store_url,
            store,
            hosts: Vec::new(),
            started: 0,
            lease_seconds: LEASE_SECONDS,
        }
    }

    /// Start one more host process.
    fn start_host(&mut self) {
        self.start_host_with(&["--policy-seconds", "0"]);
    }

    /// Start one more host process with extra `serve` arguments.
    fn start_host_with(&mut self, extra: &[&str]) {
        self.started += 1;
        let owner = format!("host-{}", self.started);
        let dir = self.dir.path();
        let log = std::fs::File::create(dir.join(format!("{owner}.log"))).expect("log");
        let out = log.try_clone().expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_rebound"))
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--store", &self.store_url])
            .arg("--plugins")
            .arg(dir.join("plugins"))
            .arg("--trusted-key")
            .arg(dir.join("publisher.pub"))
            .arg("--sites")
            .arg(dir.join("sites.toml"))
            .arg("--cache-dir")
            .arg(rebound_runtime::testing::cache_dir())
            .arg("--seal-key-file")
            .arg(dir.join("seal.key"))
            .args(["--owner", &owner, "--lease-seconds", self.lease_seconds])
            .args(["--workers", "1"])
            .args(extra)
            .env("LAB_A_TOKEN", &self.a.token)
            .env("LAB_B_TOKEN", &self.b.token)
            .env("RUST_LOG", "info")
            .stdout(out)
            .stderr(log)
            .spawn()
            .expect("start rebound serve");
        self.hosts.push((owner, child));
    }

    /// SIGKILL the host holding a run's lease (`host-N/worker`), or the
    /// first one when no host holds it.
    fn kill(&mut self, holder: Option<&str>) -> String {
        let owner = holder.and_then(|o| o.split('/').next());
        let index = self
            .hosts
            .iter()
            .position(|(name, _)| Some(name.as_str()) == owner)
            .unwrap_or(0);
        let (name, mut child) = self.hosts.remove(index);
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        format!("{name}, pid {}", child.id())
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for n in 1..=self.started {
            let path = self.dir.path().join(format!("host-{n}.log"));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("--- host-{n} (last lines)\n"));
            for line in tail.iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, host) in &mut self.hosts {
            let _ = host.kill();
            let _ = host.wait();
        }
    }
}

fn seed() -> u64 {
    std::env::var("REBOUND_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

fn trials() -> usize {
    std::env::var("REBOUND_CRASH_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30)
}

fn expected(workflow: Workflow) -> PlanState {
    match workflow {
        Workflow::Failover => PlanState::FailedOver,
        Workflow::Reprotect => PlanState::ReadyForFailback,
        _ => PlanState::Protected,
    }
}

/// Enqueue `workflow`, kill the host holding it at a random point, let the
/// survivors (and a fresh host) finish it, and check the outcome.
async fn killed_run(
    lab: &mut Lab,
    rng: &mut StdRng,
    trial: usize,
    workflow: Workflow,
    hosts_alive: usize,
) {
    killed_run_ending(lab, rng, trial, workflow, hosts_alive, RunStatus::Succeeded).await;
}

/// [`killed_run`] of a run that must end `ends` (a failed one is
/// compensated: the plan stays where it was, protected).
async fn killed_run_ending(
    lab: &mut Lab,
    rng: &mut StdRng,
    trial: usize,
    workflow: Workflow,
    hosts_alive: usize,
    ends: RunStatus,
) {
    let run = rebound_engine::trigger(&lab.store, "shop", workflow, None, "operator")
        .await
        .unwrap_or_else(|e| panic!("trial {trial}: start {workflow}: {e}"));
    let steps = lab.store.steps(&run.id).await.expect("steps");
    if steps.iter().any(|s| s.input["action"] == "approval") {
        // Approved as it is triggered (the operator's "approve now").
        lab.store
            .approve(&run.id, "operator")
            .await
            .expect("approve");
    }
    // The point: after `after` steps finished, then `delay`.
    let after = rng.gen_range(0..=steps.len());
    let delay = Duration::from_millis(rng.gen_range(0..40));
    let deadline = Instant::now() + Duration::from_secs(60);
    let holder = loop {
        let record = lab.store.run(&run.id).await.expect("run");
        let done = lab
            .store
            .steps(&run.id)
            .await
            .expect("steps")
            .iter()
            .filter(|s| s.status == StepStatus::Succeeded)
            .count();
        let finished = !matches!(record.status, RunStatus::Pending | RunStatus::Running);
        if (done >= after && record.lease_owner.is_some()) || finished {
            break record.lease_owner;
        }
        assert!(
            Instant::now() < deadline,
            "trial {trial}: {workflow} stalled before step {after}\n{}",
            lab.logs()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    tokio::time::sleep(delay).await;
    let killed = lab.kill(holder.as_deref());
    let status_at_kill = lab.store.run(&run.id).await.expect("run").status;
    let finished_before_kill = !matches!(status_at_kill, RunStatus::Pending | RunStatus::Running);
    let done = lab
        .store
        .steps(&run.id)
        .await
        .expect("steps")
        .iter()
        .filter(|s| s.status == StepStatus::Succeeded)
        .count();
    eprintln!(
        "trial {trial}: {workflow}: killed {killed} (lease {}) at {after} steps + {delay:?}; {done}/{} steps had finished",
        holder.as_deref().unwrap_or("unclaimed"),
        steps.len()
    );
    while lab.hosts.len() < hosts_alive {
        lab.start_host();
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let record = lab.store.run(&run.id).await.expect("run");
        match record.status {
            status if status == ends => break,
            RunStatus::Pending | RunStatus::Running => {}
            other => panic!(
                "trial {trial}: {workflow} ended {other:?}: {:#?}\n{}",
                lab.store
                    .steps(&run.id)
                    .await
                    .expect("steps")
                    .iter()
                    .map(|s| (s.seq, &s.name, s.status, &s.error))
                    .collect::<Vec<_>>(),
                lab.logs()
            ),
        }
        assert!(
            Instant::now() < deadline,
            "trial {trial}: {workflow} did not finish after the kill\n{}",
            lab.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Who drove the run, in claim order: the last is a host alive after
    // the kill.
    let claims: Vec<String> = lab
        .store
        .audit_log(1000)
        .await
        .expect("audit")
        .into_iter()
        .rev()
        .filter(|e| e.action == "run.claim" && e.target == run.id)
        .map(|e| e.principal)
        .collect();
    eprintln!("    claimed by {}", claims.join(" → "));
    if let (Some(killed), false) = (holder, finished_before_kill) {
        assert_ne!(
            claims.last(),
            Some(&killed),
            "trial {trial}: the killed host finished the run"
        );
    }
    let state = lab.store.plan("shop").await.expect("plan").lifecycle.state;
    let expected = if ends == RunStatus::Succeeded {
        expected(workflow)
    } else {
        PlanState::Protected
    };
    assert_eq!(state, expected, "trial {trial}: after {workflow}");
}

/// No mutating request reached a site twice under one key.
fn assert_no_repeats(lab: &Lab) {
    for (name, site) in [("lab-a", &lab.a), ("lab-b", &lab.b)] {
        let effects = site.effects();
        assert!(!effects.is_empty(), "{name} saw no side effects at all");
        let repeated: Vec<_> = effects.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            repeated.is_empty(),
            "{name} repeated side effects: {repeated:?}"
        );
    }
}

async fn round_trips(store_url: String, hosts_alive: usize, killed: usize, data_mover: bool) {
    let seed = seed();
    eprintln!("crash test seed {seed} (replay with REBOUND_CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut lab = Lab::new(store_url, data_mover).await;
    let workloads = ["vm-1", "vm-2", "vm-3"];
    let original: Vec<Vec<u8>> = if data_mover {
        workloads
            .iter()
            .map(|w| lab.a.read_disk(w, 0).expect("disk"))
            .collect()
    } else {
        Vec::new()
    };
    for _ in 0..hosts_alive {
        lab.start_host();
    }
    let mut trial = 0;
    while trial < killed {
        // A replication cycle keeps the standby's recovery points fresh
        // (the policy engine's job in production).
        for workflow in [
            Workflow::Replication,
            Workflow::Failover,
            Workflow::Reprotect,
            Workflow::Failback,
        ] {
            killed_run(&mut lab, &mut rng, trial, workflow, hosts_alive).await;
            if matches!(workflow, Workflow::Failover | Workflow::Failback) {
                trial += 1;
            }
        }
    }
    assert_no_repeats(&lab);
    // The workloads serve from the original site again, each once.
    let serving: Vec<_> = lab
        .a
        .vms()
        .into_iter()
        .filter(|vm| vm["power"] == "running")
        .collect();
    assert_eq!(serving.len(), 3, "running on lab-a: {serving:#?}");
    // Through every kill, export, import and copy, the data came back
    // unchanged, block for block.
    for (workload, data) in workloads.iter().zip(&original) {
        let vm = serving
            .iter()
            .find(|vm| vm["labels"]["rebound/workload"] == *workload)
            .unwrap_or_else(|| panic!("{workload} serving on lab-a: {serving:#?}"));
        let now = lab
            .a
            .read_disk(vm["id"].as_str().expect("id"), 0)
            .expect("disk");
        assert!(now == *data, "{workload}: the data changed on the way");
    }
    if data_mover {
        assert_eq!(lab.a.open_transfers() + lab.b.open_transfers(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_anywhere_in_failover_and_failback_on_sqlite() {
    let dir = tempfile::tempdir().expect("tmp");
    let url = format!("sqlite://{}", dir.path().join("rebound.db").display());
    round_trips(url, 1, trials(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_lease_holder_of_two_hosts_on_postgres() {
    let Some(url) = rebound_store::testing::fresh_postgres_url()
        .await
        .expect("postgres")
    else {
        return;
    };
    round_trips(url, 2, trials() / 3, true).await;
}

/// A failover that fails (app-1 answers 503 at its health gate on the
/// standby) is compensated — the standbys fenced, the primary unfenced,
/// the standbys removed — and the host is killed anywhere in it,
/// compensation included. Every time the run still ends failed with the
/// plan protected, the primary serving, nothing left on the standby, and
/// no mutating request repeated under one key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_anywhere_in_a_compensated_failover() {
    let seed = seed();
    eprintln!("crash test seed {seed} (replay with REBOUND_CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tmp");
    let url = format!("sqlite://{}", dir.path().join("rebound.db").display());
    let mut lab = Lab::gated(url).await;
    lab.start_host();
    killed_run(&mut lab, &mut rng, 0, Workflow::Replication, 1).await;
    lab.b.set_service_status("app-1", 8080, 503);
    for trial in 1..=(trials() / 3).max(1) {
        killed_run_ending(
            &mut lab,
            &mut rng,
            trial,
            Workflow::Failover,
            1,
            RunStatus::Failed,
        )
        .await;
        let left = lab.b.vms();
        assert!(left.is_empty(), "trial {trial}: left on lab-b: {left:#?}");
        let primary = lab.a.vms();
        assert!(
            primary
                .iter()
                .all(|vm| vm["power"] == "running" && vm["fenced"] == false),
            "trial {trial}: the primary serves again: {primary:#?}"
        );
    }
    assert_no_repeats(&lab);
}

/// Wait for `run` to succeed (within a minute and a half).
async fn finished(lab: &Lab, run: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match lab.store.run(run).await.expect("run").status {
            RunStatus::Succeeded => return,
            RunStatus::Pending | RunStatus::Running => {}
            other => panic!("run {run} ended {other:?}\n{}", lab.logs()),
        }
        assert!(
            Instant::now() < deadline,
            "run {run} did not finish\n{}",
            lab.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A host stopped the way systemd and Kubernetes stop it (SIGTERM) hands
/// its runs over: it stops driving a failover mid-way and releases the
/// lease, so a new host resumes the run at once — here the lease is ten
/// minutes, so without the release the run would wait that long — and no
/// side effect is repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_host_hands_its_run_over_at_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let url = format!("sqlite://{}", dir.path().join("rebound.db").display());
    let mut lab = Lab::with_latency(url, false, Duration::from_millis(150)).await;
    lab.lease_seconds = "600";
    lab.start_host();
    let replication =
        rebound_engine::trigger(&lab.store, "shop", Workflow::Replication, None, "operator")
            .await
            .expect("replicate");
    finished(&lab, &replication.id).await;

    let run = rebound_engine::trigger(&lab.store, "shop", Workflow::Failover, None, "operator")
        .await
        .expect("fail over");
    if lab
        .store
        .steps(&run.id)
        .await
        .expect("steps")
        .iter()
        .any(|s| s.input["action"] == "approval")
    {
        lab.store
            .approve(&run.id, "operator")
            .await
            .expect("approve");
    }
    // Mid-way: a step done, the run leased.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let record = lab.store.run(&run.id).await.expect("run");
        let done = lab
            .store
            .steps(&run.id)
            .await
            .expect("steps")
            .iter()
            .filter(|s| s.status == StepStatus::Succeeded)
            .count();
        if done >= 2 && record.lease_owner.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "no progress\n{}", lab.logs());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (owner, mut host) = lab.hosts.remove(0);
    let term = Command::new("kill")
        .args(["-TERM", &host.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let status = host.wait().expect("the host stops");
    assert!(
        status.success(),
        "stopped cleanly: {status}\n{}",
        lab.logs()
    );

    let record = lab.store.run(&run.id).await.expect("run");
    assert!(
        matches!(record.status, RunStatus::Pending | RunStatus::Running),
        "the failover was still under way when the host stopped: {:?}",
        record.status
    );
    assert!(
        record
            .lease_expires_at_ms
            .is_some_and(|t| t < rebound_engine::now_ms()),
        "the lease was released: {record:?}"
    );
    lab.start_host();
    finished(&lab, &run.id).await;
    let trail: Vec<(String, String)> = lab
        .store
        .audit_log(1000)
        .await
        .expect("audit")
        .into_iter()
        .rev()
        .filter(|e| e.target == run.id && e.action.starts_with("run."))
        .map(|e| (e.action, e.principal))
        .collect();
    let released = trail
        .iter()
        .position(|(a, p)| a == "run.release" && p == &format!("{owner}/0"))
        .unwrap_or_else(|| panic!("the stopping host released the run: {trail:?}"));
    assert_eq!(
        trail.last(),
        Some(&("run.claim".to_owned(), "host-2/0".to_owned())),
        "the new host finished it: {trail:?}"
    );
    assert!(released < trail.len() - 1);
    assert_eq!(
        lab.store.plan("shop").await.expect("plan").lifecycle.state,
        PlanState::FailedOver
    );
    assert_no_repeats(&lab);
}

/// The policy engine of a real host keeps a protected plan within its RPO:
/// with no recovery point the plan is in breach, the host schedules a
/// replication cycle, drives it through the plugin, and the breach ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_engine_schedules_replication_until_the_rpo_is_met() {
    let dir = tempfile::tempdir().expect("tmp");
    let url = format!("sqlite://{}", dir.path().join("rebound.db").display());
    let mut lab = Lab::new(url, false).await;
    // The test enqueues no run: the policy does (the plan starts protected).
    lab.start_host_with(&["--policy-seconds", "0.2"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let kinds: Vec<String> = lab
            .store
            .events(Some("shop"), &[], 50)
            .await
            .expect("events")
            .into_iter()
            .rev()
            .map(|e| e.kind)
            .collect();
        if kinds.iter().any(|k| k == "rpo.met") {
            assert_eq!(
                kinds[..3],
                ["rpo.breach", "replication.scheduled", "rpo.met"],
                "{kinds:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "events so far: {kinds:?}\n{}",
            lab.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let runs = lab.store.runs_of("shop").await.expect("runs");
    assert!(
        runs.iter()
            .any(|r| r.workflow == Workflow::Replication && r.status == RunStatus::Succeeded),
        "{runs:#?}"
    );
    for w in ["vm-1", "vm-2", "vm-3"] {
        let point = lab
            .store
            .latest_recovery_point("shop", w, "lab-b")
            .await
            .expect("point");
        assert!(point.is_some(), "no recovery point of {w} at lab-b");
    }
}

//! The whole round trip through the real example plugin (WebAssembly, in
//! the sandbox) against two simulated example sites: a replication cycle,
//! failover, reprotect, a drill, failback, then a migration and its commit
//! — on SQLite and PostgreSQL. Every mutating request the sites served is
//! counted by idempotency key, and none may have been served twice. The
//! sites play their VMs' guests, so the plan's health gates probe real
//! ports: the database's TCP port, the application's HTTP health check.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use rebound_domain::{Phase, PlanDocument, PlanState, Workflow};
use rebound_engine::{
    BoundSite, DRILL_LABEL, DRILL_LEFTOVERS, DRILL_LEFTOVERS_REMOVED, EPOCH_LABEL, Executor,
    ExecutorConfig, HookPolicy, LEFT_BY, Outcome, PluginSteps, Progress, RunReport, STANDBYS_KEPT,
    Started, StepError, StepRunner, WORKLOAD_LABEL,
};
use rebound_lab::{ExampleOptions, ExampleSite};
use rebound_runtime::SiteGrant;
use rebound_store::{StepRecord, StepStatus, Store};
use serde_json::{Value, json};

const PLAN: &str = r#"
name: shop
source: lab-a
target: lab-b
workloads:
  - id: vm-3
    health_gate: { check: tcp, port: 5432, timeout: 30s }
  - id: vm-2
    depends_on: [vm-3]
    health_gate: { check: http, port: 8080, path: /healthz, expect_status: 200, timeout: GATE }
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

/// The plan, its application's gate given `gate` to pass.
fn plan(gate: &str) -> PlanDocument {
    PlanDocument::from_yaml(&PLAN.replace("GATE", gate)).expect("plan")
}

struct Lab {
    a: Arc<ExampleSite>,
    b: Arc<ExampleSite>,
    steps: Arc<PluginSteps>,
    plugin: Arc<rebound_runtime::Plugin>,
    runtime: Arc<rebound_runtime::Runtime>,
}

/// An example site with `vms`, playing their guests, each API request
/// answered after `api_latency`.
async fn site(vms: Vec<Value>, api_latency: Duration) -> ExampleSite {
    ExampleSite::start(ExampleOptions {
        snapshot_latency: Duration::from_millis(60),
        api_latency,
        vms,
        guests: true,
        ..ExampleOptions::default()
    })
    .await
    .expect("site")
}

fn grant(site: &ExampleSite, name: &str) -> SiteGrant {
    SiteGrant::new(name)
        .config("endpoint", &site.endpoint())
        .secret("token", &site.token)
        .grant(&site.endpoint())
        .expect("grant")
}

async fn lab(store: &Store) -> Lab {
    lab_with(store, "example").await
}

/// The two sites through the built plugin `plugin` (the example plugin,
/// or its build against the contract 0.1).
async fn lab_with(store: &Store, plugin: &str) -> Lab {
    lab_hooked(store, plugin, HookPolicy::default()).await
}

/// The same, the plans' hooks allowed what `hooks` allows.
async fn lab_hooked(store: &Store, plugin: &str, hooks: HookPolicy) -> Lab {
    lab_of(store, plugin, hooks, Duration::ZERO).await
}

/// The two sites through the example plugin, each request answered after
/// 40 ms, so that calls made together overlap.
async fn slow_lab(store: &Store) -> Lab {
    lab_of(
        store,
        "example",
        HookPolicy::default(),
        Duration::from_millis(40),
    )
    .await
}

/// The same, each site answering after `api_latency`.
async fn lab_of(store: &Store, plugin: &str, hooks: HookPolicy, api_latency: Duration) -> Lab {
    let a = site(rebound_lab::example::default_vms(), api_latency).await;
    let b = site(Vec::new(), api_latency).await;
    let runtime = Arc::new(rebound_runtime::testing::runtime());
    let plugin = rebound_runtime::testing::load(&runtime, plugin).await;
    let sites = HashMap::from([
        (
            "lab-a".to_owned(),
            BoundSite {
                plugin: plugin.clone(),
                grant: grant(&a, "lab-a"),
            },
        ),
        (
            "lab-b".to_owned(),
            BoundSite {
                plugin: plugin.clone(),
                grant: grant(&b, "lab-b"),
            },
        ),
    ]);
    let steps = Arc::new(PluginSteps::new(runtime.clone(), store.clone(), sites).with_hooks(hooks));
    Lab {
        a: Arc::new(a),
        b: Arc::new(b),
        steps,
        plugin,
        runtime,
    }
}

/// `plan` stored, the two sites through `plugin`, and one replication
/// cycle: the plan protected with a recovery point of each workload.
async fn replicated(store: &Store, plan: &PlanDocument, plugin: &str) -> Lab {
    store.put_plan(plan, "operator").await.expect("plan");
    let lab = lab_with(store, plugin).await;
    assert_eq!(
        run(store, &lab, Workflow::Replication).await,
        Outcome::Succeeded
    );
    lab
}

async fn run(store: &Store, lab: &Lab, workflow: Workflow) -> Outcome {
    run_reported(store, lab, workflow).await.0
}

async fn run_reported(store: &Store, lab: &Lab, workflow: Workflow) -> (Outcome, RunReport) {
    run_by(store, lab.steps.clone(), workflow).await
}

/// A host's executor driving runs through `runner`, polling and backing
/// off every 20 ms.
fn executor(store: &Store, runner: Arc<dyn StepRunner>, owner: &str) -> Executor {
    Executor::new(
        store.clone(),
        runner,
        ExecutorConfig {
            poll_interval: Duration::from_millis(20),
            backoff: Duration::from_millis(20),
            ..ExecutorConfig::new(owner)
        },
    )
}

/// No recovery point of the plan is left, in the store or as a snapshot on
/// either site.
async fn no_copies_left(store: &Store, lab: &Lab) {
    let points = store.recovery_points("shop").await.expect("points");
    assert!(points.is_empty(), "{points:?}");
    assert_eq!(lab.a.snapshots(), Vec::<String>::new());
    assert_eq!(lab.b.snapshots(), Vec::<String>::new());
}

/// No mutating request reached either site twice under one key.
fn no_repeats(lab: &Lab) {
    for site in [&lab.a, &lab.b] {
        let repeated: Vec<_> = site.effects().into_iter().filter(|(_, n)| *n > 1).collect();
        assert!(repeated.is_empty(), "side effects repeated: {repeated:?}");
    }
}

/// Start `workflow` on the plan and drive it through `runner` to its end.
async fn run_by(
    store: &Store,
    runner: Arc<dyn StepRunner>,
    workflow: Workflow,
) -> (Outcome, RunReport) {
    rebound_engine::trigger(store, "shop", workflow, None, "operator")
        .await
        .unwrap_or_else(|e| panic!("start {workflow}: {e}"));
    let executor = executor(store, runner, "host-a");
    let (run, mut outcome) = executor
        .work_once()
        .await
        .expect("work")
        .expect("the run just started");
    if let Outcome::WaitingApproval { .. } = outcome {
        store.approve(&run.id, "approver").await.expect("approve");
        outcome = executor
            .work_once()
            .await
            .expect("work")
            .expect("approved")
            .1;
    }
    let report = rebound_engine::report(store, &run.id)
        .await
        .expect("report");
    (outcome, report)
}

fn label<'a>(vm: &'a Value, key: &str) -> Option<&'a str> {
    vm["labels"][key].as_str()
}

/// VMs of a site serving a plan workload (labelled by Rebound) and running.
fn serving(site: &ExampleSite) -> Vec<Value> {
    site.vms()
        .into_iter()
        .filter(|vm| label(vm, WORKLOAD_LABEL).is_some() && vm["power"] == "running")
        .collect()
}

async fn round_trip(store: Store) {
    store
        .put_plan(&plan("30s"), "operator")
        .await
        .expect("plan");
    let lab = lab(&store).await;
    let state = async || store.plan("shop").await.expect("plan").lifecycle;

    // Nothing to recover from yet.
    let Outcome::Failed { error, .. } = run(&store, &lab, Workflow::Drill).await else {
        panic!("a drill without recovery points must fail");
    };
    assert!(error.contains("run a replication cycle first"), "{error}");

    assert_eq!(
        run(&store, &lab, Workflow::Replication).await,
        Outcome::Succeeded
    );
    let points = store.recovery_points("shop").await.expect("points");
    assert_eq!(
        points.iter().filter(|p| p.site == "lab-b").count(),
        3,
        "{points:?}"
    );

    // Before failing over: the dry-run forecasts from defaults (no drill
    // measured yet) and lists exactly the steps the run will have.
    let forecast = rebound_engine::dry_run(&store, "shop", Workflow::Failover, 64)
        .await
        .expect("dry-run");
    assert_eq!(forecast.basis, None);
    let (outcome, report) = run_reported(&store, &lab, Workflow::Failover).await;
    assert_eq!(outcome, Outcome::Succeeded);
    assert_eq!(forecast.steps.len(), report.steps.len());
    let (rto, rpo) = (
        report.measured_rto_ms.expect("measured RTO"),
        report.achieved_rpo_ms.expect("achieved RPO"),
    );
    assert!(rto > 0 && rto < 30_000, "{report:?}");
    assert!(
        rpo > 0 && rpo < 60_000,
        "unplanned: data since the cycle is lost: {report:?}"
    );
    assert_eq!((report.rto_met, report.rpo_met), (Some(true), Some(true)));
    assert_eq!(report.objective_rto_ms, 30 * 60 * 1000);
    let l = state().await;
    assert_eq!(
        (l.state, l.primary.as_str(), l.epoch, l.unfenced),
        (PlanState::FailedOver, "lab-b", 2, None)
    );
    let recovered = serving(&lab.b);
    assert_eq!(recovered.len(), 3, "{recovered:?}");
    let probes = gate_probes(&store, &report.run).await;
    assert_eq!(probes.len(), 3, "{probes:?}");
    assert!(
        probes
            .iter()
            .any(|p| p.contains(":5432 accepted a connection")),
        "{probes:?}"
    );
    assert!(
        probes
            .iter()
            .any(|p| p.contains(":8080/healthz answered 200")),
        "{probes:?}"
    );
    assert!(probes.contains(&"powered on".to_owned()), "{probes:?}");
    assert!(
        recovered
            .iter()
            .all(|vm| vm["nics"][0]["network"] == "dr-net"),
        "networks mapped: {recovered:?}"
    );
    let fenced: Vec<Value> = lab.a.vms();
    assert!(
        fenced
            .iter()
            .all(|vm| vm["fenced"] == true && vm["epoch"] == 2),
        "{fenced:?}"
    );
    let route = lab.b.route("shop/www");
    assert_eq!(route.len(), 3);
    assert!(route.values().all(|w| *w == 100), "{route:?}");

    assert_eq!(
        run(&store, &lab, Workflow::Reprotect).await,
        Outcome::Succeeded
    );
    assert_eq!(state().await.state, PlanState::ReadyForFailback);

    // The drill recovers on the standby (lab-a) in a sandbox, then tears
    // it down; nothing else changes.
    let before = lab.a.vms().len();
    assert_eq!(run(&store, &lab, Workflow::Drill).await, Outcome::Succeeded);
    assert_eq!(lab.a.vms().len(), before, "the drill sandbox is gone");
    assert!(
        lab.a
            .vms()
            .iter()
            .all(|vm| label(vm, DRILL_LABEL).is_none())
    );
    assert_eq!(state().await.state, PlanState::ReadyForFailback);

    // The failback forecast now rests on measured steps: its recovery on
    // lab-a on the drill's there, its fence of lab-b on the failover's
    // fences of lab-a (none measured on lab-b), its syncs on the
    // reprotect's copies lab-b → lab-a.
    let forecast = rebound_engine::dry_run(&store, "shop", Workflow::Failback, 64)
        .await
        .expect("dry-run");
    let runs = store.runs_of("shop").await.expect("runs");
    let newest = |workflow: Workflow| {
        runs.iter()
            .find(|r| r.workflow == workflow)
            .map(|r| r.id.clone())
    };
    let measured_in = |action: &str| {
        let step = forecast.steps.iter().find(|s| s.input["action"] == action);
        step.and_then(|s| s.measured_in.clone())
    };
    assert_eq!(measured_in("materialize"), newest(Workflow::Drill));
    assert_eq!(measured_in("fence"), newest(Workflow::Failover));
    assert_eq!(measured_in("replicate"), newest(Workflow::Reprotect));
    assert_eq!(forecast.basis, newest(Workflow::Drill));
    assert!(forecast.within_objective, "{forecast:?}");
    let (outcome, report) = run_reported(&store, &lab, Workflow::Failback).await;
    assert_eq!(outcome, Outcome::Succeeded);
    assert_eq!(
        (report.achieved_rpo_ms, report.rpo_met),
        (Some(0), Some(true)),
        "planned: fenced before the final sync, nothing lost: {report:?}"
    );
    assert_eq!(report.objective_rpo_ms, 0);
    let l = state().await;
    assert_eq!(
        (l.state, l.primary.as_str(), l.epoch),
        (PlanState::Protected, "lab-a", 3)
    );
    assert_eq!(serving(&lab.a).len(), 3);
    assert!(serving(&lab.b).is_empty(), "lab-b is fenced");
    assert!(
        serving(&lab.a)
            .iter()
            .all(|vm| vm["nics"][0]["network"] == "prod-net"),
        "the mapping runs backwards on failback"
    );

    // Home again, the failback's fenced incarnations on lab-b stay until a
    // cycle has put a newer copy there; then they go. lab-a's originals
    // (not Rebound's) stay fenced beside their successors.
    assert_eq!(lab.b.vms().len(), 3);
    let (outcome, report) = run_reported(&store, &lab, Workflow::Replication).await;
    assert_eq!(outcome, Outcome::Succeeded);
    assert!(lab.b.vms().is_empty(), "{:?}", lab.b.vms());
    assert_eq!(lab.a.vms().len(), 6);
    assert_eq!(serving(&lab.a).len(), 3);
    let steps = store.steps(&report.run).await.expect("steps");
    let removed: Vec<&Value> = steps
        .iter()
        .filter(|s| s.input["scope"] == "superseded")
        .filter_map(|s| s.output.as_ref())
        .collect();
    assert_eq!(removed.len(), 2, "{steps:?}");
    assert_eq!(
        removed
            .iter()
            .map(|o| o["removed"].as_array().map_or(0, Vec::len))
            .sum::<usize>(),
        3,
        "{removed:?}"
    );

    assert_eq!(
        run(&store, &lab, Workflow::Migration).await,
        Outcome::Succeeded
    );
    assert_eq!(state().await.state, PlanState::AwaitingCommit);
    assert_eq!(
        run(&store, &lab, Workflow::CommitMigration).await,
        Outcome::Succeeded
    );
    let l = state().await;
    assert_eq!(
        (l.state, l.primary.as_str()),
        (PlanState::Protected, "lab-b")
    );

    for (name, site) in [("lab-a", &lab.a), ("lab-b", &lab.b)] {
        let effects = site.effects();
        assert!(!effects.is_empty());
        let repeated: Vec<_> = effects.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            repeated.is_empty(),
            "{name} repeated side effects: {repeated:?}"
        );
    }
}

/// What each health gate of a run saw pass.
/// The plan with round-trip drills, its application's gate given `gate`.
fn round_trip_plan(gate: &str) -> PlanDocument {
    let mut plan = plan(gate);
    plan.drills.round_trip = true;
    plan
}

/// What a site holds: its VMs (id, power, fenced) and snapshots.
type Holdings = (Vec<(String, String, bool)>, Vec<String>);

/// What `site` holds now.
fn holdings(site: &ExampleSite) -> Holdings {
    let mut vms: Vec<_> = site
        .vms()
        .iter()
        .map(|vm| {
            (
                vm["id"].as_str().unwrap_or_default().to_owned(),
                vm["power"].as_str().unwrap_or_default().to_owned(),
                vm["fenced"] == true,
            )
        })
        .collect();
    vms.sort();
    (vms, site.snapshots())
}

/// A round-trip drill rehearses both phases in one run while production
/// goes on: the recovery on the standby into a sandbox (failover phase),
/// then the way back — the sandbox captured, copied to the primary's site
/// and recovered there into a sandbox of its own, gated — measured against
/// the failback objective. Both sandboxes and every copy it made go; the
/// plan's recovery points, its lifecycle and production are as they were.
/// Its way back is then what forecasts a failback's steps on those sites.
async fn a_round_trip_drill_measures_the_way_back(store: Store) {
    let lab = replicated(&store, &round_trip_plan("30s"), "example").await;
    let forecast = rebound_engine::dry_run(&store, "shop", Workflow::Drill, 64)
        .await
        .expect("dry-run");
    let back = forecast.return_leg.clone().expect("a way back");
    assert_eq!(
        (back.phase, back.objective_rto_ms),
        (Phase::Failback, 2 * 60 * 60 * 1000)
    );
    assert_eq!(forecast.phase, Phase::Failover);
    let points = |store: &Store| {
        let store = store.clone();
        async move {
            let mut ids: Vec<String> = store
                .recovery_points("shop")
                .await
                .expect("points")
                .into_iter()
                .map(|p| format!("{}/{}", p.site, p.id))
                .collect();
            ids.sort();
            ids
        }
    };
    let (a, b, before) = (holdings(&lab.a), holdings(&lab.b), points(&store).await);

    let (outcome, report) = run_reported(&store, &lab, Workflow::Drill).await;
    assert_eq!(outcome, Outcome::Succeeded, "{report:?}");
    assert_eq!(forecast.steps.len(), report.steps.len());
    let steps = store.steps(&report.run).await.expect("steps");
    let on = |action: &str, site: &str| {
        steps
            .iter()
            .filter(|s| s.input["action"] == action && s.input["site"] == site)
            .count()
    };
    assert_eq!(
        (on("materialize", "lab-b"), on("materialize", "lab-a")),
        (3, 3),
        "recovered on the standby, then back on the primary's site"
    );
    assert_eq!((on("gate", "lab-b"), on("gate", "lab-a")), (3, 3));
    let back = report.return_leg.clone().expect("the way back measured");
    assert_eq!(
        (report.phase, back.phase, back.rto_met),
        (Phase::Failover, Phase::Failback, Some(true)),
        "{report:?}"
    );
    let (there, back_rto) = (
        report.measured_rto_ms.expect("the way there"),
        back.rto_ms.expect("the way back"),
    );
    assert!(there > 0 && back_rto > 0, "{report:?}");
    // The way back recovered what the sandbox held: its copies on lab-a
    // came from the snapshots of the sandbox on lab-b.
    let sandboxes: Vec<&str> = steps
        .iter()
        .filter(|s| s.input["action"] == "materialize" && s.input["site"] == "lab-b")
        .filter_map(|s| s.output.as_ref()?["workload"].as_str())
        .collect();
    let captured: Vec<&str> = steps
        .iter()
        .filter(|s| s.input["action"] == "snapshot")
        .filter_map(|s| s.output.as_ref()?["workload"].as_str())
        .collect();
    assert_eq!(captured.len(), 3, "{steps:?}");
    assert!(
        captured.iter().all(|c| sandboxes.contains(c)),
        "{captured:?} of {sandboxes:?}"
    );

    // Nothing of the drill stays, on either site or in the store.
    left_as_found(&store, &lab, &report.run, (a, b)).await;
    assert_eq!(points(&store).await, before);
    let l = store.plan("shop").await.expect("plan").lifecycle;
    assert_eq!(
        (l.state, l.primary.as_str(), l.epoch),
        (PlanState::Protected, "lab-a", 1)
    );

    // A failback's recovery on lab-a and its copies lab-b → lab-a are now
    // forecast from the drill's way back.
    let forecast = rebound_engine::dry_run(&store, "shop", Workflow::Drill, 64)
        .await
        .expect("dry-run");
    let back_steps: Vec<_> = forecast
        .steps
        .iter()
        .filter(|s| s.input["leg"] == "return")
        .collect();
    assert!(!back_steps.is_empty());
    assert!(
        back_steps
            .iter()
            .all(|s| s.measured_in.as_deref() == Some(report.run.as_str())),
        "{back_steps:?}"
    );
    // So is the failback the compliance view forecasts while the plan is
    // protected (the sites swapped, as if failed over): its recovery on
    // lab-a and its copies lab-b → lab-a, by the drill, before any failover.
    let plan = store.plan("shop").await.expect("plan");
    let mut failed_over = plan.lifecycle.clone();
    failed_over.state = PlanState::ReadyForFailback;
    std::mem::swap(&mut failed_over.primary, &mut failed_over.standby);
    let failback =
        rebound_engine::dry_run_of(&store, &plan.document, &failed_over, Workflow::Failback, 64)
            .await
            .expect("failback forecast");
    for action in ["materialize", "replicate", "gate"] {
        let steps: Vec<_> = failback
            .steps
            .iter()
            .filter(|s| s.input["action"] == action)
            .collect();
        assert!(
            !steps.is_empty()
                && steps
                    .iter()
                    .all(|s| s.measured_in.as_deref() == Some(report.run.as_str())),
            "{action}: {steps:?}"
        );
    }
    let effects = lab.a.effects().into_iter().chain(lab.b.effects());
    let repeated: Vec<_> = effects.filter(|(_, n)| *n > 1).collect();
    assert!(repeated.is_empty(), "side effects repeated: {repeated:?}");
}

/// A round-trip drill whose way back fails (the application recovered on
/// the primary's site answers 503) is undone like any failed drill: both
/// sandboxes torn down and its copies removed, on both sites, what depends
/// on another first (the way back's sandbox, the copies captured from the
/// standby's sandbox, that sandbox, the way back's copies).
async fn a_round_trip_drill_failing_on_its_way_back_leaves_nothing(store: Store) {
    let lab = replicated(&store, &round_trip_plan("1s"), "example").await;
    let (a, b) = (holdings(&lab.a), holdings(&lab.b));
    lab.a.set_service_status("app-1-drill", 8080, 503);
    let (outcome, report) = run_reported(&store, &lab, Workflow::Drill).await;
    let Outcome::Failed { error, .. } = outcome else {
        panic!("the way back must fail at its gate: {outcome:?}");
    };
    assert!(error.contains("answered 503"), "{error}");
    let steps = store.steps(&report.run).await.expect("steps");
    let undone: Vec<(String, String)> = steps
        .iter()
        .filter(|s| s.input["compensation"] == true)
        .map(|s| {
            assert_eq!(s.status, StepStatus::Succeeded, "{s:?}");
            (
                s.input["scope"].as_str().unwrap_or_default().to_owned(),
                s.input["site"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("drill", "lab-a"),
        ("drill-points", "lab-b"),
        ("drill", "lab-b"),
        ("drill-points", "lab-a"),
    ];
    assert_eq!(
        undone,
        expected.map(|(s, t)| (s.to_owned(), t.to_owned())),
        "{steps:?}"
    );
    left_as_found(&store, &lab, &report.run, (a, b)).await;
}

/// The example plugin, each step shown to `intercept` as it starts: an
/// error it returns is how the start ends.
struct Intercepted<F> {
    steps: Arc<PluginSteps>,
    intercept: F,
}

impl<F: Fn(&StepRecord) -> Option<StepError> + Send + Sync> StepRunner for Intercepted<F> {
    fn start<'a>(&'a self, step: &'a StepRecord) -> BoxFuture<'a, Result<Started, StepError>> {
        match (self.intercept)(step) {
            Some(e) => Box::pin(async move { Err(e) }),
            None => self.steps.start(step),
        }
    }

    fn poll<'a>(
        &'a self,
        step: &'a StepRecord,
        operation: &'a Value,
    ) -> BoxFuture<'a, Result<Progress, StepError>> {
        self.steps.poll(step, operation)
    }
}

/// A round-trip drill whose teardown meets the standby's site down ends
/// failed with what it made there still there — its sandbox and copies —
/// while its copies on the primary's site, up, are removed all the same
/// (the compensation tries each site's teardown); a `drill.leftovers`
/// event names what stays on the site that refused. Once the site is
/// back, the next drill tries to remove what the first left, at its end
/// (its dry-run shows those steps): a site that keeps refusing them past
/// their retries fails nothing and leaves them for the run after — here
/// a replication cycle, which a site refusing once is retried by and
/// which records the removal. Then both sites hold what they held before
/// any of the drills.
async fn what_a_drill_could_not_tear_down_a_later_run_removes(store: Store) {
    let lab = replicated(&store, &round_trip_plan("30s"), "example").await;
    let (a, b) = (holdings(&lab.a), holdings(&lab.b));
    // lab-b goes down as the drill's own teardown there (its copies, then
    // its sandbox) starts, and stays down.
    let site = lab.b.clone();
    let down_at_teardown = Arc::new(Intercepted {
        steps: lab.steps.clone(),
        intercept: move |step: &StepRecord| {
            let scope = &step.input["scope"];
            if (scope == "drill" || scope == "drill-points")
                && step.input["site"] == "lab-b"
                && step.input[LEFT_BY].is_null()
            {
                site.set_down(true);
            }
            None
        },
    });
    let (outcome, first) = run_by(&store, down_at_teardown, Workflow::Drill).await;
    let Outcome::Failed { error, .. } = outcome else {
        panic!("the teardown must fail with the site down: {outcome:?}");
    };
    assert!(error.contains("down"), "{error}");
    // lab-a, up, was tidied by the compensation all the same.
    assert_eq!(
        holdings(&lab.a),
        a,
        "the way back's copies on lab-a removed"
    );
    let events = store
        .events(Some("shop"), &[DRILL_LEFTOVERS], 10)
        .await
        .expect("events");
    let mut noted: Vec<(String, bool, usize)> = events
        .iter()
        .map(|e| {
            assert_eq!(e.detail["run"], first.run.as_str(), "{e:?}");
            (
                e.detail["site"].as_str().unwrap_or_default().to_owned(),
                e.detail["sandbox"] == true,
                e.detail["copies"].as_array().map_or(0, Vec::len),
            )
        })
        .collect();
    noted.sort();
    assert_eq!(noted, [("lab-b".to_owned(), true, 3)], "{events:?}");
    // Its report says so too.
    let left: Vec<_> = first
        .left
        .iter()
        .map(|l| (l.site.as_str(), l.sandbox, l.copies.len()))
        .collect();
    assert_eq!(left, [("lab-b", true, 3)], "{first:?}");

    lab.b.set_down(false);
    let forecast = rebound_engine::dry_run(&store, "shop", Workflow::Drill, 64)
        .await
        .expect("dry-run");
    let leftover = |input: &Value| input[LEFT_BY] == first.run.as_str();
    let planned: Vec<&Value> = forecast
        .steps
        .iter()
        .filter(|s| leftover(&s.input))
        .map(|s| &s.input["scope"])
        .collect();
    // lab-b's copies were captured from its sandbox: they go first.
    assert_eq!(planned, ["drill-points", "drill"], "{forecast:?}");
    // The teardowns of what the first drill left meet a site answering 503
    // the first `refusals` times they start.
    let refusing = |refusals: usize| {
        let refusals = std::sync::atomic::AtomicUsize::new(refusals);
        Arc::new(Intercepted {
            steps: lab.steps.clone(),
            intercept: move |step: &StepRecord| {
                use std::sync::atomic::Ordering::SeqCst;
                let refused = step.input[LEFT_BY].is_string()
                    && refusals
                        .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                refused.then(|| {
                    StepError::Retryable("the site answered 503 Service Unavailable".into())
                })
            },
        })
    };
    let attempts = ExecutorConfig::new("host-a").attempts;
    // Refused on every attempt: left again, the drill a success.
    let (outcome, second) = run_by(&store, refusing(usize::MAX), Workflow::Drill).await;
    assert_eq!(outcome, Outcome::Succeeded, "{second:?}");
    let steps = store.steps(&second.run).await.expect("steps");
    let tried: Vec<&StepRecord> = steps.iter().filter(|s| leftover(&s.input)).collect();
    assert_eq!(tried.len(), 2, "{steps:?}");
    for s in tried {
        assert_eq!(
            (s.status, s.attempts),
            (StepStatus::Succeeded, attempts),
            "{s:?}"
        );
        let output = s.output.as_ref().expect("output");
        assert_eq!(output["left"], true, "{s:?}");
        assert!(
            output["reason"].as_str().is_some_and(|r| r.contains("503")),
            "{s:?}"
        );
    }
    let forecast = rebound_engine::dry_run(&store, "shop", Workflow::Drill, 64)
        .await
        .expect("dry-run");
    let planned = forecast.steps.iter().filter(|s| leftover(&s.input)).count();
    assert_eq!(planned, 2, "still there, still planned: {forecast:?}");
    // The next replication cycle tries too. Refused once: retried,
    // removed.
    let (outcome, third) = run_by(&store, refusing(1), Workflow::Replication).await;
    assert_eq!(outcome, Outcome::Succeeded, "{third:?}");
    let steps = store.steps(&third.run).await.expect("steps");
    let removed: Vec<&StepRecord> = steps.iter().filter(|s| leftover(&s.input)).collect();
    assert_eq!(removed.len(), 2, "{steps:?}");
    assert_eq!(
        removed.iter().map(|s| s.attempts).sum::<i32>(),
        3,
        "one of them retried once: {removed:?}"
    );
    for s in removed {
        assert_eq!(s.status, StepStatus::Succeeded, "{s:?}");
        assert_ne!(s.output.as_ref().expect("output")["left"], true, "{s:?}");
    }
    let removals = store
        .events(Some("shop"), &[DRILL_LEFTOVERS_REMOVED], 10)
        .await
        .expect("events");
    let mut recorded: Vec<(&Value, &Value, &Value)> = removals
        .iter()
        .map(|e| {
            (
                &e.detail["run"],
                &e.detail["scope"],
                &e.detail["removed_by"],
            )
        })
        .collect();
    recorded.sort_by_key(|r| r.1.to_string());
    let (drill, by) = (json!(first.run), json!(third.run));
    assert_eq!(
        recorded,
        [
            (&drill, &json!("drill"), &by),
            (&drill, &json!("drill-points"), &by)
        ],
        "{removals:?}"
    );
    // As before the drills, but for the cycle's own recovery points.
    let (mut a, mut b) = (a, b);
    for point in store.recovery_points("shop").await.expect("points") {
        if point.run == third.run {
            let at = if point.site == "lab-a" {
                &mut a
            } else {
                &mut b
            };
            at.1.push(point.id);
            at.1.sort();
        }
    }
    left_as_found(&store, &lab, &first.run, (a, b)).await;
    let report = rebound_engine::report(&store, &first.run)
        .await
        .expect("report");
    assert!(report.left.is_empty(), "nothing of it left: {report:?}");
    let copies = store.drill_points(&second.run).await.expect("drill's");
    assert!(copies.is_empty(), "{copies:?}");
    // Nothing left to remove: neither the next drill nor the next cycle
    // plans any of it.
    for workflow in [Workflow::Drill, Workflow::Replication] {
        let forecast = rebound_engine::dry_run(&store, "shop", workflow, 64)
            .await
            .expect("dry-run");
        assert!(
            forecast.steps.iter().all(|s| s.input[LEFT_BY].is_null()),
            "{forecast:?}"
        );
    }
}

/// Both sites hold what they held before drill `run`, and the store no
/// copy of it.
async fn left_as_found(store: &Store, lab: &Lab, run: &str, before: (Holdings, Holdings)) {
    assert_eq!((holdings(&lab.a), holdings(&lab.b)), before);
    let copies = store.drill_points(run).await.expect("drill's");
    assert!(copies.is_empty(), "{copies:?}");
}

async fn gate_probes(store: &Store, run: &str) -> Vec<String> {
    store
        .steps(run)
        .await
        .expect("steps")
        .iter()
        .filter(|s| s.input["action"] == "gate")
        .filter_map(|s| s.output.as_ref()?["probe"].as_str().map(str::to_owned))
        .collect()
}

/// An application that comes up broken on the standby holds the failover
/// at its health gate: the gate fails when its timeout runs out, naming the
/// check and the answer; what depends on it is never recovered; the run is
/// compensated, so the old primary serves again.
async fn a_failing_health_gate_stops_the_failover(store: Store) {
    let (lab, steps) = failover_held_at_its_gate(&store, "example").await;
    // No traffic ever reached them: the compensation removed them too.
    let removal = steps
        .iter()
        .find(|s| s.input["scope"] == "workloads")
        .expect("a removal of the standby incarnations");
    assert_eq!(
        (removal.status, removal.input["compensation"].as_bool()),
        (StepStatus::Succeeded, Some(true))
    );
    assert_eq!(
        removal.input["workloads"].as_array().map(Vec::len),
        Some(2),
        "db-1, and app-1 whose gate failed"
    );
    assert!(lab.b.vms().is_empty(), "{:?}", lab.b.vms());
    let kept = store
        .events(Some("shop"), &[STANDBYS_KEPT], 10)
        .await
        .expect("events");
    assert!(kept.is_empty(), "nothing left for the operator: {kept:?}");
}

/// The same through a plugin built against the contract 0.1, which has no
/// call that removes a workload: the standby incarnations stay, fenced,
/// and the removal step says so instead of failing the compensation.
async fn a_0_1_plugin_leaves_the_standbys_of_a_failed_failover_fenced(store: Store) {
    let (lab, steps) = failover_held_at_its_gate(&store, "example-contract-0-1").await;
    let removal = steps
        .iter()
        .find(|s| s.input["scope"] == "workloads")
        .expect("a removal of the standby incarnations");
    assert_eq!(removal.status, StepStatus::Succeeded);
    let output = removal.output.clone().unwrap_or_default();
    assert_eq!(output["removed"], serde_json::json!([]));
    assert_eq!(output["kept"].as_array().map(Vec::len), Some(2));
    assert!(
        output["reason"]
            .as_str()
            .is_some_and(|r| r.contains("0.2.0")),
        "{output}"
    );
    let standbys = lab.b.vms();
    assert_eq!(standbys.len(), 2, "{standbys:?}");
    assert!(
        standbys.iter().all(|vm| vm["fenced"] == true),
        "{standbys:?}"
    );
    // The operator is told, once, which are left and why.
    let kept = store
        .events(Some("shop"), &[STANDBYS_KEPT], 10)
        .await
        .expect("events");
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].detail["site"], "lab-b");
    assert_eq!(
        kept[0].detail["workloads"].as_array().map(Vec::len),
        Some(2)
    );
    assert!(
        kept[0].detail["reason"]
            .as_str()
            .is_some_and(|r| r.contains("did not remove") && r.contains("0.2.0")),
        "{}",
        kept[0].detail
    );
}

/// Replicate, then fail over onto a standby whose app-1 answers 503 at its
/// health gate; checks the failure and the old primary serving again, and
/// returns the lab and the failover's steps.
async fn failover_held_at_its_gate(store: &Store, plugin: &str) -> (Lab, Vec<StepRecord>) {
    let store = store.clone();
    let lab = replicated(&store, &plan("1s"), plugin).await;
    lab.b.set_service_status("app-1", 8080, 503);
    let Outcome::Failed { error, .. } = run(&store, &lab, Workflow::Failover).await else {
        panic!("the failover must fail at the gate");
    };
    assert!(
        error.contains(
            "health gate of 'vm-2' on 'lab-b' (http :8080/healthz → 200) did not pass within 1s"
        ) && error.contains("answered 503, not 200"),
        "{error}"
    );
    assert!(
        lab.b.vms().iter().all(|vm| vm["name"] != "web-1"),
        "web-1 depends on the failed gate: never recovered"
    );
    let l = store.plan("shop").await.expect("plan").lifecycle;
    assert_eq!(l.primary, "lab-a");
    let primary = lab.a.vms();
    assert!(
        primary
            .iter()
            .all(|vm| vm["power"] == "running" && vm["fenced"] == false),
        "the old primary serves again: {primary:?}"
    );
    assert!(
        serving(&lab.b).is_empty(),
        "what the standby recovered is fenced"
    );
    let runs = store.runs_of("shop").await.expect("runs");
    let steps = store.steps(&runs[0].id).await.expect("steps");
    (lab, steps)
}

/// The plan (its application's gate given `gate`) replicated once, then
/// the primary site down.
async fn primary_down(store: &Store, gate: &str) -> Lab {
    let lab = replicated(store, &plan(gate), "example").await;
    lab.a.set_down(true);
    lab
}

/// Failover with the primary site gone: fencing is best effort, the plan
/// fails over and remembers that the old primary was never fenced. Nothing
/// replicates back to it before it is: a reprotect while it is still down
/// fails at its fence and changes nothing; once the site is back (its old
/// incarnations running again), the reprotect fences them under the new
/// epoch first, and the failback brings the plan home.
async fn failover_with_the_primary_down(store: Store) {
    let lab = primary_down(&store, "30s").await;
    assert_eq!(
        run(&store, &lab, Workflow::Failover).await,
        Outcome::Succeeded
    );
    let l = store.plan("shop").await.expect("plan").lifecycle;
    assert_eq!(
        (l.state, l.primary.as_str(), l.unfenced.as_deref()),
        (PlanState::FailedOver, "lab-b", Some("lab-a"))
    );
    assert_eq!(serving(&lab.b).len(), 3);

    let Outcome::Failed { step, error } = run(&store, &lab, Workflow::Reprotect).await else {
        panic!("the old primary is still down");
    };
    assert!(error.contains("the site is down"), "{error}");
    let l = store.plan("shop").await.expect("plan").lifecycle;
    assert_eq!(
        (l.state, l.primary.as_str(), l.unfenced.as_deref()),
        (PlanState::FailedOver, "lab-b", Some("lab-a"))
    );
    let runs = store.runs_of("shop").await.expect("runs");
    let steps = store.steps(&runs[0].id).await.expect("steps");
    assert!(
        steps
            .iter()
            .all(|s| s.input["action"] == "fence" || s.started_at_ms.is_none()),
        "nothing replicated back: {steps:?}"
    );
    assert!(
        steps.iter().all(|s| s.input["compensation"] != true),
        "nothing to undo: {steps:?}"
    );
    let failed = steps.iter().find(|s| s.seq == step).expect("failed step");
    assert!(
        failed
            .name
            .ends_with("on lab-a (not confirmed at the failover)"),
        "{failed:?}"
    );

    lab.a.set_down(false);
    let stale = |site: &ExampleSite| {
        site.vms()
            .into_iter()
            .filter(|vm| label(vm, WORKLOAD_LABEL).is_none() && vm["power"] == "running")
            .count()
    };
    assert_eq!(stale(&lab.a), 3, "back up, the old incarnations run");
    assert_eq!(
        run(&store, &lab, Workflow::Reprotect).await,
        Outcome::Succeeded
    );
    let l = store.plan("shop").await.expect("plan").lifecycle;
    assert_eq!(
        (l.state, l.unfenced.as_deref()),
        (PlanState::ReadyForFailback, None)
    );
    let old: Vec<Value> = lab.a.vms();
    assert!(
        old.iter()
            .all(|vm| vm["fenced"] == true && vm["epoch"] == 2 && vm["power"] != "running"),
        "fenced under the new epoch before anything replicated back: {old:?}"
    );
    assert_eq!(
        run(&store, &lab, Workflow::Failback).await,
        Outcome::Succeeded
    );
    let l = store.plan("shop").await.expect("plan").lifecycle;
    assert_eq!(
        (l.state, l.primary.as_str(), l.epoch, l.unfenced),
        (PlanState::Protected, "lab-a", 3, None)
    );
    assert_eq!(serving(&lab.a).len(), 3);
    assert!(serving(&lab.b).is_empty());
}

/// Through a plugin of the contract 0.1, which cannot remove workloads,
/// the incarnations a failback superseded stay, and the cycle's step says
/// why without asking the site for anything.
async fn a_0_1_plugin_keeps_the_superseded_incarnations(store: Store) {
    store
        .put_plan(&plan("30s"), "operator")
        .await
        .expect("plan");
    let lab = lab_with(&store, "example-contract-0-1").await;
    for workflow in [
        Workflow::Replication,
        Workflow::Failover,
        Workflow::Reprotect,
        Workflow::Failback,
    ] {
        assert_eq!(
            run(&store, &lab, workflow).await,
            Outcome::Succeeded,
            "{workflow}"
        );
    }
    let (outcome, report) = run_reported(&store, &lab, Workflow::Replication).await;
    assert_eq!(outcome, Outcome::Succeeded);
    assert_eq!(lab.b.vms().len(), 3, "kept, fenced");
    let steps = store.steps(&report.run).await.expect("steps");
    let kept: Vec<&Value> = steps
        .iter()
        .filter(|s| s.input["scope"] == "superseded")
        .filter_map(|s| s.output.as_ref())
        .collect();
    assert_eq!(kept.len(), 2, "{steps:?}");
    assert!(
        kept.iter().all(|o| o["reason"]
            .as_str()
            .is_some_and(|r| r.contains("contract 0.1.0"))),
        "{kept:?}"
    );
}

/// The primary site comes back after the disaster rebuilt, without the
/// plan's workloads: what it does not have it cannot run, so the
/// reprotect's fences confirm by their absence, and the plan goes home.
async fn a_primary_site_rebuilt_empty_is_confirmed_fenced_by_absence(store: Store) {
    let lab = primary_down(&store, "30s").await;
    assert_eq!(
        run(&store, &lab, Workflow::Failover).await,
        Outcome::Succeeded
    );
    let rebuilt = site(Vec::new(), Duration::ZERO).await;
    lab.steps.bind(
        "lab-a",
        BoundSite {
            plugin: lab.plugin.clone(),
            grant: grant(&rebuilt, "lab-a"),
        },
    );
    let (outcome, report) = run_reported(&store, &lab, Workflow::Reprotect).await;
    assert_eq!(outcome, Outcome::Succeeded);
    let l = store.plan("shop").await.expect("plan").lifecycle;
    assert_eq!(
        (l.state, l.unfenced.as_deref()),
        (PlanState::ReadyForFailback, None)
    );
    let steps = store.steps(&report.run).await.expect("steps");
    let fences: Vec<&Value> = steps
        .iter()
        .filter(|s| s.input["confirm"] == true)
        .filter_map(|s| s.output.as_ref())
        .collect();
    assert_eq!(fences.len(), 3, "{steps:?}");
    assert!(
        fences
            .iter()
            .all(|o| o["fenced"] == true && o["absent"] == true),
        "{fences:?}"
    );
    assert_eq!(
        run(&store, &lab, Workflow::Failback).await,
        Outcome::Succeeded
    );
    assert_eq!(serving(&rebuilt).len(), 3);
    assert!(serving(&lab.b).is_empty());
}

/// With the primary site gone, a failover that fails half way (a gate) has
/// no fenced primary to give back, but what it recovered on the standby is
/// still undone — fenced and removed, no traffic having reached it — so the
/// operator's retry recovers every workload once, not beside a leftover.
async fn a_failed_failover_with_the_primary_down_leaves_no_standbys(store: Store) {
    let lab = primary_down(&store, "1s").await;
    lab.b.set_service_status("app-1", 8080, 503);
    assert!(matches!(
        run(&store, &lab, Workflow::Failover).await,
        Outcome::Failed { .. }
    ));
    assert!(lab.b.vms().is_empty(), "{:?}", lab.b.vms());
    assert_eq!(
        store.plan("shop").await.expect("plan").lifecycle.primary,
        "lab-a"
    );

    lab.b.set_service_status("app-1", 8080, 200);
    assert_eq!(
        run(&store, &lab, Workflow::Failover).await,
        Outcome::Succeeded
    );
    let names: Vec<String> = lab
        .b
        .vms()
        .iter()
        .map(|vm| vm["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names.len(), 3, "each workload once: {names:?}");
    assert_eq!(serving(&lab.b).len(), 3);
}

/// The example plugin, but the DNS change of a full cutover is refused.
struct CutoverRefused(Arc<PluginSteps>);

impl StepRunner for CutoverRefused {
    fn start<'a>(&'a self, step: &'a StepRecord) -> BoxFuture<'a, Result<Started, StepError>> {
        if step.input["action"] == "redirect"
            && step.input["weight"] == 100
            && step.input["compensation"] != true
        {
            return Box::pin(async { Err(StepError::Fatal("the cutover was refused".into())) });
        }
        self.0.start(step)
    }

    fn poll<'a>(
        &'a self,
        step: &'a StepRecord,
        operation: &'a Value,
    ) -> BoxFuture<'a, Result<Progress, StepError>> {
        self.0.poll(step, operation)
    }
}

/// With the primary site gone, a failover that fails after its canary
/// sent traffic to the standbys leaves them running — all that serves, and
/// they may hold writes — and says so; the failover started again adopts
/// them (each workload once, the canary's writes kept) and finishes.
async fn a_retried_failover_adopts_the_standbys_serving_after_a_failed_one(store: Store) {
    let lab = primary_down(&store, "30s").await;
    rebound_engine::trigger(&store, "shop", Workflow::Failover, None, "operator")
        .await
        .expect("start");
    let executor = Executor::new(
        store.clone(),
        Arc::new(CutoverRefused(lab.steps.clone())),
        ExecutorConfig {
            poll_interval: Duration::from_millis(20),
            ..ExecutorConfig::new("host-a")
        },
    );
    let (failed, outcome) = executor.work_once().await.expect("work").expect("run");
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    let l = store.plan("shop").await.expect("plan").lifecycle;
    assert_eq!(
        (l.state, l.primary.as_str()),
        (PlanState::Protected, "lab-a")
    );
    let first = serving(&lab.b);
    assert_eq!(first.len(), 3, "{first:?}");
    let route = lab.b.route("shop/www");
    assert!(route.values().all(|w| *w == 10), "the canary: {route:?}");
    let kept = store
        .events(Some("shop"), &[STANDBYS_KEPT], 10)
        .await
        .expect("events");
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].detail["run"], failed.id.as_str());
    assert!(
        kept[0].detail["reason"]
            .as_str()
            .is_some_and(|r| r.contains("stay running")),
        "{kept:?}"
    );

    let (outcome, report) = run_reported(&store, &lab, Workflow::Failover).await;
    assert_eq!(outcome, Outcome::Succeeded);
    let l = store.plan("shop").await.expect("plan").lifecycle;
    assert_eq!(
        (l.state, l.primary.as_str(), l.unfenced.as_deref()),
        (PlanState::FailedOver, "lab-b", Some("lab-a"))
    );
    let ids = |vms: Vec<Value>| {
        let mut ids: Vec<String> = vms
            .iter()
            .map(|vm| vm["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        lab.b.vms().len(),
        3,
        "each workload once: {:?}",
        lab.b.vms()
    );
    assert_eq!(ids(serving(&lab.b)), ids(first), "the same incarnations");
    let route = lab.b.route("shop/www");
    assert!(route.values().all(|w| *w == 100), "{route:?}");
    let steps = store.steps(&report.run).await.expect("steps");
    let adopted = steps
        .iter()
        .filter(|s| s.input["action"] == "materialize")
        .filter(|s| {
            s.output
                .as_ref()
                .is_some_and(|o| o["adopted_from"] == failed.id.as_str())
        })
        .count();
    assert_eq!(adopted, 3, "{steps:?}");
}

/// The compensation actions through the real plugin: a fence stops a VM
/// and blocks its writes; the unfence of a failed run's compensation, under
/// the same epoch, brings it back.
async fn a_compensating_unfence_restores_the_fenced_workload(store: Store) {
    store
        .put_plan(&plan("30s"), "operator")
        .await
        .expect("plan");
    let lab = lab(&store).await;
    let step = |action: &str| rebound_store::NewStep {
        name: format!("{action} vm-1"),
        input: serde_json::json!({"action": action, "site": "lab-a", "workload": "vm-1",
                                  "epoch": 7, "best_effort": false, "compensation": action == "unfence"}),
    };
    let power = |site: &ExampleSite| {
        site.vms()
            .into_iter()
            .find(|vm| vm["id"] == "vm-1")
            .map(|vm| (vm["power"].clone(), vm["fenced"].clone()))
    };
    let fence = store
        .create_run_with_steps("shop", Workflow::Drill, None, "t", &[step("fence")])
        .await
        .expect("run");
    let executor = Executor::new(
        store.clone(),
        lab.steps.clone(),
        ExecutorConfig::new("host-a"),
    );
    let (_, outcome) = executor.work_once().await.expect("work").expect("run");
    assert_eq!(outcome, Outcome::Succeeded);
    let fenced = store.steps(&fence.id).await.expect("steps");
    assert_eq!(fenced[0].output.as_ref().expect("output")["fenced"], true);
    assert_ne!(power(&lab.a).expect("vm-1").0, "running");
    store
        .create_run_with_steps("shop", Workflow::Drill, None, "t", &[step("unfence")])
        .await
        .expect("run");
    let (_, outcome) = executor.work_once().await.expect("work").expect("run");
    assert_eq!(outcome, Outcome::Succeeded);
    assert_eq!(power(&lab.a).expect("vm-1").0, "running");
}

rebound_store::on_both_backends!(
    round_trip,
    a_failing_health_gate_stops_the_failover,
    a_0_1_plugin_leaves_the_standbys_of_a_failed_failover_fenced,
    failover_with_the_primary_down,
    a_failed_failover_with_the_primary_down_leaves_no_standbys,
    a_retried_failover_adopts_the_standbys_serving_after_a_failed_one,
    a_primary_site_rebuilt_empty_is_confirmed_fenced_by_absence,
    a_0_1_plugin_keeps_the_superseded_incarnations,
    a_compensating_unfence_restores_the_fenced_workload,
    a_round_trip_drill_measures_the_way_back,
    a_round_trip_drill_failing_on_its_way_back_leaves_nothing,
    what_a_drill_could_not_tear_down_a_later_run_removes,
    hooks_are_called_at_their_points_with_the_runs_context,
    a_hook_that_refuses_stops_the_failover_one_that_may_fail_does_not,
    a_site_gets_at_most_its_max_calls_at_once,
    hosts_on_one_store_share_a_sites_max_calls,
    unprotect_removes_every_copy_and_applying_again_protects,
    snapshot_hooks_bracket_the_snapshots_even_of_a_stopped_run,
    a_run_keeps_the_plugin_versions_it_started_with,
    the_policy_drills_a_plan_on_its_schedule,
    an_unprotect_waits_for_the_cycle_another_host_is_driving,
    a_failover_to_a_standby_that_does_not_answer_fences_nothing
);

/// A failover whose standby site does not answer stops at its check,
/// before the fence: production keeps serving untouched, nothing is
/// undone because nothing was done, and the plan is protected as before.
async fn a_failover_to_a_standby_that_does_not_answer_fences_nothing(store: Store) {
    let lab = replicated(&store, &plan("30s"), "example").await;
    let before = serving(&lab.a);
    let epoch = store.plan("shop").await.expect("plan").lifecycle.epoch;
    lab.b.set_down(true);
    let (outcome, report) = run_reported(&store, &lab, Workflow::Failover).await;
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    let steps = store.steps(&report.run).await.expect("steps");
    let check = steps
        .iter()
        .find(|s| s.input["action"] == rebound_engine::PREFLIGHT_ACTION)
        .expect("the check");
    assert_eq!(check.input["site"], "lab-b");
    assert!(
        check
            .error
            .as_deref()
            .is_some_and(|e| e.contains("'lab-b' cannot take over")),
        "{check:?}"
    );
    assert!(
        steps
            .iter()
            .filter(|s| s.seq > check.seq)
            .all(|s| s.started_at_ms.is_none()),
        "nothing after the check ran: {steps:#?}"
    );
    assert_eq!(serving(&lab.a), before, "production untouched");
    let life = store.plan("shop").await.expect("plan").lifecycle;
    assert_eq!((life.state, life.epoch), (PlanState::Protected, epoch));

    // Once the site answers, the failover goes through.
    lab.b.set_down(false);
    assert_eq!(
        run(&store, &lab, Workflow::Failover).await,
        Outcome::Succeeded
    );
}

/// An unprotect started while another host drives a replication cycle:
/// the cycle is asked to stop, and the unprotect removes nothing until it
/// has ended (its `quiesce` step done after the cycle's last step), so no
/// snapshot the cycle was taking outlives the unprotect on either site.
async fn an_unprotect_waits_for_the_cycle_another_host_is_driving(store: Store) {
    // Each request answered after 40 ms: the cycle is still running when
    // the unprotect starts.
    let lab = slow_lab(&store).await;
    store
        .put_plan(&plan("30s"), "operator")
        .await
        .expect("plan");
    assert_eq!(
        run(&store, &lab, Workflow::Replication).await,
        Outcome::Succeeded
    );
    let cycle = rebound_engine::trigger(&store, "shop", Workflow::Replication, None, "policy")
        .await
        .expect("cycle");
    let host_a = executor(&store, lab.steps.clone(), "host-a");
    let driving = tokio::spawn(async move { host_a.work_once().await });
    // Until host A has started the cycle's first plugin call.
    for _ in 0..500 {
        let steps = store.steps(&cycle.id).await.expect("steps");
        if steps.iter().any(|s| s.started_at_ms.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let unprotect = rebound_engine::trigger(&store, "shop", Workflow::Unprotect, None, "admin")
        .await
        .expect("unprotect");
    let (run, outcome) = executor(&store, lab.steps.clone(), "host-b")
        .work_once()
        .await
        .expect("work")
        .expect("the unprotect: the cycle is host A's");
    assert_eq!(run.id, unprotect.id);
    assert_eq!(outcome, Outcome::Succeeded);
    let (driven, ended) = driving
        .await
        .expect("host A")
        .expect("work")
        .expect("the cycle");
    assert_eq!(driven.id, cycle.id);
    assert!(
        matches!(ended, Outcome::Cancelled { .. }),
        "stopped at its next stage: {ended:?}"
    );

    let cycle_ended = store
        .steps(&cycle.id)
        .await
        .expect("steps")
        .iter()
        .filter_map(|s| s.finished_at_ms)
        .max()
        .expect("the cycle did something");
    let quiesced = store
        .steps(&unprotect.id)
        .await
        .expect("steps")
        .into_iter()
        .find(|s| s.input["action"] == rebound_engine::QUIESCE_ACTION)
        .and_then(|s| s.finished_at_ms)
        .expect("a quiesce step, done");
    assert!(
        quiesced >= cycle_ended,
        "the unprotect went on at {quiesced}, before the cycle ended at {cycle_ended}"
    );
    no_copies_left(&store, &lab).await;
    no_repeats(&lab);
}

/// `drills.every` through the plugins: once protected, the policy's tick
/// starts the plan's first drill; a host's executor drives it like any
/// (sandbox recovered and torn down, the sites as they were), and the
/// plan meets its drill schedule, the next one due `every` after.
async fn the_policy_drills_a_plan_on_its_schedule(store: Store) {
    let mut weekly = plan("30s");
    weekly.drills.every = Some(rebound_domain::Span::secs(7 * 24 * 3600));
    let lab = replicated(&store, &weekly, "example").await;
    let before = (holdings(&lab.a), holdings(&lab.b));
    let tick = rebound_engine::policy::tick(&store, rebound_engine::now_ms())
        .await
        .expect("tick");
    let [drill] = &tick.scheduled[..] else {
        panic!("one drill scheduled: {tick:?}");
    };
    let (run, outcome) = executor(&store, lab.steps.clone(), "host-a")
        .work_once()
        .await
        .expect("work")
        .expect("the drill");
    assert_eq!((&run.id, run.workflow), (drill, Workflow::Drill));
    assert_eq!(outcome, Outcome::Succeeded);
    left_as_found(&store, &lab, drill, before).await;

    let after = rebound_engine::policy::tick(&store, rebound_engine::now_ms())
        .await
        .expect("tick");
    assert!(after.scheduled.is_empty(), "{after:?}");
    let schedule = after.compliance[0].drill.clone().expect("scheduled drills");
    assert_eq!(schedule.met, Some(true));
    assert_eq!(schedule.last_run.as_deref(), Some(drill.as_str()));
    assert_eq!(
        schedule.due_at_ms,
        Some(run.created_at_ms + 7 * 24 * 3600 * 1000)
    );
    let audit = store.audit_log(100).await.expect("audit");
    assert!(
        audit
            .iter()
            .any(|a| a.principal == "policy" && a.action == "run.create" && a.target == *drill),
        "the policy started it: {audit:#?}"
    );
}

/// Hosts on one store keep a site's `max_calls` together: two hosts
/// calling a site limited to 2 calls reach it with 2 requests at once at
/// the most, where two hosts that each keep the limit by themselves reach
/// it with more. Every slot is given back after. Shared by default on
/// PostgreSQL, where replicas run.
/// Unprotect after a round trip: both sites' recovery points and the
/// incarnations the promotions superseded go (a cycle queued before it is
/// cancelled first), the workloads serving on the primary are untouched,
/// nothing is scheduled or judged while unprotected, and applying the
/// plan again protects it again.
async fn unprotect_removes_every_copy_and_applying_again_protects(store: Store) {
    let lab = replicated(&store, &plan("30s"), "example").await;
    for w in [Workflow::Failover, Workflow::Reprotect, Workflow::Failback] {
        assert_eq!(run(&store, &lab, w).await, Outcome::Succeeded, "{w}");
    }
    let before = serving(&lab.a);
    assert_eq!(before.len(), 3);
    let superseded = |site: &ExampleSite| {
        site.vms()
            .into_iter()
            .filter(|vm| label(vm, WORKLOAD_LABEL).is_some() && label(vm, DRILL_LABEL).is_none())
            .filter(|vm| label(vm, EPOCH_LABEL) != Some("3"))
            .count()
    };
    assert!(
        superseded(&lab.b) > 0,
        "the failover's incarnations, fenced"
    );
    assert!(!lab.b.snapshots().is_empty() && !lab.a.snapshots().is_empty());
    // A cycle queued, not yet driven: cancelled by the unprotect.
    let queued = rebound_engine::trigger(&store, "shop", Workflow::Replication, None, "policy")
        .await
        .expect("cycle");

    let (outcome, report) = run_reported(&store, &lab, Workflow::Unprotect).await;
    assert_eq!(outcome, Outcome::Succeeded, "{report:?}");
    assert_eq!(
        (report.measured_rto_ms, report.rto_met),
        (None, None),
        "nothing recovered, nothing to measure"
    );
    assert_eq!(
        store.run(&queued.id).await.expect("run").status,
        rebound_store::RunStatus::Cancelled
    );
    assert_eq!(
        store.plan("shop").await.expect("plan").lifecycle.state,
        PlanState::Unprotected
    );
    no_copies_left(&store, &lab).await;
    assert_eq!(superseded(&lab.b), 0, "{:?}", lab.b.vms());
    assert_eq!(serving(&lab.a), before, "production untouched");

    // Nothing runs, nothing is judged, until the plan is applied again.
    let refused = rebound_engine::trigger(&store, "shop", Workflow::Drill, None, "operator")
        .await
        .expect_err("unprotected");
    assert!(
        refused
            .to_string()
            .contains("apply the plan's document again"),
        "{refused}"
    );
    let tick = rebound_engine::policy::tick(&store, rebound_engine::now_ms() + 3_600_000)
        .await
        .expect("tick");
    assert!(
        tick.scheduled.is_empty() && tick.events.is_empty(),
        "{tick:?}"
    );
    assert_eq!(tick.compliance[0].phase, None);

    store.put_plan(&plan("30s"), "admin").await.expect("again");
    assert_eq!(
        run(&store, &lab, Workflow::Replication).await,
        Outcome::Succeeded
    );
    let points = store.recovery_points("shop").await.expect("points");
    assert_eq!(points.iter().filter(|p| p.site == "lab-b").count(), 3);
    no_repeats(&lab);
}

/// Hooks around the snapshots: a replication cycle calls `before_snapshot`
/// before its first snapshot starts and `after_snapshot` once every
/// snapshot is taken, before anything replicates, with the workloads
/// snapshotted; a cycle stopped by a failing snapshot still calls the
/// `after_snapshot` hook as it is undone. A failback calls them around its
/// pre-sync only (the final sync copies fenced workloads).
async fn snapshot_hooks_bracket_the_snapshots_even_of_a_stopped_run(store: Store) {
    let (receiver, origin) = Receiver::start().await;
    let mut text = PLAN.replace("GATE", "30s");
    text.push_str(&format!(
        "hooks:\n\
         \x20 - {{ name: quiesce, at: before_snapshot, workflows: [replication, failback], url: {origin}/quiesce }}\n\
         \x20 - {{ name: resume, at: after_snapshot, workflows: [replication, failback], url: {origin}/resume }}\n"
    ));
    let plan = PlanDocument::from_yaml(&text).expect("plan");
    let policy = HookPolicy::new(std::slice::from_ref(&origin), None).expect("policy");
    let lab = lab_hooked(&store, "example", policy).await;
    store.put_plan(&plan, "operator").await.expect("plan");

    let (outcome, report) = run_reported(&store, &lab, Workflow::Replication).await;
    assert_eq!(outcome, Outcome::Succeeded, "{report:?}");
    let calls = receiver.calls();
    let paths: Vec<&str> = calls.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(paths, ["/quiesce", "/resume"]);
    let steps = store.steps(&report.run).await.expect("steps");
    let times = |action: &str| -> Vec<i64> {
        steps
            .iter()
            .filter(|s| s.input["action"] == action)
            .flat_map(|s| [s.started_at_ms, s.finished_at_ms])
            .flatten()
            .collect()
    };
    let (snapshots, copies) = (times("snapshot"), times("replicate"));
    assert!(calls[0].4 <= *snapshots.iter().min().expect("snapshots"));
    assert!(calls[1].4 >= *snapshots.iter().max().expect("snapshots"));
    assert!(calls[1].4 <= *copies.iter().min().expect("copies"));
    assert_eq!(calls[0].3["site"], "lab-a");
    assert_eq!(calls[0].3["workloads"].as_array().map(Vec::len), Some(3));
    assert_eq!(calls[1].3["compensation"], false);

    // A snapshot fails: the run stops, and its undoing resumes.
    let failing = Arc::new(Intercepted {
        steps: lab.steps.clone(),
        intercept: |step: &StepRecord| {
            (step.input["action"] == "snapshot" && step.input["workload"] == "vm-2")
                .then(|| StepError::Fatal("the snapshot failed".into()))
        },
    });
    let (outcome, report) = run_by(&store, failing, Workflow::Replication).await;
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    let calls = receiver.calls();
    let paths: Vec<&str> = calls[2..].iter().map(|c| c.0.as_str()).collect();
    assert_eq!(paths, ["/quiesce", "/resume"]);
    assert_eq!(calls[3].3["compensation"], true);
    assert_eq!(calls[3].3["run"], report.run.as_str());

    // A failback: around its pre-sync, not its final sync.
    let forecast = rebound_engine::dry_run(&store, "shop", Workflow::Replication, 64)
        .await
        .expect("dry-run");
    let hooks = |steps: &[rebound_engine::PlannedStep]| -> Vec<String> {
        steps
            .iter()
            .filter(|s| s.name.starts_with("hook "))
            .map(|s| s.name.clone())
            .collect()
    };
    assert_eq!(
        hooks(&forecast.steps),
        [
            "hook quiesce (before the snapshot)",
            "hook resume (after the snapshot)"
        ]
    );
    let mut lifecycle = store.plan("shop").await.expect("plan").lifecycle;
    lifecycle.state = PlanState::ReadyForFailback;
    let failback = rebound_engine::plan_steps(&plan, &lifecycle, Workflow::Failback);
    let names: Vec<&str> = failback
        .iter()
        .filter(|s| s.input["action"] == "hook")
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "hook quiesce (before the snapshot)",
            "hook resume (after the snapshot)"
        ]
    );
    let fence = failback
        .iter()
        .position(|s| s.input["action"] == "fence")
        .expect("a fence");
    assert!(
        failback[..fence]
            .iter()
            .filter(|s| s.input["action"] == "hook")
            .count()
            == 2
    );
}

async fn hosts_on_one_store_share_a_sites_max_calls(store: Store) {
    let lab = slow_lab(&store).await;
    assert_eq!(lab.steps.shares_calls(), store.replicated());
    let host = |site: &Arc<ExampleSite>, name: &str, shared: bool| {
        let (store, site, name) = (store.clone(), site.clone(), name.to_owned());
        async move {
            let runtime = Arc::new(rebound_runtime::testing::runtime());
            let plugin = rebound_runtime::testing::load(&runtime, "example").await;
            let mut grant = grant(&site, &name);
            grant.max_calls = Some(2);
            let sites = HashMap::from([(name, BoundSite { plugin, grant })]);
            Arc::new(PluginSteps::new(runtime, store, sites).with_shared_calls(shared))
        }
    };
    let calls = |hosts: [Arc<PluginSteps>; 2], site: &'static str| {
        futures_util::future::join_all(hosts.into_iter().flat_map(|host| {
            (0..6).map(move |_| {
                let host = host.clone();
                async move { host.health(site).await.expect("health") }
            })
        }))
    };
    let shared = [
        host(&lab.a, "lab-a", true).await,
        host(&lab.a, "lab-a", true).await,
    ];
    calls(shared, "lab-a").await;
    assert_eq!(lab.a.most_in_flight(), 2, "2 at once across both hosts");
    let apart = [
        host(&lab.b, "lab-b", false).await,
        host(&lab.b, "lab-b", false).await,
    ];
    calls(apart, "lab-b").await;
    assert!(
        lab.b.most_in_flight() > 2,
        "each host alone lets 2 through: {}",
        lab.b.most_in_flight()
    );
    // Given back in the background as each call ends.
    for _ in 0..100 {
        if store.call_slots_held("lab-a").await.expect("held") == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the slots of lab-a are still held");
}

/// This test binary's metrics recorder, installed once: its plugin call
/// counts tell which plugin version served a call.
fn recorder() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).expect("the only recorder");
        handle
    })
}

/// Calls of the example plugin's `version` counted so far.
fn calls_of(version: &str) -> u64 {
    let series = format!("rebound_plugin_calls_total{{plugin=\"example\",version=\"{version}\",");
    recorder()
        .render()
        .lines()
        .filter(|l| l.starts_with(&series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A run keeps the plugin versions it started with: a newer version
/// published while it runs (here as its replications start, its
/// snapshots taken) serves the runs started after, none of this one's
/// calls. Each backend's case publishes a version of its own, so the
/// counts of the two cases running at once do not mix.
async fn a_run_keeps_the_plugin_versions_it_started_with(store: Store) {
    recorder();
    store
        .put_plan(&plan("30s"), "operator")
        .await
        .expect("plan");
    let lab = lab(&store).await;
    let newer = if store.replicated() { "0.1.2" } else { "0.1.1" };
    let newer_plugin = lab
        .runtime
        .load(&rebound_runtime::testing::release("example", newer))
        .await
        .expect("load");
    // (Loading it called its `describe`.)
    let loaded = calls_of(newer);
    let runtime = lab.runtime.clone();
    let published = std::sync::atomic::AtomicBool::new(false);
    let publish_midway = Arc::new(Intercepted {
        steps: lab.steps.clone(),
        intercept: move |step: &StepRecord| {
            if step.input["action"] == "replicate"
                && !published.swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                runtime.install(newer_plugin.clone());
            }
            None
        },
    });
    let (outcome, first) = run_by(&store, publish_midway, Workflow::Replication).await;
    assert_eq!(outcome, Outcome::Succeeded);
    assert_eq!(
        lab.runtime
            .active("example")
            .map(|p| p.version())
            .as_deref(),
        Some(newer),
        "published during the run"
    );
    assert_eq!(
        calls_of(newer),
        loaded,
        "no call of the run went to {newer}"
    );
    let pins = store.run_plugins(&first.run).await.expect("pins");
    assert_eq!(
        pins.get("example").map(String::as_str),
        Some("0.1.0"),
        "{pins:?}"
    );

    // The next run starts on the version active now.
    let (outcome, second) = run_reported(&store, &lab, Workflow::Replication).await;
    assert_eq!(outcome, Outcome::Succeeded);
    assert!(calls_of(newer) > loaded, "the next run calls {newer}");
    let pins = store.run_plugins(&second.run).await.expect("pins");
    assert_eq!(pins.get("example").map(String::as_str), Some(newer));
}

/// A call a hook receiver got: path, idempotency key, signature, body,
/// when (ms since the epoch).
type Call = (String, String, String, Value, i64);

/// What a hook receiver on loopback was sent, and what it answers.
#[derive(Clone, Default)]
struct Receiver {
    calls: Arc<std::sync::Mutex<Vec<Call>>>,
    /// Status by path (200 when not set).
    answers: Arc<std::sync::Mutex<HashMap<String, u16>>>,
}

impl Receiver {
    /// Listening on loopback: the receiver and its origin.
    async fn start() -> (Self, String) {
        let receiver = Self::default();
        let state = receiver.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: String| {
                let state = state.clone();
                async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                    let path = uri.path().to_owned();
                    state.calls.lock().expect("calls").push((
                        path.clone(),
                        header("idempotency-key"),
                        header("rebound-signature"),
                        serde_json::from_str(&body).unwrap_or(Value::Null),
                        now,
                    ));
                    let status = state.answers.lock().expect("answers").get(&path).copied();
                    axum::http::StatusCode::from_u16(status.unwrap_or(200))
                        .unwrap_or(axum::http::StatusCode::OK)
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let origin = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, origin)
    }

    fn answer(&self, path: &str, status: u16) {
        self.answers
            .lock()
            .expect("answers")
            .insert(path.to_owned(), status);
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("calls").clone()
    }
}

/// The plan with hooks at the three points, calling `origin`.
fn hooked_plan(origin: &str) -> PlanDocument {
    let mut text = PLAN.replace("GATE", "30s");
    text.push_str(&format!(
        "hooks:\n\
         \x20 - {{ name: open-change, at: before_fence, url: {origin}/before }}\n\
         \x20 - {{ name: warm, at: after_recovery, workflows: [failover, drill], url: {origin}/after }}\n\
         \x20 - {{ name: close-change, at: after_cutover, url: {origin}/cutover, on_failure: continue }}\n"
    ));
    PlanDocument::from_yaml(&text).expect("plan with hooks")
}

const HOOK_SECRET: &str = "hook-secret";

/// Hooks are called where the plan puts them — before the fences, after
/// every workload recovered and passed its gate, after the last redirect
/// — with the run's context (what was recovered where, with its
/// addresses), the step's idempotency key and the host's signature. Only
/// origins the host allows are called; the RTO does not count a hook after
/// the cutover. A drill calls the hooks that list it, in its sandbox.
async fn hooks_are_called_at_their_points_with_the_runs_context(store: Store) {
    let (receiver, origin) = Receiver::start().await;
    let plan = hooked_plan(&origin);
    let closed = lab(&store).await;
    let refused = closed
        .steps
        .check_feasible(&plan)
        .await
        .expect_err("a host that allows no hook")
        .to_string();
    assert!(
        refused.contains("hooks[0].url") && refused.contains("to hooks.allow"),
        "{refused}"
    );
    let policy = HookPolicy::new(std::slice::from_ref(&origin), Some(HOOK_SECRET)).expect("policy");
    let lab = lab_hooked(&store, "example", policy).await;
    lab.steps.check_feasible(&plan).await.expect("allowed");
    store.put_plan(&plan, "operator").await.expect("plan");
    assert_eq!(
        run(&store, &lab, Workflow::Replication).await,
        Outcome::Succeeded
    );
    assert!(receiver.calls().is_empty(), "a cycle passes no hook point");

    let (outcome, report) = run_reported(&store, &lab, Workflow::Failover).await;
    assert_eq!(outcome, Outcome::Succeeded, "{report:?}");
    let calls = receiver.calls();
    let paths: Vec<&str> = calls.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(paths, ["/before", "/after", "/cutover"]);
    let steps = store.steps(&report.run).await.expect("steps");
    let step_of = |hook: &str| {
        steps
            .iter()
            .find(|s| s.input["hook"] == hook)
            .unwrap_or_else(|| panic!("a step of hook {hook}"))
    };
    let first_fence = steps
        .iter()
        .filter(|s| s.input["action"] == "fence")
        .filter_map(|s| s.started_at_ms)
        .min()
        .expect("fenced");
    assert!(calls[0].4 <= first_fence, "called before any fence started");
    let last_gate = steps
        .iter()
        .filter(|s| s.input["action"] == "gate")
        .filter_map(|s| s.finished_at_ms)
        .max()
        .expect("gated");
    assert!(calls[1].4 >= last_gate, "called once every gate passed");
    for (call, hook) in calls.iter().zip(["open-change", "warm", "close-change"]) {
        let step = step_of(hook);
        assert_eq!(call.1, step.idempotency_key, "{hook}");
        let body = serde_json::to_vec(&call.3).expect("body");
        assert_eq!(
            call.2,
            rebound_engine::hook_signature(HOOK_SECRET.as_bytes(), &body),
            "{hook}: signed"
        );
        assert_eq!(
            (
                &call.3["hook"],
                &call.3["run"],
                &call.3["workflow"],
                &call.3["site"]
            ),
            (
                &json!(hook),
                &json!(report.run),
                &json!("failover"),
                &json!("lab-b")
            )
        );
        assert_eq!(step.output.as_ref().expect("output")["status"], 200);
    }
    let recovered = calls[1].3["workloads"].as_array().expect("workloads");
    assert_eq!(recovered.len(), 3, "{recovered:?}");
    let on_b: Vec<String> = serving(&lab.b)
        .iter()
        .filter_map(|vm| vm["id"].as_str().map(str::to_owned))
        .collect();
    assert!(
        recovered.iter().all(|w| w["id"]
            .as_str()
            .is_some_and(|id| on_b.iter().any(|b| b == id))
            && w["isolated"] == false),
        "{recovered:?} on {on_b:?}"
    );
    let timing = |hook: &str| {
        let seq = step_of(hook).seq;
        report
            .steps
            .iter()
            .find(|t| t.seq == seq)
            .expect("timing")
            .elapsed_ms
    };
    assert!(timing("warm").is_some(), "after the recovery: in the RTO");
    assert_eq!(timing("close-change"), None, "after the cutover: not in it");

    // Back, then a drill: the hook that lists drills, in the sandbox.
    assert_eq!(
        run(&store, &lab, Workflow::Reprotect).await,
        Outcome::Succeeded
    );
    assert_eq!(run(&store, &lab, Workflow::Drill).await, Outcome::Succeeded);
    let calls = receiver.calls();
    let last = calls.last().expect("the drill's call");
    assert_eq!(calls.len(), 4, "only `warm` lists drills");
    assert_eq!(
        (last.0.as_str(), &last.3["workflow"]),
        ("/after", &json!("drill"))
    );
    let sandbox = last.3["workloads"].as_array().expect("workloads");
    assert!(
        sandbox.len() == 3 && sandbox.iter().all(|w| w["isolated"] == true),
        "{sandbox:?}"
    );
}

/// A hook whose receiver refuses (4xx) fails its step, and the failover
/// is undone like any failed after its fences (the old primary serves
/// again); a hook that may fail (`on_failure: continue`) records the
/// failure and the run goes on.
async fn a_hook_that_refuses_stops_the_failover_one_that_may_fail_does_not(store: Store) {
    let (receiver, origin) = Receiver::start().await;
    let policy = HookPolicy::new(std::slice::from_ref(&origin), None).expect("policy");
    store
        .put_plan(&hooked_plan(&origin), "operator")
        .await
        .expect("plan");
    let lab = lab_hooked(&store, "example", policy).await;
    assert_eq!(
        run(&store, &lab, Workflow::Replication).await,
        Outcome::Succeeded
    );
    receiver.answer("/after", 409);
    let Outcome::Failed { error, .. } = run(&store, &lab, Workflow::Failover).await else {
        panic!("the failover must stop at its hook");
    };
    assert!(
        error.contains("hook 'warm'") && error.contains("answered 409"),
        "{error}"
    );
    let l = store.plan("shop").await.expect("plan").lifecycle;
    assert_eq!(
        (l.state, l.primary.as_str()),
        (PlanState::Protected, "lab-a")
    );
    assert!(
        lab.a
            .vms()
            .iter()
            .all(|vm| vm["power"] == "running" && vm["fenced"] == false),
        "the old primary serves again"
    );
    assert!(
        !receiver.calls().iter().any(|c| c.0 == "/cutover"),
        "no later hook"
    );

    receiver.answer("/after", 200);
    receiver.answer("/cutover", 503);
    let (outcome, report) = run_reported(&store, &lab, Workflow::Failover).await;
    assert_eq!(outcome, Outcome::Succeeded, "{report:?}");
    let steps = store.steps(&report.run).await.expect("steps");
    let close = steps
        .iter()
        .find(|s| s.input["hook"] == "close-change")
        .expect("close-change");
    let output = close.output.as_ref().expect("output");
    assert_eq!(output["failed"], true);
    assert!(
        output["reason"].as_str().is_some_and(|r| r.contains("503")),
        "{output}"
    );
    assert!(
        !receiver.calls().iter().any(|c| c.2.starts_with("sha256=")),
        "no secret, no signature"
    );
}

/// A site's `max_calls` bounds the calls of its plugin in flight at once,
/// whatever a stage would run together: the three snapshots of a cycle
/// reach a site limited to one call one request at a time, and overlap
/// once the limit is the default again.
async fn a_site_gets_at_most_its_max_calls_at_once(store: Store) {
    store
        .put_plan(&plan("30s"), "operator")
        .await
        .expect("plan");
    let lab = slow_lab(&store).await;
    let bind_a = |max_calls: Option<usize>| {
        let mut grant = grant(&lab.a, "lab-a");
        grant.max_calls = max_calls;
        lab.steps.bind(
            "lab-a",
            BoundSite {
                plugin: lab.plugin.clone(),
                grant,
            },
        );
    };
    bind_a(Some(1));
    assert_eq!(
        run(&store, &lab, Workflow::Replication).await,
        Outcome::Succeeded
    );
    assert_eq!(lab.a.most_in_flight(), 1, "one call at a time");
    bind_a(None);
    assert_eq!(
        run(&store, &lab, Workflow::Replication).await,
        Outcome::Succeeded
    );
    assert!(
        lab.a.most_in_flight() > 1,
        "the default lets the stage's snapshots overlap: {}",
        lab.a.most_in_flight()
    );
}

//! Workflows through the engine: failover → reprotect → failback, a drill
//! and a migration, each planned from the plan, run by the executor against
//! an in-process provider, and moving the plan's lifecycle — on SQLite and
//! PostgreSQL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use rebound_domain::{PlanDocument, PlanState, Workflow};
use rebound_engine::{
    Executor, ExecutorConfig, Outcome, Progress, Started, StepError, StepRunner, plan_steps,
};
use rebound_store::{RunStatus, StepRecord, StepStatus, Store, StoreError};
use serde_json::{Value, json};

const PLAN: &str = include_str!("../../../docs/examples/plan.yaml");

/// Acts at once, counting actions by idempotency key; its fences can be
/// made to fail to confirm.
#[derive(Default)]
struct Provider {
    actions: Mutex<HashMap<String, String>>,
    fence_unconfirmed: bool,
    /// Steps with this action fail for good.
    broken: Option<&'static str>,
    /// An operator cancels the run as the first step with this action
    /// starts (the run is being driven).
    cancel_on: Option<(&'static str, Store)>,
}

impl StepRunner for Provider {
    fn start<'a>(&'a self, step: &'a StepRecord) -> BoxFuture<'a, Result<Started, StepError>> {
        Box::pin(async move {
            let action = step.input["action"].as_str().unwrap_or_default().to_owned();
            self.actions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(step.idempotency_key.clone(), action.clone());
            if let Some((on, store)) = &self.cancel_on
                && on == &action
            {
                let asked = store.cancel_run(&step.run, "operator").await;
                assert!(
                    matches!(asked, Ok(rebound_store::Cancel::Requested)),
                    "{asked:?}"
                );
            }
            if self.broken == Some(action.as_str()) {
                return Err(StepError::Fatal(format!(
                    "{action} refused: quota exceeded"
                )));
            }
            Ok(Started::Done(match action.as_str() {
                "fence" => json!({ "fenced": !self.fence_unconfirmed }),
                _ => json!({ "ok": true }),
            }))
        })
    }

    fn poll<'a>(
        &'a self,
        _: &'a StepRecord,
        _: &'a Value,
    ) -> BoxFuture<'a, Result<Progress, StepError>> {
        Box::pin(async { Ok(Progress::Running) })
    }
}

async fn run(
    store: &Store,
    provider: Arc<Provider>,
    workflow: Workflow,
) -> Result<Outcome, StoreError> {
    rebound_engine::trigger(store, "shop", workflow, None, "operator")
        .await
        .map_err(|rebound_engine::EngineError::Store(e)| e)?;
    let executor = Executor::new(
        store.clone(),
        provider,
        ExecutorConfig {
            lease: Duration::from_secs(10),
            ..ExecutorConfig::new("host-a")
        },
    );
    let (run, outcome) = executor
        .work_once()
        .await
        .map_err(|e| StoreError::Conflict(e.to_string()))?
        .expect("the run just started");
    let Outcome::WaitingApproval { .. } = outcome else {
        return Ok(outcome);
    };
    // The plan wants an operator's approval: the run waits with its lease
    // released, then resumes once approved.
    let waiting = store.run(&run.id).await?;
    assert_eq!(waiting.status, RunStatus::WaitingApproval);
    assert_eq!(waiting.lease_owner, None);
    assert!(
        executor.work_once().await.expect("work").is_none(),
        "a waiting run is not claimed"
    );
    store.approve(&run.id, "approver").await?;
    let (_, outcome) = executor
        .work_once()
        .await
        .map_err(|e| StoreError::Conflict(e.to_string()))?
        .expect("the approved run");
    Ok(outcome)
}

/// Declining a failback at its approval gate cancels the run: nothing was
/// fenced, and the plan is back where it was, ready for a later failback.
async fn a_failback_declined_at_its_approval_changes_nothing(store: Store) {
    store
        .put_plan(&PlanDocument::from_yaml(PLAN).expect("plan"), "operator")
        .await
        .expect("plan");
    let provider = Arc::new(Provider::default());
    for workflow in [Workflow::Failover, Workflow::Reprotect] {
        let outcome = run(&store, provider.clone(), workflow).await.expect("run");
        assert_eq!(outcome, Outcome::Succeeded);
    }
    let before = store.plan("shop").await.expect("plan").lifecycle;
    let plan = store.plan("shop").await.expect("plan");
    let steps = plan_steps(&plan.document, &plan.lifecycle, Workflow::Failback);
    let started = store
        .start_workflow("shop", Workflow::Failback, None, "operator", &steps)
        .await
        .expect("start");
    let executor = Executor::new(
        store.clone(),
        provider.clone(),
        ExecutorConfig::new("host-a"),
    );
    let (_, outcome) = executor.work_once().await.expect("work").expect("run");
    let Outcome::WaitingApproval { step } = outcome else {
        panic!("the failback should wait for approval, got {outcome:?}");
    };
    assert_eq!(
        steps[usize::try_from(step).expect("seq")].input["action"],
        "approval"
    );
    let fences = |p: &Provider| {
        p.actions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(k, a)| k.starts_with(&started.id) && *a == "fence")
            .count()
    };
    assert_eq!(
        fences(&provider),
        0,
        "nothing is fenced before the approval"
    );
    store
        .cancel_run(&started.id, "approver")
        .await
        .expect("cancel");
    assert_eq!(
        store.run(&started.id).await.expect("run").status,
        RunStatus::Cancelled
    );
    assert_eq!(store.plan("shop").await.expect("plan").lifecycle, before);
    let err = store
        .approve(&started.id, "late")
        .await
        .expect_err("finished");
    assert!(err.to_string().contains("cancelled"), "{err}");
    let err = store
        .cancel_run(&started.id, "again")
        .await
        .expect_err("finished");
    assert!(err.to_string().contains("has not finished"), "{err}");
    // A later failback still works.
    assert_eq!(
        run(&store, provider.clone(), Workflow::Failback)
            .await
            .expect("failback"),
        Outcome::Succeeded
    );
    assert_eq!(
        store.plan("shop").await.expect("plan").lifecycle.state,
        PlanState::Protected
    );
}

/// A failback that fails after fencing the serving site compensates: what
/// it recovered on the standby is fenced, the fenced workloads are
/// unfenced (same epoch) and traffic goes back, so the old primary serves
/// again, and the plan is ready for failback.
async fn a_failback_failing_after_its_fence_unfences_the_old_primary(store: Store) {
    store
        .put_plan(&PlanDocument::from_yaml(PLAN).expect("plan"), "operator")
        .await
        .expect("plan");
    let provider = Arc::new(Provider::default());
    for workflow in [Workflow::Failover, Workflow::Reprotect] {
        let outcome = run(&store, provider.clone(), workflow).await.expect("run");
        assert_eq!(outcome, Outcome::Succeeded);
    }
    let before = store.plan("shop").await.expect("plan").lifecycle;
    let broken = Arc::new(Provider {
        broken: Some("gate"),
        ..Provider::default()
    });
    let outcome = run(&store, broken.clone(), Workflow::Failback)
        .await
        .expect("failback");
    let Outcome::Failed { error, .. } = outcome else {
        panic!("expected the failback to fail, got {outcome:?}");
    };
    assert!(error.contains("quota exceeded"), "{error}");
    let runs = store.runs_of("shop").await.expect("runs");
    let failback = &runs[0];
    assert_eq!(failback.status, RunStatus::Failed);
    let steps = store.steps(&failback.id).await.expect("steps");
    let compensation: Vec<(&str, StepStatus)> = steps
        .iter()
        .filter(|s| s.input["compensation"] == true)
        .map(|s| (s.name.as_str(), s.status))
        .collect();
    assert_eq!(
        compensation,
        [
            (
                "fence db-1 on openstack-east (undo its recovery)",
                StepStatus::Succeeded
            ),
            ("unfence db-1 on kubevirt-west", StepStatus::Succeeded),
            ("unfence app-1 on kubevirt-west", StepStatus::Succeeded),
            ("unfence web-1 on kubevirt-west", StepStatus::Succeeded),
        ],
        "the recovered tier is fenced first (never two primaries); nothing was redirected yet, so only the fences are undone"
    );
    let fence_epoch = steps
        .iter()
        .find(|s| s.input["action"] == "fence")
        .expect("fence")
        .input["epoch"]
        .clone();
    assert!(
        steps
            .iter()
            .filter(|s| s.input["action"] == "unfence")
            .all(|s| s.input["epoch"] == fence_epoch)
    );
    // The last good copy stays primary, ready for another failback.
    let after = store.plan("shop").await.expect("plan").lifecycle;
    assert_eq!(after.state, PlanState::ReadyForFailback);
    assert_eq!(after.primary, before.primary);
    let audit = store.audit_log(50).await.expect("audit");
    assert!(
        audit
            .iter()
            .any(|e| e.action == "run.steps_added" && e.target == failback.id)
    );
}

async fn round_trip(store: Store) {
    store
        .put_plan(&PlanDocument::from_yaml(PLAN).expect("plan"), "operator")
        .await
        .expect("plan");
    let provider = Arc::new(Provider::default());

    assert_eq!(
        run(&store, provider.clone(), Workflow::Failover)
            .await
            .expect("failover"),
        Outcome::Succeeded
    );
    let l = store.plan("shop").await.expect("plan").lifecycle;
    assert_eq!(
        (l.state, l.primary.as_str(), l.epoch),
        (PlanState::FailedOver, "kubevirt-west", 2)
    );

    let err = run(&store, provider.clone(), Workflow::Failback)
        .await
        .expect_err("reprotect first");
    assert!(err.to_string().contains("run reprotect first"), "{err}");

    assert_eq!(
        run(&store, provider.clone(), Workflow::Reprotect)
            .await
            .expect("reprotect"),
        Outcome::Succeeded
    );
    assert_eq!(
        store.plan("shop").await.expect("plan").lifecycle.state,
        PlanState::ReadyForFailback
    );

    assert_eq!(
        run(&store, provider.clone(), Workflow::Drill)
            .await
            .expect("drill"),
        Outcome::Succeeded
    );
    let l = store.plan("shop").await.expect("plan").lifecycle;
    assert_eq!(
        (l.state, l.drilling),
        (PlanState::ReadyForFailback, false),
        "a drill changes no state"
    );

    assert_eq!(
        run(&store, provider.clone(), Workflow::Failback)
            .await
            .expect("failback"),
        Outcome::Succeeded
    );
    let l = store.plan("shop").await.expect("plan").lifecycle;
    assert_eq!(
        (l.state, l.primary.as_str(), l.standby.as_str(), l.epoch),
        (PlanState::Protected, "openstack-east", "kubevirt-west", 3)
    );

    // Every planned step of the four runs reached the provider.
    let actions = provider
        .actions
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .len();
    assert!(actions > 20, "every step acted ({actions})");

    // A site's failover preview forecasts from the plan's measured runs, as
    // the plan's own dry-run does.
    let preview = rebound_engine::preview_site_failover(&store, "openstack-east", 64)
        .await
        .expect("preview");
    let record = store.plan("shop").await.expect("plan");
    let own = rebound_engine::dry_run_of(
        &store,
        &record.document,
        &record.lifecycle,
        Workflow::Failover,
        64,
    )
    .await
    .expect("dry-run");
    assert!(own.basis.is_some(), "measured: {own:?}");
    assert_eq!(preview.plans.len(), 1);
    assert_eq!(preview.plans[0].forecast.as_ref(), Some(&own));
}

async fn an_unconfirmed_fence_keeps_a_failback_from_promoting(store: Store) {
    store
        .put_plan(&PlanDocument::from_yaml(PLAN).expect("plan"), "operator")
        .await
        .expect("plan");
    let good = Arc::new(Provider::default());
    run(&store, good.clone(), Workflow::Failover)
        .await
        .expect("failover");
    run(&store, good, Workflow::Reprotect)
        .await
        .expect("reprotect");

    let stubborn = Arc::new(Provider {
        fence_unconfirmed: true,
        ..Provider::default()
    });
    let outcome = run(&store, stubborn, Workflow::Failback)
        .await
        .expect("failback ran");
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    let l = store.plan("shop").await.expect("plan").lifecycle;
    assert_eq!(
        (l.state, l.primary.as_str(), l.epoch),
        (PlanState::ReadyForFailback, "kubevirt-west", 2),
        "the last good copy stays primary"
    );
    let runs = store.audit_log(50).await.expect("audit");
    assert!(
        runs.iter()
            .any(|e| e.action == "plan.failback.finish" && e.detail["refused"].is_string()),
        "the refusal is audited"
    );
}

async fn the_failover_plan_recovers_tier_by_tier(store: Store) {
    let plan = PlanDocument::from_yaml(PLAN).expect("plan");
    let record = store.put_plan(&plan, "operator").await.expect("plan");
    let steps = plan_steps(&plan, &record.lifecycle, Workflow::Failover);
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "check that kubevirt-west can take over (its API answers)",
            "fence db-1 on openstack-east",
            "fence app-1 on openstack-east",
            "fence web-1 on openstack-east",
            "materialize db-1 on kubevirt-west",
            "health gate db-1 on kubevirt-west",
            "materialize app-1 on kubevirt-west",
            "health gate app-1 on kubevirt-west",
            "materialize web-1 on kubevirt-west",
            "health gate web-1 on kubevirt-west",
            "redirect 10% to kubevirt-west",
            "redirect 50% to kubevirt-west",
            "redirect 100% to kubevirt-west",
        ]
    );
    assert_eq!(
        steps[1].input["best_effort"], true,
        "an unplanned failover cannot wait for a dead primary"
    );
    let run = store
        .start_workflow(
            "shop",
            Workflow::Failover,
            Some("pager-42"),
            "operator",
            &steps,
        )
        .await
        .expect("run");
    let again = store
        .start_workflow(
            "shop",
            Workflow::Failover,
            Some("pager-42"),
            "operator",
            &steps,
        )
        .await
        .expect("same key, same run");
    assert_eq!(run.id, again.id);
    assert_eq!(
        store.steps(&run.id).await.expect("steps").len(),
        steps.len()
    );
    assert_eq!(
        store.run(&run.id).await.expect("run").status,
        RunStatus::Pending
    );
}

/// A failover cancelled while a host drives it stops at the next stage,
/// fences what it recovered, unfences the old primary and rolls the plan
/// back; the run ends `cancelled`.
async fn a_running_failover_cancelled_undoes_itself(store: Store) {
    store
        .put_plan(&PlanDocument::from_yaml(PLAN).expect("plan"), "operator")
        .await
        .expect("plan");
    let before = store.plan("shop").await.expect("plan").lifecycle;
    let provider = Arc::new(Provider {
        cancel_on: Some(("materialize", store.clone())),
        ..Provider::default()
    });
    let outcome = run(&store, provider, Workflow::Failover)
        .await
        .expect("failover");
    assert_eq!(
        outcome,
        Outcome::Cancelled {
            by: "operator".into()
        }
    );
    let runs = store.runs_of("shop").await.expect("runs");
    assert_eq!(runs[0].status, RunStatus::Cancelled);
    let steps = store.steps(&runs[0].id).await.expect("steps");
    let materialized = steps
        .iter()
        .filter(|s| s.input["action"] == "materialize" && s.status == StepStatus::Succeeded)
        .count();
    assert_eq!(
        materialized, 1,
        "the stage in flight finished, no later one started"
    );
    assert!(
        steps
            .iter()
            .filter(|s| s.input["action"] == "gate")
            .all(|s| s.status == StepStatus::Pending)
    );
    let undone: Vec<&str> = steps
        .iter()
        .filter(|s| s.input["compensation"] == true)
        .map(|s| s.input["action"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(undone, ["fence", "unfence", "unfence", "unfence"]);
    assert_eq!(
        store.plan("shop").await.expect("plan").lifecycle.state,
        before.state
    );
    assert_eq!(
        store.plan("shop").await.expect("plan").lifecycle.primary,
        before.primary
    );
    let audit = store.audit_log(50).await.expect("audit");
    assert!(
        audit
            .iter()
            .any(|e| e.action == "run.cancel_requested" && e.principal == "operator")
    );
    let err = store
        .cancel_run(&runs[0].id, "again")
        .await
        .expect_err("finished");
    assert!(err.to_string().contains("has not finished"), "{err}");
}

/// A drill that fails half way tears its sandbox down anyway.
async fn a_failed_drill_tears_its_sandbox_down(store: Store) {
    store
        .put_plan(&PlanDocument::from_yaml(PLAN).expect("plan"), "operator")
        .await
        .expect("plan");
    let broken = Arc::new(Provider {
        broken: Some("gate"),
        ..Provider::default()
    });
    let outcome = run(&store, broken, Workflow::Drill).await.expect("drill");
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    let runs = store.runs_of("shop").await.expect("runs");
    let steps = store.steps(&runs[0].id).await.expect("steps");
    let compensation: Vec<(&str, StepStatus)> = steps
        .iter()
        .filter(|s| s.input["compensation"] == true)
        .map(|s| (s.name.as_str(), s.status))
        .collect();
    assert_eq!(
        compensation,
        [(
            "tear down the drill sandbox on kubevirt-west",
            StepStatus::Succeeded
        )]
    );
    assert_eq!(
        store.plan("shop").await.expect("plan").lifecycle.state,
        PlanState::Protected
    );
}

/// A failover preempts the plan's unfinished replication cycle and drill:
/// both are cancelled as it starts (audited as preempted by it), the drill
/// no longer holds the plan, and the failover runs alone.
async fn a_failover_preempts_replication_and_drills(store: Store) {
    store
        .put_plan(&PlanDocument::from_yaml(PLAN).expect("plan"), "operator")
        .await
        .expect("plan");
    let cycle = rebound_engine::trigger(&store, "shop", Workflow::Replication, None, "policy")
        .await
        .expect("cycle");
    let drill = rebound_engine::trigger(&store, "shop", Workflow::Drill, None, "operator")
        .await
        .expect("drill");
    assert!(store.plan("shop").await.expect("plan").lifecycle.drilling);
    let outcome = run(&store, Arc::new(Provider::default()), Workflow::Failover)
        .await
        .expect("failover");
    assert_eq!(outcome, Outcome::Succeeded);
    for id in [&cycle.id, &drill.id] {
        assert_eq!(
            store.run(id).await.expect("run").status,
            RunStatus::Cancelled
        );
    }
    let l = store.plan("shop").await.expect("plan").lifecycle;
    assert_eq!(l.state, PlanState::FailedOver);
    assert!(!l.drilling);
    let audit = store.audit_log(50).await.expect("audit");
    let preempted: Vec<&str> = audit
        .iter()
        .filter(|e| e.action == "run.cancel" && e.principal.contains("preempted by failover"))
        .map(|e| e.target.as_str())
        .collect();
    assert_eq!(preempted.len(), 2, "{audit:?}");
}

/// A site lost: one call fails over every plan it serves (each its own
/// run, driven to the end), leaves a plan served elsewhere alone, names a
/// plan that cannot fail over now with the reason, and — repeated with its
/// idempotency key after the failovers moved the plans off the site —
/// returns the same runs and starts nothing.
async fn a_site_fails_over_every_plan_it_serves(store: Store) {
    let plan = |name: &str, source: &str, target: &str| {
        let yaml = PLAN
            .replacen("name: shop", &format!("name: {name}"), 1)
            .replacen("source: openstack-east", &format!("source: {source}"), 1)
            .replacen("target: kubevirt-west", &format!("target: {target}"), 1);
        PlanDocument::from_yaml(&yaml).expect("plan")
    };
    for (name, source, target) in [
        ("shop", "openstack-east", "kubevirt-west"),
        ("crm", "openstack-east", "kubevirt-west"),
        ("wiki", "openstack-east", "kubevirt-west"),
        ("mail", "kubevirt-west", "openstack-east"),
    ] {
        store
            .put_plan(&plan(name, source, target), "operator")
            .await
            .expect("plan");
    }
    // The wiki is failing over already.
    let wiki = rebound_engine::trigger(&store, "wiki", Workflow::Failover, None, "operator")
        .await
        .expect("wiki's failover");
    let lost = rebound_engine::fail_over_site(&store, "openstack-east", Some("k1"), "operator")
        .await
        .expect("site failover");
    assert_eq!(lost.site, "openstack-east");
    let plans: Vec<(&str, bool)> = lost
        .started
        .iter()
        .map(|p| (p.plan.as_str(), p.replayed))
        .collect();
    assert_eq!(plans, [("crm", false), ("shop", false)]);
    assert_eq!(lost.skipped.len(), 1, "{lost:?}");
    assert_eq!(lost.skipped[0].plan, "wiki");
    assert!(
        lost.skipped[0]
            .reason
            .contains("cannot start failover: the plan is failing_over"),
        "{}",
        lost.skipped[0].reason
    );
    let audit = store.audit_log(20).await.expect("audit");
    let entry = audit
        .iter()
        .find(|e| e.action == "site.failover")
        .expect("the request audited");
    assert_eq!(
        (entry.principal.as_str(), entry.target.as_str()),
        ("operator", "openstack-east")
    );
    assert_eq!(entry.detail["skipped"], json!(["wiki"]));
    let provider = Arc::new(Provider::default());
    let executor = Executor::new(
        store.clone(),
        provider.clone(),
        ExecutorConfig::new("host-a"),
    );
    let mut finished = Vec::new();
    while let Some((run, outcome)) = executor.work_once().await.expect("work") {
        assert_eq!(outcome, Outcome::Succeeded, "{}", run.plan);
        finished.push(run.id);
    }
    finished.sort();
    let mut expected = vec![
        lost.started[0].run.clone(),
        lost.started[1].run.clone(),
        wiki.id,
    ];
    expected.sort();
    assert_eq!(finished, expected);
    for (name, primary) in [
        ("shop", "kubevirt-west"),
        ("crm", "kubevirt-west"),
        ("wiki", "kubevirt-west"),
        ("mail", "kubevirt-west"),
    ] {
        let l = store.plan(name).await.expect("plan").lifecycle;
        assert_eq!(l.primary, primary, "{name}");
        let state = if name == "mail" {
            PlanState::Protected
        } else {
            PlanState::FailedOver
        };
        assert_eq!(l.state, state, "{name}");
    }
    let actions = provider.actions.lock().expect("actions").len();
    let again = rebound_engine::fail_over_site(&store, "openstack-east", Some("k1"), "operator")
        .await
        .expect("repeated");
    assert_eq!(again.started.len(), 2);
    assert!(again.started.iter().all(|p| p.replayed));
    assert_eq!(again.started, {
        let mut s = lost.started.clone();
        s.iter_mut().for_each(|p| p.replayed = true);
        s
    });
    assert!(again.skipped.is_empty(), "{again:?}");
    // Without the key, the site serves no plan any more.
    let unkeyed = rebound_engine::fail_over_site(&store, "openstack-east", None, "operator")
        .await
        .expect("unkeyed");
    assert!(unkeyed.started.is_empty() && unkeyed.skipped.is_empty());
    assert!(executor.work_once().await.expect("work").is_none());
    assert_eq!(provider.actions.lock().expect("actions").len(), actions);
    // A key its caller used before for something else is no replay: the
    // plan is named with why (the others there are failed over already).
    let drill =
        rebound_engine::trigger(&store, "mail", Workflow::Drill, Some("k2/mail"), "operator")
            .await
            .expect("drill");
    let lost = rebound_engine::fail_over_site(&store, "kubevirt-west", Some("k2"), "operator")
        .await
        .expect("site failover");
    assert!(lost.started.is_empty(), "{lost:?}");
    let mail = lost
        .skipped
        .iter()
        .find(|p| p.plan == "mail")
        .expect("mail");
    assert!(
        mail.reason
            .contains("idempotency key already used for drill of plan 'mail'"),
        "{}",
        mail.reason
    );
    assert_eq!(lost.skipped.len(), 4, "{lost:?}");
    store
        .cancel_run(&drill.id, "operator")
        .await
        .expect("cancel");
}

/// The old primary lost for good: a permanent failover protects the new
/// primary onto a third site — every copy made there, the plan protected
/// from the new primary to it, its next cycle replicating there. One that
/// fails gives the old standby back; a new site equal to the primary, or
/// given to another workflow, is refused and changes nothing.
async fn a_permanent_failover_protects_onto_a_new_site(store: Store) {
    store
        .put_plan(&PlanDocument::from_yaml(PLAN).expect("plan"), "operator")
        .await
        .expect("plan");
    let outcome = run(&store, Arc::new(Provider::default()), Workflow::Failover)
        .await
        .expect("failover");
    assert_eq!(outcome, Outcome::Succeeded);
    let failed_over = store.plan("shop").await.expect("plan");
    for (workflow, site, refusal) in [
        (
            Workflow::PermanentFailover,
            "kubevirt-west",
            "the new standby must be another site than the primary 'kubevirt-west'",
        ),
        (
            Workflow::Reprotect,
            "aws-east",
            "only a permanent failover protects onto a new site",
        ),
    ] {
        let err =
            rebound_engine::trigger_to(&store, "shop", workflow, Some(site), None, "operator")
                .await
                .expect_err("refused");
        assert!(err.to_string().contains(refusal), "{err}");
        assert_eq!(store.plan("shop").await.expect("plan"), failed_over);
    }
    let executor = |provider: Arc<Provider>| {
        Executor::new(store.clone(), provider, ExecutorConfig::new("host-a"))
    };
    let onto_aws = || async {
        rebound_engine::trigger_to(
            &store,
            "shop",
            Workflow::PermanentFailover,
            Some("aws-east"),
            None,
            "operator",
        )
        .await
        .expect("permanent failover")
        .run
    };
    // The copy to the new site fails: the plan is failed over as before.
    onto_aws().await;
    let l = store.plan("shop").await.expect("plan").lifecycle;
    assert_eq!(
        (l.standby.as_str(), l.replaced_standby.as_deref()),
        ("aws-east", Some("openstack-east"))
    );
    let broken = Arc::new(Provider {
        broken: Some("transfer"),
        ..Provider::default()
    });
    let (_, outcome) = executor(broken)
        .work_once()
        .await
        .expect("work")
        .expect("the run");
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    let l = store.plan("shop").await.expect("plan").lifecycle;
    assert_eq!(
        (
            l.state,
            l.primary.as_str(),
            l.standby.as_str(),
            l.replaced_standby.as_deref()
        ),
        (
            PlanState::FailedOver,
            "kubevirt-west",
            "openstack-east",
            None
        )
    );
    // Again, working: protected from kubevirt-west onto aws-east.
    let run = onto_aws().await;
    let steps = store.steps(&run.id).await.expect("steps");
    let sites: std::collections::BTreeSet<&str> = steps
        .iter()
        .filter_map(|s| s.input["site"].as_str())
        .collect();
    assert!(
        !sites.contains("openstack-east"),
        "the lost site is not touched: {sites:?}"
    );
    let transfers: Vec<&StepRecord> = steps
        .iter()
        .filter(|s| s.input["action"] == "transfer")
        .collect();
    assert_eq!(transfers.len(), 3, "one per workload");
    assert!(
        transfers
            .iter()
            .all(|s| s.input["from"] == "kubevirt-west" && s.input["to"] == "aws-east"),
        "{transfers:?}"
    );
    let provider = Arc::new(Provider::default());
    let (_, outcome) = executor(provider)
        .work_once()
        .await
        .expect("work")
        .expect("the run");
    assert_eq!(outcome, Outcome::Succeeded);
    let l = store.plan("shop").await.expect("plan").lifecycle;
    assert_eq!(
        (
            l.state,
            l.primary.as_str(),
            l.standby.as_str(),
            l.replaced_standby.as_deref()
        ),
        (PlanState::Protected, "kubevirt-west", "aws-east", None)
    );
    let audit = store.audit_log(50).await.expect("audit");
    assert!(
        audit
            .iter()
            .any(|e| e.action == "plan.permanent_failover.begin"
                && e.detail["new_standby"] == "aws-east"),
        "{audit:?}"
    );
    // The next cycle replicates to the new standby.
    let cycle = rebound_engine::trigger(&store, "shop", Workflow::Replication, None, "operator")
        .await
        .expect("cycle");
    let steps = store.steps(&cycle.id).await.expect("steps");
    assert!(
        steps
            .iter()
            .filter(|s| s.input["action"] == "transfer")
            .all(|s| s.input["to"] == "aws-east"),
        "{:?}",
        steps.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
}

/// Two hosts asked at once to fail the same site over under one key (a
/// retried request reaching another replica): one run per plan between
/// them, both answers naming the same runs.
async fn a_site_failover_asked_twice_at_once_starts_each_plan_once(store: Store) {
    for name in ["shop", "crm", "wiki"] {
        let yaml = PLAN.replacen("name: shop", &format!("name: {name}"), 1);
        store
            .put_plan(&PlanDocument::from_yaml(&yaml).expect("plan"), "operator")
            .await
            .expect("plan");
    }
    let ask = || rebound_engine::fail_over_site(&store, "openstack-east", Some("k"), "operator");
    let (first, second) = tokio::join!(ask(), ask());
    let runs = |r: &rebound_engine::SiteFailover| -> Vec<(String, String)> {
        r.started
            .iter()
            .map(|p| (p.plan.clone(), p.run.clone()))
            .collect()
    };
    let (first, second) = (first.expect("first"), second.expect("second"));
    let started = store
        .runs_page(&rebound_store::RunFilter {
            plan: None,
            status: None,
            after: None,
            limit: 50,
        })
        .await
        .expect("runs");
    assert_eq!(started.len(), 3, "one run per plan");
    // Each plan started by one of them, and both name the same runs: the
    // other says its run is replayed.
    assert_eq!(runs(&first), runs(&second), "{first:?} {second:?}");
    assert_eq!(first.started.len(), 3, "{first:?}");
    for (a, b) in first.started.iter().zip(&second.started) {
        assert!(a.replayed != b.replayed, "{first:?} {second:?}");
    }
    assert!(first.skipped.is_empty() && second.skipped.is_empty());
    // Asked again, both see the same three runs.
    let again = ask().await.expect("again");
    assert_eq!(again.started.len(), 3);
    assert!(again.started.iter().all(|p| p.replayed));
}

rebound_store::on_both_backends!(
    a_site_failover_asked_twice_at_once_starts_each_plan_once,
    a_permanent_failover_protects_onto_a_new_site,
    a_site_fails_over_every_plan_it_serves,
    a_failover_preempts_replication_and_drills,
    a_running_failover_cancelled_undoes_itself,
    a_failed_drill_tears_its_sandbox_down,
    a_failback_declined_at_its_approval_changes_nothing,
    a_failback_failing_after_its_fence_unfences_the_old_primary,
    round_trip,
    an_unconfirmed_fence_keeps_a_failback_from_promoting,
    the_failover_plan_recovers_tier_by_tier,
);

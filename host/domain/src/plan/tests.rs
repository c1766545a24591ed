use super::*;
use crate::Workflow;

const EXAMPLE: &str = include_str!("../../../../docs/examples/plan.yaml");

fn fields(result: Result<PlanDocument, PlanError>) -> Vec<String> {
    result
        .expect_err("must be refused")
        .fields()
        .into_iter()
        .map(|f| f.field)
        .collect()
}

#[test]
fn the_documented_example_is_valid_and_orders_its_tiers() {
    let plan = PlanDocument::from_yaml(EXAMPLE).expect("docs/examples/plan.yaml is valid");
    assert_eq!(plan.objectives.failover.rto, Span::secs(1800));
    assert_eq!(plan.objectives.failback.rpo, Span::secs(0));
    assert_eq!(
        plan.tiers().expect("acyclic"),
        vec![
            vec!["db-1".to_owned()],
            vec!["app-1".to_owned()],
            vec!["web-1".to_owned()]
        ]
    );
}

#[test]
fn yaml_and_json_are_the_same_document() {
    let plan = PlanDocument::from_yaml(EXAMPLE).expect("yaml");
    let json = serde_json::to_string(&plan).expect("json");
    assert_eq!(PlanDocument::from_json(&json).expect("json parses"), plan);
    assert_eq!(
        PlanDocument::from_yaml(&plan.to_yaml()).expect("yaml round trip"),
        plan
    );
}

#[test]
fn syntax_errors_name_the_field() {
    let bad = EXAMPLE.replace("rto: 30m", "rto: soon");
    match PlanDocument::from_yaml(&bad) {
        Err(PlanError::Syntax { field, reason, .. }) => {
            assert_eq!(field, "objectives.failover.rto");
            assert!(reason.contains("is not a duration"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let unknown = EXAMPLE.replace("retention: 6", "retention: 6\n  colour: blue");
    let err = PlanDocument::from_yaml(&unknown).expect_err("unknown field");
    assert!(err.to_string().contains("replication"), "{err}");
    assert!(err.to_string().contains("colour"), "{err}");
    let typed = r#"{"name": 5}"#;
    assert_eq!(fields(PlanDocument::from_json(typed)), vec!["name"]);
}

#[test]
fn every_rule_names_its_field() {
    let cases: &[(&str, &str, &str)] = &[
        ("name: shop", "name: Shop!", "name"),
        ("target: kubevirt-west", "target: openstack-east", "target"),
        (
            "failover: { rto: 30m, rpo: 15m }",
            "failover: { rto: 0s, rpo: 15m }",
            "objectives.failover.rto",
        ),
        (
            "failover: { rto: 30m, rpo: 15m }",
            "failover: { rto: 30m, rpo: 0s }",
            "objectives.failover.rpo",
        ),
        ("interval: 5m", "interval: 20m", "replication.interval"),
        ("retention: 6", "retention: 0", "replication.retention"),
        (
            "depends_on: [db-1]",
            "depends_on: [db-9]",
            "workloads[1].depends_on",
        ),
        ("- id: web-1", "- id: db-1", "workloads[2].id"),
        (
            "canary: [10, 50, 100]",
            "canary: [50, 10, 100]",
            "redirect.canary",
        ),
        (
            "canary: [10, 50, 100]",
            "canary: [10, 50]",
            "redirect.canary",
        ),
        ("mode: manual", "mode: automatic", "trigger.detection"),
        (
            "port: 5432, timeout: 5m",
            "port: 0, timeout: 5m",
            "workloads[0].health_gate.port",
        ),
        (
            "port: 5432, timeout: 5m",
            "port: 5432, timeout: 0s",
            "workloads[0].health_gate.timeout",
        ),
        (
            "path: /healthz",
            "path: healthz",
            "workloads[1].health_gate.path",
        ),
        (
            "expect_status: 200",
            "expect_status: 42",
            "workloads[1].health_gate.expect_status",
        ),
        (
            "approvals:",
            "drills: { every: 30m }\napprovals:",
            "drills.every",
        ),
    ];
    for (from, to, field) in cases {
        let text = EXAMPLE.replacen(from, to, 1);
        assert_ne!(text, EXAMPLE, "case {to} did not apply");
        let got = fields(PlanDocument::from_yaml(&text));
        assert!(
            got.iter().any(|f| f == field),
            "{to}: expected {field}, got {got:?}"
        );
    }
}

#[test]
fn drills_may_be_scheduled_at_most_hourly() {
    // The example of docs/operations.md, in the example plan.
    let operations = include_str!("../../../../docs/operations.md");
    let (_, after) = operations.split_once("```yaml\n").expect("a yaml block");
    let (block, _) = after.split_once("```").expect("its end");
    let block: String = block.lines().map(|l| format!("{}\n", l.trim())).collect();
    assert!(block.starts_with("drills:"), "{block}");
    let weekly = EXAMPLE.replacen("approvals:", &format!("{block}approvals:"), 1);
    let plan = PlanDocument::from_yaml(&weekly).expect("weekly drills");
    assert_eq!(plan.drills.every, Some(Span::secs(7 * 86_400)));
    assert!(
        plan.to_yaml().contains("every: 7days"),
        "{}",
        plan.to_yaml()
    );
    let hourly = EXAMPLE.replacen("approvals:", "drills: { every: 1h }\napprovals:", 1);
    PlanDocument::from_yaml(&hourly).expect("hourly drills");
    let refused = PlanDocument::from_yaml(&EXAMPLE.replacen(
        "approvals:",
        "drills: { every: 59m }\napprovals:",
        1,
    ))
    .expect_err("too often");
    assert!(
        refused.to_string().contains("at least 1h apart"),
        "{refused}"
    );
}

#[test]
fn a_failback_may_promise_zero_data_loss_but_a_failover_may_not() {
    let plan = PlanDocument::from_yaml(EXAMPLE).expect("valid");
    assert!(plan.objectives.failback.rpo.0.is_zero());
    let err =
        PlanDocument::from_yaml(&EXAMPLE.replace("rpo: 15m", "rpo: 0s")).expect_err("refused");
    assert!(err.to_string().contains("synchronous replication"), "{err}");
}

#[test]
fn a_cycle_in_the_recovery_order_is_shown() {
    let text = EXAMPLE.replacen(
        "  - id: db-1\n",
        "  - id: db-1\n    depends_on: [web-1]\n",
        1,
    );
    let err = PlanDocument::from_yaml(&text).expect_err("cycle");
    let message = err.to_string();
    assert!(message.contains("cycle"), "{message}");
    assert!(
        message.contains("db-1") && message.contains("web-1") && message.contains("app-1"),
        "{message}"
    );
}

#[test]
fn an_rpo_below_the_sites_granularity_is_impossible() {
    let plan = PlanDocument::from_yaml(EXAMPLE).expect("valid");
    assert!(plan.check_feasible(Span::secs(60)).is_ok());
    let err = plan
        .check_feasible(Span::secs(3600))
        .expect_err("hourly snapshots");
    let f: Vec<String> = err.fields().into_iter().map(|f| f.field).collect();
    assert_eq!(f, vec!["objectives.failover.rpo", "replication.interval"]);
    assert!(
        err.to_string()
            .contains("snapshot granularity of site 'openstack-east'"),
        "{err}"
    );
}

#[test]
fn all_problems_are_reported_at_once() {
    let text = EXAMPLE
        .replace("name: shop", "name: ''")
        .replace("retention: 6", "retention: 0");
    let got = fields(PlanDocument::from_yaml(&text));
    assert_eq!(got, vec!["name", "replication.retention"]);
}

const WITH_HOOKS: &str = include_str!("../../../../docs/examples/plan-with-hooks.yaml");

#[test]
fn the_documented_hooks_are_valid() {
    let plan = PlanDocument::from_yaml(WITH_HOOKS).expect("docs/examples/plan-with-hooks.yaml");
    let hooks = &plan.hooks;
    assert_eq!(hooks.len(), 5);
    assert_eq!(
        hooks[0].workflows,
        [Workflow::Failover, Workflow::Failback, Workflow::Migration],
        "the default"
    );
    assert_eq!(
        (hooks[0].timeout, hooks[1].timeout),
        (Span::secs(60), Span::secs(30))
    );
    assert_eq!(hooks[1].on_failure, OnFailure::Continue);
    assert_eq!(
        origin(&hooks[2].url).as_deref(),
        Ok("https://ops.example.com:443")
    );
}

#[test]
fn every_hook_rule_names_its_field() {
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "name: warm-caches",
            "name: open-change",
            "hooks[1].name",
            "used twice",
        ),
        ("name: warm-caches", "name: Warm!", "hooks[1].name", "a-z"),
        (
            "url: https://ops.example.com/changes\n",
            "url: ftp://ops.example.com/changes\n",
            "hooks[0].url",
            "http or https",
        ),
        (
            "url: https://ops.example.com/changes\n",
            "url: https://bot:s3cret@ops.example.com/changes\n",
            "hooks[0].url",
            "credentials do not belong",
        ),
        (
            "timeout: 1m",
            "timeout: 11m",
            "hooks[0].timeout",
            "at most 10m",
        ),
        (
            "timeout: 1m",
            "timeout: 0s",
            "hooks[0].timeout",
            "more than 0s",
        ),
        (
            "workflows: [failover, failback, drill]",
            "workflows: []",
            "hooks[1].workflows",
            "at least one",
        ),
        (
            "at: before_fence",
            "at: before_fence\n    workflows: [drill]",
            "hooks[0].workflows",
            "a drill fences nothing",
        ),
        (
            "at: after_cutover",
            "at: after_cutover\n    workflows: [replication]",
            "hooks[2].workflows",
            "never passes after the cutover",
        ),
        (
            "at: before_fence",
            "at: before_snapshot",
            "hooks[0].workflows",
            "a failover takes no snapshot of the serving workloads",
        ),
        (
            "workflows: [replication, reprotect, failback, migration]",
            "workflows: [replication, drill]",
            "hooks[3].workflows",
            "a drill takes no snapshot",
        ),
    ];
    for (from, to, field, reason) in cases {
        let text = WITH_HOOKS.replacen(from, to, 1);
        assert_ne!(text, WITH_HOOKS, "case {to} did not apply");
        let refused = PlanDocument::from_yaml(&text).expect_err(to);
        let found = refused.fields().into_iter().find(|f| f.field == *field);
        assert!(
            found.as_ref().is_some_and(|f| f.reason.contains(reason)),
            "{to}: expected {field} ({reason}), got {refused}"
        );
    }
    let unknown = WITH_HOOKS.replacen("at: after_cutover", "at: whenever", 1);
    let e = PlanDocument::from_yaml(&unknown).expect_err("unknown point");
    assert!(e.to_string().contains("hooks[2].at"), "{e}");
}

#[test]
fn a_workload_may_ask_for_application_consistent_snapshots() {
    let text = EXAMPLE.replacen(
        "  - id: db-1\n",
        "  - id: db-1\n    consistency: application\n",
        1,
    );
    assert_ne!(text, EXAMPLE);
    let plan = PlanDocument::from_yaml(&text).expect("plan");
    assert_eq!(plan.workloads[0].consistency, Consistency::Application);
    assert_eq!(
        plan.workloads[1].consistency,
        Consistency::Crash,
        "the default"
    );
    assert!(
        !plan.to_yaml().contains("consistency: crash"),
        "the default is left out"
    );
    let bad = EXAMPLE.replacen(
        "  - id: db-1\n",
        "  - id: db-1\n    consistency: frozen\n",
        1,
    );
    let e = PlanDocument::from_yaml(&bad).expect_err("unknown consistency");
    assert!(e.to_string().contains("workloads[0].consistency"), "{e}");
}

use super::*;

fn plan() -> Lifecycle {
    Lifecycle::new("site-a", "site-b")
}

fn run(l: &mut Lifecycle, w: Workflow, fenced: bool) {
    l.begin(w).unwrap_or_else(|e| panic!("begin {w}: {e}"));
    l.finish(w, true, fenced)
        .unwrap_or_else(|e| panic!("finish {w}: {e}"));
}

#[test]
fn the_round_trip_swaps_roles_twice_and_bumps_the_epoch_each_time() {
    let mut l = plan();
    run(&mut l, Workflow::Failover, true);
    assert_eq!(
        (l.state, l.primary.as_str(), l.epoch),
        (PlanState::FailedOver, "site-b", 2)
    );
    run(&mut l, Workflow::Reprotect, false);
    assert_eq!(l.state, PlanState::ReadyForFailback);
    run(&mut l, Workflow::Failback, true);
    assert_eq!(
        (l.state, l.primary.as_str(), l.standby.as_str(), l.epoch),
        (PlanState::Protected, "site-a", "site-b", 3)
    );
}

#[test]
fn illegal_transitions_are_refused_with_what_to_do() {
    let mut l = plan();
    let err = l.begin(Workflow::Failback).expect_err("not failed over");
    assert_eq!(
        err.to_string(),
        "cannot start failback: the plan is protected; a failback starts from ready_for_failback"
    );
    assert_eq!(l.state, PlanState::Protected, "a refusal changes nothing");

    run(&mut l, Workflow::Failover, true);
    let err = l.begin(Workflow::Failback).expect_err("reprotect first");
    assert!(err.to_string().contains("run reprotect first"), "{err}");
    let err = l
        .begin(Workflow::Failover)
        .expect_err("already failed over");
    assert!(
        err.to_string().contains("a failover starts from protected"),
        "{err}"
    );
    assert!(
        l.finish(Workflow::Failback, true, true).is_err(),
        "finishing what never started"
    );
}

#[test]
fn a_reprotect_succeeds_only_once_it_fenced_an_unreachable_old_primary() {
    let mut l = plan();
    run(&mut l, Workflow::Failover, false);
    assert_eq!(l.unfenced.as_deref(), Some("site-a"));
    l.begin(Workflow::Reprotect)
        .expect("it fences site-a first");
    let err = l
        .finish(Workflow::Reprotect, true, false)
        .expect_err("split-brain guard");
    assert!(
        err.to_string()
            .contains("'site-a' was never confirmed fenced under epoch 2"),
        "{err}"
    );
    assert_eq!(
        (l.state, l.unfenced.as_deref()),
        (PlanState::Reprotecting, Some("site-a")),
        "a refused finish changes nothing"
    );
    l.finish(Workflow::Reprotect, false, false)
        .expect("rolled back");
    assert_eq!(
        (l.state, l.unfenced.as_deref()),
        (PlanState::FailedOver, Some("site-a"))
    );
    l.begin(Workflow::Reprotect).expect("again");
    l.finish(Workflow::Reprotect, true, true)
        .expect("fenced now");
    assert_eq!(
        (l.state, l.unfenced.as_deref()),
        (PlanState::ReadyForFailback, None)
    );
}

#[test]
fn a_planned_failback_requires_the_fence_before_promotion() {
    let mut l = plan();
    run(&mut l, Workflow::Failover, true);
    run(&mut l, Workflow::Reprotect, false);
    l.begin(Workflow::Failback).expect("begin");
    let err = l
        .finish(Workflow::Failback, true, false)
        .expect_err("not fenced");
    assert!(err.to_string().contains("'site-b' must be fenced"), "{err}");
    assert_eq!(
        (l.state, l.primary.as_str(), l.epoch),
        (PlanState::FailingBack, "site-b", 2)
    );
}

#[test]
fn a_failed_failback_keeps_the_last_good_copy_primary() {
    let mut l = plan();
    run(&mut l, Workflow::Failover, true);
    run(&mut l, Workflow::Reprotect, false);
    l.begin(Workflow::Failback).expect("begin");
    l.finish(Workflow::Failback, false, false)
        .expect("rolled back");
    assert_eq!(
        (l.state, l.primary.as_str(), l.epoch),
        (PlanState::ReadyForFailback, "site-b", 2)
    );
}

#[test]
fn a_migration_waits_for_commit_or_rolls_back() {
    let mut l = plan();
    run(&mut l, Workflow::Migration, true);
    assert_eq!(
        (l.state, l.primary.as_str()),
        (PlanState::AwaitingCommit, "site-b")
    );
    run(&mut l, Workflow::CommitMigration, false);
    assert_eq!(
        (l.state, l.primary.as_str(), l.standby.as_str()),
        (PlanState::Protected, "site-b", "site-a")
    );

    let mut l = plan();
    run(&mut l, Workflow::Migration, true);
    run(&mut l, Workflow::RollbackMigration, true);
    assert_eq!(
        (l.state, l.primary.as_str(), l.epoch),
        (PlanState::Protected, "site-a", 3)
    );
}

#[test]
fn a_permanent_failover_protects_the_new_primary_to_a_new_site() {
    let mut l = plan();
    run(&mut l, Workflow::Failover, false);
    l.begin(Workflow::PermanentFailover).expect("begin");
    let err = l.retarget("site-b").expect_err("the primary");
    assert!(
        err.to_string()
            .contains("the new standby must be another site than the primary 'site-b'"),
        "{err}"
    );
    l.retarget("site-c").expect("a new site");
    assert_eq!(l.replaced_standby.as_deref(), Some("site-a"));
    // Not finished: the old standby is given back.
    l.finish(Workflow::PermanentFailover, false, false)
        .expect("rolled back");
    assert_eq!(
        (l.state, l.standby.as_str(), l.replaced_standby.as_deref()),
        (PlanState::FailedOver, "site-a", None)
    );
    l.begin(Workflow::PermanentFailover).expect("again");
    l.retarget("site-c").expect("a new site");
    l.finish(Workflow::PermanentFailover, true, false)
        .expect("finish");
    assert_eq!(
        (l.state, l.primary.as_str(), l.standby.as_str()),
        (PlanState::Protected, "site-b", "site-c")
    );
    assert_eq!(l.replaced_standby, None);
    // The lost site was never confirmed fenced: it stays named.
    assert_eq!(l.unfenced.as_deref(), Some("site-a"));
    assert!(
        l.retarget("site-d").is_err(),
        "only while failing over permanently"
    );
}

#[test]
fn a_permanent_failover_back_onto_an_unfenced_site_must_fence_it() {
    let mut l = plan();
    run(&mut l, Workflow::Failover, false);
    assert_eq!(l.unfenced.as_deref(), Some("site-a"));
    l.begin(Workflow::PermanentFailover).expect("begin");
    let err = l
        .finish(Workflow::PermanentFailover, true, false)
        .expect_err("site-a may still serve");
    assert!(
        err.to_string()
            .contains("the permanent_failover must fence it before anything replicates to it"),
        "{err}"
    );
    l.finish(Workflow::PermanentFailover, true, true)
        .expect("fenced first");
    assert_eq!(
        (l.standby.as_str(), l.unfenced.as_deref()),
        ("site-a", None)
    );
}

#[test]
fn drills_change_no_state_run_one_at_a_time_and_never_block_a_failover() {
    let mut l = plan();
    l.begin(Workflow::Drill).expect("drill");
    assert_eq!(l.state, PlanState::Protected);
    assert!(l.begin(Workflow::Drill).is_err(), "one drill at a time");
    assert!(
        l.begin(Workflow::Migration).is_err(),
        "a migration waits for the drill"
    );
    l.begin(Workflow::Failover)
        .expect("a real outage does not wait for a rehearsal");
    l.finish(Workflow::Drill, true, false).expect("drill ends");
    assert!(!l.drilling);
    let err = l
        .begin(Workflow::Drill)
        .expect_err("no drill while failing over");
    assert!(
        err.to_string()
            .contains("drills run from protected or ready_for_failback"),
        "{err}"
    );
}

#[test]
fn workflows_are_charged_to_their_phase() {
    assert_eq!(Workflow::Failover.phase(), Phase::Failover);
    assert_eq!(Workflow::Drill.phase(), Phase::Failover);
    assert_eq!(Workflow::Failback.phase(), Phase::Failback);
    assert_eq!(Workflow::Reprotect.phase(), Phase::Failback);
}

#[test]
fn replication_cycles_run_while_protected_and_change_nothing() {
    let mut l = plan();
    l.begin(Workflow::Drill).expect("drill");
    l.begin(Workflow::Replication)
        .expect("replication goes on during a drill");
    l.finish(Workflow::Replication, true, false)
        .expect("finishes");
    assert_eq!((l.state, l.drilling), (PlanState::Protected, true));
    l.begin(Workflow::Failover).expect("failover");
    let err = l
        .begin(Workflow::Replication)
        .expect_err("not while failing over");
    assert!(
        err.to_string()
            .contains("replication cycles run while protected or ready_for_failback"),
        "{err}"
    );
}

#[test]
fn unprotect_stops_protection_until_the_plan_is_applied_again() {
    let mut l = plan();
    run(&mut l, Workflow::Failover, true);
    let err = l.begin(Workflow::Unprotect).expect_err("failed over");
    assert!(err.to_string().contains("fail back first"), "{err}");
    run(&mut l, Workflow::Reprotect, false);
    run(&mut l, Workflow::Failback, true);
    l.begin(Workflow::Drill).expect("drill");
    assert!(l.begin(Workflow::Unprotect).is_err(), "a drill is running");
    l.finish(Workflow::Drill, true, false).expect("drill ends");

    // A failed one: still protected.
    l.begin(Workflow::Unprotect).expect("unprotect");
    assert_eq!(l.state, PlanState::Unprotecting);
    assert!(l.begin(Workflow::Replication).is_err());
    l.finish(Workflow::Unprotect, false, false)
        .expect("rolled back");
    assert_eq!(l.state, PlanState::Protected);

    run(&mut l, Workflow::Unprotect, false);
    assert_eq!(
        (l.state, l.primary.as_str(), l.epoch),
        (PlanState::Unprotected, "site-a", 3)
    );
    for w in [Workflow::Replication, Workflow::Drill, Workflow::Failover] {
        let err = l.begin(w).expect_err("unprotected");
        assert!(
            err.to_string().contains("apply the plan's document again"),
            "{err}"
        );
    }
    l.protect_again();
    assert_eq!(l.state, PlanState::Protected);
    run(&mut l, Workflow::Replication, false);
}

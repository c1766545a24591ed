//! The exact step plan of each workflow, derived from a plan and its
//! lifecycle (what a dry-run shows): which action on which site for which
//! workload, in recovery order. Every step's input names an `action` the
//! provider side executes, and steps that may run at the same time share a
//! `stage` number (the snapshots of a sync, the fences, one tier's
//! materializations, then its health gates).

use rebound_domain::plan::{Consistency, HookPoint, ReplicationMode, passes};
use rebound_domain::{Lifecycle, PlanDocument, PlanState, Workflow};
use rebound_store::{NewStep, StepRecord, StepStatus};
use serde_json::{Value, json};

/// The input field that puts a round-trip drill's step on its way back
/// (value [`RETURN_LEG`]): measured against the other phase's objectives.
pub const LEG: &str = "leg";
/// See [`LEG`].
pub const RETURN_LEG: &str = "return";

fn step(name: String, input: Value) -> NewStep {
    NewStep { name, input }
}

/// Mark `steps[from..]` as one stage: they may run at the same time.
pub(crate) fn stage(steps: &mut [NewStep], from: usize) {
    let number = steps.len();
    for s in &mut steps[from..] {
        s.input["stage"] = json!(number);
    }
}

/// The input field of a snapshot hook's step naming its snapshots (the
/// index of the first step of their window): a run stopped between its
/// `before_snapshot` and `after_snapshot` hooks calls the latter when it
/// is undone.
pub const SNAPSHOT_WINDOW: &str = "snapshot_window";

/// The action of a step that checks, before anything irreversible, that
/// the site a workflow recovers on answers: a failover never fences the
/// primary for a standby that could not recover it.
pub const PREFLIGHT_ACTION: &str = "preflight";

/// The action of a step that waits until no other run of its plan is
/// pending or running (an unprotect's first).
pub const QUIESCE_ACTION: &str = "quiesce";

/// The steps of `workflow` for `plan` in its current `lifecycle`.
pub fn plan_steps(plan: &PlanDocument, lifecycle: &Lifecycle, workflow: Workflow) -> Vec<NewStep> {
    let (primary, standby) = (lifecycle.primary.as_str(), lifecycle.standby.as_str());
    // A validated plan has no cycle; fall back to listing order otherwise.
    let tiers = plan
        .tiers()
        .unwrap_or_else(|_| vec![plan.workloads.iter().map(|w| w.id.clone()).collect()]);
    let all: Vec<&str> = tiers.iter().flatten().map(String::as_str).collect();
    let application_consistent = |w: &str| {
        plan.workloads
            .iter()
            .any(|e| e.id == w && e.consistency == Consistency::Application)
    };
    let mut steps = Vec::new();

    // The plan's hooks at `point`, in the order the plan lists them, each
    // a step of its own: the call as planned (what a dry-run shows is what
    // the run calls). `site` is where the run recovers.
    let hooks = |steps: &mut Vec<NewStep>, point: HookPoint, site: &str| {
        for h in &plan.hooks {
            if h.at != point || !h.workflows.contains(&workflow) || !passes(workflow, point) {
                continue;
            }
            steps.push(step(
                format!("hook {} ({})", h.name, point.describe()),
                json!({
                    "action": "hook", "hook": h.name, "at": point, "site": site,
                    "url": h.url, "timeout_ms": h.timeout.0.as_millis(),
                    "on_failure": h.on_failure,
                }),
            ));
        }
    };

    // A copy from `from` to `to`: snapshots, then replication or the data
    // mover. `live`: the workloads serve while they are snapshotted — the
    // plan's snapshot hooks are called around the snapshots then, each
    // marked with the snapshots' `window` (see `compensation_steps`).
    let sync = |steps: &mut Vec<NewStep>, from: &str, to: &str, live: bool| {
        let window = steps.len();
        if live {
            hooks(steps, HookPoint::BeforeSnapshot, from);
        }
        let first = steps.len();
        for w in &all {
            let mut input = json!({"action": "snapshot", "site": from, "workload": w});
            if application_consistent(w) {
                input["consistency"] = json!("application");
            }
            steps.push(step(format!("snapshot {w} on {from}"), input));
        }
        stage(steps, first);
        if live {
            hooks(steps, HookPoint::AfterSnapshot, from);
            for s in &mut steps[window..] {
                if s.input["action"] == "hook" {
                    s.input[SNAPSHOT_WINDOW] = json!(window);
                }
            }
        }
        let first = steps.len();
        for w in &all {
            steps.push(match plan.replication.mode {
                ReplicationMode::Native => step(
                    format!("replicate {w} {from} → {to} (changed blocks only)"),
                    json!({"action": "replicate", "from": from, "to": to, "workload": w, "delta": true}),
                ),
                // The host's data mover: export, import, copy and verify.
                ReplicationMode::DataMover => step(
                    format!("transfer {w} {from} → {to} (data mover, changed blocks only, verified)"),
                    json!({"action": "transfer", "from": from, "to": to, "workload": w, "delta": true}),
                ),
            });
        }
        stage(steps, first);
    };
    // One fence per workload: each is confirmed (or not) on its own,
    // under the epoch the promotion establishes.
    let fence = |steps: &mut Vec<NewStep>, site: &str, best_effort: bool| {
        let first = steps.len();
        for w in &all {
            steps.push(step(
                format!("fence {w} on {site}"),
                json!({"action": "fence", "site": site, "workload": w, "best_effort": best_effort, "epoch": lifecycle.epoch + 1}),
            ));
        }
        stage(steps, first);
    };
    // A former primary never confirmed fenced (it was down at the
    // failover) is fenced under the current epoch before anything
    // replicates back to it: its old incarnations must not come back up
    // beside the new primary. Such a fence is never undone (`confirm`).
    let confirm_fence = |steps: &mut Vec<NewStep>, site: &str| {
        let first = steps.len();
        for w in &all {
            steps.push(step(
                format!("fence {w} on {site} (not confirmed at the failover)"),
                json!({"action": "fence", "site": site, "workload": w, "best_effort": false, "epoch": lifecycle.epoch, "confirm": true}),
            ));
        }
        stage(steps, first);
    };
    // What recovered workloads are labelled with: the epoch their
    // promotion establishes (a drill promotes nothing).
    let recover = |steps: &mut Vec<NewStep>, site: &str, isolated: bool| {
        let epoch = if isolated {
            lifecycle.epoch
        } else {
            lifecycle.epoch + 1
        };
        for tier in &tiers {
            let first = steps.len();
            for w in tier {
                steps.push(step(
                    format!("materialize {w} on {site}"),
                    json!({"action": "materialize", "site": site, "workload": w, "isolated": isolated, "epoch": epoch}),
                ));
            }
            stage(steps, first);
            let first = steps.len();
            for w in tier {
                steps.push(step(
                    format!("health gate {w} on {site}"),
                    json!({"action": "gate", "site": site, "workload": w}),
                ));
            }
            stage(steps, first);
        }
    };
    let redirect = |steps: &mut Vec<NewStep>, site: &str| {
        if let Some(r) = &plan.redirect {
            for weight in &r.canary {
                steps.push(step(
                    format!("redirect {weight}% to {site}"),
                    json!({"action": "redirect", "site": site, "weight": weight, "gate": r.gate}),
                ));
            }
        }
    };

    // After a sync: recovery points past the plan's retention go, on both
    // sites (the newest copies, the next delta's base, always stay).
    let prune = |steps: &mut Vec<NewStep>, from: &str, to: &str| {
        let keep = plan.replication.retention.max(1);
        let first = steps.len();
        for site in [to, from] {
            steps.push(step(
                format!("prune recovery points on {site} to the newest {keep} per workload"),
                json!({"action": "prune", "site": site, "keep": keep}),
            ));
        }
        stage(steps, first);
    };

    // The incarnations earlier promotions superseded (fenced, of an older
    // epoch), removed from both sites, best effort (see `plugin_steps`).
    let superseded = |steps: &mut Vec<NewStep>| {
        let first = steps.len();
        for site in [standby, primary] {
            steps.push(step(
                format!("remove the incarnations superseded before epoch {} on {site}", lifecycle.epoch),
                json!({"action": "cleanup", "site": site, "scope": "superseded", "below_epoch": lifecycle.epoch, "best_effort": true}),
            ));
        }
        stage(steps, first);
    };

    // The plan's approval policy: the run pauses before its first
    // irreversible step (the fence) until an operator approves.
    let approval = |steps: &mut Vec<NewStep>| {
        let needed = match workflow {
            Workflow::Failover => plan.approvals.failover,
            Workflow::Failback => plan.approvals.failback,
            Workflow::Migration => plan.approvals.migration,
            _ => false,
        };
        if needed {
            steps.push(step(
                format!("approval of the {workflow}"),
                json!({"action": rebound_store::APPROVAL_ACTION}),
            ));
        }
    };

    // The site taking over must answer before the primary is fenced (after
    // any approval: the wait for it may be long).
    let preflight = |steps: &mut Vec<NewStep>, site: &str| {
        steps.push(step(
            format!("check that {site} can take over (its API answers)"),
            json!({"action": PREFLIGHT_ACTION, "site": site}),
        ));
    };

    match workflow {
        // Unplanned: the primary may be gone, so fencing is best effort and
        // the lifecycle remembers an unconfirmed fence.
        Workflow::Failover => {
            approval(&mut steps);
            preflight(&mut steps, standby);
            hooks(&mut steps, HookPoint::BeforeFence, standby);
            fence(&mut steps, primary, true);
            recover(&mut steps, standby, false);
            hooks(&mut steps, HookPoint::AfterRecovery, standby);
            redirect(&mut steps, standby);
            hooks(&mut steps, HookPoint::AfterCutover, standby);
        }
        Workflow::Reprotect => {
            if let Some(site) = &lifecycle.unfenced {
                confirm_fence(&mut steps, site);
            }
            sync(&mut steps, primary, standby, true);
            prune(&mut steps, primary, standby);
        }
        // Planned: a pre-sync while the primary still serves, then fence
        // it (writes stop), a final delta sync of what the pre-sync missed
        // (nothing is lost), verified recovery, canary.
        Workflow::Failback | Workflow::Migration => {
            sync(&mut steps, primary, standby, true);
            approval(&mut steps);
            preflight(&mut steps, standby);
            hooks(&mut steps, HookPoint::BeforeFence, standby);
            fence(&mut steps, primary, false);
            sync(&mut steps, primary, standby, false);
            recover(&mut steps, standby, false);
            hooks(&mut steps, HookPoint::AfterRecovery, standby);
            redirect(&mut steps, standby);
            hooks(&mut steps, HookPoint::AfterCutover, standby);
        }
        Workflow::RollbackMigration => {
            preflight(&mut steps, standby);
            hooks(&mut steps, HookPoint::BeforeFence, standby);
            fence(&mut steps, primary, false);
            recover(&mut steps, standby, false);
            hooks(&mut steps, HookPoint::AfterRecovery, standby);
            redirect(&mut steps, standby);
            hooks(&mut steps, HookPoint::AfterCutover, standby);
        }
        Workflow::CommitMigration => steps.push(step(
            format!("clean up the migration source on {standby}"),
            json!({"action": "cleanup", "site": standby, "scope": "migration-source"}),
        )),
        // Protection from the new primary: to the old one (fenced first
        // if it never was), or to a new site chosen for it.
        Workflow::PermanentFailover => {
            if lifecycle.unfenced.as_deref() == Some(standby) {
                confirm_fence(&mut steps, standby);
            }
            sync(&mut steps, primary, standby, true);
        }
        Workflow::Replication => {
            sync(&mut steps, primary, standby, true);
            prune(&mut steps, primary, standby);
            // Once back to protected after a promotion (a failback, say),
            // each cycle's new copy at the standby lets the incarnations
            // the promotions superseded go — fenced, of an older epoch, on
            // either site (see `plugin_steps`). Best effort.
            if lifecycle.state == PlanState::Protected && lifecycle.epoch > 1 {
                superseded(&mut steps);
            }
        }
        // The workloads keep serving where they are; only the copies go.
        // First the plan's other runs end (a replication cycle cancelled as
        // this one started may still record a point), then — after what
        // earlier drills left, see `steps_of` — every recovery point of
        // the plan on both sites, and the incarnations earlier promotions
        // superseded (fenced, Rebound's own), as a replication cycle
        // would remove them.
        Workflow::Unprotect => {
            steps.push(step(
                "wait for the plan's other runs to end".to_owned(),
                json!({"action": QUIESCE_ACTION}),
            ));
            stage(&mut steps, 0);
            let first = steps.len();
            for site in [standby, primary] {
                steps.push(step(
                    format!("remove every recovery point of the plan on {site}"),
                    json!({"action": "cleanup", "site": site, "scope": "points"}),
                ));
            }
            stage(&mut steps, first);
            if lifecycle.epoch > 1 {
                superseded(&mut steps);
            }
        }
        Workflow::Drill if plan.drills.round_trip => {
            recover(&mut steps, standby, true);
            hooks(&mut steps, HookPoint::AfterRecovery, standby);
            // The way back, rehearsed: what the sandbox holds is captured,
            // copied to the site it came from as a failback would copy it,
            // and recovered there into a sandbox of its own. Production on
            // either site is not touched; its copies are the drill's.
            let back = steps.len();
            sync(&mut steps, standby, primary, false);
            recover(&mut steps, primary, true);
            hooks(&mut steps, HookPoint::AfterRecovery, primary);
            for s in &mut steps[back..] {
                s.input[LEG] = json!(RETURN_LEG);
            }
            // What depends on another goes first: the way back's sandbox
            // (recovered from the copies on the primary's site) and the
            // copies captured from the sandbox on the standby (Cinder, say,
            // keeps a volume while snapshots of it stand); then that
            // sandbox and those copies.
            for (sandbox, copies) in [(primary, standby), (standby, primary)] {
                let first = steps.len();
                steps.push(drill_teardown(sandbox, "drill"));
                steps.push(drill_teardown(copies, "drill-points"));
                stage(&mut steps, first);
            }
        }
        Workflow::Drill => {
            recover(&mut steps, standby, true);
            hooks(&mut steps, HookPoint::AfterRecovery, standby);
            steps.push(drill_teardown(standby, "drill"));
        }
    }
    steps
}

/// A drill's own teardown on `site`: its sandbox (`scope` `drill`) or its
/// copies (`drill-points`).
fn drill_teardown(site: &str, scope: &str) -> NewStep {
    let name = match scope {
        "drill" => format!("tear down the drill sandbox on {site}"),
        _ => format!("remove the drill's copies on {site}"),
    };
    step(
        name,
        json!({"action": "cleanup", "site": site, "scope": scope}),
    )
}

/// What undoes a failed (or cancelled) run's effects so the old primary
/// serves again (the lifecycle keeps it primary) and nothing else does:
/// first every workload the run materialized (or began to) on the standby
/// is fenced — never two primaries — then every workload the run fenced is
/// unfenced under the same epoch, then traffic the run moved is sent back.
/// Last, when no traffic ever reached them, the standby incarnations the
/// run made are removed (`cleanup` of `workloads`, contract 0.2; best
/// effort: one the plugin cannot remove stays fenced). Once a redirect
/// started they may hold writes, so they stay, fenced, for the operator.
/// A run that fenced nothing (its fences best effort, the primary site
/// down) has nothing to give back, but what it recovered is undone all the
/// same — fenced, then removed — unless traffic reached it: then it is the
/// only thing serving, and stays. A drill's sandbox is torn down instead.
/// Empty when the run changed nothing that needs undoing. Steps carry
/// `compensation`.
/// First of all, a run stopped after it called its `before_snapshot` hooks
/// and before its `after_snapshot` hooks succeeded calls those (failures
/// recorded, not stopping the rest): an application it quiesced for its
/// snapshots is never left so.
pub fn compensation_steps(steps: &[StepRecord]) -> Vec<NewStep> {
    let mut out = owed_after_snapshot(steps);
    out.extend(undo_steps(steps));
    out
}

/// The `after_snapshot` hooks a stopped run owes: in each snapshot window
/// whose `before_snapshot` hooks were called (or began to be), those that
/// did not succeed.
fn owed_after_snapshot(steps: &[StepRecord]) -> Vec<NewStep> {
    let hook_at = |s: &StepRecord, at: HookPoint| {
        s.input["action"] == "hook" && s.input["at"] == json!(at) && s.input["compensation"] != true
    };
    let opened: std::collections::BTreeSet<u64> = steps
        .iter()
        .filter(|s| hook_at(s, HookPoint::BeforeSnapshot))
        .filter(|s| s.started_at_ms.is_some() || s.status == StepStatus::Succeeded)
        .filter_map(|s| s.input[SNAPSHOT_WINDOW].as_u64())
        .collect();
    steps
        .iter()
        .filter(|s| hook_at(s, HookPoint::AfterSnapshot) && s.status != StepStatus::Succeeded)
        .filter(|s| {
            s.input[SNAPSHOT_WINDOW]
                .as_u64()
                .is_some_and(|w| opened.contains(&w))
        })
        .map(|s| {
            let mut input = s.input.clone();
            input["compensation"] = json!(true);
            input["on_failure"] = json!("continue");
            input["stage"] = json!("compensation-after-snapshot");
            step(format!("{} (the run stopped)", s.name), input)
        })
        .collect()
}

/// The rest of [`compensation_steps`].
fn undo_steps(steps: &[StepRecord]) -> Vec<NewStep> {
    let started = |s: &&StepRecord| s.started_at_ms.is_some() || s.status == StepStatus::Succeeded;
    // (One it adopted from an earlier failed run stays as it was: see
    // `crate::adopt`.)
    let materialized: Vec<&StepRecord> = steps
        .iter()
        .filter(|s| s.input["action"] == "materialize")
        .filter(started)
        .filter(|s| {
            s.output
                .as_ref()
                .is_none_or(|o| o["adopted_from"].is_null())
        })
        .collect();
    let isolated = materialized.iter().any(|s| s.input["isolated"] == true);
    if isolated {
        return drill_compensation(steps, &materialized);
    }
    // (A fence that confirms a former primary's stays: see `plan_steps`.)
    let fenced: Vec<&StepRecord> = steps
        .iter()
        .filter(|s| s.input["action"] == "fence" && s.input["confirm"] != true)
        .filter(|s| s.status == StepStatus::Succeeded)
        .filter(|s| s.output.as_ref().is_some_and(|o| o["fenced"] == true))
        .collect();
    let redirected = steps
        .iter()
        .any(|s| s.input["action"] == "redirect" && s.started_at_ms.is_some());
    // Nothing of the old primary fenced (a failover with the primary site
    // down fences best effort): nothing to give back to it. What the run
    // recovered on the standby is still undone — a retry would otherwise
    // recover each workload again beside it — unless traffic reached it:
    // then it serves, and stays.
    if fenced.is_empty() && (materialized.is_empty() || redirected) {
        return Vec::new();
    }
    // The standby's new incarnations: fenced under the epoch they were
    // materialized with. One whose materialize never finished may not
    // exist, so its fence is best effort.
    let mut out: Vec<NewStep> = materialized
        .iter()
        .map(|m| {
            let done = m.status == StepStatus::Succeeded;
            let mut input = json!({
                "action": "fence", "site": m.input["site"], "workload": m.input["workload"],
                "epoch": m.input["epoch"], "best_effort": !done,
                "compensation": true, "stage": "compensation-fence-standby",
            });
            if let Some(id) = m.output.as_ref().and_then(|o| o["workload"].as_str()) {
                input["workload_id"] = json!(id);
            }
            step(
                format!(
                    "fence {} on {} (undo its recovery)",
                    m.input["workload"].as_str().unwrap_or_default(),
                    m.input["site"].as_str().unwrap_or_default()
                ),
                input,
            )
        })
        .collect();
    let unfenced = fenced.iter().map(|f| {
        let output = f.output.clone().unwrap_or_default();
        step(
            format!(
                "unfence {} on {}",
                f.input["workload"].as_str().unwrap_or_default(),
                f.input["site"].as_str().unwrap_or_default()
            ),
            json!({
                "action": "unfence", "site": f.input["site"], "workload": f.input["workload"],
                "workload_id": output["workload"], "epoch": f.input["epoch"],
                "compensation": true, "stage": "compensation-unfence",
            }),
        )
    });
    out.extend(unfenced);
    if let (Some(first), true) = (fenced.first(), redirected) {
        let site = first.input["site"].clone();
        out.push(step(
            format!(
                "redirect 100% back to {}",
                site.as_str().unwrap_or_default()
            ),
            json!({"action": "redirect", "site": site, "weight": 100, "compensation": true}),
        ));
        return out;
    }
    // The incarnations the run made, by site (a run recovers onto one).
    let mut made: Vec<(String, Vec<String>)> = Vec::new();
    for m in &materialized {
        let Some(id) = m.output.as_ref().and_then(|o| o["workload"].as_str()) else {
            continue;
        };
        let on = m.input["site"].as_str().unwrap_or_default().to_owned();
        match made.iter_mut().find(|(s, _)| *s == on) {
            Some((_, ids)) => ids.push(id.to_owned()),
            None => made.push((on, vec![id.to_owned()])),
        }
    }
    out.extend(made.into_iter().map(|(on, ids)| {
        step(
            format!("remove the standby incarnations on {on} (their recovery undone)"),
            json!({
                "action": "cleanup", "site": on, "scope": "workloads", "workloads": ids,
                "best_effort": true, "compensation": true,
            }),
        )
    }));
    out
}

/// A failed drill's undoing: its sandbox torn down on every site it
/// recovered on (or began to), and — a round trip — the copies it made on
/// the way back removed from every site one was (or may have been) made
/// on, what depends on another first (see `plan_steps`): the way back's
/// sandbox, the copies captured on the standby, the standby's sandbox, the
/// copies on the primary's site. What the drill did itself already is not
/// asked again; each is tried even when one before it failed (see the
/// executor's compensation).
fn drill_compensation(steps: &[StepRecord], materialized: &[&StepRecord]) -> Vec<NewStep> {
    // (A teardown of what an earlier drill left is not this one's.)
    let done = |scope: &str, site: &str| {
        steps.iter().any(|s| {
            s.input["action"] == "cleanup"
                && s.input["scope"] == scope
                && s.input["site"] == site
                && s.input[crate::leftovers::LEFT_BY].is_null()
                && s.status == StepStatus::Succeeded
        })
    };
    let back = |s: &StepRecord| s.input[LEG] == RETURN_LEG;
    let sandboxes = |way_back: bool| {
        materialized
            .iter()
            .filter(move |m| back(m) == way_back)
            .filter_map(|m| m.input["site"].as_str())
    };
    // A copy starts at the snapshot (the sandbox's site) and ends at the
    // replication's target.
    let started = steps
        .iter()
        .filter(|s| back(s))
        .filter(|s| s.started_at_ms.is_some() || s.status == StepStatus::Succeeded);
    let copies = |captured: bool| {
        started
            .clone()
            .filter_map(move |s| match (s.input["action"].as_str(), captured) {
                (Some("snapshot"), true) => s.input["site"].as_str(),
                (Some("replicate" | "transfer"), false) => s.input["to"].as_str(),
                _ => None,
            })
    };
    let order = sandboxes(true)
        .map(|site| ("drill", site))
        .chain(copies(true).map(|site| ("drill-points", site)))
        .chain(sandboxes(false).map(|site| ("drill", site)))
        .chain(copies(false).map(|site| ("drill-points", site)));
    let mut out: Vec<NewStep> = Vec::new();
    for (scope, site) in order {
        let asked = out
            .iter()
            .any(|s| s.input["scope"] == scope && s.input["site"] == site);
        if !asked && !done(scope, site) {
            let mut teardown = drill_teardown(site, scope);
            teardown.input["compensation"] = json!(true);
            out.push(teardown);
        }
    }
    out
}

/// After a failed run: the standby incarnations it made (or adopted) that
/// stay — by site, with the reason. All of them when no removal was
/// planned: traffic reached them, and they stay fenced, or — the old
/// primary never fenced (its site down) — they are what serves and stay
/// running, for a retry to adopt. Else those a removal step kept (the
/// plugin could not remove them). Drills tear their sandbox down: none.
pub(crate) fn kept_standbys(steps: &[StepRecord]) -> Vec<(String, Vec<String>, String)> {
    let made = steps.iter().filter(|s| {
        s.input["action"] == "materialize"
            && s.input["isolated"] != true
            && s.status == StepStatus::Succeeded
    });
    let mut by_site: Vec<(String, Vec<String>)> = Vec::new();
    for m in made {
        let Some(id) = m.output.as_ref().and_then(|o| o["workload"].as_str()) else {
            continue;
        };
        let site = m.input["site"].as_str().unwrap_or_default().to_owned();
        match by_site.iter_mut().find(|(s, _)| *s == site) {
            Some((_, ids)) => ids.push(id.to_owned()),
            None => by_site.push((site, vec![id.to_owned()])),
        }
    }
    let removal = |site: &str| {
        steps.iter().find(|s| {
            s.input["compensation"] == true
                && s.input["scope"] == "workloads"
                && s.input["site"] == site
        })
    };
    let fenced_back = |site: &str| {
        steps.iter().any(|s| {
            s.input["compensation"] == true
                && s.input["action"] == "fence"
                && s.input["site"] == site
        })
    };
    let mut kept = Vec::new();
    for (site, ids) in by_site {
        match removal(&site) {
            None if fenced_back(&site) => kept.push((
                site,
                ids,
                "traffic was redirected to them before the run stopped, so they may hold \
                 writes: they stay fenced; inspect them, then delete them"
                    .to_owned(),
            )),
            None => kept.push((
                site,
                ids,
                "traffic was redirected to them and the old primary was never fenced (its \
                 site unreachable), so they stay running, serving what reaches them: a \
                 failover started again adopts them instead of recovering the workloads \
                 beside them"
                    .to_owned(),
            )),
            Some(step) => {
                let output = step.output.clone().unwrap_or_default();
                let left: Vec<String> = output["kept"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|id| id.as_str().map(str::to_owned))
                    .collect();
                if !left.is_empty() {
                    let why = output["reason"]
                        .as_str()
                        .unwrap_or("the plugin did not remove them");
                    kept.push((site, left, format!("the plugin did not remove them: {why}")));
                }
            }
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use rebound_store::StepRecord;
    use serde_json::json;

    use super::{PREFLIGHT_ACTION, compensation_steps, kept_standbys};
    use crate::test_steps::step;
    use rebound_domain::{PlanState, Workflow};

    /// A failover that fenced the primary and recovered db-1 on the standby.
    fn failed_failover() -> Vec<StepRecord> {
        vec![
            step(
                0,
                json!({"action": "fence", "site": "a", "workload": "db-1", "epoch": 2}),
                Some(json!({"fenced": true, "workload": "vm-1"})),
            ),
            step(
                1,
                json!({"action": "materialize", "site": "b", "workload": "db-1", "epoch": 2}),
                Some(json!({"workload": "b-vm-9"})),
            ),
        ]
    }

    fn with_compensation(mut steps: Vec<StepRecord>) -> Vec<StepRecord> {
        let extra = compensation_steps(&steps);
        let next = i32::try_from(steps.len()).unwrap_or(i32::MAX);
        steps.extend(
            extra
                .into_iter()
                .enumerate()
                .map(|(i, s)| step(next + i32::try_from(i).unwrap_or(0), s.input, None)),
        );
        steps
    }

    #[test]
    fn standbys_no_traffic_reached_are_removed_and_none_kept() {
        let steps = with_compensation(failed_failover());
        let actions: Vec<&str> = steps[2..]
            .iter()
            .map(|s| {
                s.input["scope"]
                    .as_str()
                    .unwrap_or(s.input["action"].as_str().unwrap_or(""))
            })
            .collect();
        assert_eq!(actions, ["fence", "unfence", "workloads"]);
        assert_eq!(steps[4].input["workloads"], json!(["b-vm-9"]));
        assert_eq!(steps[4].input["site"], "b");
        assert!(kept_standbys(&steps).is_empty());
    }

    #[test]
    fn standbys_traffic_reached_are_kept_and_named() {
        let mut steps = failed_failover();
        steps.push(step(
            2,
            json!({"action": "redirect", "site": "b", "weight": 10}),
            None,
        ));
        let steps = with_compensation(steps);
        assert!(
            steps.iter().all(|s| s.input["scope"] != "workloads"),
            "no removal once traffic went there"
        );
        let kept = kept_standbys(&steps);
        assert_eq!(kept.len(), 1);
        assert_eq!(
            (kept[0].0.as_str(), &kept[0].1),
            ("b", &vec!["b-vm-9".to_owned()])
        );
        assert!(kept[0].2.contains("may hold writes"), "{}", kept[0].2);
    }

    #[test]
    fn a_run_that_fenced_nothing_still_undoes_its_recovery_unless_traffic_went_there() {
        let mut steps = failed_failover();
        steps[0].output = Some(json!({"fenced": false, "workload": "db-1"}));
        let names: Vec<String> = compensation_steps(&steps)
            .iter()
            .map(|s| format!("{} {}", s.input["action"], s.input["scope"]))
            .collect();
        assert_eq!(names, ["\"fence\" null", "\"cleanup\" \"workloads\""]);
        steps.push(step(
            2,
            json!({"action": "redirect", "site": "b", "weight": 10}),
            None,
        ));
        assert!(
            compensation_steps(&steps).is_empty(),
            "serving the traffic it was sent: it stays"
        );
        let kept = kept_standbys(&steps);
        assert_eq!(kept.len(), 1);
        assert!(
            kept[0].2.contains("stay running") && kept[0].2.contains("adopts them"),
            "{}",
            kept[0].2
        );
    }

    #[test]
    fn what_a_run_adopted_is_never_undone_by_it() {
        let mut steps = failed_failover();
        steps[1].output = Some(json!({"workload": "b-vm-9", "adopted_from": "run-0"}));
        let names: Vec<String> = compensation_steps(&steps)
            .iter()
            .map(|s| format!("{} {}", s.input["action"], s.input["scope"]))
            .collect();
        assert_eq!(names, ["\"unfence\" null"], "only the primary given back");
    }

    #[test]
    fn standbys_a_plugin_could_not_remove_are_kept_with_its_reason() {
        let mut steps = with_compensation(failed_failover());
        let last = steps.len() - 1;
        steps[last].output = Some(json!({
            "removed": [], "kept": ["b-vm-9"], "reason": "plugin 'x' cleanup: unsupported",
        }));
        let kept = kept_standbys(&steps);
        assert_eq!(kept.len(), 1);
        assert!(kept[0].2.contains("unsupported"), "{}", kept[0].2);
    }

    #[test]
    fn a_fence_confirming_a_former_primary_is_never_undone() {
        // A reprotect that fenced the former primary the failover could
        // not, then failed replicating back: the fence stays.
        let steps = vec![
            step(
                0,
                json!({"action": "fence", "site": "a", "workload": "db-1", "epoch": 2, "confirm": true}),
                Some(json!({"fenced": true, "workload": "vm-1"})),
            ),
            step(
                1,
                json!({"action": "snapshot", "site": "b", "workload": "db-1"}),
                None,
            ),
        ];
        assert!(compensation_steps(&steps).is_empty());
    }

    /// Every workflow that fences checks first that the site it recovers
    /// on answers — after the approval, right before the fence.
    #[test]
    fn the_site_taking_over_is_checked_before_anything_is_fenced() {
        let plan = rebound_domain::PlanDocument::from_yaml(include_str!(
            "../../../docs/examples/plan.yaml"
        ))
        .expect("plan");
        let mut lifecycle = rebound_domain::Lifecycle::new(&plan.source, &plan.target);
        for (workflow, state) in [
            (Workflow::Failover, PlanState::Protected),
            (Workflow::Migration, PlanState::Protected),
            (Workflow::Failback, PlanState::ReadyForFailback),
            (Workflow::RollbackMigration, PlanState::AwaitingCommit),
        ] {
            lifecycle.state = state;
            let steps = super::plan_steps(&plan, &lifecycle, workflow);
            let at = |action: &str| steps.iter().position(|s| s.input["action"] == action);
            let check = at(PREFLIGHT_ACTION).unwrap_or_else(|| panic!("{workflow}: no check"));
            assert_eq!(steps[check].input["site"], lifecycle.standby.as_str());
            assert_eq!(
                at("fence"),
                Some(check + 1),
                "{workflow}: right before the fence"
            );
            if let Some(approval) = at(rebound_store::APPROVAL_ACTION) {
                assert!(approval < check, "{workflow}: after the approval");
            }
        }
        for workflow in [Workflow::Replication, Workflow::Reprotect, Workflow::Drill] {
            lifecycle.state = PlanState::Protected;
            let steps = super::plan_steps(&plan, &lifecycle, workflow);
            assert!(
                steps.iter().all(|s| s.input["action"] != PREFLIGHT_ACTION),
                "{workflow} fences nothing"
            );
        }
    }

    /// Hooks are steps where the plan puts them, each workflow calling
    /// those that list it: before the fences (after any approval), after
    /// the last tier's gates, after the last redirect.
    #[test]
    fn hooks_are_steps_at_their_points() {
        let plan = rebound_domain::PlanDocument::from_yaml(include_str!(
            "../../../docs/examples/plan-with-hooks.yaml"
        ))
        .expect("plan");
        let lifecycle = rebound_domain::Lifecycle::new(&plan.source, &plan.target);
        let around = |workflow| {
            let steps = super::plan_steps(&plan, &lifecycle, workflow);
            let mut out = Vec::new();
            for (i, s) in steps.iter().enumerate() {
                if let Some(hook) = s.input["hook"].as_str() {
                    let before = steps[..i].last().map(|p| p.input["action"].clone());
                    let after = steps.get(i + 1).map(|n| n.input["action"].clone());
                    out.push((hook.to_owned(), before, after));
                }
            }
            out
        };
        let action = |a: &str| Some(json!(a));
        assert_eq!(
            around(rebound_domain::Workflow::Failover),
            [
                (
                    "open-change".to_owned(),
                    action(PREFLIGHT_ACTION),
                    action("fence")
                ),
                ("warm-caches".to_owned(), action("gate"), action("hook")),
                ("close-change".to_owned(), action("hook"), None),
            ]
        );
        // (The plan has no redirect: the cutover follows the recovery.)
        // A failback: around its pre-sync's snapshots (not its final
        // sync's: the workloads are fenced by then), then before its fence.
        let failback = around(rebound_domain::Workflow::Failback);
        assert_eq!(
            failback[..3],
            [
                ("db-backup-mode".to_owned(), None, action("snapshot")),
                (
                    "db-resume".to_owned(),
                    action("snapshot"),
                    action("transfer")
                ),
                (
                    "open-change".to_owned(),
                    action(PREFLIGHT_ACTION),
                    action("fence")
                ),
            ]
        );
        assert_eq!(
            failback
                .iter()
                .filter(|(h, _, _)| h.starts_with("db-"))
                .count(),
            2
        );
        assert_eq!(
            around(rebound_domain::Workflow::Drill),
            [("warm-caches".to_owned(), action("gate"), action("cleanup"))]
        );
        assert!(
            around(rebound_domain::Workflow::Migration)
                .iter()
                .all(|(h, _, _)| h != "warm-caches"),
            "not listed for migrations"
        );
        assert_eq!(
            around(rebound_domain::Workflow::Replication),
            [
                ("db-backup-mode".to_owned(), None, action("snapshot")),
                (
                    "db-resume".to_owned(),
                    action("snapshot"),
                    action("transfer")
                ),
            ]
        );
    }

    /// A round-trip drill recovers on the standby, then — on its way back
    /// — captures the sandbox, copies it to the primary's site, recovers
    /// it there; both sandboxes go, then every copy it made.
    #[test]
    fn a_round_trip_drill_goes_there_and_back_then_leaves_nothing() {
        let mut plan = rebound_domain::PlanDocument::from_yaml(include_str!(
            "../../../docs/examples/plan.yaml"
        ))
        .expect("plan");
        plan.drills.round_trip = true;
        let lifecycle = rebound_domain::Lifecycle::new(&plan.source, &plan.target);
        let steps = super::plan_steps(&plan, &lifecycle, rebound_domain::Workflow::Drill);
        let shape: Vec<String> = steps
            .iter()
            .map(|s| {
                let i = &s.input;
                let on = i["site"].as_str().or(i["to"].as_str()).unwrap_or_default();
                let what = i["scope"]
                    .as_str()
                    .or(i["action"].as_str())
                    .unwrap_or_default();
                let leg = if i[super::LEG] == super::RETURN_LEG {
                    " ←"
                } else {
                    ""
                };
                format!("{what} {on}{leg}")
            })
            .collect();
        let (a, b) = ("openstack-east", "kubevirt-west");
        let mut expected = Vec::new();
        for _ in 0..3 {
            expected.extend([format!("materialize {b}"), format!("gate {b}")]);
        }
        expected.extend((0..3).map(|_| format!("snapshot {b} ←")));
        expected.extend((0..3).map(|_| format!("transfer {a} ←")));
        for _ in 0..3 {
            expected.extend([format!("materialize {a} ←"), format!("gate {a} ←")]);
        }
        expected.extend([format!("drill {a}"), format!("drill-points {b}")]);
        expected.extend([format!("drill {b}"), format!("drill-points {a}")]);
        assert_eq!(shape, expected);
        assert!(
            steps
                .iter()
                .filter(|s| s.input["action"] == "materialize")
                .all(|s| s.input["isolated"] == true),
            "both recoveries in sandboxes"
        );
    }

    /// A round-trip drill that failed on its way back, after copying to
    /// the primary's site and before recovering there: the copies captured
    /// on the standby go, then the sandbox there (there is none on the
    /// primary's site), then the copies on the primary's site.
    #[test]
    fn a_failed_round_trip_drill_removes_its_sandboxes_and_copies() {
        let back = |mut input: serde_json::Value| {
            input[super::LEG] = json!(super::RETURN_LEG);
            input
        };
        let mut steps = vec![
            step(
                0,
                json!({"action": "materialize", "site": "b", "workload": "db-1", "isolated": true}),
                Some(json!({"workload": "b-vm-9"})),
            ),
            step(
                1,
                back(json!({"action": "snapshot", "site": "b", "workload": "db-1"})),
                Some(json!({"recovery_point": "snap-1"})),
            ),
            step(
                2,
                back(json!({"action": "replicate", "from": "b", "to": "a", "workload": "db-1"})),
                None,
            ),
        ];
        steps[2].status = rebound_store::StepStatus::Failed;
        let undo = |steps: &[StepRecord]| -> Vec<String> {
            compensation_steps(steps)
                .iter()
                .map(|s| format!("{} {}", s.input["scope"], s.input["site"]))
                .collect()
        };
        assert_eq!(
            undo(&steps),
            [
                r#""drill-points" "b""#,
                r#""drill" "b""#,
                r#""drill-points" "a""#
            ]
        );
        assert!(kept_standbys(&steps).is_empty());
        // Failed later, at the way back's recovery: its sandbox goes first.
        steps[2].status = rebound_store::StepStatus::Succeeded;
        steps.push(step(
            3,
            back(
                json!({"action": "materialize", "site": "a", "workload": "db-1", "isolated": true}),
            ),
            None,
        ));
        steps[3].status = rebound_store::StepStatus::Failed;
        assert_eq!(
            undo(&steps),
            [
                r#""drill" "a""#,
                r#""drill-points" "b""#,
                r#""drill" "b""#,
                r#""drill-points" "a""#
            ]
        );
    }
}

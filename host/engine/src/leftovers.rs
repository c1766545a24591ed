//! What a drill could not tear down, and the later runs that do.
//!
//! A drill's sandbox (and, a round trip, the copies of its way back) goes
//! at its end, or — the drill failed or was cancelled — in its
//! compensation. A site down at that moment keeps them: the run ends
//! failed, and a `drill.leftovers` event names, per site, what stays (the
//! sandbox, by the drill's run id its workloads are labelled with, and the
//! copies). Nothing of it is lost track of: the plan's next replication
//! cycle or drill tries again at its end (steps with `left_by`: the run
//! that left them), retried like any step, then best effort — a run is
//! judged by what it is for, not by an earlier drill's remains, so a site
//! still refusing once the retries are spent leaves them for the run after
//! (the step done, its output `left`) and fails nothing. What stays is
//! known from the `drill.leftovers` events, without reading any drill's
//! steps again: a sandbox until a `drill.leftovers.removed` event (a later
//! run's teardown of it) says it went, copies until the store forgot them
//! (the site reported them removed).

use rebound_domain::Workflow;
use rebound_store::{EventRecord, NewStep, RunRecord, StepRecord, StepStatus, Store};
use serde_json::{Value, json};

use crate::EngineError;

/// The input field naming the drill run whose remains a teardown step
/// removes (absent: the step's own run).
pub const LEFT_BY: &str = "left_by";

/// The event kind of a drill that ended leaving its sandbox or copies on
/// a site.
pub const DRILL_LEFTOVERS: &str = "drill.leftovers";

/// The event kind of a later run's teardown of what a drill left on a
/// site (its sandbox, or its copies).
pub const DRILL_LEFTOVERS_REMOVED: &str = "drill.leftovers.removed";

/// What drill `run` left on `site`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Leftover {
    pub run: String,
    pub site: String,
    /// Its sandbox is (or may be) still there.
    pub sandbox: bool,
    /// The platform ids of its copies still there.
    pub copies: Vec<String>,
    /// The site its way back recovered on (a round trip's primary's site):
    /// the sandbox there was made from the copies there, so it goes
    /// first; elsewhere the copies were captured from the sandbox and go
    /// before it.
    pub way_back: bool,
}

/// The sites where the drill whose steps are `steps` recovered (or began
/// to) and where no teardown of its own succeeded: its sandbox may be
/// there still.
pub(crate) fn sandboxes_left(steps: &[StepRecord]) -> Vec<String> {
    let mut left: Vec<String> = Vec::new();
    let recovered = steps.iter().filter(|s| {
        s.input["action"] == "materialize"
            && s.input["isolated"] == true
            && (s.started_at_ms.is_some() || s.status == StepStatus::Succeeded)
    });
    for m in recovered {
        let Some(site) = m.input["site"].as_str() else {
            continue;
        };
        if !left.iter().any(|l| l == site) && !torn_down(steps, site) {
            left.push(site.to_owned());
        }
    }
    left
}

/// Whether one of `steps` tore down the steps' own run's sandbox on
/// `site`.
fn torn_down(steps: &[StepRecord], site: &str) -> bool {
    steps.iter().any(|s| {
        s.input["action"] == "cleanup"
            && s.input["scope"] == "drill"
            && s.input["site"] == site
            && s.input[LEFT_BY].is_null()
            && s.status == StepStatus::Succeeded
    })
}

/// What drill `run` (finished, its steps `steps`) left, per site.
pub(crate) async fn of_run(
    store: &Store,
    run: &str,
    steps: &[StepRecord],
) -> Result<Vec<Leftover>, EngineError> {
    let way_back = |site: &str| {
        steps.iter().any(|s| {
            s.input["action"] == "materialize"
                && s.input[crate::planner::LEG] == crate::planner::RETURN_LEG
                && s.input["site"] == site
        })
    };
    let mut out: Vec<Leftover> = sandboxes_left(steps)
        .into_iter()
        .map(|site| Leftover {
            run: run.to_owned(),
            way_back: way_back(&site),
            site,
            sandbox: true,
            copies: Vec::new(),
        })
        .collect();
    for point in store.drill_points(run).await? {
        let copy = point.id.clone();
        match out.iter_mut().find(|l| l.site == point.site) {
            Some(l) => l.copies.push(copy),
            None => out.push(Leftover {
                run: run.to_owned(),
                way_back: way_back(&point.site),
                site: point.site,
                sandbox: false,
                copies: vec![copy],
            }),
        }
    }
    Ok(out)
}

/// What the plan's drills left that no later run removed, from the
/// `drill.leftovers` events that named it (no drill's steps are read).
pub(crate) async fn of_plan(store: &Store, plan: &str) -> Result<Vec<Leftover>, EngineError> {
    let noted = store.events(Some(plan), &[DRILL_LEFTOVERS], 10_000).await?;
    still_there(store, plan, &noted).await
}

/// What drill `run` left that is still there, for its report.
pub(crate) async fn of_report(
    store: &Store,
    run: &RunRecord,
) -> Result<Vec<Leftover>, EngineError> {
    if run.workflow != Workflow::Drill {
        return Ok(Vec::new());
    }
    let mut noted = store
        .events(Some(&run.plan), &[DRILL_LEFTOVERS], 10_000)
        .await?;
    noted.retain(|e| e.detail["run"] == run.id.as_str());
    still_there(store, &run.plan, &noted).await
}

/// Of what the `drill.leftovers` events `noted` name, what is still there:
/// a sandbox until a `drill.leftovers.removed` event says a later run
/// removed it, copies until the store forgot them.
async fn still_there(
    store: &Store,
    plan: &str,
    noted: &[EventRecord],
) -> Result<Vec<Leftover>, EngineError> {
    if noted.is_empty() {
        return Ok(Vec::new());
    }
    let removed = store
        .events(Some(plan), &[DRILL_LEFTOVERS_REMOVED], 10_000)
        .await?;
    let mut out = Vec::new();
    for e in noted {
        let (Some(run), Some(site)) = (e.detail["run"].as_str(), e.detail["site"].as_str()) else {
            continue;
        };
        let sandbox = e.detail["sandbox"] == true
            && !removed.iter().any(|r| {
                r.detail["run"] == run && r.detail["site"] == site && r.detail["scope"] == "drill"
            });
        // (Copies a drill did not leave do not appear later.)
        let copies = if e.detail["copies"].as_array().is_some_and(|c| !c.is_empty()) {
            store
                .drill_points(run)
                .await?
                .into_iter()
                .filter(|p| p.site == site)
                .map(|p| p.id)
                .collect()
        } else {
            Vec::new()
        };
        if sandbox || !copies.is_empty() {
            out.push(Leftover {
                run: run.to_owned(),
                site: site.to_owned(),
                sandbox,
                copies,
                way_back: e.detail["way_back"] == true,
            });
        }
    }
    Ok(out)
}

/// The teardowns of what earlier drills left among `steps` that
/// succeeded: `(drill run, site, scope)`.
pub(crate) fn removals(steps: &[StepRecord]) -> Vec<(String, String, String)> {
    steps
        .iter()
        .filter(|s| s.status == StepStatus::Succeeded)
        .filter(|s| s.output.as_ref().is_none_or(|o| o["left"] != true))
        .filter_map(|s| {
            let text = |field: &str| s.input[field].as_str().map(str::to_owned);
            Some((text(LEFT_BY)?, text("site")?, text("scope")?))
        })
        .collect()
}

/// Append to a replication cycle or drill about to start on `plan`, after
/// its own steps, the stages tearing down what earlier drills left (see
/// the module doc).
pub(crate) async fn offer(
    store: &Store,
    plan: &str,
    steps: &mut Vec<NewStep>,
) -> Result<(), EngineError> {
    for stage in teardowns(&of_plan(store, plan).await?) {
        let first = steps.len();
        steps.extend(stage);
        crate::planner::stage(steps, first);
    }
    Ok(())
}

/// The best-effort steps removing `left`, in stages, what depends on
/// another first (as a round-trip drill's own teardown: see
/// `planner::plan_steps`): the way back's sandboxes and the copies
/// captured elsewhere, then the other sandboxes and the way back's copies.
fn teardowns(left: &[Leftover]) -> Vec<Vec<NewStep>> {
    let mut stages = [Vec::new(), Vec::new()];
    for l in left {
        let run = json!(l.run);
        if l.sandbox {
            stages[usize::from(!l.way_back)].push(NewStep {
                name: format!("tear down the sandbox drill {} left on {}", l.run, l.site),
                input: teardown(&l.site, "drill", &run),
            });
        }
        if !l.copies.is_empty() {
            stages[usize::from(l.way_back)].push(NewStep {
                name: format!("remove the copies drill {} left on {}", l.run, l.site),
                input: teardown(&l.site, "drill-points", &run),
            });
        }
    }
    stages.into_iter().filter(|s| !s.is_empty()).collect()
}

fn teardown(site: &str, scope: &str, run: &Value) -> Value {
    json!({"action": "cleanup", "site": site, "scope": scope, LEFT_BY: run, "best_effort": true})
}

#[cfg(test)]
mod tests {
    use rebound_store::StepStatus;
    use serde_json::json;

    use super::{Leftover, removals, sandboxes_left, teardowns};
    use crate::test_steps::step;

    fn recovered(seq: i32, site: &str) -> rebound_store::StepRecord {
        step(
            seq,
            json!({"action": "materialize", "site": site, "workload": "vm-1", "isolated": true}),
            Some(json!({"workload": "sandbox-1"})),
        )
    }

    fn teardown(seq: i32, site: &str, status: StepStatus) -> rebound_store::StepRecord {
        let mut s = step(
            seq,
            json!({"action": "cleanup", "site": site, "scope": "drill"}),
            None,
        );
        s.status = status;
        s
    }

    #[test]
    fn a_sandbox_is_left_where_no_teardown_of_its_own_succeeded() {
        let steps = vec![
            recovered(0, "b"),
            recovered(1, "a"),
            teardown(2, "b", StepStatus::Failed),
            teardown(3, "a", StepStatus::Succeeded),
            // The compensation's, never reached.
            teardown(4, "b", StepStatus::Pending),
        ];
        assert_eq!(sandboxes_left(&steps), ["b"]);
        let mut done = steps.clone();
        done.push(teardown(5, "b", StepStatus::Succeeded));
        assert!(sandboxes_left(&done).is_empty());
        // A failover's recovery is no sandbox.
        let mut failover = recovered(0, "b");
        failover.input["isolated"] = json!(false);
        assert!(sandboxes_left(&[failover]).is_empty());
    }

    #[test]
    fn a_teardown_of_what_an_earlier_drill_left_counts_when_it_removed_it() {
        let mut later = step(
            9,
            json!({"action": "cleanup", "site": "b", "scope": "drill", "left_by": "run-0"}),
            Some(json!({"removed": ["sandbox-1"]})),
        );
        let removal = ("run-0".to_owned(), "b".to_owned(), "drill".to_owned());
        assert_eq!(removals(&[later.clone()]), [removal]);
        // Its own teardown is not another's.
        let own = teardown(3, "b", StepStatus::Succeeded);
        assert!(removals(&[own]).is_empty());
        later.output = Some(json!({"removed": [], "left": true, "reason": "the site is down"}));
        assert!(removals(&[later.clone()]).is_empty());
        later.status = StepStatus::Failed;
        later.output = None;
        assert!(removals(&[later]).is_empty());
    }

    #[test]
    fn leftovers_are_torn_down_best_effort_what_depends_on_another_first() {
        let left = |site: &str, sandbox: bool, way_back: bool| Leftover {
            run: "run-0".into(),
            site: site.into(),
            sandbox,
            copies: vec![format!("snap-{site}")],
            way_back,
        };
        let stages = teardowns(&[left("b", true, false), left("a", true, true)]);
        let shape: Vec<Vec<_>> = stages
            .iter()
            .map(|stage| {
                stage
                    .iter()
                    .map(|s| {
                        assert_eq!(
                            (&s.input["left_by"], &s.input["best_effort"]),
                            (&json!("run-0"), &json!(true))
                        );
                        (s.input["site"].clone(), s.input["scope"].clone())
                    })
                    .collect()
            })
            .collect();
        assert_eq!(
            shape,
            [
                vec![
                    (json!("b"), json!("drill-points")),
                    (json!("a"), json!("drill"))
                ],
                vec![
                    (json!("b"), json!("drill")),
                    (json!("a"), json!("drill-points"))
                ],
            ]
        );
        // Copies alone: one stage.
        assert_eq!(teardowns(&[left("a", false, true)]).len(), 1);
    }
}

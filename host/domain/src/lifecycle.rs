//! The lifecycle of one protection plan (DESIGN.md §3) as a state machine:
//! which workflow may start from which state, where it lands when it
//! succeeds or rolls back, and the fencing epoch that keeps two sites from
//! ever both being primary.
//!
//! ```text
//! Protected(A→B) ──failover──▶ FailedOver(on B) ──reprotect──▶ ReadyForFailback(B→A)
//!      ▲                          │                                   │
//!      │                 permanent failover                       failback
//!      │                          ▼                                   │
//!      └──────────── Protected(B→C)        Protected(A→B) ◀───────────┘
//! Protected ──migration──▶ AwaitingCommit ──commit──▶ Protected(B→A)
//!                                │ rollback ──▶ Protected(A→B)
//! Protected ──unprotect──▶ Unprotected ──apply again──▶ Protected
//! Drills run from Protected or ReadyForFailback and change no state.
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a plan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PlanState {
    /// Running on the primary, replicating to the standby.
    Protected,
    FailingOver,
    /// Running on the former standby, unprotected.
    FailedOver,
    /// Replicating back (deltas only) to the restored original site.
    Reprotecting,
    /// Reverse replication is in sync; a failback may start.
    ReadyForFailback,
    FailingBack,
    Migrating,
    /// A migration cut over; the source is kept until commit or rollback.
    AwaitingCommit,
    PermanentlyFailingOver,
    CommittingMigration,
    RollingBackMigration,
    /// Its recovery points are being removed; the workloads keep serving.
    Unprotecting,
    /// Serving on the primary with no copy anywhere and nothing scheduled;
    /// applying the plan's document again protects it again.
    Unprotected,
}

impl fmt::Display for PlanState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        f.write_str(&text)
    }
}

/// The workflows that move a plan between states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Workflow {
    Failover,
    Reprotect,
    Failback,
    Migration,
    PermanentFailover,
    CommitMigration,
    RollbackMigration,
    Drill,
    /// One replication cycle (snapshot the primary, replicate to the
    /// standby); the policy engine schedules them to keep RPO. Changes no
    /// state.
    Replication,
    /// Stop protecting: every recovery point of the plan removed from
    /// both sites (and what earlier runs left), the workloads untouched.
    Unprotect,
}

impl fmt::Display for Workflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        f.write_str(&text)
    }
}

/// Which objectives a workflow is measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Failover,
    Failback,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Failover => "failover",
            Self::Failback => "failback",
        })
    }
}

impl Workflow {
    /// The phase whose RTO/RPO budget the workflow is charged to; drills
    /// rehearse a failover.
    pub fn phase(self) -> Phase {
        match self {
            Self::Failback | Self::Reprotect | Self::CommitMigration | Self::RollbackMigration => {
                Phase::Failback
            }
            Self::Failover
            | Self::Migration
            | Self::PermanentFailover
            | Self::Drill
            | Self::Replication
            | Self::Unprotect => Phase::Failover,
        }
    }
}

/// A workflow that may not start now, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot start {workflow}: the plan is {state}; {hint}")]
pub struct TransitionError {
    pub workflow: Workflow,
    pub state: PlanState,
    pub hint: String,
}

/// A plan's lifecycle: state, which site is primary, and the fencing epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    pub state: PlanState,
    /// The site serving the workloads (the only one allowed to write).
    pub primary: String,
    /// The site holding the copy.
    pub standby: String,
    /// Bumped on every promotion; a site may act as primary only under the
    /// current epoch, and plugins record it when they fence.
    pub epoch: u64,
    /// A former primary that has not been confirmed fenced under the
    /// current epoch (it was unreachable at failover). Nothing replicates
    /// back to it until it is.
    pub unfenced: Option<String>,
    /// A drill in progress (it changes no state, but only one at a time).
    pub drilling: bool,
    /// While a permanent failover protects onto a new site: the standby it
    /// replaces, given back if the run does not finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_standby: Option<String>,
}

impl Lifecycle {
    pub fn new(source: &str, target: &str) -> Self {
        Self {
            state: PlanState::Protected,
            primary: source.to_owned(),
            standby: target.to_owned(),
            epoch: 1,
            unfenced: None,
            drilling: false,
            replaced_standby: None,
        }
    }

    fn refuse(&self, workflow: Workflow, hint: &str) -> TransitionError {
        TransitionError {
            workflow,
            state: self.state,
            hint: hint.to_owned(),
        }
    }

    /// Start a workflow, or say why it may not start.
    pub fn begin(&mut self, workflow: Workflow) -> Result<(), TransitionError> {
        use PlanState as S;
        use Workflow as W;
        let next = match (workflow, self.state) {
            (_, S::Unprotected) => {
                return Err(self.refuse(
                    workflow,
                    "apply the plan's document again to protect it first",
                ));
            }
            (W::Replication, S::Protected | S::ReadyForFailback) => return Ok(()),
            (W::Replication, _) => {
                return Err(self.refuse(
                    workflow,
                    "replication cycles run while protected or ready_for_failback",
                ));
            }
            (W::Drill, S::Protected | S::ReadyForFailback) if !self.drilling => {
                self.drilling = true;
                return Ok(());
            }
            (W::Drill, S::Protected | S::ReadyForFailback) => {
                return Err(self.refuse(
                    workflow,
                    "a drill is already running; wait for it to finish",
                ));
            }
            (W::Drill, _) => {
                return Err(
                    self.refuse(workflow, "drills run from protected or ready_for_failback")
                );
            }
            (W::Failover, S::Protected) => S::FailingOver,
            (W::Migration, S::Protected) => S::Migrating,
            // A former primary never confirmed fenced is fenced by the
            // reprotect itself before anything replicates back to it.
            (W::Reprotect, S::FailedOver) => S::Reprotecting,
            (W::PermanentFailover, S::FailedOver) => S::PermanentlyFailingOver,
            (W::Failback, S::ReadyForFailback) => S::FailingBack,
            (W::CommitMigration, S::AwaitingCommit) => S::CommittingMigration,
            (W::RollbackMigration, S::AwaitingCommit) => S::RollingBackMigration,
            (W::Unprotect, S::Protected) => S::Unprotecting,
            (W::Unprotect, S::ReadyForFailback | S::FailedOver) => {
                return Err(self.refuse(
                    workflow,
                    "protection stops from protected; fail back first (or, to stay where the workloads run, fail over permanently)",
                ));
            }
            (W::Unprotect, _) => {
                return Err(self.refuse(workflow, "protection stops from protected"));
            }
            (W::Failover, _) => {
                return Err(self.refuse(workflow, "a failover starts from protected"));
            }
            (W::Migration, _) => {
                return Err(self.refuse(workflow, "a migration starts from protected"));
            }
            (W::Reprotect | W::PermanentFailover, _) => {
                return Err(self.refuse(
                    workflow,
                    "it follows a failover (the plan must be failed_over)",
                ));
            }
            (W::Failback, S::FailedOver) => {
                return Err(self.refuse(
                    workflow,
                    "run reprotect first so the original site holds a current copy",
                ));
            }
            (W::Failback, _) => {
                return Err(self.refuse(workflow, "a failback starts from ready_for_failback"));
            }
            (W::CommitMigration | W::RollbackMigration, _) => {
                return Err(self.refuse(workflow, "there is no migration awaiting commit"));
            }
        };
        if self.drilling && workflow != W::Failover {
            // A real failover must never wait for a rehearsal; everything
            // else waits for the drill to clean up.
            return Err(self.refuse(workflow, "a drill is running; wait for it to finish"));
        }
        self.state = next;
        Ok(())
    }

    /// A workflow finished: it succeeded, or it was rolled back
    /// (compensated) and the plan returns to where it started.
    /// `old_primary_fenced` says whether the site that stops being primary
    /// was confirmed fenced (always required for planned workflows), or
    /// for a reprotect, whether it fenced the former primary the failover
    /// could not (`unfenced`) — required, and then it is confirmed.
    pub fn finish(
        &mut self,
        workflow: Workflow,
        succeeded: bool,
        old_primary_fenced: bool,
    ) -> Result<(), TransitionError> {
        if workflow == Workflow::Replication {
            return Ok(());
        }
        let Some(t) = transition(workflow) else {
            self.drilling = false;
            return Ok(());
        };
        if self.state != t.running {
            return Err(self.refuse(workflow, "it is not running"));
        }
        if !succeeded {
            // Compensation leaves the last good copy where it was.
            self.state = t.rolled_back;
            if let Some(standby) = self.replaced_standby.take() {
                self.standby = standby;
            }
            return Ok(());
        }
        if matches!(workflow, Workflow::Reprotect | Workflow::PermanentFailover)
            && let Some(site) = self.unfenced.as_ref().filter(|s| **s == self.standby)
        {
            // Nothing replicates back to a site that may still serve.
            if !old_primary_fenced {
                let hint = format!(
                    "'{site}' was never confirmed fenced under epoch {}; the {workflow} must fence it before anything replicates to it",
                    self.epoch
                );
                return Err(self.refuse(workflow, &hint));
            }
            self.unfenced = None;
        }
        self.replaced_standby = None;
        if t.promotes {
            let planned = workflow != Workflow::Failover;
            if planned && !old_primary_fenced {
                let hint = format!(
                    "'{}' must be fenced before the other site is promoted",
                    self.primary
                );
                return Err(self.refuse(workflow, &hint));
            }
            std::mem::swap(&mut self.primary, &mut self.standby);
            self.epoch += 1;
            self.unfenced = (!old_primary_fenced).then(|| self.standby.clone());
        }
        self.state = t.succeeded;
        Ok(())
    }

    /// The plan's document applied again: an unprotected plan is
    /// protected again, between the sites it was left on.
    pub fn protect_again(&mut self) {
        if self.state == PlanState::Unprotected {
            self.state = PlanState::Protected;
        }
    }

    /// A permanent failover that protects onto a new site (the old primary
    /// lost for good): `site` becomes the standby now, the one it replaces
    /// kept until the run finishes (and given back if it fails). A former
    /// primary never confirmed fenced stays named in `unfenced`: if it ever
    /// comes back, its old incarnations must be dealt with.
    pub fn retarget(&mut self, site: &str) -> Result<(), TransitionError> {
        let workflow = Workflow::PermanentFailover;
        if self.state != PlanState::PermanentlyFailingOver {
            return Err(self.refuse(workflow, "only a permanent failover chooses a new standby"));
        }
        if site == self.primary {
            let hint = format!(
                "the new standby must be another site than the primary '{}'",
                self.primary
            );
            return Err(self.refuse(workflow, &hint));
        }
        if site != self.standby {
            let replaced = std::mem::replace(&mut self.standby, site.to_owned());
            self.replaced_standby.get_or_insert(replaced);
        }
        Ok(())
    }
}

/// What a (non-drill) workflow does to the state.
struct Transition {
    running: PlanState,
    succeeded: PlanState,
    rolled_back: PlanState,
    /// Success promotes the standby (swap roles, bump the epoch).
    promotes: bool,
}

fn transition(workflow: Workflow) -> Option<Transition> {
    use PlanState as S;
    let t = |running, succeeded, rolled_back, promotes| Transition {
        running,
        succeeded,
        rolled_back,
        promotes,
    };
    Some(match workflow {
        Workflow::Failover => t(S::FailingOver, S::FailedOver, S::Protected, true),
        Workflow::Reprotect => t(S::Reprotecting, S::ReadyForFailback, S::FailedOver, false),
        Workflow::Failback => t(S::FailingBack, S::Protected, S::ReadyForFailback, true),
        Workflow::Migration => t(S::Migrating, S::AwaitingCommit, S::Protected, true),
        Workflow::PermanentFailover => t(
            S::PermanentlyFailingOver,
            S::Protected,
            S::FailedOver,
            false,
        ),
        Workflow::CommitMigration => t(
            S::CommittingMigration,
            S::Protected,
            S::AwaitingCommit,
            false,
        ),
        Workflow::RollbackMigration => t(
            S::RollingBackMigration,
            S::Protected,
            S::AwaitingCommit,
            true,
        ),
        // A failed unprotect leaves some points: the plan is still
        // protected, and its next cycle makes a current copy.
        Workflow::Unprotect => t(S::Unprotecting, S::Unprotected, S::Protected, false),
        Workflow::Drill | Workflow::Replication => return None,
    })
}

#[cfg(test)]
mod tests;

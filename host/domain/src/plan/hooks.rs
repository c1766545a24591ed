//! Hooks: calls the host makes at fixed points of a run — around the
//! snapshots of the serving workloads, before the old primary is fenced,
//! once the workloads are recovered and healthy, after traffic moved — so
//! the systems around a plan (a database to quiesce for a consistent copy,
//! a change ticket, a cache to warm, a runbook step no platform API
//! covers) act at the right moment.
//! A hook is an HTTP `POST` of the run's context to a URL the host's
//! operator allowed; its answer decides whether the run goes on.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Span, Workflow};

/// A call at one point of the plan's runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hook {
    /// Names the hook in step names and payloads (a-z, 0-9, '-').
    pub name: String,
    pub at: HookPoint,
    /// The workflows that call it (default: failover, failback, migration).
    #[serde(default = "default_workflows")]
    pub workflows: Vec<Workflow>,
    /// Where the host `POST`s the run's context (http or https; the host's
    /// `hooks.allow` must list its origin). No credentials in it: it is
    /// shown with the run; the host signs each call instead.
    pub url: String,
    /// How long the call may take (at most 10 minutes).
    #[serde(default = "default_timeout")]
    pub timeout: Span,
    /// What a failed call does to the run.
    #[serde(default)]
    pub on_failure: OnFailure,
}

/// Where in a run a hook is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookPoint {
    /// After any approval, before the old primary is fenced: the last
    /// moment it still serves.
    BeforeFence,
    /// Once every workload is recovered and past its health gate, before
    /// traffic moves (in a drill: in its sandbox).
    AfterRecovery,
    /// After the last redirect step: the recovered side serves.
    AfterCutover,
    /// Before the serving workloads are snapshotted (a replication cycle,
    /// a reprotect, the pre-sync of a failback or migration): an
    /// application puts itself in a state its copy can start from.
    BeforeSnapshot,
    /// Once those snapshots are taken — or the run stopped after the
    /// `before_snapshot` hooks were called: then its undoing calls this
    /// first, so an application is never left quiesced.
    AfterSnapshot,
}

impl HookPoint {
    /// As step names say it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::BeforeFence => "before the fence",
            Self::AfterRecovery => "after the recovery",
            Self::AfterCutover => "after the cutover",
            Self::BeforeSnapshot => "before the snapshot",
            Self::AfterSnapshot => "after the snapshot",
        }
    }
}

/// What a failed hook does to its run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// The run stops there (and is undone like any failed run).
    #[default]
    Fail,
    /// The failure is recorded in the step and the run goes on.
    Continue,
}

fn default_workflows() -> Vec<Workflow> {
    vec![Workflow::Failover, Workflow::Failback, Workflow::Migration]
}

fn default_timeout() -> Span {
    Span::secs(30)
}

/// The longest a hook may take.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// The workflows that pass `point`: around the snapshots, those that
/// snapshot the serving workloads; at the other points, those that fence,
/// recover and move traffic — and drills, which only recover (into their
/// sandbox).
pub fn passes(workflow: Workflow, point: HookPoint) -> bool {
    if matches!(point, HookPoint::BeforeSnapshot | HookPoint::AfterSnapshot) {
        return snapshots_serving(workflow);
    }
    match workflow {
        Workflow::Failover
        | Workflow::Failback
        | Workflow::Migration
        | Workflow::RollbackMigration => true,
        Workflow::Drill => point == HookPoint::AfterRecovery,
        _ => false,
    }
}

/// Whether `workflow` snapshots the workloads while they serve.
fn snapshots_serving(workflow: Workflow) -> bool {
    matches!(
        workflow,
        Workflow::Replication
            | Workflow::Reprotect
            | Workflow::Failback
            | Workflow::Migration
            | Workflow::PermanentFailover
    )
}

/// The origin (`scheme://host:port`) of an http(s) URL, or why it is not
/// one a hook may call.
pub fn origin(url: &str) -> Result<String, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("'{url}' is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("'{url}' must be http or https"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(
            "credentials do not belong in a hook's URL (it is shown with every run); the host \
             signs each call with its hooks.secret instead"
                .into(),
        );
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| format!("'{url}' names no host"))?;
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| format!("'{url}' names no port"))?;
    Ok(format!("{}://{host}:{port}", parsed.scheme()))
}

/// Every problem with `hooks`, as `(field, reason)`.
pub(super) fn problems(hooks: &[Hook]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut names = BTreeSet::new();
    for (i, h) in hooks.iter().enumerate() {
        let field = |f: &str| format!("hooks[{i}].{f}");
        let name_ok = !h.name.is_empty()
            && h.name.len() <= 63
            && h.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !name_ok {
            out.push((
                field("name"),
                format!("'{}' must be 1-63 characters of a-z, 0-9 and '-'", h.name),
            ));
        } else if !names.insert(h.name.as_str()) {
            out.push((field("name"), format!("'{}' is used twice", h.name)));
        }
        if let Err(reason) = origin(&h.url) {
            out.push((field("url"), reason));
        }
        if h.timeout.0.is_zero() || h.timeout.0 > MAX_TIMEOUT {
            out.push((
                field("timeout"),
                format!("{} must be more than 0s and at most 10m", h.timeout),
            ));
        }
        if h.workflows.is_empty() {
            out.push((field("workflows"), "must name at least one workflow".into()));
        }
        for w in &h.workflows {
            if !passes(*w, h.at) {
                let why = match h.at {
                    HookPoint::BeforeSnapshot | HookPoint::AfterSnapshot => format!(
                        "a {w} takes no snapshot of the serving workloads (replication, reprotect, failback, migration and permanent_failover do)"
                    ),
                    _ if *w == Workflow::Drill => {
                        "a drill fences nothing and moves no traffic; call it after_recovery"
                            .to_owned()
                    }
                    _ => format!("a {w} fences, recovers and redirects nothing"),
                };
                out.push((
                    field("workflows"),
                    format!("'{w}' never passes {}: {why}", h.at.describe()),
                ));
            }
        }
    }
    out
}

//! Protection plans as documents: the schema users write in YAML or JSON
//! (and the API and CLI accept), parsing with errors that name the field,
//! and validation of everything that can be checked without a site.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Span;

/// A protection plan: which workloads, from which site to which, how, and
/// the objectives of each phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanDocument {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The site the workloads run on while protected.
    pub source: String,
    /// The site they fail over to.
    pub target: String,
    /// The workloads and their recovery order (a DAG through `depends_on`).
    pub workloads: Vec<WorkloadEntry>,
    pub replication: Replication,
    pub objectives: Objectives,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_mapping: Vec<NetworkMapping>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,
    #[serde(default)]
    pub trigger: Trigger,
    #[serde(default)]
    pub approvals: Approvals,
    #[serde(default, skip_serializing_if = "Drills::is_default")]
    pub drills: Drills,
    /// Calls the host makes at points of the plan's runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<Hook>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadEntry {
    /// The workload's id in the source site's inventory.
    pub id: String,
    /// Workloads that must be recovered (and pass their gates) first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_gate: Option<HealthGate>,
    /// How its snapshots capture it: `crash` (the disks as they are), or
    /// `application` (the guest's file systems frozen first, so a database
    /// finds its files consistent; the sites' plugins must be able to).
    #[serde(default, skip_serializing_if = "Consistency::is_crash")]
    pub consistency: Consistency,
}

/// How a snapshot captures a workload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    #[default]
    Crash,
    Application,
}

impl Consistency {
    fn is_crash(&self) -> bool {
        *self == Self::Crash
    }
}

/// What must hold before the workloads that depend on this one start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "check", rename_all = "snake_case")]
pub enum HealthGate {
    /// The platform reports the workload running.
    PoweredOn { timeout: Span },
    /// A TCP port of the workload accepts connections.
    Tcp { port: u16, timeout: Span },
    /// An HTTP path answers with the expected status.
    Http {
        port: u16,
        path: String,
        expect_status: u16,
        timeout: Span,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicationMode {
    /// The platform copies recovery points between its own sites.
    Native,
    /// The host's data mover copies disks (any platform to any other).
    DataMover,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replication {
    pub mode: ReplicationMode,
    /// How often a replication cycle runs.
    pub interval: Span,
    /// Recovery points kept at the target.
    #[serde(default = "default_retention")]
    pub retention: u32,
}

fn default_retention() -> u32 {
    3
}

/// RTO and RPO of one phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseObjectives {
    /// Longest acceptable time from trigger to service restored.
    pub rto: Span,
    /// Most data (as time) the phase may lose.
    pub rpo: Span,
}

/// Objectives per phase: failover and failback are different numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objectives {
    pub failover: PhaseObjectives,
    pub failback: PhaseObjectives,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkMapping {
    pub source: String,
    pub target: String,
    /// Keep MAC and IP addresses instead of taking new ones.
    #[serde(default)]
    pub keep_addresses: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    pub target: RedirectTarget,
    /// Traffic weights (percent to the recovered side) applied in order;
    /// the last must be 100.
    #[serde(default = "full_cutover")]
    pub canary: Vec<u8>,
    /// How long each canary step must stay healthy before the next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<Span>,
}

fn full_cutover() -> Vec<u8> {
    vec![100]
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum RedirectTarget {
    DnsRecord {
        zone: String,
        name: String,
        record_type: String,
        ttl: u32,
    },
    LoadBalancerPool {
        pool: String,
    },
    FloatingIp {
        address: String,
    },
    Route {
        route: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerMode {
    #[default]
    Manual,
    Automatic,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    #[serde(default)]
    pub mode: TriggerMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detection: Option<Detection>,
}

/// When an automatic failover may start: the source is declared down only
/// after consecutive failed probes confirmed by a quorum of witnesses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detection {
    pub probe_interval: Span,
    pub consecutive_failures: u32,
    pub witnesses: u32,
}

/// Which workflows pause for an operator's approval before acting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approvals {
    #[serde(default)]
    pub failover: bool,
    #[serde(default = "yes")]
    pub failback: bool,
    #[serde(default = "yes")]
    pub migration: bool,
}

fn yes() -> bool {
    true
}

impl Default for Approvals {
    fn default() -> Self {
        Self {
            failover: false,
            failback: true,
            migration: true,
        }
    }
}

/// The shortest span between scheduled drills.
pub const MIN_DRILL_EVERY: Span = Span(std::time::Duration::from_secs(3600));

/// What a drill rehearses, and how often the policy runs one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drills {
    /// The round trip: after the recovery on the standby, the sandbox's
    /// data goes back to the site it came from and is recovered there too
    /// (into a sandbox of its own), so one drill measures the way back
    /// against the other phase's objectives. Needs both sites up.
    #[serde(default)]
    pub round_trip: bool,
    /// How often the policy engine runs a drill of its own: once this long
    /// has passed since the plan's last drill started (the first as soon
    /// as every workload has a recovery point), and the plan is judged
    /// against it — a drill is overdue once no drill succeeded within this
    /// span and the RTO objectives it rehearses. Unset: drills are only
    /// run by hand. At least 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<Span>,
}

impl Drills {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path, e.g. `objectives.failback.rpo` or `workloads[2].id`.
    pub field: String,
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Why a plan document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The text does not parse into the schema.
    #[error("plan document ({format}) does not parse at `{field}`: {reason}")]
    Syntax {
        format: &'static str,
        field: String,
        reason: String,
    },
    /// It parses but breaks rules; every problem is listed.
    #[error("plan is invalid: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
}

impl PlanError {
    /// The problems, one per field.
    pub fn fields(&self) -> Vec<FieldError> {
        match self {
            Self::Syntax { field, reason, .. } => vec![FieldError {
                field: field.clone(),
                reason: reason.clone(),
            }],
            Self::Invalid(errors) => errors.clone(),
        }
    }
}

impl PlanDocument {
    /// Parse YAML (JSON is YAML too, but use [`Self::from_json`] for
    /// JSON's own error messages) and validate.
    pub fn from_yaml(text: &str) -> Result<Self, PlanError> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let doc: Self = serde_path_to_error::deserialize(de).map_err(|e| syntax("yaml", e))?;
        doc.validate()?;
        Ok(doc)
    }

    pub fn from_json(text: &str) -> Result<Self, PlanError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let doc: Self = serde_path_to_error::deserialize(&mut de).map_err(|e| syntax("json", e))?;
        doc.validate()?;
        Ok(doc)
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).unwrap_or_default()
    }

    /// Check every rule that needs no site; all problems at once.
    pub fn validate(&self) -> Result<(), PlanError> {
        let mut errors = Vec::new();
        let mut err = |field: &str, reason: String| {
            errors.push(FieldError {
                field: field.to_owned(),
                reason,
            })
        };

        let name_ok = !self.name.is_empty()
            && self.name.len() <= 63
            && self.name.starts_with(|c: char| c.is_ascii_lowercase())
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !name_ok {
            err(
                "name",
                format!(
                    "'{}' must be 1-63 characters of a-z, 0-9 and '-', starting with a letter",
                    self.name
                ),
            );
        }
        if self.source.is_empty() {
            err("source", "must name the site the workloads run on".into());
        }
        if self.target.is_empty() {
            err("target", "must name the site to fail over to".into());
        }
        if !self.source.is_empty() && self.source == self.target {
            err(
                "target",
                format!("must differ from source ('{}')", self.source),
            );
        }

        if self.workloads.is_empty() {
            err("workloads", "must list at least one workload".into());
        }
        let mut seen = BTreeSet::new();
        for (i, w) in self.workloads.iter().enumerate() {
            if w.id.is_empty() {
                err(&format!("workloads[{i}].id"), "must not be empty".into());
            } else if !seen.insert(w.id.as_str()) {
                err(
                    &format!("workloads[{i}].id"),
                    format!("'{}' is listed twice", w.id),
                );
            }
        }
        let ids: BTreeSet<&str> = self.workloads.iter().map(|w| w.id.as_str()).collect();
        for (i, w) in self.workloads.iter().enumerate() {
            for dep in &w.depends_on {
                if dep == &w.id {
                    err(
                        &format!("workloads[{i}].depends_on"),
                        format!("'{dep}' cannot depend on itself"),
                    );
                } else if !ids.contains(dep.as_str()) {
                    err(
                        &format!("workloads[{i}].depends_on"),
                        format!("'{dep}' is not a workload of this plan"),
                    );
                }
            }
        }
        for (i, w) in self.workloads.iter().enumerate() {
            let Some(gate) = &w.health_gate else { continue };
            let field = format!("workloads[{i}].health_gate");
            let (port, timeout) = match gate {
                HealthGate::PoweredOn { timeout } => (None, timeout),
                HealthGate::Tcp { port, timeout } | HealthGate::Http { port, timeout, .. } => {
                    (Some(*port), timeout)
                }
            };
            if port == Some(0) {
                err(
                    &format!("{field}.port"),
                    "must be a port from 1 to 65535".into(),
                );
            }
            if timeout.0.is_zero() {
                err(&format!("{field}.timeout"), "must be more than 0s".into());
            }
            if let HealthGate::Http {
                path,
                expect_status,
                ..
            } = gate
            {
                if !path.starts_with('/')
                    || path.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    err(
                        &format!("{field}.path"),
                        format!("'{path}' must start with '/' and hold no spaces"),
                    );
                }
                if !(100..=599).contains(expect_status) {
                    err(
                        &format!("{field}.expect_status"),
                        format!("{expect_status} is not an HTTP status (100 to 599)"),
                    );
                }
            }
        }
        if let Err(cycle) = self.tiers() {
            err(
                "workloads",
                format!("the recovery order has a cycle: {}", cycle.join(" → ")),
            );
        }

        for (phase, o) in [
            ("failover", self.objectives.failover),
            ("failback", self.objectives.failback),
        ] {
            if o.rto.0.is_zero() {
                err(
                    &format!("objectives.{phase}.rto"),
                    "must be more than 0s".into(),
                );
            }
        }
        // A failback ends with a final sync while the recovered side is
        // stopped, so it can lose nothing; a failover from asynchronous
        // replication always can.
        if self.objectives.failover.rpo.0.is_zero() {
            err(
                "objectives.failover.rpo",
                "0s needs synchronous replication, which Rebound does not offer; set at least the replication interval".into(),
            );
        }
        if self.replication.interval.0.is_zero() {
            err("replication.interval", "must be more than 0s".into());
        } else if self.replication.interval > self.objectives.failover.rpo
            && !self.objectives.failover.rpo.0.is_zero()
        {
            err(
                "replication.interval",
                format!(
                    "{} cannot meet objectives.failover.rpo {}: recovery points would be up to {} old; replicate at least every {}",
                    self.replication.interval,
                    self.objectives.failover.rpo,
                    self.replication.interval,
                    self.objectives.failover.rpo
                ),
            );
        }
        if self.replication.retention == 0 {
            err(
                "replication.retention",
                "must keep at least 1 recovery point".into(),
            );
        }

        let mut sources = BTreeSet::new();
        for (i, m) in self.network_mapping.iter().enumerate() {
            if !sources.insert(m.source.as_str()) {
                err(
                    &format!("network_mapping[{i}].source"),
                    format!("'{}' is mapped twice", m.source),
                );
            }
        }

        if let Some(redirect) = &self.redirect {
            let steps = &redirect.canary;
            if steps.is_empty() || steps.last() != Some(&100) {
                err(
                    "redirect.canary",
                    "must end with 100 (all traffic moved)".into(),
                );
            }
            if steps.iter().any(|w| *w == 0 || *w > 100) {
                err(
                    "redirect.canary",
                    "weights are percentages from 1 to 100".into(),
                );
            }
            if steps.windows(2).any(|p| p[0] >= p[1]) {
                err(
                    "redirect.canary",
                    format!("{steps:?} must increase step by step"),
                );
            }
        }

        match (&self.trigger.mode, &self.trigger.detection) {
            (TriggerMode::Automatic, None) => err(
                "trigger.detection",
                "automatic failover needs a detection policy (probe_interval, consecutive_failures, witnesses)".into(),
            ),
            (TriggerMode::Automatic, Some(_)) if self.approvals.failover => err(
                "approvals.failover",
                "an automatic failover cannot wait for approval; set trigger.mode to manual or approvals.failover to false".into(),
            ),
            _ => {}
        }
        if let Some(d) = &self.trigger.detection {
            if d.probe_interval.0.is_zero() {
                err(
                    "trigger.detection.probe_interval",
                    "must be more than 0s".into(),
                );
            }
            if d.consecutive_failures == 0 {
                err(
                    "trigger.detection.consecutive_failures",
                    "must be at least 1".into(),
                );
            }
            if d.witnesses == 0 {
                err(
                    "trigger.detection.witnesses",
                    "must be at least 1 (a witness outside both sites confirms the outage)".into(),
                );
            }
        }

        if let Some(every) = self.drills.every
            && every < MIN_DRILL_EVERY
        {
            err(
                "drills.every",
                format!(
                    "{every} is too often: each drill recovers the plan in a sandbox on the target site; drill at least {MIN_DRILL_EVERY} apart (a week, \"7d\", is common)"
                ),
            );
        }

        for (field, reason) in hooks::problems(&self.hooks) {
            err(&field, reason);
        }

        if errors.is_empty() {
            Ok(())
        } else {
            Err(PlanError::Invalid(errors))
        }
    }

    /// Checks that need the sites' capabilities: an RPO below what the
    /// source platform can capture is impossible on its face.
    pub fn check_feasible(&self, snapshot_granularity: Span) -> Result<(), PlanError> {
        let mut errors = Vec::new();
        if self.objectives.failover.rpo < snapshot_granularity {
            errors.push(FieldError {
                field: "objectives.failover.rpo".into(),
                reason: format!(
                    "{} is below the {} snapshot granularity of site '{}'; it cannot be met",
                    self.objectives.failover.rpo, snapshot_granularity, self.source
                ),
            });
        }
        if self.replication.interval < snapshot_granularity {
            errors.push(FieldError {
                field: "replication.interval".into(),
                reason: format!(
                    "{} is below the {} snapshot granularity of site '{}'",
                    self.replication.interval, snapshot_granularity, self.source
                ),
            });
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(PlanError::Invalid(errors))
        }
    }

    /// The recovery order as tiers: each tier's workloads depend only on
    /// earlier tiers, so a tier recovers in parallel. A cycle is returned as
    /// the path that closes it.
    pub fn tiers(&self) -> Result<Vec<Vec<String>>, Vec<String>> {
        let deps: BTreeMap<&str, BTreeSet<&str>> = self
            .workloads
            .iter()
            .map(|w| {
                let known = w
                    .depends_on
                    .iter()
                    .map(String::as_str)
                    .filter(|d| self.workloads.iter().any(|x| x.id == *d) && *d != w.id)
                    .collect();
                (w.id.as_str(), known)
            })
            .collect();
        let mut done: BTreeSet<&str> = BTreeSet::new();
        let mut tiers = Vec::new();
        while done.len() < deps.len() {
            let tier: Vec<&str> = deps
                .iter()
                .filter(|(id, d)| !done.contains(*id) && d.iter().all(|x| done.contains(x)))
                .map(|(id, _)| *id)
                .collect();
            if tier.is_empty() {
                return Err(find_cycle(&deps, &done));
            }
            done.extend(tier.iter().copied());
            tiers.push(tier.into_iter().map(str::to_owned).collect());
        }
        Ok(tiers)
    }
}

/// Walk unfinished dependencies until a workload repeats.
fn find_cycle(deps: &BTreeMap<&str, BTreeSet<&str>>, done: &BTreeSet<&str>) -> Vec<String> {
    let Some(start) = deps.keys().find(|id| !done.contains(*id)) else {
        return Vec::new();
    };
    let mut path: Vec<&str> = vec![start];
    loop {
        let last = path[path.len() - 1];
        let Some(next) = deps[last].iter().find(|d| !done.contains(*d)) else {
            return path.into_iter().map(str::to_owned).collect();
        };
        if let Some(pos) = path.iter().position(|p| p == next) {
            let mut cycle: Vec<String> = path[pos..].iter().map(|s| (*s).to_owned()).collect();
            cycle.push((*next).to_owned());
            return cycle;
        }
        path.push(next);
    }
}

fn syntax<E: fmt::Display>(format: &'static str, e: serde_path_to_error::Error<E>) -> PlanError {
    let field = e.path().to_string();
    PlanError::Syntax {
        format,
        field: if field == "." {
            "(document)".into()
        } else {
            field
        },
        reason: e.into_inner().to_string(),
    }
}

mod hooks;

pub use hooks::{Hook, HookPoint, MAX_TIMEOUT, OnFailure, origin, passes};

#[cfg(test)]
mod tests;

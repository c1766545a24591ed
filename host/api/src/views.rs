//! What the API sends and accepts: request bodies (unknown fields refused)
//! and response views of the store's records, each with its OpenAPI schema.

use std::collections::BTreeMap;

use rebound_domain::Workflow;
use rebound_engine::RunReport;
use rebound_engine::policy::Compliance;
use rebound_store::{
    AuditEntry, EventRecord, PlanRecord, RecoveryPointRecord, RunListing, StepRecord,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Role;
use crate::problem::Problem;

/// Start a workflow on a plan.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowRequest {
    pub workflow: Workflow,
    /// `permanent_failover` only: the site that becomes the standby — a
    /// new one, the old primary being lost for good. Absent: the old
    /// primary.
    #[serde(default)]
    pub new_standby: Option<String>,
}

/// Preview a workflow on a plan: the saved one, or an edit of it (or a
/// new plan) not saved yet.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DryRunRequest {
    pub workflow: Workflow,
    /// As in `WorkflowRequest`: a permanent failover onto this new standby.
    #[serde(default)]
    pub new_standby: Option<String>,
    /// A plan document (the JSON form of the YAML) to preview instead of
    /// the saved plan; checked as `PUT /api/v1/plans/{name}` checks it,
    /// and its `name` must be the URL's. A plan not saved yet is previewed
    /// as a new plan (protected, its source primary).
    #[schema(value_type = Option<Object>)]
    pub plan: Option<Value>,
}

/// Log in as a local user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

/// The OIDC issuers the web UI offers sign-in with.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignInProviders {
    pub providers: Vec<crate::sign_in::SignInProvider>,
}

/// Create an API token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// What it is for (e.g. `ci-pipeline`).
    pub name: String,
    pub role: Role,
}

/// Pagination: at most `limit` items after the cursor `after` (the
/// previous page's `next`).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1 to 500; 50 when absent.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
    pub after: Option<String>,
}

pub const MAX_LIMIT: u64 = 500;

impl PageQuery {
    pub fn limit(&self) -> Result<u64, Problem> {
        match self.limit {
            None => Ok(50),
            Some(n @ 1..=MAX_LIMIT) => Ok(n),
            Some(n) => Err(Problem::bad_request(format!(
                "limit {n} is out of range; use 1 to {MAX_LIMIT}"
            ))),
        }
    }

    /// `after` as a numeric id (events, audit).
    pub fn after_id(&self) -> Result<Option<i64>, Problem> {
        self.after
            .as_deref()
            .map(|a| {
                a.parse::<i64>().map_err(|_| {
                    Problem::bad_request(format!(
                        "after '{a}' is not a cursor of this list; pass the previous page's `next`"
                    ))
                })
            })
            .transpose()
    }
}

/// The next page's cursor when this page is full.
pub fn next_cursor<T>(items: &[T], limit: u64, cursor: impl Fn(&T) -> String) -> Option<String> {
    (items.len() as u64 == limit)
        .then(|| items.last().map(cursor))
        .flatten()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LifecycleView {
    /// `protected`, `failed_over`, `ready_for_failback`, …
    pub state: String,
    pub primary: String,
    pub standby: String,
    /// The fencing epoch.
    pub epoch: u64,
    pub drilling: bool,
    /// A former primary whose fence was not confirmed at the failover
    /// (its site was down), if any: the reprotect fences it first.
    pub unfenced: Option<String>,
}

/// A protection plan: its document and where its lifecycle stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanView {
    pub name: String,
    pub revision: i64,
    /// The plan document, as accepted by `PUT /api/v1/plans/{name}`.
    #[schema(value_type = Object)]
    pub document: Value,
    pub lifecycle: LifecycleView,
}

impl From<&PlanRecord> for PlanView {
    fn from(p: &PlanRecord) -> Self {
        let l = &p.lifecycle;
        Self {
            name: p.document.name.clone(),
            revision: p.revision,
            document: serde_json::to_value(&p.document).unwrap_or_default(),
            lifecycle: LifecycleView {
                state: l.state.to_string(),
                primary: l.primary.clone(),
                standby: l.standby.clone(),
                epoch: l.epoch,
                drilling: l.drilling,
                unfenced: l.unfenced.clone(),
            },
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PlanPage {
    pub items: Vec<PlanView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next: Option<String>,
}

/// A run of a workflow.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    pub id: String,
    pub plan: String,
    pub workflow: String,
    /// `pending`, `running`, `waiting_approval`, `succeeded`, `failed`, `cancelled`.
    pub status: String,
    pub idempotency_key: Option<String>,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

fn text<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl From<&RunListing> for RunView {
    fn from(r: &RunListing) -> Self {
        Self {
            id: r.run.id.clone(),
            plan: r.run.plan.clone(),
            workflow: r.run.workflow.to_string(),
            status: text(&r.run.status),
            idempotency_key: r.run.idempotency_key.clone(),
            created_at_ms: r.created_at_ms,
            finished_at_ms: r.finished_at_ms,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunPage {
    pub items: Vec<RunView>,
    pub next: Option<String>,
}

/// A persisted step of a run.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StepView {
    pub seq: i32,
    pub name: String,
    /// `pending`, `running`, `succeeded`, `failed`.
    pub status: String,
    pub attempts: i32,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub error: Option<String>,
    /// What the step does (`fence`, `materialize`, `approval`, …) and to what.
    #[schema(value_type = Object)]
    pub input: Value,
    /// What a finished `transfer` step of the data mover moved.
    pub transfer: Option<TransferView>,
    /// A `materialize` that adopted the incarnation an earlier failed
    /// failover left serving (its primary site down) instead of making
    /// another: that run.
    pub adopted_from: Option<String>,
    /// A step done best effort that could not do what it was for and left
    /// things as they were — a fence that could not reach its site,
    /// workloads a removal kept, what an earlier drill left still there:
    /// why.
    pub left: Option<String>,
}

/// The data a transfer step moved between two sites, every block verified.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TransferView {
    /// Bytes of the disks copied.
    pub bytes_total: u64,
    /// Bytes written to the target (the blocks that differed).
    pub bytes_moved: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Bytes of the target read to hash it, where it lists no digests.
    pub bytes_hashed: u64,
    /// How each disk's delta was found (`delta by changed ranges`, …).
    pub modes: Vec<String>,
}

impl TransferView {
    fn of(step: &StepRecord) -> Option<Self> {
        let output = step.output.as_ref()?;
        if step.input["action"] != "transfer" {
            return None;
        }
        let bytes = |field: &str| output[field].as_u64().unwrap_or(0);
        Some(Self {
            bytes_total: output["bytes_total"].as_u64()?,
            bytes_moved: bytes("bytes_moved"),
            bytes_read: bytes("bytes_read"),
            bytes_hashed: bytes("bytes_hashed"),
            modes: output["modes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m.as_str().map(str::to_owned))
                .collect(),
        })
    }
}

impl From<&StepRecord> for StepView {
    fn from(s: &StepRecord) -> Self {
        Self {
            seq: s.seq,
            name: s.name.clone(),
            status: text(&s.status),
            attempts: s.attempts,
            started_at_ms: s.started_at_ms,
            finished_at_ms: s.finished_at_ms,
            error: s.error.clone(),
            input: s.input.clone(),
            transfer: TransferView::of(s),
            adopted_from: s
                .output
                .as_ref()
                .and_then(|o| o["adopted_from"].as_str())
                .map(str::to_owned),
            left: s.output.as_ref().and_then(left_as_it_was),
        }
    }
}

/// Why a step's `output` says it left what it was to change as it was, if
/// it does.
fn left_as_it_was(output: &Value) -> Option<String> {
    let kept = output["kept"].as_array().is_some_and(|k| !k.is_empty());
    let left = output["left"] == true || kept || output["fenced"] == false;
    left.then(|| {
        output["reason"]
            .as_str()
            .unwrap_or("no reason recorded")
            .to_owned()
    })
}

/// A run with its steps and its report against the phase's objectives.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: RunView,
    pub steps: Vec<StepView>,
    /// Measured RTO and achieved RPO against the objectives, per step timing.
    pub report: RunReport,
    /// The plugin versions the run is pinned to (the one active at its
    /// first call of each plugin), by plugin name.
    pub plugins: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecoveryPointView {
    pub site: String,
    pub id: String,
    pub workload: String,
    pub captured_at_ms: i64,
    /// The run that produced it.
    pub run: String,
    /// `crash`, or `application` (the guest's file systems were frozen);
    /// a copy the data mover made is as consistent as the snapshot it
    /// copied, `crash` when unknown.
    pub consistency: String,
}

impl From<&RecoveryPointRecord> for RecoveryPointView {
    fn from(p: &RecoveryPointRecord) -> Self {
        Self {
            site: p.site.clone(),
            id: p.id.clone(),
            workload: p.workload.clone(),
            captured_at_ms: p.captured_at_ms,
            run: p.run.clone(),
            consistency: p.detail["consistency"]
                .as_str()
                .unwrap_or("crash")
                .to_owned(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecoveryPointList {
    pub items: Vec<RecoveryPointView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub id: i64,
    pub at_ms: i64,
    pub plan: String,
    /// `rpo.breach`, `rpo.met`, `rto.breach`, `rto.met`, `replication.scheduled`,
    /// `failover.triggered`, `standbys.kept`, `drill.leftovers`,
    /// `drill.leftovers.removed`.
    pub kind: String,
    #[schema(value_type = Object)]
    pub detail: Value,
}

impl From<&EventRecord> for EventView {
    fn from(e: &EventRecord) -> Self {
        Self {
            id: e.id,
            at_ms: e.at_ms,
            plan: e.plan.clone(),
            kind: e.kind.clone(),
            detail: e.detail.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    pub items: Vec<EventView>,
    pub next: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    pub id: i64,
    pub at_ms: i64,
    /// Who: `user:NAME`, `token:ID`, `oidc:SUBJECT@ISSUER`, `system`.
    pub principal: String,
    pub action: String,
    pub target: String,
    #[schema(value_type = Object)]
    pub detail: Value,
}

impl From<&AuditEntry> for AuditView {
    fn from(a: &AuditEntry) -> Self {
        Self {
            id: a.id,
            at_ms: a.at_ms,
            principal: a.principal.clone(),
            action: a.action.clone(),
            target: a.target.clone(),
            detail: a.detail.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditView>,
    pub next: Option<String>,
}

/// Where each plan stands against its objectives now.
#[derive(Debug, Serialize, ToSchema)]
pub struct ComplianceList {
    /// One entry per plan: RPO lag and RTO forecast against the phase's objectives.
    pub items: Vec<Compliance>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PluginView {
    pub name: String,
    pub version: String,
    pub platform: String,
    pub sha256: String,
    pub capabilities: Vec<String>,
    /// The provider contract version the component is built against
    /// (`0.2.0`, or `0.1.0`: such a plugin cannot remove a failed run's
    /// standby workloads, which then stay fenced, nor discard an abandoned
    /// import without moving it on).
    pub contract: String,
    /// Egress the plugin's manifest asks for.
    pub egress: Vec<String>,
    pub recent_crashes: usize,
    pub quarantined: bool,
    /// False when an admin disabled the plugin: nothing calls it.
    pub enabled: bool,
    /// Whether this is the version calls go to.
    pub active: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PluginList {
    pub items: Vec<PluginView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SiteList {
    pub items: Vec<SiteView>,
}

/// Where a site is defined.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SiteSource {
    /// The host's sites file (read-only through the API).
    File,
    /// Registered through `PUT /api/v1/sites/{name}`.
    Api,
}

/// A site bound to a plugin. Credentials are never shown: only their names.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SiteView {
    pub name: String,
    /// The plugin that reaches it.
    pub plugin: String,
    pub source: SiteSource,
    /// Settings handed to the plugin (API-registered sites).
    pub config: BTreeMap<String, String>,
    /// URLs the plugin may reach for this site.
    pub egress: Vec<String>,
    /// Names of the stored credentials; their values are write-only.
    pub secrets: Vec<String>,
    /// Whether the site has its own CA bundle.
    pub ca: bool,
    /// The most calls of its plugin in flight at once, counted across the
    /// hosts sharing the store (API-registered sites; absent: the default,
    /// 16).
    pub max_calls: Option<u32>,
    /// Bumped on every change (API-registered sites).
    pub revision: Option<i64>,
    pub updated_by: Option<String>,
    pub updated_at_ms: Option<i64>,
}

/// Register a site or replace its definition.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteRequest {
    /// An installed plugin (`GET /api/v1/plugins`).
    pub plugin: String,
    /// Settings the plugin reads (its `config` import), e.g. `endpoint`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Credentials (write-only; sealed at rest). Absent on an update keeps
    /// the stored ones; present replaces them all.
    pub secrets: Option<BTreeMap<String, String>>,
    /// URLs the plugin may reach for this site, e.g.
    /// `https://keystone.example.com:5000`; nothing else is reachable.
    #[serde(default)]
    pub egress: Vec<String>,
    /// PEM certificates to trust for the site's endpoints, beside the
    /// public roots.
    pub ca_pem: Option<String>,
    /// The most calls of the site's plugin in flight at once, across its
    /// runs and the hosts sharing a PostgreSQL store (at least 1; absent:
    /// the default, 16).
    #[schema(minimum = 1)]
    pub max_calls: Option<u32>,
}

/// A site's health as its plugin reports it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SiteHealth {
    /// Whether the site serves (healthy or degraded).
    pub serving: bool,
    /// The plugin's one-line detail, or why it could not be asked.
    pub detail: String,
}

/// A workload the site's plugin discovered.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkloadView {
    /// The platform's id.
    pub id: String,
    pub name: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub disks: Vec<WorkloadDisk>,
    /// Networks of its NICs.
    pub networks: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// running, stopped, paused or unknown.
    pub power: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkloadDisk {
    pub id: String,
    pub name: String,
    pub size_bytes: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkloadList {
    pub items: Vec<WorkloadView>,
}

/// An API token (its secret is never shown again).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub role: String,
    pub created_by: String,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

impl From<&rebound_store::TokenRecord> for TokenView {
    fn from(t: &rebound_store::TokenRecord) -> Self {
        Self {
            id: t.id.clone(),
            name: t.name.clone(),
            role: t.role.clone(),
            created_by: t.created_by.clone(),
            created_at_ms: t.created_at_ms,
            revoked_at_ms: t.revoked_at_ms,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    pub items: Vec<TokenView>,
}

/// A new API token: `token` is shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub view: TokenView,
    /// The secret (`rbt_…`); store it now, it is kept only as a digest.
    pub token: String,
}

/// A plugin package to publish: the files `rebound plugin package` writes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// `manifest.toml`, as text.
    pub manifest: String,
    /// `plugin.wasm`, base64 (standard alphabet, padded).
    pub wasm: String,
    /// `manifest.sig`, as text; absent for an unsigned package.
    pub signature: Option<String>,
}

/// A local user (its password is never shown).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub name: String,
    pub role: Role,
    pub created_at_ms: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    pub items: Vec<UserView>,
}

/// Create a local user or replace its password and role.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserRequest {
    /// At least 12 characters.
    pub password: String,
    pub role: Role,
}

/// Change the caller's own password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordRequest {
    pub current: String,
    /// At least 12 characters.
    pub new: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rebound_store::StepStatus;
    use serde_json::json;

    fn step(input: Value, output: Option<Value>) -> StepRecord {
        StepRecord {
            run: "r1".into(),
            seq: 3,
            name: "transfer web-1".into(),
            status: StepStatus::Succeeded,
            idempotency_key: "r1/3".into(),
            operation: None,
            attempts: 1,
            started_at_ms: Some(1),
            finished_at_ms: Some(2),
            error: None,
            input,
            output,
        }
    }

    #[test]
    fn a_transfer_step_shows_what_it_moved_and_no_other_does() {
        let output = json!({
            "bytes_total": 268_435_456u64, "bytes_moved": 4_194_304u64,
            "bytes_read": 4_194_304u64, "bytes_hashed": 0,
            "modes": ["delta by changed ranges"], "volumes": ["disk-1"],
        });
        let view = StepView::from(&step(json!({"action": "transfer"}), Some(output.clone())));
        let t = view.transfer.expect("a transfer view");
        assert_eq!(
            (t.bytes_total, t.bytes_moved, t.bytes_read),
            (268_435_456, 4_194_304, 4_194_304)
        );
        assert_eq!(t.modes, ["delta by changed ranges"]);
        assert!(
            StepView::from(&step(json!({"action": "fence"}), Some(output)))
                .transfer
                .is_none()
        );
        assert!(
            StepView::from(&step(json!({"action": "transfer"}), None))
                .transfer
                .is_none()
        );
    }

    #[test]
    fn a_best_effort_step_that_left_things_as_they_were_says_why() {
        let left =
            |output: Value| StepView::from(&step(json!({"action": "cleanup"}), Some(output))).left;
        assert_eq!(
            left(json!({"removed": [], "left": true, "reason": "the site answered 503"}))
                .as_deref(),
            Some("the site answered 503")
        );
        assert_eq!(
            left(json!({"removed": [], "kept": ["vm-1"], "reason": "unsupported"})).as_deref(),
            Some("unsupported")
        );
        assert_eq!(
            left(json!({"fenced": false, "workload": "vm-1", "reason": "could not fence: down"}))
                .as_deref(),
            Some("could not fence: down")
        );
        for done in [
            json!({"removed": ["vm-1"]}),
            json!({"removed": [], "kept": []}),
            json!({"fenced": true, "absent": true, "reason": "not there"}),
        ] {
            assert_eq!(left(done.clone()), None, "{done}");
        }
    }

    #[test]
    fn an_adopting_materialize_names_the_run_it_adopted_from() {
        let adopted = json!({"workload": "vm-9", "adopted_from": "run-0"});
        let view = StepView::from(&step(json!({"action": "materialize"}), Some(adopted)));
        assert_eq!(view.adopted_from.as_deref(), Some("run-0"));
        let made = json!({"workload": "vm-9"});
        let view = StepView::from(&step(json!({"action": "materialize"}), Some(made)));
        assert_eq!(view.adopted_from, None);
    }
}

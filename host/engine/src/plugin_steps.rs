//! Steps bound to provider plugins: a [`StepRunner`] that turns each step's
//! action into calls of the site's plugin through the sandboxed runtime,
//! with the step's idempotency key, and polls the returned operation with
//! the plugin's `status` export.
//!
//! What it reads besides the step: the plan (network mapping, redirect
//! target), the outputs of the run's earlier steps (the recovery point a
//! `replicate` copies, the workloads a `gate` checks and a `redirect`
//! weighs) and the store's recovery points (what `materialize` restores
//! from; on a round-trip drill's way back, the copies that drill made). It
//! records every recovery point a `snapshot` or `replicate` produces before
//! reporting the step done — a drill's as the drill's own. A `materialize` adopts the
//! incarnation a failed failover left serving that its input offers
//! (`crate::adopt`), if it still runs, instead of making another.
//!
//! Workloads are named by the plan's ids; on a site where a workload was
//! materialized by Rebound the platform's id is found by the
//! `rebound/workload` label Rebound puts on it, otherwise the plan's id is
//! the platform's id (the original primary).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use rebound_domain::plan::{HealthGate, RedirectTarget as PlanTarget};
use rebound_domain::{FieldError, PlanDocument, PlanError, Span, Workflow};
use rebound_runtime::bindings::exports::{
    CleanupRequest, CleanupScope, DiskSource, FenceRequest, MaterializeRequest, NetworkMapping,
    RedirectRequest, ReplicateRequest, SnapshotRequest,
};
use rebound_runtime::bindings::{
    Consistency, DiskSpec, DnsRecord, Firmware, HealthStatus, InventoryFilter, NicSpec, Operation,
    OperationKind, OperationState, Outcome, PowerState, RedirectTarget, VmSpec, WeightedBackend,
    Workload,
};
use rebound_runtime::{
    CallContext, CallError, Describe, Export, Fence, Health, Inventory, Plugin, Runtime, SiteGrant,
    Status, Unfence, explain,
};
use rebound_store::{RecoveryPointRecord, RunStatus, StepRecord, StepStatus, Store};
use serde_json::{Value, json};

use crate::planner::{LEG, RETURN_LEG};
use crate::{LEFT_BY, Progress, Started, StepError, StepRunner};

mod calls;
mod superseded;
mod transfer;

pub use calls::DEFAULT_MAX_CALLS;
use calls::{CallPermit, Calls};
pub use transfer::mover_endpoint;

/// The label Rebound puts on a workload it materialized: the plan's id.
pub const WORKLOAD_LABEL: &str = "rebound/workload";
/// The label on a drill's workloads: the drill run's id (its sandbox).
pub const DRILL_LABEL: &str = "rebound/drill";
/// The label with the fencing epoch a workload was materialized under: of
/// several incarnations of a workload on a site, the highest epoch is the
/// current one.
pub const EPOCH_LABEL: &str = "rebound/epoch";

/// A site as the engine binds it: its plugin and what the runtime grants.
#[derive(Clone)]
pub struct BoundSite {
    pub plugin: Arc<Plugin>,
    pub grant: SiteGrant,
}

tokio::task_local! {
    /// The run whose step is calling: its calls go to the plugin versions
    /// it is pinned to.
    static RUN: String;
}

/// Runs steps through plugins.
pub struct PluginSteps {
    runtime: Arc<Runtime>,
    store: Store,
    /// Bound at start (sites file, store) and as sites are registered
    /// through the API.
    sites: RwLock<HashMap<String, BoundSite>>,
    /// Budget of one plugin call.
    call_budget: Duration,
    /// Where the plans' hooks may call.
    hooks: crate::HookPolicy,
    /// Calls in flight per site, within each site's `max_calls`.
    calls: Calls,
    /// The versions runs are pinned to, by (run, plugin), as the store
    /// keeps them: asked once per run and plugin.
    pins: std::sync::Mutex<HashMap<(String, String), String>>,
}

/// Pins remembered at most; past it they are asked of the store again.
const PINS_KEPT: usize = 4096;

/// What a step's work needs to know about its run.
struct Scope {
    plan: String,
    workflow: Workflow,
    document: PlanDocument,
    steps: Vec<StepRecord>,
}

impl PluginSteps {
    pub fn new(runtime: Arc<Runtime>, store: Store, sites: HashMap<String, BoundSite>) -> Self {
        // Replicas share a PostgreSQL store; SQLite serves one host.
        let calls = Calls::new(store.replicated().then(|| store.clone()));
        Self {
            runtime,
            store,
            sites: RwLock::new(sites),
            call_budget: Duration::from_secs(60),
            hooks: crate::HookPolicy::default(),
            calls,
            pins: std::sync::Mutex::default(),
        }
    }

    /// Keep each site's `max_calls` across every host on this store
    /// (`true`: the default on PostgreSQL) or on this host alone.
    #[must_use]
    pub fn with_shared_calls(mut self, shared: bool) -> Self {
        self.calls = Calls::new(shared.then(|| self.store.clone()));
        self
    }

    /// Whether each site's `max_calls` holds across the hosts on the store.
    pub fn shares_calls(&self) -> bool {
        self.calls.shared()
    }

    /// Leave to call `site`'s plugin, within its `max_calls`.
    async fn permit(&self, site: &BoundSite) -> CallPermit {
        self.calls.permit(site).await
    }

    /// Let the plans' hooks call what `policy` allows (by default, none).
    #[must_use]
    pub fn with_hooks(mut self, policy: crate::HookPolicy) -> Self {
        self.hooks = policy;
        self
    }

    /// Refuse a plan whose objectives are impossible on their face for the
    /// sites it names (DESIGN.md §6): both sites must be registered with
    /// this host, native replication needs both on one platform (plugin),
    /// and the failover RPO and replication interval must not be
    /// finer than the snapshot granularity the source site's plugin
    /// reports. Errors name the field and the reason, like the plan's own
    /// validation. Callers that accept plans (API, CLI) run it before
    /// storing one.
    pub async fn check_feasible(&self, plan: &PlanDocument) -> Result<(), PlanError> {
        let refuse = |field: &str, reason: String| {
            PlanError::Invalid(vec![FieldError {
                field: field.into(),
                reason,
            }])
        };
        for (field, site) in [("source", &plan.source), ("target", &plan.target)] {
            if self.site(site).is_err() {
                return Err(refuse(
                    field,
                    format!(
                        "site '{site}' is not registered with this host; add it to the sites file"
                    ),
                ));
            }
        }
        if plan.replication.mode == rebound_domain::plan::ReplicationMode::Native {
            let (source, target) = (self.site(&plan.source), self.site(&plan.target));
            if let (Ok(source), Ok(target)) = (source, target)
                && source.plugin.name() != target.plugin.name()
            {
                return Err(refuse(
                    "replication.mode",
                    format!(
                        "native replication copies within one platform, but site '{}' is {} \
                         and site '{}' is {}; use `mode: data_mover` to move disks between \
                         platforms",
                        plan.source,
                        source.plugin.name(),
                        plan.target,
                        target.plugin.name()
                    ),
                ));
            }
        }
        // Snapshots are taken on whichever site is primary: both must be
        // able to freeze a guest that asks for application consistency.
        for (i, w) in plan.workloads.iter().enumerate() {
            if w.consistency != rebound_domain::plan::Consistency::Application {
                continue;
            }
            for site in [&plan.source, &plan.target] {
                // (Both are bound: checked above.)
                let Ok(BoundSite { plugin, .. }) = self.site(site) else {
                    continue;
                };
                if !plugin
                    .info
                    .capabilities
                    .contains(rebound_runtime::bindings::Capabilities::APP_CONSISTENT_FREEZE)
                {
                    return Err(refuse(
                        &format!("workloads[{i}].consistency"),
                        format!(
                            "site '{site}' ({}) cannot freeze a guest's file systems, so its \
                             snapshots of '{}' would only be crash-consistent; use `crash` or \
                             sites whose plugin offers app-consistent-freeze",
                            plugin.name(),
                            w.id
                        ),
                    ));
                }
            }
        }
        for (i, hook) in plan.hooks.iter().enumerate() {
            if let Err(reason) = self.hooks.check(&hook.url) {
                return Err(refuse(&format!("hooks[{i}].url"), reason));
            }
        }
        let info = self.call(&[&plan.source], Describe).await.map_err(|e| {
            refuse(
                "source",
                format!("site '{}' could not say what it can do: {e}", plan.source),
            )
        })?;
        plan.check_feasible(Span::secs(u64::from(info.snapshot_granularity_secs)))
    }

    /// Probe a site through its plugin's `health`: whether it serves
    /// (healthy or degraded) and the plugin's one-line detail.
    pub async fn health(&self, site: &str) -> Result<(bool, String), StepError> {
        let report = self.call(&[site], Health(site.to_owned())).await?;
        let serving = !matches!(report.status, HealthStatus::Unreachable);
        Ok((serving, report.detail))
    }

    /// A site's inventory, every workload; the plugin's typed error when it
    /// refuses (an API can tell a misconfigured site from a failing one).
    pub async fn inventory(
        &self,
        site: &str,
    ) -> Result<Vec<rebound_runtime::bindings::Workload>, InventoryError> {
        let bound = self
            .site(site)
            .map_err(|_| InventoryError::NotBound(site.to_owned()))?;
        let _permit = self.permit(&bound).await;
        let request = Inventory {
            site: site.to_owned(),
            filter: InventoryFilter {
                workload_ids: Vec::new(),
                labels: Vec::new(),
            },
        };
        Ok(self
            .runtime
            .call(
                &bound.plugin,
                &CallContext::new(vec![bound.grant], self.call_budget),
                request,
            )
            .await?)
    }

    /// Bind (or rebind) a site; calls already started keep the old binding.
    pub fn bind(&self, name: &str, site: BoundSite) {
        self.sites
            .write()
            .expect("sites lock")
            .insert(name.to_owned(), site);
    }

    /// Forget a site; `false` when it was not bound.
    pub fn unbind(&self, name: &str) -> bool {
        self.sites
            .write()
            .expect("sites lock")
            .remove(name)
            .is_some()
    }

    /// Names of the bound sites with their plugins, in name order.
    pub fn bound(&self) -> Vec<(String, String)> {
        let mut all: Vec<_> = self
            .sites
            .read()
            .expect("sites lock")
            .iter()
            .map(|(name, site)| (name.clone(), site.plugin.manifest.name.clone()))
            .collect();
        all.sort();
        all
    }

    /// The active version of the plugin a site is bound to; `None` when
    /// the site is not bound.
    pub fn plugin(&self, site: &str) -> Option<Arc<rebound_runtime::Plugin>> {
        self.site(site).ok().map(|s| s.plugin)
    }

    /// A site's binding, with the plugin's active version (a published
    /// plugin replaces the one the site was bound with).
    fn site(&self, name: &str) -> Result<BoundSite, StepError> {
        let mut site = self
            .sites
            .read()
            .expect("sites lock")
            .get(name)
            .cloned()
            .ok_or_else(|| {
                StepError::Fatal(format!(
                    "site '{name}' is not registered with this host; register it (or fix the plan)"
                ))
            })?;
        if let Some(active) = self.runtime.active(&site.plugin.manifest.name) {
            site.plugin = active;
        }
        Ok(site)
    }

    /// `site` with the version of its plugin the calling run is pinned
    /// to: the version active when the run first called the plugin, so a
    /// plugin published meanwhile serves the runs started after it. A
    /// version not loaded here is loaded from the store; one the store
    /// does not have either (placed by hand in another host's plugin
    /// folder) gives way to the active one, with a warning. Outside a run: as bound.
    async fn pinned(&self, mut site: BoundSite) -> Result<BoundSite, StepError> {
        let Ok(run) = RUN.try_with(Clone::clone) else {
            return Ok(site);
        };
        let (name, active) = (site.plugin.name().to_owned(), site.plugin.version());
        let key = (run, name);
        let known = self.pins.lock().expect("pins lock").get(&key).cloned();
        let version = match known {
            Some(version) => version,
            None => {
                let version = self
                    .store
                    .pin_plugin(&key.0, &key.1, &active)
                    .await
                    .map_err(|e| StepError::Retryable(e.to_string()))?;
                let mut pins = self.pins.lock().expect("pins lock");
                if pins.len() >= PINS_KEPT {
                    pins.clear();
                }
                pins.insert(key.clone(), version.clone());
                version
            }
        };
        if version != active {
            // (Published through another host and not synced here yet:
            // loaded from the store now.)
            let pinned = match semver::Version::parse(&version) {
                Ok(v) => crate::plugins::load_version(&self.store, &self.runtime, &key.1, &v)
                    .await
                    .map_err(|e| StepError::Retryable(e.to_string()))?,
                Err(_) => None,
            };
            match pinned {
                Some(plugin) => site.plugin = plugin,
                None => {
                    tracing::warn!(run = %key.0, plugin = %key.1, pinned = %version, %active,
                        "the plugin version this run is pinned to is neither loaded on this host nor published in the store; calling the active one");
                    // Said once: this host's later calls of the run go to
                    // the active version without asking the store again
                    // (the pin stays for the hosts that have it).
                    self.pins
                        .lock()
                        .expect("pins lock")
                        .insert(key, active.clone());
                }
            }
        }
        Ok(site)
    }

    async fn call<E: Export>(&self, sites: &[&str], request: E) -> Result<E::Output, StepError> {
        let first = self.pinned(self.site(sites[0])?).await?;
        let mut grants = Vec::new();
        for name in sites {
            grants.push(self.site(name)?.grant.clone());
        }
        // (The call is the first site's plugin's: its limit applies.)
        let _permit = self.permit(&first).await;
        self.runtime
            .call(
                &first.plugin,
                &CallContext::new(grants, self.call_budget),
                request,
            )
            .await
            .map_err(step_error)
    }

    async fn scope(&self, step: &StepRecord) -> Result<Scope, StepError> {
        let store_error = |e: rebound_store::StoreError| StepError::Retryable(e.to_string());
        let run = self.store.run(&step.run).await.map_err(store_error)?;
        let plan = self.store.plan(&run.plan).await.map_err(store_error)?;
        let steps = self.store.steps(&step.run).await.map_err(store_error)?;
        Ok(Scope {
            plan: run.plan,
            workflow: run.workflow,
            document: plan.document,
            steps,
        })
    }

    /// The platform's id of a plan workload on a site.
    async fn resolve(&self, site: &str, workload: &str) -> Result<String, StepError> {
        let found = self
            .matching(
                site,
                InventoryFilter {
                    workload_ids: Vec::new(),
                    labels: vec![(WORKLOAD_LABEL.to_owned(), workload.to_owned())],
                },
            )
            .await?;
        // The newest incarnation (highest epoch), whatever its power state:
        // a step resumed after a crash must find the workload its first
        // attempt acted on, even if that attempt stopped it.
        let epoch = |w: &Workload| {
            w.spec
                .labels
                .iter()
                .find(|(k, _)| k == EPOCH_LABEL)
                .and_then(|(_, v)| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let best = found
            .iter()
            .max_by(|a, b| epoch(a).cmp(&epoch(b)).then_with(|| b.id.cmp(&a.id)));
        Ok(best.map_or_else(|| workload.to_owned(), |w| w.id.clone()))
    }

    /// A site's workloads that `filter` matches, for a step.
    async fn matching(
        &self,
        site: &str,
        filter: InventoryFilter,
    ) -> Result<Vec<Workload>, StepError> {
        let site = site.to_owned();
        self.call(
            &[&site],
            Inventory {
                site: site.clone(),
                filter,
            },
        )
        .await
    }

    /// The workload with the platform's id `id` on a site, if it is there.
    async fn find(&self, site: &str, id: &str) -> Result<Option<Workload>, StepError> {
        let found = self
            .matching(
                site,
                InventoryFilter {
                    workload_ids: vec![id.to_owned()],
                    labels: Vec::new(),
                },
            )
            .await?;
        // (A plugin may answer for an id in another form it accepts.)
        Ok(found.into_iter().next())
    }

    async fn start_step(&self, step: &StepRecord) -> Result<Started, StepError> {
        let input = &step.input;
        let text = |field: &str| input[field].as_str().unwrap_or_default().to_owned();
        let key = step.idempotency_key.clone();
        let (site, workload) = (text("site"), text("workload"));
        let op = match text("action").as_str() {
            "snapshot" => {
                // After this run fenced the workload (a final sync), the
                // fenced one is the workload to capture; on a round-trip
                // drill's way back, its sandbox.
                let scope = self.scope(step).await?;
                let made = if input[LEG] == RETURN_LEG {
                    "materialize"
                } else {
                    "fence"
                };
                let fenced = earlier(&scope.steps, step.seq, made, &site, &workload)
                    .and_then(|o| o["workload"].as_str().map(str::to_owned));
                let id = match fenced {
                    Some(id) => id,
                    None => self.resolve(&site, &workload).await?,
                };
                let request = SnapshotRequest {
                    key,
                    site: site.clone(),
                    workload_id: id,
                    consistency: if input["consistency"] == "application" {
                        Consistency::Application
                    } else {
                        Consistency::Crash
                    },
                    base: None,
                };
                self.call(&[&site], request).await?
            }
            "replicate" => {
                let (from, to) = (text("from"), text("to"));
                let scope = self.scope(step).await?;
                let point = earlier(&scope.steps, step.seq, "snapshot", &from, &workload)
                    .and_then(|o| o["recovery_point"].as_str().map(str::to_owned))
                    .ok_or_else(|| {
                        StepError::Fatal(format!(
                            "no snapshot of '{workload}' earlier in this run to replicate"
                        ))
                    })?;
                let request = ReplicateRequest {
                    key,
                    source_site: from.clone(),
                    target_site: to.clone(),
                    recovery_point_id: point,
                    base: None,
                };
                let op = self.call(&[&from, &to], request).await?;
                // Its status may need both sites too (the copy is made at
                // one, finished at the other).
                let mut handle = handle(&op);
                handle["sites"] = json!([from, to]);
                return Ok(Started::Operation(handle));
            }
            "transfer" => return self.start_transfer(step).await,
            "fence" => return self.fence(step, &site, &workload).await,
            "hook" => {
                let scope = self.scope(step).await?;
                let payload = hook_payload(step, &scope);
                return crate::hook::call(&self.hooks, input, &key, &payload)
                    .await
                    .map(Started::Done);
            }
            // A failed run's compensation: the workload its fence stopped.
            "unfence" => {
                let id = match input["workload_id"].as_str() {
                    Some(id) => id.to_owned(),
                    None => self.resolve(&site, &workload).await?,
                };
                let request = FenceRequest {
                    key,
                    site: site.clone(),
                    workload_id: id,
                    epoch: input["epoch"].as_u64().unwrap_or_default(),
                };
                self.call(&[&site], Unfence(request)).await?
            }
            "materialize" => {
                let scope = self.scope(step).await?;
                let isolated = input["isolated"] == true;
                // An incarnation a failed failover left serving (`adopt`),
                // still running: this step's, as it is.
                if let Some(offer) = input.get("adopt") {
                    let id = offer["output"]["workload"].as_str().unwrap_or_default();
                    let found = self.find(&site, id).await?;
                    if found.is_some_and(|w| w.power == PowerState::Running) {
                        tracing::warn!(run = %step.run, from = %offer["run"], workload = %id, "adopting the incarnation an earlier failed failover left serving");
                        let mut output = offer["output"].clone();
                        output["adopted_from"] = offer["run"].clone();
                        return Ok(Started::Done(output));
                    }
                }
                // A round-trip drill's way back recovers from the copy it
                // made; anything else from the plan's newest point there.
                let point = if input[LEG] == RETURN_LEG {
                    self.store.drill_points(&step.run).await.map(|points| {
                        points
                            .into_iter()
                            .find(|p| p.site == site && p.workload == workload)
                    })
                } else {
                    self.store
                        .latest_recovery_point(&scope.plan, &workload, &site)
                        .await
                };
                let point = point
                    .map_err(|e| StepError::Retryable(e.to_string()))?
                    .ok_or_else(|| {
                        StepError::Fatal(format!(
                            "no recovery point of '{workload}' at '{site}'; run a replication cycle first"
                        ))
                    })?;
                let mut spec = spec_from_json(&point.detail["spec"]).ok_or_else(|| {
                    StepError::Fatal(format!("recovery point '{}' has no usable spec", point.id))
                })?;
                spec.labels.retain(|(k, _)| {
                    ![WORKLOAD_LABEL, DRILL_LABEL, EPOCH_LABEL].contains(&k.as_str())
                });
                if isolated {
                    spec.labels.push((DRILL_LABEL.into(), step.run.clone()));
                    // (A sandbox's copy is named as one already.)
                    if !spec.name.ends_with("-drill") {
                        spec.name = format!("{}-drill", spec.name);
                    }
                } else {
                    spec.labels.push((WORKLOAD_LABEL.into(), workload.clone()));
                    if let Some(epoch) = input["epoch"].as_u64() {
                        spec.labels.push((EPOCH_LABEL.into(), epoch.to_string()));
                    }
                }
                // The plan maps source networks to target networks; going
                // back, the mapping runs the other way.
                let forward = site == scope.document.target;
                let networks = scope
                    .document
                    .network_mapping
                    .iter()
                    .map(|m| {
                        let (from, to) = if forward {
                            (&m.source, &m.target)
                        } else {
                            (&m.target, &m.source)
                        };
                        NetworkMapping {
                            source_network: from.clone(),
                            target_network: to.clone(),
                            keep_addresses: m.keep_addresses,
                        }
                    })
                    .collect();
                // A copy the data mover made is a set of volumes; anything
                // else is the platform's own recovery point.
                let source = match point.detail["volumes"].as_array() {
                    Some(volumes) => DiskSource::Volumes(
                        volumes
                            .iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect(),
                    ),
                    None => DiskSource::RecoveryPoint(point.id.clone()),
                };
                let request = MaterializeRequest {
                    key,
                    site: site.clone(),
                    source,
                    spec,
                    networks,
                    isolated,
                    start: true,
                };
                let op = self.call(&[&site], request).await?;
                let mut handle = handle(&op);
                handle["captured_at_ms"] = json!(point.captured_at_ms);
                handle["recovery_point"] = json!(point.id);
                return Ok(Started::Operation(handle));
            }
            // Retried within the run's attempts and RTO budget; then the
            // run fails with nothing fenced.
            crate::PREFLIGHT_ACTION => {
                let cannot =
                    |why: String| format!("'{site}' cannot take over: {why}; nothing was fenced");
                return match self.health(&site).await {
                    Ok((true, detail)) => {
                        Ok(Started::Done(json!({"site": site, "detail": detail})))
                    }
                    Ok((false, detail)) => Err(StepError::Retryable(cannot(format!(
                        "its API is unreachable ({detail})"
                    )))),
                    Err(StepError::Retryable(e)) => Err(StepError::Retryable(cannot(e))),
                    Err(StepError::Fatal(e)) => Err(StepError::Fatal(cannot(e))),
                };
            }
            crate::QUIESCE_ACTION => {
                return Ok(match self.quiesce(step).await? {
                    Progress::Done(output) => Started::Done(output),
                    _ => Started::Operation(json!({"kind": crate::QUIESCE_ACTION})),
                });
            }
            "gate" => {
                let scope = self.scope(step).await?;
                let materialized = earlier(&scope.steps, step.seq, "materialize", &site, &workload)
                    .ok_or_else(|| {
                        StepError::Fatal(format!("'{workload}' was not materialized in this run"))
                    })?;
                let gate = scope
                    .document
                    .workloads
                    .iter()
                    .find(|w| w.id == workload)
                    .and_then(|w| w.health_gate.clone());
                // The gate as it was when it started, and since when: a
                // resumed run keeps the same check and deadline.
                return Ok(Started::Operation(json!({
                    "kind": "gate", "site": site, "id": materialized["workload"],
                    "workload": workload, "addresses": materialized["addresses"],
                    "gate": gate, "since_ms": crate::now_ms(),
                })));
            }
            "redirect" => {
                let scope = self.scope(step).await?;
                let Some(redirect) = &scope.document.redirect else {
                    return Err(StepError::Fatal("the plan has no redirect".into()));
                };
                let weight = u8::try_from(input["weight"].as_u64().unwrap_or(100)).unwrap_or(100);
                // Traffic goes to what this run recovered — or, sending it
                // back after a failure, to what it unfenced.
                let source = if input["compensation"] == true {
                    "unfence"
                } else {
                    "materialize"
                };
                let backends = scope
                    .steps
                    .iter()
                    .filter(|s| s.seq < step.seq && s.input["action"] == source)
                    .filter_map(|s| s.output.as_ref()?["workload"].as_str().map(str::to_owned))
                    .map(|backend| WeightedBackend { backend, weight })
                    .collect();
                let request = RedirectRequest {
                    key,
                    site: site.clone(),
                    target: redirect_target(&redirect.target),
                    backends,
                };
                self.call(&[&site], request).await?
            }
            // A failed run's standby incarnations (compensation), best
            // effort: a plugin that cannot remove them (one built against
            // the contract 0.1, say) leaves them fenced.
            "cleanup" if text("scope") == "workloads" => {
                let ids: Vec<String> = input["workloads"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|id| id.as_str().map(str::to_owned))
                    .collect();
                let request = CleanupRequest {
                    key,
                    site: site.clone(),
                    scope: CleanupScope::Workloads(ids.clone()),
                };
                match self.call(&[&site], request).await {
                    Ok(op) => op,
                    Err(e) => {
                        tracing::warn!(run = %step.run, "the standby incarnations {ids:?} on '{site}' stay, fenced: {e}");
                        return Ok(Started::Done(json!({
                            "removed": [], "kept": ids, "reason": e.to_string(),
                        })));
                    }
                }
            }
            "cleanup" if text("scope") == "superseded" => {
                return self.remove_superseded(step).await;
            }
            // A round-trip drill's copies on this site: this drill's, or
            // those an earlier one left (`left_by`: see `leftovers`).
            "cleanup" if text("scope") == "drill-points" => {
                let drill = input[LEFT_BY].as_str().unwrap_or(&step.run);
                let points: Vec<RecoveryPointRecord> = self
                    .store
                    .drill_points(drill)
                    .await
                    .map_err(|e| StepError::Retryable(e.to_string()))?
                    .into_iter()
                    .filter(|p| p.site == site)
                    .collect();
                return self.remove_points(step, &site, &points).await;
            }
            // A drill's sandbox on this site: likewise.
            "cleanup" if text("scope") == "drill" => {
                let drill = input[LEFT_BY].as_str().unwrap_or(&step.run);
                let request = CleanupRequest {
                    key,
                    site: site.clone(),
                    scope: CleanupScope::Drill(drill.to_owned()),
                };
                self.call(&[&site], request).await?
            }
            // Recovery points removed from a site: all of the plan's there
            // (the source of a committed migration), or those past the
            // plan's retention (`prune`, the newest `keep` per workload stay).
            "cleanup" | "prune" => {
                let plan = self.scope(step).await?.plan;
                let points = self
                    .store
                    .recovery_points(&plan)
                    .await
                    .map_err(|e| StepError::Retryable(e.to_string()))?;
                let keep = match text("action").as_str() {
                    "prune" => usize::try_from(input["keep"].as_u64().unwrap_or(1).max(1))
                        .unwrap_or(usize::MAX),
                    _ => 0,
                };
                let mut seen: HashMap<String, usize> = HashMap::new();
                let gone: Vec<RecoveryPointRecord> = points
                    .into_iter()
                    .filter(|p| p.site == site)
                    .filter(|p| {
                        let n = seen.entry(p.workload.clone()).or_default();
                        *n += 1;
                        *n > keep
                    })
                    .collect();
                return self.remove_points(step, &site, &gone).await;
            }
            other => {
                return Err(StepError::Fatal(format!(
                    "step '{}': unknown action '{other}'",
                    step.name
                )));
            }
        };
        Ok(Started::Operation(handle(&op)))
    }

    /// Done once no other run of the step's plan is pending, running or
    /// waiting for approval (one cancelled as this run started may still
    /// be undoing what it did); until then, running.
    async fn quiesce(&self, step: &StepRecord) -> Result<Progress, StepError> {
        let run = self
            .store
            .run(&step.run)
            .await
            .map_err(|e| StepError::Retryable(e.to_string()))?;
        let which = rebound_store::PlanRuns {
            workflows: &[],
            statuses: &[
                RunStatus::Pending,
                RunStatus::Running,
                RunStatus::WaitingApproval,
            ],
            limit: Some(2),
        };
        let others: Vec<String> = self
            .store
            .plan_runs(&run.plan, which)
            .await
            .map_err(|e| StepError::Retryable(e.to_string()))?
            .into_iter()
            .filter(|r| r.id != run.id)
            .map(|r| format!("{} {}", r.workflow, r.id))
            .collect();
        if others.is_empty() {
            Ok(Progress::Done(json!({})))
        } else {
            tracing::debug!(run = %run.id, "waiting for {others:?} to end");
            Ok(Progress::Running)
        }
    }

    /// Ask a site to remove recovery points; the store forgets them once
    /// the site reports them removed (`poll_step`).
    async fn remove_points(
        &self,
        step: &StepRecord,
        site: &str,
        points: &[RecoveryPointRecord],
    ) -> Result<Started, StepError> {
        if points.is_empty() {
            return Ok(Started::Done(json!({"removed": []})));
        }
        let request = CleanupRequest {
            key: step.idempotency_key.clone(),
            site: site.to_owned(),
            scope: CleanupScope::RecoveryPoints(points.iter().flat_map(platform_ids).collect()),
        };
        let op = self.call(&[site], request).await?;
        let mut handle = handle(&op);
        handle["points"] = json!(
            points
                .iter()
                .map(|p| json!({"id": p.id, "platform_ids": platform_ids(p)}))
                .collect::<Vec<_>>()
        );
        Ok(Started::Operation(handle))
    }

    /// Fence one workload. A best-effort fence (unplanned failover, the
    /// primary may be gone) reports `fenced: false` instead of failing.
    async fn fence(
        &self,
        step: &StepRecord,
        site: &str,
        workload: &str,
    ) -> Result<Started, StepError> {
        let attempt = async {
            // A compensation names the incarnation it fences.
            let id = match step.input["workload_id"].as_str() {
                Some(id) => id.to_owned(),
                None => self.resolve(site, workload).await?,
            };
            // A former primary back after a disaster may have come back
            // without the workload (rebuilt, say): what the platform does
            // not have, it cannot run — confirmed, and said so.
            if step.input["confirm"] == true && self.find(site, &id).await?.is_none() {
                return Ok(Started::Done(json!({
                    "fenced": true, "workload": id, "absent": true,
                    "reason": format!("'{workload}' is not on '{site}': nothing there to fence"),
                })));
            }
            let request = FenceRequest {
                key: step.idempotency_key.clone(),
                site: site.to_owned(),
                workload_id: id,
                epoch: step.input["epoch"].as_u64().unwrap_or_default(),
            };
            let op = self.call(&[site], Fence(request)).await?;
            Ok(Started::Operation(handle(&op)))
        };
        match attempt.await {
            Ok(started) => Ok(started),
            Err(e) if step.input["best_effort"] == true => Ok(Started::Done(json!({
                "fenced": false, "workload": workload,
                "reason": format!("could not fence: {e}"),
            }))),
            Err(e) => Err(e),
        }
    }

    /// A health gate (see `gate`): running on the platform first, then the
    /// gate's probe, until it passes or its timeout runs out.
    async fn poll_gate(&self, operation: &Value) -> Result<Progress, StepError> {
        let text = |field: &str| operation[field].as_str().unwrap_or_default().to_owned();
        let (site, id) = (text("site"), text("id"));
        let gate: Option<HealthGate> = serde_json::from_value(operation["gate"].clone())
            .map_err(|e| StepError::Fatal(format!("unreadable health gate: {e}")))?;
        let timeout = crate::gate::timeout(gate.as_ref());
        // (A gate persisted before gates kept their start counts from now.)
        let now = crate::now_ms();
        let elapsed = now.saturating_sub(operation["since_ms"].as_i64().unwrap_or(now));
        let remaining =
            timeout.saturating_sub(Duration::from_millis(u64::try_from(elapsed).unwrap_or(0)));
        let failed = |reason: String| {
            Progress::Failed(format!(
                "health gate of '{}' on '{site}' ({}) did not pass within {}: {reason}",
                text("workload"),
                crate::gate::describe(gate.as_ref()),
                Span(timeout),
            ))
        };
        match self.find(&site, &id).await?.as_ref() {
            Some(w) if w.power == PowerState::Running => {}
            Some(w) if remaining.is_zero() => {
                return Ok(failed(format!("'{id}' is {:?}, not running", w.power)));
            }
            Some(_) => return Ok(Progress::Running),
            None => {
                return Ok(Progress::Failed(format!(
                    "'{id}' disappeared from '{site}'"
                )));
            }
        }
        let addresses: Vec<String> = operation["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect();
        Ok(
            match crate::gate::probe(gate.as_ref(), &addresses, remaining).await {
                Ok(answer) => {
                    Progress::Done(json!({"workload": id, "healthy": true, "probe": answer}))
                }
                Err(reason) if remaining.is_zero() || addresses.is_empty() => failed(reason),
                Err(_) => Progress::Running,
            },
        )
    }

    async fn poll_step(&self, step: &StepRecord, operation: &Value) -> Result<Progress, StepError> {
        let text = |field: &str| operation[field].as_str().unwrap_or_default().to_owned();
        let (site, id) = (text("site"), text("id"));
        if text("kind") == "transfer" {
            return self.poll_transfer(step, operation).await;
        }
        if text("kind") == "gate" {
            return self.poll_gate(operation).await;
        }
        if text("kind") == crate::QUIESCE_ACTION {
            return self.quiesce(step).await;
        }
        let kind = kind_from(&text("kind")).ok_or_else(|| {
            StepError::Fatal(format!(
                "step '{}': unreadable operation {operation}",
                step.name
            ))
        })?;
        let op = Operation {
            kind,
            site: site.clone(),
            id,
        };
        let mut sites = vec![site.clone()];
        for other in operation["sites"].as_array().into_iter().flatten() {
            if let Some(other) = other.as_str().filter(|o| !sites.iter().any(|s| s == o)) {
                sites.push(other.to_owned());
            }
        }
        let sites: Vec<&str> = sites.iter().map(String::as_str).collect();
        let state = self.call(&sites, Status(op)).await?;
        let done = match state {
            OperationState::Running(_) => return Ok(Progress::Running),
            // A best-effort cleanup (a compensation's removal of standby
            // incarnations) that failed leaves them as they are.
            OperationState::Failed(e)
                if step.input["action"] == "cleanup" && step.input["best_effort"] == true =>
            {
                tracing::warn!(run = %step.run, step = %step.name, "left as it is: {}", explain(&e));
                // (The ids are the step's, or found when it started.)
                let ids = operation
                    .get("workloads")
                    .unwrap_or(&step.input["workloads"]);
                return Ok(Progress::Done(
                    json!({"removed": [], "kept": ids, "left": true, "reason": explain(&e)}),
                ));
            }
            OperationState::Failed(e) => return Ok(Progress::Failed(explain(&e))),
            OperationState::Succeeded(done) => done,
        };
        let mut output = outcome(&done);
        if let Outcome::RecoveryPoint(point) = &done {
            let run = self
                .store
                .run(&step.run)
                .await
                .map_err(|e| StepError::Retryable(e.to_string()))?;
            // A drill's copies are its own (a round trip's way back).
            let drill = run.workflow == Workflow::Drill;
            let record = RecoveryPointRecord {
                site: point.site.clone(),
                id: point.id.clone(),
                plan: run.plan,
                workload: step.input["workload"].as_str().unwrap_or_default().into(),
                captured_at_ms: i64::try_from(point.captured_at).unwrap_or(i64::MAX),
                run: step.run.clone(),
                detail: json!({
                    "disks": point.disks.iter().map(|d| json!({
                        "disk_id": d.disk_id, "copy_id": d.copy_id, "size_bytes": d.size_bytes,
                    })).collect::<Vec<_>>(),
                    "spec": spec_to_json(&point.spec),
                    "consistency": match point.consistency {
                        Consistency::Crash => "crash",
                        Consistency::Application => "application",
                    },
                }),
                drill,
            };
            self.store
                .record_recovery_point(&record)
                .await
                .map_err(|e| StepError::Retryable(e.to_string()))?;
        }
        if let Some(points) = operation["points"].as_array() {
            let removed = match &done {
                Outcome::Cleaned(report) => report.removed.as_slice(),
                _ => &[],
            };
            let (ids, kept) = removed_points(points, removed);
            if !kept.is_empty() {
                tracing::info!(run = %step.run, step = %step.name, site = %site, "recovery points {kept:?} kept by the site (busy); the next prune tries them again");
            }
            self.store
                .forget_recovery_points(&site, &ids)
                .await
                .map_err(|e| StepError::Retryable(e.to_string()))?;
        }
        // What the recovery restored from travels with its result.
        for field in ["captured_at_ms", "recovery_point"] {
            if !operation[field].is_null() {
                output[field] = operation[field].clone();
            }
        }
        Ok(Progress::Done(output))
    }
}

/// Of the points a prune asked a site to remove, the ids of those it
/// reported removed — every platform id of theirs — and of those it kept.
/// (A point recorded as a bare id, by an older host, counts as removed.)
fn removed_points(points: &[Value], removed: &[String]) -> (Vec<String>, Vec<String>) {
    let mut gone = Vec::new();
    let mut kept = Vec::new();
    for p in points {
        match (p.as_str(), p["id"].as_str()) {
            (Some(id), _) => gone.push(id.to_owned()),
            (None, Some(id)) => {
                let all = p["platform_ids"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .all(|v| v.as_str().is_some_and(|v| removed.iter().any(|r| r == v)));
                if all { &mut gone } else { &mut kept }.push(id.to_owned());
            }
            _ => {}
        }
    }
    (gone, kept)
}

/// The platform's ids of a recovery point's copies: the volumes a transfer
/// imported, or the platform's own recovery point.
fn platform_ids(point: &RecoveryPointRecord) -> Vec<String> {
    match point.detail["volumes"].as_array() {
        Some(volumes) => volumes
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        None => vec![point.id.clone()],
    }
}

/// What a hook is told: the run, where it recovers, and what it recovered
/// there so far (the platform's id and addresses of each workload).
fn hook_payload(step: &StepRecord, scope: &Scope) -> Value {
    let site = &step.input["site"];
    let recovered: Vec<Value> = scope
        .steps
        .iter()
        .filter(|s| s.seq < step.seq && s.status == StepStatus::Succeeded)
        .filter(|s| s.input["action"] == "materialize" && s.input["site"] == *site)
        .filter_map(|s| {
            let out = s.output.as_ref()?;
            Some(json!({
                "workload": s.input["workload"], "id": out["workload"],
                "addresses": out["addresses"], "isolated": s.input["isolated"] == true,
            }))
        })
        .collect();
    // Around the snapshots: the plan's workloads, about to be (or just)
    // snapshotted on `site`.
    let snapshotted = || -> Vec<Value> {
        scope
            .document
            .workloads
            .iter()
            .map(|w| json!({"workload": w.id}))
            .collect()
    };
    let workloads = match step.input["at"].as_str() {
        Some("before_snapshot" | "after_snapshot") => snapshotted(),
        _ => recovered,
    };
    json!({
        "hook": step.input["hook"], "at": step.input["at"],
        "plan": scope.plan, "run": step.run, "workflow": scope.workflow,
        "site": site, "workloads": workloads,
        // Called as the stopped run is undone.
        "compensation": step.input["compensation"] == true,
    })
}

/// The output of this run's `action` step for `workload` on `site` before
/// `seq` (a reprotect fences the former primary, then snapshots the new
/// one: the same workload, on another site).
fn earlier<'a>(
    steps: &'a [StepRecord],
    seq: i32,
    action: &str,
    site: &str,
    workload: &str,
) -> Option<&'a Value> {
    steps
        .iter()
        .rev()
        .filter(|s| s.seq < seq && s.status == StepStatus::Succeeded)
        .filter(|s| s.input["action"] == action && s.input["site"] == site)
        .find(|s| s.input["workload"] == workload)
        .and_then(|s| s.output.as_ref())
}

/// Provider errors worth retrying stay retryable; sandbox refusals and
/// crashes do not.
/// Why a site's inventory could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("site '{0}' is not registered with this host")]
    NotBound(String),
    #[error(transparent)]
    Call(#[from] CallError),
}

fn step_error(error: CallError) -> StepError {
    match error.provider_error() {
        Some(e) if e.is_retryable() => StepError::Retryable(error.to_string()),
        _ => StepError::Fatal(error.to_string()),
    }
}

const KINDS: [(OperationKind, &str); 9] = [
    (OperationKind::Snapshot, "snapshot"),
    (OperationKind::Replicate, "replicate"),
    (OperationKind::ExportDisk, "export-disk"),
    (OperationKind::ImportDisk, "import-disk"),
    (OperationKind::Materialize, "materialize"),
    (OperationKind::Fence, "fence"),
    (OperationKind::Unfence, "unfence"),
    (OperationKind::Redirect, "redirect"),
    (OperationKind::Cleanup, "cleanup"),
];

fn kind_name(kind: OperationKind) -> &'static str {
    KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or("unknown", |(_, n)| n)
}

fn kind_from(name: &str) -> Option<OperationKind> {
    KINDS.iter().find(|(_, n)| *n == name).map(|(k, _)| *k)
}

/// The persisted form of an operation handle.
fn handle(op: &Operation) -> Value {
    json!({ "kind": kind_name(op.kind), "site": op.site, "id": op.id })
}

fn outcome(outcome: &Outcome) -> Value {
    match outcome {
        Outcome::RecoveryPoint(p) => json!({
            "recovery_point": p.id, "site": p.site, "workload": p.workload_id,
            "captured_at_ms": p.captured_at, "disks": p.disks.len(),
        }),
        Outcome::DiskEndpoint(d) => json!({ "volume": d.volume_id, "size_bytes": d.size_bytes }),
        Outcome::Materialized(m) => json!({ "workload": m.workload.id, "addresses": m.addresses }),
        Outcome::Fenced(f) => {
            json!({ "fenced": f.write_blocked, "epoch": f.epoch, "workload": f.workload_id })
        }
        Outcome::Redirected(r) => json!({
            "backends": r.backends.iter().map(|b| json!({"backend": b.backend, "weight": b.weight})).collect::<Vec<_>>(),
        }),
        Outcome::Cleaned(c) => json!({ "removed": c.removed }),
    }
}

fn redirect_target(target: &PlanTarget) -> RedirectTarget {
    match target {
        PlanTarget::DnsRecord {
            zone,
            name,
            record_type,
            ttl,
        } => RedirectTarget::DnsRecord(DnsRecord {
            zone: zone.clone(),
            name: name.clone(),
            record_type: record_type.clone(),
            ttl_secs: *ttl,
        }),
        PlanTarget::LoadBalancerPool { pool } => RedirectTarget::LoadBalancerPool(pool.clone()),
        PlanTarget::FloatingIp { address } => RedirectTarget::FloatingIp(address.clone()),
        PlanTarget::Route { route } => RedirectTarget::Route(route.clone()),
    }
}

/// A workload's spec as stored with its recovery points.
fn spec_to_json(spec: &VmSpec) -> Value {
    json!({
        "name": spec.name, "cpus": spec.cpus, "memory_mib": spec.memory_mib,
        "firmware": match spec.firmware { Firmware::Uefi => "uefi", Firmware::Bios => "bios" },
        "disks": spec.disks.iter().map(|d| json!({
            "id": d.id, "name": d.name, "size_bytes": d.size_bytes, "boot_order": d.boot_order,
        })).collect::<Vec<_>>(),
        "nics": spec.nics.iter().map(|n| json!({
            "network": n.network, "mac": n.mac, "ips": n.ips,
        })).collect::<Vec<_>>(),
        "labels": spec.labels,
    })
}

fn spec_from_json(v: &Value) -> Option<VmSpec> {
    let text = |v: &Value| v.as_str().map(str::to_owned);
    Some(VmSpec {
        name: text(&v["name"])?,
        cpus: u32::try_from(v["cpus"].as_u64()?).ok()?,
        memory_mib: v["memory_mib"].as_u64()?,
        firmware: if v["firmware"] == "uefi" {
            Firmware::Uefi
        } else {
            Firmware::Bios
        },
        disks: v["disks"]
            .as_array()?
            .iter()
            .map(|d| {
                Some(DiskSpec {
                    id: text(&d["id"])?,
                    name: text(&d["name"])?,
                    size_bytes: d["size_bytes"].as_u64()?,
                    boot_order: d["boot_order"].as_u64().and_then(|b| u32::try_from(b).ok()),
                })
            })
            .collect::<Option<_>>()?,
        nics: v["nics"]
            .as_array()?
            .iter()
            .map(|n| {
                Some(NicSpec {
                    network: text(&n["network"])?,
                    mac: text(&n["mac"]),
                    ips: serde_json::from_value(n["ips"].clone()).ok()?,
                })
            })
            .collect::<Option<_>>()?,
        labels: serde_json::from_value(v["labels"].clone()).ok()?,
    })
}

impl StepRunner for PluginSteps {
    fn start<'a>(&'a self, step: &'a StepRecord) -> BoxFuture<'a, Result<Started, StepError>> {
        Box::pin(RUN.scope(step.run.clone(), self.start_step(step)))
    }

    fn poll<'a>(
        &'a self,
        step: &'a StepRecord,
        operation: &'a Value,
    ) -> BoxFuture<'a, Result<Progress, StepError>> {
        Box::pin(RUN.scope(step.run.clone(), self.poll_step(step, operation)))
    }

    fn abandon<'a>(&'a self, step: &'a StepRecord, operation: &'a Value) -> BoxFuture<'a, ()> {
        Box::pin(RUN.scope(step.run.clone(), async move {
            if step.input["action"] == "transfer" {
                self.abandon_transfer(step, operation).await;
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_is_forgotten_only_when_every_copy_of_it_was_removed() {
        let points = [
            json!({"id": "transfer/a", "platform_ids": ["vol-1", "vol-2"]}),
            json!({"id": "transfer/b", "platform_ids": ["vol-3", "vol-4"]}),
            json!({"id": "snap-5", "platform_ids": ["snap-5"]}),
            json!("older-host-point"),
        ];
        let removed = ["vol-1", "vol-2", "vol-3", "snap-5"].map(String::from);
        let (gone, kept) = removed_points(&points, &removed);
        assert_eq!(gone, ["transfer/a", "snap-5", "older-host-point"]);
        assert_eq!(kept, ["transfer/b"]);
    }
}

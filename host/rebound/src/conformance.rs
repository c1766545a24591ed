//! `rebound plugin test`: the conformance kit for plugin authors. It loads
//! a plugin package into a runtime configured like `rebound serve`'s, binds
//! the sites it tests (from a sites file, such as the one `rebound lab up`
//! writes) to that package, and runs the standard scenarios against a
//! real site: describe → health → inventory → snapshot (polled, then
//! repeated under the same idempotency key) → changed-blocks (against a
//! second point) → replicate → export-disk (its
//! data read back) → import-disk (the export copied into it by the data
//! mover, then a resync onto that volume; then one abandoned, discarded
//! without being moved on) → materialize (isolated, as a
//! drill) → fence → unfence → cleanup of workloads (a standby it
//! materialized removed, a workload it did not make refused: `standbys`)
//! → cleanup of the drill sandbox — each scenario the plugin's capabilities do not offer is
//! skipped with the reason — and then its error handling, with faults the
//! host injects into the plugin's own HTTP requests: a 429 with
//! Retry-After, a 503, and a request that never answers. A plugin passes a
//! fault scenario by recovering (retrying) or by reporting the typed,
//! retryable error the engine needs; a trap, a kill at the deadline or a
//! permanent error fails it. It prints a pass/fail table and exits 0 only
//! when nothing failed.
//!
//! With guest writes — a lab site's `/_lab/guest-writes`, from
//! `--guest-writes` or the `lab.json` beside a lab's sites file — the kit
//! also writes into the tested disk as its guest would, and checks what
//! the plugin reports against it (`changes`): the point holds the write
//! made just before it and not the one just after (read through its
//! export, and through an export of its replica), and `changed-blocks`
//! covers every byte written since it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use clap::Args;
use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};
use rebound_engine::BoundSite;
use rebound_runtime::bindings::exports::{
    CleanupRequest, CleanupScope, DiskSource, FenceRequest, MaterializeRequest, ReplicateRequest,
    SnapshotRequest,
};
use rebound_runtime::bindings::{
    Consistency, HealthStatus, InventoryFilter, Operation, OperationState, Outcome, ProviderError,
    RecoveryPoint, Workload,
};
use rebound_runtime::{
    CallContext, CallError, Describe, Export, Fault, Faults, Fence, Health, Inventory, Plugin,
    PluginPackage, Runtime, RuntimeConfig, Status, Unfence,
};

use crate::output::{Exit, exit};
use crate::plugin_cmd::TrustArgs;

mod changes;
mod disks;
mod standbys;

#[derive(Args)]
pub struct TestArgs {
    /// The plugin package folder (from `rebound plugin package`).
    package: PathBuf,
    /// The sites file defining the sites to test against (as `rebound serve
    /// --sites` reads it); only `--site` and `--target` are read, and bound
    /// to this package whatever plugin the file names.
    #[arg(long)]
    sites: PathBuf,
    /// The site the scenarios run on.
    #[arg(long)]
    site: String,
    /// A second site of the same plugin, for replicate (skipped without).
    #[arg(long)]
    target: Option<String>,
    /// The workload to snapshot (default: the first the inventory lists).
    #[arg(long)]
    workload: Option<String>,
    /// Skip a scenario the site cannot run (`replicate`, `export-disk`,
    /// `changed-blocks`);
    /// repeatable. The table shows it skipped.
    #[arg(long = "skip")]
    skip: Vec<String>,
    /// A simulated site's guest-writes URL (`rebound lab up` prints it;
    /// taken from the lab's `lab.json` when the sites file is a lab's):
    /// the kit writes into the disk through it around the first point and
    /// between the two points of `changed-blocks`, and the point and the
    /// list must agree with what it wrote. TLS is checked against the
    /// site's `ca_file`.
    #[arg(long, value_name = "URL")]
    guest_writes: Option<String>,
    /// How long one long operation may take before it fails its scenario.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
    #[command(flatten)]
    trust: TrustArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    Fail,
    Skip,
}

struct Row {
    scenario: &'static str,
    verdict: Verdict,
    took: Duration,
    detail: String,
}

struct Kit {
    runtime: Arc<Runtime>,
    plugin: Arc<Plugin>,
    sites: std::collections::HashMap<String, BoundSite>,
    timeout: Duration,
    /// Where the kit writes into the site's disks, when it can.
    guest_writes: Option<changes::GuestWrites>,
    /// The guest writes around the first point, once made.
    point_in_time: Option<changes::PointInTime>,
    /// Unique per run, so a second run of the kit is not answered from the
    /// first run's idempotency keys.
    nonce: String,
    rows: Vec<Row>,
}

impl Kit {
    fn context(&self, sites: &[&str], faults: Option<Arc<Faults>>) -> CallContext {
        let grants = sites
            .iter()
            .filter_map(|s| self.sites.get(*s).map(|b| b.grant.clone()))
            .collect();
        let ctx = CallContext::new(grants, Duration::from_secs(30));
        match faults {
            Some(f) => ctx.with_faults(f),
            None => ctx,
        }
    }

    async fn call<E: Export>(&self, sites: &[&str], request: E) -> Result<E::Output, CallError> {
        self.runtime
            .call(&self.plugin, &self.context(sites, None), request)
            .await
    }

    fn key(&self, what: &str) -> String {
        format!("conformance/{}/{what}", self.nonce)
    }

    /// Poll an operation to its end.
    async fn finish(&self, sites: &[&str], op: Operation) -> Result<Outcome, String> {
        let deadline = Instant::now() + self.timeout;
        let mut pause = Duration::from_millis(50);
        loop {
            match self.call(sites, Status(op.clone())).await {
                Ok(OperationState::Succeeded(outcome)) => return Ok(outcome),
                Ok(OperationState::Failed(e)) => return Err(format!("failed: {e:?}")),
                Ok(OperationState::Running(_)) => {}
                // A passing fault while polling is the plugin's to report,
                // and the engine's to retry; so does the kit.
                Err(e) if e.provider_error().is_some_and(ProviderError::is_retryable) => {}
                Err(e) => return Err(format!("status: {e}")),
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "still running after {:?} (operation {})",
                    self.timeout, op.id
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    fn record(&mut self, scenario: &'static str, started: Instant, result: Result<String, String>) {
        let (verdict, detail) = match result {
            Ok(detail) => (Verdict::Pass, detail),
            Err(detail) => (Verdict::Fail, detail),
        };
        self.rows.push(Row {
            scenario,
            verdict,
            took: started.elapsed(),
            detail,
        });
    }

    fn skip(&mut self, scenario: &'static str, why: &str) {
        self.rows.push(Row {
            scenario,
            verdict: Verdict::Skip,
            took: Duration::ZERO,
            detail: why.to_owned(),
        });
    }

    fn offers(&self, capability: &str) -> bool {
        self.plugin
            .manifest
            .capabilities
            .iter()
            .any(|c| c == capability)
    }

    /// One fault scenario: `health` with `fault` injected into its first
    /// requests.
    async fn fault(&mut self, scenario: &'static str, site: &str, fault: Fault, count: usize) {
        let started = Instant::now();
        let faults = Faults::new(fault, count);
        let result = self
            .runtime
            .call(
                &self.plugin,
                &self.context(&[site], Some(faults.clone())),
                Health(site.to_owned()),
            )
            .await;
        let hit = count - faults.remaining();
        let verdict = match (&result, fault) {
            _ if hit == 0 => {
                Err("the plugin sent no request to the site; nothing was injected".into())
            }
            (Ok(report), _) if report.status != HealthStatus::Unreachable => Ok(format!(
                "recovered after {hit} faulty answer(s): {:?}",
                report.status
            )),
            (Ok(report), _) => Ok(format!(
                "reported the site unreachable ({}) after {hit} faulty answer(s)",
                report.detail
            )),
            (Err(e), Fault::Status { code: 429, .. }) => match e.provider_error() {
                Some(ProviderError::Throttled(t)) if t.retry_after_ms.is_some() => {
                    Ok(format!("throttled, retry after {:?} ms", t.retry_after_ms))
                }
                Some(ProviderError::Throttled(_)) => {
                    Err("throttled, but the Retry-After the site sent was dropped".into())
                }
                _ => Err(format!("a 429 must be `throttled` (retryable): {e}")),
            },
            (Err(e), _) => match e.provider_error() {
                Some(p) if p.is_retryable() => Ok(format!("retryable: {p:?}")),
                _ => Err(format!("must recover or be retryable: {e}")),
            },
        };
        self.record(scenario, started, verdict);
    }
}

pub async fn run(args: TestArgs) -> Result<()> {
    let runtime = Arc::new(Runtime::new(RuntimeConfig {
        trust: args.trust.policy()?,
        ..RuntimeConfig::default()
    })?);
    let package = PluginPackage::read_dir(&args.package)
        .with_context(|| format!("reading the package {}", args.package.display()))?;
    let mut rows = Vec::new();
    let started = Instant::now();
    let plugin = match runtime.load(&package).await {
        Ok(plugin) => plugin,
        Err(e) => {
            rows.push(Row {
                scenario: "load",
                verdict: Verdict::Fail,
                took: started.elapsed(),
                detail: e.to_string(),
            });
            print_table(&rows);
            return Err(Exit::new(exit::RUN_FAILED, "the plugin did not load").into());
        }
    };
    runtime.install(plugin.clone());
    // Only the sites under test are bound, each to the package under test:
    // the file may define sites of other plugins (a lab's sites file does),
    // and a new plugin is tested on the sites of the one it replaces.
    let names: Vec<&str> = std::iter::once(args.site.as_str())
        .chain(args.target.as_deref())
        .collect();
    let mut definitions = crate::sites::definitions(&args.sites, Some(&names))?;
    // A lab's site: its guest writes, unless told otherwise.
    let url = args.guest_writes.clone().or_else(|| {
        let url = crate::lab::guest_writes_url(&args.sites, &args.site)?;
        eprintln!(
            "note: '{}' is a site of the lab that wrote {}: the kit writes into its disks \
             through {url}, as the workload's guest would, to check the recovery points and \
             changed blocks the plugin reports against what it wrote",
            args.site,
            args.sites.display()
        );
        Some(url)
    });
    let guest_writes = match &url {
        Some(url) => {
            let ca = definitions
                .get(&args.site)
                .and_then(|d| d.ca_pem.as_deref());
            Some(changes::GuestWrites::new(url, ca)?)
        }
        None => None,
    };
    let mut sites = std::collections::HashMap::new();
    for name in names {
        let mut definition = definitions
            .remove(name)
            .ok_or_else(|| anyhow!("site '{name}' is not in {}", args.sites.display()))?;
        if definition.plugin != plugin.manifest.name {
            eprintln!(
                "note: site '{name}' is defined for plugin '{}'; testing '{}' on it with its \
                 config, credentials and egress",
                definition.plugin, plugin.manifest.name
            );
            definition.plugin = plugin.manifest.name.clone();
        }
        let bound = rebound_api::sites::bind(&runtime, &definition)
            .map_err(|e| anyhow!("site '{name}': {e}"))?;
        sites.insert(name.to_owned(), bound);
    }
    let mut kit = Kit {
        runtime,
        plugin,
        sites,
        timeout: Duration::from_secs(args.timeout_secs),
        guest_writes,
        point_in_time: None,
        nonce: format!("{:x}", rand::random::<u64>()),
        rows,
    };
    kit.rows.push(Row {
        scenario: "load",
        verdict: Verdict::Pass,
        took: started.elapsed(),
        detail: format!(
            "{}@{} verified (digest, signature, contract)",
            kit.plugin.manifest.name, kit.plugin.manifest.version
        ),
    });
    scenarios(&mut kit, &args).await;
    print_table(&kit.rows);
    let failed = kit
        .rows
        .iter()
        .filter(|r| r.verdict == Verdict::Fail)
        .count();
    if failed > 0 {
        return Err(Exit::new(exit::RUN_FAILED, format!("{failed} scenario(s) failed")).into());
    }
    Ok(())
}

async fn scenarios(kit: &mut Kit, args: &TestArgs) {
    let site = args.site.as_str();
    // describe
    let started = Instant::now();
    let described = kit.call(&[], Describe).await;
    let result = match &described {
        Ok(info) if info.snapshot_granularity_secs == 0 => {
            Err("snapshot-granularity-secs must be at least 1".to_owned())
        }
        Ok(info) => Ok(format!(
            "{} on {}, points every {} s at best",
            info.name, info.platform, info.snapshot_granularity_secs
        )),
        Err(e) => Err(e.to_string()),
    };
    kit.record("describe", started, result);

    // health
    let started = Instant::now();
    let result = match kit.call(&[site], Health(site.to_owned())).await {
        Ok(r) if r.status == HealthStatus::Unreachable => {
            Err(format!("the site is unreachable: {}", r.detail))
        }
        Ok(r) => Ok(format!("{:?}: {}", r.status, r.detail)),
        Err(e) => Err(e.to_string()),
    };
    kit.record("health", started, result);

    // inventory
    let started = Instant::now();
    let inventory = kit
        .call(
            &[site],
            Inventory {
                site: site.to_owned(),
                filter: InventoryFilter {
                    workload_ids: Vec::new(),
                    labels: Vec::new(),
                },
            },
        )
        .await;
    let workload: Option<Workload> = match inventory {
        Ok(found) => {
            let bad = found.iter().find(|w| {
                w.id.is_empty()
                    || w.spec.name.is_empty()
                    || w.spec.disks.iter().any(|d| d.size_bytes == 0)
            });
            let chosen = match &args.workload {
                Some(id) => found.iter().find(|w| &w.id == id).cloned(),
                None => found.first().cloned(),
            };
            let result = match (bad, &chosen) {
                (Some(w), _) => Err(format!(
                    "workload '{}' lacks an id, a name or disk sizes",
                    w.id
                )),
                (None, None) => {
                    Err("no workload to test with (give --workload, or create one)".into())
                }
                (None, Some(w)) => Ok(format!(
                    "{} workloads; testing with '{}' ({})",
                    found.len(),
                    w.spec.name,
                    w.id
                )),
            };
            kit.record("inventory", started, result);
            chosen
        }
        Err(e) => {
            kit.record("inventory", started, Err(e.to_string()));
            None
        }
    };
    let Some(workload) = workload else {
        for s in [
            "snapshot",
            "snapshot again (same key)",
            changes::CHANGED_BLOCKS,
            "replicate",
            "export-disk",
            disks::IMPORT,
            disks::IMPORT_ONTO,
            disks::DISCARD,
            "materialize (isolated)",
            "fence",
            "unfence",
            standbys::WORKLOADS,
            "cleanup",
        ] {
            kit.skip(s, "needs a workload from inventory");
        }
        faults(kit, site).await;
        return;
    };

    // snapshot, polled; with guest writes, one just before and one just
    // after it, for the checks of a point in time.
    if let Some(disk) = workload.spec.disks.first() {
        kit.point_in_time = changes::PointInTime::write_before(kit, disk).await;
    }
    let started = Instant::now();
    let request = SnapshotRequest {
        key: kit.key("snapshot"),
        site: site.to_owned(),
        workload_id: workload.id.clone(),
        consistency: Consistency::Crash,
        base: None,
    };
    let point = snapshot(kit, site, request.clone()).await;
    if point.is_ok() {
        changes::PointInTime::write_after(kit).await;
    }
    let result = match &point {
        Ok(p) if p.workload_id != workload.id => Err(format!(
            "the point is of '{}', not '{}'",
            p.workload_id, workload.id
        )),
        Ok(p) if p.disks.len() != workload.spec.disks.len() => Err(format!(
            "{} disk copies for {} disks",
            p.disks.len(),
            workload.spec.disks.len()
        )),
        Ok(p) => Ok(format!(
            "recovery point {} with {} disk(s)",
            p.id,
            p.disks.len()
        )),
        Err(e) => Err(e.clone()),
    };
    kit.record("snapshot", started, result);
    let Ok(point) = point else {
        for s in [
            "snapshot again (same key)",
            changes::CHANGED_BLOCKS,
            "replicate",
            "export-disk",
            disks::IMPORT,
            disks::IMPORT_ONTO,
            disks::DISCARD,
            "materialize (isolated)",
            "fence",
            "unfence",
            standbys::WORKLOADS,
            "cleanup",
        ] {
            kit.skip(s, "needs a recovery point");
        }
        faults(kit, site).await;
        return;
    };

    // The same key again: the same point, no second snapshot.
    let started = Instant::now();
    let result = match snapshot(kit, site, request.clone()).await {
        Ok(again) if again.id == point.id => Ok("the same recovery point; nothing repeated".into()),
        Ok(again) => Err(format!(
            "a second recovery point {} under the same idempotency key (first {})",
            again.id, point.id
        )),
        Err(e) => Err(e),
    };
    kit.record("snapshot again (same key)", started, result);

    changes::scenario(kit, args, site, &request, &point).await;

    // replicate
    match (&args.target, kit.offers("native-replication")) {
        _ if args.skip.iter().any(|s| s == "replicate") => {
            kit.skip("replicate", "skipped by --skip");
        }
        (_, false) => kit.skip(
            "replicate",
            "the plugin does not offer `native-replication`",
        ),
        (None, true) => kit.skip("replicate", "give --target SITE to test it"),
        (Some(target), true) => {
            let started = Instant::now();
            let sites = [site, target.as_str()];
            let result = match kit
                .call(
                    &sites,
                    ReplicateRequest {
                        key: kit.key("replicate"),
                        source_site: site.to_owned(),
                        target_site: target.clone(),
                        recovery_point_id: point.id.clone(),
                        base: None,
                    },
                )
                .await
            {
                Ok(op) => Some(match kit.finish(&sites, op).await {
                    Ok(Outcome::RecoveryPoint(p)) if p.site == *target => {
                        let replica = format!("recovery point {} on '{target}'", p.id);
                        replica_holds_the_point(kit, target, &p)
                            .await
                            .map(|held| format!("{replica}{held}"))
                    }
                    Ok(other) => Err(format!(
                        "expected a recovery point on '{target}', got {other:?}"
                    )),
                    Err(e) => Err(e),
                }),
                // An honest "not between these sites" is not a failure.
                Err(e) if matches!(e.provider_error(), Some(ProviderError::Unsupported(_))) => {
                    kit.skip("replicate", &format!("the plugin says: {e}"));
                    None
                }
                Err(e) => Some(Err(e.to_string())),
            };
            if let Some(result) = result {
                kit.record("replicate", started, result);
            }
        }
    }

    // export-disk, its data read back; import-disk, written from it
    disks::scenarios(kit, args, site, &point).await;

    // materialize, isolated, as a drill does; the sandbox is named like a
    // drill's run id, which platforms keep as a label value (no '/').
    let sandbox = format!("conformance-{}-drill", kit.nonce);
    let started = Instant::now();
    let mut spec = point.spec.clone();
    spec.name = format!("{}-conformance", spec.name);
    spec.labels
        .push((rebound_engine::DRILL_LABEL.to_owned(), sandbox.clone()));
    let materialized = match kit
        .call(
            &[site],
            MaterializeRequest {
                key: kit.key("materialize"),
                site: site.to_owned(),
                source: DiskSource::RecoveryPoint(point.id.clone()),
                spec,
                networks: Vec::new(),
                isolated: true,
                start: true,
            },
        )
        .await
    {
        Ok(op) => match kit.finish(&[site], op).await {
            Ok(Outcome::Materialized(m)) => Ok(m.workload),
            Ok(other) => Err(format!("expected a materialized workload, got {other:?}")),
            Err(e) => Err(e),
        },
        Err(e) => Err(e.to_string()),
    };
    let result = materialized
        .as_ref()
        .map(|w| format!("'{}' ({}) {:?}", w.spec.name, w.id, w.power))
        .map_err(Clone::clone);
    kit.record("materialize (isolated)", started, result);

    // fence / unfence the materialized workload
    match (&materialized, kit.offers("fencing")) {
        (Err(_), _) => {
            kit.skip("fence", "needs a materialized workload");
            kit.skip("unfence", "needs a materialized workload");
        }
        (_, false) => {
            kit.skip("fence", "the plugin does not offer `fencing`");
            kit.skip("unfence", "the plugin does not offer `fencing`");
        }
        (Ok(w), true) => {
            for (scenario, fence) in [("fence", true), ("unfence", false)] {
                let started = Instant::now();
                let request = FenceRequest {
                    key: kit.key(scenario),
                    site: site.to_owned(),
                    workload_id: w.id.clone(),
                    epoch: 1,
                };
                let op = if fence {
                    kit.call(&[site], Fence(request)).await
                } else {
                    kit.call(&[site], Unfence(request)).await
                };
                let result = match op {
                    Ok(op) => match kit.finish(&[site], op).await {
                        Ok(Outcome::Fenced(r)) if fence && !r.write_blocked => {
                            Err("fenced, but the plugin does not say writes are blocked".into())
                        }
                        Ok(Outcome::Fenced(r)) => Ok(format!(
                            "epoch {}, writes blocked: {}",
                            r.epoch, r.write_blocked
                        )),
                        Ok(other) => Err(format!("expected a fence report, got {other:?}")),
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e.to_string()),
                };
                kit.record(scenario, started, result);
            }
        }
    }

    standbys::scenario(kit, site, &point, &workload, &sandbox).await;

    // cleanup of the drill sandbox
    let started = Instant::now();
    let result = match kit
        .call(
            &[site],
            CleanupRequest {
                key: kit.key("cleanup"),
                site: site.to_owned(),
                scope: CleanupScope::Drill(sandbox.clone()),
            },
        )
        .await
    {
        Ok(op) => match kit.finish(&[site], op).await {
            Ok(Outcome::Cleaned(r)) => {
                let left = kit
                    .call(
                        &[site],
                        Inventory {
                            site: site.to_owned(),
                            filter: InventoryFilter {
                                workload_ids: Vec::new(),
                                labels: vec![(
                                    rebound_engine::DRILL_LABEL.to_owned(),
                                    sandbox.clone(),
                                )],
                            },
                        },
                    )
                    .await
                    .map(|w| w.len())
                    .unwrap_or(usize::MAX);
                if left == 0 {
                    Ok(format!(
                        "removed {} object(s); nothing of the sandbox left",
                        r.removed.len()
                    ))
                } else {
                    Err(format!(
                        "{left} workload(s) of the sandbox remain after cleanup"
                    ))
                }
            }
            Ok(other) => Err(format!("expected a cleanup report, got {other:?}")),
            Err(e) => Err(e),
        },
        Err(e) => Err(e.to_string()),
    };
    kit.record("cleanup", started, result);

    faults(kit, site).await;
}

/// With guest writes and `export-disk`: the replica's first disk, read
/// through an export on the target, holds the write the kit made just
/// before the point — replication carried the point's data, not only its
/// record. A replica the plugin cannot export is noted, not failed (a
/// mirrored volume may be readable only once promoted); nothing to add
/// without guest writes.
async fn replica_holds_the_point(
    kit: &Kit,
    target: &str,
    replica: &RecoveryPoint,
) -> Result<String, String> {
    if kit.point_in_time.is_none() || !kit.offers("export-disk") {
        return Ok(String::new());
    }
    match disks::export(kit, target, replica).await {
        Ok((op, endpoint, _)) => {
            let held = disks::point_in_time(kit, target, replica, &endpoint).await;
            disks::release(kit, target, vec![op]).await;
            match held {
                None => Ok(String::new()),
                Some(Ok(held)) => Ok(format!("; exported there, {held}")),
                Some(Err(e)) => Err(format!("the replica exported on '{target}': {e}")),
            }
        }
        // A platform may keep replicas it cannot export until promoted
        // (a mirrored volume on its secondary): its data is not checked.
        Err((op, e)) => {
            disks::release(kit, target, op.into_iter().collect()).await;
            Ok(format!(
                "; its data not checked: no export of it on '{target}' ({e})"
            ))
        }
    }
}

async fn snapshot(
    kit: &Kit,
    site: &str,
    request: SnapshotRequest,
) -> Result<RecoveryPoint, String> {
    let op = kit
        .call(&[site], request)
        .await
        .map_err(|e| e.to_string())?;
    match kit.finish(&[site], op).await? {
        Outcome::RecoveryPoint(p) => Ok(p),
        other => Err(format!("expected a recovery point, got {other:?}")),
    }
}

async fn faults(kit: &mut Kit, site: &str) {
    kit.fault(
        "fault: 429 with Retry-After",
        site,
        Fault::Status {
            code: 429,
            retry_after_secs: Some(1),
        },
        1,
    )
    .await;
    kit.fault(
        "fault: 503",
        site,
        Fault::Status {
            code: 503,
            retry_after_secs: None,
        },
        1,
    )
    .await;
    kit.fault("fault: hang", site, Fault::Hang, 1).await;
}

fn print_table(rows: &[Row]) {
    let mut table = Table::new();
    table
        .load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(["SCENARIO", "RESULT", "TIME", "DETAIL"]);
    for row in rows {
        table.add_row([
            row.scenario.to_owned(),
            match row.verdict {
                Verdict::Pass => "pass",
                Verdict::Fail => "FAIL",
                Verdict::Skip => "skip",
            }
            .to_owned(),
            format!("{:.2} s", row.took.as_secs_f64()),
            row.detail.clone(),
        ]);
    }
    println!("{table}");
    let count = |v| rows.iter().filter(|r| r.verdict == v).count();
    println!(
        "{} passed, {} failed, {} skipped",
        count(Verdict::Pass),
        count(Verdict::Fail),
        count(Verdict::Skip)
    );
}

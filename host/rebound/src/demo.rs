//! `rebound demo`: a guided tour against the lab. It starts a simulated
//! example site on loopback, publishes the example plugin (packaged and
//! signed with a fresh key), walks the contract's happy path, then unleashes
//! the hostile plugins at once while the example plugin keeps serving, and
//! finally drives a protected plan through replication → failover →
//! reprotect → failback between two example sites with the engine, printing
//! each run's measured RTO and achieved RPO against the phase's objectives.
//! Then the same round trip crosses platforms: a plan of OpenStack servers
//! protected onto a KubeVirt cluster, every disk moved by the data mover;
//! and, when moto is installed (`REBOUND_PYTHON`), a plan of AWS instances
//! protected onto a KubeVirt cluster, disks moved through the AWS plugin's
//! mover appliance.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ed25519_dalek::SigningKey;
use rebound_lab::{ExampleOptions, ExampleSite};
use rebound_runtime::bindings::exports::SnapshotRequest;
use rebound_runtime::bindings::{Consistency, OperationState, Outcome};
use rebound_runtime::{
    CallContext, Health, Inventory, Limits, Plugin, PluginPackage, Runtime, RuntimeConfig,
    SiteGrant, Status, TrustPolicy,
};

const HOSTILE: &[&str] = &[
    "hostile-spin",
    "hostile-memory-bomb",
    "hostile-trap",
    "hostile-huge-response",
    "hostile-egress-denied",
    "hostile-egress-metadata",
    "hostile-connection-flood",
    "hostile-secret-leak",
];

pub async fn run(plugins: &Path) -> Result<()> {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let runtime = Arc::new(Runtime::new(RuntimeConfig {
        limits: Limits {
            memory_bytes: 64 << 20,
            ..Limits::default()
        },
        trust: TrustPolicy {
            trusted_keys: vec![key.verifying_key()],
            allow_unsigned: false,
        },
        cache_dir: Some(plugins.join("../wasmtime-cache")),
        ..RuntimeConfig::default()
    })?);
    // The sites keep real disk data (sparse images) for the data mover.
    let disks = std::env::temp_dir().join(format!("rebound-demo-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(disks.clone());
    let site = ExampleSite::start(ExampleOptions {
        snapshot_latency: Duration::from_millis(300),
        disk_dir: Some(disks.join("lab-a")),
        guests: true,
        ..ExampleOptions::default()
    })
    .await?;
    println!("== Lab: example site 'lab-a' at {} ==", site.endpoint());

    let publish = |name: &str| -> Result<PluginPackage> {
        let dir = plugins.join(name);
        let wasm = std::fs::read(dir.join("plugin.wasm")).with_context(|| {
            format!("reading {}; run `cargo xtask build-plugins`", dir.display())
        })?;
        let template = std::fs::read_to_string(dir.join("plugin.toml"))?;
        Ok(PluginPackage::build(&template, wasm, Some(&key))?)
    };
    let started = Instant::now();
    let example = runtime.load(&publish("example")?).await?;
    runtime.install(example.clone());
    println!(
        "\n== Plugin 'example' {} verified (sha256 {}…, signature ok) and loaded in {:?} ==",
        example.version(),
        &example.digest[..12],
        started.elapsed()
    );

    let grant = SiteGrant::new("lab-a")
        .config("endpoint", &site.endpoint())
        .secret("token", &site.token)
        .grant(&site.endpoint())
        .map_err(anyhow::Error::msg)?;
    let ctx = CallContext::new(vec![grant.clone()], Duration::from_secs(10));

    let health = runtime.call(&example, &ctx, Health("lab-a".into())).await?;
    println!(
        "health: {:?}, API {}, {} ms",
        health.status,
        health.api_version.unwrap_or_default(),
        health.latency_ms
    );
    let workloads = runtime
        .call(&example, &ctx, Inventory::all("lab-a"))
        .await?;
    println!("\ninventory of lab-a:");
    println!(
        "  {:<6} {:<6} {:>4} {:>9} {:>9}  nics",
        "id", "name", "cpus", "mem MiB", "disk GiB"
    );
    for w in &workloads {
        let disk: u64 = w.spec.disks.iter().map(|d| d.size_bytes).sum();
        let ips: Vec<String> = w.spec.nics.iter().flat_map(|n| n.ips.clone()).collect();
        println!(
            "  {:<6} {:<6} {:>4} {:>9} {:>9}  {}",
            w.id,
            w.spec.name,
            w.spec.cpus,
            w.spec.memory_mib,
            disk >> 30,
            ips.join(",")
        );
    }

    let request = SnapshotRequest {
        key: "demo-run/step-1".into(),
        site: "lab-a".into(),
        workload_id: "vm-3".into(),
        consistency: Consistency::Crash,
        base: None,
    };
    let t = Instant::now();
    let op = runtime.call(&example, &ctx, request.clone()).await?;
    let again = runtime.call(&example, &ctx, request).await?;
    let point = loop {
        match runtime.call(&example, &ctx, Status(op.clone())).await? {
            OperationState::Running(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            OperationState::Succeeded(Outcome::RecoveryPoint(p)) => break p,
            other => anyhow::bail!("snapshot ended as {other:?}"),
        }
    };
    println!(
        "\nsnapshot of vm-3: recovery point {} with {} disk(s) in {:?}; the same idempotency key returned {} again and the site created {} snapshot(s) for it",
        point.id,
        point.disks.len(),
        t.elapsed(),
        again.id,
        site.effects().get("demo-run/step-1").copied().unwrap_or(0)
    );

    println!("\n== Hostile plugins, all at once, while 'example' keeps serving ==");
    let mut hostile: Vec<Arc<Plugin>> = Vec::new();
    for name in HOSTILE {
        let plugin = runtime.load(&publish(name)?).await?;
        runtime.install(plugin.clone());
        hostile.push(plugin);
    }
    let budget = Duration::from_secs(2);
    let calls = hostile.iter().map(|plugin| {
        let runtime = runtime.clone();
        let plugin = plugin.clone();
        let ctx = CallContext::new(vec![grant.clone()], budget);
        tokio::spawn(async move {
            let t = Instant::now();
            let result = runtime.call(&plugin, &ctx, Health("lab-a".into())).await;
            (plugin.name().to_owned(), t.elapsed(), result)
        })
    });
    let calls: Vec<_> = calls.collect();
    let t = Instant::now();
    let mut served = 0;
    while t.elapsed() < budget + Duration::from_millis(300) {
        runtime.call(&example, &ctx, Health("lab-a".into())).await?;
        served += 1;
    }
    for call in calls {
        let (name, took, result) = call.await?;
        let outcome = match result {
            Ok(_) => "NOT CONTAINED".to_owned(),
            Err(e) => e.to_string(),
        };
        println!("  {name:<24} {:>6} ms  {outcome}", took.as_millis());
    }
    println!("  meanwhile 'example' answered {served} health calls");

    let store = store_a_plan(plugins, &example).await?;
    let openstack = runtime.load(&publish("openstack")?).await?;
    let kubevirt = runtime.load(&publish("kubevirt")?).await?;
    let aws = runtime.load(&publish("aws")?).await?;
    round_trip(&store, runtime.clone(), example, site, grant, &disks).await?;
    cross_platform(&store, runtime.clone(), openstack, kubevirt.clone()).await?;
    aws_cross_platform(&store, runtime, aws, kubevirt).await
}

/// A KubeVirt cluster of the lab with the namespace the plans recover into.
async fn dr_cluster() -> Result<rebound_lab::KubeVirtSite> {
    use rebound_lab::{KubeVirtOptions, KubeVirtSite};
    Ok(KubeVirtSite::start(KubeVirtOptions {
        latency: Duration::from_millis(200),
        objects: vec![serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
                                         "metadata": {"name": DR_NAMESPACE}})],
        ..KubeVirtOptions::default()
    })
    .await?)
}

fn cluster_grant(cluster: &rebound_lab::KubeVirtSite) -> Result<SiteGrant> {
    let mut grant = SiteGrant::new("kubevirt")
        .config("endpoint", &cluster.endpoint())
        .config("namespace", DR_NAMESPACE)
        .secret("token", &cluster.token)
        .grant(&cluster.endpoint())
        .map_err(anyhow::Error::msg)?;
    grant.ca_pem = Some(cluster.ca_pem.clone());
    Ok(grant)
}

/// After failover and after reprotect the applications on the cluster
/// write (8, then 4 MiB per VM), so that reprotect and failback have a
/// delta to carry back.
fn cluster_writes(
    cluster: &rebound_lab::KubeVirtSite,
    workflow: rebound_domain::Workflow,
) -> Result<()> {
    let mib = match workflow {
        rebound_domain::Workflow::Failover => 8,
        rebound_domain::Workflow::Reprotect => 4,
        _ => return Ok(()),
    };
    let vms: Vec<String> = cluster
        .list("virtualmachines", DR_NAMESPACE)
        .iter()
        .filter(|vm| vm["status"]["printableStatus"] == "Running")
        .filter_map(|vm| vm["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    for vm in &vms {
        let data = vec![u8::try_from(mib).unwrap_or(1); mib << 20];
        cluster
            .guest_write(DR_NAMESPACE, vm, 0, 256 << 20, &data)
            .map_err(anyhow::Error::msg)?;
    }
    println!(
        "            the applications on KubeVirt write {mib} MiB each ({} VMs)",
        vms.len()
    );
    Ok(())
}

/// A plan of the lab's AWS instances (one region) protected onto a
/// KubeVirt cluster, through the same round trip; skipped, saying how to
/// enable it, when moto is not installed.
async fn aws_cross_platform(
    store: &rebound_store::Store,
    runtime: Arc<Runtime>,
    aws: Arc<Plugin>,
    kubevirt: Arc<Plugin>,
) -> Result<()> {
    use rebound_lab::{AwsOptions, AwsSite};
    let site = match AwsSite::start(AwsOptions {
        regions: vec!["eu-west-1".into()],
        ..AwsOptions::default()
    })
    .await
    {
        Ok(site) => site,
        Err(e) if e.is_missing_moto() => {
            println!("\n== AWS ⇄ KubeVirt round trip skipped: {e} ==");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let cluster = dr_cluster().await?;
    println!(
        "\n== Cross-platform round trip: AWS {} (eu-west-1, moto) ⇄ KubeVirt {} through the engine ==",
        site.endpoint(),
        cluster.endpoint()
    );
    let options = site.options();
    let aws_grant = SiteGrant::new("aws")
        .config("endpoint", &site.endpoint())
        .config("region", "eu-west-1")
        .secret("access_key_id", &options.access_key_id)
        .secret("secret_access_key", &options.secret_access_key)
        .grant(&site.endpoint())
        .map_err(anyhow::Error::msg)?;
    let sites = std::collections::HashMap::from([
        (
            "aws".to_owned(),
            rebound_engine::BoundSite {
                plugin: aws.clone(),
                grant: aws_grant.clone(),
            },
        ),
        (
            "kubevirt".to_owned(),
            rebound_engine::BoundSite {
                plugin: kubevirt,
                grant: cluster_grant(&cluster)?,
            },
        ),
    ]);
    let steps = Arc::new(rebound_engine::PluginSteps::new(
        runtime.clone(),
        store.clone(),
        sites,
    ));
    let found = runtime
        .call(
            &aws,
            &CallContext::new(vec![aws_grant], Duration::from_secs(30)),
            Inventory::all("aws"),
        )
        .await?;
    let instance = |name: &str| {
        found
            .iter()
            .find(|w| w.spec.name == name)
            .map(|w| w.id.clone())
            .with_context(|| format!("the AWS site seeds an instance '{name}'"))
    };
    let plan = rebound_domain::PlanDocument::from_yaml(&format!(
        "name: shop-aws\nsource: aws\ntarget: kubevirt\nworkloads:\n  - id: {db}\n  - id: {web}\n    depends_on: [{db}]\n\
         replication: {{ mode: data_mover, interval: 10m }}\n\
         objectives:\n  failover: {{ rto: 15m, rpo: 15m }}\n  failback: {{ rto: 1h, rpo: 0s }}\n",
        db = instance("db-1")?,
        web = instance("web-1")?,
    ))?;
    steps.check_feasible(&plan).await?;
    store.put_plan(&plan, "demo").await?;
    println!(
        "plan 'shop-aws': db-1 → web-1 (8+2 GiB and 8 GiB EBS volumes) from AWS onto KubeVirt"
    );
    drive(store, "shop-aws", steps, |workflow| {
        cluster_writes(&cluster, workflow)
    })
    .await?;
    let effects = site.effects();
    let appliances = effects.get("ec2 TerminateInstances").copied().unwrap_or(0);
    let repeated = cluster.effects().into_values().filter(|n| *n > 1).count();
    println!(
        "mover appliances launched and released on AWS: {appliances}; KubeVirt requests repeated under one idempotency key: {repeated}"
    );
    Ok(())
}

/// The namespace the KubeVirt site recovers into.
const DR_NAMESPACE: &str = "dr";

/// A plan of the OpenStack simulator's servers (region RegionOne) protected
/// onto a KubeVirt cluster, driven through the same round trip: every disk
/// crosses platforms through the data mover, both ways.
async fn cross_platform(
    store: &rebound_store::Store,
    runtime: Arc<Runtime>,
    openstack: Arc<Plugin>,
    kubevirt: Arc<Plugin>,
) -> Result<()> {
    use rebound_lab::openstack::Latencies;
    use rebound_lab::{OpenStackOptions, OpenStackSite};
    let ms = Duration::from_millis;
    let cloud = OpenStackSite::start(OpenStackOptions {
        latency: Latencies {
            server_build: ms(400),
            volume: ms(200),
            snapshot: ms(200),
            backup: ms(300),
            image: ms(200),
            dns: ms(100),
            load_balancer: ms(100),
        },
        ..OpenStackOptions::default()
    })
    .await?;
    let cluster = dr_cluster().await?;
    println!(
        "\n== Cross-platform round trip: OpenStack {} (RegionOne) ⇄ KubeVirt {} through the engine ==",
        cloud.endpoint(),
        cluster.endpoint()
    );
    let options = cloud.options();
    let openstack_grant = SiteGrant::new("openstack")
        .config("auth_url", &cloud.auth_url())
        .config("region", "RegionOne")
        .config("user", &options.user)
        .config("project", &options.project)
        .secret("password", &options.password)
        .secret("mover_key", &options.mover_key)
        .grant(&cloud.endpoint())
        .map_err(anyhow::Error::msg)?;
    let kubevirt_grant = cluster_grant(&cluster)?;
    let sites = std::collections::HashMap::from([
        (
            "openstack".to_owned(),
            rebound_engine::BoundSite {
                plugin: openstack,
                grant: openstack_grant,
            },
        ),
        (
            "kubevirt".to_owned(),
            rebound_engine::BoundSite {
                plugin: kubevirt,
                grant: kubevirt_grant,
            },
        ),
    ]);
    let steps = Arc::new(rebound_engine::PluginSteps::new(
        runtime,
        store.clone(),
        sites,
    ));
    let servers = cloud.resources("RegionOne", "servers");
    let server = |name: &str| {
        servers
            .iter()
            .find(|s| s["name"] == name)
            .and_then(|s| s["id"].as_str().map(str::to_owned))
            .with_context(|| format!("the OpenStack simulator seeds a server '{name}'"))
    };
    let plan = rebound_domain::PlanDocument::from_yaml(&format!(
        "name: shop-x\nsource: openstack\ntarget: kubevirt\nworkloads:\n  - id: {db}\n  - id: {web}\n    depends_on: [{db}]\n\
         replication: {{ mode: data_mover, interval: 5m }}\n\
         objectives:\n  failover: {{ rto: 15m, rpo: 10m }}\n  failback: {{ rto: 1h, rpo: 0s }}\n\
         network_mapping:\n  - {{ source: private, target: dr-net }}\n",
        db = server("db-1")?,
        web = server("web-1")?,
    ))?;
    steps.check_feasible(&plan).await?;
    store.put_plan(&plan, "demo").await?;
    println!("plan 'shop-x': db-1 → web-1 from OpenStack onto KubeVirt, network private → dr-net");
    drive(store, "shop-x", steps, |workflow| {
        cluster_writes(&cluster, workflow)
    })
    .await?;
    let active = cloud
        .resources("RegionOne", "servers")
        .iter()
        .filter(|s| s["status"] == "ACTIVE" && s["metadata"]["rebound:mover_mode"].is_null())
        .count();
    let running = cluster
        .list("virtualmachines", DR_NAMESPACE)
        .iter()
        .filter(|vm| vm["status"]["printableStatus"] == "Running")
        .count();
    let repeated = cloud
        .effects()
        .into_values()
        .chain(cluster.effects().into_values().map(|n| n as usize))
        .filter(|n| *n > 1)
        .count();
    println!(
        "running now: OpenStack {active} servers, KubeVirt {running} VMs; mutating requests repeated under one idempotency key: {repeated}"
    );
    Ok(())
}

/// Replication, failover, reprotect and failback of the plan through the
/// engine and the example plugin, between lab-a and a second site lab-b.
async fn round_trip(
    store: &rebound_store::Store,
    runtime: Arc<Runtime>,
    example: Arc<Plugin>,
    a: ExampleSite,
    grant_a: SiteGrant,
    disks: &std::path::Path,
) -> Result<()> {
    let b = ExampleSite::start(ExampleOptions {
        snapshot_latency: Duration::from_millis(300),
        vms: Vec::new(),
        disk_dir: Some(disks.join("lab-b")),
        guests: true,
        ..ExampleOptions::default()
    })
    .await?;
    println!(
        "\n== Round trip: lab-a {} ⇄ lab-b {} through the engine ==",
        a.endpoint(),
        b.endpoint()
    );
    let grant_b = SiteGrant::new("lab-b")
        .config("endpoint", &b.endpoint())
        .secret("token", &b.token)
        .grant(&b.endpoint())
        .map_err(anyhow::Error::msg)?;
    let bound = |grant: SiteGrant| rebound_engine::BoundSite {
        plugin: example.clone(),
        grant,
    };
    let sites = std::collections::HashMap::from([
        ("lab-a".to_owned(), bound(grant_a)),
        ("lab-b".to_owned(), bound(grant_b)),
    ]);
    let steps = Arc::new(rebound_engine::PluginSteps::new(
        runtime,
        store.clone(),
        sites,
    ));
    use rebound_domain::Workflow::{Failover, Reprotect};
    drive(store, "shop", steps, |workflow| {
        // The applications keep writing where they run now; the next sync
        // moves what they wrote, and nothing else.
        let Some(mib) = (match workflow {
            Failover => Some(8),
            Reprotect => Some(4),
            _ => None,
        }) else {
            return Ok(());
        };
        let serving: Vec<String> = b
            .vms()
            .iter()
            .filter(|vm| vm["power"] == "running")
            .filter_map(|vm| vm["id"].as_str().map(str::to_owned))
            .collect();
        for vm in &serving {
            let data = vec![u8::try_from(mib).unwrap_or(1); mib << 20];
            b.write_disk(vm, 0, 1 << 30, &data)
                .map_err(anyhow::Error::msg)?;
        }
        println!(
            "            the applications on lab-b write {mib} MiB each ({} VMs)",
            serving.len()
        );
        Ok(())
    })
    .await?;
    let serving = |site: &ExampleSite| {
        site.vms()
            .iter()
            .filter(|vm| vm["power"] == "running")
            .count()
    };
    let repeated = a
        .effects()
        .into_values()
        .chain(b.effects().into_values())
        .filter(|n| *n > 1)
        .count();
    println!(
        "running VMs now: lab-a {}, lab-b {}; route shop/www → {:?}; mutating requests repeated under one idempotency key: {repeated}",
        serving(&a),
        serving(&b),
        a.route("shop/www"),
    );
    Ok(())
}

/// Replication, a round-trip drill (when the plan asks for them),
/// failover, reprotect and failback of `plan` through the engine, one run
/// after the other, printing each run's steps, outcome,
/// data mover figures, and for failover and failback the RTO forecast,
/// measured RTO and achieved RPO against the phase's objectives.
/// `after(workflow)` runs when a run finished (the applications write).
async fn drive(
    store: &rebound_store::Store,
    plan: &str,
    steps: Arc<rebound_engine::PluginSteps>,
    mut after: impl FnMut(rebound_domain::Workflow) -> Result<()>,
) -> Result<()> {
    use rebound_domain::Workflow::{Drill, Failback, Failover, Replication, Reprotect};
    let executor = rebound_engine::Executor::new(
        store.clone(),
        steps,
        rebound_engine::ExecutorConfig {
            poll_interval: Duration::from_millis(50),
            ..rebound_engine::ExecutorConfig::new("demo")
        },
    );
    // A plan with round-trip drills rehearses both ways before the real
    // failover.
    let mut workflows = vec![Replication, Failover, Reprotect, Failback];
    if store.plan(plan).await?.document.drills.round_trip {
        workflows.insert(1, Drill);
    }
    for workflow in workflows {
        let forecast = rebound_engine::dry_run(store, plan, workflow, 64).await?;
        let started = rebound_engine::trigger(store, plan, workflow, None, "demo").await?;
        let planned = store.steps(&started.id).await?;
        if planned.iter().any(|s| s.input["action"] == "approval") {
            // The plan asks an operator to approve a failback; the demo
            // approves it as it triggers it.
            store.approve(&started.id, "demo-operator").await?;
        }
        let (run, outcome) = executor
            .work_once()
            .await?
            .context("the run just started")?;
        let report = rebound_engine::report(store, &run.id).await?;
        let state = store.plan(plan).await?.lifecycle;
        println!(
            "{:<11} {:>2} steps, {outcome:?} → plan {} (primary {}, epoch {})",
            workflow.to_string(),
            planned.len(),
            state.state,
            state.primary,
            state.epoch
        );
        let done = store.steps(&run.id).await?;
        let probes: Vec<&str> = done
            .iter()
            .filter(|s| s.input["action"] == "gate")
            .filter_map(|s| s.output.as_ref()?["probe"].as_str())
            .filter(|p| *p != "powered on")
            .collect();
        if !probes.is_empty() {
            println!("            health gates: {}", probes.join("; "));
        }
        let transfers: Vec<serde_json::Value> = done
            .into_iter()
            .filter(|s| s.input["action"] == "transfer")
            .filter_map(|s| s.output)
            .collect();
        if !transfers.is_empty() {
            let sum =
                |field: &str| -> u64 { transfers.iter().filter_map(|t| t[field].as_u64()).sum() };
            println!(
                "            data mover: {} disk copies ({} workloads), {:.1} MiB moved of {:.1} GiB, verified block by block",
                transfers
                    .iter()
                    .map(|t| t["volumes"].as_array().map_or(0, Vec::len))
                    .sum::<usize>(),
                transfers.len(),
                sum("bytes_moved") as f64 / f64::from(1 << 20),
                sum("bytes_total") as f64 / f64::from(1 << 30),
            );
        }
        after(workflow)?;
        if matches!(workflow, Failover | Failback) {
            println!(
                "            RTO: forecast {}, measured {} (objective {}, {}); RPO achieved {} (objective {}, {})",
                ms(Some(forecast.rto_ms)),
                ms(report.measured_rto_ms),
                ms(Some(report.objective_rto_ms)),
                verdict(report.rto_met),
                ms(report.achieved_rpo_ms),
                ms(Some(report.objective_rpo_ms)),
                verdict(report.rpo_met),
            );
        }
        if let Some(back) = report.return_leg.as_ref().filter(|_| workflow == Drill) {
            println!(
                "            round trip: there {} ({} RTO {}, {}), way back {} ({} RTO {}, {}); sandboxes and copies removed",
                ms(report.measured_rto_ms),
                report.phase,
                ms(Some(report.objective_rto_ms)),
                verdict(report.rto_met),
                ms(back.rto_ms),
                back.phase,
                ms(Some(back.objective_rto_ms)),
                verdict(back.rto_met),
            );
        }
        if outcome != rebound_engine::Outcome::Succeeded {
            anyhow::bail!("{workflow} of plan '{plan}' ended {outcome:?}");
        }
    }
    Ok(())
}

/// Removes the demo's disk folder when the demo ends.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ms(value: Option<i64>) -> String {
    value.map_or_else(|| "—".to_owned(), |v| format!("{:.2}s", v as f64 / 1000.0))
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "n/a",
    }
}

/// The embedded SQLite store with a protection plan over the lab site's
/// workloads, its per-phase objectives, recovery tiers and lifecycle.
async fn store_a_plan(plugins: &Path, example: &Plugin) -> Result<rebound_store::Store> {
    let path = plugins.join("../demo/rebound.db");
    if let Some(dir) = path.parent() {
        // Each demo starts from a fresh store.
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
    }
    let url = format!("sqlite://{}", path.display());
    let store = rebound_store::Store::connect(&url).await?;
    store.ready().await?;
    println!("\n== Store: {url} (created on first start, migrated) ==");
    let plan = rebound_domain::PlanDocument::from_yaml(DEMO_PLAN)?;
    plan.check_feasible(rebound_domain::Span::secs(u64::from(
        example.info.snapshot_granularity_secs,
    )))?;
    let record = store.put_plan(&plan, "demo").await?;
    let o = &record.document.objectives;
    println!(
        "plan 'shop' stored at revision {}: {} → {}, lifecycle {} (fencing epoch {})",
        record.revision,
        record.lifecycle.primary,
        record.lifecycle.standby,
        record.lifecycle.state,
        record.lifecycle.epoch
    );
    println!(
        "objectives: failover RTO {} / RPO {}, failback RTO {} / RPO {}",
        o.failover.rto, o.failover.rpo, o.failback.rto, o.failback.rpo
    );
    let tiers = plan
        .tiers()
        .map_err(|cycle| anyhow::anyhow!("cycle: {}", cycle.join(" → ")))?;
    println!(
        "recovery order: {}",
        tiers
            .iter()
            .map(|t| t.join(", "))
            .collect::<Vec<_>>()
            .join("  →  ")
    );
    let mut bad = plan.clone();
    bad.objectives.failover.rpo = rebound_domain::Span::secs(0);
    if let Err(e) = store.put_plan(&bad, "demo").await {
        println!("a plan promising a 0s failover RPO is refused: {e}");
    }
    Ok(store)
}

const DEMO_PLAN: &str = "\
name: shop
source: lab-a
target: lab-b
workloads:
  - id: vm-3
    health_gate: { check: tcp, port: 5432, timeout: 1m }
  - id: vm-2
    depends_on: [vm-3]
    health_gate: { check: http, port: 8080, path: /healthz, expect_status: 200, timeout: 1m }
  - id: vm-1
    depends_on: [vm-2]
replication: { mode: data_mover, interval: 5m }
objectives:
  failover: { rto: 15m, rpo: 10m }
  failback: { rto: 1h, rpo: 0s }
network_mapping:
  - { source: prod-net, target: dr-net }
redirect:
  target: { kind: route, route: shop/www }
  canary: [10, 50, 100]
drills: { round_trip: true }
";

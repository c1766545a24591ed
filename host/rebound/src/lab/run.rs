//! `rebound lab run`: the lab's process. It starts the simulated sites
//! (`rebound_lab`) on loopback, each with its own port and its own state
//! folder under `DIR/sites/`, seeds them with workloads to protect, writes
//! the lab's state and sites file, and serves until SIGTERM or Ctrl-C, when
//! it stops the sites and removes what it wrote (the log stays). It holds
//! an OS lock on `DIR/lab.lock` while it runs: one lab per folder.
//! `rebound lab up` runs it in the background; it also runs in the
//! foreground, e.g. in a container.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use rebound_lab::kubevirt::{blank_data_volume, vm_object};
use rebound_lab::{
    AwsOptions, AwsSite, ExampleOptions, ExampleSite, KubeVirtOptions, KubeVirtSite, OVirtOptions,
    OVirtSite, OpenStackOptions, OpenStackSite,
};
use serde_json::{Value, json};

use super::state::{self, Kind, LabSite, LabState};

/// The sites, kept alive while the lab runs.
#[derive(Default)]
struct Running {
    example: Vec<ExampleSite>,
    openstack: Vec<OpenStackSite>,
    kubevirt: Vec<KubeVirtSite>,
    ovirt: Vec<OVirtSite>,
    aws: Vec<AwsSite>,
}

/// Fixed ports from a base, or free ones.
struct Ports {
    next: u16,
}

impl Ports {
    fn take(&mut self) -> Result<u16> {
        if self.next == 0 {
            return Ok(0);
        }
        let port = self.next;
        self.next = self
            .next
            .checked_add(1)
            .ok_or_else(|| anyhow!("--port {port} leaves no room for the lab's other ports"))?;
        Ok(port)
    }
}

/// Hold `dir`'s lock for as long as the lab runs, so a second lab on the
/// same folder — even one started at the same moment, before the first has
/// written its state — is refused; the OS releases it with the process,
/// however that ends.
fn lock(dir: &Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(state::LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another lab is starting or running in {}; stop it with `rebound lab down --dir {}`, or use another --dir",
            dir.display(),
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

pub async fn run(dir: &Path, kinds: &[Kind], base_port: u16) -> Result<()> {
    let _lock = lock(dir)?;
    if let Some(state) = LabState::read(dir)?
        && super::running(state.pid)
    {
        bail!(
            "a lab is already running in {} (pid {}); stop it with `rebound lab down --dir {}`",
            dir.display(),
            state.pid,
            dir.display()
        );
    }
    // Sites start fresh: a previous lab's disks are orphans.
    state::clear(dir)?;
    let mut ports = Ports { next: base_port };
    let mut running = Running::default();
    let mut sites = Vec::new();
    for kind in kinds {
        let started = match kind {
            Kind::Example => example(dir, &mut ports, &mut running).await,
            Kind::Openstack => openstack(dir, &mut ports, &mut running).await,
            Kind::Kubevirt => kubevirt(dir, &mut ports, &mut running).await,
            Kind::Ovirt => ovirt(dir, &mut ports, &mut running).await,
            Kind::Aws => aws(dir, &mut ports, &mut running).await,
        };
        match started {
            Ok(mut more) => sites.append(&mut more),
            Err(e) => {
                drop(running);
                state::clear(dir)?;
                return Err(e);
            }
        }
    }
    let state = LabState {
        pid: std::process::id(),
        dir: dir.to_owned(),
        kinds: kinds.to_vec(),
        sites_file: dir.join(state::SITES_FILE),
        log_file: dir.join(state::LOG_FILE),
        sites,
    };
    state.write()?;
    eprintln!(
        "rebound lab: {} sites up in {}: {}",
        state.sites.len(),
        dir.display(),
        state
            .sites
            .iter()
            .map(|s| format!("{} {}", s.name, s.endpoint))
            .collect::<Vec<_>>()
            .join(", ")
    );
    wait_for_stop().await?;
    eprintln!("rebound lab: stopping");
    drop(running);
    state::clear(dir)?;
    eprintln!("rebound lab: stopped");
    Ok(())
}

async fn wait_for_stop() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// Where a site keeps its state.
fn site_dir(dir: &Path, name: &str) -> PathBuf {
    dir.join(state::SITES_DIR).join(name)
}

fn secret_file(dir: &Path, site: &str, key: &str) -> PathBuf {
    dir.join(state::SECRETS_DIR).join(format!("{site}.{key}"))
}

fn started<T>(site: &str, result: std::io::Result<T>) -> Result<T> {
    result.with_context(|| format!("starting the lab site '{site}'"))
}

/// `example-a` with the three default VMs, `example-b` empty; both keep
/// real (sparse) disk data, so the data mover has something to move.
async fn example(dir: &Path, ports: &mut Ports, running: &mut Running) -> Result<Vec<LabSite>> {
    let mut sites = Vec::new();
    for (name, vms) in [
        ("example-a", rebound_lab::example::default_vms()),
        ("example-b", Vec::new()),
    ] {
        let state_dir = site_dir(dir, name);
        let workloads = vms
            .iter()
            .filter_map(|vm| vm["name"].as_str().map(str::to_owned))
            .collect();
        let site = started(
            name,
            ExampleSite::start(ExampleOptions {
                vms,
                disk_dir: Some(state_dir.join("disks")),
                port: ports.take()?,
                guests: true,
                ..ExampleOptions::default()
            })
            .await,
        )?;
        let endpoint = site.endpoint();
        sites.push(LabSite {
            name: name.to_owned(),
            plugin: "example".to_owned(),
            endpoint: endpoint.clone(),
            config: BTreeMap::from([("endpoint".to_owned(), endpoint.clone())]),
            secrets: BTreeMap::from([("token".to_owned(), site.token.clone())]),
            secret_files: BTreeMap::from([("token".to_owned(), secret_file(dir, name, "token"))]),
            egress: vec![endpoint],
            ca_file: None,
            guest_writes: site.guest_writes_url(),
            data_url: None,
            workloads,
            state_dir,
        });
        running.example.push(site);
    }
    Ok(sites)
}

/// One cloud, its regions as two sites: `openstack-east` (RegionOne, the
/// simulator's seeded servers `web-1` and `db-1`) and `openstack-west`
/// (RegionTwo, networks and a spare floating IP).
async fn openstack(dir: &Path, ports: &mut Ports, running: &mut Running) -> Result<Vec<LabSite>> {
    let state_dir = site_dir(dir, "openstack");
    let site = started(
        "openstack",
        OpenStackSite::start(OpenStackOptions {
            regions: vec!["RegionOne".into(), "RegionTwo".into()],
            state_dir: Some(state_dir.clone()),
            port: ports.take()?,
            ..OpenStackOptions::default()
        })
        .await,
    )?;
    let options = site.options();
    let mut sites = Vec::new();
    for (name, region) in [
        ("openstack-east", "RegionOne"),
        ("openstack-west", "RegionTwo"),
    ] {
        let mut workloads: Vec<String> = site
            .resources(region, "servers")
            .iter()
            .filter_map(|s| s["name"].as_str().map(str::to_owned))
            .collect();
        workloads.sort();
        sites.push(LabSite {
            name: name.to_owned(),
            plugin: "openstack".to_owned(),
            endpoint: site.auth_url(),
            config: BTreeMap::from([
                ("auth_url".to_owned(), site.auth_url()),
                ("region".to_owned(), region.to_owned()),
                ("user".to_owned(), options.user.clone()),
                ("project".to_owned(), options.project.clone()),
                ("user_domain".to_owned(), options.domain.clone()),
                ("project_domain".to_owned(), options.domain.clone()),
                // The simulator answers at once; a hung request must fail
                // well within a call's deadline (the plugin's default is
                // meant for real clouds).
                ("timeout_ms".to_owned(), "5000".to_owned()),
            ]),
            secrets: BTreeMap::from([
                ("password".to_owned(), options.password.clone()),
                ("mover_key".to_owned(), options.mover_key.clone()),
            ]),
            secret_files: BTreeMap::from([
                ("password".to_owned(), secret_file(dir, name, "password")),
                ("mover_key".to_owned(), secret_file(dir, name, "mover_key")),
            ]),
            egress: vec![site.endpoint()],
            ca_file: None,
            guest_writes: site.guest_writes_url(),
            data_url: None,
            workloads,
            state_dir: state_dir.clone(),
        });
    }
    running.openstack.push(site);
    Ok(sites)
}

/// `ovirt-a`, an engine with VMs `web-1` and `db-1` running on
/// `ovirtmgmt`, and `ovirt-b`, an engine with none; each on its own port,
/// over HTTPS with its own CA (`ca.pem` in its state folder), the user
/// `admin@internal` with a made-up password.
async fn ovirt(dir: &Path, ports: &mut Ports, running: &mut Running) -> Result<Vec<LabSite>> {
    let mut sites = Vec::new();
    for (name, seed) in [("ovirt-a", true), ("ovirt-b", false)] {
        let state_dir = site_dir(dir, name);
        let site = started(
            name,
            OVirtSite::start(OVirtOptions {
                state_dir: Some(state_dir.clone()),
                // Seeded disks of 256 MiB per "GiB", as the other sites.
                gib: 256 << 20,
                seed,
                port: ports.take()?,
                ..OVirtOptions::default()
            })
            .await,
        )?;
        let ca_file = state_dir.join("ca.pem");
        std::fs::write(&ca_file, site.ca_pem())
            .with_context(|| format!("writing {}", ca_file.display()))?;
        let options = site.options();
        let mut workloads: Vec<String> = site
            .vm_ids()
            .iter()
            .filter_map(|id| site.vm(id).map(|(name, _, _)| name))
            .collect();
        workloads.sort();
        sites.push(LabSite {
            name: name.to_owned(),
            plugin: "ovirt".to_owned(),
            endpoint: site.api_url(),
            config: BTreeMap::from([
                ("endpoint".to_owned(), site.endpoint()),
                ("user".to_owned(), options.user.clone()),
                ("timeout_ms".to_owned(), "5000".to_owned()),
            ]),
            secrets: BTreeMap::from([("password".to_owned(), options.password.clone())]),
            secret_files: BTreeMap::from([(
                "password".to_owned(),
                secret_file(dir, name, "password"),
            )]),
            egress: vec![site.endpoint()],
            ca_file: Some(ca_file),
            guest_writes: site.guest_writes_url(),
            // imageio answers on the engine's own port in the lab.
            data_url: Some(format!("{}/images", site.endpoint())),
            workloads,
            state_dir,
        });
        running.ovirt.push(site);
    }
    Ok(sites)
}

const KUBEVIRT_NAMESPACE: &str = "prod";
/// The VolumeReplicationClass of the storage the two clusters mirror.
const KUBEVIRT_REPLICATION_CLASS: &str = "rbd-mirror";

/// The namespace `prod` and its Route `www` (to the Service `web-1`), and
/// the VolumeReplicationClass, on both clusters.
fn kubevirt_namespace() -> Vec<Value> {
    vec![
        json!({"apiVersion": "replication.storage.openshift.io/v1alpha1",
               "kind": "VolumeReplicationClass", "metadata": {"name": KUBEVIRT_REPLICATION_CLASS},
               "spec": {"provisioner": "openshift-storage.rbd.csi.ceph.com",
                        "parameters": {"mirroringMode": "snapshot", "schedulingInterval": "5m"}}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": KUBEVIRT_NAMESPACE}}),
        json!({"apiVersion": "route.openshift.io/v1", "kind": "Route",
               "metadata": {"name": "www", "namespace": KUBEVIRT_NAMESPACE},
               "spec": {"host": "www.example.org",
                        "to": {"kind": "Service", "name": "web-1", "weight": 100}}}),
    ]
}

/// `kubevirt-a` with three running VMs (`web-1`, `app-1`, `db-1`, each on a
/// 256 MiB root disk whose first bytes name it), `kubevirt-b` with the
/// namespace ready to receive them; their storage mirrors volumes between
/// them (VolumeReplication, for native replication).
async fn kubevirt(dir: &Path, ports: &mut Ports, running: &mut Running) -> Result<Vec<LabSite>> {
    let vms = [("web-1", "web"), ("app-1", "app"), ("db-1", "db")];
    let mut primary = kubevirt_namespace();
    for (vm, tier) in vms {
        primary.push(blank_data_volume(
            KUBEVIRT_NAMESPACE,
            &format!("{vm}-root"),
            "256Mi",
        ));
        primary.push(vm_object(
            KUBEVIRT_NAMESPACE,
            vm,
            json!({"app": "shop", "tier": tier}),
            "prod-net",
        ));
    }
    let mut sites = Vec::new();
    for (name, objects, workloads) in [
        (
            "kubevirt-a",
            primary,
            vms.iter().map(|(vm, _)| (*vm).to_owned()).collect(),
        ),
        ("kubevirt-b", kubevirt_namespace(), Vec::new()),
    ] {
        let state_dir = site_dir(dir, name);
        let site = started(
            name,
            KubeVirtSite::start(KubeVirtOptions {
                objects,
                disk_dir: Some(state_dir.join("disks")),
                port: ports.take()?,
                data_port: ports.take()?,
                ..KubeVirtOptions::default()
            })
            .await,
        )?;
        let ca_file = state_dir.join("ca.pem");
        std::fs::write(&ca_file, &site.ca_pem)
            .with_context(|| format!("writing {}", ca_file.display()))?;
        let endpoint = site.endpoint();
        sites.push(LabSite {
            name: name.to_owned(),
            plugin: "kubevirt".to_owned(),
            endpoint: endpoint.clone(),
            config: BTreeMap::from([
                ("endpoint".to_owned(), endpoint.clone()),
                ("namespace".to_owned(), KUBEVIRT_NAMESPACE.to_owned()),
                (
                    "volume_replication_class".to_owned(),
                    KUBEVIRT_REPLICATION_CLASS.to_owned(),
                ),
            ]),
            secrets: BTreeMap::from([("token".to_owned(), site.token.clone())]),
            secret_files: BTreeMap::from([("token".to_owned(), secret_file(dir, name, "token"))]),
            egress: vec![endpoint],
            ca_file: Some(ca_file),
            guest_writes: site.guest_writes_url(),
            data_url: Some(site.data_url()),
            workloads,
            state_dir,
        });
        running.kubevirt.push(site);
    }
    if let [a, b] = running.kubevirt.as_slice() {
        a.pair(b);
    }
    Ok(sites)
}

/// The AWS site (moto behind the lab's front), its first two regions as
/// `aws-east` (the seeded instances `web-1`, `db-1`) and `aws-west`
/// (`batch-1`); both share the front's endpoint and access key.
async fn aws(dir: &Path, ports: &mut Ports, running: &mut Running) -> Result<Vec<LabSite>> {
    let state_dir = site_dir(dir, "aws");
    let site = AwsSite::start(AwsOptions {
        state_dir: Some(state_dir.clone()),
        port: ports.take()?,
        ..AwsOptions::default()
    })
    .await
    .context("starting the lab site 'aws'")?;
    let options = site.options();
    let endpoint = site.endpoint();
    let mut sites = Vec::new();
    for (name, region, workloads) in [
        ("aws-east", &site.regions()[0], vec!["db-1", "web-1"]),
        ("aws-west", &site.regions()[1], vec!["batch-1"]),
    ] {
        sites.push(LabSite {
            name: name.to_owned(),
            plugin: "aws".to_owned(),
            endpoint: endpoint.clone(),
            config: BTreeMap::from([
                ("endpoint".to_owned(), endpoint.clone()),
                ("region".to_owned(), region.clone()),
            ]),
            secrets: BTreeMap::from([
                ("access_key_id".to_owned(), options.access_key_id.clone()),
                (
                    "secret_access_key".to_owned(),
                    options.secret_access_key.clone(),
                ),
            ]),
            secret_files: BTreeMap::from([
                (
                    "access_key_id".to_owned(),
                    secret_file(dir, name, "access_key_id"),
                ),
                (
                    "secret_access_key".to_owned(),
                    secret_file(dir, name, "secret_access_key"),
                ),
            ]),
            egress: vec![endpoint.clone()],
            ca_file: None,
            guest_writes: site.guest_writes_url(),
            data_url: None,
            workloads: workloads.into_iter().map(str::to_owned).collect(),
            state_dir: state_dir.clone(),
        });
    }
    running.aws.push(site);
    Ok(sites)
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_lab_per_folder_even_when_two_start_at_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let held = super::lock(dir.path()).expect("the first lab locks");
        let err = super::lock(dir.path()).expect_err("the second is refused");
        assert!(
            err.to_string()
                .contains("another lab is starting or running"),
            "{err}"
        );
        drop(held);
        super::lock(dir.path()).expect("free again once the first is gone");
    }
}

//! The software inside the example site's VMs, as far as a health gate sees
//! it. With [`super::ExampleOptions::guests`] the site gives its VMs
//! loopback addresses of a subnet of its own (`127.X.Y.0/24`, X and Y
//! random per site): the seeded VMs' addresses are moved into it (keeping
//! their last octet) and a VM created without kept addresses gets the next
//! free one, as DHCP would hand out. While a VM runs — built, started, not
//! fenced, its site not down — every port its [`SERVICES_LABEL`] lists
//! (`"5432,8080"`) accepts TCP connections and answers HTTP requests on any
//! path with 200, or with the status a test set by VM name and port
//! ([`super::ExampleSite::set_service_status`]). A stopped or fenced VM's
//! ports close: its guest goes down with it. Two VMs holding the same
//! address (a kept address whose old owner still runs) conflict as on a
//! real network: the second does not answer until the first is gone.
//!
//! Linux routes all of `127.0.0.0/8` to the loopback interface, so nothing
//! needs configuring; the ports are bound on those addresses only.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Weak;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;

use super::{Inner, Site};

/// The VM label listing the TCP ports the VM's guest serves, comma separated.
pub const SERVICES_LABEL: &str = "lab.services";

/// How often the site brings its guests' ports in line with its VMs.
const RECONCILE: Duration = Duration::from_millis(25);

/// The subnet of a site's guests: `127.X.Y.0/24`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Subnet([u8; 2]);

impl Subnet {
    pub(super) fn random() -> Self {
        // X from 100 keeps clear of 127.0.0.1 and of low subnets people use.
        use rand::Rng;
        let mut rng = rand::thread_rng();
        Self([rng.gen_range(100..=254), rng.gen_range(1..=254)])
    }

    pub(super) fn address(self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, self.0[0], self.0[1], host)
    }

    /// The same host number as `ip` (an address from a seed) in this subnet.
    pub(super) fn adopt(self, ip: &str) -> Option<String> {
        let ip: Ipv4Addr = ip.parse().ok()?;
        Some(self.address(ip.octets()[3]).to_string())
    }
}

/// The ports a VM's guest serves now, by address: none unless it runs.
fn wanted(site: &Site) -> HashMap<SocketAddr, String> {
    let inner = site.inner();
    let mut wanted = HashMap::new();
    if inner.faults.down {
        return wanted;
    }
    let now = Instant::now();
    for vm in inner.vms.values() {
        if !vm.running || vm.fenced || now < vm.ready_at {
            continue;
        }
        let name = vm.doc["name"].as_str().unwrap_or_default().to_owned();
        let ports = vm.doc["labels"][SERVICES_LABEL]
            .as_str()
            .unwrap_or_default();
        let ports = ports
            .split(',')
            .filter_map(|p| p.trim().parse::<u16>().ok());
        let ips: Vec<Ipv4Addr> = vm.doc["nics"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|n| n["ips"].as_array().cloned().unwrap_or_default())
            .filter_map(|ip| ip.as_str().and_then(|ip| ip.parse().ok()))
            .filter(Ipv4Addr::is_loopback)
            .collect();
        for port in ports {
            for ip in &ips {
                wanted
                    .entry(SocketAddr::from((*ip, port)))
                    .or_insert_with(|| name.clone());
            }
        }
    }
    wanted
}

/// One open port of a guest; closes when dropped.
struct Port {
    vm: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Keep the guests' ports in line with the site's VMs until the site is
/// dropped.
pub(super) fn spawn(site: Weak<Site>) {
    tokio::spawn(async move {
        let mut open: HashMap<SocketAddr, Port> = HashMap::new();
        loop {
            let Some(strong) = site.upgrade() else { return };
            let wanted = wanted(&strong);
            drop(strong);
            open.retain(|addr, port| wanted.get(addr) == Some(&port.vm));
            for (addr, vm) in wanted {
                if open.contains_key(&addr) {
                    continue;
                }
                // Taken (by a VM of another site holding the same kept
                // address): try again on the next round.
                let Ok(listener) = tokio::net::TcpListener::bind(addr).await else {
                    continue;
                };
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let app = Router::new().fallback(answer).with_state((
                    site.clone(),
                    vm.clone(),
                    addr.port(),
                ));
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await;
                });
                open.insert(addr, Port { vm, _stop: stop });
            }
            tokio::time::sleep(RECONCILE).await;
        }
    });
}

type Guest = (Weak<Site>, String, u16);

async fn answer(State((site, vm, port)): State<Guest>) -> (StatusCode, String) {
    let status = site
        .upgrade()
        .and_then(|s| s.inner().service_status.get(&(vm.clone(), port)).copied())
        .unwrap_or(StatusCode::OK);
    (status, format!("{vm}:{port} {}\n", status.as_u16()))
}

/// Addresses for a new VM's NICs that kept none: the next free host
/// numbers of the site's subnet.
pub(super) fn assign(inner: &mut Inner, subnet: Subnet, nics: &mut [Value]) {
    for nic in nics {
        let empty = nic["ips"].as_array().is_none_or(Vec::is_empty);
        if empty {
            // Hosts 101..=254; after that the subnet starts over.
            inner.next_host = if inner.next_host < 101 || inner.next_host == 254 {
                101
            } else {
                inner.next_host + 1
            };
            nic["ips"] = serde_json::json!([subnet.address(inner.next_host).to_string()]);
        }
    }
}

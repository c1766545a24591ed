//! The lab's oVirt engine as the engine's oVirt tests start it, and the
//! grant an operator would give its site.

// Each test crate that includes this uses part of it.
#![allow(dead_code)]

use std::time::Duration;

use rebound_lab::ovirt::Latencies;
use rebound_lab::{OVirtOptions, OVirtSite};
use rebound_runtime::SiteGrant;

/// An engine whose disks are `gib` bytes per simulated GiB, 30–40 ms per
/// operation.
pub async fn site(gib: u64) -> OVirtSite {
    let ms = Duration::from_millis;
    OVirtSite::start(OVirtOptions {
        gib,
        latency: Latencies {
            vm_power: ms(40),
            snapshot: ms(30),
            backup: ms(30),
            transfer: ms(30),
            clone_disks: ms(30),
        },
        ..OVirtOptions::default()
    })
    .await
    .expect("oVirt simulator")
}

/// Site `name`: its endpoint, user, password and CA.
pub fn grant(site: &OVirtSite, name: &str) -> SiteGrant {
    let options = site.options();
    SiteGrant::new(name)
        .config("endpoint", &site.endpoint())
        .config("user", &options.user)
        .secret("password", &options.password)
        .grant(&site.endpoint())
        .expect("grant")
        .ca(site.ca_pem())
}

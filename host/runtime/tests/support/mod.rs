//! Shared helpers of the runtime's integration tests: finding the built
//! plugins, packaging them, and a site grant for the lab's example site.
#![allow(dead_code)]

use std::time::Duration;

use rebound_lab::ExampleSite;
use rebound_runtime::{CallContext, SiteGrant};

pub use rebound_runtime::testing::*;

/// The grant an operator would give the example site: its endpoint only.
pub fn grant(site: &ExampleSite, name: &str) -> SiteGrant {
    let mut grant = SiteGrant::new(name)
        .config("endpoint", &site.endpoint())
        .secret("token", &site.token)
        .grant(&site.endpoint())
        .expect("grant");
    grant.ca_pem = site.ca_pem.clone();
    grant
}

pub fn ctx(sites: Vec<SiteGrant>) -> CallContext {
    CallContext::new(sites, Duration::from_secs(20))
}

pub async fn example_site() -> ExampleSite {
    ExampleSite::start(Default::default())
        .await
        .expect("example site")
}

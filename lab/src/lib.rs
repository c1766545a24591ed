//! The lab: simulated sites on loopback, so the demo and the tests exercise
//! real plugins over real HTTP without a cloud. Today it holds the example
//! platform's site, a KubeVirt cluster and an OpenStack cloud, their disks
//! real sparse files ([`disk`]); the oVirt simulator joins them.
//! `lab/README.md` says what the OpenStack simulator serves.
#![deny(rust_2018_idioms)]

pub mod disk;
pub mod example;
pub mod faults;
pub mod kubevirt;
pub mod openstack;
pub mod tls;

pub use example::{ExampleOptions, ExampleSite};
pub use faults::Faults;
pub use kubevirt::{KubeVirtOptions, KubeVirtSite};
pub use openstack::{OpenStackOptions, OpenStackSite};

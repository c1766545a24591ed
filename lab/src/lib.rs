//! The lab: simulated sites on loopback, so the demo and the tests exercise
//! real plugins over real HTTP without a cloud. It holds the example
//! platform's site and the OpenStack simulator, whose disks are sparse files
//! ([`disk`], for any simulator to reuse); KubeVirt and oVirt join them.
//! `lab/README.md` says what each serves.
#![deny(rust_2018_idioms)]

pub mod disk;
pub mod example;
pub mod openstack;
pub mod tls;

pub use example::{ExampleOptions, ExampleSite};
pub use openstack::{OpenStackOptions, OpenStackSite};

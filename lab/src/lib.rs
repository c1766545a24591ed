//! The lab: simulated sites on loopback, so the demo and the tests exercise
//! real plugins over real HTTP without a cloud. Today it holds the example
//! platform's site and a KubeVirt cluster; the OpenStack and oVirt
//! simulators join them.
#![deny(rust_2018_idioms)]

pub mod disk;
pub mod example;
pub mod kubevirt;
pub mod tls;

pub use example::{ExampleOptions, ExampleSite};
pub use kubevirt::{KubeVirtOptions, KubeVirtSite};

//! The lab: simulated sites on loopback, so the demo and the tests exercise
//! real plugins over real HTTP without a cloud. Today it holds the example
//! platform's site; the OpenStack, KubeVirt and oVirt simulators join it.
#![deny(rust_2018_idioms)]

pub mod disk;
pub mod example;
pub mod tls;

pub use example::{ExampleOptions, ExampleSite};

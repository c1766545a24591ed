//! The lab: simulated sites on loopback, so the demo and the tests exercise
//! real plugins over real HTTP without a cloud. Today it holds the example
//! platform's site, a KubeVirt cluster, an OpenStack cloud, an oVirt engine
//! ([`ovirt`]) and an AWS site (moto behind the lab's front), their disks
//! real sparse files ([`disk`]).
//! `lab/README.md` says what the OpenStack simulator serves.
#![deny(rust_2018_idioms)]
// Module docs name their private parts, for the maintainers who read them.
#![allow(rustdoc::private_intra_doc_links)]

pub mod aws;
pub mod disk;
pub mod example;
pub mod faults;
pub mod guest;
pub mod kubevirt;
mod mover;
pub mod openstack;
pub mod ovirt;
pub mod tls;

pub use aws::{AwsOptions, AwsSite};
pub use example::{ExampleOptions, ExampleSite};
pub use faults::Faults;
pub use kubevirt::{KubeVirtOptions, KubeVirtSite};
pub use openstack::{OpenStackOptions, OpenStackSite};
pub use ovirt::{OVirtOptions, OVirtSite};

/// Listen on `port` of the loopback address (0: a free port). A port in use
/// is an error that names it, since a fixed port is the caller's choice.
pub(crate) async fn listen(port: u16) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => std::io::Error::new(
                e.kind(),
                format!("127.0.0.1:{port} is in use by another process"),
            ),
            _ => e,
        })
}

/// `n` random bytes as hex (Keystone ids are 32 hex digits; transfer tokens).
pub(crate) fn random_hex(n: usize) -> String {
    let bytes: Vec<u8> = (0..n).map(|_| rand::random::<u8>()).collect();
    hex::encode(bytes)
}

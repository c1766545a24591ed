//! The host's bindings to the provider contract, one module per supported
//! WIT version (`rebound:provider@0.2.0`, the current one, and 0.1.0, whose
//! plugins keep loading). This is the only place that runs `bindgen!`;
//! everything else imports the types from here — the current version's,
//! which [`crate::v0_1`] converts for a 0.1 plugin.

use wasmtime::Store;
use wasmtime::component::InstancePre;

use crate::host::HostState;

/// The host's bindgen of one contract folder; `$from => $to` remaps more
/// interfaces onto existing bindings.
macro_rules! bind {
    ($path:literal $(, $from:literal => $to:path)*) => {
        wasmtime::component::bindgen!({
            path: $path,
            world: "plugin",
            imports: { default: trappable },
            exports: { default: async },
            require_store_data_send: true,
            with: {
                "wasi:io": wasmtime_wasi::p2::bindings::io,
                "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
                "wasi:http": wasmtime_wasi_http::p2::bindings::http,
                "rebound:provider/secrets.secret": crate::host::SecretHandle,
                $($from: $to,)*
            },
        });
    };
}

/// Bindings for `wit/v0.2.0`, the contract the host speaks.
pub mod v0_2_0 {
    bind!("../../wit/v0.2.0");
}

/// Bindings for `wit/v0.1.0`. Its `types` interface is the same as 0.2.0's,
/// so it is bound to 0.2.0's Rust types (the component model checks types
/// by their shape, not their package); only the provider interface's own
/// records differ, and [`crate::v0_1`] converts those.
pub mod v0_1_0 {
    bind!("../../wit/v0.1.0", "rebound:provider/types" => super::v0_2_0::rebound::provider::types);
}

pub use v0_2_0::exports::rebound::provider::provider as exports;
pub use v0_2_0::rebound::provider::types::*;

/// The contract versions this host can load, oldest first.
pub const SUPPORTED_WIT: &[semver::Version] =
    &[semver::Version::new(0, 1, 0), semver::Version::new(0, 2, 0)];

/// The exported interface name a plugin must have, before its version.
pub const PROVIDER_EXPORT_PREFIX: &str = "rebound:provider/provider@";

impl ProviderError {
    /// Whether the engine may retry the call with the same idempotency key.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Throttled(_) | Self::Transient(_))
    }
}

/// A plugin's component linked and ready to instantiate, by the contract
/// version it was built against.
#[derive(Clone)]
pub enum PluginPre {
    V0_1(v0_1_0::PluginPre<HostState>),
    V0_2(v0_2_0::PluginPre<HostState>),
}

/// One instance of a plugin, by contract version.
pub enum PluginWorld {
    V0_1(v0_1_0::Plugin),
    V0_2(v0_2_0::Plugin),
}

impl PluginPre {
    /// Bind a linked component exporting the provider interface of
    /// `contract` (checked supported before).
    pub fn new(pre: InstancePre<HostState>, contract: &semver::Version) -> wasmtime::Result<Self> {
        Ok(match (contract.major, contract.minor) {
            (0, 1) => Self::V0_1(v0_1_0::PluginPre::new(pre)?),
            _ => Self::V0_2(v0_2_0::PluginPre::new(pre)?),
        })
    }

    /// The contract version the component was built against.
    pub fn contract(&self) -> semver::Version {
        match self {
            Self::V0_1(_) => semver::Version::new(0, 1, 0),
            Self::V0_2(_) => semver::Version::new(0, 2, 0),
        }
    }

    pub async fn instantiate_async(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<PluginWorld> {
        Ok(match self {
            Self::V0_1(pre) => PluginWorld::V0_1(pre.instantiate_async(store).await?),
            Self::V0_2(pre) => PluginWorld::V0_2(pre.instantiate_async(store).await?),
        })
    }
}

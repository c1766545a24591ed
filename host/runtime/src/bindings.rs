//! The host's bindings to the provider contract, one module per supported
//! WIT version (today only `rebound:provider@0.1.0`). This is the only place
//! that runs `bindgen!`; everything else imports the types from here.

/// Bindings for `wit/v0.1.0`.
pub mod v0_1_0 {
    wasmtime::component::bindgen!({
        path: "../../wit/v0.1.0",
        world: "plugin",
        imports: { default: trappable },
        exports: { default: async },
        require_store_data_send: true,
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "rebound:provider/secrets.secret": crate::host::SecretHandle,
        },
    });
}

pub use v0_1_0::exports::rebound::provider::provider as exports;
pub use v0_1_0::rebound::provider::types::*;
pub use v0_1_0::{Plugin as PluginWorld, PluginPre};

/// The contract versions this host can load.
pub const SUPPORTED_WIT: &[semver::Version] = &[semver::Version::new(0, 1, 0)];

/// The exported interface name a v0.1 plugin must have.
pub const PROVIDER_EXPORT_PREFIX: &str = "rebound:provider/provider@";

impl ProviderError {
    /// Whether the engine may retry the call with the same idempotency key.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Throttled(_) | Self::Transient(_))
    }
}

//! The Rebound plugin SDK: everything a provider plugin needs, so a plugin
//! is its platform's logic and little else.
//!
//! - the contract's types ([`PluginInfo`], [`ProviderError`], requests, ...)
//!   and the [`Provider`] trait, whose methods default to `unsupported`;
//! - [`register!`] to export a `Provider` as the component's implementation;
//! - [`http`]: a small blocking HTTP client over `wasi:http` with JSON and
//!   XML helpers and status → [`ProviderError`] mapping;
//! - [`retry`] for transient and throttled failures;
//! - [`info!`]-style logging macros bridged to the host's `tracing`;
//! - [`site`]: the site's config, secrets (as placeholders the host fills in),
//!   and the clock;
//! - [`appliance`]: the token and user data of a mover appliance a plugin
//!   boots where its platform has no ranged volume API.
//!
//! ```
//! use rebound_plugin_sdk::{Capabilities, PluginInfo, Provider, register};
//!
//! struct MyCloud;
//!
//! impl Provider for MyCloud {
//!     fn describe() -> PluginInfo {
//!         PluginInfo {
//!             name: "mycloud".into(),
//!             version: "0.1.0".into(),
//!             platform: "mycloud".into(),
//!             capabilities: Capabilities::empty(),
//!             export_formats: vec![],
//!             import_formats: vec![],
//!             snapshot_granularity_secs: 60,
//!         }
//!     }
//! }
//!
//! register!(MyCloud);
//! # fn main() {
//! assert_eq!(MyCloud::describe().name, "mycloud");
//! # }
//! ```
#![deny(rust_2018_idioms)]

/// The SDK's bindgen of one contract folder.
macro_rules! bind {
    ($path:literal) => {
        wit_bindgen::generate!({
            path: $path,
            world: "plugin",
            with: {
                "wasi:http/types@0.2.12": wasip2::http::types,
                "wasi:http/outgoing-handler@0.2.12": wasip2::http::outgoing_handler,
                "wasi:io/error@0.2.12": wasip2::io::error,
                "wasi:io/poll@0.2.12": wasip2::io::poll,
                "wasi:io/streams@0.2.12": wasip2::io::streams,
                "wasi:clocks/monotonic-clock@0.2.12": wasip2::clocks::monotonic_clock,
                "wasi:clocks/wall-clock@0.2.12": wasip2::clocks::wall_clock,
            },
            pub_export_macro: true,
            default_bindings_module: "rebound_plugin_sdk::bindings",
            export_macro_name: "export",
        });
    };
}

/// The contract's bindings: `rebound:provider@0.2.0`, or 0.1.0 with the
/// `contract-0-1` feature (for a plugin that must still load on hosts of
/// releases before 0.2; it cannot take the cleanup scopes 0.2 added). Build
/// such a plugin on its own: Cargo unifies features within one build.
#[doc(hidden)]
#[cfg(not(feature = "contract-0-1"))]
pub mod bindings {
    bind!("../../wit/v0.2.0");
}

#[doc(hidden)]
#[cfg(feature = "contract-0-1")]
pub mod bindings {
    bind!("../../wit/v0.1.0");
}

pub mod appliance;
mod error;
pub mod http;
pub mod log;
pub mod provider;
pub mod retry;
pub mod site;
pub mod xml;

pub use bindings::exports::rebound::provider::provider::{
    ChangedBlocksRequest, CleanupRequest, CleanupScope, DiskSource, ExportRequest, FenceRequest,
    ImportRequest, MaterializeRequest, NetworkMapping, RedirectRequest, ReplicateRequest,
    SnapshotRequest,
};
pub use bindings::rebound::provider::types::*;
pub use provider::Provider;

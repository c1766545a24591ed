//! The Rebound plugin runtime: it loads provider plugins (WebAssembly
//! components implementing `rebound:provider@0.2.0`, or 0.1.0 through an
//! adapter), verifies them
//! (digest, ed25519 signature, contract version, imports), and calls their
//! exports on a fresh sandboxed instance per call.
//!
//! What the sandbox guarantees for every call: a deadline that kills (epoch
//! interruption plus a timeout around host I/O), a memory cap per instance,
//! deny-by-default egress (manifest ∩ operator grant, with loopback,
//! link-local and metadata addresses refused unless named), capped request
//! and response bodies and open connections, secrets handed out as
//! placeholders the host fills in, logs bridged into `tracing`, and a crash
//! budget that quarantines a plugin version that keeps crashing.
//!
//! This crate owns the sandbox and nothing above it: it knows sites only as
//! the [`SiteGrant`]s a caller passes, and never touches the store.
#![deny(rust_2018_idioms)]

pub mod bindings;
mod context;
pub mod egress;
mod error;
mod export;
mod host;
mod http;
mod limits;
pub mod manifest;
pub mod metrics;
pub mod package;
mod plugin;
mod runtime;
#[doc(hidden)]
pub mod testing;
mod v0_1;

pub use context::{AuditEvent, AuditSink, CallContext, Fault, Faults, SecretValue, SiteGrant};
pub use error::{CallError, LoadError, explain};
pub use export::{Describe, Export, Fence, Health, Inventory, Status, Unfence};
pub use host::HostState;
pub use limits::Limits;
pub use package::{PluginPackage, TrustPolicy};
pub use plugin::{CrashStatus, Plugin};
pub use runtime::{Runtime, RuntimeConfig, WarmInstance};

//! Plugins built against `rebound:provider@0.1.0`: the host speaks 0.2.0
//! and this module stands between. It lowers each 0.2 request record to
//! 0.1's (the same fields; what 0.1 cannot express — the cleanup scopes
//! added in 0.2 — is refused as `unsupported` without calling the plugin),
//! and serves 0.1's imports (`log`, `config`, `secrets`) with the host's
//! 0.2 implementation. The shared `types` need nothing: both versions are
//! bound to the same Rust types.

use wasmtime::component::Resource;

use crate::bindings::ProviderError;
use crate::bindings::exports as now;
use crate::bindings::v0_1_0::exports::rebound::provider::provider as old;
use crate::bindings::v0_1_0::rebound::provider::{config, log, secrets};
use crate::bindings::v0_2_0::rebound::provider as current;
use crate::host::{HostState, SecretHandle};

/// A 0.2 request as a 0.1 plugin takes it.
pub(crate) trait Lower {
    type Old;
    fn lower(self) -> Result<Self::Old, ProviderError>;
}

/// Records whose fields are the same in both versions, field by field.
macro_rules! same_fields {
    ($($ty:ident { $($field:ident $(: $conv:ident)?),* $(,)? })*) => {$(
        impl Lower for now::$ty {
            type Old = old::$ty;
            fn lower(self) -> Result<old::$ty, ProviderError> {
                Ok(old::$ty { $($field: same_fields!(@conv self.$field $(, $conv)?)),* })
            }
        }
    )*};
    (@conv $value:expr) => { $value };
    (@conv $value:expr, $conv:ident) => { $conv($value)? };
}

same_fields! {
    SnapshotRequest { key, site, workload_id, consistency, base }
    ReplicateRequest { key, source_site, target_site, recovery_point_id, base }
    ExportRequest { key, site, recovery_point_id, disk_id, format }
    ImportRequest { key, site, name, size_bytes, format, volume_id }
    ChangedBlocksRequest { site, disk_id, base, target }
    MaterializeRequest {
        key, site, source: disk_source, spec, networks: network_mappings, isolated, start,
    }
    FenceRequest { key, site, workload_id, epoch }
    RedirectRequest { key, site, target, backends }
    CleanupRequest { key, site, scope: cleanup_scope }
}

fn disk_source(source: now::DiskSource) -> Result<old::DiskSource, ProviderError> {
    Ok(match source {
        now::DiskSource::RecoveryPoint(id) => old::DiskSource::RecoveryPoint(id),
        now::DiskSource::Volumes(ids) => old::DiskSource::Volumes(ids),
    })
}

fn network_mappings(
    networks: Vec<now::NetworkMapping>,
) -> Result<Vec<old::NetworkMapping>, ProviderError> {
    Ok(networks
        .into_iter()
        .map(|n| old::NetworkMapping {
            source_network: n.source_network,
            target_network: n.target_network,
            keep_addresses: n.keep_addresses,
        })
        .collect())
}

fn cleanup_scope(scope: now::CleanupScope) -> Result<old::CleanupScope, ProviderError> {
    let added = |what: &str| {
        ProviderError::Unsupported(format!(
            "cleanup of {what} came with the provider contract 0.2.0; this plugin was built \
             against 0.1.0 — rebuild it with the current plugin SDK"
        ))
    };
    Ok(match scope {
        now::CleanupScope::Drill(sandbox) => old::CleanupScope::Drill(sandbox),
        now::CleanupScope::RecoveryPoints(ids) => old::CleanupScope::RecoveryPoints(ids),
        now::CleanupScope::Transfers(ids) => old::CleanupScope::Transfers(ids),
        now::CleanupScope::Workloads(_) => return Err(added("workloads")),
        now::CleanupScope::DiscardedImports(_) => return Err(added("discarded imports")),
    })
}

impl log::Host for HostState {
    fn log(
        &mut self,
        level: log::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        use current::log::Level;
        let level = match level {
            log::Level::Trace => Level::Trace,
            log::Level::Debug => Level::Debug,
            log::Level::Info => Level::Info,
            log::Level::Warn => Level::Warn,
            log::Level::Error => Level::Error,
        };
        current::log::Host::log(self, level, message, fields)
    }
}

impl config::Host for HostState {
    fn get(&mut self, site: String, key: String) -> wasmtime::Result<Option<String>> {
        current::config::Host::get(self, site, key)
    }

    fn all(&mut self, site: String) -> wasmtime::Result<Vec<(String, String)>> {
        current::config::Host::all(self, site)
    }
}

impl secrets::Host for HostState {
    fn open(
        &mut self,
        site: String,
        name: String,
    ) -> wasmtime::Result<Result<Resource<SecretHandle>, String>> {
        current::secrets::Host::open(self, site, name)
    }
}

impl secrets::HostSecret for HostState {
    fn placeholder(&mut self, handle: Resource<SecretHandle>) -> wasmtime::Result<String> {
        current::secrets::HostSecret::placeholder(self, handle)
    }

    fn reveal(&mut self, handle: Resource<SecretHandle>) -> wasmtime::Result<String> {
        current::secrets::HostSecret::reveal(self, handle)
    }

    fn drop(&mut self, handle: Resource<SecretHandle>) -> wasmtime::Result<()> {
        current::secrets::HostSecret::drop(self, handle)
    }
}

/// Add 0.1's imports to the linker beside 0.2's (their names differ by
/// version, so both are served).
pub(crate) fn add_to_linker(
    linker: &mut wasmtime::component::Linker<HostState>,
) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    log::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    config::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    secrets::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    Ok(())
}

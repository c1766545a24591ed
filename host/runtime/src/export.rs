//! One typed value per plugin export, so a call reads
//! `runtime.call(&plugin, &ctx, Health::new("site-a"))` and returns that
//! export's own result type, whichever contract version the plugin speaks.

use std::future::Future;

use wasmtime::Store;

use crate::bindings::exports::{
    ChangedBlocksRequest, CleanupRequest, ExportRequest, FenceRequest, ImportRequest,
    MaterializeRequest, RedirectRequest, ReplicateRequest, SnapshotRequest,
};
use crate::bindings::{
    ByteRange, HealthReport, InventoryFilter, Operation, OperationState, PluginInfo, PluginWorld,
    ProviderError, Workload,
};
use crate::host::HostState;
use crate::v0_1::Lower;

/// Call the same export on an instance of either contract version; the
/// arguments are the same Rust values for both (shared `types`).
macro_rules! on_either {
    ($world:expr, |$p:ident| $call:expr) => {
        match $world {
            PluginWorld::V0_1($p) => $call,
            PluginWorld::V0_2($p) => $call,
        }
    };
}

/// Call an export taking a provider-interface record: as it is on 0.2, and
/// lowered to 0.1's record (or refused, when 0.1 cannot express it).
macro_rules! lowered {
    ($world:expr, $store:expr, $req:expr, $method:ident) => {
        match $world {
            PluginWorld::V0_2(p) => p.rebound_provider_provider().$method($store, &$req).await,
            PluginWorld::V0_1(p) => match $req.lower() {
                Ok(req) => p.rebound_provider_provider().$method($store, &req).await,
                Err(refusal) => Ok(Err(refusal)),
            },
        }
    };
}

/// A call of one export.
pub trait Export: Send {
    type Output: Send;
    /// The export's name in the WIT, used in errors and metrics.
    const NAME: &'static str;

    fn invoke(
        self,
        world: &PluginWorld,
        store: &mut Store<HostState>,
    ) -> impl Future<Output = wasmtime::Result<Result<Self::Output, ProviderError>>> + Send;
}

/// `describe()`.
#[derive(Debug, Clone, Copy)]
pub struct Describe;

impl Export for Describe {
    type Output = PluginInfo;
    const NAME: &'static str = "describe";

    async fn invoke(
        self,
        w: &PluginWorld,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Result<PluginInfo, ProviderError>> {
        on_either!(w, |p| p
            .rebound_provider_provider()
            .call_describe(store)
            .await)
        .map(Ok)
    }
}

/// `health(site)`.
#[derive(Debug, Clone)]
pub struct Health(pub String);

impl Export for Health {
    type Output = HealthReport;
    const NAME: &'static str = "health";

    async fn invoke(
        self,
        w: &PluginWorld,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Result<HealthReport, ProviderError>> {
        on_either!(w, |p| p
            .rebound_provider_provider()
            .call_health(store, &self.0)
            .await)
    }
}

/// `inventory(site, filter)`.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub site: String,
    pub filter: InventoryFilter,
}

impl Inventory {
    /// Every workload of `site`.
    pub fn all(site: impl Into<String>) -> Self {
        Self {
            site: site.into(),
            filter: InventoryFilter {
                workload_ids: Vec::new(),
                labels: Vec::new(),
            },
        }
    }
}

impl Export for Inventory {
    type Output = Vec<Workload>;
    const NAME: &'static str = "inventory";

    async fn invoke(
        self,
        w: &PluginWorld,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Result<Vec<Workload>, ProviderError>> {
        on_either!(w, |p| p
            .rebound_provider_provider()
            .call_inventory(store, &self.site, &self.filter)
            .await)
    }
}

/// `status(op)`.
#[derive(Debug, Clone)]
pub struct Status(pub Operation);

impl Export for Status {
    type Output = OperationState;
    const NAME: &'static str = "status";

    async fn invoke(
        self,
        w: &PluginWorld,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Result<OperationState, ProviderError>> {
        on_either!(w, |p| p
            .rebound_provider_provider()
            .call_status(store, &self.0)
            .await)
    }
}

/// The exports that take one request record.
macro_rules! request_exports {
    ($($req:ty => $name:literal, $method:ident, $out:ty;)*) => {$(
        impl Export for $req {
            type Output = $out;
            const NAME: &'static str = $name;

            async fn invoke(self, w: &PluginWorld, store: &mut Store<HostState>) -> wasmtime::Result<Result<$out, ProviderError>> {
                lowered!(w, store, self, $method)
            }
        }
    )*};
}

request_exports! {
    SnapshotRequest => "snapshot", call_snapshot, Operation;
    ReplicateRequest => "replicate", call_replicate, Operation;
    ExportRequest => "export-disk", call_export_disk, Operation;
    ImportRequest => "import-disk", call_import_disk, Operation;
    ChangedBlocksRequest => "changed-blocks", call_changed_blocks, Vec<ByteRange>;
    MaterializeRequest => "materialize", call_materialize, Operation;
    RedirectRequest => "redirect", call_redirect, Operation;
    CleanupRequest => "cleanup", call_cleanup, Operation;
}

/// `fence(req)`.
#[derive(Debug, Clone)]
pub struct Fence(pub FenceRequest);

/// `unfence(req)`.
#[derive(Debug, Clone)]
pub struct Unfence(pub FenceRequest);

impl Export for Fence {
    type Output = Operation;
    const NAME: &'static str = "fence";

    async fn invoke(
        self,
        w: &PluginWorld,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Result<Operation, ProviderError>> {
        lowered!(w, store, self.0, call_fence)
    }
}

impl Export for Unfence {
    type Output = Operation;
    const NAME: &'static str = "unfence";

    async fn invoke(
        self,
        w: &PluginWorld,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Result<Operation, ProviderError>> {
        lowered!(w, store, self.0, call_unfence)
    }
}

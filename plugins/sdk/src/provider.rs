//! The [`Provider`] trait plugin authors implement, and [`register!`](crate::register).

use crate::{
    ByteRange, ChangedBlocksRequest, CleanupRequest, ExportRequest, FenceRequest, HealthReport,
    ImportRequest, InventoryFilter, MaterializeRequest, Operation, OperationState, PluginInfo,
    ProviderError, RedirectRequest, ReplicateRequest, SnapshotRequest, Workload,
};

/// A provider plugin. Only `describe` is required; every other export
/// answers `unsupported` until implemented, and the capabilities a plugin
/// reports in `describe` tell the engine what it may call.
pub trait Provider {
    fn describe() -> PluginInfo;

    fn health(site: String) -> Result<HealthReport, ProviderError> {
        let _ = site;
        Err(unsupported::<Self>("health"))
    }
    fn inventory(site: String, filter: InventoryFilter) -> Result<Vec<Workload>, ProviderError> {
        let _ = (site, filter);
        Err(unsupported::<Self>("inventory"))
    }
    fn snapshot(req: SnapshotRequest) -> Result<Operation, ProviderError> {
        let _ = req;
        Err(unsupported::<Self>("snapshot"))
    }
    fn replicate(req: ReplicateRequest) -> Result<Operation, ProviderError> {
        let _ = req;
        Err(unsupported::<Self>("replicate"))
    }
    fn export_disk(req: ExportRequest) -> Result<Operation, ProviderError> {
        let _ = req;
        Err(unsupported::<Self>("export-disk"))
    }
    fn import_disk(req: ImportRequest) -> Result<Operation, ProviderError> {
        let _ = req;
        Err(unsupported::<Self>("import-disk"))
    }
    fn changed_blocks(req: ChangedBlocksRequest) -> Result<Vec<ByteRange>, ProviderError> {
        let _ = req;
        Err(unsupported::<Self>("changed-blocks"))
    }
    fn materialize(req: MaterializeRequest) -> Result<Operation, ProviderError> {
        let _ = req;
        Err(unsupported::<Self>("materialize"))
    }
    fn fence(req: FenceRequest) -> Result<Operation, ProviderError> {
        let _ = req;
        Err(unsupported::<Self>("fence"))
    }
    fn unfence(req: FenceRequest) -> Result<Operation, ProviderError> {
        let _ = req;
        Err(unsupported::<Self>("unfence"))
    }
    fn redirect(req: RedirectRequest) -> Result<Operation, ProviderError> {
        let _ = req;
        Err(unsupported::<Self>("redirect"))
    }
    fn cleanup(req: CleanupRequest) -> Result<Operation, ProviderError> {
        let _ = req;
        Err(unsupported::<Self>("cleanup"))
    }
    fn status(op: Operation) -> Result<OperationState, ProviderError> {
        let _ = op;
        Err(unsupported::<Self>("status"))
    }
}

fn unsupported<P: Provider + ?Sized>(function: &str) -> ProviderError {
    let info = P::describe();
    ProviderError::Unsupported(format!(
        "plugin '{}' {} does not implement {function}",
        info.name, info.version
    ))
}

/// Export a [`Provider`] as this component's implementation of the
/// contract. Use once per plugin crate.
#[macro_export]
macro_rules! register {
    ($provider:ty) => {
        // Exports exist only in the component; a native build of a plugin
        // crate (clippy, benchmarks) links no contract symbols.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::Provider as _;
            use $crate::bindings::exports::rebound::provider::provider as __contract;

            struct __ReboundExport;

            impl __contract::Guest for __ReboundExport {
                fn describe() -> $crate::PluginInfo {
                    <$provider>::describe()
                }
                fn health(site: String) -> Result<$crate::HealthReport, $crate::ProviderError> {
                    <$provider>::health(site)
                }
                fn inventory(
                    site: String,
                    filter: $crate::InventoryFilter,
                ) -> Result<Vec<$crate::Workload>, $crate::ProviderError> {
                    <$provider>::inventory(site, filter)
                }
                fn snapshot(
                    req: $crate::SnapshotRequest,
                ) -> Result<$crate::Operation, $crate::ProviderError> {
                    <$provider>::snapshot(req)
                }
                fn replicate(
                    req: $crate::ReplicateRequest,
                ) -> Result<$crate::Operation, $crate::ProviderError> {
                    <$provider>::replicate(req)
                }
                fn export_disk(
                    req: $crate::ExportRequest,
                ) -> Result<$crate::Operation, $crate::ProviderError> {
                    <$provider>::export_disk(req)
                }
                fn import_disk(
                    req: $crate::ImportRequest,
                ) -> Result<$crate::Operation, $crate::ProviderError> {
                    <$provider>::import_disk(req)
                }
                fn changed_blocks(
                    req: $crate::ChangedBlocksRequest,
                ) -> Result<Vec<$crate::ByteRange>, $crate::ProviderError> {
                    <$provider>::changed_blocks(req)
                }
                fn materialize(
                    req: $crate::MaterializeRequest,
                ) -> Result<$crate::Operation, $crate::ProviderError> {
                    <$provider>::materialize(req)
                }
                fn fence(
                    req: $crate::FenceRequest,
                ) -> Result<$crate::Operation, $crate::ProviderError> {
                    <$provider>::fence(req)
                }
                fn unfence(
                    req: $crate::FenceRequest,
                ) -> Result<$crate::Operation, $crate::ProviderError> {
                    <$provider>::unfence(req)
                }
                fn redirect(
                    req: $crate::RedirectRequest,
                ) -> Result<$crate::Operation, $crate::ProviderError> {
                    <$provider>::redirect(req)
                }
                fn cleanup(
                    req: $crate::CleanupRequest,
                ) -> Result<$crate::Operation, $crate::ProviderError> {
                    <$provider>::cleanup(req)
                }
                fn status(
                    op: $crate::Operation,
                ) -> Result<$crate::OperationState, $crate::ProviderError> {
                    <$provider>::status(op)
                }
            }

    $crate::bindings::export!(__ReboundExport with_types_in $crate::bindings);
        };

        /// The plugin's exports as plain functions in a native build.
        #[cfg(not(target_arch = "wasm32"))]
        #[doc(hidden)]
        pub fn __rebound_exports() -> $crate::provider::Exports {
            $crate::provider::Exports::of::<$provider>()
        }
    };
}

/// A provider's exports as function pointers: what [`register!`](crate::register) leaves in a
/// native (non-wasm) build of a plugin crate, e.g. for benchmarks.
#[derive(Debug, Clone, Copy)]
pub struct Exports {
    pub describe: fn() -> PluginInfo,
    pub health: fn(String) -> Result<HealthReport, ProviderError>,
    pub inventory: fn(String, InventoryFilter) -> Result<Vec<Workload>, ProviderError>,
    pub snapshot: fn(SnapshotRequest) -> Result<Operation, ProviderError>,
    pub replicate: fn(ReplicateRequest) -> Result<Operation, ProviderError>,
    pub export_disk: fn(ExportRequest) -> Result<Operation, ProviderError>,
    pub import_disk: fn(ImportRequest) -> Result<Operation, ProviderError>,
    pub changed_blocks: fn(ChangedBlocksRequest) -> Result<Vec<ByteRange>, ProviderError>,
    pub materialize: fn(MaterializeRequest) -> Result<Operation, ProviderError>,
    pub fence: fn(FenceRequest) -> Result<Operation, ProviderError>,
    pub unfence: fn(FenceRequest) -> Result<Operation, ProviderError>,
    pub redirect: fn(RedirectRequest) -> Result<Operation, ProviderError>,
    pub cleanup: fn(CleanupRequest) -> Result<Operation, ProviderError>,
    pub status: fn(Operation) -> Result<OperationState, ProviderError>,
}

impl Exports {
    pub fn of<P: Provider>() -> Self {
        Self {
            describe: P::describe,
            health: P::health,
            inventory: P::inventory,
            snapshot: P::snapshot,
            replicate: P::replicate,
            export_disk: P::export_disk,
            import_disk: P::import_disk,
            changed_blocks: P::changed_blocks,
            materialize: P::materialize,
            fence: P::fence,
            unfence: P::unfence,
            redirect: P::redirect,
            cleanup: P::cleanup,
            status: P::status,
        }
    }
}

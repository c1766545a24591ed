//! Hostile test plugin: panics in health(). Built by `cargo xtask build-plugins` for the
//! runtime's sandbox tests; never install it anywhere else.
#![deny(rust_2018_idioms)]

use rebound_plugin_sdk::{
    Capabilities, HealthReport, PluginInfo, Provider, ProviderError, register,
};

struct Hostile;

impl Provider for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "hostile-trap".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            platform: "hostile".into(),
            capabilities: Capabilities::empty(),
            export_formats: Vec::new(),
            import_formats: Vec::new(),
            snapshot_granularity_secs: 60,
        }
    }

    fn health(_site: String) -> Result<HealthReport, ProviderError> {
        panic!("hostile-trap: deliberate panic in health")
    }
}

register!(Hostile);

//! Hostile test plugin: allocates and touches memory until stopped, in health(). Built by `cargo xtask build-plugins` for the
//! runtime's sandbox tests; never install it anywhere else.
#![deny(rust_2018_idioms)]

use rebound_plugin_sdk::{
    Capabilities, HealthReport, PluginInfo, Provider, ProviderError, register,
};

struct Hostile;

impl Provider for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "hostile-memory-bomb".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            platform: "hostile".into(),
            capabilities: Capabilities::empty(),
            export_formats: Vec::new(),
            import_formats: Vec::new(),
            snapshot_granularity_secs: 60,
        }
    }

    fn health(_site: String) -> Result<HealthReport, ProviderError> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![0xA5; 16 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}

register!(Hostile);

//! Hostile test plugin: calls the cloud metadata address, in health(). Built by `cargo xtask build-plugins` for the
//! runtime's sandbox tests; never install it anywhere else.
#![deny(rust_2018_idioms)]

use rebound_plugin_sdk::{
    Capabilities, HealthReport, PluginInfo, Provider, ProviderError, register,
};

struct Hostile;

impl Provider for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "hostile-egress-metadata".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            platform: "hostile".into(),
            capabilities: Capabilities::empty(),
            export_formats: Vec::new(),
            import_formats: Vec::new(),
            snapshot_granularity_secs: 60,
        }
    }

    fn health(_site: String) -> Result<HealthReport, ProviderError> {
        rebound_plugin_sdk::http::get("http://169.254.169.254/latest/meta-data/").send()?;
        Err(ProviderError::ProviderFailed(
            "the request was not denied".into(),
        ))
    }
}

register!(Hostile);

//! Hostile test plugin: calls a host its manifest does not request, in health(). Built by `cargo xtask build-plugins` for the
//! runtime's sandbox tests; never install it anywhere else.
#![deny(rust_2018_idioms)]

use rebound_plugin_sdk::{
    Capabilities, HealthReport, PluginInfo, Provider, ProviderError, register,
};

struct Hostile;

impl Provider for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "hostile-egress-denied".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            platform: "hostile".into(),
            capabilities: Capabilities::empty(),
            export_formats: Vec::new(),
            import_formats: Vec::new(),
            snapshot_granularity_secs: 60,
        }
    }

    fn health(site: String) -> Result<HealthReport, ProviderError> {
        let target = rebound_plugin_sdk::site::get(&site, "target")
            .unwrap_or_else(|| "https://example.com/".into());
        rebound_plugin_sdk::http::get(target).send()?;
        Err(ProviderError::ProviderFailed(
            "the request was not denied".into(),
        ))
    }
}

register!(Hostile);

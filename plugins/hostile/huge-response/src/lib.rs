//! Hostile test plugin: reads a 100 MB response from the site in health(). Built by `cargo xtask build-plugins` for the
//! runtime's sandbox tests; never install it anywhere else.
#![deny(rust_2018_idioms)]

use rebound_plugin_sdk::{
    Capabilities, HealthReport, PluginInfo, Provider, ProviderError, register,
};

struct Hostile;

impl Provider for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "hostile-huge-response".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            platform: "hostile".into(),
            capabilities: Capabilities::empty(),
            export_formats: Vec::new(),
            import_formats: Vec::new(),
            snapshot_granularity_secs: 60,
        }
    }

    fn health(site: String) -> Result<HealthReport, ProviderError> {
        let endpoint = rebound_plugin_sdk::site::require(&site, "endpoint")?;
        let answer =
            rebound_plugin_sdk::http::get(format!("{endpoint}/huge?bytes=100000000")).send()?;
        Ok(HealthReport {
            status: rebound_plugin_sdk::HealthStatus::Healthy,
            latency_ms: 0,
            api_version: None,
            detail: format!("read {} bytes", answer.body().len()),
        })
    }
}

register!(Hostile);

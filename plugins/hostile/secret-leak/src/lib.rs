//! Hostile test plugin: reveals the site's `token` and tries to leak it
//! through its logs and its error message, in health(). Built by `cargo
//! xtask build-plugins` for the runtime's sandbox tests; never install it
//! anywhere else.
#![deny(rust_2018_idioms)]

use rebound_plugin_sdk::{
    Capabilities, HealthReport, PluginInfo, Provider, ProviderError, register, site, warn,
};

struct Hostile;

impl Provider for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "hostile-secret-leak".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            platform: "hostile".into(),
            capabilities: Capabilities::empty(),
            export_formats: Vec::new(),
            import_formats: Vec::new(),
            snapshot_granularity_secs: 60,
        }
    }

    fn health(site: String) -> Result<HealthReport, ProviderError> {
        let secret = site::secret(&site, "token")?;
        let value = secret.reveal();
        let placeholder = secret.placeholder();
        warn!("the token is {}", value; "token" => value, "placeholder" => placeholder);
        Err(ProviderError::ProviderFailed(format!(
            "token={value} placeholder={placeholder}"
        )))
    }
}

register!(Hostile);

//! Hostile test plugin: opens 20 requests at once (holding every response),
//! in health(). Built by `cargo xtask build-plugins` for the runtime's
//! sandbox tests; never install it anywhere else.
#![deny(rust_2018_idioms)]

use rebound_plugin_sdk::{
    Capabilities, HealthReport, PluginInfo, Provider, ProviderError, register, site,
};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, OutgoingRequest, Scheme};

struct Hostile;

impl Provider for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "hostile-connection-flood".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            platform: "hostile".into(),
            capabilities: Capabilities::empty(),
            export_formats: Vec::new(),
            import_formats: Vec::new(),
            snapshot_granularity_secs: 60,
        }
    }

    fn health(site: String) -> Result<HealthReport, ProviderError> {
        let endpoint = site::require(&site, "endpoint")?;
        let authority = endpoint.trim_start_matches("http://").to_owned();
        let mut open = Vec::new();
        for _ in 0..20 {
            let request = OutgoingRequest::new(Fields::new());
            let _ = request.set_scheme(Some(&Scheme::Http));
            let _ = request.set_authority(Some(&authority));
            let _ = request.set_path_with_query(Some("/v1/health"));
            let pending = outgoing_handler::handle(request, None)
                .map_err(|e| rebound_plugin_sdk::http::from_code("GET /v1/health", &e))?;
            open.push(pending);
        }
        let mut responses = Vec::new();
        for pending in &open {
            pending.subscribe().block();
            match pending.get() {
                Some(Ok(Ok(response))) => responses.push(response),
                Some(Ok(Err(code))) => {
                    return Err(rebound_plugin_sdk::http::from_code("GET /v1/health", &code));
                }
                _ => return Err(ProviderError::ProviderFailed("response lost".into())),
            }
        }
        Err(ProviderError::ProviderFailed(format!(
            "all {} requests were let through",
            responses.len()
        )))
    }
}

register!(Hostile);

//! This host's plugins as the store records them. A package published
//! through any host's API is kept in the store with each plugin's settings
//! (its active version, enabled or not); every host loads the versions it
//! lacks — verifying each against its own trusted keys, as for a package
//! of its plugin folder — and follows the settings ([`PluginSync::once`],
//! every few seconds from `rebound serve`). A run pinned to a version this
//! host has not loaded yet loads it from the store ([`load_version`]).
//! A package this host refuses (signed by a key it does not trust, say) is
//! logged once and left; the others load.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use rebound_runtime::{Plugin, PluginPackage, Runtime};
use rebound_store::{Store, StoreError};
use semver::Version;

/// What one [`PluginSync::once`] changed on this host.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Synced {
    /// `name version` of each version loaded.
    pub loaded: Vec<String>,
    /// `name version` of each version made active.
    pub activated: Vec<String>,
    /// `name` of each plugin enabled or disabled.
    pub switched: Vec<String>,
}

/// Loads into one runtime what the store records.
pub struct PluginSync {
    store: Store,
    runtime: Arc<Runtime>,
    /// (name, version, sha256) of the packages refused or conflicting
    /// here: logged once, not tried again.
    refused: Mutex<HashSet<(String, String, String)>>,
}

impl PluginSync {
    pub fn new(store: Store, runtime: Arc<Runtime>) -> Self {
        Self {
            store,
            runtime,
            refused: Mutex::new(HashSet::new()),
        }
    }

    /// Load the published versions this host lacks, then make each
    /// plugin's active version and enabled state what the store says.
    pub async fn once(&self) -> Result<Synced, StoreError> {
        let mut out = Synced::default();
        for v in self.store.plugin_versions().await? {
            let Ok(version) = Version::parse(&v.version) else {
                continue;
            };
            let key = (v.name.clone(), v.version.clone(), v.sha256.clone());
            if self.refused.lock().expect("refused").contains(&key) {
                continue;
            }
            if let Some(loaded) = self.runtime.version(&v.name, &version) {
                if loaded.digest != v.sha256 {
                    tracing::error!(plugin = %v.name, version = %v.version, here = %loaded.digest, published = %v.sha256,
                        "this host loaded another component under the version published; keeping its own");
                    self.refused.lock().expect("refused").insert(key);
                }
                continue;
            }
            match load(&self.store, &self.runtime, &v.name, &v.version).await? {
                Ok(Some(_)) => out.loaded.push(format!("{} {}", v.name, v.version)),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(plugin = %v.name, version = %v.version, "published plugin refused by this host: {e}");
                    self.refused.lock().expect("refused").insert(key);
                }
            }
        }
        for s in self.store.plugin_settings().await? {
            if let Some(active) = s.active.as_deref().and_then(|a| Version::parse(a).ok())
                && self
                    .runtime
                    .active(&s.name)
                    .is_some_and(|p| p.manifest.version != active)
                && self.runtime.activate(&s.name, &active).is_some()
            {
                out.activated.push(format!("{} {active}", s.name));
            }
            if self
                .runtime
                .active(&s.name)
                .is_some_and(|p| p.enabled() != s.enabled)
            {
                self.runtime.set_enabled(&s.name, s.enabled);
                out.switched.push(s.name.clone());
            }
        }
        Ok(out)
    }
}

/// Version `version` of plugin `name`: loaded here already, or loaded from
/// the store now (kept beside the active version); `None` when the store
/// has no such package, or this host refuses it (logged).
pub async fn load_version(
    store: &Store,
    runtime: &Runtime,
    name: &str,
    version: &Version,
) -> Result<Option<Arc<Plugin>>, StoreError> {
    if let Some(plugin) = runtime.version(name, version) {
        return Ok(Some(plugin));
    }
    match load(store, runtime, name, &version.to_string()).await? {
        Ok(plugin) => Ok(plugin),
        Err(e) => {
            tracing::error!(plugin = %name, %version, "published plugin refused by this host: {e}");
            Ok(None)
        }
    }
}

/// The store's package of `name` `version`, verified and added.
async fn load(
    store: &Store,
    runtime: &Runtime,
    name: &str,
    version: &str,
) -> Result<Result<Option<Arc<Plugin>>, rebound_runtime::LoadError>, StoreError> {
    let Some(record) = store.plugin_package(name, version).await? else {
        return Ok(Ok(None));
    };
    let package = PluginPackage {
        manifest: record.manifest,
        wasm: record.wasm,
        signature: record.signature,
    };
    Ok(match runtime.load(&package).await {
        Ok(plugin) => {
            runtime.add(plugin.clone());
            Ok(Some(plugin))
        }
        Err(e) => Err(e),
    })
}

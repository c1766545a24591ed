//! The sites this host binds to plugins, from two sources: the sites file
//! (read at start, read-only here) and the store (registered through
//! `PUT /api/v1/sites/{name}`, credentials sealed). One definition type and
//! one binding function serve both, so a site means the same thing
//! wherever it was written. Hosts sharing a store pick up each other's
//! registrations with [`SiteRegistry::refresh`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use rebound_engine::{BoundSite, PluginSteps};
use rebound_runtime::{Runtime, SiteGrant};
use rebound_store::{SiteRecord, Store, StoreError};

use crate::seal::Sealer;

/// A site as an operator writes it, credentials in clear (only in memory).
#[derive(Clone)]
pub struct SiteDefinition {
    pub name: String,
    pub plugin: String,
    pub config: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, String>,
    pub egress: Vec<String>,
    pub ca_pem: Option<String>,
    /// The most calls of its plugin in flight at once (`None`: the
    /// engine's default, `rebound_engine::DEFAULT_MAX_CALLS`).
    pub max_calls: Option<usize>,
}

impl std::fmt::Debug for SiteDefinition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteDefinition")
            .field("name", &self.name)
            .field("plugin", &self.plugin)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Why a definition cannot be bound; each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("no plugin named '{0}' is installed; GET /api/v1/plugins lists them")]
    NoPlugin(String),
    #[error("egress '{url}': {reason}")]
    Egress { url: String, reason: String },
    #[error("ca_pem holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    Ca,
    #[error("max_calls must be at least 1 (leave it out for the host's default)")]
    MaxCalls,
}

/// Bind a definition to its installed plugin with the grant it asks for.
pub fn bind(runtime: &Runtime, site: &SiteDefinition) -> Result<BoundSite, BindError> {
    let plugin = runtime
        .active(&site.plugin)
        .ok_or_else(|| BindError::NoPlugin(site.plugin.clone()))?;
    let mut grant = SiteGrant::new(&site.name);
    for (key, value) in &site.config {
        grant = grant.config(key, value);
    }
    for (key, value) in &site.secrets {
        grant = grant.secret(key, value);
    }
    for url in &site.egress {
        grant = grant.grant(url).map_err(|reason| BindError::Egress {
            url: url.clone(),
            reason,
        })?;
    }
    if let Some(pem) = &site.ca_pem {
        let certs = rustls_pemfile::certs(&mut pem.as_bytes()).collect::<Result<Vec<_>, _>>();
        if !certs.is_ok_and(|c| !c.is_empty()) {
            return Err(BindError::Ca);
        }
        grant.ca_pem = Some(pem.clone());
    }
    if let Some(n) = site.max_calls {
        if n == 0 {
            return Err(BindError::MaxCalls);
        }
        grant = grant.max_calls(n);
    }
    Ok(BoundSite { plugin, grant })
}

/// Where a bound site was defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    File,
    Store { revision: i64 },
}

/// The sites of this host and the engine's bindings of them.
pub struct SiteRegistry {
    pub steps: Arc<PluginSteps>,
    pub runtime: Arc<Runtime>,
    pub sealer: Sealer,
    sources: Mutex<HashMap<String, Source>>,
}

impl SiteRegistry {
    /// A registry over the engine's bindings; `file_sites` are the names
    /// the sites file bound (the API will not change them).
    pub fn new(
        steps: Arc<PluginSteps>,
        runtime: Arc<Runtime>,
        sealer: Sealer,
        file_sites: impl IntoIterator<Item = String>,
    ) -> Self {
        Self {
            steps,
            runtime,
            sealer,
            sources: Mutex::new(
                file_sites
                    .into_iter()
                    .map(|name| (name, Source::File))
                    .collect(),
            ),
        }
    }

    pub fn source(&self, name: &str) -> Option<Source> {
        self.sources.lock().expect("sources").get(name).copied()
    }

    /// Every bound site's name, plugin and source, in name order.
    pub fn list(&self) -> Vec<(String, String, Source)> {
        let sources = self.sources.lock().expect("sources").clone();
        self.steps
            .bound()
            .into_iter()
            .filter_map(|(name, plugin)| {
                let source = *sources.get(&name)?;
                Some((name, plugin, source))
            })
            .collect()
    }

    /// Open a stored site's credentials and bind it.
    pub fn bind_record(&self, record: &SiteRecord) -> Result<(), String> {
        let mut secrets = BTreeMap::new();
        for (key, sealed) in &record.secrets {
            let value = self
                .sealer
                .open(&record.name, key, sealed)
                .map_err(|e| e.to_string())?;
            secrets.insert(key.clone(), value);
        }
        let definition = SiteDefinition {
            name: record.name.clone(),
            plugin: record.plugin.clone(),
            config: record.config.clone(),
            secrets,
            egress: record.egress.clone(),
            ca_pem: record.ca_pem.clone(),
            max_calls: record.max_calls.map(|n| usize::try_from(n).unwrap_or(0)),
        };
        let bound = bind(&self.runtime, &definition).map_err(|e| e.to_string())?;
        self.steps.bind(&record.name, bound);
        self.sources.lock().expect("sources").insert(
            record.name.clone(),
            Source::Store {
                revision: record.revision,
            },
        );
        Ok(())
    }

    pub fn forget(&self, name: &str) {
        if self.source(name).is_some_and(|s| s != Source::File) {
            self.steps.unbind(name);
            self.sources.lock().expect("sources").remove(name);
        }
    }

    /// Bring the bindings in line with the store: bind sites registered or
    /// changed (by this host or another on the same store), unbind deleted
    /// ones. A site that cannot be bound is reported and skipped, so one
    /// bad site never keeps the others from serving. A stored site never
    /// replaces a sites-file site of the same name.
    pub async fn refresh(&self, store: &Store) -> Result<Vec<(String, String)>, StoreError> {
        let records = store.sites().await?;
        let mut refused = Vec::new();
        for record in &records {
            match self.source(&record.name) {
                Some(Source::File) => continue,
                Some(Source::Store { revision }) if revision == record.revision => continue,
                _ => {}
            }
            if let Err(reason) = self.bind_record(record) {
                refused.push((record.name.clone(), reason));
            }
        }
        let stored: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
        let gone: Vec<String> = self
            .sources
            .lock()
            .expect("sources")
            .iter()
            .filter(|(name, source)| {
                matches!(source, Source::Store { .. }) && !stored.contains(&name.as_str())
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            self.forget(&name);
        }
        Ok(refused)
    }
}

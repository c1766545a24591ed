//! The sites file `rebound serve --sites` reads: each site bound to an
//! installed plugin, with its settings, its credential references and the
//! egress the operator grants. Secrets are never written in the file: a
//! reference names where the host reads them (`env:VAR` or `file:PATH`).
//!
//! [docs/examples/sites.toml](../../../docs/examples/sites.toml) is an
//! example, parsed by this module's tests.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use rebound_api::sites::{SiteDefinition, bind};
use rebound_engine::BoundSite;
use rebound_runtime::Runtime;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SitesFile {
    #[serde(default)]
    sites: BTreeMap<String, SiteEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteEntry {
    /// The installed plugin that reaches the site.
    plugin: String,
    #[serde(default)]
    config: BTreeMap<String, String>,
    /// Credential references: `env:VAR` or `file:PATH`.
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    /// URLs the plugin may reach for this site (beyond nothing).
    #[serde(default)]
    egress: Vec<String>,
    /// A PEM file of extra root certificates for the site's endpoints.
    ca_file: Option<String>,
    /// The most calls of the site's plugin in flight at once, across the
    /// hosts sharing a PostgreSQL store.
    max_calls: Option<usize>,
}

/// Read a credential reference. The message names the reference, never
/// the value.
fn secret(site: &str, key: &str, reference: &str) -> Result<String> {
    let value = if let Some(var) = reference.strip_prefix("env:") {
        std::env::var(var).map_err(|_| {
            anyhow!("site '{site}': secret '{key}' refers to the environment variable {var}, which is not set")
        })?
    } else if let Some(path) = reference.strip_prefix("file:") {
        std::fs::read_to_string(path)
            .with_context(|| format!("site '{site}': reading secret '{key}' from {path}"))?
            .trim_end()
            .to_owned()
    } else {
        bail!(
            "site '{site}': secret '{key}' must be a reference `env:VAR` or `file:PATH`, \
             not a value (secrets stay out of config files)"
        );
    };
    Ok(value)
}

fn parse(text: &str) -> Result<SitesFile, toml::de::Error> {
    toml::from_str(text)
}

/// Read the sites file: the definitions of the sites named in `only` (all
/// of them when `None`), their secrets read from their references. A name
/// of `only` the file lacks is left out; the caller says what is missing.
pub fn definitions(path: &Path, only: Option<&[&str]>) -> Result<BTreeMap<String, SiteDefinition>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file = parse(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let mut definitions = BTreeMap::new();
    for (name, entry) in file.sites {
        if only.is_some_and(|only| !only.contains(&name.as_str())) {
            continue;
        }
        let mut secrets = BTreeMap::new();
        for (key, reference) in &entry.secrets {
            secrets.insert(key.clone(), secret(&name, key, reference)?);
        }
        let ca_pem = match &entry.ca_file {
            Some(ca) => Some(
                std::fs::read_to_string(ca)
                    .with_context(|| format!("site '{name}': reading ca_file {ca}"))?,
            ),
            None => None,
        };
        let definition = SiteDefinition {
            name: name.clone(),
            plugin: entry.plugin,
            config: entry.config,
            secrets,
            egress: entry.egress,
            ca_pem,
            max_calls: entry.max_calls,
        };
        definitions.insert(name, definition);
    }
    Ok(definitions)
}

/// Read the sites file and bind each site to its installed plugin (the
/// same binding as a site registered through the API).
pub fn load(path: &Path, runtime: &Runtime) -> Result<HashMap<String, BoundSite>> {
    let mut sites = HashMap::new();
    for (name, definition) in definitions(path, None)? {
        let bound = bind(runtime, &definition).map_err(|e| anyhow!("site '{name}': {e}"))?;
        sites.insert(name, bound);
    }
    Ok(sites)
}

#[cfg(test)]
mod tests {
    use super::{parse, secret};

    #[test]
    fn the_documented_sites_file_parses() {
        let text = include_str!("../../../docs/examples/sites.toml");
        let file = parse(text).expect("docs/examples/sites.toml");
        assert_eq!(file.sites.len(), 2);
        assert_eq!(
            file.sites["lab-b"].secrets["token"],
            "file:/etc/rebound/lab-b.token"
        );
        assert_eq!(file.sites["lab-b"].max_calls, Some(8));
        assert_eq!(file.sites["lab-a"].max_calls, None);
        let err =
            parse("[sites.x]\nplugin = \"example\"\npassword = \"x\"\n").expect_err("unknown key");
        assert!(
            err.to_string().contains("unknown field `password`"),
            "{err}"
        );
    }

    #[test]
    fn secrets_are_references_never_values() {
        let err = secret("east", "token", "hunter2").expect_err("a value");
        assert!(err.to_string().contains("env:VAR"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = secret("east", "token", "env:REBOUND_TEST_UNSET_VAR").expect_err("unset");
        assert!(err.to_string().contains("REBOUND_TEST_UNSET_VAR"), "{err}");
    }
}

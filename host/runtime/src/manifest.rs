//! The plugin manifest: who a plugin says it is, which contract versions it
//! targets, what it can do and where it wants to connect.

use crate::bindings::Capabilities;
use crate::egress::EgressTemplate;
use crate::error::LoadError;
use semver::{Version, VersionReq};
use serde::Deserialize;

/// Capability names a manifest may list; the same words as the WIT
/// `capabilities` flags.
pub const CAPABILITIES: &[&str] = &[
    "incremental-snapshots",
    "changed-blocks",
    "weighted-redirect",
    "app-consistent-freeze",
    "native-replication",
    "export-disk",
    "import-disk",
    "fencing",
];

/// A parsed and validated `manifest.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub name: String,
    pub version: Version,
    /// The `rebound:provider` versions the plugin is built against.
    pub wit: VersionReq,
    pub capabilities: Vec<String>,
    /// Where the plugin asks to connect, as URL templates over site config.
    pub egress: Vec<EgressTemplate>,
    /// Hex SHA-256 of the component; absent only in a template that
    /// `rebound plugin package` has not filled in yet.
    pub sha256: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    version: String,
    wit: String,
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default)]
    egress: Vec<String>,
    sha256: Option<String>,
}

impl Manifest {
    /// Parse and validate manifest text; every error names the field.
    pub fn parse(text: &str) -> Result<Self, LoadError> {
        let bad = |field: &str, reason: String| LoadError::Manifest {
            field: field.to_owned(),
            reason,
        };
        let raw: RawManifest =
            toml::from_str(text).map_err(|e| bad("(document)", e.message().to_owned()))?;
        if raw.name.is_empty()
            || raw.name.len() > 64
            || !raw
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(bad(
                "name",
                format!("'{}' must be 1-64 characters of a-z, 0-9 and '-'", raw.name),
            ));
        }
        let version = Version::parse(&raw.version).map_err(|e| {
            bad(
                "version",
                format!("'{}' is not a semver version: {e}", raw.version),
            )
        })?;
        let wit = VersionReq::parse(&raw.wit).map_err(|e| {
            bad(
                "wit",
                format!("'{}' is not a version range such as \"^0.1\": {e}", raw.wit),
            )
        })?;
        for cap in &raw.capabilities {
            if !CAPABILITIES.contains(&cap.as_str()) {
                return Err(bad(
                    "capabilities",
                    format!(
                        "unknown capability '{cap}'; known: {}",
                        CAPABILITIES.join(", ")
                    ),
                ));
            }
        }
        let egress = raw
            .egress
            .iter()
            .map(|e| EgressTemplate::parse(e).map_err(|reason| bad("egress", reason)))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(digest) = &raw.sha256
            && (digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(bad(
                "sha256",
                "must be 64 hexadecimal characters".to_owned(),
            ));
        }
        Ok(Self {
            name: raw.name,
            version,
            wit,
            capabilities: raw.capabilities,
            egress,
            sha256: raw.sha256.map(|d| d.to_ascii_lowercase()),
        })
    }

    /// Render back to TOML, with `sha256` set; what `rebound plugin package`
    /// writes and what a signature covers.
    pub fn render(&self) -> String {
        let list = |items: Vec<String>| {
            items
                .iter()
                .map(|i| format!("{i:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = format!(
            "name = {:?}\nversion = \"{}\"\nwit = \"{}\"\ncapabilities = [{}]\negress = [{}]\n",
            self.name,
            self.version,
            self.wit,
            list(self.capabilities.clone()),
            list(self.egress.iter().map(ToString::to_string).collect()),
        );
        if let Some(digest) = &self.sha256 {
            out.push_str(&format!("sha256 = \"{digest}\"\n"));
        }
        out
    }
}

/// The sorted capability names of a `describe()` answer, in manifest words.
pub fn capability_names(caps: Capabilities) -> Vec<String> {
    let all = [
        (Capabilities::INCREMENTAL_SNAPSHOTS, "incremental-snapshots"),
        (Capabilities::CHANGED_BLOCKS, "changed-blocks"),
        (Capabilities::WEIGHTED_REDIRECT, "weighted-redirect"),
        (Capabilities::APP_CONSISTENT_FREEZE, "app-consistent-freeze"),
        (Capabilities::NATIVE_REPLICATION, "native-replication"),
        (Capabilities::EXPORT_DISK, "export-disk"),
        (Capabilities::IMPORT_DISK, "import-disk"),
        (Capabilities::FENCING, "fencing"),
    ];
    let mut names: Vec<String> = all
        .iter()
        .filter(|(flag, _)| caps.contains(*flag))
        .map(|(_, name)| (*name).to_owned())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests;

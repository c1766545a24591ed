//! Errors at the runtime's boundary: why a plugin was refused at load, and
//! why a call did not return the plugin's own answer.

use std::time::Duration;

use crate::bindings::ProviderError;

/// Why a plugin package was refused. Each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("manifest field `{field}` is invalid: {reason}")]
    Manifest { field: String, reason: String },

    #[error(
        "plugin '{plugin}': component digest is sha256:{actual} but the manifest says sha256:{expected}; \
         the .wasm was altered or belongs to another build; repackage it with `rebound plugin package`"
    )]
    DigestMismatch {
        plugin: String,
        expected: String,
        actual: String,
    },

    #[error(
        "plugin '{plugin}': manifest has no sha256; package it with `rebound plugin package` first"
    )]
    MissingDigest { plugin: String },

    #[error(
        "plugin '{plugin}' is unsigned and this host only loads signed plugins; sign it with \
         `rebound plugin package --key …`, or set `allow_unsigned` for development"
    )]
    Unsigned { plugin: String },

    #[error(
        "plugin '{plugin}': the signature does not verify against any of the {trusted} trusted \
         key(s); it was signed by another key or the manifest was changed after signing{hint}"
    )]
    BadSignature {
        plugin: String,
        trusted: usize,
        hint: String,
    },

    #[error(
        "plugin '{plugin}' targets rebound:provider {wanted}, which this host does not support; \
         supported: {supported}. Rebuild the plugin against a supported SDK"
    )]
    IncompatibleWit {
        plugin: String,
        wanted: String,
        supported: String,
    },

    #[error(
        "plugin '{plugin}' imports `{import}`, which plugins are not granted; a provider may import \
         only wasi:http/outgoing-handler, rebound:provider log/config/secrets and the WASI basics \
         Rust's std needs (clocks, random, stdio, environment, exit)"
    )]
    ForbiddenImport { plugin: String, import: String },

    #[error(
        "plugin '{plugin}': {field} is '{reported}' in describe() but '{manifest}' in the manifest"
    )]
    ManifestMismatch {
        plugin: String,
        field: &'static str,
        manifest: String,
        reported: String,
    },

    #[error("plugin '{plugin}' is not a valid component: {reason}")]
    InvalidComponent { plugin: String, reason: String },

    #[error("plugin '{plugin}': describe() failed at load: {source}")]
    Describe {
        plugin: String,
        #[source]
        source: Box<CallError>,
    },

    #[error("reading plugin package {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What went wrong with one call into a plugin.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The plugin answered with its own typed error.
    #[error("plugin '{plugin}' {function}: {}", explain(error))]
    Provider {
        plugin: String,
        function: &'static str,
        error: ProviderError,
    },

    /// The call ran past its deadline and was killed.
    #[error(
        "plugin '{plugin}' {function} was killed after exceeding its {budget:?} deadline \
         (a plugin call must finish within the step's remaining RTO budget)"
    )]
    DeadlineExceeded {
        plugin: String,
        function: &'static str,
        budget: Duration,
    },

    /// The instance tried to grow past its memory limit and was stopped.
    #[error(
        "plugin '{plugin}' {function} was stopped for exceeding its memory limit of {limit_mib} MiB \
         ({detail})"
    )]
    MemoryLimit {
        plugin: String,
        function: &'static str,
        limit_mib: u64,
        detail: String,
    },

    /// The guest trapped (a Rust panic becomes an `unreachable` trap).
    #[error("plugin '{plugin}' {function} crashed: {reason}")]
    Trapped {
        plugin: String,
        function: &'static str,
        reason: String,
    },

    /// A sandbox rule stopped something the plugin tried (forbidden egress,
    /// oversized response, too many connections); the plugin's own error
    /// follows.
    #[error(
        "plugin '{plugin}' {function}: {violation} (the plugin then reported: {})",
        explain(error)
    )]
    Sandbox {
        plugin: String,
        function: &'static str,
        violation: String,
        error: ProviderError,
    },

    /// The plugin crashed too often recently and is not called until an
    /// operator releases it or a new version is installed.
    #[error(
        "plugin '{plugin}@{version}' is quarantined after {crashes} crashes within {window:?} (last: {last}); \
         release it with `POST /api/v1/plugins/{plugin}/release` or install a fixed version"
    )]
    Quarantined {
        plugin: String,
        version: String,
        crashes: usize,
        window: Duration,
        last: String,
    },

    /// An operator disabled the plugin; nothing calls it until enabled.
    #[error(
        "plugin '{plugin}@{version}' is disabled; enable it with `POST /api/v1/plugins/{plugin}/enable`"
    )]
    Disabled { plugin: String, version: String },

    /// The host could not set the call up (instantiation failed).
    #[error("plugin '{plugin}' {function}: the host could not run the call: {reason}")]
    Host {
        plugin: String,
        function: &'static str,
        reason: String,
    },
}

impl CallError {
    /// Whether this failure counts against the plugin's crash budget.
    pub fn is_crash(&self) -> bool {
        matches!(
            self,
            Self::DeadlineExceeded { .. } | Self::MemoryLimit { .. } | Self::Trapped { .. }
        )
    }

    /// The plugin's own error, when the call ended with one the sandbox did
    /// not cause; a `Sandbox` refusal is never worth retrying as is.
    pub fn provider_error(&self) -> Option<&ProviderError> {
        match self {
            Self::Provider { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// A provider error in words (the generated `Display` is `Debug`-like).
pub fn explain(error: &ProviderError) -> String {
    match error {
        ProviderError::NotFound(m) => format!("not found: {m}"),
        ProviderError::Unauthorized(m) => format!("unauthorized: {m}"),
        ProviderError::Throttled(t) => match t.retry_after_ms {
            Some(ms) => format!("throttled (retry after {ms} ms): {}", t.message),
            None => format!("throttled: {}", t.message),
        },
        ProviderError::Transient(m) => format!("transient failure: {m}"),
        ProviderError::InvalidRequest(m) => format!("invalid request: {m}"),
        ProviderError::Unsupported(m) => format!("unsupported: {m}"),
        ProviderError::Conflict(m) => format!("conflict: {m}"),
        ProviderError::ProviderFailed(m) => format!("provider failed: {m}"),
    }
}

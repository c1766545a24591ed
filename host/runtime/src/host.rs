//! The store state of one call and the host side of the plugin's imports:
//! `log` (bridged into `tracing`), `config`, `secrets`, and the WASI views.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use rand::RngCore;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::bindings::v0_2_0::rebound::provider::{config, log, secrets, types};
use crate::context::{AuditEvent, AuditSink, SiteGrant};
use crate::egress::EgressPolicy;
use crate::http::EgressHooks;
use crate::limits::{Limits, MemoryLimiter};

/// A secret opened by the plugin: which one, and its placeholder once asked.
pub struct SecretHandle {
    site: String,
    name: String,
}

/// A placeholder handed to the plugin and the value it stands for.
pub(crate) struct Placeholder {
    pub(crate) token: String,
    pub(crate) site: String,
    pub(crate) value: String,
}

/// State shared between the store and the HTTP futures of one call.
pub(crate) struct CallShared {
    pub(crate) plugin: String,
    pub(crate) version: String,
    pub(crate) sites: BTreeMap<String, SiteGrant>,
    pub(crate) egress: EgressPolicy,
    pub(crate) deadline: Instant,
    pub(crate) limits: Limits,
    /// What the sandbox refused during the call, in order.
    pub(crate) violations: Mutex<Vec<String>>,
    pub(crate) placeholders: Mutex<Vec<Placeholder>>,
    /// Values the plugin saw in clear; redacted from its logs.
    pub(crate) revealed: Mutex<Vec<String>>,
    pub(crate) connections: Arc<tokio::sync::Semaphore>,
    pub(crate) log_records: AtomicUsize,
    pub(crate) audit: Option<Arc<dyn AuditSink>>,
    pub(crate) tls: Arc<crate::http::TlsConfigs>,
    pub(crate) faults: Option<Arc<crate::context::Faults>>,
}

impl CallShared {
    pub(crate) fn violation(&self, message: String) {
        tracing::warn!(plugin = %self.plugin, version = %self.version, "{message}");
        lock(&self.violations).push(message);
    }

    /// A provider error with revealed values and placeholders masked.
    pub(crate) fn redact_error(
        &self,
        error: crate::bindings::ProviderError,
    ) -> crate::bindings::ProviderError {
        use crate::bindings::ProviderError as E;
        match error {
            E::NotFound(m) => E::NotFound(self.redact(&m)),
            E::Unauthorized(m) => E::Unauthorized(self.redact(&m)),
            E::Throttled(mut t) => {
                t.message = self.redact(&t.message);
                E::Throttled(t)
            }
            E::Transient(m) => E::Transient(self.redact(&m)),
            E::InvalidRequest(m) => E::InvalidRequest(self.redact(&m)),
            E::Unsupported(m) => E::Unsupported(self.redact(&m)),
            E::Conflict(m) => E::Conflict(self.redact(&m)),
            E::ProviderFailed(m) => E::ProviderFailed(self.redact(&m)),
        }
    }

    fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for value in lock(&self.revealed).iter() {
            if !value.is_empty() {
                out = out.replace(value.as_str(), "***");
            }
        }
        for p in lock(&self.placeholders).iter() {
            out = out.replace(&p.token, "***");
        }
        out
    }
}

/// Poisoning only means another thread panicked mid-update of a log-like
/// list; the data is still usable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The `T` of `Store<T>` for one call.
pub struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: EgressHooks,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) shared: Arc<CallShared>,
    pub(crate) stderr: MemoryOutputPipe,
}

const STDERR_CAPTURE: usize = 16 << 10;

impl HostState {
    pub(crate) fn new(shared: Arc<CallShared>, hooks: EgressHooks) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE);
        // No environment, arguments, preopened directories, stdin or sockets:
        // a plugin reaches nothing but what the imports below hand it.
        let wasi = wasmtime_wasi::WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks,
            limiter: MemoryLimiter::new(shared.limits.memory_bytes),
            shared,
            stderr,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl types::Host for HostState {}

const MAX_LOG_MESSAGE: usize = 4096;

impl log::Host for HostState {
    fn log(
        &mut self,
        level: log::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        let s = &self.shared;
        let n = s.log_records.fetch_add(1, Ordering::Relaxed);
        if n == s.limits.max_log_records {
            tracing::warn!(plugin = %s.plugin, version = %s.version,
                "plugin exceeded {} log records in one call; dropping the rest", n);
        }
        if n >= s.limits.max_log_records {
            return Ok(());
        }
        let mut message = s.redact(&message);
        if message.len() > MAX_LOG_MESSAGE {
            let mut cut = MAX_LOG_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let fields = fields
            .iter()
            .map(|(k, v)| format!("{k}={}", s.redact(v)))
            .collect::<Vec<_>>()
            .join(" ");
        let (plugin, version) = (&s.plugin, &s.version);
        match level {
            log::Level::Trace => {
                tracing::trace!(target: "rebound::plugin", plugin = %plugin, version = %version, fields = %fields, "{message}")
            }
            log::Level::Debug => {
                tracing::debug!(target: "rebound::plugin", plugin = %plugin, version = %version, fields = %fields, "{message}")
            }
            log::Level::Info => {
                tracing::info!(target: "rebound::plugin", plugin = %plugin, version = %version, fields = %fields, "{message}")
            }
            log::Level::Warn => {
                tracing::warn!(target: "rebound::plugin", plugin = %plugin, version = %version, fields = %fields, "{message}")
            }
            log::Level::Error => {
                tracing::error!(target: "rebound::plugin", plugin = %plugin, version = %version, fields = %fields, "{message}")
            }
        }
        Ok(())
    }
}

impl config::Host for HostState {
    fn get(&mut self, site: String, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self
            .shared
            .sites
            .get(&site)
            .and_then(|s| s.config.get(&key).cloned()))
    }

    fn all(&mut self, site: String) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self
            .shared
            .sites
            .get(&site)
            .map(|s| {
                s.config
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }
}

impl secrets::Host for HostState {
    fn open(
        &mut self,
        site: String,
        name: String,
    ) -> wasmtime::Result<Result<Resource<SecretHandle>, String>> {
        let Some(grant) = self.shared.sites.get(&site) else {
            return Ok(Err(format!("site '{site}' is not part of this call")));
        };
        if !grant.secrets.contains_key(&name) {
            return Ok(Err(format!(
                "site '{site}' has no secret '{name}'; add it to the site's credentials"
            )));
        }
        Ok(Ok(self.table.push(SecretHandle { site, name })?))
    }
}

impl secrets::HostSecret for HostState {
    fn placeholder(&mut self, handle: Resource<SecretHandle>) -> wasmtime::Result<String> {
        let secret = self.table.get(&handle)?;
        let value = self.secret_value(&secret.site, &secret.name)?;
        let mut bytes = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut bytes);
        let token = format!("rebound-secret-{}", hex::encode(bytes));
        lock(&self.shared.placeholders).push(Placeholder {
            token: token.clone(),
            site: secret.site.clone(),
            value,
        });
        Ok(token)
    }

    fn reveal(&mut self, handle: Resource<SecretHandle>) -> wasmtime::Result<String> {
        let secret = self.table.get(&handle)?;
        let value = self.secret_value(&secret.site, &secret.name)?;
        let s = &self.shared;
        tracing::info!(target: "rebound::audit", plugin = %s.plugin, version = %s.version,
            site = %secret.site, secret = %secret.name, "plugin revealed a secret");
        if let Some(audit) = &s.audit {
            audit.record(AuditEvent::SecretRevealed {
                plugin: s.plugin.clone(),
                version: s.version.clone(),
                site: secret.site.clone(),
                secret: secret.name.clone(),
            });
        }
        lock(&s.revealed).push(value.clone());
        Ok(value)
    }

    fn drop(&mut self, handle: Resource<SecretHandle>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

impl HostState {
    fn secret_value(&self, site: &str, name: &str) -> wasmtime::Result<String> {
        self.shared
            .sites
            .get(site)
            .and_then(|s| s.secrets.get(name))
            .map(|v| v.expose().to_owned())
            .ok_or_else(|| {
                wasmtime::format_err!("secret '{name}' of site '{site}' vanished during the call")
            })
    }
}

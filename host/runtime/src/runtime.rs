//! The runtime: one wasmtime engine (pooling allocator, epoch interruption,
//! on-disk compilation cache), the linker with exactly the imports plugins
//! are granted, the registry of loaded plugin versions, and the call path
//! that instantiates a fresh instance per call under hard limits.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use semver::Version;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap,
    UpdateDeadline,
};

use crate::bindings::v0_2_0::rebound::provider::{config, log, secrets, types};
use crate::bindings::{Capabilities, PROVIDER_EXPORT_PREFIX, PluginInfo, PluginPre, SUPPORTED_WIT};
use crate::context::{AuditSink, CallContext};
use crate::egress::{EgressPolicy, SiteEgress};
use crate::error::{CallError, LoadError};
use crate::export::{Describe, Export};
use crate::host::{CallShared, HostState, lock};
use crate::http::{EgressHooks, TlsConfigs};
use crate::limits::Limits;
use crate::manifest::Manifest;
use crate::package::{PluginPackage, TrustPolicy};
use crate::plugin::Plugin;

/// How often the epoch advances; the granularity of call deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Per-slot bytes of linear memory and table kept resident between calls.
const RESIDENT_MEMORY: usize = 4 << 20;
const RESIDENT_TABLE: usize = 64 << 10;

/// Runtime settings.
#[derive(Clone, Default)]
pub struct RuntimeConfig {
    pub limits: Limits,
    pub trust: TrustPolicy,
    /// Where compiled components are cached across restarts; none disables
    /// the on-disk cache.
    pub cache_dir: Option<PathBuf>,
    /// Instances alive at once (pool size).
    pub max_instances: Option<u32>,
    pub audit: Option<Arc<dyn AuditSink>>,
}

impl std::fmt::Debug for RuntimeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeConfig")
            .field("limits", &self.limits)
            .field("cache_dir", &self.cache_dir)
            .finish_non_exhaustive()
    }
}

/// Import names a plugin may have; anything else is refused at load.
const ALLOWED_IMPORTS: &[&str] = &[
    "wasi:http/outgoing-handler@0.2",
    "wasi:http/types@0.2",
    "wasi:io/",
    "wasi:clocks/wall-clock@0.2",
    "wasi:clocks/monotonic-clock@0.2",
    "wasi:random/",
    "wasi:cli/environment@0.2",
    "wasi:cli/exit@0.2",
    "wasi:cli/stdin@0.2",
    "wasi:cli/stdout@0.2",
    "wasi:cli/stderr@0.2",
    "wasi:cli/terminal-",
    // Of the contract version the component exports (the linker has only
    // the supported versions' imports).
    "rebound:provider/types@",
    "rebound:provider/log@",
    "rebound:provider/config@",
    "rebound:provider/secrets@",
];

struct Versions {
    active: Arc<Plugin>,
    all: BTreeMap<Version, Arc<Plugin>>,
}

pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    config: RuntimeConfig,
    plugins: ArcSwap<HashMap<String, Arc<Versions>>>,
    compiled: Mutex<HashMap<String, Component>>,
    tls: Arc<TlsConfigs>,
    stop_ticker: Arc<AtomicBool>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Self> {
        let mut wasm = Config::new();
        wasm.epoch_interruption(true);
        wasm.max_wasm_stack(1 << 20);
        let instances = config.max_instances.unwrap_or(256);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(instances)
            .total_core_instances(instances * 4)
            .total_memories(instances * 2)
            .total_tables(instances * 4)
            .total_stacks(instances)
            .max_memories_per_component(2)
            .max_memory_size(usize::try_from(config.limits.memory_bytes)?)
            // Reset only the pages a call touched, with memset, instead of
            // unmapping the whole memory: the next call's instance then
            // starts without page faults (Linux ≥ 6.7; otherwise madvise).
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(RESIDENT_MEMORY)
            .table_keep_resident(RESIDENT_TABLE);
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if let Some(dir) = &config.cache_dir {
            let mut cache = wasmtime::CacheConfig::new();
            cache.with_directory(dir);
            wasm.cache(Some(wasmtime::Cache::new(cache)?));
        }
        let engine = Engine::new(&wasm)?;

        let mut linker = Linker::new(&engine);
        // Only what Rust's std needs from WASI (clocks, random, stdio) plus
        // wasi:http; no filesystem, no sockets.
        wasmtime_wasi::p2::add_to_linker_proxy_interfaces_async(&mut linker)?;
        {
            use wasmtime_wasi::cli::{WasiCli, WasiCliView as _};
            use wasmtime_wasi::p2::bindings::cli;
            let l = &mut linker;
            cli::environment::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
            cli::exit::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
            cli::terminal_input::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
            cli::terminal_output::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
            cli::terminal_stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
            cli::terminal_stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
            cli::terminal_stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
        }
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        types::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        log::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        config::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        secrets::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        crate::v0_1::add_to_linker(&mut linker)?;

        let stop_ticker = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop_ticker.clone();
            std::thread::Builder::new()
                .name("rebound-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })?;
        }
        Ok(Self {
            engine,
            linker,
            config,
            plugins: ArcSwap::default(),
            compiled: Mutex::default(),
            tls: Arc::new(TlsConfigs::new()?),
            stop_ticker,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.config.limits
    }

    /// Verify, compile and check a package; does not install it.
    pub async fn load(&self, package: &PluginPackage) -> Result<Arc<Plugin>, LoadError> {
        let manifest = package.verify(&self.config.trust)?;
        let plugin = manifest.name.clone();
        if !SUPPORTED_WIT.iter().any(|v| manifest.wit.matches(v)) {
            return Err(LoadError::IncompatibleWit {
                plugin,
                wanted: manifest.wit.to_string(),
                supported: supported_wit(),
            });
        }
        let digest = manifest.sha256.clone().unwrap_or_default();
        let component = self.compile(&plugin, &digest, &package.wasm).await?;
        let contract = self.check_world(&manifest, &component)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(|pre| PluginPre::new(pre, &contract))
            .map_err(|e| LoadError::InvalidComponent {
                plugin: plugin.clone(),
                reason: format!("{e:#}"),
            })?;
        // Not installed anywhere: only used to ask the component who it is.
        let unknown = PluginInfo {
            name: manifest.name.clone(),
            version: manifest.version.to_string(),
            platform: String::new(),
            capabilities: Capabilities::empty(),
            export_formats: Vec::new(),
            import_formats: Vec::new(),
            snapshot_granularity_secs: 0,
        };
        let candidate = Arc::new(Plugin::new(
            manifest.clone(),
            unknown,
            digest.clone(),
            pre.clone(),
        ));
        let info = self
            .call(
                &candidate,
                &CallContext::none(Duration::from_secs(10)),
                Describe,
            )
            .await
            .map_err(|e| LoadError::Describe {
                plugin: plugin.clone(),
                source: Box::new(e),
            })?;
        let mismatch = |field, manifest: String, reported: String| LoadError::ManifestMismatch {
            plugin: plugin.clone(),
            field,
            manifest,
            reported,
        };
        if info.name != manifest.name {
            return Err(mismatch("name", manifest.name.clone(), info.name));
        }
        if info.version != manifest.version.to_string() {
            return Err(mismatch(
                "version",
                manifest.version.to_string(),
                info.version,
            ));
        }
        let reported = crate::manifest::capability_names(info.capabilities);
        let mut declared = manifest.capabilities.clone();
        declared.sort();
        if reported != declared {
            return Err(mismatch(
                "capabilities",
                declared.join(", "),
                reported.join(", "),
            ));
        }
        Ok(Arc::new(Plugin::new(manifest, info, digest, pre)))
    }

    /// Compile (or fetch from the caches) off the async executor: compiling
    /// takes hundreds of milliseconds, during which the host keeps serving.
    async fn compile(
        &self,
        plugin: &str,
        digest: &str,
        wasm: &[u8],
    ) -> Result<Component, LoadError> {
        if let Some(c) = lock(&self.compiled).get(digest) {
            return Ok(c.clone());
        }
        let invalid = |reason: String| LoadError::InvalidComponent {
            plugin: plugin.to_owned(),
            reason,
        };
        let engine = self.engine.clone();
        let bytes = wasm.to_vec();
        let component = tokio::task::spawn_blocking(move || Component::new(&engine, &bytes))
            .await
            .map_err(|e| invalid(format!("compilation did not finish: {e}")))?
            .map_err(|e| invalid(format!("{e:#}")))?;
        lock(&self.compiled).insert(digest.to_owned(), component.clone());
        Ok(component)
    }

    /// The component must export a supported `rebound:provider/provider`
    /// and import nothing outside the allow-list.
    /// Check the component's imports and which contract version it exports;
    /// returns that version.
    fn check_world(
        &self,
        manifest: &Manifest,
        component: &Component,
    ) -> Result<Version, LoadError> {
        let plugin = manifest.name.clone();
        let ty = component.component_type();
        for (name, _) in ty.imports(&self.engine) {
            if !ALLOWED_IMPORTS.iter().any(|p| name.starts_with(p)) {
                return Err(LoadError::ForbiddenImport {
                    plugin,
                    import: name.to_owned(),
                });
            }
        }
        let export = ty
            .exports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .find(|name| name.starts_with(PROVIDER_EXPORT_PREFIX));
        let Some(export) = export else {
            return Err(LoadError::InvalidComponent {
                plugin,
                reason: "it does not export rebound:provider/provider; build it with the Rebound plugin SDK's register! macro".into(),
            });
        };
        let version = &export[PROVIDER_EXPORT_PREFIX.len()..];
        let supported = Version::parse(version).ok().and_then(|v| {
            SUPPORTED_WIT
                .iter()
                .find(|s| s.major == v.major && s.minor == v.minor && (s.major > 0 || s.minor > 0))
        });
        let Some(supported) = supported else {
            return Err(LoadError::IncompatibleWit {
                plugin,
                wanted: version.to_owned(),
                supported: supported_wit(),
            });
        };
        if !manifest
            .wit
            .matches(&Version::parse(version).unwrap_or(Version::new(0, 0, 0)))
        {
            return Err(LoadError::Manifest {
                field: "wit".into(),
                reason: format!(
                    "the manifest says {} but the component exports rebound:provider@{version}",
                    manifest.wit
                ),
            });
        }
        Ok(supported.clone())
    }

    /// Make `plugin` the active version of its name. Calls already running
    /// keep the version they started with; the previous versions stay
    /// available for runs pinned to them. A plugin an operator disabled
    /// stays disabled in its new version.
    pub fn install(&self, plugin: Arc<Plugin>) {
        if self
            .active(&plugin.manifest.name)
            .is_some_and(|a| !a.enabled())
        {
            plugin.set_enabled(false);
        }
        self.plugins.rcu(|current| {
            let mut next = HashMap::clone(current);
            let name = plugin.manifest.name.clone();
            let mut all = next.get(&name).map(|v| v.all.clone()).unwrap_or_default();
            all.insert(plugin.manifest.version.clone(), plugin.clone());
            next.insert(
                name,
                Arc::new(Versions {
                    active: plugin.clone(),
                    all,
                }),
            );
            next
        });
        tracing::info!(plugin = %plugin.manifest.name, version = %plugin.manifest.version,
            digest = %plugin.digest, "plugin installed");
    }

    /// Keep `plugin` among its name's versions without changing which one
    /// is active (it becomes active when it is the first of its name):
    /// another host published it, and the store says which is active.
    pub fn add(&self, plugin: Arc<Plugin>) {
        let name = plugin.manifest.name.clone();
        if let Some(active) = self.active(&name) {
            plugin.set_enabled(active.enabled());
        }
        self.plugins.rcu(|current| {
            let mut next = HashMap::clone(current);
            let (active, mut all) = match next.get(&name) {
                Some(v) => (v.active.clone(), v.all.clone()),
                None => (plugin.clone(), Default::default()),
            };
            all.insert(plugin.manifest.version.clone(), plugin.clone());
            next.insert(name.clone(), Arc::new(Versions { active, all }));
            next
        });
        tracing::info!(plugin = %name, version = %plugin.manifest.version,
            digest = %plugin.digest, "plugin version added");
    }

    /// The active version of a plugin.
    pub fn active(&self, name: &str) -> Option<Arc<Plugin>> {
        self.plugins.load().get(name).map(|v| v.active.clone())
    }

    /// A specific version, for runs pinned to it.
    pub fn version(&self, name: &str, version: &Version) -> Option<Arc<Plugin>> {
        self.plugins
            .load()
            .get(name)
            .and_then(|v| v.all.get(version).cloned())
    }

    /// Every loaded version of a plugin, newest first.
    pub fn versions(&self, name: &str) -> Vec<Arc<Plugin>> {
        self.plugins
            .load()
            .get(name)
            .map(|v| v.all.values().rev().cloned().collect())
            .unwrap_or_default()
    }

    /// Make an already loaded version the active one (a rollback to a
    /// known good version); `None` when it is not loaded. Calls already
    /// running finish on the version they started with.
    pub fn activate(&self, name: &str, version: &Version) -> Option<Arc<Plugin>> {
        let plugin = self.version(name, version)?;
        self.install(plugin.clone());
        Some(plugin)
    }

    /// Enable or disable every version of a plugin; a disabled plugin's
    /// calls fail at once with [`CallError::Disabled`]. `None` when no
    /// plugin has that name.
    pub fn set_enabled(&self, name: &str, enabled: bool) -> Option<Arc<Plugin>> {
        let map = self.plugins.load();
        let versions = map.get(name)?;
        for plugin in versions.all.values() {
            plugin.set_enabled(enabled);
        }
        tracing::info!(plugin = %name, enabled, "plugin enabled state changed");
        Some(versions.active.clone())
    }

    /// Active plugins, sorted by name.
    pub fn list(&self) -> Vec<Arc<Plugin>> {
        let map = self.plugins.load();
        let mut out: Vec<_> = map.values().map(|v| v.active.clone()).collect();
        out.sort_by(|a, b| a.manifest.name.cmp(&b.manifest.name));
        out
    }

    /// Call one export on a fresh instance of `plugin`; counted and timed
    /// by [`crate::metrics`].
    pub async fn call<E: Export>(
        &self,
        plugin: &Arc<Plugin>,
        ctx: &CallContext,
        request: E,
    ) -> Result<E::Output, CallError> {
        let started = Instant::now();
        let result = self.invoke(plugin, ctx, request).await;
        crate::metrics::call(
            &plugin.manifest.name,
            &plugin.manifest.version.to_string(),
            E::NAME,
            crate::metrics::outcome(&result),
            started.elapsed(),
        );
        result
    }

    async fn invoke<E: Export>(
        &self,
        plugin: &Arc<Plugin>,
        ctx: &CallContext,
        request: E,
    ) -> Result<E::Output, CallError> {
        let limits = &self.config.limits;
        plugin.check_quarantine(limits.crash_window)?;
        let function = E::NAME;
        let name = format!("{}@{}", plugin.manifest.name, plugin.manifest.version);
        let budget = ctx.budget.min(limits.max_call);
        let deadline = Instant::now() + budget;
        let shared = Arc::new(self.shared(plugin, ctx, deadline));

        let mut store = Store::new(
            &self.engine,
            HostState::new(shared.clone(), EgressHooks::new(shared.clone())),
        );
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            // Yield to the executor every tick so a spinning guest cannot
            // starve other calls, and kill it once the deadline passes.
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });

        let run = async {
            let world = plugin
                .pre
                .instantiate_async(&mut store)
                .await
                .map_err(Setup)?;
            request.invoke(&world, &mut store).await.map_err(Guest)
        };
        // The epoch deadline cannot fire while the guest waits on host I/O,
        // hence the timeout around the whole call as well.
        let outcome = tokio::time::timeout(budget + EPOCH_TICK * 4, run).await;

        let refused_memory = store.data().limiter.refused.clone();
        let stderr = String::from_utf8_lossy(&store.data().stderr.contents()).into_owned();
        drop(store);
        let violations = std::mem::take(&mut *lock(&shared.violations));
        // Whatever the plugin saw in clear never leaves in its error.
        let outcome = outcome.map(|r| r.map(|r| r.map_err(|e| shared.redact_error(e))));

        let result = match outcome {
            Err(_) => Err(CallError::DeadlineExceeded {
                plugin: name,
                function,
                budget,
            }),
            Ok(Ok(Ok(value))) => {
                if !violations.is_empty() {
                    tracing::warn!(plugin = %name, function, ?violations, "plugin call succeeded despite refused requests");
                }
                Ok(value)
            }
            Ok(Ok(Err(error))) => Err(match violations.into_iter().next() {
                Some(violation) => CallError::Sandbox {
                    plugin: name,
                    function,
                    violation,
                    error,
                },
                None => CallError::Provider {
                    plugin: name,
                    function,
                    error,
                },
            }),
            Ok(Err(Setup(e))) => Err(CallError::Host {
                plugin: name,
                function,
                reason: format!("{e:#}"),
            }),
            Ok(Err(Guest(e))) => Err(classify(
                e,
                name,
                function,
                budget,
                limits,
                refused_memory,
                &stderr,
            )),
        };
        if let Err(e) = &result
            && e.is_crash()
        {
            tracing::warn!(error = %e, "plugin call crashed");
            plugin.record_crash(e.to_string(), limits.crash_budget, limits.crash_window);
        }
        result
    }

    /// Instantiate once and keep the instance for repeated calls. Only for
    /// measuring what a fresh instance per call costs (the benchmark's
    /// baseline): provider calls never reuse an instance, so no state leaks
    /// between calls.
    pub async fn warm(
        &self,
        plugin: &Arc<Plugin>,
        ctx: &CallContext,
    ) -> anyhow::Result<WarmInstance> {
        let deadline = Instant::now() + self.config.limits.max_call;
        let shared = Arc::new(self.shared(plugin, ctx, deadline));
        let mut store = Store::new(
            &self.engine,
            HostState::new(shared.clone(), EgressHooks::new(shared)),
        );
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(u64::MAX / 2);
        let world = plugin
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        Ok(WarmInstance { store, world })
    }

    fn shared(&self, plugin: &Plugin, ctx: &CallContext, deadline: Instant) -> CallShared {
        let sites = ctx
            .sites
            .iter()
            .map(|site| {
                // A template over a setting this site lacks grants nothing
                // here; a denial mentions it.
                let (mut requested, mut unrendered) = (Vec::new(), Vec::new());
                for template in &plugin.manifest.egress {
                    match template.render(&site.config) {
                        Ok(rule) => requested.push(rule),
                        Err(e) => unrendered.push(e),
                    }
                }
                SiteEgress {
                    site: site.name.clone(),
                    requested,
                    granted: site.egress.clone(),
                    unrendered,
                }
            })
            .collect();
        let limits = self.config.limits.clone();
        CallShared {
            plugin: plugin.manifest.name.clone(),
            version: plugin.manifest.version.to_string(),
            sites: ctx
                .sites
                .iter()
                .map(|s| (s.name.clone(), s.clone()))
                .collect(),
            egress: EgressPolicy {
                plugin: plugin.manifest.name.clone(),
                sites,
            },
            deadline,
            connections: Arc::new(tokio::sync::Semaphore::new(limits.max_connections)),
            limits,
            violations: Mutex::default(),
            placeholders: Mutex::default(),
            revealed: Mutex::default(),
            log_records: Default::default(),
            audit: self.config.audit.clone(),
            tls: self.tls.clone(),
            faults: ctx.faults.clone(),
        }
    }
}

/// An instance kept alive across calls; see [`Runtime::warm`].
pub struct WarmInstance {
    store: Store<HostState>,
    world: crate::bindings::PluginWorld,
}

impl WarmInstance {
    pub async fn call<E: Export>(
        &mut self,
        request: E,
    ) -> anyhow::Result<Result<E::Output, crate::bindings::ProviderError>> {
        request
            .invoke(&self.world, &mut self.store)
            .await
            .map_err(|e| anyhow::anyhow!("{e:#}"))
    }
}

enum Failure {
    Setup(wasmtime::Error),
    Guest(wasmtime::Error),
}
use Failure::{Guest, Setup};

fn classify(
    error: wasmtime::Error,
    plugin: String,
    function: &'static str,
    budget: Duration,
    limits: &Limits,
    refused_memory: Option<String>,
    stderr: &str,
) -> CallError {
    if let Some(detail) = refused_memory {
        return CallError::MemoryLimit {
            plugin,
            function,
            limit_mib: limits.memory_bytes >> 20,
            detail,
        };
    }
    if matches!(error.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        return CallError::DeadlineExceeded {
            plugin,
            function,
            budget,
        };
    }
    // A Rust panic prints its message to stderr before trapping.
    let panic = stderr.lines().find(|l| l.contains("panicked at")).map(|l| {
        let rest: Vec<&str> = stderr
            .lines()
            .skip_while(|x| *x != l)
            .skip(1)
            .take(1)
            .collect();
        format!("panic: {} {}", l.trim(), rest.join(" ").trim())
    });
    let trap = error
        .downcast_ref::<Trap>()
        .map(ToString::to_string)
        .unwrap_or_else(|| format!("{error:#}"));
    CallError::Trapped {
        plugin,
        function,
        reason: match panic {
            Some(p) => format!("{p} ({trap})"),
            None => trap,
        },
    }
}

fn supported_wit() -> String {
    SUPPORTED_WIT
        .iter()
        .map(|v| format!("{}.{}.x", v.major, v.minor))
        .collect::<Vec<_>>()
        .join(", ")
}

//! `rebound serve`: the host service. It opens the store (an SQLite file
//! created and migrated on first start, or PostgreSQL), runs the plugin
//! runtime with the plugin packages of a folder, binds the sites of a sites
//! file to their plugins, runs executor workers that claim runs from the
//! store and drive them through the plugins (several hosts on one
//! PostgreSQL share the runs by lease), ticks the policy engine and
//! witnesses the primary sites of automatic plans. It serves `/healthz`,
//! `/readyz`, the REST API of `rebound-api` under `/api/v1`
//! (docs/api.md) and the admin web UI of `rebound-ui` at `/` (docs/ui.md). On a store's first start it creates the bootstrap admin,
//! with the password of `REBOUND_ADMIN_PASSWORD` or a random one printed
//! once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use clap::Args;
use rebound_api::seal::Sealer;
use rebound_api::sites::SiteRegistry;
use rebound_api::{ApiConfig, ApiState, Auth};
use rebound_engine::{Executor, ExecutorConfig, PluginSteps};
use rebound_runtime::{PluginPackage, Runtime, RuntimeConfig};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::plugin_cmd::TrustArgs;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "REBOUND_LISTEN")]
    listen: SocketAddr,
    /// Folder of plugin packages (one sub-folder per plugin).
    #[arg(long, env = "REBOUND_PLUGINS")]
    plugins: Option<PathBuf>,
    /// The store: `sqlite://PATH` (created on first start) or
    /// `postgres://USER:PASSWORD@HOST/DB`.
    #[arg(long, default_value = "sqlite://rebound.db", env = "REBOUND_STORE")]
    store: String,
    /// Where compiled plugins are cached between starts.
    #[arg(long, env = "REBOUND_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// The sites file (TOML): each site bound to a plugin. Sites can also
    /// be registered through the API (`PUT /api/v1/sites/{name}`).
    #[arg(long, env = "REBOUND_SITES")]
    sites: Option<PathBuf>,
    /// The key that seals credentials of sites registered through the API
    /// (created on first start, mode 0600). Every host of one store needs
    /// the same key. Default: beside an SQLite store's file
    /// (`rebound.db.seal-key`), else `rebound.seal.key`.
    #[arg(long, env = "REBOUND_SEAL_KEY_FILE")]
    seal_key_file: Option<PathBuf>,
    /// This host's name as a lease owner (unique per host process).
    /// Default: `<hostname>-<pid>`.
    #[arg(long, env = "REBOUND_OWNER")]
    owner: Option<String>,
    /// How long a claimed run stays this host's without a heartbeat; after
    /// it another host may take the run over.
    #[arg(long, default_value_t = 30.0, env = "REBOUND_LEASE_SECONDS")]
    lease_seconds: f64,
    /// Runs driven at the same time.
    #[arg(long, default_value_t = 4, env = "REBOUND_WORKERS")]
    workers: usize,
    /// How often the policy engine evaluates every plan's objectives and
    /// schedules replication cycles; 0 turns it off on this host.
    #[arg(long, default_value_t = 30.0, env = "REBOUND_POLICY_SECONDS")]
    policy_seconds: f64,
    /// The host's config file (TOML); its `[api]` table sets auth (local
    /// issuer, OIDC issuers), CORS origins, body limit and timeouts
    /// (docs/api.md). Without it, the defaults.
    #[arg(long, env = "REBOUND_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    trust: TrustArgs,
}

/// The config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostConfig {
    #[serde(default)]
    api: ApiConfig,
    #[serde(default)]
    hooks: HooksConfig,
}

/// Where the plans' hooks may call (none by default), and the key that
/// signs each call (`Rebound-Signature`; best set from the environment,
/// `REBOUND__HOOKS__SECRET`).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HooksConfig {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    secret: Option<String>,
}

impl std::fmt::Debug for HooksConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HooksConfig")
            .field("allow", &self.allow)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The config file, then environment overrides: `REBOUND__` then the key
/// path with `__` between tables, e.g. `REBOUND__API__BODY_LIMIT_BYTES=2097152`
/// or `REBOUND__API__CORS_ORIGINS='["https://ui.example"]'`.
fn host_config(path: Option<&std::path::Path>) -> Result<HostConfig> {
    use figment::Figment;
    use figment::providers::{Env, Format, Toml};
    let mut figment = Figment::new();
    if let Some(path) = path {
        if !path.is_file() {
            anyhow::bail!("the config file {} does not exist", path.display());
        }
        figment = figment.merge(Toml::file(path));
    }
    figment
        .merge(Env::prefixed("REBOUND__").split("__"))
        .extract()
        .map_err(|e| anyhow::anyhow!("the host's configuration: {e}"))
}

pub async fn run(args: ServeArgs) -> Result<()> {
    let config = host_config(args.config.as_deref())?;
    let store = rebound_store::Store::connect(&args.store)
        .await
        .with_context(|| format!("opening the store at {}", redact_url(&args.store)))?;
    // From the environment only, never a flag: it stays out of process lists.
    let admin_password = std::env::var("REBOUND_ADMIN_PASSWORD").ok();
    if let Some(password) =
        rebound_api::auth::bootstrap_admin(&store, admin_password.as_deref()).await?
    {
        eprintln!(
            "rebound created the bootstrap admin 'admin' with password {password} \
             (shown this once; log in with POST /api/v1/auth/login)"
        );
    }
    let auth = Arc::new(
        Auth::start(&store, &config.api.auth)
            .await
            .context("setting up authentication")?,
    );
    let runtime = Arc::new(Runtime::new(RuntimeConfig {
        trust: args.trust.policy()?,
        // wasmtime's cache wants an absolute path; a relative one is the
        // operator's working directory.
        cache_dir: args
            .cache_dir
            .as_deref()
            .map(std::path::absolute)
            .transpose()
            .context("--cache-dir")?,
        ..RuntimeConfig::default()
    })?);
    if let Some(dir) = &args.plugins {
        load_plugins(dir, &runtime).await?;
    }
    // Then what was published through any host's API (the store's settings
    // deciding which version is active and whether it is enabled).
    let plugins = rebound_engine::plugins::PluginSync::new(store.clone(), runtime.clone());
    plugins.once().await?;
    let file_sites = match &args.sites {
        Some(path) => crate::sites::load(path, &runtime)?,
        None => HashMap::new(),
    };
    let file_names: Vec<String> = file_sites.keys().cloned().collect();
    let hooks =
        rebound_engine::HookPolicy::new(&config.hooks.allow, config.hooks.secret.as_deref())
            .map_err(anyhow::Error::msg)?;
    let runner =
        Arc::new(PluginSteps::new(runtime.clone(), store.clone(), file_sites).with_hooks(hooks));
    let sealer = Sealer::from_file(&seal_key_path(&args))?;
    let registry = Arc::new(SiteRegistry::new(
        runner.clone(),
        runtime.clone(),
        sealer,
        file_names,
    ));
    for (site, reason) in registry.refresh(&store).await? {
        tracing::error!(%site, "site not bound: {reason}");
    }
    tokio::spawn(refresh(store.clone(), plugins, registry.clone()));
    let owner = args.owner.clone().unwrap_or_else(default_owner);
    let lease = Duration::try_from_secs_f64(args.lease_seconds)
        .ok()
        .filter(|d| *d >= Duration::from_millis(100))
        .context("--lease-seconds must be at least 0.1")?;
    let mut workers = Vec::new();
    for worker in 0..args.workers.max(1) {
        let name = format!("{owner}/{worker}");
        let config = ExecutorConfig {
            lease,
            ..ExecutorConfig::new(name.clone())
        };
        let executor = Executor::new(store.clone(), runner.clone(), config);
        workers.push((name, tokio::spawn(work(executor))));
    }
    if args.policy_seconds > 0.0 {
        tokio::spawn(detection(store.clone(), runner.clone(), owner.clone()));
    }
    eprintln!("rebound driving runs as {owner}");
    if args.policy_seconds > 0.0 {
        let every = Duration::try_from_secs_f64(args.policy_seconds)
            .context("--policy-seconds must be a number of seconds")?;
        // A plan's gauges go three ticks after it leaves the states its
        // objectives are judged in.
        rebound_api::metrics::keep_gauges_for(every * 3);
        tokio::spawn(policy(store.clone(), every));
    }
    let leases = store.clone();
    let mut state = ApiState::new(store.clone(), auth, &config.api);
    state.runtime = Some(runtime);
    state.registry = Some(registry);
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(store)
        .merge(rebound_api::router(state, &config.api))
        .merge(rebound_ui::router());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    eprintln!("rebound serving on http://{}", listener.local_addr()?);
    // At SIGTERM the runs are handed over first; then the API finishes the
    // requests in flight, for at most DRAIN (event streams stay open as
    // long as their clients watch).
    const DRAIN: Duration = Duration::from_secs(10);
    let (handed_over, drain) = tokio::sync::oneshot::channel();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        stopped().await;
        hand_over(&leases, workers).await;
        let _ = handed_over.send(());
    });
    tokio::select! {
        served = server => served?,
        Ok(()) = drain => {
            tokio::time::sleep(DRAIN).await;
            eprintln!("rebound stopped with requests still open after {DRAIN:?}");
        }
    }
    Ok(())
}

/// Stop the workers where they are — a step in flight is left as a crash
/// leaves it, its attempt persisted — then release their leases, so
/// another host resumes their runs now rather than one lease later.
async fn hand_over(
    store: &rebound_store::Store,
    workers: Vec<(String, tokio::task::JoinHandle<()>)>,
) {
    for (_, worker) in &workers {
        worker.abort();
    }
    for (name, worker) in workers {
        let _ = worker.await;
        match store.release_leases(&name).await {
            Ok(runs) if !runs.is_empty() => {
                eprintln!(
                    "rebound released run(s) {} for another host",
                    runs.join(", ")
                );
            }
            Ok(_) => {}
            Err(e) => tracing::error!(worker = %name, "releasing leases: {e}"),
        }
    }
}

/// SIGTERM (what systemd and Kubernetes send) or Ctrl-C.
async fn stopped() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// `<hostname>-<pid>`: unique per host process even where every process is
/// PID 1 (one container per host) or every machine runs one host.
fn default_owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    format!("{host}-{}", std::process::id())
}

/// Claim runs and drive them, forever; an idle worker looks again after a
/// short pause.
async fn work(executor: Executor) {
    let idle = Duration::from_millis(250);
    loop {
        match executor.work_once().await {
            Ok(Some((run, outcome))) => {
                tracing::info!(run = %run.id, plan = %run.plan, workflow = %run.workflow, ?outcome, "run driven");
            }
            Ok(None) => tokio::time::sleep(idle).await,
            Err(e) => {
                tracing::error!("driving runs: {e}");
                tokio::time::sleep(idle).await;
            }
        }
    }
}

/// Evaluate the plans' objectives and schedule replication, forever.
async fn policy(store: rebound_store::Store, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        match rebound_engine::policy::tick(&store, rebound_engine::now_ms()).await {
            Ok(done) => {
                for event in done.events {
                    tracing::info!(plan = %event.plan, kind = %event.kind, detail = %event.detail, "policy");
                }
            }
            Err(e) => tracing::error!("policy tick: {e}"),
        }
    }
}

/// Load the plugin packages of `dir` (each `<name>/`: the packages an
/// operator or the image placed there; those published through the API are
/// in the store). A package that fails verification is refused and logged;
/// the others load.
async fn load_plugins(dir: &std::path::Path, runtime: &Runtime) -> Result<()> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                && p.join(rebound_runtime::package::MANIFEST_FILE).is_file()
        })
        .collect();
    found.sort();
    for path in found {
        let loaded = match PluginPackage::read_dir(&path) {
            Ok(package) => runtime.load(&package).await,
            Err(e) => Err(e),
        };
        match loaded {
            Ok(plugin) => runtime.install(plugin),
            // One bad package must not keep the others from serving.
            Err(e) => tracing::error!(package = %path.display(), "plugin refused: {e}"),
        }
    }
    Ok(())
}

fn seal_key_path(args: &ServeArgs) -> PathBuf {
    if let Some(path) = &args.seal_key_file {
        return path.clone();
    }
    let file = args
        .store
        .strip_prefix("sqlite://")
        .or_else(|| args.store.strip_prefix("sqlite:"))
        .map(|rest| rest.split('?').next().unwrap_or_default())
        .filter(|path| !path.is_empty() && !path.contains(":memory:"));
    match file {
        Some(path) => PathBuf::from(format!("{path}.seal-key")),
        None => PathBuf::from("rebound.seal.key"),
    }
}

/// Every few seconds: load the plugin versions other hosts of the store
/// published and follow its plugin settings, then bind the sites other
/// hosts registered or changed, and unbind deleted ones.
async fn refresh(
    store: rebound_store::Store,
    plugins: rebound_engine::plugins::PluginSync,
    registry: Arc<SiteRegistry>,
) {
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    let mut reported = std::collections::BTreeSet::new();
    loop {
        ticker.tick().await;
        match plugins.once().await {
            Ok(synced) if synced != Default::default() => {
                tracing::info!(?synced, "plugins synced from the store");
            }
            Ok(_) => {}
            Err(e) => tracing::error!("syncing plugins: {e}"),
        }
        match registry.refresh(&store).await {
            Ok(refused) => {
                for (site, reason) in refused {
                    // Once per site and reason, not every tick.
                    if reported.insert((site.clone(), reason.clone())) {
                        tracing::error!(%site, "site not bound: {reason}");
                    }
                }
            }
            Err(e) => tracing::error!("refreshing sites: {e}"),
        }
    }
}

/// Witness the primary sites of automatic plans: probe each at its plan's
/// probe interval (checked every second) and start the failover when
/// enough witnesses agree it is down.
async fn detection(store: rebound_store::Store, runner: Arc<PluginSteps>, witness: String) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticker.tick().await;
        let now = rebound_engine::now_ms();
        match rebound_engine::detection::detect(&store, &runner, &witness, now).await {
            Ok(done) => {
                for (plan, run) in done.failovers {
                    tracing::warn!(%plan, %run, "automatic failover started");
                }
            }
            Err(e) => tracing::error!("detection: {e}"),
        }
    }
}

/// Ready when the store answers and every migration is applied.
async fn ready(State(store): State<rebound_store::Store>) -> (StatusCode, Json<Value>) {
    match store.ready().await {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready", "detail": e.to_string() })),
        ),
    }
}

/// A store URL fit for messages: the password replaced.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    // figment's Jail returns its own (large) error type.
    #[allow(clippy::result_large_err)]
    fn the_config_file_is_checked() {
        // In a Jail: the process's environment is shared with the test
        // that sets `REBOUND__…` variables, and Jails take turns.
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "rebound.toml",
                "[api]\ncors_origins = [\"https://ui.example\"]\n[[api.auth.oidc]]\nissuer = \"https://idp\"\naudience = \"rebound\"\njwks_url = \"https://idp/jwks\"\nalgorithm = \"RS256\"\n",
            )?;
            let path = std::path::Path::new("rebound.toml");
            let config = super::host_config(Some(path)).expect("config");
            assert_eq!(config.api.cors_origins, ["https://ui.example"]);
            assert_eq!(config.api.auth.oidc[0].role_claim, "roles");
            jail.create_file(
                "rebound.toml",
                "[hooks]\nallow = [\"https://ops.example.com\"]\nsecret = \"s3cret\"\n",
            )?;
            let config = super::host_config(Some(path)).expect("config");
            assert_eq!(config.hooks.allow, ["https://ops.example.com"]);
            assert!(!format!("{:?}", config.hooks).contains("s3cret"));
            jail.create_file("rebound.toml", "[api]\nbody_limit = 5\n")?;
            let err = super::host_config(Some(path)).expect_err("unknown key");
            assert!(
                err.to_string()
                    .contains("unknown field: found `body_limit`"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn store_passwords_never_reach_messages() {
        assert_eq!(
            super::redact_url("postgres://rebound:s3cret@db:5432/rebound"),
            "postgres://rebound:***@db:5432/rebound"
        );
        assert_eq!(
            super::redact_url("sqlite://rebound.db"),
            "sqlite://rebound.db"
        );
    }

    #[test]
    // figment's Jail returns its own (large) error type.
    #[allow(clippy::result_large_err)]
    fn the_environment_overrides_the_config_file_and_unknown_keys_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "rebound.toml",
                "[api]\nbody_limit_bytes = 1000\nrequest_timeout_seconds = 7\n",
            )?;
            jail.set_env("REBOUND__API__BODY_LIMIT_BYTES", "2048");
            jail.set_env("REBOUND__API__CORS_ORIGINS", r#"["https://ui.example"]"#);
            let config = super::host_config(Some("rebound.toml".as_ref())).expect("config");
            assert_eq!(config.api.body_limit_bytes, 2048);
            assert_eq!(config.api.request_timeout_seconds, 7);
            assert_eq!(config.api.cors_origins, ["https://ui.example"]);
            jail.set_env("REBOUND__API__BODY_LIMT_BYTES", "1");
            let err = super::host_config(None).expect_err("a misspelt key");
            assert!(err.to_string().contains("body_limt_bytes"), "{err}");
            assert!(super::host_config(Some("missing.toml".as_ref())).is_err());
            Ok(())
        });
    }
}

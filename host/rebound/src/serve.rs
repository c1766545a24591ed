//! `rebound serve`: the host service. Today it runs the plugin runtime with
//! the plugin packages of a folder and answers `/healthz` and
//! `GET /api/v1/plugins`; the store, engine and full API come next.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::Path;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Args;
use rebound_runtime::{PluginPackage, Runtime, RuntimeConfig};
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
    #[command(flatten)]
    trust: TrustArgs,
}

pub async fn run(args: ServeArgs) -> Result<()> {
    let runtime = Arc::new(Runtime::new(RuntimeConfig {
        trust: args.trust.policy()?,
        ..RuntimeConfig::default()
    })?);
    if let Some(dir) = &args.plugins {
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if !path.join(rebound_runtime::package::MANIFEST_FILE).is_file() {
                continue;
            }
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
    }
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/v1/plugins", get(plugins))
        .route("/api/v1/plugins/{name}/release", post(release))
        .with_state(runtime);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    eprintln!("rebound serving on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

async fn plugins(State(runtime): State<Arc<Runtime>>) -> Json<Value> {
    let list: Vec<Value> = runtime
        .list()
        .iter()
        .map(|p| {
            let crashes = p.crash_status();
            json!({
                "name": p.manifest.name,
                "version": p.manifest.version.to_string(),
                "platform": p.info.platform,
                "sha256": p.digest,
                "capabilities": p.manifest.capabilities,
                "egress": p.manifest.egress.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "recent_crashes": crashes.recent_crashes,
                "quarantined": crashes.quarantined,
            })
        })
        .collect();
    Json(json!({ "items": list }))
}

/// Lift a plugin's quarantine (an operator's decision after a fix upstream).
async fn release(
    State(runtime): State<Arc<Runtime>>,
    Path(name): Path<String>,
) -> (StatusCode, Json<Value>) {
    match runtime.active(&name) {
        Some(plugin) => {
            plugin.release();
            tracing::info!(plugin = %name, "quarantine released");
            (
                StatusCode::OK,
                Json(json!({ "name": name, "quarantined": false })),
            )
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(
                json!({ "title": "plugin not found", "detail": format!("no plugin named '{name}' is installed") }),
            ),
        ),
    }
}

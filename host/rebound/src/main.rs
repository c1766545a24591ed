//! `rebound`: one binary for the server and the CLI.
//!
//! - `rebound serve` — the host service (today: the plugin runtime with the
//!   plugins of a folder, `/healthz` and `/api/v1/plugins`).
//! - `rebound plugin keygen|package|inspect` — the plugin author's tools.
//! - `rebound demo` — the guided demo against the lab (`cargo xtask demo`).
#![deny(rust_2018_idioms)]

mod demo;
mod plugin_cmd;
mod serve;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "rebound",
    version,
    about = "Rebound disaster-recovery control plane"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the host service.
    Serve(serve::ServeArgs),
    /// Plugin author and operator tools.
    #[command(subcommand)]
    Plugin(plugin_cmd::PluginCommand),
    /// Run the demo against the lab's simulated sites.
    Demo {
        /// Folder of built plugins (`cargo xtask build-plugins` fills it).
        #[arg(long, env = "REBOUND_PLUGIN_DIR")]
        plugins: PathBuf,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The demo prints its own account of what the sandbox refused.
    let default_filter = match cli.command {
        Command::Demo { .. } => "error",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("REBOUND_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Plugin(cmd) => plugin_cmd::run(cmd).await,
        Command::Demo { plugins } => demo::run(&plugins).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

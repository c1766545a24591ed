//! `rebound`: one binary for the server and the CLI.
//!
//! - `rebound serve` — the host service: the store, the plugin runtime with
//!   the plugins of a folder, executor workers, the policy engine, and the
//!   REST API under `/api/v1` (docs/api.md).
//! - `rebound login [--oidc]`, `logout`, `apply -f`, `get`, `run WORKFLOW PLAN --wait`,
//!   `approve`, `cancel`, `token create|list|revoke` — the REST API from
//!   the command line.
//! - `rebound plugin new|keygen|package|inspect|test` — the plugin author's
//!   tools; `plugin publish|list` against a running host.
//! - `rebound lab up|down|status` — the lab's simulated sites on loopback,
//!   in the background, with a sites file binding them to their plugins.
//! - `rebound mover` — the mover agent: one disk image served to the data
//!   mover (ranged reads/writes, block digests) behind a transfer token.
//! - `rebound demo` — the guided demo against the lab (`cargo xtask demo`).
#![deny(rust_2018_idioms)]

mod client;
mod conformance;
mod demo;
mod lab;
mod oidc_login;
mod output;
mod plugin_cmd;
mod plugin_new;
mod serve;
mod sites;

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
    #[command(flatten)]
    server: client::ServerArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the host service.
    Serve(serve::ServeArgs),
    /// Log in to a host as a local user, or through an OIDC issuer (--oidc);
    /// the token is kept for the other verbs.
    Login(client::LoginArgs),
    /// Forget the session `login` kept for this host.
    Logout,
    /// Create or update a protection plan from its document.
    Apply(client::ApplyArgs),
    /// Show plans, runs, compliance, events, the audit log, plugins, sites.
    Get(client::GetArgs),
    /// Start a workflow on a plan (failover, failback, drill, …).
    Run(client::RunArgs),
    /// Print a plan's runbook (Markdown): the round trip from where the
    /// plan stands, each workflow's steps with expected durations, written
    /// from the plan and its measured runs.
    Runbook { plan: String },
    /// Approve a run's next approval gate.
    Approve { run: String },
    /// Cancel an unfinished run: one a host is driving stops at its next
    /// stage and is compensated.
    Cancel { run: String },
    /// Delete a plan once it is unprotected.
    #[command(subcommand)]
    Delete(client::DeleteCommand),
    /// API tokens for automation.
    #[command(subcommand)]
    Token(client::TokenCommand),
    /// Plugin author and operator tools.
    #[command(subcommand)]
    Plugin(plugin_cmd::PluginCommand),
    /// Simulated sites on loopback: start, stop, show.
    #[command(subcommand)]
    Lab(lab::LabCommand),
    /// Serve one disk image to the data mover (the mover agent).
    Mover(MoverArgs),
    /// Run the demo against the lab's simulated sites.
    Demo {
        /// Folder of built plugins (`cargo xtask build-plugins` fills it).
        #[arg(long, env = "REBOUND_PLUGIN_DIR")]
        plugins: PathBuf,
    },
}

/// The mover agent's settings. The transfer token comes from the
/// environment, never the command line, so it stays out of process lists.
#[derive(clap::Args)]
struct MoverArgs {
    /// The disk image to serve (a raw file).
    #[arg(long)]
    disk: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// Accept writes (an import target); without it the disk is read-only.
    #[arg(long)]
    writable: bool,
    /// Serve HTTPS with this certificate chain (PEM, leaf first), as an
    /// appliance on a network should; the data mover trusts its CA through
    /// the site's `ca_file`. Needs `--tls-key`.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

async fn mover(args: MoverArgs) -> anyhow::Result<()> {
    let token = std::env::var("REBOUND_MOVER_TOKEN").map_err(|_| {
        anyhow::anyhow!("set REBOUND_MOVER_TOKEN to the transfer token clients will present")
    })?;
    if token.len() < 16 {
        anyhow::bail!("REBOUND_MOVER_TOKEN must be at least 16 characters");
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let read = |path: &PathBuf| {
                anyhow::Context::with_context(std::fs::read(path), || {
                    format!("reading {}", path.display())
                })
            };
            let config = rebound_datamover::agent::tls_config(&read(cert)?, &read(key)?);
            Some(anyhow::Context::with_context(config, || {
                format!("{} and {}", cert.display(), key.display())
            })?)
        }
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!(
        "rebound mover serving {} on {}://{}/disk",
        args.disk.display(),
        if tls.is_some() { "https" } else { "http" },
        listener.local_addr()?
    );
    let config = rebound_datamover::agent::AgentConfig {
        path: args.disk,
        token,
        writable: args.writable,
    };
    match tls {
        Some(tls) => rebound_datamover::agent::serve_tls(listener, config, tls).await?,
        None => rebound_datamover::agent::serve(listener, config).await?,
    }
    Ok(())
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
        Command::Login(args) => client::login(&cli.server, &args).await,
        Command::Logout => client::logout(&cli.server),
        Command::Apply(args) => client::apply(&cli.server, &args).await,
        Command::Get(what) => client::get(&cli.server, &what).await,
        Command::Run(args) => client::run(&cli.server, &args).await,
        Command::Runbook { plan } => client::runbook(&cli.server, &plan).await,
        Command::Approve { run } => client::decide(&cli.server, &run, "approve").await,
        Command::Cancel { run } => client::decide(&cli.server, &run, "cancel").await,
        Command::Delete(command) => client::delete(&cli.server, &command).await,
        Command::Token(command) => client::token(&cli.server, &command).await,
        Command::Plugin(cmd) => plugin_cmd::run(cmd, &cli.server).await,
        Command::Demo { plugins } => demo::run(&plugins).await,
        Command::Mover(args) => mover(args).await,
        Command::Lab(command) => lab::run(command).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // Scripts tell refusals, missing things and failed runs apart
            // (docs/api.md, "The CLI"); clap's usage errors exit 2.
            let code = e
                .downcast_ref::<output::Exit>()
                .map_or(output::exit::ERROR, |x| x.code);
            std::process::ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    /// The CLI lines of the API and operations docs parse as written
    /// (those with placeholders — `[…]`, `a|b`, `…` — aside).
    #[test]
    fn the_documented_commands_parse() {
        let mut checked = 0;
        for doc in [
            include_str!("../../../docs/api.md"),
            include_str!("../../../docs/operations.md"),
        ] {
            let mut block = false;
            for line in doc.lines() {
                if line.starts_with("```") {
                    block = !block;
                    continue;
                }
                let command = line.split("  #").next().unwrap_or_default().trim();
                if !block
                    || !command.starts_with("rebound ")
                    || command.contains(['[', '|', '…', '>', '\\'])
                {
                    continue;
                }
                let words = command.split_whitespace();
                if let Err(e) = super::Cli::try_parse_from(words) {
                    panic!("{command}: {e}");
                }
                checked += 1;
            }
        }
        assert!(checked >= 10, "only {checked} documented commands found");
    }
}

//! `cargo xtask`: everything a user or CI needs, from a machine with only
//! Rust installed.
//!
//! - `cargo xtask demo` — builds the plugins and the host, then runs the
//!   demo against the lab.
//! - `cargo xtask test` — formatting, clippy, then every test suite.
//! - `cargo xtask bench` — the criterion benchmarks.
//! - `cargo xtask build-plugins` — the plugins as wasm32-wasip2 components,
//!   laid out in `<target>/plugins/<name>/` for the tests and the demo.
#![deny(rust_2018_idioms)]

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Rebound's build, test, bench and demo tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the plugins and the host, then run the demo.
    Demo,
    /// Run formatting and lint checks and every test suite.
    Test {
        /// Skip `cargo fmt --check` and clippy.
        #[arg(long)]
        no_lint: bool,
    },
    /// Run the criterion benchmarks.
    Bench,
    /// Build every plugin crate as a wasm32-wasip2 component.
    BuildPlugins,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let ws = Workspace::locate()?;
    match cli.task {
        Task::BuildPlugins => ws.build_plugins(),
        Task::Demo => {
            ws.build_plugins()?;
            ws.cargo(&["run", "--package", "rebound", "--", "demo"])
        }
        Task::Test { no_lint } => {
            ws.build_plugins()?;
            if !no_lint {
                ws.cargo(&["fmt", "--all", "--check"])?;
                ws.cargo(&[
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ])?;
            }
            ws.cargo(&["test", "--workspace"])
        }
        Task::Bench => {
            ws.build_plugins()?;
            ws.cargo(&[
                "bench",
                "--package",
                "rebound-runtime",
                "--bench",
                "plugin_call",
            ])?;
            ws.cargo(&["bench", "--package", "rebound-datamover", "--bench", "copy"])?;
            // Prints measured RTO / ideal critical path and CPU per step.
            ws.cargo(&[
                "bench",
                "--package",
                "rebound-engine",
                "--bench",
                "failover",
            ])?;
            // Prints API latency percentiles at a fixed rate, with a baseline.
            ws.cargo(&["bench", "--package", "rebound", "--bench", "api_load"])?;
            ws.report_medians("plugin_call", "fresh_instance")?;
            ws.report_medians("datamover", "plain_cp")
        }
    }
}

struct Workspace {
    root: PathBuf,
    target: PathBuf,
}

impl Workspace {
    fn locate() -> Result<Self> {
        let out = Command::new(cargo())
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .output()
            .context("running cargo metadata")?;
        if !out.status.success() {
            bail!(
                "cargo metadata failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let path = |key: &str| -> Result<PathBuf> {
            meta[key]
                .as_str()
                .map(PathBuf::from)
                .with_context(|| format!("cargo metadata has no {key}"))
        };
        Ok(Self {
            root: path("workspace_root")?,
            target: path("target_directory")?,
        })
    }

    /// Where built plugin packages go; tests and the demo read it from
    /// `REBOUND_PLUGIN_DIR`.
    fn plugin_dir(&self) -> PathBuf {
        self.target.join("plugins")
    }

    fn cargo(&self, args: &[&str]) -> Result<()> {
        eprintln!("xtask: cargo {}", args.join(" "));
        let status = Command::new(cargo())
            .args(args)
            .current_dir(&self.root)
            .env("REBOUND_PLUGIN_DIR", self.plugin_dir())
            .status()
            .with_context(|| format!("running cargo {}", args.join(" ")))?;
        if !status.success() {
            bail!("cargo {} failed ({status})", args.join(" "));
        }
        Ok(())
    }

    fn ensure_wasm_target(&self) -> Result<()> {
        let out = Command::new("rustup")
            .args(["target", "list", "--installed"])
            .output()
            .context(
                "running rustup (Rebound builds plugins with rustup's wasm32-wasip2 target)",
            )?;
        if !String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.trim() == "wasm32-wasip2")
        {
            eprintln!("xtask: adding the wasm32-wasip2 target");
            let status = Command::new("rustup")
                .args(["target", "add", "wasm32-wasip2"])
                .status()?;
            if !status.success() {
                bail!("rustup target add wasm32-wasip2 failed");
            }
        }
        Ok(())
    }

    /// Plugin crates are the folders under plugins/ that hold a plugin.toml.
    fn plugin_crates(&self) -> Result<Vec<(PathBuf, String)>> {
        let mut found = Vec::new();
        let mut stack = vec![self.root.join("plugins")];
        while let Some(dir) = stack.pop() {
            for entry in
                std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
            {
                let path = entry?.path();
                if path.is_dir() {
                    if path.join("plugin.toml").is_file() {
                        found.push((path.clone(), package_name(&path)?));
                    } else {
                        stack.push(path);
                    }
                }
            }
        }
        found.sort();
        Ok(found)
    }

    fn build_plugins(&self) -> Result<()> {
        self.ensure_wasm_target()?;
        let crates = self.plugin_crates()?;
        let mut args = vec![
            "build",
            "--profile",
            "plugin",
            "--target",
            "wasm32-wasip2",
            "--lib",
        ];
        for (_, name) in &crates {
            args.extend(["--package", name.as_str()]);
        }
        self.cargo(&args)?;
        let built = self.target.join("wasm32-wasip2").join("plugin");
        for (dir, package) in &crates {
            let wasm = built.join(format!("{}.wasm", package.replace('-', "_")));
            let template = std::fs::read_to_string(dir.join("plugin.toml"))?;
            let name = template
                .lines()
                .find_map(|l| l.strip_prefix("name = "))
                .map(|n| n.trim().trim_matches('"').to_owned())
                .with_context(|| format!("{}/plugin.toml has no name", dir.display()))?;
            let out = self.plugin_dir().join(&name);
            std::fs::create_dir_all(&out)?;
            std::fs::copy(&wasm, out.join("plugin.wasm"))
                .with_context(|| format!("copying {}", wasm.display()))?;
            std::fs::write(out.join("plugin.toml"), template)?;
        }
        eprintln!(
            "xtask: {} plugins in {}",
            crates.len(),
            self.plugin_dir().display()
        );
        Ok(())
    }
}

impl Workspace {
    /// Print each benchmark's median from criterion's estimates, and its
    /// ratio to `reference`.
    fn report_medians(&self, group: &str, reference: &str) -> Result<()> {
        let dir = self.target.join("criterion").join(group);
        let median = |name: &str| -> Result<f64> {
            let path = dir.join(name).join("new").join("estimates.json");
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let json: serde_json::Value = serde_json::from_str(&text)?;
            json["median"]["point_estimate"]
                .as_f64()
                .with_context(|| format!("{} has no median", path.display()))
        };
        let mut names: Vec<String> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("new/estimates.json").is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let base = median(reference)?;
        println!("\n{group}: medians of this run (ratio to {reference})");
        for name in names {
            let ns = median(&name)?;
            println!(
                "  {name:<16} {:>10.3} µs   {:>8.3}x",
                ns / 1000.0,
                ns / base
            );
        }
        Ok(())
    }
}

fn package_name(dir: &Path) -> Result<String> {
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml"))?;
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("name = "))
        .map(|n| n.trim().trim_matches('"').to_owned())
        .with_context(|| format!("{}/Cargo.toml has no package name", dir.display()))
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

//! `cargo xtask`: everything a user or CI needs, from a machine with only
//! Rust installed.
//!
//! - `cargo xtask demo` — builds the plugins, the web UI and the host, then
//!   runs the demo against the lab.
//! - `cargo xtask test` — builds the plugins and the web UI (with its type
//!   check and unit tests), then formatting, clippy and every test suite,
//!   the web UI's browser tests among them (`host/rebound/tests/ui_test.rs`).
//! - `cargo xtask bench` — the criterion benchmarks.
//! - `cargo xtask build-plugins` — the plugins as wasm32-wasip2 components,
//!   laid out in `<target>/plugins/<name>/` for the tests and the demo.
//! - `cargo xtask build-ui` — the web UI (`npm ci` when its packages are
//!   missing or stale, then `npm run build` into `web-ui/dist`, which the
//!   host embeds).
//! - `cargo xtask screenshots` — the web UI's main pages against a host with
//!   the lab, photographed into `docs/ui/`.
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
    /// Build the web UI into web-ui/dist (npm ci when needed, npm run build).
    BuildUi,
    /// Photograph the web UI's main pages into docs/ui/.
    Screenshots,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let ws = Workspace::locate()?;
    match cli.task {
        Task::BuildPlugins => ws.build_plugins(),
        Task::BuildUi => ws.build_ui(),
        Task::Demo => {
            ws.build_plugins()?;
            // The demo runs without the web UI: a host built without it
            // serves a page saying how to build it.
            if let Err(e) = ws.build_ui() {
                eprintln!("xtask: the web UI is not built ({e:#}); the demo goes on without it");
            }
            ws.cargo(&["run", "--package", "rebound", "--", "demo"])?;
            eprintln!(
                "xtask: the host serves the web UI at / (rebound serve, then http://127.0.0.1:8080/; docs/ui.md)"
            );
            Ok(())
        }
        Task::Screenshots => {
            ws.build_plugins()?;
            ws.build_ui()?;
            ws.cargo(&[
                "test",
                "--package",
                "rebound",
                "--test",
                "ui_test",
                "--",
                "--ignored",
                "--exact",
                "screenshots",
                "--nocapture",
            ])
        }
        Task::Test { no_lint } => {
            ws.build_plugins()?;
            ws.build_ui()?;
            ws.npm(&["run", "test:unit"])?;
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
            // What a plan's run history costs a policy tick's reads.
            ws.cargo(&["bench", "--package", "rebound-engine", "--bench", "history"])?;
            // What a few hundred plans cost a tick's and a dashboard's reads.
            ws.cargo(&["bench", "--package", "rebound-engine", "--bench", "fleet"])?;
            // What a plugin call pays to keep a site's limit across hosts.
            ws.cargo(&[
                "bench",
                "--package",
                "rebound-store",
                "--bench",
                "call_slots",
            ])?;
            // Prints API latency percentiles at a fixed rate, with a baseline.
            ws.cargo(&["bench", "--package", "rebound", "--bench", "api_load"])?;
            ws.report_medians("plugin_call", "fresh_instance")?;
            ws.report_medians("fleet", "compliance_each")?;
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
        let mut args = PLUGIN_BUILD.to_vec();
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
        self.build_contract_0_1_example(&built)?;
        eprintln!(
            "xtask: {} plugins in {}, and the example plugin built against the contract 0.1 in {}",
            crates.len(),
            self.plugin_dir().display(),
            self.plugin_dir().join(CONTRACT_0_1_EXAMPLE).display()
        );
        Ok(())
    }

    /// The example plugin built against `rebound:provider@0.1.0` (its SDK's
    /// `contract-0-1` feature), for the tests that show a plugin of the old
    /// contract still loads and runs. Built on its own, after the others:
    /// Cargo unifies features within one build.
    fn build_contract_0_1_example(&self, built: &Path) -> Result<()> {
        let mut args = PLUGIN_BUILD.to_vec();
        args.extend([
            "--package",
            "rebound-plugin-example",
            "--features",
            "contract-0-1",
        ]);
        self.cargo(&args)?;
        let out = self.plugin_dir().join(CONTRACT_0_1_EXAMPLE);
        std::fs::create_dir_all(&out)?;
        std::fs::copy(
            built.join("rebound_plugin_example.wasm"),
            out.join("plugin.wasm"),
        )?;
        let template = std::fs::read_to_string(self.root.join("plugins/example/plugin.toml"))?;
        let template = template.replace("wit = \"^0.2\"", "wit = \"^0.1\"");
        if !template.contains("wit = \"^0.1\"") {
            bail!("plugins/example/plugin.toml has no `wit = \"^0.2\"` line to rewrite");
        }
        std::fs::write(out.join("plugin.toml"), template)?;
        Ok(())
    }
}

/// How plugins are built: the `plugin` profile, for `wasm32-wasip2`.
const PLUGIN_BUILD: &[&str] = &[
    "build",
    "--profile",
    "plugin",
    "--target",
    "wasm32-wasip2",
    "--lib",
];

/// Where in the plugin folder the example plugin built against the
/// contract 0.1 goes.
const CONTRACT_0_1_EXAMPLE: &str = "example-contract-0-1";

impl Workspace {
    fn web_ui(&self) -> PathBuf {
        self.root.join("web-ui")
    }

    fn npm(&self, args: &[&str]) -> Result<()> {
        eprintln!("xtask: npm {} (in web-ui/)", args.join(" "));
        let status = Command::new("npm")
            .args(args)
            .current_dir(self.web_ui())
            .status()
            .context("running npm (the web UI needs Node.js 20.19 or later with npm)")?;
        if !status.success() {
            bail!("npm {} failed ({status})", args.join(" "));
        }
        Ok(())
    }

    /// Node.js new enough for the UI's build tools (Vite 8).
    fn ensure_node(&self) -> Result<()> {
        let out = Command::new("node")
            .arg("--version")
            .output()
            .context("running node: the web UI needs Node.js 20.19 or later (with npm)")?;
        let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let mut parts = version
            .trim_start_matches('v')
            .split('.')
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if (major, minor) < (20, 19) {
            bail!("the web UI needs Node.js 20.19 or later; this is {version}");
        }
        Ok(())
    }

    /// `npm ci` when web-ui/node_modules is missing or older than the lock
    /// file, then `npm run build`: API types generated from
    /// docs/api/openapi.json, the type check (which fails when the UI no
    /// longer fits the API), and the Vite build into web-ui/dist.
    fn build_ui(&self) -> Result<()> {
        self.ensure_node()?;
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let lock = modified(&self.web_ui().join("package-lock.json"));
        let installed = modified(&self.web_ui().join("node_modules/.package-lock.json"));
        if installed.is_none() || lock > installed {
            self.npm(&["ci", "--no-audit", "--no-fund"])?;
        }
        self.npm(&["run", "build"])
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

//! `rebound plugin …`: start a plugin crate, create a publisher key,
//! package and sign a plugin, inspect (verify and load) a package, test it
//! with the conformance kit.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use ed25519_dalek::SigningKey;
use rebound_runtime::package::{decode_signing_key, encode_signing_key, encode_verifying_key};
use rebound_runtime::{PluginPackage, Runtime, RuntimeConfig, TrustPolicy};

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Create a plugin crate from the example plugin, renamed NAME: it
    /// builds for wasm32-wasip2 and passes the conformance kit against the
    /// lab's example sites as it is.
    New(crate::plugin_new::NewArgs),
    /// Create an ed25519 publisher key: PREFIX.key (secret) and PREFIX.pub.
    Keygen {
        #[arg(long, default_value = "publisher")]
        out: PathBuf,
    },
    /// Package a component: fill in its digest and sign the manifest.
    Package {
        /// The built component (.wasm).
        #[arg(long)]
        wasm: PathBuf,
        /// The manifest template (plugin.toml).
        #[arg(long)]
        manifest: PathBuf,
        /// Publisher key from `rebound plugin keygen`; omit for unsigned.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Output folder (plugin.wasm, manifest.toml, manifest.sig).
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify and load a package, then print what the plugin reports.
    Inspect {
        /// Package folder.
        dir: PathBuf,
        #[command(flatten)]
        trust: TrustArgs,
    },
    /// Publish a package folder to a running host (plugin-publisher role).
    Publish {
        /// Package folder (from `rebound plugin package`).
        dir: PathBuf,
    },
    /// The plugins a running host has installed.
    List,
    /// Run the conformance kit: the standard scenarios and fault handling
    /// against a real site, as a pass/fail table.
    Test(crate::conformance::TestArgs),
}

/// Which publishers to trust.
#[derive(Args, Clone)]
pub struct TrustArgs {
    /// A trusted publisher's public key file (repeatable).
    #[arg(long = "trusted-key")]
    pub trusted_keys: Vec<PathBuf>,
    /// Load unsigned plugins (development only).
    #[arg(long)]
    pub allow_unsigned: bool,
}

impl TrustArgs {
    pub fn policy(&self) -> Result<TrustPolicy> {
        let trusted_keys = self
            .trusted_keys
            .iter()
            .map(|path| {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                TrustPolicy::parse_key(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TrustPolicy {
            trusted_keys,
            allow_unsigned: self.allow_unsigned,
        })
    }
}

pub async fn run(cmd: PluginCommand, server: &crate::client::ServerArgs) -> Result<()> {
    match cmd {
        PluginCommand::New(args) => crate::plugin_new::run(&args),
        PluginCommand::Publish { dir } => crate::client::publish_plugin(server, &dir).await,
        PluginCommand::Test(args) => crate::conformance::run(args).await,
        PluginCommand::List => crate::client::list_plugins(server).await,
        PluginCommand::Keygen { out } => {
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            let secret = out.with_extension("key");
            let public = out.with_extension("pub");
            write_secret(&secret, &encode_signing_key(&key))?;
            std::fs::write(&public, encode_verifying_key(&key.verifying_key()) + "\n")?;
            println!(
                "wrote {} (keep it secret) and {}",
                secret.display(),
                public.display()
            );
            Ok(())
        }
        PluginCommand::Package {
            wasm,
            manifest,
            key,
            out,
        } => {
            let component =
                std::fs::read(&wasm).with_context(|| format!("reading {}", wasm.display()))?;
            let template = std::fs::read_to_string(&manifest)
                .with_context(|| format!("reading {}", manifest.display()))?;
            let key = key
                .map(|path| -> Result<SigningKey> {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    decode_signing_key(&text)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
                })
                .transpose()?;
            let package = PluginPackage::build(&template, component, key.as_ref())?;
            package.write_dir(&out)?;
            println!(
                "packaged {} ({}) into {}",
                wasm.display(),
                if key.is_some() { "signed" } else { "unsigned" },
                out.display()
            );
            Ok(())
        }
        PluginCommand::Inspect { dir, trust } => {
            let runtime = Runtime::new(RuntimeConfig {
                trust: trust.policy()?,
                ..RuntimeConfig::default()
            })?;
            let package = PluginPackage::read_dir(&dir)?;
            let plugin = runtime.load(&package).await?;
            let info = &plugin.info;
            println!("name:         {}", info.name);
            println!("version:      {}", info.version);
            println!("platform:     {}", info.platform);
            println!("capabilities: {}", plugin.manifest.capabilities.join(", "));
            println!(
                "egress:       {}",
                plugin
                    .manifest
                    .egress
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            println!("sha256:       {}", plugin.digest);
            println!(
                "signed:       {}",
                if package.signature.is_some() {
                    "yes, by a trusted key"
                } else {
                    "no"
                }
            );
            Ok(())
        }
    }
}

fn write_secret(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    writeln!(file, "{text}")?;
    Ok(())
}

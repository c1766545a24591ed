//! Helpers for the test suites of this crate and the crates above it:
//! finding the plugins `cargo xtask build-plugins` built, packaging them
//! with a fixed test publisher key, and a runtime that trusts that key.
//! Not for production use: the key is public.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ed25519_dalek::SigningKey;

use crate::{Plugin, PluginPackage, Runtime, RuntimeConfig, TrustPolicy};

/// Where `cargo xtask build-plugins` put the plugins (`REBOUND_PLUGIN_DIR`,
/// else `$CARGO_TARGET_DIR/plugins`, else the workspace's `target/plugins`).
pub fn plugin_dir() -> PathBuf {
    let dir = std::env::var_os("REBOUND_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
            target.join("plugins")
        });
    assert!(
        dir.join("example/plugin.wasm").is_file(),
        "no built plugins in {}; run `cargo xtask build-plugins` (or `cargo xtask test`)",
        dir.display()
    );
    dir
}

pub fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(plugin_dir().join(name).join("plugin.wasm")).expect("read plugin.wasm")
}

pub fn template(name: &str) -> String {
    std::fs::read_to_string(plugin_dir().join(name).join("plugin.toml")).expect("read plugin.toml")
}

/// A deterministic publisher key for tests.
pub fn publisher_key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

pub fn package(name: &str) -> PluginPackage {
    PluginPackage::build(&template(name), wasm(name), Some(&publisher_key())).expect("package")
}

/// The built plugin `name` as another release, `number` (as long as the
/// version it was built with, "0.1.0"): its version string rewritten in
/// the component (the only one not following an '@', which would be the
/// contract's) and in the manifest, signed again.
pub fn release(name: &str, number: &str) -> PluginPackage {
    const BUILT: &[u8] = b"0.1.0";
    assert_eq!(number.len(), BUILT.len(), "a version as long as 0.1.0");
    let mut wasm = wasm(name);
    let at: Vec<usize> = (1..wasm.len().saturating_sub(BUILT.len()))
        .filter(|&i| &wasm[i..i + BUILT.len()] == BUILT && wasm[i - 1] != b'@')
        .collect();
    assert_eq!(at.len(), 1, "the plugin's own version string, once");
    wasm[at[0]..at[0] + BUILT.len()].copy_from_slice(number.as_bytes());
    let manifest = template(name)
        .lines()
        .map(|l| {
            if l.starts_with("version") {
                format!("version = \"{number}\"")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    PluginPackage::build(&manifest, wasm, Some(&publisher_key())).expect("package")
}

/// Write the `name` plugin's package, signed with the test publisher key,
/// into `package_dir`, and that key's public half (what a host's
/// `--trusted-key` reads) to `key_file`.
pub fn install(name: &str, package_dir: &Path, key_file: impl AsRef<Path>) {
    package(name).write_dir(package_dir).expect("package");
    std::fs::write(
        key_file,
        crate::package::encode_verifying_key(&publisher_key().verifying_key()),
    )
    .expect("publisher key");
}

pub fn trust() -> TrustPolicy {
    TrustPolicy {
        trusted_keys: vec![publisher_key().verifying_key()],
        allow_unsigned: false,
    }
}

pub fn cache_dir() -> PathBuf {
    let dir = plugin_dir().join("../wasmtime-cache");
    std::fs::create_dir_all(&dir).expect("cache dir");
    dir
}

/// A runtime trusting the test key, with the shared compilation cache.
pub fn runtime_with(mut config: RuntimeConfig) -> Runtime {
    config.trust = trust();
    config.cache_dir = Some(cache_dir());
    Runtime::new(config).expect("runtime")
}

pub fn runtime() -> Runtime {
    runtime_with(RuntimeConfig::default())
}

/// Load and install a built plugin.
pub async fn load(rt: &Runtime, name: &str) -> Arc<Plugin> {
    let plugin = rt
        .load(&package(name))
        .await
        .unwrap_or_else(|e| panic!("load {name}: {e}"));
    rt.install(plugin.clone());
    plugin
}

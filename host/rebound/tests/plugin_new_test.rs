//! `rebound plugin new` as a plugin author starts: the new crate's README
//! commands run as written — build for wasm32-wasip2, make a publisher
//! key, package, `rebound lab up`, and the conformance kit passes on the
//! lab's example site with the new plugin's name — and the refusals: a
//! name the manifest rule rejects, a folder that is not empty.
//!
//! `cargo test -p rebound --test plugin_new_test` (needs rustup's
//! wasm32-wasip2 target, which `cargo xtask build-plugins` installs). The
//! new crate builds into this build's target folder, so the SDK's
//! dependencies are compiled once across runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "support/kit.rs"]
mod kit_table;

fn rebound(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rebound"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run rebound")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// This build's target folder (`<target>/debug/rebound`).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_rebound"))
        .ancestors()
        .nth(2)
        .expect("the target folder")
        .to_owned()
}

/// The commands of the first ```sh block.
fn sh_block(markdown: &str) -> String {
    markdown
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a ```sh block")
        .to_owned()
}

/// Stops the lab of a folder whatever the test did.
struct Lab(PathBuf);

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_rebound"))
            .args(["lab", "down", "--dir"])
            .arg(&self.0)
            .output();
    }
}

#[test]
fn a_new_plugin_builds_and_passes_the_kit_on_the_lab() {
    let scratch = tempfile::tempdir().expect("tmp");
    let new = rebound(scratch.path(), &["plugin", "new", "acme"]);
    assert!(new.status.success(), "{}", text(&new));
    let acme = scratch.path().join("acme");
    let _lab = Lab(acme.join("lab"));
    for file in [
        "Cargo.toml",
        "Cargo.lock",
        "plugin.toml",
        "README.md",
        "src/lib.rs",
        "src/api.rs",
    ] {
        assert!(acme.join(file).is_file(), "no {file}");
    }

    // The README's commands, as written, with `rebound` on PATH.
    let readme = std::fs::read_to_string(acme.join("README.md")).expect("README");
    let commands = sh_block(&readme);
    assert!(
        commands.contains("cargo build --target wasm32-wasip2 --release"),
        "{commands}"
    );
    // Not a component an earlier run left: the one this build makes.
    let wasm = target_dir().join("wasm32-wasip2/release/rebound_plugin_acme.wasm");
    let _ = std::fs::remove_file(&wasm);
    let bin = Path::new(env!("CARGO_BIN_EXE_rebound"));
    let path = format!(
        "{}:{}",
        bin.parent().expect("bin dir").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &commands])
        .current_dir(&acme)
        .env("PATH", path)
        .env("CARGO_TARGET_DIR", target_dir())
        .env(
            "CARGO",
            std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
        )
        .output()
        .expect("bash");
    assert!(out.status.success(), "{commands}\n{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("acme@0.1.0 verified"), "{stdout}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    for scenario in [
        "health",
        "inventory",
        "export-disk",
        "materialize (isolated)",
        "fault: hang",
    ] {
        let row = kit_table::row(&stdout, scenario);
        assert!(row.contains("pass"), "{row}");
    }
    assert!(stdout.contains("stopped the lab"), "{stdout}");

    // Not over a crate that is there, and not under a name no manifest takes.
    let again = rebound(scratch.path(), &["plugin", "new", "acme"]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("is not empty"),
        "{}",
        text(&again)
    );
    let bad = rebound(scratch.path(), &["plugin", "new", "Acme_Cloud"]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("a-z, 0-9 and '-'"),
        "{}",
        text(&bad)
    );
    assert!(!scratch.path().join("Acme_Cloud").exists());
}

//! What driving the web UI in a browser needs: the UI built into the
//! binary, web-ui/node_modules (playwright-core), Debian's Chromium and
//! node — for the browser tests and the dashboard's load bench.

// Shared by a test and a bench; each uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn web_ui() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web-ui")
}

pub fn chromium() -> PathBuf {
    std::env::var_os("REBOUND_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// What the browser tests need that is missing here, if anything.
pub fn missing() -> Option<String> {
    if !rebound_ui::built() {
        return Some("the web UI was not built into this binary (cargo xtask build-ui)".into());
    }
    if !web_ui().join("node_modules/playwright-core").is_dir() {
        return Some("web-ui/node_modules is missing (npm ci in web-ui/)".into());
    }
    if !chromium().is_file() {
        return Some(format!(
            "no Chromium at {} (apt-get install chromium, or set REBOUND_CHROMIUM)",
            chromium().display()
        ));
    }
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => None,
        _ => Some("node is not installed".into()),
    }
}

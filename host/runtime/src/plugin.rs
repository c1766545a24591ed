//! A loaded plugin version: its verified manifest, what it reported from
//! `describe`, the pre-linked component ready to instantiate, and its crash
//! budget (quarantine after repeated crashes), and whether an operator
//! disabled it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::bindings::{PluginInfo, PluginPre};
use crate::error::CallError;
use crate::host::lock;
use crate::manifest::Manifest;

pub struct Plugin {
    pub manifest: Manifest,
    pub info: PluginInfo,
    /// Hex SHA-256 of the component.
    pub digest: String,
    pub(crate) pre: PluginPre,
    crashes: Mutex<Crashes>,
    disabled: AtomicBool,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.manifest.name)
            .field("version", &self.manifest.version.to_string())
            .field("digest", &self.digest)
            .finish()
    }
}

#[derive(Default)]
struct Crashes {
    recent: VecDeque<(Instant, String)>,
    quarantined: bool,
}

/// A snapshot of a plugin's crash record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashStatus {
    pub recent_crashes: usize,
    pub quarantined: bool,
    pub last: Option<String>,
}

impl Plugin {
    pub(crate) fn new(
        manifest: Manifest,
        info: PluginInfo,
        digest: String,
        pre: PluginPre,
    ) -> Self {
        Self {
            manifest,
            info,
            digest,
            pre,
            crashes: Mutex::default(),
            disabled: AtomicBool::new(false),
        }
    }

    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    pub fn version(&self) -> String {
        self.manifest.version.to_string()
    }

    /// The provider contract version the component was built against.
    pub fn contract(&self) -> semver::Version {
        self.pre.contract()
    }

    /// Whether calls are allowed (an operator may disable a plugin).
    pub fn enabled(&self) -> bool {
        !self.disabled.load(Ordering::SeqCst)
    }

    pub(crate) fn set_enabled(&self, enabled: bool) {
        self.disabled.store(!enabled, Ordering::SeqCst);
    }

    pub(crate) fn check_quarantine(&self, window: Duration) -> Result<(), CallError> {
        if !self.enabled() {
            return Err(CallError::Disabled {
                plugin: self.manifest.name.clone(),
                version: self.manifest.version.to_string(),
            });
        }
        let crashes = lock(&self.crashes);
        if crashes.quarantined {
            return Err(CallError::Quarantined {
                plugin: self.manifest.name.clone(),
                version: self.manifest.version.to_string(),
                crashes: crashes.recent.len(),
                window,
                last: crashes
                    .recent
                    .back()
                    .map(|(_, r)| r.clone())
                    .unwrap_or_default(),
            });
        }
        Ok(())
    }

    /// Count a crash; quarantine once `budget` crashes fall within `window`.
    pub(crate) fn record_crash(&self, reason: String, budget: usize, window: Duration) {
        let mut crashes = lock(&self.crashes);
        let now = Instant::now();
        crashes.recent.push_back((now, reason));
        while crashes
            .recent
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > window)
        {
            crashes.recent.pop_front();
        }
        if crashes.recent.len() >= budget && !crashes.quarantined {
            crashes.quarantined = true;
            tracing::error!(plugin = %self.manifest.name, version = %self.manifest.version,
                crashes = crashes.recent.len(), "plugin quarantined after repeated crashes");
        }
    }

    /// Lift the quarantine (an operator's decision) and forget past crashes.
    pub fn release(&self) {
        *lock(&self.crashes) = Crashes::default();
    }

    pub fn crash_status(&self) -> CrashStatus {
        let crashes = lock(&self.crashes);
        CrashStatus {
            recent_crashes: crashes.recent.len(),
            quarantined: crashes.quarantined,
            last: crashes.recent.back().map(|(_, r)| r.clone()),
        }
    }
}

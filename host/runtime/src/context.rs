//! What a caller hands the runtime for one call: the sites the call may
//! touch (their config, secrets and egress grants) and its time budget.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::egress::EgressRule;

/// A secret value. Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(***)")
    }
}

/// One site as a call sees it.
#[derive(Debug, Clone, Default)]
pub struct SiteGrant {
    /// The site's name, as plugins receive it.
    pub name: String,
    /// Non-secret settings (endpoint, region, ...).
    pub config: BTreeMap<String, String>,
    /// Credentials by name, resolved by the caller from the site's
    /// credential reference.
    pub secrets: BTreeMap<String, SecretValue>,
    /// What the operator allows the plugin to reach for this site.
    pub egress: Vec<EgressRule>,
    /// Extra PEM root certificates to trust for this site's endpoints (a
    /// private cloud's own CA).
    pub ca_pem: Option<String>,
    /// The most calls of its plugin for this site in flight at once
    /// (`None`: the host's default), so a large plan does not flood the
    /// platform's API; the engine counts them across the hosts sharing a
    /// PostgreSQL store.
    pub max_calls: Option<usize>,
}

impl SiteGrant {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    pub fn config(mut self, key: &str, value: &str) -> Self {
        self.config.insert(key.to_owned(), value.to_owned());
        self
    }

    pub fn secret(mut self, key: &str, value: &str) -> Self {
        self.secrets.insert(key.to_owned(), SecretValue::new(value));
        self
    }

    /// Whether the host's data mover may connect to `url` for this site:
    /// its host must be one the site's egress grant names (any port). A
    /// plugin hands the mover its endpoints, so this keeps a plugin from
    /// pointing the host at anything the operator did not grant.
    pub fn check_data_url(&self, url: &str) -> Result<(), String> {
        let target = EgressRule::parse(url)
            .map_err(|e| format!("site '{}': unusable transfer endpoint: {e}", self.name))?;
        if self.egress.iter().any(|rule| rule.covers_host_of(&target)) {
            return Ok(());
        }
        let host = target.to_string();
        let host = host
            .split("://")
            .nth(1)
            .and_then(|a| a.rsplit_once(':'))
            .map_or(host.as_str(), |(h, _)| h)
            .to_owned();
        Err(format!(
            "site '{}' handed the data mover an endpoint on '{host}', which the site's egress grant does not name; \
             if that host is the platform's, grant it in the site's egress list",
            self.name
        ))
    }

    /// At most `n` calls for this site at once.
    pub fn max_calls(mut self, n: usize) -> Self {
        self.max_calls = Some(n);
        self
    }

    /// Trust `pem` (root certificates) for this site's endpoints.
    pub fn ca(mut self, pem: &str) -> Self {
        self.ca_pem = Some(pem.to_owned());
        self
    }

    /// Grant egress to a URL such as `http://127.0.0.1:8774`.
    pub fn grant(mut self, url: &str) -> Result<Self, String> {
        self.egress.push(EgressRule::parse(url)?);
        Ok(self)
    }
}

/// The context of one call.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub sites: Vec<SiteGrant>,
    /// Wall-clock budget of the call (the step's remaining RTO budget); the
    /// runtime caps it at its own per-call limit.
    pub budget: Duration,
    /// Faults the host injects into the call's outgoing requests (the
    /// conformance kit's error-handling scenarios); none in production.
    pub faults: Option<Arc<Faults>>,
}

/// What an injected fault does to an outgoing request (after the egress
/// policy has allowed it, so a denial stays a denial).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status at once, and `Retry-After` when given, as
    /// an overloaded or failing API would.
    Status {
        code: u16,
        retry_after_secs: Option<u32>,
    },
    /// Never answer: the request waits until its timeout or the call's
    /// deadline, like a hung API.
    Hang,
}

/// A fault for the next `count` requests of a call (shared by its calls).
#[derive(Debug)]
pub struct Faults {
    pub fault: Fault,
    remaining: std::sync::atomic::AtomicUsize,
}

impl Faults {
    pub fn new(fault: Fault, count: usize) -> Arc<Self> {
        Arc::new(Self {
            fault,
            remaining: std::sync::atomic::AtomicUsize::new(count),
        })
    }

    /// The fault for the next request, if any remain.
    pub(crate) fn take(&self) -> Option<Fault> {
        use std::sync::atomic::Ordering;
        self.remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .ok()
            .map(|_| self.fault)
    }

    /// Requests the fault has not hit yet.
    pub fn remaining(&self) -> usize {
        self.remaining.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl CallContext {
    pub fn new(sites: Vec<SiteGrant>, budget: Duration) -> Self {
        Self {
            sites,
            budget,
            faults: None,
        }
    }

    /// The same call with `faults` injected.
    pub fn with_faults(mut self, faults: Arc<Faults>) -> Self {
        self.faults = Some(faults);
        self
    }

    /// A call that touches no site (`describe`).
    pub fn none(budget: Duration) -> Self {
        Self::new(Vec::new(), budget)
    }
}

/// Something the runtime reports outside a call's result: secret reveals,
/// which DESIGN.md requires to be audited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditEvent {
    SecretRevealed {
        plugin: String,
        version: String,
        site: String,
        secret: String,
    },
}

/// Receives audit events (the engine writes them to the audit log).
pub trait AuditSink: Send + Sync {
    fn record(&self, event: AuditEvent);
}

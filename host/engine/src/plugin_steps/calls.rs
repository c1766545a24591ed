//! How many calls of a site's plugin are in flight: at most the site's
//! `max_calls` (the platform's limit — a 1,000-workload stage does not send
//! 1,000 requests to one API together). Each host holds a semaphore per
//! site; where host replicas share the store (PostgreSQL), a call also
//! takes one of the site's slots there ([`Store::take_call_slot`]), so the
//! limit holds across every host, not per host. A host that cannot reach
//! the store keeps its own limit and says so; the calls' steps meet the
//! store's failure themselves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use rebound_store::Store;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::BoundSite;

/// Calls of a site's plugin made at once when the site sets no
/// `max_calls`.
pub const DEFAULT_MAX_CALLS: usize = 16;

/// How long a slot is held without renewal, and how often a call still
/// running renews it: the slots of a host that died mid-call come free
/// within `HOLD`, like the leases of its runs.
const HOLD: Duration = Duration::from_secs(30);
const RENEW_EVERY: Duration = Duration::from_secs(10);

/// The first and the longest wait between tries for a slot held by others.
const FIRST_WAIT: Duration = Duration::from_millis(20);
const LONGEST_WAIT: Duration = Duration::from_millis(500);

/// The calls in flight of every site.
pub(super) struct Calls {
    /// This host's limit and permits per site.
    local: Mutex<HashMap<String, (usize, Arc<Semaphore>)>>,
    /// The store whose slots the replicas share; `None`: this host alone.
    shared: Option<Store>,
    /// This host's part of each slot holder's id.
    host: String,
}

/// Leave to call a site's plugin until dropped.
pub(super) struct CallPermit {
    _local: OwnedSemaphorePermit,
    slot: Option<Slot>,
}

/// A slot of a site's shared limit, renewed until given back.
struct Slot {
    store: Store,
    site: String,
    slot: u32,
    holder: String,
    renewal: tokio::task::JoinHandle<()>,
}

impl Drop for CallPermit {
    fn drop(&mut self) {
        let Some(Slot {
            store,
            site,
            slot,
            holder,
            renewal,
        }) = self.slot.take()
        else {
            return;
        };
        renewal.abort();
        // Given back in the background; if that fails, the hold lapses.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = store.give_call_slot(&site, slot, &holder).await {
                    tracing::warn!(%site, slot, "a call slot not given back (its hold lapses): {e}");
                }
            });
        }
    }
}

/// Renew a slot's hold while its call runs (the task is aborted when the
/// call ends); a renewal the store refuses or cannot make is said, and the
/// call goes on.
async fn renew(store: Store, site: String, slot: u32, holder: String) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        match store.renew_call_slot(&site, slot, &holder, HOLD).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(%site, slot, "a call outlived its slot's hold; the slot is another call's now");
                return;
            }
            Err(e) => tracing::warn!(%site, slot, "a call slot not renewed: {e}"),
        }
    }
}

impl Calls {
    /// Limits kept by this host alone; with `shared`, also across the
    /// hosts on that store.
    pub(super) fn new(shared: Option<Store>) -> Self {
        Self {
            local: Mutex::default(),
            shared,
            host: format!("{:016x}", rand::random::<u64>()),
        }
    }

    /// Whether the limits hold across the hosts sharing the store.
    pub(super) fn shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Leave to call `site`'s plugin once fewer than its limit of calls
    /// are in flight (a changed limit applies to calls after it).
    pub(super) async fn permit(&self, site: &BoundSite) -> CallPermit {
        let started = std::time::Instant::now();
        let limit = site.grant.max_calls.unwrap_or(DEFAULT_MAX_CALLS).max(1);
        let name = &site.grant.name;
        let semaphore = {
            let mut local = self.local.lock().expect("calls lock");
            let entry = local
                .entry(name.clone())
                .or_insert_with(|| (limit, Arc::new(Semaphore::new(limit))));
            if entry.0 != limit {
                *entry = (limit, Arc::new(Semaphore::new(limit)));
            }
            entry.1.clone()
        };
        let local = semaphore
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let slot = match &self.shared {
            Some(store) => self.slot(store, name, limit).await,
            None => None,
        };
        crate::metrics::call_waited(name, started.elapsed());
        CallPermit {
            _local: local,
            slot,
        }
    }

    /// A slot of `site`'s shared limit, waited for while others hold them
    /// all; `None` when the store cannot be reached.
    async fn slot(&self, store: &Store, site: &str, limit: usize) -> Option<Slot> {
        let holder = format!("{}/{:016x}", self.host, rand::random::<u64>());
        let limit = u32::try_from(limit).unwrap_or(u32::MAX);
        let mut wait = FIRST_WAIT;
        loop {
            match store.take_call_slot(site, limit, &holder, HOLD).await {
                Ok(Some(slot)) => {
                    let renewal =
                        tokio::spawn(renew(store.clone(), site.to_owned(), slot, holder.clone()));
                    return Some(Slot {
                        store: store.clone(),
                        site: site.to_owned(),
                        slot,
                        holder,
                        renewal,
                    });
                }
                Ok(None) => {
                    // Jittered, so hosts waiting together do not retry
                    // together.
                    let jitter = rand::thread_rng().gen_range(0.5..1.5);
                    tokio::time::sleep(wait.mul_f64(jitter)).await;
                    wait = (wait * 2).min(LONGEST_WAIT);
                }
                Err(e) => {
                    tracing::warn!(
                        %site,
                        "the store's call slots are out of reach; this host keeps the site's max_calls by itself: {e}"
                    );
                    return None;
                }
            }
        }
    }
}

//! The cluster's lab surface, outside the Kubernetes API: the faults every
//! API call passes at the front door, and `/_lab/…` through the lab's
//! shared control routes — faults, effects (objects created per
//! idempotency key) and guest writes ([`crate::guest`]) into a running
//! VM's PVC.

use axum::http::Method;
use axum::response::Response;
use serde_json::json;

use super::{Cluster, PVC, Site, VM, VMI, controllers, status};
use crate::faults::Faults;
use crate::guest;

/// The injected faults every API call passes (the `/_lab` API excepted),
/// answered as a Kubernetes `Status`.
pub(super) async fn front_door(site: &Site, method: &Method, path: &str) -> Option<Response> {
    let faults = site.cluster().faults.clone();
    let injected = faults
        .meet(method.as_str(), path, || site.cluster().faults.hang)
        .await?;
    Some(injected.respond(|code, down| {
        let (reason, message) = match code.as_u16() {
            _ if down => (
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
            ),
            429 => (
                "TooManyRequests",
                "the server has received too many requests and has asked us to try again later",
            ),
            500 => (
                "InternalError",
                "an error on the server has prevented the request from succeeding",
            ),
            504 => (
                "Timeout",
                "the server was unable to return a response in time",
            ),
            _ => (
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
            ),
        };
        status(code, reason, message)
    }))
}

/// `/_lab/faults`, `/_lab/effects` and `/_lab/guest-writes`: the lab's
/// shared control routes ([`crate::faults::routes`]).
impl crate::faults::Scripted for Site {
    fn with_faults<R>(&self, f: impl FnOnce(&mut Faults) -> R) -> R {
        f(&mut self.cluster().faults)
    }

    fn effects_json(&self) -> serde_json::Value {
        json!(self.cluster().effects)
    }

    async fn guest_write(
        &self,
        write: &crate::guest::GuestWrite,
        data: &[u8],
    ) -> Result<(), guest::Refused> {
        guest_write(&self.cluster(), write, data)
    }
}

/// The guest of the running VM whose volume is PVC `write.disk` (its
/// name, or `namespace/name` where the name is in several namespaces)
/// writes into it.
fn guest_write(
    cluster: &Cluster,
    write: &crate::guest::GuestWrite,
    data: &[u8],
) -> Result<(), guest::Refused> {
    let (namespace, claim) = match write.disk.split_once('/') {
        Some((ns, claim)) => (Some(ns), claim),
        None => (None, write.disk.as_str()),
    };
    let claims: Vec<&String> = cluster
        .objects
        .keys()
        .filter(|(r, ns, name)| *r == PVC && name == claim && namespace.is_none_or(|n| n == ns))
        .map(|(_, ns, _)| ns)
        .collect();
    let ns = match claims.as_slice() {
        [] => {
            return Err(guest::Refused::NoDisk(format!(
                "no PersistentVolumeClaim {}",
                write.disk
            )));
        }
        [ns] => (*ns).clone(),
        several => {
            return Err(guest::Refused::Invalid(format!(
                "PersistentVolumeClaim {claim} is in namespaces {several:?}; give namespace/{claim}"
            )));
        }
    };
    write_claim(cluster, &ns, claim, write.offset, data)
}

/// The guest of the running VM whose volume is PVC `ns/claim` writes
/// `data` at `offset` of it; refused unless such a VM runs.
pub(super) fn write_claim(
    cluster: &Cluster,
    ns: &str,
    claim: &str,
    offset: u64,
    data: &[u8],
) -> Result<(), guest::Refused> {
    let running = cluster.objects.iter().any(|((r, vm_ns, name), (vm, _))| {
        *r == VM
            && vm_ns == ns
            && controllers::volume_claims(&vm["spec"]["template"]["spec"])
                .iter()
                .any(|(_, c)| c == claim)
            && cluster
                .objects
                .contains_key(&(VMI, ns.to_owned(), name.clone()))
    });
    if !running {
        return Err(guest::Refused::NotRunning(format!(
            "the VM of PersistentVolumeClaim {ns}/{claim} is not running; a stopped guest \
             cannot write"
        )));
    }
    guest::write_image(
        &cluster.disks,
        &controllers::pvc_disk(ns, claim),
        claim,
        offset,
        data,
    )
}

//! Traffic: OpenShift Route backend weights (canary steps), or, for a plain
//! Service, its selector (all or nothing). Each backend is a VM, reached
//! through a Service of its own that selects the VM's launcher pod by the
//! `vm.kubevirt.io/name` label KubeVirt puts on it.

use rebound_plugin_sdk::{
    Operation, OperationKind, OperationState, Outcome, ProviderError, RedirectReport,
    RedirectRequest, RedirectTarget, WeightedBackend, info,
};
use serde_json::{Value, json};

use crate::kube::{Cluster, core, group};
use crate::names;

/// The label KubeVirt sets on a VM's pods.
const VM_LABEL: &str = "vm.kubevirt.io/name";

/// A Route sends to `to` and at most three `alternateBackends`.
const MAX_BACKENDS: usize = 4;

/// `namespace/name`, or a name in the site's namespace.
fn split<'a>(cluster: &'a Cluster, target: &'a str) -> (&'a str, &'a str) {
    target
        .split_once('/')
        .unwrap_or((cluster.namespace.as_str(), target))
}

fn routes(ns: &str) -> String {
    group("route.openshift.io/v1", ns, "routes")
}

/// The Service name for a VM's backend (a DNS-1035 label).
fn service_for(vm: &str) -> String {
    if vm.starts_with(|c: char| c.is_ascii_lowercase()) && vm.len() <= 63 {
        vm.to_owned()
    } else {
        names::derived("vm", vm)
    }
}

/// Make sure a Service selects `vm`, with the ports of `like` (the Route's
/// current Service) when there is one.
fn ensure_service(
    cluster: &Cluster,
    ns: &str,
    vm: &str,
    like: Option<&Value>,
) -> Result<String, ProviderError> {
    let name = service_for(vm);
    let ports = like
        .and_then(|s| s["spec"]["ports"].as_array().cloned())
        .unwrap_or_else(|| {
            vec![json!({"name": "http", "port": 80, "targetPort": 80, "protocol": "TCP"})]
        });
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "labels": {"rebound.io/backend": "true"}},
        "spec": {"selector": {VM_LABEL: vm}, "ports": ports},
    });
    cluster.create(&core(ns, "services"), &service)?;
    Ok(name)
}

pub fn redirect(req: &RedirectRequest) -> Result<Operation, ProviderError> {
    let RedirectTarget::Route(target) = &req.target else {
        return Err(ProviderError::Unsupported(
            "KubeVirt redirects OpenShift Routes and Services (a route target); use a DNS or load-balancer site for other targets"
                .into(),
        ));
    };
    let cluster = Cluster::of(&req.site)?;
    let (ns, name) = split(&cluster, target);
    if let Some(route) = cluster.get_opt(&format!("{}/{name}", routes(ns)))? {
        weigh_route(&cluster, ns, name, &route, req)?;
    } else if cluster
        .get_opt(&format!("{}/{name}", core(ns, "services")))?
        .is_some()
    {
        // A Service cannot weigh: it selects the heaviest backend.
        if let Some(top) = req
            .backends
            .iter()
            .filter(|b| b.weight > 0)
            .max_by_key(|b| b.weight)
        {
            let patch = json!({"metadata": {"annotations": {"rebound.io/redirect-key": req.key}},
                               "spec": {"selector": {VM_LABEL: top.backend}}});
            cluster.merge_patch(&format!("{}/{name}", core(ns, "services")), &patch)?;
        }
    } else {
        return Err(ProviderError::NotFound(format!(
            "neither a Route nor a Service '{name}' in namespace '{ns}' of site '{}'",
            req.site
        )));
    }
    info!("traffic redirected"; "target" => target, "backends" => req.backends.len());
    Ok(Operation {
        kind: OperationKind::Redirect,
        site: req.site.clone(),
        id: format!("{ns}/{name}"),
    })
}

fn weigh_route(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    route: &Value,
    req: &RedirectRequest,
) -> Result<(), ProviderError> {
    let spec = &route["spec"];
    let mut backends: Vec<(String, u64)> = std::iter::once(&spec["to"])
        .chain(spec["alternateBackends"].as_array().into_iter().flatten())
        .filter_map(|b| {
            Some((
                b["name"].as_str()?.to_owned(),
                b["weight"].as_u64().unwrap_or(100),
            ))
        })
        .collect();
    let like = backends
        .first()
        .and_then(|(service, _)| {
            cluster
                .get_opt(&format!("{}/{service}", core(ns, "services")))
                .transpose()
        })
        .transpose()?;
    let mut listed = Vec::new();
    for b in &req.backends {
        let service = ensure_service(cluster, ns, &b.backend, like.as_ref())?;
        match backends.iter_mut().find(|(s, _)| *s == service) {
            Some(entry) => entry.1 = u64::from(b.weight),
            None => backends.push((service.clone(), u64::from(b.weight))),
        }
        listed.push(service);
    }
    // Backends not asked about keep their weight; drained ones go first when
    // the Route would hold too many.
    while backends.len() > MAX_BACKENDS {
        let Some(i) = backends
            .iter()
            .rposition(|(s, w)| *w == 0 && !listed.contains(s))
        else {
            return Err(ProviderError::InvalidRequest(format!(
                "Route {ns}/{name} would need {} backends; a Route takes at most {MAX_BACKENDS} (drain some to weight 0 first)",
                backends.len()
            )));
        };
        backends.remove(i);
    }
    let entry = |(service, weight): &(String, u64)| json!({"kind": "Service", "name": service, "weight": weight});
    let patch = json!({
        "metadata": {"annotations": {"rebound.io/redirect-key": req.key}},
        "spec": {"to": entry(&backends[0]),
                 "alternateBackends": backends[1..].iter().map(entry).collect::<Vec<_>>()},
    });
    cluster.merge_patch(&format!("{}/{name}", routes(ns)), &patch)?;
    Ok(())
}

/// The VM a backend Service selects, else the Service's name.
fn backend_of(cluster: &Cluster, ns: &str, service: &str) -> Result<String, ProviderError> {
    Ok(cluster
        .get_opt(&format!("{}/{service}", core(ns, "services")))?
        .and_then(|s| s["spec"]["selector"][VM_LABEL].as_str().map(str::to_owned))
        .unwrap_or_else(|| service.to_owned()))
}

pub fn status(cluster: &Cluster, id: &str) -> Result<OperationState, ProviderError> {
    let (ns, name) = split(cluster, id);
    let mut backends = Vec::new();
    if let Some(route) = cluster.get_opt(&format!("{}/{name}", routes(ns)))? {
        let spec = &route["spec"];
        for b in std::iter::once(&spec["to"])
            .chain(spec["alternateBackends"].as_array().into_iter().flatten())
        {
            let Some(service) = b["name"].as_str() else {
                continue;
            };
            backends.push(WeightedBackend {
                backend: backend_of(cluster, ns, service)?,
                weight: u8::try_from(b["weight"].as_u64().unwrap_or(100).min(100)).unwrap_or(100),
            });
        }
    } else {
        let service = cluster.get(&format!("{}/{name}", core(ns, "services")))?;
        if let Some(vm) = service["spec"]["selector"][VM_LABEL].as_str() {
            backends.push(WeightedBackend {
                backend: vm.to_owned(),
                weight: 100,
            });
        }
    }
    Ok(OperationState::Succeeded(Outcome::Redirected(
        RedirectReport {
            target: RedirectTarget::Route(format!("{ns}/{name}")),
            backends,
        },
    )))
}

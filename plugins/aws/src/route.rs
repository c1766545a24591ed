//! Redirect: Route 53 weighted records (one record per backend, the
//! backend's address as its value and set identifier), polled with
//! GetChange until INSYNC; an ELBv2 listener's weighted forward action
//! (the load-balancer pool is the listener's ARN; each backend instance
//! gets a target group of its own, made like the listener's first one and
//! tagged with the backend, and the listener forwards to the target groups
//! by the backends' weights — AWS's own canary pattern); or an Elastic IP
//! reassociated to the instance with the highest weight.

use rebound_plugin_sdk::{
    DnsRecord, Operation, OperationKind, OperationState, Outcome, ProviderError, RedirectReport,
    RedirectRequest, RedirectTarget, Running, WeightedBackend,
};

use crate::client::{Aws, Params, connect};
use crate::xml::{Node, escape};

const NS: &str = "https://route53.amazonaws.com/doc/2013-04-01/";

fn fqdn(name: &str, zone: &str) -> String {
    let zone = zone.trim_end_matches('.');
    let name = name.trim_end_matches('.');
    if name == zone || name.ends_with(&format!(".{zone}")) {
        format!("{name}.")
    } else {
        format!("{name}.{zone}.")
    }
}

fn zone_id(aws: &Aws, zone: &str) -> Result<String, ProviderError> {
    let want = format!("{}.", zone.trim_end_matches('.'));
    let reply = aws.route53("GET", "/2013-04-01/hostedzone", None)?;
    reply
        .items("HostedZones")
        .find(|z| z.text("Name") == want)
        .map(|z| {
            z.text("Id")
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .ok_or_else(|| ProviderError::NotFound(format!("hosted zone '{want}' in Route 53")))
}

pub fn redirect(req: RedirectRequest) -> Result<Operation, ProviderError> {
    let aws = connect(&req.site)?;
    let id = match &req.target {
        RedirectTarget::DnsRecord(r) => dns(&aws, r, &req.backends)?,
        RedirectTarget::FloatingIp(ip) => eip(&aws, ip, &req.backends)?,
        RedirectTarget::LoadBalancerPool(listener) => elb(&aws, listener, &req.backends)?,
        RedirectTarget::Route(route) => {
            return Err(ProviderError::Unsupported(format!(
                "AWS has no routes ('{route}'); redirect a Route 53 record, an ELBv2 listener \
                 (load_balancer_pool: its ARN) or an Elastic IP"
            )));
        }
    };
    Ok(Operation {
        kind: OperationKind::Redirect,
        site: req.site,
        id,
    })
}

fn dns(aws: &Aws, r: &DnsRecord, backends: &[WeightedBackend]) -> Result<String, ProviderError> {
    let zone = zone_id(aws, &r.zone)?;
    let name = fqdn(&r.name, &r.zone);
    let changes: String = backends
        .iter()
        .map(|b| {
            format!(
                "<Change><Action>UPSERT</Action><ResourceRecordSet><Name>{name}</Name><Type>{t}</Type>\
                 <SetIdentifier>{id}</SetIdentifier><Weight>{w}</Weight><TTL>{ttl}</TTL>\
                 <ResourceRecords><ResourceRecord><Value>{id}</Value></ResourceRecord></ResourceRecords>\
                 </ResourceRecordSet></Change>",
                name = escape(&name),
                t = escape(&r.record_type),
                id = escape(&b.backend),
                w = b.weight.min(100),
                ttl = r.ttl_secs,
            )
        })
        .collect();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ChangeResourceRecordSetsRequest xmlns=\"{NS}\">\
         <ChangeBatch><Comment>rebound redirect</Comment><Changes>{changes}</Changes></ChangeBatch>\
         </ChangeResourceRecordSetsRequest>"
    );
    let reply = aws.route53(
        "POST",
        &format!("/2013-04-01/hostedzone/{zone}/rrset"),
        Some(body),
    )?;
    let change = reply
        .text("ChangeInfo/Id")
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    Ok(format!(
        "dns|{zone}|{change}|{name}|{}|{}|{}",
        r.record_type, r.ttl_secs, r.zone
    ))
}

fn eip(aws: &Aws, ip: &str, backends: &[WeightedBackend]) -> Result<String, ProviderError> {
    let instance = backends
        .iter()
        .filter(|b| b.weight > 0)
        .max_by_key(|b| b.weight)
        .ok_or_else(|| {
            ProviderError::InvalidRequest(
                "an Elastic IP needs a backend with a weight above 0".into(),
            )
        })?;
    let addresses = aws.ec2(&Params::action("DescribeAddresses").set("PublicIp.1", ip).0)?;
    let address = addresses
        .items("addressesSet")
        .next()
        .ok_or_else(|| ProviderError::NotFound(format!("Elastic IP {ip}")))?;
    let mut p = Params::action("AssociateAddress")
        .set("InstanceId", instance.backend.clone())
        .set("AllowReassociation", "true");
    p = match address.text("allocationId") {
        "" => p.set("PublicIp", ip),
        id => p.set("AllocationId", id),
    };
    aws.ec2(&p.0)?;
    Ok(format!("eip|{ip}|{}", instance.backend))
}

/// The tag naming the backend a target group was made for.
const BACKEND_TAG: &str = "rebound:backend";

/// `(target group ARN, weight)` of a listener's forward action.
fn forwards(aws: &Aws, listener: &str) -> Result<Vec<(String, u32)>, ProviderError> {
    let reply = aws.elbv2(
        &Params::action("DescribeListeners")
            .set("ListenerArns.member.1", listener)
            .0,
    )?;
    let found = reply.items("Listeners").next().ok_or_else(|| {
        ProviderError::NotFound(format!("ELBv2 listener '{listener}' in {}", aws.region))
    })?;
    let action = found
        .items("DefaultActions")
        .find(|a| a.text("Type") == "forward")
        .ok_or_else(|| {
            ProviderError::InvalidRequest(format!(
                "listener '{listener}' does not forward to target groups; give a listener whose \
                 default action is forward"
            ))
        })?;
    let weighted: Vec<(String, u32)> = action
        .items("ForwardConfig/TargetGroups")
        .map(|t| {
            (
                t.text("TargetGroupArn").to_owned(),
                t.text("Weight").parse().unwrap_or(1),
            )
        })
        .collect();
    Ok(if weighted.is_empty() {
        vec![(action.text("TargetGroupArn").to_owned(), 1)]
    } else {
        weighted
    })
}

fn elb(aws: &Aws, listener: &str, backends: &[WeightedBackend]) -> Result<String, ProviderError> {
    let mut weights = forwards(aws, listener)?;
    let template = weights
        .first()
        .map(|(arn, _)| arn.clone())
        .filter(|arn| !arn.is_empty())
        .ok_or_else(|| {
            ProviderError::InvalidRequest(format!(
                "listener '{listener}' forwards to no target group to model new ones on"
            ))
        })?;
    let groups = aws.elbv2(
        &Params::action("DescribeTargetGroups")
            .set("TargetGroupArns.member.1", template)
            .0,
    )?;
    let model = groups
        .items("TargetGroups")
        .next()
        .cloned()
        .ok_or_else(|| ProviderError::NotFound("the listener's target group".into()))?;
    for b in backends {
        // One target group per listener and backend, found again by name.
        let name = format!(
            "rebound-{}",
            &crate::transfer::short(&format!("{listener}|{}", b.backend))[..24]
        );
        let group = match aws.elbv2(
            &Params::action("DescribeTargetGroups")
                .set("Names.member.1", name.clone())
                .0,
        ) {
            Ok(found) => found
                .items("TargetGroups")
                .next()
                .map(|g| g.text("TargetGroupArn").to_owned()),
            Err(ProviderError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let group = match group {
            Some(arn) => arn,
            None => {
                let made = aws.elbv2(
                    &Params::action("CreateTargetGroup")
                        .set("Name", name)
                        .set("Protocol", model.text("Protocol"))
                        .set("Port", model.text("Port"))
                        .set("VpcId", model.text("VpcId"))
                        .set("TargetType", "instance")
                        .set("Tags.member.1.Key", BACKEND_TAG)
                        .set("Tags.member.1.Value", b.backend.clone())
                        .0,
                )?;
                made.items("TargetGroups")
                    .next()
                    .map(|g| g.text("TargetGroupArn").to_owned())
                    .ok_or_else(|| {
                        ProviderError::ProviderFailed("CreateTargetGroup returned no group".into())
                    })?
            }
        };
        // Registering a registered target changes nothing.
        aws.elbv2(
            &Params::action("RegisterTargets")
                .set("TargetGroupArn", group.clone())
                .set("Targets.member.1.Id", b.backend.clone())
                .0,
        )?;
        let weight = u32::from(b.weight.min(100));
        match weights.iter_mut().find(|(arn, _)| *arn == group) {
            Some(entry) => entry.1 = weight,
            None => weights.push((group, weight)),
        }
    }
    let mut modify = Params::action("ModifyListener")
        .set("ListenerArn", listener)
        .set("DefaultActions.member.1.Type", "forward");
    for (i, (arn, weight)) in weights.iter().enumerate() {
        let at = format!(
            "DefaultActions.member.1.ForwardConfig.TargetGroups.member.{}",
            i + 1
        );
        modify = modify
            .set(format!("{at}.TargetGroupArn"), arn.clone())
            .set(format!("{at}.Weight"), weight.to_string());
    }
    aws.elbv2(&modify.0)?;
    Ok(format!("elb|{listener}"))
}

pub fn status(op: &Operation) -> Result<OperationState, ProviderError> {
    let aws = connect(&op.site)?;
    let parts: Vec<&str> = op.id.split('|').collect();
    match parts.as_slice() {
        ["dns", zone, change, name, kind, ttl, zone_name] => {
            let reply = aws.route53("GET", &format!("/2013-04-01/change/{change}"), None)?;
            let status = reply.text("ChangeInfo/Status");
            if status != "INSYNC" {
                return Ok(OperationState::Running(Running {
                    percent: None,
                    detail: format!("Route 53 change {change} is {status}"),
                }));
            }
            let sets = aws.route53("GET", &format!("/2013-04-01/hostedzone/{zone}/rrset"), None)?;
            let backends = sets
                .items("ResourceRecordSets")
                .filter(|s| s.text("Name") == *name && s.text("Type") == *kind)
                .filter(|s| !s.text("SetIdentifier").is_empty())
                .map(|s: &Node| WeightedBackend {
                    backend: s.text("SetIdentifier").to_owned(),
                    weight: s.text("Weight").parse().unwrap_or(0),
                })
                .collect();
            Ok(OperationState::Succeeded(Outcome::Redirected(
                RedirectReport {
                    target: RedirectTarget::DnsRecord(DnsRecord {
                        zone: (*zone_name).to_owned(),
                        name: (*name).to_owned(),
                        record_type: (*kind).to_owned(),
                        ttl_secs: ttl.parse().unwrap_or(60),
                    }),
                    backends,
                },
            )))
        }
        ["elb", listener] => {
            let weights = forwards(&aws, listener)?;
            let mut backends = Vec::new();
            for (arn, weight) in weights {
                let tags = aws.elbv2(
                    &Params::action("DescribeTags")
                        .set("ResourceArns.member.1", arn.clone())
                        .0,
                )?;
                let backend = tags
                    .items("TagDescriptions")
                    .flat_map(|d| d.items("Tags"))
                    .find(|t| t.text("Key") == BACKEND_TAG)
                    .map(|t| t.text("Value").to_owned())
                    // A target group the plugin did not make stands for
                    // itself.
                    .unwrap_or(arn);
                backends.push(WeightedBackend {
                    backend,
                    weight: u8::try_from(weight.min(100)).unwrap_or(100),
                });
            }
            Ok(OperationState::Succeeded(Outcome::Redirected(
                RedirectReport {
                    target: RedirectTarget::LoadBalancerPool((*listener).to_owned()),
                    backends,
                },
            )))
        }
        ["eip", ip, instance] => {
            let addresses =
                aws.ec2(&Params::action("DescribeAddresses").set("PublicIp.1", *ip).0)?;
            let now = addresses
                .items("addressesSet")
                .next()
                .map(|a| a.text("instanceId").to_owned())
                .unwrap_or_default();
            if now != *instance {
                return Ok(OperationState::Running(Running {
                    percent: None,
                    detail: format!("Elastic IP {ip} is on '{now}'"),
                }));
            }
            Ok(OperationState::Succeeded(Outcome::Redirected(
                RedirectReport {
                    target: RedirectTarget::FloatingIp((*ip).to_owned()),
                    backends: vec![WeightedBackend {
                        backend: (*instance).to_owned(),
                        weight: 100,
                    }],
                },
            )))
        }
        _ => Err(ProviderError::InvalidRequest(format!(
            "'{}' is not a redirect handle",
            op.id
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_fully_qualified_in_their_zone() {
        assert_eq!(fqdn("www", "shop.example.com."), "www.shop.example.com.");
        assert_eq!(
            fqdn("www.shop.example.com", "shop.example.com"),
            "www.shop.example.com."
        );
    }
}

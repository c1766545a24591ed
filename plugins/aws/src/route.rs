//! Redirect: Route 53 weighted records (one record per backend, the
//! backend's address as its value and set identifier), polled with
//! GetChange until INSYNC; or an Elastic IP reassociated to the instance
//! with the highest weight.

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
        other => {
            return Err(ProviderError::Unsupported(format!(
                "the AWS plugin redirects Route 53 records and Elastic IPs, not {other:?}"
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

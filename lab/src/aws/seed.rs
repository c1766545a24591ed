//! The lab as its own AWS client: signed query and REST requests, the IAM
//! user moto checks signatures against, and the seeded workloads.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{AwsError, AwsSite, Shared, xml_text};

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// One signed request: to whom, as whom, for which scope, what.
#[allow(clippy::too_many_arguments)]
async fn send(
    http: &reqwest::Client,
    creds: rebound_sigv4::Credentials<'_>,
    base: &str,
    region: &str,
    service: &str,
    method: &str,
    path: &str,
    body: Vec<u8>,
    content_type: &str,
) -> Result<String, String> {
    let host = base.trim_start_matches("http://");
    let headers = vec![("content-type".to_owned(), content_type.to_owned())];
    let req = rebound_sigv4::Request {
        method,
        host,
        path,
        query: "",
        headers: &headers,
        body: &body,
    };
    let signed = rebound_sigv4::sign(
        &req,
        &creds,
        region,
        service,
        &rebound_sigv4::amz_date(now_secs()),
    );
    let method_ = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let mut request = http
        .request(method_, format!("{base}{path}"))
        .header("content-type", content_type)
        .body(body);
    for (k, v) in signed {
        request = request.header(k, v);
    }
    let reply = request
        .send()
        .await
        .map_err(|e| format!("{service}: {e}"))?;
    let status = reply.status();
    let text = reply.text().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(text)
    } else {
        Err(format!("{service} {path} answered {status}: {text}"))
    }
}

/// One signed query-API call (EC2, ELBv2, IAM) to `base`.
pub(crate) async fn query(
    shared: &Shared,
    base: &str,
    region: &str,
    service: &str,
    params: &[(&str, &str)],
) -> Result<String, String> {
    let version = match service {
        "elasticloadbalancing" => "2015-12-01",
        "iam" => "2010-05-08",
        _ => "2016-11-15",
    };
    let body = form_body(params, version);
    send(
        &shared.http,
        shared.credentials(),
        base,
        region,
        service,
        "POST",
        "/",
        body.into_bytes(),
        "application/x-www-form-urlencoded; charset=utf-8",
    )
    .await
}

fn form_body(params: &[(&str, &str)], version: &str) -> String {
    let mut parts: Vec<String> = params
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                rebound_sigv4::uri_encode(k, false),
                rebound_sigv4::uri_encode(v, false)
            )
        })
        .collect();
    if !params.iter().any(|(k, _)| *k == "Version") {
        parts.push(format!("Version={version}"));
    }
    parts.join("&")
}

/// Create the IAM user whose key moto then requires: exactly
/// [`super::moto::NO_AUTH_ACTIONS`] requests. Returns (key id, secret).
pub(crate) async fn iam_user(
    http: &reqwest::Client,
    moto: &str,
) -> Result<(String, String), AwsError> {
    let creds = rebound_sigv4::Credentials {
        access_key_id: "AKIALABSEED",
        secret_access_key: "seed",
    };
    let call = |params: Vec<(&str, &str)>| {
        let body = form_body(&params, "2010-05-08");
        send(
            http,
            creds,
            moto,
            "us-east-1",
            "iam",
            "POST",
            "/",
            body.into_bytes(),
            "application/x-www-form-urlencoded; charset=utf-8",
        )
    };
    call(vec![("Action", "CreateUser"), ("UserName", "rebound")])
        .await
        .map_err(AwsError::Seed)?;
    let key = call(vec![("Action", "CreateAccessKey"), ("UserName", "rebound")])
        .await
        .map_err(AwsError::Seed)?;
    let policy =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
    call(vec![
        ("Action", "PutUserPolicy"),
        ("UserName", "rebound"),
        ("PolicyName", "rebound-lab"),
        ("PolicyDocument", policy),
    ])
    .await
    .map_err(AwsError::Seed)?;
    match (
        xml_text(&key, "AccessKeyId"),
        xml_text(&key, "SecretAccessKey"),
    ) {
        (Some(id), Some(secret)) => Ok((id.to_owned(), secret.to_owned())),
        _ => Err(AwsError::Seed(format!(
            "no access key in moto's reply: {key}"
        ))),
    }
}

/// The seeded hosted zone.
pub const ZONE: &str = "shop.example.com.";

/// Seed: in the first region `web-1` (a boot and a data volume) and
/// `db-1`, labelled `app=shop`; in the second region `batch-1`; each
/// volume with a recognisable pattern written into it; and a hosted zone
/// with a weighted record `www` at `web-1`.
pub(crate) async fn workloads(site: &AwsSite) -> Result<(), AwsError> {
    let shared = &site.shared;
    let base = site.endpoint();
    let regions = shared.options.regions.clone();
    let mut first_ip = None;
    let mut web = None;
    let plan: Vec<(&str, &str, &str, &[u64])> = {
        let mut plan: Vec<(&str, &str, &str, &[u64])> = vec![
            (regions[0].as_str(), "web-1", "t3.small", &[8, 2]),
            (regions[0].as_str(), "db-1", "t3.medium", &[8]),
        ];
        if let Some(second) = regions.get(1) {
            plan.push((second.as_str(), "batch-1", "t3.micro", &[4]));
        }
        plan
    };
    for (region, name, kind, gibs) in plan {
        let devices = ["/dev/sda1", "/dev/sdb", "/dev/sdc"];
        let sizes: Vec<String> = gibs.iter().map(u64::to_string).collect();
        let mut params: Vec<(String, String)> = vec![
            ("Action".into(), "RunInstances".into()),
            ("ImageId".into(), "ami-0rebound0lab0000".into()),
            ("InstanceType".into(), kind.into()),
            ("MinCount".into(), "1".into()),
            ("MaxCount".into(), "1".into()),
            ("TagSpecification.1.ResourceType".into(), "instance".into()),
            ("TagSpecification.1.Tag.1.Key".into(), "Name".into()),
            ("TagSpecification.1.Tag.1.Value".into(), name.into()),
            ("TagSpecification.1.Tag.2.Key".into(), "app".into()),
            ("TagSpecification.1.Tag.2.Value".into(), "shop".into()),
        ];
        for (i, size) in sizes.iter().enumerate() {
            params.push((
                format!("BlockDeviceMapping.{}.DeviceName", i + 1),
                devices[i].into(),
            ));
            params.push((
                format!("BlockDeviceMapping.{}.Ebs.VolumeSize", i + 1),
                size.clone(),
            ));
        }
        let params: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let reply = query(shared, &base, region, "ec2", &params)
            .await
            .map_err(AwsError::Seed)?;
        if first_ip.is_none() {
            first_ip = xml_text(&reply, "privateIpAddress").map(str::to_owned);
        }
        if name == "web-1" {
            web = xml_text(&reply, "instanceId").map(str::to_owned);
        }
        for (n, vol) in reply
            .split("<volumeId>")
            .skip(1)
            .filter_map(|p| p.split("</volumeId>").next())
            .enumerate()
        {
            let gib = gibs.get(n).copied().unwrap_or(1);
            super::ensure_volume(shared, vol, gib)?;
            let pattern: Vec<u8> = format!("{name} disk {n} in {region}\n")
                .bytes()
                .cycle()
                .take(64 * 1024)
                .collect();
            shared.disks.write(vol, 0, &pattern)?;
            let middle = gib * shared.options.gib / 2;
            shared.disks.write(vol, middle, &pattern[..4096])?;
        }
    }
    if !shared.options.moto_auth
        && let Some(web) = web
    {
        load_balancer(shared, &base, &regions[0], &web).await?;
    }
    if !shared.options.moto_auth {
        let zone = format!(
            "<CreateHostedZoneRequest xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\">\
             <Name>{ZONE}</Name><CallerReference>rebound-lab</CallerReference></CreateHostedZoneRequest>"
        );
        let reply = send(
            &shared.http,
            shared.credentials(),
            &base,
            "us-east-1",
            "route53",
            "POST",
            "/2013-04-01/hostedzone",
            zone.into_bytes(),
            "application/xml",
        )
        .await
        .map_err(AwsError::Seed)?;
        let id = xml_text(&reply, "Id")
            .and_then(|id| id.rsplit('/').next())
            .ok_or_else(|| AwsError::Seed(format!("no zone id in {reply}")))?
            .to_owned();
        let ip = first_ip.unwrap_or_else(|| "10.0.0.10".into());
        let change = format!(
            "<ChangeResourceRecordSetsRequest xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\">\
             <ChangeBatch><Changes><Change><Action>UPSERT</Action><ResourceRecordSet>\
             <Name>www.{ZONE}</Name><Type>A</Type><SetIdentifier>web-1</SetIdentifier><Weight>100</Weight>\
             <TTL>60</TTL><ResourceRecords><ResourceRecord><Value>{ip}</Value></ResourceRecord></ResourceRecords>\
             </ResourceRecordSet></Change></Changes></ChangeBatch></ChangeResourceRecordSetsRequest>"
        );
        send(
            &shared.http,
            shared.credentials(),
            &base,
            "us-east-1",
            "route53",
            "POST",
            &format!("/2013-04-01/hostedzone/{id}/rrset"),
            change.into_bytes(),
            "application/xml",
        )
        .await
        .map_err(AwsError::Seed)?;
    }
    let mut state = shared.lock();
    state.effects.clear();
    state.changes.clear();
    Ok(())
}

/// An application load balancer `shop` in `region` whose HTTP listener on
/// port 80 forwards to target group `shop-web`, which holds `web`.
async fn load_balancer(
    shared: &super::Shared,
    base: &str,
    region: &str,
    web: &str,
) -> Result<(), AwsError> {
    let elb = |params: Vec<(&'static str, String)>| async move {
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        query(shared, base, region, "elasticloadbalancing", &params)
            .await
            .map_err(AwsError::Seed)
    };
    let subnets = query(
        shared,
        base,
        region,
        "ec2",
        &[("Action", "DescribeSubnets")],
    )
    .await
    .map_err(AwsError::Seed)?;
    let ids: Vec<String> = subnets
        .split("<subnetId>")
        .skip(1)
        .filter_map(|p| p.split("</subnetId>").next().map(str::to_owned))
        .take(2)
        .collect();
    let vpc = xml_text(&subnets, "vpcId")
        .ok_or_else(|| AwsError::Seed(format!("no VPC in {subnets}")))?
        .to_owned();
    let mut params = vec![
        ("Action", "CreateLoadBalancer".to_owned()),
        ("Name", "shop".to_owned()),
    ];
    let keys = ["Subnets.member.1", "Subnets.member.2"];
    params.extend(keys.iter().copied().zip(ids));
    let lb = elb(params).await?;
    let lb = xml_text(&lb, "LoadBalancerArn")
        .ok_or_else(|| AwsError::Seed(format!("no load balancer in {lb}")))?
        .to_owned();
    let tg = elb(vec![
        ("Action", "CreateTargetGroup".into()),
        ("Name", "shop-web".into()),
        ("Protocol", "HTTP".into()),
        ("Port", "80".into()),
        ("VpcId", vpc),
    ])
    .await?;
    let tg = xml_text(&tg, "TargetGroupArn")
        .ok_or_else(|| AwsError::Seed(format!("no target group in {tg}")))?
        .to_owned();
    elb(vec![
        ("Action", "RegisterTargets".into()),
        ("TargetGroupArn", tg.clone()),
        ("Targets.member.1.Id", web.to_owned()),
    ])
    .await?;
    elb(vec![
        ("Action", "CreateListener".into()),
        ("LoadBalancerArn", lb),
        ("Protocol", "HTTP".into()),
        ("Port", "80".into()),
        ("DefaultActions.member.1.Type", "forward".into()),
        ("DefaultActions.member.1.TargetGroupArn", tg),
    ])
    .await?;
    Ok(())
}

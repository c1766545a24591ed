//! What the AWS tests share: a grant reaching one region of the lab's AWS
//! site, and reading EC2's XML answers.

#![allow(dead_code)]

use rebound_lab::AwsSite;
use rebound_runtime::SiteGrant;

/// Site `name` bound to `region` of the lab's AWS site, with its keys.
pub fn grant(site: &AwsSite, name: &str, region: &str) -> SiteGrant {
    let options = site.options();
    grant_with(
        name,
        &site.endpoint(),
        region,
        &options.access_key_id,
        &options.secret_access_key,
    )
}

/// Site `name` at `endpoint` and `region` with the given keys.
pub fn grant_with(name: &str, endpoint: &str, region: &str, key: &str, secret: &str) -> SiteGrant {
    SiteGrant::new(name)
        .config("endpoint", endpoint)
        .config("region", region)
        .secret("access_key_id", key)
        .secret("secret_access_key", secret)
        .grant(endpoint)
        .expect("grant")
}

/// The text of every `<tag>…</tag>` in `xml`.
pub fn texts<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    xml.split(&format!("<{tag}>"))
        .skip(1)
        .filter_map(|p| p.split(&format!("</{tag}>")).next())
        .collect()
}

/// `(instance id, state, volume ids)` of each instance in `region`
/// matching every filter `(name, value)`.
pub async fn instances(
    site: &AwsSite,
    region: &str,
    filters: &[(&str, &str)],
) -> Vec<(String, String, Vec<String>)> {
    let numbered: Vec<(String, String)> = filters
        .iter()
        .enumerate()
        .flat_map(|(i, (k, v))| {
            [
                (format!("Filter.{}.Name", i + 1), (*k).to_owned()),
                (format!("Filter.{}.Value.1", i + 1), (*v).to_owned()),
            ]
        })
        .collect();
    let mut params = vec![("Action", "DescribeInstances")];
    params.extend(numbered.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let xml = site
        .query(region, "ec2", &params)
        .await
        .expect("DescribeInstances");
    xml.split("<instancesSet>")
        .skip(1)
        .map(|i| {
            let id = texts(i, "instanceId").last().copied().unwrap_or_default();
            let state = i
                .split("<instanceState>")
                .nth(1)
                .and_then(|s| texts(s, "name").first().copied())
                .unwrap_or_default();
            let volumes = texts(i, "volumeId").into_iter().map(str::to_owned);
            (id.to_owned(), state.to_owned(), volumes.collect())
        })
        .collect()
}

/// The snapshots in `region` tagged `key`, sorted.
pub async fn tagged_snapshots(site: &AwsSite, region: &str, key: &str) -> Vec<String> {
    let xml = site
        .query(
            region,
            "ec2",
            &[
                ("Action", "DescribeSnapshots"),
                ("Owner.1", "self"),
                ("Filter.1.Name", "tag-key"),
                ("Filter.1.Value.1", key),
            ],
        )
        .await
        .expect("DescribeSnapshots");
    let mut ids: Vec<String> = texts(&xml, "snapshotId")
        .into_iter()
        .map(str::to_owned)
        .collect();
    ids.sort();
    ids
}

/// What `region` holds that a drill could leave behind, each sorted: the
/// instances not terminated, the volumes, the AMIs and the snapshots
/// Rebound tagged (recovery points and staging). (moto also keeps an
/// untagged snapshot of each AMI it registered after the AMI is gone; AWS's
/// RegisterImage from snapshots makes none.)
pub async fn holdings(site: &AwsSite, region: &str) -> [Vec<String>; 5] {
    let mut running: Vec<String> = instances(site, region, &[])
        .await
        .into_iter()
        .filter(|(_, state, _)| state != "terminated")
        .map(|(id, _, _)| id)
        .collect();
    running.sort();
    let ids = |xml: &str, tag: &str| {
        let mut ids: Vec<String> = texts(xml, tag).into_iter().map(str::to_owned).collect();
        ids.sort();
        ids.dedup();
        ids
    };
    let volumes = site
        .query(region, "ec2", &[("Action", "DescribeVolumes")])
        .await
        .expect("DescribeVolumes");
    let images = site
        .query(
            region,
            "ec2",
            &[("Action", "DescribeImages"), ("Owner.1", "self")],
        )
        .await
        .expect("DescribeImages");
    [
        running,
        ids(&volumes, "volumeId"),
        ids(&images, "imageId"),
        tagged_snapshots(site, region, "rebound:point").await,
        tagged_snapshots(site, region, "rebound:staging").await,
    ]
}

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

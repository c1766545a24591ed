use std::collections::BTreeMap;
use std::net::IpAddr;

use super::*;

fn rule(s: &str) -> EgressRule {
    EgressRule::parse(s).expect(s)
}

fn policy(requested: &[&str], granted: &[&str]) -> EgressPolicy {
    EgressPolicy {
        plugin: "p".into(),
        sites: vec![SiteEgress {
            site: "a".into(),
            requested: requested.iter().map(|r| rule(r)).collect(),
            granted: granted.iter().map(|r| rule(r)).collect(),
            unrendered: Vec::new(),
        }],
    }
}

#[test]
fn rules_parse_with_default_ports_and_ignore_paths() {
    assert_eq!(
        rule("https://api.example.com/v3?x").to_string(),
        "https://api.example.com:443"
    );
    assert_eq!(
        rule("http://127.0.0.1:8774").to_string(),
        "http://127.0.0.1:8774"
    );
    assert_eq!(rule("http://[::1]:80").to_string(), "http://[::1]:80");
    assert_eq!(
        rule("https://*.example.com").to_string(),
        "https://*.example.com:443"
    );
    for bad in [
        "ftp://x",
        "example.com",
        "https://",
        "https://a:99999",
        "https://u:p@x",
        "https://*",
    ] {
        assert!(EgressRule::parse(bad).is_err(), "{bad} must be refused");
    }
}

#[test]
fn wildcards_cover_subdomains_only() {
    let r = rule("https://*.example.com");
    assert!(r.matches(Scheme::Https, "api.example.com", 443));
    assert!(r.matches(Scheme::Https, "a.b.example.com", 443));
    assert!(!r.matches(Scheme::Https, "example.com", 443));
    assert!(!r.matches(Scheme::Https, "badexample.com", 443));
    assert!(!r.matches(Scheme::Http, "api.example.com", 443));
    assert!(!r.matches(Scheme::Https, "api.example.com", 8443));
}

#[test]
fn templates_render_from_site_config() {
    let t = EgressTemplate::parse("https://{region}.cloud.test:{port}").expect("template");
    let mut config = BTreeMap::new();
    config.insert("region".to_owned(), "eu-1".to_owned());
    config.insert("port".to_owned(), "5000".to_owned());
    assert_eq!(
        t.render(&config).expect("render").to_string(),
        "https://eu-1.cloud.test:5000"
    );
    config.remove("port");
    let err = t.render(&config).expect_err("missing setting");
    assert!(err.contains("needs site setting 'port'"), "{err}");
    assert!(EgressTemplate::parse("https://{oops").is_err());
}

#[test]
fn a_request_needs_both_the_manifest_and_the_grant() {
    let p = policy(&["https://api.cloud.test"], &["https://*.cloud.test"]);
    assert!(p.check(Scheme::Https, "api.cloud.test", 443).is_ok());

    let err = p
        .check(Scheme::Https, "other.cloud.test", 443)
        .expect_err("not requested");
    assert!(err.contains("does not request it in its manifest"), "{err}");

    let p = policy(&["https://api.cloud.test"], &[]);
    let err = p
        .check(Scheme::Https, "api.cloud.test", 443)
        .expect_err("not granted");
    assert!(
        err.contains("add \"https://api.cloud.test:443\" to the site's egress grant"),
        "{err}"
    );
}

#[test]
fn special_addresses_need_a_grant_that_names_them() {
    let p = policy(&["https://*.cloud.test"], &["https://*.cloud.test"]);
    let allowed = p
        .check(Scheme::Https, "meta.cloud.test", 443)
        .expect("allowed by name");
    let metadata: IpAddr = "169.254.169.254".parse().expect("ip");
    let err =
        EgressPolicy::check_addresses(&allowed, Scheme::Https, "meta.cloud.test", 443, &[metadata])
            .expect_err("metadata via a wildcard");
    assert!(err.contains("a cloud metadata address"), "{err}");
    assert!(err.contains("add \"https://169.254.169.254:443\""), "{err}");

    let loopback: IpAddr = "127.0.0.1".parse().expect("ip");
    assert!(
        EgressPolicy::check_addresses(&allowed, Scheme::Https, "x.cloud.test", 443, &[loopback])
            .is_err()
    );
    let public: IpAddr = "203.0.113.7".parse().expect("ip");
    assert!(
        EgressPolicy::check_addresses(&allowed, Scheme::Https, "x.cloud.test", 443, &[public])
            .is_ok()
    );

    let lab = policy(&["http://127.0.0.1:8774"], &["http://127.0.0.1:8774"]);
    let allowed = lab.check(Scheme::Http, "127.0.0.1", 8774).expect("lab");
    assert!(
        EgressPolicy::check_addresses(&allowed, Scheme::Http, "127.0.0.1", 8774, &[loopback])
            .is_ok()
    );
}

#[test]
fn special_address_classes() {
    let kind = |s: &str| special_address(s.parse().expect("ip"));
    assert_eq!(kind("169.254.169.254"), Some("a cloud metadata address"));
    assert_eq!(kind("fd00:ec2::254"), Some("a cloud metadata address"));
    assert_eq!(kind("::ffff:127.0.0.1"), Some("a loopback address"));
    assert_eq!(kind("169.254.1.1"), Some("a link-local address"));
    assert_eq!(kind("fe80::1"), Some("a link-local address"));
    assert_eq!(kind("0.0.0.0"), Some("an unspecified address"));
    assert_eq!(kind("10.1.2.3"), None);
}

#[test]
fn the_data_mover_reaches_only_hosts_a_site_grant_names() {
    let site = crate::SiteGrant::new("lab-a")
        .grant("https://api.cloud.test")
        .expect("grant")
        .grant("http://127.0.0.1:8774")
        .expect("grant")
        .grant("https://*.storage.test")
        .expect("grant");
    // Any port and scheme of a granted host: transfers are served apart
    // from the API.
    for ok in [
        "http://127.0.0.1:40123/disk",
        "https://api.cloud.test:9292/v2/images/x/file",
        "https://eu.storage.test/export/7",
    ] {
        site.check_data_url(ok)
            .unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for refused in [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.2:40123/disk",
        "http://localhost:5432/",
        "https://evil.test/disk",
        "https://storage.test/disk",
    ] {
        let err = site.check_data_url(refused).expect_err(refused);
        assert!(
            err.contains("egress grant does not name"),
            "{refused}: {err}"
        );
        assert!(err.contains("site 'lab-a'"), "{err}");
    }
    let err = site.check_data_url("ftp://x/disk").expect_err("scheme");
    assert!(err.contains("unusable transfer endpoint"), "{err}");
}

#[test]
fn sites_sharing_an_endpoint_are_all_allowed_there() {
    // Two regions of one cloud: one Keystone for both sites.
    let mut policy = policy(
        &["https://cloud.example:5000"],
        &["https://cloud.example:5000"],
    );
    let mut west = policy.sites[0].clone();
    west.site = "b".into();
    policy.sites.push(west);
    let mut other = policy.sites[0].clone();
    other.site = "c".into();
    other.granted = vec![rule("https://elsewhere.example")];
    policy.sites.push(other);
    let allowed = policy
        .check(Scheme::Https, "cloud.example", 5000)
        .expect("allowed");
    assert_eq!(allowed.site, "a");
    assert_eq!(
        allowed.sites,
        ["a", "b"],
        "not 'c', whose grant is elsewhere"
    );
}

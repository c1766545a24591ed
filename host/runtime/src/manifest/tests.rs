use super::*;

const GOOD: &str = r#"
name = "openstack"
version = "1.2.0"
wit = "^0.1"
capabilities = ["fencing", "export-disk"]
egress = ["{endpoint}", "https://*.example.com"]
"#;

#[test]
fn a_manifest_round_trips_through_render() {
    let m = Manifest::parse(GOOD).expect("parse");
    assert_eq!(m.name, "openstack");
    assert_eq!(m.egress.len(), 2);
    let mut with_digest = m.clone();
    with_digest.sha256 = Some("ab".repeat(32));
    assert_eq!(
        Manifest::parse(&with_digest.render()).expect("reparse"),
        with_digest
    );
}

#[test]
fn every_error_names_its_field() {
    let cases = [
        (GOOD.replace("openstack", "Open Stack"), "name"),
        (GOOD.replace("1.2.0", "1.2"), "version"),
        (GOOD.replace("^0.1", "zero-one"), "wit"),
        (GOOD.replace("\"fencing\"", "\"teleport\""), "capabilities"),
        (GOOD.replace("{endpoint}", "ftp://x"), "egress"),
        (format!("{GOOD}sha256 = \"xyz\"\n"), "sha256"),
        (format!("{GOOD}colour = \"blue\"\n"), "(document)"),
    ];
    for (text, field) in cases {
        match Manifest::parse(&text) {
            Err(LoadError::Manifest { field: f, reason }) => assert_eq!(f, field, "{reason}"),
            other => panic!("{field}: expected a manifest error, got {other:?}"),
        }
    }
}

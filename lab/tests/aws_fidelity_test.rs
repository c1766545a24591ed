//! Points boto3 at the lab's AWS site — through the lab's front, so the
//! real client sees what the plugin sees: `lab/fidelity/aws_client.py`
//! describes instances, snapshots a volume and waits for `completed` with
//! boto3's waiter (the front keeps it `pending` a while), copies it to the
//! other region, reads it back through the EBS direct APIs, upserts a
//! weighted Route 53 record and waits for `INSYNC`, and is refused with a
//! wrong secret.
//!
//! Needs `REBOUND_PYTHON`, an interpreter with
//! `lab/fidelity/aws-requirements.txt` installed (moto's server and boto3).
//! Without it the test is skipped with a note, unless
//! `REBOUND_REQUIRE_PYTHON=1`, when it fails.
//!
//! ```text
//! python3 -m venv /tmp/venv && /tmp/venv/bin/pip install -r lab/fidelity/aws-requirements.txt
//! REBOUND_PYTHON=/tmp/venv/bin/python cargo test -p rebound-lab --test aws_fidelity_test
//! ```

use std::path::Path;
use std::time::Duration;

use rebound_lab::{AwsOptions, AwsSite};

fn small() -> AwsOptions {
    AwsOptions {
        gib: 1 << 20,
        snapshot_latency: Duration::from_millis(1500),
        copy_latency: Duration::from_millis(1500),
        dns_latency: Duration::from_millis(1500),
        ..AwsOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_works_against_the_lab() {
    let Some(site) = AwsSite::start_or_skip(small()).await else {
        return;
    };
    let python = site
        .options()
        .python
        .clone()
        .or_else(|| std::env::var_os("REBOUND_PYTHON").map(Into::into))
        .expect("a Python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fidelity/aws_client.py");
    let options = site.options();
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .args([
            site.endpoint().as_str(),
            &options.access_key_id,
            &options.secret_access_key,
            &site.regions()[0],
            &site.regions()[1],
        ])
        .output()
        .await
        .expect("run the boto3 script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.trim_end().ends_with("ok"), "{stdout}");
    // The copy's data is the source volume's, in the lab's files.
    let effects = site.effects();
    assert_eq!(effects.get("ec2 CreateSnapshot"), Some(&1), "{effects:?}");
    assert_eq!(effects.get("ec2 CopySnapshot"), Some(&1), "{effects:?}");
}

/// With `moto_auth`, moto itself checks signatures against the IAM key it
/// created: the lab's own client is let through, a wrong secret is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_checks_signatures_when_told_to() {
    let Some(site) = AwsSite::start_or_skip(AwsOptions {
        moto_auth: true,
        ..small()
    })
    .await
    else {
        return;
    };
    let region = site.regions()[0].clone();
    let reply = site
        .query(&region, "ec2", &[("Action", "DescribeInstances")])
        .await
        .expect("the lab's key is accepted by moto");
    assert!(reply.contains("web-1"), "{reply}");
    // A wrong secret, straight to moto (not through the front).
    let moto = site.moto_endpoint().to_owned();
    let body = b"Action=DescribeInstances&Version=2016-11-15";
    let host = moto.trim_start_matches("http://").to_owned();
    let headers = vec![(
        "content-type".to_owned(),
        "application/x-www-form-urlencoded; charset=utf-8".to_owned(),
    )];
    let request = rebound_sigv4::Request {
        method: "POST",
        host: &host,
        path: "/",
        query: "",
        headers: &headers,
        body,
    };
    let wrong = rebound_sigv4::Credentials {
        access_key_id: &site.options().access_key_id,
        secret_access_key: "not-the-secret",
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let signed = rebound_sigv4::sign(
        &request,
        &wrong,
        &region,
        "ec2",
        &rebound_sigv4::amz_date(now),
    );
    let mut send = reqwest::Client::new()
        .post(&moto)
        .header(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )
        .body(body.to_vec());
    for (k, v) in signed {
        send = send.header(k, v);
    }
    let status = send.send().await.expect("moto answers").status();
    assert!(
        matches!(status.as_u16(), 401 | 403),
        "moto let a wrong secret in: {status}"
    );
}

//! The lab's EC2 mover appliance, driven by EC2 calls as a plugin makes
//! them: an instance launched from the `rebound-mover` AMI with a volume at
//! `/dev/sdf` serves it behind the token its user data sets, publishes only
//! its URL in its tags, refuses any other token, stops serving when
//! terminated, its volumes staying attached a while as it shuts down (and
//! shown detaching) — and,
//! launched with no token in its user data, says so in
//! `rebound:mover-error` instead of serving.
//!
//! Needs moto (`lab/fidelity/aws-requirements.txt` in `REBOUND_PYTHON`'s
//! environment); skipped without it unless `REBOUND_REQUIRE_PYTHON=1`.

use std::time::Duration;

use base64::Engine;
use rebound_lab::{AwsOptions, AwsSite};

async fn site() -> Option<AwsSite> {
    let options = AwsOptions {
        gib: 1 << 20,
        regions: vec!["eu-west-1".into()],
        snapshot_latency: Duration::from_millis(50),
        ..AwsOptions::default()
    };
    AwsSite::start_or_skip(options).await
}

/// The text of the first `<tag>…</tag>` in `xml`.
fn text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    xml.split(&format!("<{tag}>"))
        .nth(1)?
        .split(&format!("</{tag}>"))
        .next()
}

/// The value of instance tag `key` in a `DescribeInstances` answer.
fn tag<'a>(xml: &'a str, key: &str) -> Option<&'a str> {
    let after = xml.split(&format!("<key>{key}</key>")).nth(1)?;
    text(after, "value")
}

/// The id of the appliance's AMI (`rebound-mover`) in the site's region.
async fn mover_image(site: &AwsSite) -> String {
    let images = site
        .query_as_client(
            &site.regions()[0],
            "ec2",
            &[
                ("Action", "DescribeImages"),
                ("Filter.1.Name", "name"),
                ("Filter.1.Value.1", "rebound-mover"),
            ],
        )
        .await
        .expect("images");
    text(&images, "imageId")
        .expect("the appliance's AMI")
        .to_owned()
}

/// Launch the appliance with a fresh 1 GiB volume; its instance id.
async fn launch(site: &AwsSite, image: &str, user_data: Option<&str>) -> String {
    let region = &site.regions()[0];
    let encoded = user_data.map(|d| base64::engine::general_purpose::STANDARD.encode(d));
    let mut params = vec![
        ("Action", "RunInstances"),
        ("ImageId", image),
        ("InstanceType", "t3.small"),
        ("MinCount", "1"),
        ("MaxCount", "1"),
        ("BlockDeviceMapping.1.DeviceName", "/dev/sdf"),
        ("BlockDeviceMapping.1.Ebs.VolumeSize", "1"),
        ("TagSpecification.1.ResourceType", "instance"),
        ("TagSpecification.1.Tag.1.Key", "rebound:mover-mode"),
        ("TagSpecification.1.Tag.1.Value", "import"),
    ];
    if let Some(data) = &encoded {
        params.push(("UserData", data));
    }
    let reply = site
        .query_as_client(region, "ec2", &params)
        .await
        .expect("launch");
    text(&reply, "instanceId").expect("an instance").to_owned()
}

/// Terminate `instance` as a client would.
async fn terminate(site: &AwsSite, instance: &str) {
    let region = &site.regions()[0];
    site.query_as_client(
        region,
        "ec2",
        &[("Action", "TerminateInstances"), ("InstanceId.1", instance)],
    )
    .await
    .expect("terminate");
}

/// The instance's `DescribeInstances` answer once it has tagged itself
/// with `key`.
async fn tagged(site: &AwsSite, instance: &str, key: &str) -> String {
    let region = &site.regions()[0];
    let mut xml = String::new();
    for _ in 0..200 {
        xml = site
            .query_as_client(
                region,
                "ec2",
                &[("Action", "DescribeInstances"), ("InstanceId.1", instance)],
            )
            .await
            .expect("describe");
        if tag(&xml, key).is_some() {
            return xml;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{instance} never tagged itself with {key}: {xml}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_appliance_serves_behind_the_token_its_user_data_sets() {
    let Some(site) = site().await else {
        return;
    };
    let region = site.regions()[0].clone();
    let image = mover_image(&site).await;
    let token = "0123456789abcdef".repeat(3);

    let instance = launch(
        &site,
        &image,
        Some(&format!("#!/bin/sh\nREBOUND_MOVER_TOKEN={token}\n")),
    )
    .await;
    let xml = tagged(&site, &instance, "rebound:mover-url").await;
    assert!(!xml.contains(&token), "the token is in no tag: {xml}");
    let url = tag(&xml, "rebound:mover-url").expect("url").to_owned();
    let http = reqwest::Client::new();
    let written = http
        .put(&url)
        .bearer_auth(&token)
        .header("content-range", "bytes 0-4/1048576")
        .body("hello")
        .send()
        .await
        .expect("write");
    assert!(written.status().is_success(), "{}", written.status());
    let read = http
        .get(&url)
        .bearer_auth(&token)
        .header("range", "bytes=0-4")
        .send()
        .await
        .expect("read");
    assert_eq!(read.bytes().await.expect("body").as_ref(), b"hello");
    let stranger = http
        .get(&url)
        .bearer_auth("0".repeat(48))
        .send()
        .await
        .expect("GET");
    assert_eq!(stranger.status(), reqwest::StatusCode::UNAUTHORIZED);

    terminate(&site, &instance).await;
    assert!(
        http.get(&url).bearer_auth(&token).send().await.is_err(),
        "a terminated appliance serves nothing"
    );
    // Its volumes stay attached while it shuts down, as on EC2: deleting
    // one is refused until then, and counts as no effect.
    let volume = text(&xml, "volumeId").expect("a volume").to_owned();
    let params = [("Action", "DeleteVolume"), ("VolumeId", volume.as_str())];
    let delete = || site.query_as_client(&region, "ec2", &params);
    let effects = site.effects().get("ec2 DeleteVolume").copied().unwrap_or(0);
    let refused = delete().await.expect_err("still attached").to_string();
    assert!(
        refused.contains("VolumeInUse") && refused.contains(&instance),
        "{refused}"
    );
    assert_eq!(
        site.effects().get("ec2 DeleteVolume").copied().unwrap_or(0),
        effects
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    match delete().await {
        Ok(_) => {}
        // Deleted with its instance (DeleteOnTermination).
        Err(e) => assert!(e.to_string().contains("NotFound"), "{e}"),
    }

    // Terminated while it boots (50 ms here): it never starts serving.
    let early = launch(
        &site,
        &image,
        Some(&format!("#!/bin/sh\nREBOUND_MOVER_TOKEN={token}\n")),
    )
    .await;
    terminate(&site, &early).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let xml = site
        .query_as_client(
            &region,
            "ec2",
            &[("Action", "DescribeInstances"), ("InstanceId.1", &early)],
        )
        .await
        .expect("describe");
    assert!(
        tag(&xml, "rebound:mover-url").is_none() && tag(&xml, "rebound:mover-error").is_none(),
        "{xml}"
    );

    // No token in the user data: the appliance says so and serves nothing.
    let bare = launch(&site, &image, None).await;
    let xml = tagged(&site, &bare, "rebound:mover-error").await;
    let error = tag(&xml, "rebound:mover-error").expect("error");
    assert!(error.contains("REBOUND_MOVER_TOKEN"), "{error}");
    assert!(tag(&xml, "rebound:mover-url").is_none(), "{xml}");
}

/// A volume kept past its instance (`DeleteOnTermination` false) shows
/// `in-use`, its attachment `detaching`, while the instance shuts down —
/// as EC2 shows it, and as the `VolumeInUse` refusal of its deletion says
/// — and `available` once detached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_volume_shows_detaching_while_its_instance_shuts_down() {
    let Some(site) = site().await else {
        return;
    };
    let region = site.regions()[0].clone();
    let image = mover_image(&site).await;
    let launched = site
        .query_as_client(
            &region,
            "ec2",
            &[
                ("Action", "RunInstances"),
                ("ImageId", &image),
                ("MinCount", "1"),
                ("MaxCount", "1"),
                ("BlockDeviceMapping.1.DeviceName", "/dev/sdf"),
                ("BlockDeviceMapping.1.Ebs.VolumeSize", "1"),
                ("BlockDeviceMapping.1.Ebs.DeleteOnTermination", "false"),
            ],
        )
        .await
        .expect("launch");
    let instance = text(&launched, "instanceId").expect("instance").to_owned();
    let described = site
        .query_as_client(
            &region,
            "ec2",
            &[("Action", "DescribeInstances"), ("InstanceId.1", &instance)],
        )
        .await
        .expect("describe");
    let volume = described
        .split("<deviceName>/dev/sdf</deviceName>")
        .nth(1)
        .and_then(|rest| text(rest, "volumeId"))
        .expect("the volume at /dev/sdf")
        .to_owned();
    terminate(&site, &instance).await;
    let describe = [
        ("Action", "DescribeVolumes"),
        ("VolumeId.1", volume.as_str()),
    ];
    let volumes = || site.query_as_client(&region, "ec2", &describe);
    let shown = volumes().await.expect("volumes");
    assert_eq!(text(&shown, "status"), Some("in-use"), "{shown}");
    let attachment = text(&shown, "attachmentSet").expect("an attachment");
    assert_eq!(text(attachment, "instanceId"), Some(instance.as_str()));
    assert_eq!(text(attachment, "device"), Some("/dev/sdf"));
    assert_eq!(text(attachment, "status"), Some("detaching"));

    tokio::time::sleep(Duration::from_millis(600)).await;
    let shown = volumes().await.expect("volumes");
    assert_eq!(text(&shown, "status"), Some("available"), "{shown}");
    site.query_as_client(
        &region,
        "ec2",
        &[("Action", "DeleteVolume"), ("VolumeId", &volume)],
    )
    .await
    .expect("deleted once detached");
}

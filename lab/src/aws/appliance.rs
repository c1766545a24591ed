//! The mover appliance on EC2: what an instance launched from the AMI named
//! [`IMAGE_NAME`] does once it runs, as its user data would. EC2 offers no
//! ranged write of a volume (EBS direct writes only new snapshots), so the
//! AWS plugin moves disks through this appliance, as the OpenStack one does:
//!
//! - it serves the volume attached at [`DEVICE`] with the data mover's
//!   protocol, writable when the instance is tagged `rebound:mover-mode` =
//!   `import`, read-only otherwise, behind the bearer token its user data
//!   sets (`REBOUND_MOVER_TOKEN=…`; the plugin derives it, so it is kept in
//!   no tag);
//! - it publishes where to reach it in its own tags (a real appliance's
//!   instance role allows `ec2:CreateTags` on itself): `rebound:mover-url`
//!   (`http://ADDRESS:PORT/disk`), or `rebound:mover-error` when it cannot
//!   serve;
//! - terminating the instance stops it.
//!
//! Every region of the lab's site has the appliance's AMI, registered in
//! moto at start as an operator would. In the lab the agent listens on
//! loopback over the volume's sparse file.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use super::{AwsError, Shared, ensure_volume, seed, xml_text};

pub use crate::mover::IMAGE_NAME;

/// The device the appliance serves.
pub const DEVICE: &str = "/dev/sdf";

/// Register the appliance's AMI in every region (in moto directly, so it
/// counts as no client's side effect).
pub(crate) async fn register_images(shared: &Shared) -> Result<(), AwsError> {
    for region in shared.options.regions.clone() {
        let reply = seed::query(
            shared,
            &shared.moto,
            &region,
            "ec2",
            &[
                ("Action", "RegisterImage"),
                ("Name", IMAGE_NAME),
                ("Description", "Rebound mover appliance"),
                ("Architecture", "x86_64"),
                ("VirtualizationType", "hvm"),
                ("RootDeviceName", "/dev/sda1"),
                ("BlockDeviceMapping.1.DeviceName", "/dev/sda1"),
                ("BlockDeviceMapping.1.Ebs.VolumeSize", "2"),
            ],
        )
        .await
        .map_err(AwsError::Seed)?;
        let image = xml_text(&reply, "imageId")
            .ok_or_else(|| AwsError::Seed(format!("no image id in {reply}")))?;
        shared.lock().mover_images.insert(image.to_owned());
    }
    Ok(())
}

/// A `RunInstances` passed: when it launched the appliance, boot its agent.
pub(crate) fn launched(
    shared: &Arc<Shared>,
    region: &str,
    params: &HashMap<String, String>,
    reply: &str,
) -> std::io::Result<()> {
    let image = params
        .get("ImageId")
        .map(String::as_str)
        .unwrap_or_default();
    if !shared.lock().mover_images.contains(image) {
        return Ok(());
    }
    let Some(instance) = xml_text(reply, "instanceId") else {
        return Ok(());
    };
    let tags = tags_of(params);
    let token = crate::mover::token_in(params.get("UserData").map(String::as_str));
    let writable = tags.get("rebound:mover-mode").map(String::as_str) == Some("import");
    let volume = super::front::device_volumes(reply)
        .into_iter()
        .find(|(device, _)| *device == DEVICE)
        .map(|(_, v)| v.to_owned());
    // A volume made empty (no snapshot) needs its data file.
    if let Some(volume) = &volume {
        let size = (1..)
            .map_while(|n| {
                let device = params.get(&format!("BlockDeviceMapping.{n}.DeviceName"))?;
                Some((n, device))
            })
            .find(|(_, device)| *device == DEVICE)
            .and_then(|(n, _)| params.get(&format!("BlockDeviceMapping.{n}.Ebs.VolumeSize")))
            .and_then(|s| s.parse::<u64>().ok());
        if let Some(size) = size {
            ensure_volume(shared, volume, size)?;
            let bytes = size.saturating_mul(shared.options.gib);
            if shared.disks.size(volume)? < bytes {
                shared.disks.resize(volume, bytes)?;
            }
        }
    }
    let shared = shared.clone();
    let region = region.to_owned();
    let instance = instance.to_owned();
    tokio::spawn(async move {
        // The appliance boots as long as a snapshot takes to settle.
        tokio::time::sleep(shared.options.snapshot_latency).await;
        let started = match (&volume, token) {
            (_, Err(e)) => Err(std::io::Error::other(e)),
            (Some(volume), Ok(token)) => match shared.disks.path(volume) {
                Ok(path) => {
                    crate::mover::start(path, writable, token, Ipv4Addr::LOCALHOST, "AWS").await
                }
                Err(e) => Err(e),
            },
            (None, _) => Err(std::io::Error::other(format!(
                "no volume is attached at {DEVICE}"
            ))),
        };
        let tags: Vec<(&str, String)> = {
            let mut state = shared.lock();
            if state.terminated.contains(&instance) {
                // Terminated while it booted: it never serves (its agent,
                // if it started, stops as it is dropped here).
                return;
            }
            match started {
                Ok((url, agent)) => {
                    state.agents.insert(instance.clone(), agent);
                    vec![("rebound:mover-url", url)]
                }
                Err(e) => vec![("rebound:mover-error", e.to_string())],
            }
        };
        let mut params: Vec<(String, String)> = vec![
            ("Action".into(), "CreateTags".into()),
            ("ResourceId.1".into(), instance.clone()),
        ];
        for (n, (k, v)) in tags.into_iter().enumerate() {
            params.push((format!("Tag.{}.Key", n + 1), k.into()));
            params.push((format!("Tag.{}.Value", n + 1), v));
        }
        let params: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if let Err(e) = seed::query(&shared, &shared.moto, &region, "ec2", &params).await {
            tracing::warn!("AWS lab: the mover appliance {instance} could not tag itself: {e}");
            shared.lock().agents.remove(&instance);
        }
    });
    Ok(())
}

/// A `TerminateInstances` passed: the appliances among them stop serving.
pub(crate) fn terminated(shared: &Shared, params: &HashMap<String, String>) {
    let mut state = shared.lock();
    for n in 1.. {
        let Some(id) = params.get(&format!("InstanceId.{n}")) else {
            break;
        };
        state.agents.remove(id);
        state.terminated.insert(id.clone());
    }
}

/// The instance tags of a `RunInstances`' tag specifications.
fn tags_of(params: &HashMap<String, String>) -> HashMap<String, String> {
    let mut tags = HashMap::new();
    for s in 1.. {
        let Some(kind) = params.get(&format!("TagSpecification.{s}.ResourceType")) else {
            break;
        };
        if kind != "instance" {
            continue;
        }
        for t in 1.. {
            let (Some(k), Some(v)) = (
                params.get(&format!("TagSpecification.{s}.Tag.{t}.Key")),
                params.get(&format!("TagSpecification.{s}.Tag.{t}.Value")),
            ) else {
                break;
            };
            tags.insert(k.clone(), v.clone());
        }
    }
    tags
}

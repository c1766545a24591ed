//! Volumes outlive their instance's termination for a while: EC2 detaches
//! an instance's volumes as it shuts down, and until then `DeleteVolume` on
//! one is refused `VolumeInUse` — a plugin that terminates an appliance or
//! a drill's instances and deletes their volumes at once must come back for
//! them. moto detaches at once, so the front keeps each volume of an
//! instance it terminates "attached" for `detach_latency`.

use std::collections::HashMap;
use std::time::Instant;

use axum::http::StatusCode;
use axum::response::Response;

use super::faults::error;
use super::{Shared, seed};

/// Before a `TerminateInstances` goes to moto: note the volumes of its
/// instances, which stay attached for `detach_latency`.
pub(crate) async fn terminating(shared: &Shared, region: &str, params: &HashMap<String, String>) {
    let latency = shared.options.detach_latency;
    if latency.is_zero() {
        return;
    }
    let until = Instant::now() + latency;
    for n in 1.. {
        let Some(instance) = params.get(&format!("InstanceId.{n}")) else {
            break;
        };
        let described = seed::query(
            shared,
            &shared.moto,
            region,
            "ec2",
            &[("Action", "DescribeInstances"), ("InstanceId.1", instance)],
        )
        .await;
        let Ok(reply) = described else {
            continue;
        };
        let mut state = shared.lock();
        for volume in volumes_in(&reply) {
            state
                .detaching
                .insert(volume.to_owned(), (instance.clone(), until));
        }
    }
}

/// A `DeleteVolume` of a volume still detaching: EC2's refusal.
pub(crate) fn still_attached(
    shared: &Shared,
    params: &HashMap<String, String>,
) -> Option<Response> {
    let volume = params.get("VolumeId")?;
    let mut state = shared.lock();
    let (instance, until) = state.detaching.get(volume)?.clone();
    if Instant::now() >= until {
        state.detaching.remove(volume);
        return None;
    }
    Some(error(
        "ec2",
        StatusCode::BAD_REQUEST,
        "VolumeInUse",
        &format!("Volume {volume} is currently attached to {instance}"),
    ))
}

/// The volume ids a `DescribeInstances` reply names.
fn volumes_in(reply: &str) -> Vec<&str> {
    reply
        .split("<volumeId>")
        .skip(1)
        .filter_map(|rest| rest.split("</volumeId>").next())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn volume_ids_are_read_from_block_device_mappings() {
        let reply = "<blockDeviceMapping><item><deviceName>/dev/sda1</deviceName><ebs>\
                     <volumeId>vol-1</volumeId></ebs></item><item><ebs><volumeId>vol-2</volumeId>\
                     </ebs></item></blockDeviceMapping>";
        assert_eq!(super::volumes_in(reply), ["vol-1", "vol-2"]);
    }
}

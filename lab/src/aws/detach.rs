//! Volumes outlive their instance's termination for a while: EC2 detaches
//! an instance's volumes as it shuts down, and until then `DeleteVolume` on
//! one is refused `VolumeInUse` — a plugin that terminates an appliance or
//! a drill's instances and deletes their volumes at once must come back for
//! them. moto detaches at once, so the front keeps each volume of an
//! instance it terminates "attached" for `detach_latency`: `DeleteVolume`
//! is refused, and `DescribeVolumes` shows the volume `in-use` with its
//! attachment `detaching`, as EC2 does — not `available`, which would
//! contradict the refusal. (A volume moto deleted with its instance, its
//! `DeleteOnTermination` set, is not listed at all: EC2 would list it
//! detaching, then deleting.)

use std::collections::HashMap;
use std::time::Instant;

use axum::http::StatusCode;
use axum::response::Response;

use super::faults::error;
use super::{Shared, seed};

/// A volume still detaching from a terminated instance.
#[derive(Debug, Clone)]
pub(crate) struct Detaching {
    pub instance: String,
    pub device: String,
    pub until: Instant,
}

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
        for (device, volume) in super::front::device_volumes(&reply) {
            let detaching = Detaching {
                instance: instance.clone(),
                device: device.to_owned(),
                until,
            };
            state.detaching.insert(volume.to_owned(), detaching);
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
    let Detaching {
        instance, until, ..
    } = state.detaching.get(volume)?.clone();
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

/// Rewrite each volume of a `DescribeVolumes` reply that is still
/// detaching: `in-use`, with its attachment `detaching`.
pub(crate) fn describe_volumes(shared: &Shared, reply: String) -> String {
    let mut state = shared.lock();
    let now = Instant::now();
    state.detaching.retain(|_, d| d.until > now);
    mark_detaching(reply, &state.detaching)
}

/// `reply` with each volume `detaching` holds shown detaching.
fn mark_detaching(reply: String, detaching: &HashMap<String, Detaching>) -> String {
    if detaching.is_empty() {
        return reply;
    }
    let mut out = String::with_capacity(reply.len());
    let mut parts = reply.split("<volumeId>");
    out.push_str(parts.next().unwrap_or_default());
    for part in parts {
        out.push_str("<volumeId>");
        let id = part.split("</volumeId>").next().unwrap_or_default();
        match detaching.get(id) {
            // The volume's own item: moto shows it detached.
            Some(d) if part.contains("<attachmentSet/>") => out.push_str(
                &part
                    .replacen("<status>available</status>", "<status>in-use</status>", 1)
                    .replacen("<attachmentSet/>", &attachment(id, d), 1),
            ),
            _ => out.push_str(part),
        }
    }
    out
}

/// The `attachmentSet` of a volume detaching as `d` says.
fn attachment(volume: &str, d: &Detaching) -> String {
    format!(
        "<attachmentSet><item><volumeId>{volume}</volumeId><instanceId>{}</instanceId>\
         <device>{}</device><status>detaching</status>\
         <deleteOnTermination>false</deleteOnTermination></item></attachmentSet>",
        d.instance, d.device
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    use super::{Detaching, mark_detaching};

    #[test]
    fn a_detaching_volume_is_in_use_with_its_attachment_detaching() {
        // moto's reply: vol-1 detached (its instance terminated), vol-2 free.
        let reply = "<volumeSet><item><volumeId>vol-1</volumeId><size>1</size>\
                     <status>available</status><attachmentSet/></item><item>\
                     <volumeId>vol-2</volumeId><size>1</size><status>available</status>\
                     <attachmentSet/></item></volumeSet>"
            .to_owned();
        let detaching = HashMap::from([(
            "vol-1".to_owned(),
            Detaching {
                instance: "i-1".into(),
                device: "/dev/sdf".into(),
                until: Instant::now() + Duration::from_secs(5),
            },
        )]);
        let shown = mark_detaching(reply, &detaching);
        let (one, two) = shown.split_once("<volumeId>vol-2").expect("vol-2");
        assert!(one.contains("<status>in-use</status>"), "{one}");
        assert!(
            one.contains(
                "<instanceId>i-1</instanceId><device>/dev/sdf</device><status>detaching</status>"
            ),
            "{one}"
        );
        assert!(
            two.contains("<status>available</status><attachmentSet/>"),
            "{two}"
        );
    }
}

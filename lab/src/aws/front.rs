//! The front every client request passes: signature check, faults, then
//! EBS direct (the lab's own) or moto, whose EC2 and Route 53 replies are
//! watched (to keep the data files in step) and rewritten (to make
//! snapshots, copies and DNS changes take time).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::faults::{error, injected_error};
use super::{Shared, Snapshot, ensure_volume, xml_text};

/// Request bodies above this are refused (EBS direct blocks are 512 KiB).
const MAX_BODY: usize = 8 << 20;

pub(crate) async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return error(
            "ec2",
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "The request body is too large.",
        );
    };
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or_default().to_owned();
    let method = parts.method.as_str().to_owned();
    let signed = rebound_sigv4::Request {
        method: &method,
        host: &host,
        path: &path,
        query: &query,
        headers: &headers,
        body: &body,
    };
    let service = rebound_sigv4::scope_of(&headers)
        .map(|s| s.service)
        .unwrap_or_else(|_| "ec2".into());
    let scope = match rebound_sigv4::verify(&signed, |id| {
        (id == shared.options.access_key_id).then(|| shared.options.secret_access_key.clone())
    }) {
        Ok(scope) => scope,
        Err(e) => return refused(&service, &e),
    };

    // The faults' `service` names an AWS service here (`ec2`, `ebs`,
    // `route53`, …): the one the request was signed for.
    let faults = shared.lock().faults.clone();
    if let Some(injected) = faults
        .meet(&method, &format!("/{}", scope.service), || {
            shared.lock().faults.hang
        })
        .await
    {
        return injected.respond(|status, down| match down {
            true => error(
                &scope.service,
                status,
                "ServiceUnavailable",
                "The site is down.",
            ),
            false => injected_error(&scope.service, status),
        });
    }

    if scope.service == "ebs" {
        return super::ebs::handle(
            &shared,
            &scope.region,
            &method,
            &path,
            &query,
            &headers,
            &body,
        )
        .await;
    }
    let params = if scope.service == "ec2" || scope.service == "elasticloadbalancing" {
        form(if method == "POST" {
            std::str::from_utf8(&body).unwrap_or_default()
        } else {
            &query
        })
    } else {
        HashMap::new()
    };
    let action = params.get("Action").cloned().unwrap_or_default();
    // A refusal is no effect: checked before effects are counted.
    if scope.service == "ec2" {
        match action.as_str() {
            "TerminateInstances" => {
                super::detach::terminating(&shared, &scope.region, &params).await
            }
            "DeleteVolume" => {
                if let Some(refusal) = super::detach::still_attached(&shared, &params) {
                    return refusal;
                }
            }
            _ => {}
        }
    }
    count_effect(&shared, &scope.service, &action, &method, &path);

    let url = format!(
        "{}{}{}",
        shared.moto,
        path,
        if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        }
    );
    let Ok(method_) = reqwest::Method::from_bytes(method.as_bytes()) else {
        return error(
            &scope.service,
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            "Unknown method.",
        );
    };
    let mut forward = shared.http.request(method_, &url).body(body.clone());
    for (k, v) in &headers {
        if !k.eq_ignore_ascii_case("content-length") {
            forward = forward.header(k, v);
        }
    }
    let reply = match forward.send().await {
        Ok(r) => r,
        Err(e) => {
            return error(
                &scope.service,
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                &format!("moto did not answer: {e}"),
            );
        }
    };
    let status = reply.status();
    let content_type = reply.headers().get(header::CONTENT_TYPE).cloned();
    let Ok(bytes) = reply.bytes().await else {
        return error(
            &scope.service,
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "moto's reply was cut short.",
        );
    };
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if status.is_success() {
        text = match scope.service.as_str() {
            "ec2" => observe_ec2(&shared, &scope.region, &action, &params, text),
            "route53" => observe_route53(&shared, &method, &path, text),
            _ => text,
        };
    }
    let mut response = (
        StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
        Bytes::from(text),
    )
        .into_response();
    if let Some(ct) = content_type
        && let Ok(v) = HeaderValue::from_bytes(ct.as_bytes())
    {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    response
}

fn refused(service: &str, e: &rebound_sigv4::VerifyError) -> Response {
    use rebound_sigv4::VerifyError;
    let (status, code) = match (service, e) {
        // EC2 answers every refused credential with one code.
        ("ec2", _) => (StatusCode::UNAUTHORIZED, "AuthFailure"),
        (_, VerifyError::Missing(_)) => (StatusCode::FORBIDDEN, "MissingAuthenticationToken"),
        (_, VerifyError::UnknownKey(_)) => (StatusCode::FORBIDDEN, "InvalidClientTokenId"),
        (_, VerifyError::Mismatch) => (StatusCode::FORBIDDEN, "SignatureDoesNotMatch"),
    };
    error(service, status, code, &e.to_string())
}

fn count_effect(shared: &Shared, service: &str, action: &str, method: &str, path: &str) {
    let key = if !action.is_empty() {
        let read = ["Describe", "Get", "List"]
            .iter()
            .any(|p| action.starts_with(p));
        (!read).then(|| format!("{service} {action}"))
    } else {
        (method != "GET").then(|| format!("{service} {method} {path}"))
    };
    if let Some(key) = key {
        *shared.lock().effects.entry(key).or_default() += 1;
    }
}

/// `a=1&b=2` (form or query) decoded into a map.
pub(crate) fn form(s: &str) -> HashMap<String, String> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (rebound_sigv4::uri_decode(k), rebound_sigv4::uri_decode(v))
        })
        .collect()
}

/// Keep the data files in step with what EC2 did, and make snapshots take
/// time: returns the reply to send.
fn observe_ec2(
    shared: &Arc<Shared>,
    region: &str,
    action: &str,
    params: &HashMap<String, String>,
    reply: String,
) -> String {
    let number = |tag: &str| xml_text(&reply, tag).and_then(|s| s.parse::<u64>().ok());
    let result = match action {
        "CreateSnapshot" => {
            let (Some(snap), Some(vol), Some(size)) = (
                xml_text(&reply, "snapshotId"),
                xml_text(&reply, "volumeId"),
                number("volumeSize"),
            ) else {
                return reply;
            };
            let latency = shared.options.snapshot_latency;
            ensure_volume(shared, vol, size)
                .and_then(|()| shared.disks.copy(vol, snap).map(drop))
                .map(|()| track(shared, snap, region, size, latency))
        }
        "CopySnapshot" => {
            let (Some(snap), Some(source)) = (
                xml_text(&reply, "snapshotId"),
                params.get("SourceSnapshotId"),
            ) else {
                return reply;
            };
            let size = shared.lock().snapshots.get(source).map(|s| s.size_gib);
            match size {
                Some(size) => {
                    let latency = shared.options.copy_latency;
                    shared
                        .disks
                        .copy(source, snap)
                        .map(|_| track(shared, snap, region, size, latency))
                }
                None => Ok(()),
            }
        }
        "CreateVolume" => match (xml_text(&reply, "volumeId"), params.get("SnapshotId")) {
            (Some(vol), Some(snap)) if shared.disks.exists(snap) => {
                restore(shared, snap, vol, number("size"))
            }
            _ => Ok(()),
        },
        "RunInstances" => {
            let mut from: HashMap<&str, &str> = HashMap::new();
            for n in 1.. {
                let (Some(device), Some(snap)) = (
                    params.get(&format!("BlockDeviceMapping.{n}.DeviceName")),
                    params.get(&format!("BlockDeviceMapping.{n}.Ebs.SnapshotId")),
                ) else {
                    if !params.contains_key(&format!("BlockDeviceMapping.{n}.DeviceName")) {
                        break;
                    }
                    continue;
                };
                from.insert(device, snap);
            }
            device_volumes(&reply)
                .into_iter()
                .filter_map(|(device, vol)| Some((*from.get(device)?, vol)))
                .filter(|(snap, _)| shared.disks.exists(snap))
                .try_for_each(|(snap, vol)| restore(shared, snap, vol, None))
                .and_then(|()| super::appliance::launched(shared, region, params, &reply))
        }
        "TerminateInstances" => {
            super::appliance::terminated(shared, params);
            Ok(())
        }
        "DeleteSnapshot" => {
            if let Some(snap) = params.get("SnapshotId") {
                shared.lock().snapshots.remove(snap);
                let _ = shared.disks.remove(snap);
            }
            Ok(())
        }
        "DeleteVolume" => {
            if let Some(vol) = params.get("VolumeId") {
                let _ = shared.disks.remove(vol);
            }
            Ok(())
        }
        _ => Ok(()),
    };
    if let Err(e) = result {
        tracing::warn!(action, error = %e, "the AWS lab could not keep its data in step");
    }
    if matches!(action, "CreateSnapshot" | "DescribeSnapshots") {
        pending_snapshots(shared, reply)
    } else if action == "DescribeVolumes" {
        super::detach::describe_volumes(shared, reply)
    } else {
        reply
    }
}

fn track(shared: &Shared, snap: &str, region: &str, size_gib: u64, latency: Duration) {
    let now = Instant::now();
    shared.lock().snapshots.insert(
        snap.to_owned(),
        Snapshot {
            region: region.to_owned(),
            size_gib,
            settles: Some(now + latency),
            started: now,
        },
    );
}

/// Volume `vol` gets snapshot `snap`'s data (grown to `size_gib` if larger).
fn restore(shared: &Shared, snap: &str, vol: &str, size_gib: Option<u64>) -> std::io::Result<()> {
    shared.disks.copy(snap, vol)?;
    if let Some(size) = size_gib {
        let bytes = size.saturating_mul(shared.options.gib);
        if bytes > shared.disks.size(vol)? {
            shared.disks.resize(vol, bytes)?;
        }
    }
    Ok(())
}

/// `(deviceName, volumeId)` pairs of a reply's block device mappings.
pub(crate) fn device_volumes(reply: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = reply;
    while let Some(at) = rest.find("<deviceName>") {
        rest = &rest[at..];
        let device = xml_text(rest, "deviceName");
        let next = rest[1..].find("<deviceName>").map_or(rest.len(), |n| n + 1);
        let volume = xml_text(&rest[..next], "volumeId");
        if let (Some(d), Some(v)) = (device, volume) {
            out.push((d, v));
        }
        rest = &rest[next..];
    }
    out
}

/// Rewrite each snapshot the lab still has in progress from `completed`
/// to `pending` with its progress.
fn pending_snapshots(shared: &Shared, reply: String) -> String {
    let state = shared.lock();
    let now = Instant::now();
    let mut out = String::with_capacity(reply.len());
    let mut parts = reply.split("<snapshotId>");
    out.push_str(parts.next().unwrap_or_default());
    for part in parts {
        out.push_str("<snapshotId>");
        let id = part.split("</snapshotId>").next().unwrap_or_default();
        let progress = state.snapshots.get(id).and_then(|s| match s.settles {
            None => Some(0),
            Some(at) if at > now => {
                let total = at.duration_since(s.started).as_secs_f64().max(0.001);
                let done = now.duration_since(s.started).as_secs_f64();
                Some(((done / total) * 100.0).clamp(0.0, 99.0) as u32)
            }
            Some(_) => None,
        });
        match progress {
            Some(p) => out.push_str(
                &part
                    .replacen("<status>completed</status>", "<status>pending</status>", 1)
                    .replacen(
                        "<progress>100%</progress>",
                        &format!("<progress>{p}%</progress>"),
                        1,
                    ),
            ),
            None => out.push_str(part),
        }
    }
    out
}

fn observe_route53(shared: &Shared, method: &str, path: &str, reply: String) -> String {
    let Some(id) = xml_text(&reply, "Id").map(str::to_owned) else {
        return reply;
    };
    if method == "POST" && (path.ends_with("/rrset") || path.ends_with("/rrset/")) {
        shared
            .lock()
            .changes
            .insert(id.clone(), Instant::now() + shared.options.dns_latency);
    }
    let pending = shared
        .lock()
        .changes
        .get(&id)
        .is_some_and(|at| *at > Instant::now());
    if pending {
        reply.replacen("<Status>INSYNC</Status>", "<Status>PENDING</Status>", 1)
    } else {
        reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_mappings_pair_devices_with_volumes() {
        let xml = "<blockDeviceMapping><item><deviceName>/dev/sda1</deviceName><ebs>\
                   <volumeId>vol-1</volumeId></ebs></item><item><deviceName>/dev/sdb</deviceName>\
                   <ebs><volumeId>vol-2</volumeId></ebs></item></blockDeviceMapping>";
        assert_eq!(
            device_volumes(xml),
            [("/dev/sda1", "vol-1"), ("/dev/sdb", "vol-2")]
        );
    }

    #[test]
    fn forms_decode() {
        let f = form("Action=RunInstances&TagSpecification.1.Tag.1.Value=a%3Ab+c");
        assert_eq!(f["Action"], "RunInstances");
        assert_eq!(f["TagSpecification.1.Tag.1.Value"], "a:b c");
    }
}

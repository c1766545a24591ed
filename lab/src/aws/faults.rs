//! Injected failures in AWS's own error shapes: EC2's
//! `<Response><Errors><Error>` and the `<ErrorResponse>` of Route 53 and
//! ELBv2, JSON for EBS direct; throttling as `RequestLimitExceeded` (EC2)
//! or `Throttling`, with `Retry-After` when set. Scripted through
//! `/_lab/faults` or [`super::AwsSite::set_faults`].

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use rebound_plugin_sdk::xml::Element;

use super::{Faults, Shared};
use crate::guest::{GuestWrite, Refused};

impl crate::faults::Scripted for Shared {
    fn with_faults<R>(&self, f: impl FnOnce(&mut Faults) -> R) -> R {
        f(&mut self.lock().faults)
    }

    fn effects_json(&self) -> Value {
        json!(self.lock().effects)
    }

    /// The guest of the running instance an EBS volume is attached to
    /// writes into it; EC2 (moto) says which instance that is.
    async fn guest_write(&self, write: &GuestWrite, data: &[u8]) -> Result<(), Refused> {
        let size_gib = running_volume(self, &write.disk).await?;
        super::ensure_volume(self, &write.disk, size_gib)?;
        crate::guest::write_image(&self.disks, &write.disk, &write.disk, write.offset, data)
    }
}

/// The size in GiB of volume `id` when a running instance has it
/// attached, or why it cannot be written.
async fn running_volume(shared: &Shared, id: &str) -> Result<u64, Refused> {
    let ask = |region: String, params: Vec<(&'static str, String)>| async move {
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let reply = super::seed::query(shared, &shared.moto, &region, "ec2", &params)
            .await
            .ok()?;
        Element::parse(reply.as_bytes()).ok()
    };
    for region in &shared.options.regions {
        let params = vec![
            ("Action", "DescribeVolumes".to_owned()),
            ("VolumeId.1", id.to_owned()),
        ];
        let Some(volumes) = ask(region.clone(), params).await else {
            continue;
        };
        let Some(volume) = volumes.at(&["volumeSet", "item"]) else {
            continue;
        };
        let size = volume
            .text_at(&["size"])
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        let instances: Vec<String> = volume
            .child("attachmentSet")
            .into_iter()
            .flat_map(|set| set.all("item"))
            .filter_map(|a| a.text_at(&["instanceId"]).map(str::to_owned))
            .collect();
        for instance in instances {
            let params = vec![
                ("Action", "DescribeInstances".to_owned()),
                ("InstanceId.1", instance),
            ];
            let running = ask(region.clone(), params).await.is_some_and(|reply| {
                reply
                    .at(&["reservationSet", "item", "instancesSet", "item"])
                    .and_then(|i| i.text_at(&["instanceState", "name"]))
                    == Some("running")
            });
            if running {
                return Ok(size);
            }
        }
        return Err(Refused::NotRunning(format!(
            "volume {id} is attached to no running instance; only a running guest writes"
        )));
    }
    Err(Refused::NoDisk(format!(
        "no EBS volume {id} in {:?}",
        shared.options.regions
    )))
}

/// An AWS error reply for `service`.
pub(crate) fn error(service: &str, status: StatusCode, code: &str, message: &str) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let (content_type, body) = match service {
        "ec2" => (
            "text/xml",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
                 <Message>{message}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>"
            ),
        ),
        "ebs" => (
            "application/json",
            json!({ "message": message, "Reason": code }).to_string(),
        ),
        _ => (
            "text/xml",
            format!(
                "<?xml version=\"1.0\"?>\n<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code>\
                 <Message>{message}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>",
                kind = if status.is_server_error() {
                    "Receiver"
                } else {
                    "Sender"
                }
            ),
        ),
    };
    let mut response = (status, body).into_response();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    if service == "ebs"
        && let Ok(v) = HeaderValue::from_str(code)
    {
        response.headers_mut().insert("x-amzn-errortype", v);
    }
    response
}

/// The reply to a call that drew an injected error of `status`.
pub(crate) fn injected_error(service: &str, status: StatusCode) -> Response {
    let (code, message) = match status {
        StatusCode::TOO_MANY_REQUESTS if service == "ec2" => {
            ("RequestLimitExceeded", "Request limit exceeded.")
        }
        StatusCode::TOO_MANY_REQUESTS => ("Throttling", "Rate exceeded"),
        s if s.is_server_error() => (
            "ServiceUnavailable",
            "The service is unavailable. Please try again shortly.",
        ),
        _ => ("InvalidRequest", "The request was refused by the lab."),
    };
    error(service, status, code, message)
}

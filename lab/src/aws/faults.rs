//! Injected failures in AWS's own error shapes: EC2's
//! `<Response><Errors><Error>` and the `<ErrorResponse>` of Route 53 and
//! ELBv2, JSON for EBS direct; throttling as `RequestLimitExceeded` (EC2)
//! or `Throttling`, with `Retry-After` when set. Scripted through
//! `/_lab/faults` or [`super::AwsSite::set_faults`].

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Faults, Shared};

impl crate::faults::Scripted for Shared {
    fn with_faults<R>(&self, f: impl FnOnce(&mut Faults) -> R) -> R {
        f(&mut self.lock().faults)
    }

    fn effects_json(&self) -> Value {
        json!(self.lock().effects)
    }
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

/// The reply to a call that drew an injected error.
pub(crate) fn injected(service: &str, faults: &Faults) -> Response {
    let status = faults
        .status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
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
    let mut response = error(service, status, code, message);
    if let Some(secs) = faults.retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

//! Extractors: the authenticated [`Principal`], and JSON bodies whose
//! rejections (malformed JSON, wrong types, unknown fields, oversized
//! bodies) are problem+json 4xx naming what was wrong.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::ApiState;
use crate::auth::Principal;
use crate::problem::Problem;

impl FromRequestParts<ApiState> for Principal {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Problem> {
        let header = authorization(&parts.headers)?;
        state.auth.authenticate(&state.store, header).await
    }
}

/// The `Authorization` header's value, if sent.
pub(crate) fn authorization(headers: &axum::http::HeaderMap) -> Result<Option<&str>, Problem> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .map(|v| {
            v.to_str()
                .map_err(|_| Problem::unauthorized("the Authorization header is not text"))
        })
        .transpose()
}

/// A JSON body; request types deny unknown fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => {
                let status = rejection.status();
                let detail = match status {
                    StatusCode::PAYLOAD_TOO_LARGE => {
                        "the request body is larger than the host accepts (body_limit_bytes)"
                            .to_owned()
                    }
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                        "send the body as JSON with `Content-Type: application/json`".to_owned()
                    }
                    _ => rejection.body_text(),
                };
                Err(Problem::new(status, detail).kind("invalid-body"))
            }
        }
    }
}

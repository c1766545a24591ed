//! A small Kubernetes API client over the SDK's HTTP client: the site's API
//! server and namespace from its config, its bearer token as a placeholder
//! the host fills in (the plugin never holds it), `Status` failures mapped
//! to the contract's errors, and retries of throttled and passing failures
//! (Retry-After honoured).

use rebound_plugin_sdk::http::{self, Request, Response};
use rebound_plugin_sdk::retry::{RetryPolicy, retry};
use rebound_plugin_sdk::{ProviderError, site};
use serde_json::Value;

use crate::names::{KEY_ANNOTATION, encode};

/// Per request: connect, first byte and between bytes.
const TIMEOUT_MS: u64 = 20_000;

/// One site's cluster, as its config names it.
pub struct Cluster {
    pub site: String,
    endpoint: String,
    /// The namespace the site's workloads live in.
    pub namespace: String,
    token: String,
}

/// Where API paths of a group live.
pub fn core(ns: &str, plural: &str) -> String {
    format!("/api/v1/namespaces/{ns}/{plural}")
}

pub fn group(group_version: &str, ns: &str, plural: &str) -> String {
    format!("/apis/{group_version}/namespaces/{ns}/{plural}")
}

impl Cluster {
    /// The cluster of `site`: settings `endpoint` (the API server URL) and
    /// `namespace`, secret `token` (a service account's bearer token).
    pub fn of(site: &str) -> Result<Self, ProviderError> {
        let endpoint = site::require(site, "endpoint")?
            .trim_end_matches('/')
            .to_owned();
        let namespace = site::require(site, "namespace")?;
        let token = site::secret(site, "token")?.placeholder();
        Ok(Self {
            site: site.to_owned(),
            endpoint,
            namespace,
            token,
        })
    }

    pub fn vms(&self) -> String {
        group("kubevirt.io/v1", &self.namespace, "virtualmachines")
    }
    pub fn vmis(&self) -> String {
        group("kubevirt.io/v1", &self.namespace, "virtualmachineinstances")
    }
    pub fn snapshots(&self) -> String {
        group(
            "snapshot.kubevirt.io/v1beta1",
            &self.namespace,
            "virtualmachinesnapshots",
        )
    }
    pub fn snapshot_contents(&self) -> String {
        group(
            "snapshot.kubevirt.io/v1beta1",
            &self.namespace,
            "virtualmachinesnapshotcontents",
        )
    }
    pub fn exports(&self) -> String {
        group(
            "export.kubevirt.io/v1beta1",
            &self.namespace,
            "virtualmachineexports",
        )
    }
    pub fn data_volumes(&self) -> String {
        group("cdi.kubevirt.io/v1beta1", &self.namespace, "datavolumes")
    }
    pub fn upload_tokens(&self) -> String {
        group(
            "upload.cdi.kubevirt.io/v1beta1",
            &self.namespace,
            "uploadtokenrequests",
        )
    }
    pub fn pvcs(&self) -> String {
        core(&self.namespace, "persistentvolumeclaims")
    }
    pub fn secrets(&self) -> String {
        core(&self.namespace, "secrets")
    }

    fn request(&self, build: fn(String) -> Request, path: &str) -> Request {
        build(format!("{}{path}", self.endpoint))
            .bearer(&self.token)
            .header("accept", "application/json")
            .timeout_ms(TIMEOUT_MS)
    }

    /// Send with retries; non-2xx answers become errors naming the call.
    fn send(&self, method: &str, path: &str, request: Request) -> Result<Response, ProviderError> {
        let what = format!("{method} {}{}", self.endpoint, url_path(path));
        retry(RetryPolicy::default(), || {
            let response = request.clone().send()?;
            if response.is_success() {
                Ok(response)
            } else {
                Err(status_error(&what, &response))
            }
        })
    }

    /// One probe, no retries, a short timeout (health).
    pub fn probe(&self, path: &str) -> Result<Response, ProviderError> {
        self.request(http::get, path).timeout_ms(5_000).send()
    }

    pub fn get(&self, path: &str) -> Result<Value, ProviderError> {
        self.send("GET", path, self.request(http::get, path))?
            .json()
    }

    /// `None` when the object does not exist.
    pub fn get_opt(&self, path: &str) -> Result<Option<Value>, ProviderError> {
        match self.get(path) {
            Ok(v) => Ok(Some(v)),
            Err(ProviderError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The items of a collection, narrowed by a label selector.
    pub fn list(&self, path: &str, selector: Option<&str>) -> Result<Vec<Value>, ProviderError> {
        let path = match selector {
            Some(s) => format!("{path}?labelSelector={}", encode(s)),
            None => path.to_owned(),
        };
        let list = self.get(&path)?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// Create `object` in `collection`. An object of that name already
    /// there (an earlier attempt of this call, say) is returned instead if
    /// it was created under the same idempotency key; otherwise the clash
    /// is a conflict.
    pub fn create(&self, collection: &str, object: &Value) -> Result<Value, ProviderError> {
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let request = self.request(http::post, collection).json(object)?;
        match self.send("POST", collection, request) {
            Ok(created) => created.json(),
            Err(ProviderError::Conflict(message)) if message.contains("AlreadyExists") => {
                let existing = self.get(&format!("{collection}/{name}"))?;
                let wanted = &object["metadata"]["annotations"][KEY_ANNOTATION];
                if wanted.is_null()
                    || existing["metadata"]["annotations"][KEY_ANNOTATION] == *wanted
                {
                    Ok(existing)
                } else {
                    Err(ProviderError::Conflict(format!(
                        "{} '{name}' already exists in namespace '{}' and was not created by Rebound under this key; rename or remove it",
                        object["kind"].as_str().unwrap_or("object"),
                        self.namespace
                    )))
                }
            }
            Err(e) => Err(e),
        }
    }

    /// JSON merge patch (RFC 7386).
    pub fn merge_patch(&self, path: &str, patch: &Value) -> Result<Value, ProviderError> {
        let body = serde_json::to_vec(patch).map_err(|e| {
            ProviderError::InvalidRequest(format!("cannot encode a patch of {path}: {e}"))
        })?;
        let request = self
            .request(http::patch, path)
            .header("content-type", "application/merge-patch+json")
            .body(body);
        self.send("PATCH", path, request)?.json()
    }

    /// Delete an object (what it owns goes with it); `false` when it was
    /// already gone.
    pub fn delete(&self, path: &str) -> Result<bool, ProviderError> {
        let options = serde_json::json!({
            "kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background",
        });
        match self.send(
            "DELETE",
            path,
            self.request(http::delete, path).json(&options)?,
        ) {
            Ok(_) => Ok(true),
            Err(ProviderError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// A URL without its query (which may carry selectors, never secrets, but
/// is noise in messages).
fn url_path(url: &str) -> &str {
    url.split('?').next().unwrap_or_default()
}

/// The contract's error for a Kubernetes failure, quoting its `Status`
/// reason and message.
fn status_error(what: &str, response: &Response) -> ProviderError {
    let status: Value = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
    let detail = match (status["reason"].as_str(), status["message"].as_str()) {
        (Some(reason), Some(message)) => format!("{reason}: {message}"),
        (None, Some(message)) => message.to_owned(),
        _ => response.text(),
    };
    ProviderError::from_status(
        response.status(),
        what,
        response.header("retry-after"),
        detail.as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_leave_out_the_query() {
        assert_eq!(
            url_path("/api/v1/namespaces/prod/pods?labelSelector=a%3Db"),
            "/api/v1/namespaces/prod/pods"
        );
    }
}

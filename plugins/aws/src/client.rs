//! One AWS region as a site: its endpoints, SigV4 signing with the site's
//! key, EC2's query API, Route 53's REST-XML and EBS direct's REST-JSON, and
//! AWS's error codes mapped to the contract's errors.

use rebound_plugin_sdk::http::{self, Request};
use rebound_plugin_sdk::retry::{RetryPolicy, retry};
use rebound_plugin_sdk::{ProviderError, Throttle, appliance, site};
use rebound_sigv4::{Credentials, uri_encode};

use crate::xml::Node;

pub const EC2_VERSION: &str = "2016-11-15";
/// The ELBv2 API version the plugin speaks.
pub const ELBV2_VERSION: &str = "2015-12-01";

/// A site: one region, reached at `endpoint`.
#[derive(Debug, Clone)]
pub struct Aws {
    pub site: String,
    pub region: String,
    pub endpoint: String,
    route53: String,
    ebs: String,
    elbv2: String,
    key_id: String,
    secret: String,
}

/// Connect to `site`: settings `endpoint`, `region`, optional
/// `route53_endpoint`, `ebs_endpoint`, `elbv2_endpoint`; secrets `access_key_id`,
/// `secret_access_key` (revealed: SigV4 computes with it; every reveal is
/// audited by the host).
pub fn connect(site_name: &str) -> Result<Aws, ProviderError> {
    let endpoint = trim(site::require(site_name, "endpoint")?);
    let region = site::require(site_name, "region")?;
    let key_id = site::secret(site_name, "access_key_id")?.reveal();
    let secret = site::secret(site_name, "secret_access_key")?.reveal();
    Ok(Aws {
        site: site_name.to_owned(),
        route53: site::get(site_name, "route53_endpoint").map_or_else(|| endpoint.clone(), trim),
        ebs: site::get(site_name, "ebs_endpoint").map_or_else(|| endpoint.clone(), trim),
        elbv2: site::get(site_name, "elbv2_endpoint").map_or_else(|| endpoint.clone(), trim),
        endpoint,
        region,
        key_id,
        secret,
    })
}

fn trim(s: String) -> String {
    s.trim_end_matches('/').to_owned()
}

impl Aws {
    /// The bearer token of the mover appliance of transfer `key`, derived
    /// under the secret access key ([`appliance::token`]).
    pub fn appliance_token(&self, key: &str) -> String {
        appliance::token(&self.secret, &self.region, key)
    }

    fn send(
        &self,
        service: &str,
        region: &str,
        method: &str,
        base: &str,
        path_query: &str,
        body: Vec<u8>,
    ) -> Result<http::Response, ProviderError> {
        let content_type = match service {
            "ec2" | "elasticloadbalancing" => {
                Some("application/x-www-form-urlencoded; charset=utf-8")
            }
            "route53" => Some("application/xml"),
            _ => None,
        };
        retry(RetryPolicy::default(), || {
            let host = base.split("://").nth(1).unwrap_or(base);
            let host = host.split('/').next().unwrap_or(host);
            let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
            let mut headers: Vec<(String, String)> = Vec::new();
            if let Some(ct) = content_type {
                headers.push(("content-type".into(), ct.to_owned()));
            }
            let signed = rebound_sigv4::sign(
                &rebound_sigv4::Request {
                    method,
                    host,
                    path,
                    query,
                    headers: &headers,
                    body: &body,
                },
                &Credentials {
                    access_key_id: &self.key_id,
                    secret_access_key: &self.secret,
                },
                region,
                service,
                &rebound_sigv4::amz_date(site::now_ms() / 1000),
            );
            let url = format!("{base}{path_query}");
            let mut request = match method {
                "GET" => http::get(url),
                "PUT" => http::put(url),
                "DELETE" => http::delete(url),
                _ => http::post(url),
            };
            for (k, v) in headers.iter().chain(signed.iter()) {
                request = request.header(k, v.clone());
            }
            let response = Request::body(request, body.clone()).send()?;
            if response.is_success() {
                Ok(response)
            } else {
                Err(error(service, &response))
            }
        })
    }

    /// One EC2 query call in the site's region.
    pub fn ec2(&self, params: &[(String, String)]) -> Result<Node, ProviderError> {
        self.ec2_in(&self.region, params)
    }

    /// One EC2 query call in `region` (CopySnapshot is sent to the target).
    pub fn ec2_in(&self, region: &str, params: &[(String, String)]) -> Result<Node, ProviderError> {
        let mut body: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{}={}", uri_encode(k, false), uri_encode(v, false)))
            .collect();
        body.push(format!("Version={EC2_VERSION}"));
        let response = self.send(
            "ec2",
            region,
            "POST",
            &self.endpoint,
            "/",
            body.join("&").into_bytes(),
        )?;
        Node::parse(&response.text())
    }

    /// One ELBv2 query call in the site's region; the action's `…Result`.
    pub fn elbv2(&self, params: &[(String, String)]) -> Result<Node, ProviderError> {
        let mut body: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{}={}", uri_encode(k, false), uri_encode(v, false)))
            .collect();
        body.push(format!("Version={ELBV2_VERSION}"));
        let response = self.send(
            "elasticloadbalancing",
            &self.region,
            "POST",
            &self.elbv2,
            "/",
            body.join("&").into_bytes(),
        )?;
        let mut reply = Node::parse(&response.text())?;
        let action = params
            .iter()
            .find(|(k, _)| k == "Action")
            .map(|(_, v)| format!("{v}Result"))
            .unwrap_or_default();
        let at = reply.children.iter().position(|c| c.name == action);
        Ok(match at {
            Some(i) => reply.children.swap_remove(i),
            None => reply,
        })
    }

    /// One Route 53 call (global, signed for us-east-1).
    pub fn route53(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<Node, ProviderError> {
        let response = self.send(
            "route53",
            "us-east-1",
            method,
            &self.route53,
            path,
            body.unwrap_or_default().into_bytes(),
        )?;
        Node::parse(&response.text())
    }

    /// One EBS direct GET returning JSON.
    pub fn ebs_get(&self, path_query: &str) -> Result<serde_json::Value, ProviderError> {
        let response = self.send(
            "ebs",
            &self.region,
            "GET",
            &self.ebs,
            path_query,
            Vec::new(),
        )?;
        response.json()
    }
}

/// An AWS error reply as the contract's error.
pub fn error(service: &str, response: &http::Response) -> ProviderError {
    let text = response.text();
    let (code, message) = match Node::parse(&text) {
        Ok(root) => {
            let mut errors = Vec::new();
            root.all("Error", &mut errors);
            match errors.first() {
                Some(e) => (e.text("Code").to_owned(), e.text("Message").to_owned()),
                None if root.name == "Error" => (
                    root.text("Code").to_owned(),
                    root.text("Message").to_owned(),
                ),
                None => (String::new(), text.chars().take(200).collect()),
            }
        }
        Err(_) => {
            let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            (
                response
                    .header("x-amzn-errortype")
                    .map(|t| t.split(':').next().unwrap_or(t).to_owned())
                    .or_else(|| json["Reason"].as_str().map(str::to_owned))
                    .unwrap_or_default(),
                json["message"]
                    .as_str()
                    .map_or_else(|| text.chars().take(200).collect(), str::to_owned),
            )
        }
    };
    let status = response.status();
    let what = format!("{service} answered {status} {code}: {message}");
    match code.as_str() {
        "Throttling"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "TooManyRequestsException"
        | "PriorRequestNotComplete"
        | "SlowDown" => ProviderError::Throttled(Throttle {
            retry_after_ms: response
                .header("retry-after")
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(|s| s * 1000),
            message: what,
        }),
        "AuthFailure"
        | "SignatureDoesNotMatch"
        | "InvalidClientTokenId"
        | "UnauthorizedOperation"
        | "AccessDenied"
        | "AccessDeniedException"
        | "MissingAuthenticationToken"
        | "InvalidAccessKeyId" => ProviderError::Unauthorized(format!(
            "{what} — the site's access key was refused: check the secrets access_key_id and \
             secret_access_key and the key's IAM permissions"
        )),
        c if c.ends_with(".NotFound")
            || c.starts_with("NoSuch")
            || c == "ResourceNotFoundException"
            || (service == "elasticloadbalancing" && c.ends_with("NotFound")) =>
        {
            ProviderError::NotFound(what)
        }
        "IncorrectState"
        | "IncorrectInstanceState"
        | "ConflictException"
        | "VolumeInUse"
        | "InvalidChangeBatch" => ProviderError::Conflict(what),
        "ServiceUnavailable"
        | "Unavailable"
        | "InternalError"
        | "InternalFailure"
        | "InternalServerException" => ProviderError::Transient(what),
        _ => ProviderError::from_status(
            status,
            service,
            response.header("retry-after"),
            text.as_bytes(),
        ),
    }
}

/// Parameters in EC2's form: `("Filter.1.Name", "tag:x")`, ...
#[derive(Debug, Default, Clone)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn action(action: &str) -> Self {
        Self(vec![("Action".into(), action.into())])
    }

    pub fn set(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.0.push((k.into(), v.into()));
        self
    }

    /// `Filter.N.Name=name`, `Filter.N.Value.1=value`.
    pub fn filter(self, name: &str, value: &str) -> Self {
        let n = self
            .0
            .iter()
            .filter(|(k, _)| k.ends_with(".Name") && k.starts_with("Filter."))
            .count()
            + 1;
        self.set(format!("Filter.{n}.Name"), name)
            .set(format!("Filter.{n}.Value.1"), value)
    }

    /// `TagSpecification.N` for `resource` with `tags`.
    pub fn tag_spec(mut self, resource: &str, tags: &[(String, String)]) -> Self {
        let n = self
            .0
            .iter()
            .filter(|(k, _)| k.starts_with("TagSpecification.") && k.ends_with(".ResourceType"))
            .count()
            + 1;
        self = self.set(format!("TagSpecification.{n}.ResourceType"), resource);
        for (i, (k, v)) in tags.iter().enumerate() {
            self = self
                .set(format!("TagSpecification.{n}.Tag.{}.Key", i + 1), k.clone())
                .set(
                    format!("TagSpecification.{n}.Tag.{}.Value", i + 1),
                    v.clone(),
                );
        }
        self
    }

    pub fn list(mut self, prefix: &str, values: &[String]) -> Self {
        for (i, v) in values.iter().enumerate() {
            self = self.set(format!("{prefix}.{}", i + 1), v.clone());
        }
        self
    }
}

//! Outgoing HTTP for plugins: every `wasi:http` request passes the egress
//! policy, has its secret placeholders filled in, connects to the address
//! that was checked (no second DNS lookup), and runs under the call's
//! remaining budget, a connection cap and a response-size cap.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::egress::{EgressPolicy, Scheme};
use crate::host::{CallShared, lock};

/// The `wasi:http` hooks of one call.
pub(crate) struct EgressHooks {
    shared: Arc<CallShared>,
}

impl EgressHooks {
    pub(crate) fn new(shared: Arc<CallShared>) -> Self {
        Self { shared }
    }
}

type SendResult = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ),
    HttpError,
>;

impl WasiHttpHooks for EgressHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let shared = self.shared.clone();
        Box::new(async move {
            let response = send(&shared, request, options).await?;
            let done: Box<dyn Future<Output = Result<(), HttpError>> + Send> =
                Box::new(async { Ok(()) });
            Ok((response, done))
        })
    }
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

fn bounded(requested: Option<Duration>, deadline: Instant) -> Duration {
    let left = remaining(deadline);
    requested.map_or(left, |r| r.min(left))
}

async fn send(
    shared: &Arc<CallShared>,
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<http::Response<WasiBody>, HttpError> {
    let (mut parts, body) = request.into_parts();
    let method = parts.method.clone();
    let shown = format!(
        "{method} {}://{}{}",
        parts.uri.scheme_str().unwrap_or("?"),
        parts.uri.authority().map(|a| a.as_str()).unwrap_or("?"),
        parts.uri.path()
    );
    // Read the (small) API request body first: a request refused before its
    // body is drained looks like a connection reset to the guest.
    let body = match Limited::new(body, shared.limits.max_request_bytes)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            shared.violation(format!(
                "{shown}: request body larger than the {} byte cap refused",
                shared.limits.max_request_bytes
            ));
            return Err(HttpError::HttpRequestBodySize(None));
        }
    };

    let scheme = match parts.uri.scheme_str() {
        Some("http") => Scheme::Http,
        Some("https") => Scheme::Https,
        _ => return Err(HttpError::HttpRequestUriInvalid),
    };
    let host = parts
        .uri
        .host()
        .ok_or(HttpError::HttpRequestUriInvalid)?
        .to_owned();
    let port = parts.uri.port_u16().unwrap_or(match scheme {
        Scheme::Http => 80,
        Scheme::Https => 443,
    });
    let allowed = shared.egress.check(scheme, &host, port).map_err(|denial| {
        shared.violation(denial);
        HttpError::HttpRequestDenied
    })?;
    if let Some(fault) = shared.faults.as_ref().and_then(|f| f.take()) {
        return injected(fault, &shown, options, shared.deadline).await;
    }

    let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
        shared.violation(format!(
            "{shown}: more than {} requests open at once in one call refused",
            shared.limits.max_connections
        ));
        return Err(HttpError::ConnectionLimitReached);
    };

    let bare_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let addrs: Vec<SocketAddr> = match bare_host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => {
            let lookup = tokio::net::lookup_host((bare_host.as_str(), port));
            match tokio::time::timeout(remaining(shared.deadline), lookup).await {
                Ok(Ok(found)) => found.collect(),
                Ok(Err(_)) => {
                    return Err(HttpError::DnsError {
                        rcode: Some(format!("{bare_host} did not resolve")),
                        info_code: None,
                    });
                }
                Err(_) => return Err(HttpError::DnsTimeout),
            }
        }
    };
    let ips: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
    EgressPolicy::check_addresses(&allowed, scheme, &bare_host, port, &ips).map_err(|denial| {
        shared.violation(denial);
        HttpError::HttpRequestDenied
    })?;

    // Fill in the placeholders of the sites whose grants allow the request,
    // and only those: a plugin cannot carry one site's secret to another
    // destination.
    let body = {
        let placeholders = lock(&shared.placeholders);
        let mine: Vec<_> = placeholders
            .iter()
            .filter(|p| allowed.sites.contains(&p.site))
            .collect();
        for value in parts.headers.values_mut() {
            if let Ok(text) = value.to_str()
                && mine.iter().any(|p| text.contains(&p.token))
            {
                let mut filled = text.to_owned();
                for p in &mine {
                    filled = filled.replace(&p.token, &p.value);
                }
                *value = http::HeaderValue::from_str(&filled)
                    .map_err(|_| HttpError::HttpRequestUriInvalid)?;
            }
        }
        match std::str::from_utf8(&body) {
            Ok(text) if mine.iter().any(|p| text.contains(&p.token)) => {
                let encoding = BodyEncoding::of(&parts.headers);
                let mut filled = text.to_owned();
                for p in &mine {
                    filled = filled.replace(&p.token, &encoding.encode(&p.value));
                }
                Bytes::from(filled)
            }
            _ => body,
        }
    };
    if parts.headers.contains_key(http::header::CONTENT_LENGTH) {
        parts.headers.insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from(body.len()),
        );
    }

    let connect_timeout = bounded(options.and_then(|o| o.connect_timeout), shared.deadline);
    let stream = connect(&addrs, connect_timeout).await?;
    let io: Box<dyn Io> = match scheme {
        Scheme::Http => Box::new(stream),
        Scheme::Https => Box::new(tls(shared, &allowed.site, &bare_host, stream).await?),
    };
    let (mut sender, conn) = tokio::time::timeout(
        connect_timeout,
        hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(io)),
    )
    .await
    .map_err(|_| HttpError::ConnectionTimeout)??;
    tokio::spawn(conn);

    parts.uri = http::Uri::builder()
        .path_and_query(parts.uri.path_and_query().map_or("/", |p| p.as_str()))
        .build()
        .map_err(|_| HttpError::HttpRequestUriInvalid)?;
    let request = http::Request::from_parts(parts, Full::new(body));
    let first_byte = bounded(options.and_then(|o| o.first_byte_timeout), shared.deadline);
    let response = tokio::time::timeout(first_byte, sender.send_request(request))
        .await
        .map_err(|_| HttpError::ConnectionReadTimeout)??;

    let cap = shared.limits.max_response_bytes;
    if let Some(len) = response.body().size_hint().exact()
        && len > cap
    {
        shared.violation(format!(
            "{shown}: response body of {len} bytes exceeds the {cap} byte cap; refused"
        ));
        return Err(HttpError::HttpResponseBodySize(Some(len)));
    }
    let between_bytes = bounded(
        options.and_then(|o| o.between_bytes_timeout),
        shared.deadline,
    );
    Ok(response.map(|incoming| {
        CappedBody {
            incoming,
            received: 0,
            cap,
            shared: shared.clone(),
            shown,
            idle: Box::pin(tokio::time::sleep(between_bytes)),
            between_bytes,
            _permit: permit,
        }
        .boxed_unsync()
    }))
}

/// What an injected fault answers (see [`crate::context::Fault`]).
async fn injected(
    fault: crate::context::Fault,
    shown: &str,
    options: Option<RequestOptions>,
    deadline: Instant,
) -> Result<http::Response<WasiBody>, HttpError> {
    tracing::debug!("{shown}: injected {fault:?}");
    match fault {
        crate::context::Fault::Hang => {
            tokio::time::sleep(bounded(
                options.and_then(|o| o.first_byte_timeout),
                deadline,
            ))
            .await;
            Err(HttpError::ConnectionReadTimeout)
        }
        crate::context::Fault::Status {
            code,
            retry_after_secs,
        } => {
            let status = http::StatusCode::from_u16(code)
                .map_err(|_| HttpError::InternalError(Some(format!("bad status {code}"))))?;
            let body = format!(
                "{{\"error\": \"injected by the host: {}\"}}",
                status.canonical_reason().unwrap_or("fault")
            );
            let mut response = http::Response::builder()
                .status(status)
                .header(http::header::CONTENT_TYPE, "application/json");
            if let Some(secs) = retry_after_secs {
                response = response.header(http::header::RETRY_AFTER, secs);
            }
            response
                .body(
                    Full::new(Bytes::from(body))
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                )
                .map_err(|e| HttpError::InternalError(Some(e.to_string())))
        }
    }
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

async fn connect(addrs: &[SocketAddr], timeout: Duration) -> Result<TcpStream, HttpError> {
    let mut last = HttpError::ConnectionRefused;
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = HttpError::Connect(e),
            Err(_) => last = HttpError::ConnectionTimeout,
        }
    }
    Err(last)
}

/// TLS client configurations, built once: the public web roots, plus one
/// per private CA that a site trusts (a private cloud's own CA).
pub(crate) struct TlsConfigs {
    public: Arc<rustls::ClientConfig>,
    private: std::sync::Mutex<std::collections::HashMap<String, Arc<rustls::ClientConfig>>>,
}

impl TlsConfigs {
    pub(crate) fn new() -> Result<Self, rustls::Error> {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        Ok(Self {
            public: Arc::new(Self::config(roots)?),
            private: Default::default(),
        })
    }

    fn config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, rustls::Error> {
        Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
    }

    fn for_site(&self, ca_pem: Option<&str>) -> Result<Arc<rustls::ClientConfig>, HttpError> {
        let Some(pem) = ca_pem else {
            return Ok(self.public.clone());
        };
        if let Some(config) = lock(&self.private).get(pem) {
            return Ok(config.clone());
        }
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
            let cert = cert.map_err(|_| HttpError::TlsCertificateError)?;
            roots
                .add(cert)
                .map_err(|_| HttpError::TlsCertificateError)?;
        }
        let config = Arc::new(Self::config(roots).map_err(|_| HttpError::TlsProtocolError)?);
        lock(&self.private).insert(pem.to_owned(), config.clone());
        Ok(config)
    }
}

async fn tls(
    shared: &CallShared,
    site: &str,
    host: &str,
    stream: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, HttpError> {
    let ca_pem = shared.sites.get(site).and_then(|s| s.ca_pem.as_deref());
    let config = shared.tls.for_site(ca_pem)?;
    let name = match host.parse::<IpAddr>() {
        Ok(ip) => rustls::pki_types::ServerName::from(ip),
        Err(_) => rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|_| HttpError::HttpRequestUriInvalid)?,
    };
    tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(HttpError::Tls)
}

/// A response body that stops at the size cap and at the idle timeout.
struct CappedBody {
    incoming: hyper::body::Incoming,
    received: u64,
    cap: u64,
    shared: Arc<CallShared>,
    shown: String,
    idle: Pin<Box<tokio::time::Sleep>>,
    between_bytes: Duration,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Body for CappedBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.received += data.len() as u64;
                    if self.received > self.cap {
                        let message = format!(
                            "{}: response body exceeded the {} byte cap; cut off",
                            self.shown, self.cap
                        );
                        self.shared.violation(message);
                        return Poll::Ready(Some(Err(HttpError::HttpResponseBodySize(None))));
                    }
                }
                let next = tokio::time::Instant::now() + self.between_bytes;
                self.idle.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(HttpError::from(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

/// How a secret's value is written where its placeholder stands in a body:
/// escaped as the body's media type needs, so a password holding `"`, `&`
/// or `%` arrives as itself and cannot break (or inject into) the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyEncoding {
    /// Inside a JSON string: the value JSON-escaped, without quotes.
    Json,
    /// A form field (`application/x-www-form-urlencoded`): percent-encoded.
    Form,
    /// Anything else: the value as it is.
    Raw,
}

impl BodyEncoding {
    fn of(headers: &http::HeaderMap) -> Self {
        let media = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default();
        if media == "application/x-www-form-urlencoded" {
            Self::Form
        } else if media == "application/json" || media.ends_with("+json") {
            Self::Json
        } else {
            Self::Raw
        }
    }

    fn encode(self, value: &str) -> String {
        match self {
            Self::Json => {
                let quoted = serde_json::Value::from(value).to_string();
                quoted[1..quoted.len() - 1].to_owned()
            }
            Self::Form => form_urlencoded::byte_serialize(value.as_bytes()).collect(),
            Self::Raw => value.to_owned(),
        }
    }
}

#[cfg(test)]
mod body_encoding_tests {
    use super::BodyEncoding;

    fn headers(content_type: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::CONTENT_TYPE,
            content_type.parse().expect("value"),
        );
        h
    }

    #[test]
    fn a_secret_is_escaped_as_the_body_needs() {
        let secret = r#"p"a&ss=w%rd+\ü"#;
        let json = BodyEncoding::of(&headers("application/json; charset=utf-8"));
        let body = format!(r#"{{"password": "{}"}}"#, json.encode(secret));
        let parsed: serde_json::Value = serde_json::from_str(&body).expect("still JSON");
        assert_eq!(parsed["password"], secret);

        let form = BodyEncoding::of(&headers("application/x-www-form-urlencoded"));
        let body = format!("username=a&password={}", form.encode(secret));
        let fields: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(fields[1], ("password".to_owned(), secret.to_owned()));

        assert_eq!(
            BodyEncoding::of(&headers("text/plain")).encode(secret),
            secret
        );
        assert_eq!(BodyEncoding::of(&http::HeaderMap::new()), BodyEncoding::Raw);
    }
}

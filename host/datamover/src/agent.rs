//! The mover agent: serves one disk image over HTTP for the data mover —
//! ranged reads (`GET /disk` + `Range`), ranged writes (`PUT /disk` +
//! `Content-Range`) and block digests (`GET /disk?digests=<block-size>`) —
//! behind a per-transfer bearer token. Holes stay holes: digests of hole
//! blocks are answered without reading them, and an all-zero write onto a
//! hole is skipped. On a network it serves HTTPS ([`serve_tls`]): the
//! token is a bearer credential, and the data is the workload's disk.

use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::block::Block;
use crate::digest::{block_digest, zero_block_digest};

/// Largest range one request may read or write; bounds the agent's memory.
pub const MAX_RANGE: u64 = 64 << 20;

/// What an agent serves.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The disk image (a raw file, usually sparse).
    pub path: PathBuf,
    /// The transfer token clients must present as a bearer token.
    pub token: String,
    /// Whether writes are accepted (an import) or refused (an export).
    pub writable: bool,
}

struct Agent {
    file: File,
    size: u64,
    config: AgentConfig,
}

/// Serve until the listener fails or the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, config: AgentConfig) -> std::io::Result<()> {
    axum::serve(listener, router(config)?).await
}

/// Serve over HTTPS with `tls` (the appliance's certificate; clients trust
/// its CA through their site's `ca_pem`). A client that fails the
/// handshake is dropped; the agent keeps serving.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    config: AgentConfig,
    tls: Arc<rustls::ServerConfig>,
) -> std::io::Result<()> {
    serve_router_tls(listener, router(config)?, tls, std::future::pending()).await;
    Ok(())
}

/// Serve `app` over HTTPS with `tls` until `shutdown` completes — the
/// agent's routes, or a lab simulator's. See [`serve_router`].
pub async fn serve_router_tls(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    serve_router(listener, app, Some(tls), shutdown).await;
}

/// Serve `app` (over HTTPS with `tls`, when given) until `shutdown`
/// completes. The connections belong to this future: when it ends, or is
/// dropped (its task aborted), every open connection is closed with it —
/// kept-alive ones included — as a machine switched off closes its
/// sockets. A client that fails the handshake is dropped; a failed accept
/// (out of descriptors, say) is retried after a pause, as `axum::serve`
/// does.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            // Reap finished connections as they end.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            () = &mut shutdown => return,
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        connections.spawn(async move {
            let service = TowerToHyperService::new(app);
            let builder = Builder::new(TokioExecutor::new());
            match acceptor {
                Some(acceptor) => {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
                None => {
                    let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                }
            }
        });
    }
}

/// A TLS server configuration from PEM: a certificate chain (leaf first)
/// and its private key.
pub fn tls_config(cert_pem: &[u8], key_pem: &[u8]) -> std::io::Result<Arc<rustls::ServerConfig>> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
    let chain = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("the certificate file: {e}")))?;
    if chain.is_empty() {
        return Err(invalid(
            "the certificate file holds no PEM certificate".into(),
        ));
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| invalid(format!("the key file: {e}")))?
        .ok_or_else(|| invalid("the key file holds no PEM private key".into()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| invalid(format!("the certificate and key: {e}")))?;
    Ok(Arc::new(config))
}

/// The agent's routes over `config`'s image (`/disk`), for serving behind
/// a listener of the caller's.
pub fn router(config: AgentConfig) -> std::io::Result<Router> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(config.writable)
        .open(&config.path)?;
    let size = file.metadata()?.len();
    let agent = Arc::new(Agent { file, size, config });
    Ok(Router::new()
        .route("/disk", get(read).put(write))
        .with_state(agent))
}

/// Bind to `addr` and serve in the background; returns the bound address.
pub async fn spawn(addr: SocketAddr, config: AgentConfig) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    // Open the image now so a bad path fails here, not in the task.
    std::fs::File::open(&config.path)?;
    tokio::spawn(async move {
        if let Err(e) = serve(listener, config).await {
            tracing::error!("mover agent stopped: {e}");
        }
    });
    Ok(bound)
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

fn authorized(agent: &Agent, headers: &HeaderMap) -> bool {
    let expected = format!("Bearer {}", agent.config.token);
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // Compare in constant time so the token cannot be guessed byte by byte.
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// `bytes=a-b` (inclusive), checked against the disk size.
fn parse_range(value: &str, size: u64) -> Result<(u64, u64), String> {
    let spec = value
        .strip_prefix("bytes=")
        .ok_or_else(|| format!("range '{value}' must look like bytes=START-END"))?;
    let (a, b) = spec
        .split_once('-')
        .ok_or_else(|| format!("range '{value}' must look like bytes=START-END"))?;
    let start: u64 = a
        .parse()
        .map_err(|_| format!("range start '{a}' is not a number"))?;
    let end: u64 = b
        .parse()
        .map_err(|_| format!("range end '{b}' is not a number"))?;
    if start > end || end >= size {
        return Err(format!(
            "range {start}-{end} is outside the disk (0-{})",
            size.saturating_sub(1)
        ));
    }
    if end - start + 1 > MAX_RANGE {
        return Err(format!(
            "range of {} bytes exceeds the {MAX_RANGE} byte maximum",
            end - start + 1
        ));
    }
    Ok((start, end))
}

#[derive(Deserialize)]
struct ReadQuery {
    digests: Option<u64>,
}

async fn read(
    State(agent): State<Arc<Agent>>,
    headers: HeaderMap,
    Query(q): Query<ReadQuery>,
) -> Response {
    if !authorized(&agent, &headers) {
        return refuse(StatusCode::UNAUTHORIZED, "missing or wrong transfer token");
    }
    if let Some(block_size) = q.digests {
        if block_size == 0 || block_size > MAX_RANGE {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("digests block size must be 1..={MAX_RANGE}"),
            );
        }
        return match tokio::task::spawn_blocking(move || digests(&agent, block_size)).await {
            Ok(Ok(list)) => axum::Json(list).into_response(),
            Ok(Err(e)) => refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading the disk failed: {e}"),
            ),
            Err(e) => refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("digest task failed: {e}"),
            ),
        };
    }
    let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return refuse(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "send a Range header (bytes=START-END)",
        );
    };
    let (start, end) = match parse_range(range, agent.size) {
        Ok(r) => r,
        Err(e) => return refuse(StatusCode::RANGE_NOT_SATISFIABLE, e),
    };
    let size = agent.size;
    let data = tokio::task::spawn_blocking(move || read_range(&agent.file, start, end + 1)).await;
    match data {
        Ok(Ok(buf)) => Response::builder()
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"))
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(Body::from(buf))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
        Ok(Err(e)) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading the disk failed: {e}"),
        ),
        Err(e) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("read task failed: {e}"),
        ),
    }
}

/// Bytes [start, end) of `file`, read into a buffer that is not zeroed
/// first (every byte of it is read over).
fn read_range(file: &File, start: u64, end: u64) -> std::io::Result<Vec<u8>> {
    let len = usize::try_from(end - start).unwrap_or(0);
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        let at = start + buf.len() as u64;
        if rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buf), at)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    // The allocation may hold more than asked for, and so may the reads.
    buf.truncate(len);
    Ok(buf)
}

/// Whether [start, end) holds no data (a hole reads as zeros).
fn is_hole(file: &File, start: u64, end: u64) -> bool {
    match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(start)) {
        Ok(next_data) => next_data >= end,
        // ENXIO: no data at or after `start`.
        Err(e) => e == rustix::io::Errno::NXIO,
    }
}

/// Every block's digest, hashed on as many threads as the machine has
/// cores (at most 8), each over a contiguous part of the disk: in a
/// verification before a cutover this is what the RTO waits on, and
/// SHA-256 is what bounds it.
fn digests(agent: &Agent, block_size: u64) -> std::io::Result<Vec<String>> {
    let blocks = agent.size.div_ceil(block_size);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8)) as u64;
    let per_thread = blocks.div_ceil(threads).max(1);
    let full_zero = zero_block_digest(usize::try_from(block_size).unwrap_or(0));
    let hash = |first: u64| -> std::io::Result<Vec<String>> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        for i in first..(first + per_thread).min(blocks) {
            let start = i * block_size;
            let end = (start + block_size).min(agent.size);
            let len = usize::try_from(end - start).unwrap_or(0);
            if is_hole(&agent.file, start, end) {
                out.push(if end - start == block_size {
                    full_zero.clone()
                } else {
                    zero_block_digest(len)
                });
                continue;
            }
            buf.resize(len, 0);
            agent.file.read_exact_at(&mut buf, start)?;
            out.push(block_digest(&[&buf]));
        }
        Ok(out)
    };
    let parts = std::thread::scope(|scope| {
        let hash = &hash;
        let workers: Vec<_> = (0..blocks)
            .step_by(per_thread as usize)
            .map(|first| scope.spawn(move || hash(first)))
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("a digest thread panicked")))
            })
            .collect::<std::io::Result<Vec<_>>>()
    })?;
    Ok(parts.concat())
}

async fn write(State(agent): State<Arc<Agent>>, headers: HeaderMap, body: Body) -> Response {
    if !authorized(&agent, &headers) {
        return refuse(StatusCode::UNAUTHORIZED, "missing or wrong transfer token");
    }
    if !agent.config.writable {
        return refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "this endpoint exports a disk; it accepts no writes",
        );
    }
    let Some(range) = headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
    else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "send a Content-Range header (bytes START-END/SIZE)",
        );
    };
    let parsed = range
        .strip_prefix("bytes ")
        .and_then(|r| r.split_once('/'))
        .ok_or_else(|| format!("content range '{range}' must look like bytes START-END/SIZE"))
        .and_then(|(span, total)| {
            if total != agent.size.to_string() {
                return Err(format!("this disk is {} bytes, not {total}", agent.size));
            }
            parse_range(&format!("bytes={span}"), agent.size)
        });
    let (start, end) = match parsed {
        Ok(r) => r,
        Err(e) => return refuse(StatusCode::RANGE_NOT_SATISFIABLE, e),
    };
    // The body's parts are written as they arrived, never joined: a
    // block passes through the agent's memory once.
    let block = match Block::receive(body.into_data_stream(), end - start + 1).await {
        Ok(block) => block,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("{e} ({range})")),
    };
    let written = tokio::task::spawn_blocking(move || {
        // Writing zeros onto a hole would only allocate it.
        if block.is_zero() && is_hole(&agent.file, start, end + 1) {
            return Ok(());
        }
        block.write_at(&agent.file, start)
    })
    .await;
    match written {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("writing the disk failed: {e}"),
        ),
        Err(e) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("write task failed: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::{Agent, AgentConfig, digests, parse_range};
    use crate::digest::block_digest;

    /// Hashed on several threads, the digests are still every block's in
    /// order: those of the bytes read back one block at a time, a hole
    /// and a short last block included.
    #[test]
    fn digests_are_every_blocks_in_order() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("disk.raw");
        let file = std::fs::File::create(&path).expect("create");
        let (block, size) = (1000u64, 10_500u64);
        file.set_len(size).expect("len");
        for b in [0u64, 1, 2, 3, 7, 8, 10] {
            let data: Vec<u8> = (0..block).map(|i| (i * 7 + b * 13) as u8).collect();
            let len = block.min(size - b * block) as usize;
            file.write_all_at(&data[..len], b * block).expect("write");
        }
        let agent = Agent {
            file: std::fs::File::open(&path).expect("open"),
            size,
            config: AgentConfig {
                path: path.clone(),
                token: "t".into(),
                writable: false,
            },
        };
        let bytes = std::fs::read(&path).expect("read");
        let expected: Vec<String> = bytes
            .chunks(block as usize)
            .map(|chunk| block_digest(&[chunk]))
            .collect();
        assert_eq!(expected.len(), 11);
        assert_eq!(digests(&agent, block).expect("digests"), expected);
    }

    #[test]
    fn ranges_are_checked_against_the_disk() {
        assert_eq!(parse_range("bytes=0-99", 100), Ok((0, 99)));
        assert!(parse_range("bytes=0-100", 100).is_err());
        assert!(parse_range("bytes=5-4", 100).is_err());
        assert!(parse_range("items=0-1", 100).is_err());
        assert!(parse_range(&format!("bytes=0-{}", super::MAX_RANGE), u64::MAX).is_err());
    }
}

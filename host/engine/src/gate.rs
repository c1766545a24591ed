//! Health gates: what must hold of a recovered workload before the
//! workloads that depend on it start. The platform must report it running
//! (the only check of `powered_on`, and the first of every gate); a `tcp`
//! gate then needs one of the addresses its `materialize` reported to
//! accept a connection on the port, an `http` gate a `GET` of the path on
//! one of them to answer the expected status. The host probes from where it
//! runs, so it needs a route to the recovered network (in a drill, to the
//! isolated network — or use `powered_on` there).
//!
//! A gate is polled until it passes or its timeout (counted from the gate's
//! start, kept in its persisted operation so a resumed run keeps the same
//! deadline) runs out; the failure names the check and the last answer.
//! Link-local addresses (where clouds serve instance metadata) and
//! unspecified, multicast or broadcast ones are never probed: a plugin
//! cannot point the host's probes there.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rebound_domain::Span;
use rebound_domain::plan::HealthGate;

/// The deadline of a workload without a gate: powered on within this.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The longest a single connection attempt may take.
const ATTEMPT: Duration = Duration::from_secs(2);

/// How long the gate may take to pass.
pub(crate) fn timeout(gate: Option<&HealthGate>) -> Duration {
    match gate {
        None => DEFAULT_TIMEOUT,
        Some(
            HealthGate::PoweredOn { timeout }
            | HealthGate::Tcp { timeout, .. }
            | HealthGate::Http { timeout, .. },
        ) => timeout.0,
    }
}

/// The check, as a person reads it: `tcp :5432`, `http :8080/healthz → 200`.
pub(crate) fn describe(gate: Option<&HealthGate>) -> String {
    match gate {
        None => format!("powered on (default, within {})", Span(DEFAULT_TIMEOUT)),
        Some(HealthGate::PoweredOn { .. }) => "powered on".into(),
        Some(HealthGate::Tcp { port, .. }) => format!("tcp :{port}"),
        Some(HealthGate::Http {
            port,
            path,
            expect_status,
            ..
        }) => format!("http :{port}{path} → {expect_status}"),
    }
}

/// Probe the workload's service once on each address until one passes:
/// `Ok` with what answered, `Err` with the last reason none did. A gate
/// without a probe (`powered_on`) passes at once.
pub(crate) async fn probe(
    gate: Option<&HealthGate>,
    addresses: &[String],
    remaining: Duration,
) -> Result<String, String> {
    let (port, http) = match gate {
        None | Some(HealthGate::PoweredOn { .. }) => return Ok("powered on".into()),
        Some(HealthGate::Tcp { port, .. }) => (*port, None),
        Some(HealthGate::Http {
            port,
            path,
            expect_status,
            ..
        }) => (*port, Some((path.as_str(), *expect_status))),
    };
    if addresses.is_empty() {
        return Err(
            "the platform reported no address for the workload; map its network \
                    with keep_addresses, or use check: powered_on"
                .into(),
        );
    }
    let limit = remaining.clamp(Duration::from_millis(100), ATTEMPT);
    let mut last = String::new();
    for address in addresses {
        let target = match resolve(address, port).await {
            Ok(target) => target,
            Err(reason) => {
                last = reason;
                continue;
            }
        };
        let answer = match http {
            None => connect(target, limit).await,
            Some((path, expect)) => get(target, path, expect, limit).await,
        };
        match answer {
            Ok(what) => return Ok(what),
            Err(reason) => last = reason,
        }
    }
    Err(last)
}

/// The socket address of `address` (an IP, with or without a prefix
/// length, or a host name) and `port`, unless it is one never probed.
async fn resolve(address: &str, port: u16) -> Result<SocketAddr, String> {
    let host = address.split('/').next().unwrap_or(address);
    let ip = match host.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("{host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host}: no address"))?
            .ip(),
    };
    if !probeable(ip) {
        return Err(format!(
            "{ip} is link-local, unspecified, multicast or broadcast: never probed"
        ));
    }
    Ok(SocketAddr::new(ip, port))
}

pub(crate) fn probeable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_link_local() || v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            let link_local = (v6.segments()[0] & 0xffc0) == 0xfe80;
            // fd00:ec2::254, the metadata service's IPv6 address on AWS.
            let metadata = v6.segments() == [0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x254];
            !(link_local || metadata || v6.is_unspecified() || v6.is_multicast())
        }
    }
}

async fn connect(target: SocketAddr, limit: Duration) -> Result<String, String> {
    match tokio::time::timeout(limit, tokio::net::TcpStream::connect(target)).await {
        Ok(Ok(_)) => Ok(format!("{target} accepted a connection")),
        Ok(Err(e)) => Err(format!("{target}: {e}")),
        Err(_) => Err(format!("{target}: no answer within {limit:?}")),
    }
}

async fn get(
    target: SocketAddr,
    path: &str,
    expect: u16,
    limit: Duration,
) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .timeout(limit)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let url = format!("http://{target}{path}");
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status().as_u16();
    if status == expect {
        Ok(format!("GET {url} answered {status}"))
    } else {
        Err(format!("GET {url} answered {status}, not {expect}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_and_link_local_are_never_probed() {
        for ip in [
            "169.254.169.254",
            "fe80::1",
            "fd00:ec2::254",
            "0.0.0.0",
            "224.0.0.1",
        ] {
            assert!(!probeable(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["10.0.0.5", "127.0.0.1", "192.168.1.2", "2001:db8::1"] {
            assert!(probeable(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[tokio::test]
    async fn a_gate_without_addresses_says_what_to_change() {
        let gate = HealthGate::Tcp {
            port: 5432,
            timeout: Span(Duration::from_secs(1)),
        };
        let e = probe(Some(&gate), &[], Duration::from_secs(1))
            .await
            .expect_err("no address");
        assert!(e.contains("keep_addresses"), "{e}");
    }

    #[tokio::test]
    async fn tcp_and_http_probes_see_what_answers() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let timeout = Span(Duration::from_secs(1));
        let addresses = vec!["127.0.0.1".to_owned()];
        let tcp = HealthGate::Tcp { port, timeout };
        let ok = probe(Some(&tcp), &addresses, ATTEMPT).await.expect("tcp");
        assert!(ok.contains("accepted"), "{ok}");
        let http = |expect_status| HealthGate::Http {
            port,
            path: "/healthz".into(),
            expect_status,
            timeout,
        };
        let e = probe(Some(&http(200)), &addresses, ATTEMPT)
            .await
            .expect_err("503 is not 200");
        assert!(e.contains("answered 503, not 200"), "{e}");
        probe(Some(&http(503)), &addresses, ATTEMPT)
            .await
            .expect("503 expected");
        // A port nothing listens on any more: refused.
        let gone = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let closed = HealthGate::Tcp {
            port: gone.local_addr().expect("addr").port(),
            timeout,
        };
        drop(gone);
        let e = probe(Some(&closed), &addresses, ATTEMPT)
            .await
            .expect_err("closed port");
        assert!(e.contains("127.0.0.1:"), "{e}");
    }
}

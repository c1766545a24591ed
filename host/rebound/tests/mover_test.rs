//! `rebound mover`: the agent binary serves a disk image behind its token,
//! and refuses to start without one; with a certificate it serves HTTPS,
//! which the data mover reaches trusting the certificate's CA.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

#[test]
fn the_mover_agent_serves_ranges_behind_its_token() {
    let dir = tempfile::tempdir().expect("tmp");
    let disk = dir.path().join("disk.raw");
    std::fs::write(&disk, b"0123456789abcdef").expect("disk");
    let bin = env!("CARGO_BIN_EXE_rebound");

    let refused = Command::new(bin)
        .args(["mover", "--disk"])
        .arg(&disk)
        .env_remove("REBOUND_MOVER_TOKEN")
        .output()
        .expect("run");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("set REBOUND_MOVER_TOKEN"));

    let token = "a-transfer-token-of-some-length";
    let mut agent = Command::new(bin)
        .args(["mover", "--disk"])
        .arg(&disk)
        .env("REBOUND_MOVER_TOKEN", token)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let addr = served_at(&mut agent, "http");
    let get = |auth: &str| {
        let mut conn = TcpStream::connect(&addr).expect("connect");
        write!(
            conn,
            "GET /disk HTTP/1.1\r\nHost: x\r\nRange: bytes=4-7\r\nAuthorization: Bearer {auth}\r\nConnection: close\r\n\r\n"
        )
        .expect("send");
        let mut response = String::new();
        conn.read_to_string(&mut response).expect("read");
        response
    };
    let ok = get(token);
    let wrong = get("wrong");
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(ok.starts_with("HTTP/1.1 206"), "{ok}");
    assert!(ok.ends_with("4567"), "{ok}");
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
}

/// The address `rebound mover` prints it serves on (after `scheme://`).
fn served_at(agent: &mut std::process::Child, scheme: &str) -> String {
    let stderr = agent.stderr.take().expect("stderr");
    BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            l.split(&format!("{scheme}://"))
                .nth(1)
                .map(|a| a.trim_end_matches("/disk").to_owned())
        })
        .expect("address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mover_agent_serves_https_to_a_mover_that_trusts_its_ca() {
    let dir = tempfile::tempdir().expect("tmp");
    let disk = dir.path().join("disk.raw");
    std::fs::write(&disk, b"0123456789abcdef").expect("disk");
    // A CA and a certificate for 127.0.0.1, as the lab's sites have.
    let tls = rebound_lab::tls::site_tls().expect("certificates");
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, &tls.cert_pem).expect("cert");
    std::fs::write(&key_file, &tls.key_pem).expect("key");
    let bin = env!("CARGO_BIN_EXE_rebound");

    // A certificate without its key is refused before anything is served.
    let half = Command::new(bin)
        .args(["mover", "--disk"])
        .arg(&disk)
        .arg("--tls-cert")
        .arg(&cert_file)
        .env("REBOUND_MOVER_TOKEN", "a-transfer-token-of-some-length")
        .output()
        .expect("run");
    assert!(!half.status.success());
    assert!(
        String::from_utf8_lossy(&half.stderr).contains("--tls-key"),
        "{}",
        String::from_utf8_lossy(&half.stderr)
    );

    let token = "a-transfer-token-of-some-length";
    let mut agent = Command::new(bin)
        .args(["mover", "--disk"])
        .arg(&disk)
        .arg("--tls-cert")
        .arg(&cert_file)
        .arg("--tls-key")
        .arg(&key_file)
        .env("REBOUND_MOVER_TOKEN", token)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let addr = served_at(&mut agent, "https");
    let endpoint = |ca_pem: Option<String>| rebound_datamover::Endpoint {
        ca_pem,
        ..rebound_datamover::Endpoint::agent(format!("https://{addr}/disk"), token, 16)
    };
    let trusted = rebound_datamover::read_range(&endpoint(Some(tls.ca_pem.clone())), 4, 8).await;
    let untrusted = rebound_datamover::read_range(&endpoint(None), 4, 8).await;
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(trusted.expect("read over HTTPS").as_ref(), b"4567");
    assert!(
        untrusted.is_err(),
        "a mover without the CA does not connect"
    );
}

//! `rebound mover`: the agent binary serves a disk image behind its token,
//! and refuses to start without one.

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
    let stderr = agent.stderr.take().expect("stderr");
    let addr = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            l.split("http://")
                .nth(1)
                .map(|a| a.trim_end_matches("/disk").to_owned())
        })
        .expect("address");
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

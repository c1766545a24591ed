//! One plain HTTP/1.1 exchange with a host under test, for tests that
//! check the wire as a client sees it.

use std::io::{Read, Write};
use std::net::TcpStream;

/// One HTTP/1.1 exchange; a non-empty `token` is sent as a bearer token
/// and a non-empty `body` as JSON.
pub fn http(addr: &str, method: &str, path: &str, token: &str, body: &str) -> String {
    let mut conn = TcpStream::connect(addr).expect("connect");
    let auth = if token.is_empty() {
        String::new()
    } else {
        format!("Authorization: Bearer {token}\r\n")
    };
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut response = String::new();
    conn.read_to_string(&mut response).expect("read");
    response
}

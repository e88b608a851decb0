//! Oversized requests are refused before they are read.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::json;

use crate::support::Server;

fn raw_request(s: &Server, head: &str, body: &[u8]) -> String {
    let addr = s.base.trim_start_matches("http://");
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    conn.write_all(head.as_bytes()).unwrap();
    let _ = conn.write_all(body);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&out).contains("}}") {
                    break;
                }
            }
            Err(e) => panic!("no answer before the timeout: {e}; got so far: {}", String::from_utf8_lossy(&out)),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_huge_declared_body_is_refused_without_being_read() {
    let s = Server::start();
    let ws = s.default_ws();
    // Declares 1 GB and sends none of it: the answer must come anyway.
    let head = format!(
        "POST /api/v1/workspaces/{ws}/secrets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n",
        s.admin
    );
    let answer = raw_request(&s, &head, b"");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
}

#[test]
fn a_chunked_body_over_the_limit_is_cut_off() {
    let s = Server::start();
    let ws = s.default_ws();
    let head = format!(
        "POST /api/v1/workspaces/{ws}/secrets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        s.admin
    );
    let mut body = Vec::new();
    let chunk = vec![b'a'; 64 * 1024];
    body.extend_from_slice(b"b\r\n{\"value\": \"\r\n");
    for _ in 0..5 {
        body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(&chunk);
        body.extend_from_slice(b"\r\n");
    }
    let answer = raw_request(&s, &head, &body);
    assert!(answer.starts_with("HTTP/1.1 413"), "{}", &answer[..answer.len().min(300)]);
    assert!(answer.contains("payload_too_large"));
    assert_eq!(s.get(&format!("/api/v1/workspaces/{ws}/secrets")).body["items"], json!([]));
}

#[test]
fn the_largest_allowed_value_fits() {
    let s = Server::start();
    let ws = s.default_ws();
    let a = s.create_agent(&ws, "bot");
    // 65,536 encoded bytes: the JSON string's quotes count.
    let big = "v".repeat(65_534);
    s.create_secret(&ws, "big", json!(big), &[&a]);
    let (_, key) = s.create_key(&ws, json!("all"));
    assert_eq!(s.read(&key, &a, "big").expect(200)["value"].as_str().unwrap().len(), 65_534);
    let too_big = "v".repeat(65_535);
    s.post(&format!("/api/v1/workspaces/{ws}/secrets"), json!({"name": "bigger", "value": too_big}))
        .expect_error(413, "value_too_large");
}

//! Oversized requests are refused before they are read; function invocations are shared fairly.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{Options, Server, define_with, invoke, with_admin};

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

/// Function invocations: one agent, then one workspace, at its share is refused at once, and
/// another workspace's functions keep running.
#[test]
fn one_agent_or_workspace_cannot_take_every_function_slot() {
    let (s, _tmp) = with_admin(Options {
        extra_env: vec![
            ("AGENTVAULT_SANDBOX", "bwrap".into()),
            ("AGENTVAULT_FUNCTION_MAX_RUNNING", "4".into()),
            ("AGENTVAULT_FUNCTION_MAX_PER_WORKSPACE", "3".into()),
            ("AGENTVAULT_FUNCTION_MAX_PER_AGENT", "2".into()),
        ],
        ..Options::default()
    });
    let ws = s.default_ws();
    let ws2 = s.post("/api/v1/workspaces", json!({"name": "acme"})).expect(201)["id"].as_str().unwrap().to_owned();
    let busy = s.create_agent(&ws, "Busy bot");
    let sibling = s.create_agent(&ws, "Sibling bot");
    let other = s.create_agent(&ws2, "Other bot");
    let code = "import time\ndef nap(conv, seconds: float):\n    time.sleep(seconds)\n    return 'slept'\n";
    for (w, a) in [(&ws, &busy), (&ws, &sibling), (&ws2, &other)] {
        let body = json!({"name": "nap", "description": "sleeps", "code": code, "timeout_ms": 30_000,
            "parameters": [{"name": "seconds", "type": "number"}]});
        define_with(&s, w, a, body);
    }
    let (_, key) = s.create_key(&ws, json!([busy]));
    let nap = |token: Option<&str>, w: &str, a: &str, seconds: f64| {
        invoke(&s, token, w, a, "nap", json!({"args": {"seconds": seconds}}))
    };
    // A quick call, once the sleepers have had time to arrive (their place is taken before
    // their workers start), and how long its answer took.
    let quick = |token: Option<&str>, w: &str, a: &str| {
        std::thread::sleep(Duration::from_secs(2));
        let started = Instant::now();
        let r = nap(token, w, a, 0.0);
        (r, started.elapsed())
    };
    std::thread::scope(|scope| {
        let mut sleepers: Vec<_> = (0..2).map(|_| scope.spawn(|| nap(Some(&key), &ws, &busy, 10.0))).collect();
        let (r, took) = quick(Some(&key), &ws, &busy);
        r.expect_error(429, "too_many_invocations");
        assert!(r.body["error"]["message"].as_str().unwrap().contains("--function-max-per-agent"), "{}", r.text);
        assert_eq!(r.header("retry-after"), Some("1"));
        assert!(took < Duration::from_secs(1), "refusing took {took:?}");

        // The sibling agent has room, until the workspace's share is full.
        sleepers.push(scope.spawn(|| nap(None, &ws, &sibling, 10.0)));
        let (r, took) = quick(None, &ws, &sibling);
        r.expect_error(429, "too_many_invocations");
        assert!(r.body["error"]["message"].as_str().unwrap().contains("--function-max-per-workspace"), "{}", r.text);
        assert!(took < Duration::from_secs(1), "refusing took {took:?}");

        // Another workspace's function answers while all of them still sleep.
        let (out, _) = quick(None, &ws2, &other);
        assert_eq!(out.expect(200)["result"], "slept", "{}", out.text);
        assert!(sleepers.iter().all(|t| !t.is_finished()), "the sleepers ended before the other workspace's call");
        for t in sleepers {
            let r = t.join().unwrap();
            assert_eq!(r.expect(200)["result"], "slept", "{}", r.text);
        }
    });
}

#[test]
fn function_shares_that_could_take_every_slot_are_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (vec![("AGENTVAULT_FUNCTION_MAX_PER_WORKSPACE", "32")], "must be less than --function-max-running"),
        (vec![("AGENTVAULT_FUNCTION_MAX_RUNNING", "8"), ("AGENTVAULT_FUNCTION_MAX_PER_WORKSPACE", "8")], "less than"),
        (vec![("AGENTVAULT_FUNCTION_MAX_PER_AGENT", "20")], "must not be more than --function-max-per-workspace"),
        (vec![("AGENTVAULT_FUNCTION_MAX_PER_AGENT", "0")], "between 1 and 10000"),
    ];
    for (i, (env, message)) in cases.into_iter().enumerate() {
        let extra_env = env.iter().map(|(k, v)| (*k, v.to_string())).collect();
        let dir = tmp.path().join(format!("data{i}"));
        let err = Server::try_start_in(&dir, "unused", Options { extra_env, ..Options::default() })
            .err()
            .unwrap_or_else(|| panic!("{env:?}: the server started"));
        assert!(err.contains(message), "{env:?}: {err}");
    }
    // A smaller server-wide limit alone brings the shares down with it.
    let extra_env = vec![("AGENTVAULT_FUNCTION_MAX_RUNNING", "4".to_owned())];
    let s = Server::start_in(&tmp.path().join("ok"), "unused", Options { extra_env, ..Options::default() });
    assert!(s.stderr().contains("max_running=4 max_per_workspace=2 max_per_agent=2"), "{}", s.stderr());
}

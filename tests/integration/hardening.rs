//! Attacks on the server itself: open redirects, slow clients, key material left on disk.

use crate::support::{DataDir, Options, Server, command, contains_bytes, files_under};

#[test]
fn sign_in_redirects_only_to_paths_of_this_console() {
    let s = Server::start();
    let next_of = |query: &str| {
        let r = s.request("GET", &format!("/login?next={query}"), None, None);
        assert_eq!(r.status, 200, "{}", r.text);
        let at = r.text.find("data-next=\"").expect("the sign-in form carries next") + "data-next=\"".len();
        r.text[at..].split('"').next().unwrap().to_owned()
    };
    // Browsers drop tabs and newlines from URLs and read a backslash as a slash: each of these
    // would have sent the person to evil.example after signing in.
    for attack in [
        "/%09/evil.example",
        "/%0A/evil.example",
        "/%0D/evil.example",
        "/%5Cevil.example",
        "/%5C/evil.example",
        "//evil.example",
        "%2F%2Fevil.example",
        "/%20/evil.example",
        "https://evil.example/",
        "evil.example",
    ] {
        assert_eq!(next_of(attack), "/", "next={attack} must not survive");
    }
    assert_eq!(next_of("/workspaces"), "/workspaces");
    assert_eq!(next_of("%2Fworkspaces%2Fws_1%2Fsecrets"), "/workspaces/ws_1/secrets");
}

/// The sealed bytes (wrapped data key, ciphertext) of every version of a secret, read from the
/// database with Python's sqlite3 (a second reader beside the running server, as an attacker with
/// a copy of the data directory would).
fn sealed_bytes(dir: &std::path::Path, name: &str) -> Vec<Vec<u8>> {
    let script = "import sqlite3, sys\n\
        c = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)\n\
        for dek, ct in c.execute('SELECT v.wrapped_dek, v.ciphertext FROM secret_versions v JOIN secrets s ON s.id = v.secret_id WHERE s.name = ?', (sys.argv[2],)):\n\
        \x20   print(dek.hex(), ct.hex())\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(dir.join("agentvault.db"))
        .arg(name)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let hex = |h: &str| (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap()).collect();
    String::from_utf8(out.stdout).unwrap().split_whitespace().map(hex).collect()
}

/// The files of the data directory that contain any of `needles`.
fn files_holding(dir: &std::path::Path, needles: &[Vec<u8>]) -> Vec<String> {
    files_under(dir)
        .into_iter()
        .filter(|f| {
            let bytes = std::fs::read(f).unwrap_or_default();
            needles.iter().any(|n| contains_bytes(&bytes, n))
        })
        .map(|f| f.display().to_string())
        .collect()
}

#[test]
fn deleted_and_retired_key_material_leaves_the_data_directory() {
    if crate::support::backend::sqlite_only("the database files on disk") {
        return;
    }
    use serde_json::json;
    let data = DataDir::new();
    let dir = &data.path;
    let mut s = data.start();
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "bot");
    s.create_secret(&ws, "doomed", json!("sk_live_doomed_value"), &[&agent]);
    s.patch(&format!("/api/v1/workspaces/{ws}/secrets/doomed"), json!({"value": "sk_live_doomed_v2"})).expect(200);
    s.create_secret(&ws, "kept", json!("sk_live_kept_value"), &[&agent]);
    let doomed = sealed_bytes(dir, "doomed");
    assert_eq!(doomed.len(), 4, "two versions, each a wrapped key and a ciphertext");
    assert!(!files_holding(dir, &doomed).is_empty(), "the sealed bytes are on disk before the delete");

    s.delete(&format!("/api/v1/workspaces/{ws}/secrets/doomed")).expect(204);
    // While the server runs, within seconds: no file of the data directory (the WAL included)
    // still holds the deleted versions.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let left = files_holding(dir, &doomed);
        if left.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "deleted key material is still in {left:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // Rotating the root key re-wraps every data key: the keys wrapped by the retired root key go.
    let kept = sealed_bytes(dir, "kept");
    let old_wrapped = vec![kept[0].clone()];
    s.stop();
    let out = command().args(["rotate-root-key", "--data-dir"]).arg(dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sealed_bytes(dir, "kept")[1], kept[1], "the ciphertext is untouched");
    let left = files_holding(dir, &old_wrapped);
    assert!(left.is_empty(), "data keys wrapped by the retired root key are still in {left:?}");
    let s = data.start();
    let (_, key) = s.create_key(&ws, json!("all"));
    assert_eq!(s.read(&key, &agent, "kept").expect(200)["value"], "sk_live_kept_value");
}

#[test]
fn slow_and_idle_clients_are_cut_off_and_a_full_server_answers_at_once() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    let data = DataDir::new();
    let s = data.start_with(Options {
        extra_env: vec![
            ("AGENTVAULT_HEADER_TIMEOUT", "2s".into()),
            ("AGENTVAULT_BODY_TIMEOUT", "2s".into()),
            ("AGENTVAULT_MAX_CONNECTIONS", "20".into()),
        ],
        ..data.opts()
    });
    let addr = s.base.trim_start_matches("http://").to_owned();
    let connect = || {
        let c = TcpStream::connect(&addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c
    };
    // Everything the server sends until it closes the connection (or 10 s pass).
    let read_all = |c: &mut TcpStream| {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    };

    // The soft open-file limit was raised to the hard one.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", s.pid())).unwrap();
    let files: Vec<&str> =
        limits.lines().find(|l| l.starts_with("Max open files")).unwrap().split_whitespace().collect();
    assert_eq!(files[3], files[4], "soft and hard open-file limits: {limits}");

    // A half-sent request is not waited for: the connection is closed after the header timeout.
    let mut slow = connect();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = Instant::now();
    let answer = read_all(&mut slow);
    assert!(!answer.contains("200"), "a half-sent request was served: {answer}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1500) && waited < Duration::from_secs(8), "closed after {waited:?}");

    // An idle keep-alive connection is closed, too.
    let mut idle = connect();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    let rest = read_all(&mut idle);
    assert!(rest.is_empty() && started.elapsed() < Duration::from_secs(8), "idle connection kept: {rest}");

    // HTTP/2 (which has no such timeouts here) is not spoken: its preface is refused at once.
    let mut h2 = connect();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    let started = Instant::now();
    let answer = read_all(&mut h2);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 4"), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "the preface was held for {:?}", started.elapsed());

    // A body that trickles in gets a 408 and the connection closed.
    let mut trickle = connect();
    trickle
        .write_all(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"em")
        .unwrap();
    let started = Instant::now();
    let answer = read_all(&mut trickle);
    assert!(answer.starts_with("HTTP/1.1 408") && answer.contains("request_timeout"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(8), "answered after {:?}", started.elapsed());

    // Past the cap a new connection is answered 503 at once and closed, never left hanging.
    let mut held: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut c = connect();
            c.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let mut extra = connect();
    let refused = read_all(&mut extra);
    assert!(refused.starts_with("HTTP/1.1 503") && refused.contains("too_many_connections"), "{refused}");
    assert!(started.elapsed() < Duration::from_secs(2), "the refusal took {:?}", started.elapsed());
    // Once the slow connections time out, the server serves again.
    for c in &mut held {
        assert!(!read_all(c).contains("200"));
    }
    let health = s.request("GET", "/healthz", None, None);
    assert_eq!(health.status, 200, "{}", health.text);
}

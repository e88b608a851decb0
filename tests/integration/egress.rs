//! A function's network: its worker has a network namespace of its own whose only way out is
//! agentvault's egress proxy. Every destination here is on this machine; refused ones are
//! refused by the proxy before any packet is sent (asserted on the proxy's answer).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::support::{DataDir, Options, Server, define, invoke, with_admin};

/// A plain-HTTP server on 127.0.0.1 that answers every request with what it saw, and keeps the
/// request heads it received.
struct Upstream {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let log = log.clone();
                std::thread::spawn(move || serve_http(conn, &log));
            }
        });
        Upstream { port, seen }
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// Answers requests on one connection (keep-alive) until the client closes it.
fn serve_http(conn: std::net::TcpStream, log: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut head = String::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        log.lock().unwrap().push(head.clone());
        let first = head.lines().next().unwrap_or_default().to_owned();
        let text = format!("upstream saw: {first}");
        let resp =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{text}", text.len());
        if out.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

fn sandboxed_with(env: Vec<(&'static str, String)>) -> (Server, DataDir) {
    let mut extra = vec![("AGENTVAULT_SANDBOX", "bwrap".to_owned())];
    extra.extend(env);
    with_admin(Options { extra_env: extra, ..Options::default() })
}

fn port_of(s: &Server) -> u16 {
    s.base.rsplit(':').next().unwrap().trim_end_matches('/').parse().unwrap()
}

/// Tries each URL with `requests` and reports what happened, without raising.
const PROBE: &str = r#"
import json, requests

def probe(conv, urls):
    found = {}
    for url in json.loads(urls):
        try:
            r = requests.get(url, timeout=5)
            found[url] = {"status": r.status_code, "text": r.text[:300], "reason": r.reason}
        except Exception as e:
            found[url] = {"error": type(e).__name__, "text": str(e)[:400]}
    return found
"#;

fn probe(s: &Server, ws: &str, agent: &str, urls: &[String]) -> Value {
    probe_out(s, ws, agent, urls)["result"].clone()
}

/// The whole answer of the probe: result, logs, ...
fn probe_out(s: &Server, ws: &str, agent: &str, urls: &[String]) -> Value {
    let body = json!({"args": {"urls": serde_json::to_string(urls).unwrap()}, "conversation": {"id": "call-egress"}});
    let out = invoke(s, None, ws, agent, "probe", body).expect(200).clone();
    assert!(out["error"].is_null(), "{out}");
    assert_eq!(out["sandboxed"], true);
    out
}

fn define_probe(s: &Server, ws: &str, agent: &str) {
    define(s, ws, agent, "probe", json!([{"name": "urls", "type": "string"}]), PROBE);
}

/// The proxy's refusal as `requests` reports it: a 403 answer (plain HTTP) or a ProxyError
/// whose message carries the proxy's status line (a CONNECT for HTTPS).
fn assert_refused(found: &Value, url: &str, why: &str) {
    let f = &found[url];
    let refused = (f["status"] == 403 && f["text"].as_str().unwrap().contains("agentvault egress refused"))
        || (f["error"] == "ProxyError" && f["text"].as_str().unwrap().contains("agentvault egress refused"));
    assert!(refused, "{url} was not refused by the proxy: {f}");
    assert!(f.to_string().contains(why), "{url}: expected '{why}' in {f}");
}

#[test]
fn a_function_reaches_only_what_the_egress_proxy_allows() {
    let up = Upstream::start();
    let (s, _tmp) = sandboxed_with(vec![("AGENTVAULT_EGRESS_ALLOW", format!("127.0.0.1:{}", up.port))]);
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "Network bot");
    define_probe(&s, &ws, &agent);
    let vault = port_of(&s);

    let allowed = format!("http://127.0.0.1:{}/hello?x=1", up.port);
    let urls: Vec<String> = vec![
        allowed.clone(),
        format!("http://127.0.0.1:{vault}/healthz"),
        format!("https://127.0.0.1:{vault}/healthz"),
        "http://127.0.0.1/".into(),
        "https://127.0.0.1/".into(),
        "http://169.254.169.254/latest/meta-data/".into(),
        "http://10.1.2.3/".into(),
        "https://192.168.0.1/".into(),
        "http://100.64.0.1/".into(),
        "http://[::1]/".into(),
        "http://[fd00::1]/".into(),
        // DNS rebinding: a name that resolves to a loopback address is refused as one.
        "http://localhost/".into(),
        format!("http://localhost:{}/", up.port),
        // Another port than 80 and 443 on a public address.
        "http://93.184.216.34:8080/".into(),
        // Other spellings of the metadata and loopback addresses.
        "http://2852039166/".into(),
        "http://[::ffff:169.254.169.254]/".into(),
        "http://0x7f.0.0.1/".into(),
    ];
    let out = probe_out(&s, &ws, &agent, &urls);
    let found = out["result"].clone();
    assert_eq!(found[&allowed]["status"], 200, "{found}");
    assert_eq!(found[&allowed]["text"], "upstream saw: GET /hello?x=1 HTTP/1.1");
    assert_refused(&found, &format!("http://127.0.0.1:{vault}/healthz"), "is agentvault itself");
    assert_refused(&found, &format!("https://127.0.0.1:{vault}/healthz"), "is agentvault itself");
    assert_refused(&found, "http://127.0.0.1/", "127.0.0.1 is a loopback address");
    assert_refused(&found, "https://127.0.0.1/", "127.0.0.1 is a loopback address");
    assert_refused(&found, "http://169.254.169.254/latest/meta-data/", "link-local address (cloud metadata");
    assert_refused(&found, "http://10.1.2.3/", "10.1.2.3 is a private address");
    assert_refused(&found, "https://192.168.0.1/", "192.168.0.1 is a private address");
    assert_refused(&found, "http://100.64.0.1/", "carrier-grade NAT");
    assert_refused(&found, "http://[::1]/", "::1 is a loopback address");
    assert_refused(&found, "http://[fd00::1]/", "unique local");
    assert_refused(&found, "http://localhost/", "is a loopback address");
    // The operator opened 127.0.0.1:PORT, not the name localhost.
    assert_refused(&found, &format!("http://localhost:{}/", up.port), "port");
    assert_refused(&found, "http://93.184.216.34:8080/", "port 8080 is closed");
    assert_refused(&found, "http://2852039166/", "169.254.169.254");
    assert_refused(&found, "http://[::ffff:169.254.169.254]/", "link-local");
    assert_refused(&found, "http://0x7f.0.0.1/", "agentvault egress refused");
    // The invocation's logs list the refused connections (what the Test panel shows).
    let logs = out["logs"].as_array().unwrap();
    assert_eq!(logs.len(), urls.len() - 1, "{logs:#?}");
    assert!(logs.iter().all(|l| l["level"] == "warning"));
    assert!(
        logs.iter().any(|l| l["content"]
            == "agentvault egress refused: 169.254.169.254 is a link-local address (cloud metadata lives there)"),
        "{logs:#?}"
    );
    // Only the allowed request reached the upstream; it got the Host it was addressed to.
    let reqs = up.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert!(
        reqs[0].contains(&format!("host: 127.0.0.1:{}", up.port))
            || reqs[0].contains(&format!("Host: 127.0.0.1:{}", up.port))
    );
    assert!(!reqs[0].to_ascii_lowercase().contains("proxy-"), "{}", reqs[0]);

    // Every connection is audited with the agent, function, invocation and conversation.
    let records = s.audit(&ws, "action=egress.connect");
    assert_eq!(records.len(), urls.len(), "{records:#?}");
    let ok: Vec<&Value> = records.iter().filter(|r| r["outcome"] == "success").collect();
    assert_eq!(ok.len(), 1);
    let d = ok[0]["detail"].as_str().unwrap();
    assert!(d.contains("function=probe") && d.contains("conversation=call-egress"), "{d}");
    assert!(d.contains(&format!("host=127.0.0.1 port={}", up.port)), "{d}");
    assert_eq!(ok[0]["agent_id"], agent.as_str());
    assert!(ok[0]["target_id"].as_str().unwrap().starts_with("inv_"));
    assert_eq!(ok[0]["actor"]["type"], "agent", "{}", ok[0]);
    let metadata = records.iter().find(|r| r["detail"].as_str().unwrap().contains("host=169.254.169.254")).unwrap();
    assert_eq!(metadata["outcome"], "denied");
    assert!(metadata["detail"].as_str().unwrap().ends_with("reason=address"), "{metadata}");
    // And counted.
    let metrics = s.get("/metrics").text;
    assert!(metrics.contains("agentvault_egress_connections_total{outcome=\"allowed\"} 1"), "{metrics}");
    assert!(metrics.contains("agentvault_egress_refusals_total{reason=\"address\"}"), "{metrics}");
    assert!(metrics.contains("agentvault_egress_refusals_total{reason=\"agentvault\"} 2"), "{metrics}");
}

/// HTTPS goes through CONNECT: a tunnel the proxy opens only to an allowed destination.
#[test]
fn tunnels_are_opened_only_to_allowed_destinations() {
    let up = Upstream::start();
    let (s, _tmp) = sandboxed_with(vec![("AGENTVAULT_EGRESS_ALLOW", format!("127.0.0.1:{}", up.port))]);
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "Tunnel bot");
    // A plain-HTTP conversation inside a CONNECT tunnel, with the proxy that HTTPS_PROXY names.
    let code = r#"
import http.client, os, urllib.parse

def tunnel(conv, port):
    proxy = urllib.parse.urlsplit(os.environ["HTTPS_PROXY"])
    out = {}
    for target in (port, 443):
        c = http.client.HTTPConnection(proxy.hostname, proxy.port, timeout=5)
        c.set_tunnel("127.0.0.1", target)
        try:
            c.request("GET", "/through-tunnel")
            r = c.getresponse()
            out[str(target)] = [r.status, r.read().decode()]
            # The tunnel stays open for a second request.
            c.request("GET", "/again")
            r = c.getresponse()
            out[str(target)].append(r.read().decode())
        except OSError as e:
            out[str(target)] = ["refused", str(e)]
        finally:
            c.close()
    return out
"#;
    define(&s, &ws, &agent, "tunnel", json!([{"name": "port", "type": "integer"}]), code);
    let out = invoke(&s, None, &ws, &agent, "tunnel", json!({"args": {"port": up.port}})).expect(200).clone();
    assert!(out["error"].is_null(), "{out}");
    let r = &out["result"];
    assert_eq!(
        r[up.port.to_string()],
        json!([200, "upstream saw: GET /through-tunnel HTTP/1.1", "upstream saw: GET /again HTTP/1.1"])
    );
    assert_eq!(r["443"][0], "refused", "{r}");
    assert!(r["443"][1].as_str().unwrap().contains("403"), "{r}");
    assert!(r["443"][1].as_str().unwrap().contains("127.0.0.1 is a loopback address"), "{r}");
}

/// Code that ignores the proxy reaches nothing: the worker's namespace has no route out and
/// shows none of the host's listeners.
#[test]
fn code_that_ignores_the_proxy_reaches_nothing() {
    let up = Upstream::start();
    let (s, _tmp) = sandboxed_with(vec![]);
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "Raw bot");
    let code = r#"
import socket

def raw(conv, vault, upstream):
    out = {}
    for name, addr in (("vault", ("127.0.0.1", vault)), ("upstream", ("127.0.0.1", upstream)),
                       ("metadata", ("169.254.169.254", 80)), ("private", ("10.1.2.3", 80))):
        try:
            socket.create_connection(addr, timeout=2).close()
            out[name] = "connected"
        except OSError as e:
            out[name] = type(e).__name__ + ": " + str(e)
    try:
        socket.getaddrinfo("example.com", 443)
        out["dns"] = "resolved"
    except OSError as e:
        out["dns"] = type(e).__name__
    tcp = open("/proc/net/tcp").read() + open("/proc/net/tcp6").read()
    out["listeners"] = [l.split()[1] for l in tcp.splitlines()[1:] if l.split()[3] == "0A"]
    out["interfaces"] = [n for _, n in socket.if_nameindex()]
    return out
"#;
    define(
        &s,
        &ws,
        &agent,
        "raw",
        json!([{"name": "vault", "type": "integer"}, {"name": "upstream", "type": "integer"}]),
        code,
    );
    let args = json!({"vault": port_of(&s), "upstream": up.port});
    let out = invoke(&s, None, &ws, &agent, "raw", json!({"args": args})).expect(200).clone();
    assert!(out["error"].is_null(), "{out}");
    let r = &out["result"];
    for name in ["vault", "upstream"] {
        assert!(r[name].as_str().unwrap().starts_with("ConnectionRefusedError"), "{name}: {r}");
    }
    for name in ["metadata", "private"] {
        assert!(r[name].as_str().unwrap().contains("unreachable"), "{name}: {r}");
    }
    assert_ne!(r["dns"], "resolved", "{r}");
    assert_eq!(r["interfaces"], json!(["lo"]), "{r}");
    // The only listener is the worker's own relay to the proxy (port 3128 = 0x0C38).
    assert_eq!(r["listeners"], json!(["0100007F:0C38"]), "{r}");
    assert!(up.requests().is_empty());
}

#[test]
fn an_admin_narrows_an_agent_to_an_allowlist_or_no_network() {
    let up = Upstream::start();
    let (s, _tmp) = sandboxed_with(vec![("AGENTVAULT_EGRESS_ALLOW", format!("127.0.0.1:{}", up.port))]);
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "Listed bot");
    define_probe(&s, &ws, &agent);
    let path = format!("/api/v1/workspaces/{ws}/agents/{agent}/egress");
    assert_eq!(*s.get(&path).expect(200), json!({"mode": "default", "hosts": [], "enforced": true}));
    let url = format!("http://127.0.0.1:{}/listed", up.port);

    // On the list (with its port): allowed.
    let set = s.put(&path, json!({"mode": "allowlist", "hosts": [format!("127.0.0.1:{}", up.port), "*.Example.com"]}));
    assert_eq!(
        *set.expect(200),
        json!({"mode": "allowlist", "hosts": [format!("127.0.0.1:{}", up.port), "*.example.com"], "enforced": true})
    );
    let found = probe(&s, &ws, &agent, std::slice::from_ref(&url));
    assert_eq!(found[&url]["status"], 200, "{found}");

    // Not on the list: refused, although the operator opened it.
    s.put(&path, json!({"mode": "allowlist", "hosts": ["api.example.com"]})).expect(200);
    let found = probe(&s, &ws, &agent, &[url.clone(), "https://api.example.org/".into()]);
    assert_refused(&found, &url, "is not on this agent's egress allowlist");
    assert_refused(&found, "https://api.example.org/", "is not on this agent's egress allowlist");

    // No network.
    s.put(&path, json!({"mode": "none"})).expect(200);
    let found = probe(&s, &ws, &agent, std::slice::from_ref(&url));
    assert_refused(&found, &url, "no network access");
    assert_eq!(up.requests().len(), 1);

    // Bad policies are refused and change nothing.
    s.put(&path, json!({"mode": "open"})).expect_error(400, "invalid_input");
    for body in [
        json!({"mode": "allowlist", "hosts": []}),
        json!({"mode": "allowlist", "hosts": ["http://x.com/"]}),
        json!({"mode": "allowlist", "hosts": ["*.com"]}),
        json!({"mode": "default", "hosts": ["x.com"]}),
    ] {
        let r = s.put(&path, body.clone());
        r.expect_error(422, "invalid_egress_policy");
        assert_eq!(r.body["error"]["field"], "hosts", "{body}: {}", r.text);
    }
    assert_eq!(s.get(&path).expect(200)["mode"], "none");
    let changes = s.audit(&ws, "action=agent.egress_set");
    assert_eq!(changes.len(), 3);
    assert_eq!(changes[0]["detail"], "mode=none");
    // A member may look, not change.
    let member = s.add_user(&ws, "member@example.com", "member", "correct horse battery");
    let token = s.personal_token("member@example.com", "correct horse battery");
    s.request("GET", &path, Some(&token), None).expect(200);
    s.request("PUT", &path, Some(&token), Some(&json!({"mode": "default"}))).expect_error(403, "forbidden");
    let _ = member;
}

#[test]
fn without_the_sandbox_egress_is_not_enforced_and_the_server_says_so() {
    let (s, _tmp) = with_admin(Options { extra_env: vec![("AGENTVAULT_SANDBOX", "off".into())], ..Options::default() });
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "Loose bot");
    let path = format!("/api/v1/workspaces/{ws}/agents/{agent}/egress");
    assert_eq!(s.get(&path).expect(200)["enforced"], false);
    assert!(s.stderr().contains("egress policies are NOT enforced"), "{}", s.stderr());
}

/// The agent's page in the console shows its network policy, and that it is not enforced
/// without the sandbox.
#[test]
fn the_console_shows_an_agents_network_policy() {
    let (s, _tmp) = sandboxed_with(vec![]);
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "Shown bot");
    let (cookie, _) = s.login(crate::support::ADMIN_EMAIL, crate::support::ADMIN_PASSWORD);
    let page = |s: &Server| s.request_with("GET", &format!("/w/{ws}/agents/{agent}"), &[("Cookie", &cookie)], None);
    let html = page(&s).text;
    assert!(html.contains("id=\"network\"") && html.contains("Default: the public internet"), "{html}");
    assert!(!html.contains("egress-not-enforced"));
    s.put(
        &format!("/api/v1/workspaces/{ws}/agents/{agent}/egress"),
        json!({"mode": "allowlist", "hosts": ["api.stripe.com"]}),
    )
    .expect(200);
    let html = page(&s).text;
    assert!(html.contains("Allowlist") && html.contains("<code>api.stripe.com</code>"), "{html}");

    let (s, _tmp) = with_admin(Options { extra_env: vec![("AGENTVAULT_SANDBOX", "off".into())], ..Options::default() });
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "Loose bot");
    let (cookie, _) = s.login(crate::support::ADMIN_EMAIL, crate::support::ADMIN_PASSWORD);
    let html = s.request_with("GET", &format!("/w/{ws}/agents/{agent}"), &[("Cookie", &cookie)], None).text;
    assert!(html.contains("egress-not-enforced") && html.contains("Not enforced"), "{html}");
}

// --- credential injection ------------------------------------------------------------------

/// Runs `openssl` with `args`, failing the test on an error.
fn openssl(args: &[&str]) {
    let out = std::process::Command::new("openssl").args(args).output().expect("openssl is installed");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA of the test's own and a certificate it signed for 127.0.0.1; returns (ca.pem, cert, key).
fn test_ca(dir: &std::path::Path) -> (String, String, String) {
    let p = |name: &str| dir.join(name).display().to_string();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut args = vec!["req", "-x509", "-days", "1", "-subj", "/CN=agentvault test upstream CA"];
    args.extend(ec);
    let (ca, ca_key) = (p("test-ca.pem"), p("test-ca.key"));
    args.extend(["-keyout", &ca_key, "-out", &ca]);
    openssl(&args);
    let (csr, key, cert, ext) = (p("up.csr"), p("up.key"), p("up.pem"), p("up.ext"));
    let mut args = vec!["req", "-subj", "/CN=127.0.0.1"];
    args.extend(ec);
    args.extend(["-keyout", &key, "-out", &csr]);
    openssl(&args);
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "1",
        "-out",
        &cert,
        "-extfile",
        &ext,
    ]);
    (ca, cert, key)
}

/// An HTTPS server (Python) that answers `ok` and writes each request's Authorization header
/// to its log, which the test reads: the function never sees what the upstream received.
struct TlsUpstream {
    port: u16,
    log: std::path::PathBuf,
    child: std::process::Child,
}

impl TlsUpstream {
    fn start(dir: &std::path::Path, name: &str, cert: &str, key: &str) -> TlsUpstream {
        let log = dir.join(format!("{name}.log"));
        let script = r#"
import http.server, ssl, sys
log = open(sys.argv[3], "a", buffering=1)
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        log.write(self.path + " " + str(self.headers.get("Authorization")) + "\n")
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[1], sys.argv[2])
s.socket = ctx.wrap_socket(s.socket, server_side=True)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;
        let mut child = std::process::Command::new("python3")
            .args(["-c", script, cert, key])
            .arg(&log)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        TlsUpstream { port: line.trim().parse().unwrap(), log, child }
    }

    fn seen(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const USE_KEY: &str = r#"
import base64, requests

def charge(conv, allowed: int, other: int):
    key = conv.utils.get_secret("stripe_api_key")
    out = {"key": key, "kv": conv.utils.get_secret("booking_oauth")}
    print("the key is", key)
    r = requests.get(f"https://127.0.0.1:{allowed}/bearer", headers={"Authorization": f"Bearer {key}"}, timeout=5)
    out["bearer"] = [r.status_code, r.text]
    r = requests.get(f"https://127.0.0.1:{allowed}/basic", auth=("acct", key), timeout=5)
    out["basic"] = [r.status_code, r.text]
    # Another host: the tunnel is not opened up, so the placeholder travels as it is.
    r = requests.get(f"https://127.0.0.1:{other}/other", headers={"Authorization": f"Bearer {key}"}, timeout=5, verify=False)
    out["other"] = [r.status_code, r.text]
    # Over plain HTTP, to any host, the proxy sees it and refuses: values go only over HTTPS.
    r = requests.get(f"http://127.0.0.1:{other}/plain", headers={"Authorization": f"Bearer {key}"}, timeout=5)
    out["plain"] = [r.status_code, r.text]
    r = requests.get(f"http://127.0.0.1:{allowed}/plain", headers={"Authorization": f"Bearer {key}"}, timeout=5)
    out["plain_allowed"] = [r.status_code, r.text]
    return out
"#;

#[test]
fn an_injected_secret_reaches_its_host_and_never_the_function() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ca, cert, key) = test_ca(dir);
    let allowed = TlsUpstream::start(dir, "allowed", &cert, &key);
    let other = TlsUpstream::start(dir, "other", &cert, &key);
    let (s, _tmp) = sandboxed_with(vec![
        ("AGENTVAULT_EGRESS_ALLOW", format!("127.0.0.1:{},127.0.0.1:{}", allowed.port, other.port)),
        ("AGENTVAULT_EGRESS_CA", ca.clone()),
    ]);
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "Billing bot");
    const VALUE: &str = "sk_live_INJECTED_ONLY_4242";
    s.create_secret(&ws, "stripe_api_key", json!(VALUE), &[&agent]);
    s.create_secret(&ws, "booking_oauth", json!({"client_secret": "cs_INJECTED_KV"}), &[&agent]);
    let host = format!("127.0.0.1:{}", allowed.port);
    for name in ["stripe_api_key", "booking_oauth"] {
        let path = format!("/api/v1/workspaces/{ws}/secrets/{name}/injection");
        assert_eq!(
            *s.put(&path, json!({"injected_only": true, "hosts": [host]})).expect(200),
            json!({"injected_only": true, "hosts": [host]})
        );
    }
    let params = json!([{"name": "allowed", "type": "integer"}, {"name": "other", "type": "integer"}]);
    define(&s, &ws, &agent, "charge", params, USE_KEY);
    let args = json!({"allowed": allowed.port, "other": other.port});
    let r = invoke(&s, None, &ws, &agent, "charge", json!({"args": args, "conversation": {"id": "call-inject"}}));
    let out = r.expect(200).clone();
    assert!(out["error"].is_null(), "{out}");
    for leaked in [VALUE, "cs_INJECTED_KV"] {
        assert!(!r.text.contains(leaked), "the value reached the function: {}", r.text);
    }
    let result = &out["result"];
    assert_eq!(result["bearer"], json!([200, "ok"]), "{result}");
    assert_eq!(result["basic"], json!([200, "ok"]), "{result}");
    assert_eq!(result["other"], json!([200, "ok"]), "{result}");
    for plain in ["plain", "plain_allowed"] {
        assert_eq!(result[plain][0], 403, "{result}");
        assert!(result[plain][1].as_str().unwrap().contains("over plain HTTP"), "{result}");
    }
    // What the function saw is a placeholder (itself redacted on the way out).
    assert_eq!(result["key"], "[redacted:stripe_api_key]", "{result}");
    assert_eq!(result["kv"], json!({"client_secret": "[redacted:booking_oauth]"}));

    // The allowed host got the value, as a bearer token and inside basic credentials.
    let seen = allowed.seen();
    assert!(seen.contains(&format!("/bearer Bearer {VALUE}")), "{seen}");
    let basic = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("acct:{VALUE}"));
    assert!(seen.contains(&format!("/basic Basic {basic}")), "{seen}");
    // The other host got only the placeholder, never the value.
    let other_seen = other.seen();
    assert!(other_seen.contains("/other Bearer avinj_"), "{other_seen}");
    assert!(!other_seen.contains(VALUE) && !other_seen.contains("/plain"), "{other_seen}");
    assert!(!seen.contains("/plain"), "{seen}");

    // The agent read path never hands the value out.
    let (_, key) = s.create_key(&ws, json!([agent]));
    s.read(&key, &agent, "stripe_api_key").expect_error(403, "injection_only");

    // Each injection is audited, by secret, never with the value.
    let injected = s.audit(&ws, "action=egress.inject");
    let ok: Vec<&Value> = injected.iter().filter(|r| r["outcome"] == "success").collect();
    assert_eq!(ok.len(), 2, "{injected:#?}");
    assert!(ok.iter().all(|r| r["secret"] == "stripe_api_key"), "{injected:#?}");
    assert!(ok[0]["detail"].as_str().unwrap().contains("header=authorization"));
    let refused: Vec<&Value> = injected.iter().filter(|r| r["outcome"] == "denied").collect();
    assert_eq!(refused.len(), 2, "{injected:#?}");
    let text = serde_json::to_string(&s.audit(&ws, "")).unwrap();
    assert!(!text.contains(VALUE) && !text.contains("avinj_"), "{text}");
    let metrics = s.get("/metrics").text;
    assert!(metrics.contains("agentvault_egress_injections_total{outcome=\"injected\"} 2"), "{metrics}");

    // A session kept in the warm worker, its connection to the host opened in an earlier
    // invocation that read no secret, still gets this invocation's placeholder swapped.
    let kept = r#"
import requests
_session = requests.Session()

def kept(conv, allowed: int, with_key: bool):
    headers = {}
    if with_key:
        headers["Authorization"] = "Bearer " + conv.utils.get_secret("stripe_api_key")
    r = _session.get(f"https://127.0.0.1:{allowed}/kept", headers=headers, timeout=5)
    return str(r.status_code)
"#;
    let params = json!([{"name": "allowed", "type": "integer"}, {"name": "with_key", "type": "boolean"}]);
    define(&s, &ws, &agent, "kept", params, kept);
    for with_key in [false, true] {
        let args = json!({"allowed": allowed.port, "with_key": with_key});
        let out = invoke(&s, None, &ws, &agent, "kept", json!({"args": args})).expect(200).clone();
        assert_eq!(out["result"], "200", "{out}");
    }
    let seen = allowed.seen();
    assert!(seen.contains("/kept None") && seen.contains(&format!("/kept Bearer {VALUE}")), "{seen}");

    // Made readable again, the function reads the value (redacted on the way out).
    let path = format!("/api/v1/workspaces/{ws}/secrets/stripe_api_key/injection");
    s.put(&path, json!({"injected_only": false})).expect(200);
    s.read(&key, &agent, "stripe_api_key").expect(200);
    s.put(&path, json!({"injected_only": true, "hosts": []})).expect_error(422, "invalid_injection");
}

/// The console shows how functions use a secret: on its page and in the Function Editor's
/// Secrets box, whose snippet for an injected-only secret sends it in a header.
#[test]
fn the_console_marks_injected_only_secrets() {
    let (s, _tmp) = sandboxed_with(vec![]);
    let ws = s.default_ws();
    let agent = s.create_agent(&ws, "Billing bot");
    s.create_secret(&ws, "stripe_api_key", json!("sk_live_CONSOLE"), &[&agent]);
    s.create_secret(&ws, "plain_key", json!("pk_CONSOLE"), &[&agent]);
    let (cookie, _) = s.login(crate::support::ADMIN_EMAIL, crate::support::ADMIN_PASSWORD);
    let page = |path: &str| s.request_with("GET", path, &[("Cookie", &cookie)], None).text;
    let secret_page = format!("/w/{ws}/secrets/stripe_api_key");
    assert!(page(&secret_page).contains("readable by functions"));
    let path = format!("/api/v1/workspaces/{ws}/secrets/stripe_api_key/injection");
    assert_eq!(*s.get(&path).expect(200), json!({"injected_only": false, "hosts": []}));
    s.put(&path, json!({"injected_only": true, "hosts": ["API.stripe.com", "api.stripe.com"]})).expect(200);
    assert_eq!(*s.get(&path).expect(200), json!({"injected_only": true, "hosts": ["api.stripe.com"]}));
    let html = page(&secret_page);
    assert!(html.contains("injected only") && html.contains("<code>api.stripe.com</code>"), "{html}");

    let listed = s.get(&format!("/api/v1/workspaces/{ws}/agents/{agent}/secrets")).expect(200).clone();
    let items = listed["items"].as_array().unwrap();
    let stripe = items.iter().find(|i| i["name"] == "stripe_api_key").unwrap();
    assert_eq!((stripe["injected_only"].clone(), stripe["hosts"].clone()), (json!(true), json!(["api.stripe.com"])));
    assert_eq!(
        stripe["snippet"],
        "requests.post(\"https://api.stripe.com/\", headers={\"Authorization\": f\"Bearer {conv.utils.get_secret('stripe_api_key')}\"})"
    );
    let plain = items.iter().find(|i| i["name"] == "plain_key").unwrap();
    assert_eq!(
        (plain["injected_only"].clone(), plain["snippet"].clone()),
        (json!(false), json!("conv.utils.get_secret('plain_key')"))
    );
    define(&s, &ws, &agent, "f", json!([]), "def f(conv):\n    return 'x'\n");
    let html = page(&format!("/w/{ws}/agents/{agent}/functions/f"));
    assert!(html.contains("injected only"), "{html}");
}

/// A bad `--egress-allow` or `--egress-ca` stops the server at start with what to write instead.
#[test]
fn bad_egress_settings_stop_the_server_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-ca.pem");
    for (flag, value, expected) in [
        ("--egress-allow", "10.0.0.5".to_owned(), "is not host:port"),
        ("--egress-allow", "http://api.internal/".to_owned(), "is not host:port"),
        ("--egress-ca", missing.display().to_string(), "cannot read the egress CA file"),
    ] {
        let out = crate::support::command()
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(tmp.path().join("data"))
            .args([flag, &value])
            .env("AGENTVAULT_SANDBOX", "bwrap")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flag} {value} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{flag} {value}: {err}");
    }
}

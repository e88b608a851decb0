//! The server harness: a real `agentvault serve` process on port 0 in a temporary data directory,
//! and a small JSON client for it.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

use super::fixtures::DataDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_agentvault");

/// An `agentvault` command with a clean environment (no configuration leaking in from the host).
pub fn command() -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AGENTVAULT_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

pub fn random_token() -> String {
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut bytes).unwrap();
    format!("test_admin_{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// A response: status and parsed JSON body (`Value::Null` when the body is not JSON).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub text: String,
    /// Response headers, names in lowercase.
    pub headers: Vec<(String, String)>,
}

/// An HTTP client that returns every status as a response (tests look at errors too).
fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

impl From<ureq::http::Response<ureq::Body>> for Resp {
    fn from(mut resp: ureq::http::Response<ureq::Body>) -> Resp {
        let status = resp.status().as_u16();
        let headers =
            resp.headers().iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())).collect();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp { status, body, text, headers }
    }
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The `error.code` of an error response.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    #[track_caller]
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text);
        &self.body
    }

    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text);
        assert_eq!(self.code(), code, "unexpected error code; body: {}", self.text);
        let msg = self.body["error"]["message"].as_str().unwrap_or("");
        assert!(msg.len() > 10, "the error message should say what to do: {}", self.text);
    }
}

pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub admin: String,
    pub stdout: String,
    pub stderr_path: PathBuf,
    /// The data directory this server owns (removed when the server is dropped), if any.
    _data: Option<DataDir>,
}

pub struct Options<'a> {
    pub bootstrap_token: Option<&'a str>,
    pub extra_env: Vec<(&'a str, String)>,
    pub log: &'a str,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options { bootstrap_token: None, extra_env: Vec::new(), log: "info" }
    }
}

impl Server {
    /// A fresh server in a new temporary directory, with a known admin token.
    pub fn start() -> Server {
        let data = DataDir::new();
        let mut s = data.start();
        s._data = Some(data);
        s
    }

    /// A server on `dir`; `admin` is the token the test will use.
    pub fn start_in(dir: &Path, admin: &str, opts: Options<'_>) -> Server {
        Server::try_start_in(dir, admin, opts).unwrap_or_else(|e| panic!("server did not start: {e}"))
    }

    pub fn try_start_in(dir: &Path, admin: &str, opts: Options<'_>) -> Result<Server, String> {
        let stderr_path = dir.with_extension(format!(
            "stderr.{}.log",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        ));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut cmd = command();
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .env("AGENTVAULT_LOG", opts.log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        if let Some(t) = opts.bootstrap_token {
            cmd.env("AGENTVAULT_BOOTSTRAP_TOKEN", t);
        }
        super::backend::on_database(&mut cmd, dir);
        for (k, v) in &opts.extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = String::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => {
                    seen.push_str(&line);
                    seen.push('\n');
                    if let Some(addr) = line.strip_prefix("agentvault listening on ") {
                        return Ok(Server {
                            child: Some(child),
                            base: addr.trim().to_owned(),
                            admin: admin.to_owned(),
                            stdout: seen,
                            stderr_path,
                            _data: None,
                        });
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                    return Err(format!("exit {status:?}; stdout: {seen}; stderr: {err}"));
                }
            }
        }
    }

    /// Stops with SIGTERM (graceful) and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            #[allow(unsafe_code)]
            // SAFETY: kill(2) with a pid we own and a valid signal number.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let status = child.wait().unwrap();
            assert!(status.success(), "server exited with {status:?} on SIGTERM");
        }
    }

    /// Kills with SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    // --- HTTP ------------------------------------------------------------------------------

    pub fn request(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Resp {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        self.request_with(method, path, &headers, body)
    }

    /// A request with any headers (cookies, CSRF tokens, malformed credentials).
    pub fn request_with(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&Value>) -> Resp {
        let agent = client();
        let url = format!("{}{}", self.base, path);
        macro_rules! with_headers {
            ($req:expr) => {{
                let mut r = $req;
                for (k, v) in headers {
                    r = r.header(*k, *v);
                }
                r
            }};
        }
        let result = match (method, body) {
            ("GET", _) => with_headers!(agent.get(&url)).call(),
            ("DELETE", _) => with_headers!(agent.delete(&url)).call(),
            ("POST", Some(b)) => with_headers!(agent.post(&url)).send_json(b),
            ("POST", None) => with_headers!(agent.post(&url)).send_empty(),
            ("PUT", Some(b)) => with_headers!(agent.put(&url)).send_json(b),
            ("PUT", None) => with_headers!(agent.put(&url)).send_empty(),
            ("PATCH", Some(b)) => with_headers!(agent.patch(&url)).send_json(b),
            ("PATCH", None) => with_headers!(agent.patch(&url)).send_empty(),
            _ => panic!("unsupported request {method} with body {body:?}"),
        };
        Resp::from(result.unwrap())
    }

    /// A POST with a body sent byte for byte (malformed JSON, forms, other character sets)
    /// and the admin token, unless `headers` carry their own credential.
    pub fn post_raw(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
        let agent = client();
        let mut req = agent.post(format!("{}{}", self.base, path));
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization") || k.eq_ignore_ascii_case("cookie")) {
            req = req.header("Authorization", format!("Bearer {}", self.admin));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Resp::from(req.send(body.as_bytes()).unwrap())
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, Some(&self.admin), None)
    }

    pub fn post(&self, path: &str, body: Value) -> Resp {
        self.request("POST", path, Some(&self.admin), Some(&body))
    }

    pub fn patch(&self, path: &str, body: Value) -> Resp {
        self.request("PATCH", path, Some(&self.admin), Some(&body))
    }

    pub fn put(&self, path: &str, body: Value) -> Resp {
        self.request("PUT", path, Some(&self.admin), Some(&body))
    }

    pub fn delete(&self, path: &str) -> Resp {
        self.request("DELETE", path, Some(&self.admin), None)
    }

    // --- shortcuts -------------------------------------------------------------------------

    /// The id of the `default` workspace.
    pub fn default_ws(&self) -> String {
        let r = self.get("/api/v1/workspaces");
        let items = r.expect(200)["items"].as_array().unwrap().clone();
        items.iter().find(|w| w["name"] == "default").unwrap()["id"].as_str().unwrap().to_owned()
    }

    pub fn create_agent(&self, ws: &str, name: &str) -> String {
        let r = self.post(&format!("/api/v1/workspaces/{ws}/agents"), json!({"name": name}));
        r.expect(201)["id"].as_str().unwrap().to_owned()
    }

    pub fn create_secret(&self, ws: &str, name: &str, value: Value, agents: &[&str]) -> Value {
        let r = self
            .post(&format!("/api/v1/workspaces/{ws}/secrets"), json!({"name": name, "value": value, "agents": agents}));
        r.expect(201).clone()
    }

    /// Creates an API key and returns (id, token).
    pub fn create_key(&self, ws: &str, agents: Value) -> (String, String) {
        let r = self.post(&format!("/api/v1/workspaces/{ws}/api-keys"), json!({"name": "test key", "agents": agents}));
        let b = r.expect(201);
        (b["id"].as_str().unwrap().to_owned(), b["token"].as_str().unwrap().to_owned())
    }

    /// Signs in; returns the session cookie (`av_session=...`) and the CSRF token.
    pub fn login(&self, email: &str, password: &str) -> (String, String) {
        let r = self.request("POST", "/api/v1/auth/login", None, Some(&json!({"email": email, "password": password})));
        let body = r.expect(200).clone();
        let cookie = r.header("set-cookie").unwrap().split(';').next().unwrap().to_owned();
        (cookie, body["csrf_token"].as_str().unwrap().to_owned())
    }

    /// A personal access token for a user, made through a signed-in session.
    pub fn personal_token(&self, email: &str, password: &str) -> String {
        let (cookie, csrf) = self.login(email, password);
        let r = self.request_with(
            "POST",
            "/api/v1/me/tokens",
            &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
            Some(&json!({"name": "test"})),
        );
        r.expect(201)["token"].as_str().unwrap().to_owned()
    }

    /// Invites someone to a workspace with a role; returns the invitation (with its code).
    pub fn invite(&self, ws: &str, email: &str, role: &str) -> Value {
        let r = self.post(&format!("/api/v1/workspaces/{ws}/members"), json!({"email": email, "role": role}));
        r.expect(201).clone()
    }

    /// Accepts an invitation by its code, with any headers (cookies, tokens) and body.
    pub fn accept(&self, code: &str, headers: &[(&str, &str)], body: Value) -> Resp {
        self.request_with("POST", &format!("/api/v1/invitations/{code}/accept"), headers, Some(&body))
    }

    /// Adds a new user to a workspace with a role: the admin invites, the invitee accepts and
    /// chooses the password. Returns the new user's id.
    pub fn add_user(&self, ws: &str, email: &str, role: &str, password: &str) -> String {
        let invitation = self.invite(ws, email, role);
        let code = invitation["code"].as_str().unwrap();
        let r = self.accept(code, &[], json!({"password": password}));
        r.expect(201)["user"]["id"].as_str().unwrap().to_owned()
    }

    /// The agent read path.
    pub fn read(&self, token: &str, agent: &str, name: &str) -> Resp {
        self.request("GET", &format!("/api/v1/agents/{agent}/secrets/{name}"), Some(token), None)
    }

    /// All audit records of a workspace matching `query` (follows the cursor).
    pub fn audit(&self, ws: &str, query: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = format!("limit=500&{query}");
            if let Some(c) = &cursor {
                q.push_str(&format!("&cursor={c}"));
            }
            let r = self.get(&format!("/api/v1/workspaces/{ws}/audit?{q}"));
            let b = r.expect(200).clone();
            out.extend(b["items"].as_array().unwrap().iter().cloned());
            match b["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

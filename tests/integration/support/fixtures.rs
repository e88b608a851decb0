//! What tests set up again and again: a data directory with a known bootstrap token, a server
//! whose first admin exists, agents' functions, and scans of the files on disk.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::server::{Options, Resp, Server, random_token};

pub const ADMIN_EMAIL: &str = "ada@example.com";
pub const ADMIN_PASSWORD: &str = "analytical engine 1843";

/// A temporary directory holding a server's data directory (`data`, which the server creates),
/// and the random token the tests pass as `AGENTVAULT_BOOTSTRAP_TOKEN`. The data directory
/// outlives the servers started on it, so a test can stop, kill or restart them; everything is
/// removed when this is dropped.
pub struct DataDir {
    tmp: tempfile::TempDir,
    /// The data directory (`--data-dir`).
    pub path: PathBuf,
    /// The bootstrap token, and so the admin token of a server started before any user exists.
    pub token: String,
}

impl DataDir {
    pub fn new() -> DataDir {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("data");
        DataDir { tmp, path, token: random_token() }
    }

    /// A path beside the data directory, in the same temporary directory (configuration,
    /// certificates, a second data directory).
    pub fn beside(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Options that pass this directory's bootstrap token.
    pub fn opts(&self) -> Options<'_> {
        Options { bootstrap_token: Some(&self.token), ..Options::default() }
    }

    /// A server on this directory with its bootstrap token.
    pub fn start(&self) -> Server {
        self.start_with(self.opts())
    }

    /// A server on this directory with these options (`..self.opts()` keeps the bootstrap
    /// token); the tests call it with this directory's token.
    pub fn start_with(&self, opts: Options<'_>) -> Server {
        Server::start_in(&self.path, &self.token, opts)
    }

    /// Like [`DataDir::start_with`], for starts that may be refused: the error is what the
    /// server printed.
    pub fn try_start_with(&self, opts: Options<'_>) -> Result<Server, String> {
        Server::try_start_in(&self.path, &self.token, opts)
    }
}

/// A server whose first admin (`ADMIN_EMAIL`, `ADMIN_PASSWORD`) exists, set up with the setup
/// code; the bootstrap token, `s.admin`, is the data directory's.
pub fn with_admin(opts: Options<'_>) -> (Server, DataDir) {
    assert!(opts.bootstrap_token.is_none(), "with_admin uses the data directory's bootstrap token");
    let data = DataDir::new();
    let s = data.start_with(Options { bootstrap_token: Some(&data.token), ..opts });
    let code = setup_code(&s);
    let r = s.request(
        "POST",
        "/api/v1/setup",
        None,
        Some(&json!({"setup_code": code, "email": ADMIN_EMAIL, "name": "Ada", "password": ADMIN_PASSWORD})),
    );
    r.expect(201);
    (s, data)
}

/// The one-time setup code a server prints on its first start.
pub fn setup_code(s: &Server) -> String {
    let line = s.stdout.lines().find(|l| l.contains("setup code")).expect("the setup code is printed");
    line.split_whitespace().find(|w| w.len() == 11 && w.as_bytes()[5] == b'-').unwrap().to_owned()
}

// --- agents' functions ----------------------------------------------------------------------

/// Defines a function for an agent from a full request body.
pub fn define_with(s: &Server, ws: &str, agent: &str, body: Value) {
    s.post(&format!("/api/v1/workspaces/{ws}/agents/{agent}/functions"), body).expect(201);
}

/// Defines a function for an agent.
pub fn define(s: &Server, ws: &str, agent: &str, name: &str, params: Value, code: &str) {
    define_with(
        s,
        ws,
        agent,
        json!({"name": name, "description": "test function", "parameters": params, "code": code}),
    );
}

/// Invokes an agent's function with `token` (the admin token when `None`).
pub fn invoke(s: &Server, token: Option<&str>, ws: &str, agent: &str, name: &str, body: Value) -> Resp {
    let path = format!("/api/v1/workspaces/{ws}/agents/{agent}/functions/{name}/invoke");
    s.request("POST", &path, Some(token.unwrap_or(&s.admin)), Some(&body))
}

// --- files on disk --------------------------------------------------------------------------

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

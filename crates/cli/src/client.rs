//! The terminal client: talks to a running agentvault with a personal access token.
//!
//! Where the server is and who you are come from `AGENTVAULT_ADDR` and `AGENTVAULT_TOKEN`, or
//! from `agentvault login`, which stores them (mode 0600) in `$XDG_CONFIG_HOME/agentvault/
//! credentials` (`~/.config/...`). Tokens and secret values are never taken as arguments, so
//! they stay out of shell history: they come from a prompt, a file or standard input.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use zeroize::Zeroizing;

/// Where and how to reach the server.
#[derive(Args, Clone, Debug)]
pub struct Remote {
    /// The server, e.g. https://vault.example.com [default: from `agentvault login`]
    #[arg(long, env = "AGENTVAULT_ADDR", global = true)]
    addr: Option<String>,
    /// The workspace, by name or id [default: your only workspace, or the one named default]
    #[arg(long, short = 'w', env = "AGENTVAULT_WORKSPACE", global = true)]
    workspace: Option<String>,
    /// A PEM file of the certificate authority that signed the server's certificate
    #[arg(long, env = "AGENTVAULT_CA_CERT", global = true)]
    ca_cert: Option<PathBuf>,
    /// Print the server's JSON instead of tables
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
pub enum AgentsCmd {
    /// List the workspace's agents
    List,
    /// Create an agent
    Create {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Rename an agent (by id or name)
    Rename { agent: String, new_name: String },
    /// Delete an agent (by id or name); its grants go with it
    Delete { agent: String },
}

#[derive(Subcommand)]
pub enum FnCmd {
    /// List an agent's functions
    List {
        /// The agent, by id or name
        #[arg(long)]
        agent: String,
    },
    /// Create or replace a function from a Python file
    Push {
        #[arg(long)]
        agent: String,
        /// The function's name (the Python function it defines)
        #[arg(long = "function", value_name = "NAME")]
        function: String,
        /// The Python file
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        /// When the LLM should call it
        #[arg(long)]
        description: String,
        /// A parameter as name:type (string, number, integer, boolean); repeat for more
        #[arg(long = "param", value_name = "NAME:TYPE")]
        params: Vec<String>,
    },
    /// Run a function, as the agent would during a conversation
    Run {
        #[arg(long)]
        agent: String,
        #[arg(long = "function", value_name = "NAME")]
        function: String,
        /// The arguments, a JSON object such as '{"amount": 5}'
        #[arg(long, default_value = "{}")]
        args: String,
        /// conv.env: sandbox, pre-release or live
        #[arg(long, default_value = "sandbox")]
        env: String,
        /// conv.state at the start, a JSON object
        #[arg(long, default_value = "{}")]
        state: String,
        /// conv.id
        #[arg(long)]
        conversation_id: Option<String>,
    },
}

/// Where a secret value comes from: a prompt (default on a terminal), a file, or stdin.
#[derive(Args, Clone, Debug)]
pub struct ValueSource {
    /// Read the value from this file
    #[arg(long, value_name = "FILE", conflicts_with = "value_stdin")]
    value_file: Option<PathBuf>,
    /// Read the value from standard input
    #[arg(long)]
    value_stdin: bool,
    /// The value is key/value pairs: a JSON object of strings
    #[arg(long)]
    kv: bool,
}

#[derive(Subcommand)]
pub enum SecretsCmd {
    /// List secrets (metadata only)
    List,
    /// Show a secret's metadata
    Get { name: String },
    /// Create a secret; the value comes from a prompt, --value-file or --value-stdin
    Create {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// An agent (id or name) allowed to read it; repeat for more
        #[arg(long = "agent")]
        agents: Vec<String>,
        #[command(flatten)]
        source: ValueSource,
    },
    /// Store a new value (a new version) and/or description
    Update {
        name: String,
        #[arg(long)]
        description: Option<String>,
        /// Keep the value; change only the description
        #[arg(long)]
        keep_value: bool,
        #[command(flatten)]
        source: ValueSource,
    },
    /// Delete a secret with all its versions
    Delete { name: String },
    /// List a secret's versions
    Versions { name: String },
    /// Let agents (ids or names) read a secret
    Grant { name: String, agents: Vec<String> },
    /// Stop agents (ids or names) from reading a secret
    Revoke { name: String, agents: Vec<String> },
}

#[derive(Subcommand)]
pub enum KeysCmd {
    /// List API keys
    List,
    /// Create an API key; the token is printed once
    Create {
        name: String,
        /// Scope the key to an agent (id or name); repeat for more
        #[arg(long = "agent", required_unless_present = "all_agents")]
        agents: Vec<String>,
        /// Scope the key to every agent
        #[arg(long, conflicts_with = "agents")]
        all_agents: bool,
        /// RFC 3339 expiry, e.g. 2027-01-31T00:00:00Z
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// Revoke an API key
    Revoke { key_id: String },
}

#[derive(Subcommand)]
pub enum MembersCmd {
    /// List the workspace's members
    List,
    /// Invite someone: prints a link (shown once) where they choose their own password, or
    /// sign in to the account they already have, to join
    Invite {
        email: String,
        /// admin or member
        #[arg(long, default_value = "member")]
        role: String,
    },
    /// List pending invitations
    Invitations,
    /// Revoke a pending invitation (its link stops working)
    RevokeInvitation { invitation_id: String },
    /// Change a member's role (by user id or email)
    SetRole { user: String, role: String },
    /// Remove a member from the workspace (by user id or email)
    Remove { user: String },
}

#[derive(Args)]
pub struct AuditArgs {
    #[arg(long)]
    action: Option<String>,
    #[arg(long)]
    secret: Option<String>,
    #[arg(long)]
    agent: Option<String>,
    #[arg(long)]
    outcome: Option<String>,
    /// How many of the newest records to show
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// Keep printing new records as they come
    #[arg(long, short = 'f')]
    follow: bool,
}

#[derive(Serialize, Deserialize, Default)]
struct Credentials {
    addr: String,
    token: String,
}

fn credentials_path() -> Result<PathBuf, String> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or("neither XDG_CONFIG_HOME nor HOME is set; use AGENTVAULT_ADDR and AGENTVAULT_TOKEN")?;
    Ok(base.join("agentvault").join("credentials"))
}

fn stored_credentials() -> Option<Credentials> {
    let text = Zeroizing::new(std::fs::read_to_string(credentials_path().ok()?).ok()?);
    toml::from_str(&text).ok()
}

/// A connection to the server.
pub struct Client {
    agent: ureq::Agent,
    addr: String,
    token: Zeroizing<String>,
    workspace: Option<String>,
    pub json: bool,
}

fn http_agent(ca_cert: Option<&PathBuf>) -> Result<ureq::Agent, String> {
    let mut config = ureq::Agent::config_builder().http_status_as_error(false);
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let certs: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            return Err(format!("{} holds no PEM certificate", path.display()));
        }
        let tls = ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::new_with_certs(&certs)).build();
        config = config.tls_config(tls);
    }
    Ok(config.build().into())
}

impl Client {
    pub fn connect(remote: &Remote) -> Result<Client, String> {
        let stored = stored_credentials();
        let addr = remote
            .addr
            .clone()
            .or_else(|| stored.as_ref().map(|c| c.addr.clone()))
            .ok_or("no server: run `agentvault login` or set AGENTVAULT_ADDR")?;
        let token = Zeroizing::new(
            std::env::var("AGENTVAULT_TOKEN")
                .ok()
                .filter(|t| !t.is_empty())
                .or_else(|| stored.map(|c| c.token.clone()))
                .ok_or("no token: run `agentvault login` or set AGENTVAULT_TOKEN to a personal access token")?,
        );
        Ok(Client {
            agent: http_agent(remote.ca_cert.as_ref())?,
            addr: addr.trim_end_matches('/').to_owned(),
            token,
            workspace: remote.workspace.clone(),
            json: remote.json,
        })
    }

    /// Calls the API; a non-2xx answer becomes the server's error message.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let url = format!("{}{}", self.addr, path);
        let auth = format!("Bearer {}", self.token.as_str());
        let result = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            ("DELETE", _) => self.agent.delete(&url).header("Authorization", &auth).call(),
            ("POST", Some(b)) => self.agent.post(&url).header("Authorization", &auth).send_json(b),
            ("POST", None) => self.agent.post(&url).header("Authorization", &auth).send_empty(),
            ("PUT", Some(b)) => self.agent.put(&url).header("Authorization", &auth).send_json(b),
            ("PATCH", Some(b)) => self.agent.patch(&url).header("Authorization", &auth).send_json(b),
            _ => return Err(format!("internal: unsupported request {method}")),
        };
        let mut resp = result.map_err(|e| format!("cannot reach {}: {e}", self.addr))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(value);
        }
        match value["error"]["message"].as_str() {
            Some(msg) => Err(format!("{msg} ({status} {})", value["error"]["code"].as_str().unwrap_or(""))),
            None => Err(format!("the server answered {status}")),
        }
    }

    /// The workspace id to work in.
    fn workspace(&self) -> Result<String, String> {
        let list = self.call("GET", "/api/v1/workspaces", None)?;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let pick = match &self.workspace {
            Some(w) => items.iter().find(|x| x["id"] == json!(w) || x["name"] == json!(w)),
            None if items.len() == 1 => items.first(),
            None => items.iter().find(|x| x["name"] == "default"),
        };
        pick.and_then(|w| w["id"].as_str().map(str::to_owned)).ok_or_else(|| match &self.workspace {
            Some(w) => format!("no workspace '{w}' that you can see"),
            None => "you see several workspaces; choose one with --workspace or AGENTVAULT_WORKSPACE".to_owned(),
        })
    }

    /// An agent id from an id or a name.
    fn agent_id(&self, ws: &str, agent: &str) -> Result<String, String> {
        if agent.starts_with("agt_") {
            return Ok(agent.to_owned());
        }
        let list = self.call("GET", &format!("/api/v1/workspaces/{ws}/agents"), None)?;
        list["items"]
            .as_array()
            .and_then(|items| items.iter().find(|a| a["name"] == json!(agent)))
            .and_then(|a| a["id"].as_str().map(str::to_owned))
            .ok_or_else(|| format!("no agent named '{agent}' in this workspace"))
    }

    fn agent_ids(&self, ws: &str, agents: &[String]) -> Result<Vec<String>, String> {
        agents.iter().map(|a| self.agent_id(ws, a)).collect()
    }

    fn print(&self, value: &Value, columns: &[&str]) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
            return;
        }
        let rows: Vec<Value> = match value.get("items").and_then(Value::as_array) {
            Some(items) => items.clone(),
            None => vec![value.clone()],
        };
        print_table(columns, &rows);
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        Value::Object(o) if o.contains_key("type") && o.contains_key("id") => {
            format!("{}:{}", cell(&o["type"]), cell(&o["id"]))
        }
        other => other.to_string(),
    }
}

/// A plain table: a header and aligned columns.
fn print_table(columns: &[&str], rows: &[Value]) {
    let cells: Vec<Vec<String>> = rows.iter().map(|r| columns.iter().map(|c| cell(&r[*c])).collect()).collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| cells.iter().map(|r| r[i].chars().count()).chain([c.len()]).max().unwrap_or(0))
        .collect();
    let line = |values: Vec<String>| {
        let padded: Vec<String> = values.iter().zip(&widths).map(|(v, w)| format!("{v:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(columns.iter().map(|c| c.to_uppercase()).collect());
    for row in cells {
        line(row);
    }
    if rows.is_empty() {
        println!("(none)");
    }
}

/// Reads a secret value from a file, stdin or a prompt (never an argument).
fn read_value(source: &ValueSource) -> Result<Value, String> {
    let raw = Zeroizing::new(match (&source.value_file, source.value_stdin) {
        (Some(path), _) => std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        (None, true) => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map_err(|e| format!("reading stdin: {e}"))?;
            s
        }
        (None, false) if std::io::stdin().is_terminal() => {
            let prompt = if source.kv { "Value (a JSON object of strings): " } else { "Value: " };
            rpassword::prompt_password(prompt).map_err(|e| e.to_string())?
        }
        (None, false) => {
            return Err("give the value with --value-file or --value-stdin (no terminal to prompt on)".into());
        }
    });
    let trimmed = raw.strip_suffix('\n').map(|s| s.strip_suffix('\r').unwrap_or(s)).unwrap_or(&raw);
    if source.kv {
        let map: BTreeMap<String, String> = serde_json::from_str(trimmed)
            .map_err(|_| "a key/value value must be a JSON object whose values are strings".to_owned())?;
        Ok(json!(map))
    } else {
        Ok(Value::String(trimmed.to_owned()))
    }
}

/// `agentvault login`: checks the token against the server and stores both.
pub fn login(remote: &Remote, token_stdin: bool) -> Result<(), String> {
    let addr = match &remote.addr {
        Some(a) => a.clone(),
        None => {
            eprint!("Server address (e.g. https://vault.example.com): ");
            let _ = std::io::stderr().flush();
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map_err(|e| e.to_string())?;
            line.trim().to_owned()
        }
    };
    let token = Zeroizing::new(if token_stdin || !std::io::stdin().is_terminal() {
        let mut s = String::new();
        std::io::stdin().read_line(&mut s).map_err(|e| e.to_string())?;
        s.trim().to_owned()
    } else {
        rpassword::prompt_password("Personal access token: ").map_err(|e| e.to_string())?.trim().to_owned()
    });
    let client = Client {
        agent: http_agent(remote.ca_cert.as_ref())?,
        addr: addr.trim_end_matches('/').to_owned(),
        token: token.clone(),
        workspace: None,
        json: false,
    };
    let me = client.call("GET", "/api/v1/me", None)?;
    let path = credentials_path()?;
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let text = Zeroizing::new(
        toml::to_string(&Credentials { addr: client.addr.clone(), token: token.to_string() })
            .map_err(|e| e.to_string())?,
    );
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    file.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, &path).map_err(|e| e.to_string())?;
    println!(
        "signed in to {} as {}; credentials saved in {}",
        client.addr,
        me["user"]["email"].as_str().unwrap_or("?"),
        path.display()
    );
    Ok(())
}

pub fn agents(remote: &Remote, cmd: AgentsCmd) -> Result<(), String> {
    let c = Client::connect(remote)?;
    let ws = c.workspace()?;
    let base = format!("/api/v1/workspaces/{ws}/agents");
    let cols = ["id", "name", "description", "updated_at"];
    match cmd {
        AgentsCmd::List => c.print(&c.call("GET", &base, None)?, &cols),
        AgentsCmd::Create { name, description } => {
            c.print(&c.call("POST", &base, Some(&json!({"name": name, "description": description})))?, &cols)
        }
        AgentsCmd::Rename { agent, new_name } => {
            let id = c.agent_id(&ws, &agent)?;
            c.print(&c.call("PATCH", &format!("{base}/{id}"), Some(&json!({"name": new_name})))?, &cols)
        }
        AgentsCmd::Delete { agent } => {
            let id = c.agent_id(&ws, &agent)?;
            c.call("DELETE", &format!("{base}/{id}"), None)?;
            println!("deleted agent {id}");
        }
    }
    Ok(())
}

fn json_object(what: &str, text: &str) -> Result<Value, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(format!("{what} must be a JSON object such as '{{\"amount\": 5}}'")),
        Err(e) => Err(format!("{what} is not valid JSON: {e}")),
    }
}

pub fn functions(remote: &Remote, cmd: FnCmd) -> Result<(), String> {
    let c = Client::connect(remote)?;
    let ws = c.workspace()?;
    let cols = ["name", "version", "parameters", "description", "updated_at"];
    match cmd {
        FnCmd::List { agent } => {
            let id = c.agent_id(&ws, &agent)?;
            let mut list = c.call("GET", &format!("/api/v1/workspaces/{ws}/agents/{id}/functions"), None)?;
            if !c.json
                && let Some(items) = list["items"].as_array_mut()
            {
                for f in items {
                    let params: Vec<String> = f["parameters"]
                        .as_array()
                        .map(|ps| ps.iter().map(|p| format!("{}:{}", cell(&p["name"]), cell(&p["type"]))).collect())
                        .unwrap_or_default();
                    f["parameters"] = json!(params.join(" "));
                }
            }
            c.print(&list, &cols);
        }
        FnCmd::Push { agent, function, file, description, params } => {
            let id = c.agent_id(&ws, &agent)?;
            let code = std::fs::read_to_string(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let mut parameters = Vec::new();
            for p in params {
                let (name, kind) = p
                    .split_once(':')
                    .ok_or_else(|| format!("--param {p}: write it as name:type, e.g. amount:integer"))?;
                parameters.push(json!({"name": name, "type": kind}));
            }
            let base = format!("/api/v1/workspaces/{ws}/agents/{id}/functions");
            let body = json!({"description": description, "parameters": parameters, "code": code});
            let exists = c.call("GET", &format!("{base}/{function}"), None).is_ok();
            let saved = if exists {
                c.call("PUT", &format!("{base}/{function}"), Some(&body))?
            } else {
                let mut body = body;
                body["name"] = json!(function);
                c.call("POST", &base, Some(&body))?
            };
            c.print(&saved, &["name", "version", "updated_at"]);
        }
        FnCmd::Run { agent, function, args, env, state, conversation_id } => {
            let id = c.agent_id(&ws, &agent)?;
            let mut conversation = json!({"env": env, "state": json_object("--state", &state)?});
            if let Some(cid) = conversation_id {
                conversation["id"] = json!(cid);
            }
            let body = json!({"args": json_object("--args", &args)?, "conversation": conversation});
            let out = c.call(
                "POST",
                &format!("/api/v1/workspaces/{ws}/agents/{id}/functions/{function}/invoke"),
                Some(&body),
            )?;
            if c.json {
                println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            } else {
                print_invocation(&out);
            }
            if let Some(kind) = out["error"]["type"].as_str() {
                return Err(format!("{function} failed: {kind}: {}", cell(&out["error"]["message"])));
            }
        }
    }
    Ok(())
}

/// An invocation for a person: logs, utterances, the state, then the result or the error.
fn print_invocation(out: &Value) {
    for log in out["logs"].as_array().into_iter().flatten() {
        let pii = if log["is_pii"] == true { " (pii)" } else { "" };
        println!("[{}{pii}] {}", cell(&log["level"]), cell(&log["content"]));
    }
    for u in out["utterances"].as_array().into_iter().flatten() {
        println!("say: {}", cell(u));
    }
    if out["truncated"] == true {
        println!("(output cut at the limit)");
    }
    println!("state: {}", out["state"]);
    match out["error"].as_object() {
        Some(e) => eprintln!("{}", cell(&e["traceback"]).trim_end()),
        None => match &out["result"] {
            Value::String(s) => println!("result: {s}"),
            other => println!("result: {other}"),
        },
    }
    println!(
        "{} in {:.1} ms{}",
        cell(&out["invocation_id"]),
        out["duration_ms"].as_f64().unwrap_or(0.0),
        if out["cold"] == true { " (new worker)" } else { "" }
    );
}

pub fn secrets(remote: &Remote, cmd: SecretsCmd) -> Result<(), String> {
    let c = Client::connect(remote)?;
    let ws = c.workspace()?;
    let base = format!("/api/v1/workspaces/{ws}/secrets");
    let cols = ["name", "type", "version", "agents", "description", "updated_at"];
    match cmd {
        SecretsCmd::List => c.print(&c.call("GET", &base, None)?, &cols),
        SecretsCmd::Get { name } => c.print(&c.call("GET", &format!("{base}/{name}"), None)?, &cols),
        SecretsCmd::Create { name, description, agents, source } => {
            let agents = c.agent_ids(&ws, &agents)?;
            let value = read_value(&source)?;
            let body = json!({"name": name, "description": description, "value": value, "agents": agents});
            c.print(&c.call("POST", &base, Some(&body))?, &cols)
        }
        SecretsCmd::Update { name, description, keep_value, source } => {
            let mut body = serde_json::Map::new();
            if let Some(d) = description {
                body.insert("description".into(), json!(d));
            }
            if !keep_value {
                body.insert("value".into(), read_value(&source)?);
            }
            c.print(&c.call("PATCH", &format!("{base}/{name}"), Some(&Value::Object(body)))?, &cols)
        }
        SecretsCmd::Delete { name } => {
            c.call("DELETE", &format!("{base}/{name}"), None)?;
            println!("deleted secret {name}");
        }
        SecretsCmd::Versions { name } => c.print(
            &c.call("GET", &format!("{base}/{name}/versions"), None)?,
            &["version", "type", "keys", "created_at", "created_by"],
        ),
        SecretsCmd::Grant { name, agents } | SecretsCmd::Revoke { name, agents } if agents.is_empty() => {
            return Err(format!("name at least one agent for {name}"));
        }
        SecretsCmd::Grant { name, agents } => change_access(&c, &ws, &base, &name, &agents, true, &cols)?,
        SecretsCmd::Revoke { name, agents } => change_access(&c, &ws, &base, &name, &agents, false, &cols)?,
    }
    Ok(())
}

fn change_access(
    c: &Client,
    ws: &str,
    base: &str,
    name: &str,
    agents: &[String],
    grant: bool,
    cols: &[&str],
) -> Result<(), String> {
    let ids = c.agent_ids(ws, agents)?;
    let current = c.call("GET", &format!("{base}/{name}"), None)?;
    let mut list: Vec<String> =
        current["agents"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(str::to_owned)).collect();
    if grant {
        list.extend(ids);
    } else {
        list.retain(|a| !ids.contains(a));
    }
    c.print(&c.call("PUT", &format!("{base}/{name}/access"), Some(&json!({"agents": list})))?, cols);
    Ok(())
}

pub fn keys(remote: &Remote, cmd: KeysCmd) -> Result<(), String> {
    let c = Client::connect(remote)?;
    let ws = c.workspace()?;
    let base = format!("/api/v1/workspaces/{ws}/api-keys");
    let cols = ["id", "name", "prefix", "agents", "status", "expires_at", "last_used_at"];
    match cmd {
        KeysCmd::List => c.print(&c.call("GET", &base, None)?, &cols),
        KeysCmd::Create { name, agents, all_agents, expires_at } => {
            let scope = if all_agents { json!("all") } else { json!(c.agent_ids(&ws, &agents)?) };
            let created =
                c.call("POST", &base, Some(&json!({"name": name, "agents": scope, "expires_at": expires_at})))?;
            c.print(&created, &cols);
            if !c.json {
                println!("\ntoken (shown this once): {}", created["token"].as_str().unwrap_or(""));
            }
        }
        KeysCmd::Revoke { key_id } => c.print(&c.call("DELETE", &format!("{base}/{key_id}"), None)?, &cols),
    }
    Ok(())
}

pub fn members(remote: &Remote, cmd: MembersCmd) -> Result<(), String> {
    let c = Client::connect(remote)?;
    let ws = c.workspace()?;
    let base = format!("/api/v1/workspaces/{ws}/members");
    let invitations = format!("/api/v1/workspaces/{ws}/invitations");
    let member_cols = ["user_id", "email", "name", "role", "joined_at"];
    let invitation_cols = ["id", "email", "role", "expires_at"];
    let user_id = |user: &str| -> Result<String, String> {
        if user.starts_with("usr_") {
            return Ok(user.to_owned());
        }
        let list = c.call("GET", &base, None)?;
        list["items"]
            .as_array()
            .and_then(|items| items.iter().find(|m| m["email"].as_str().is_some_and(|e| e.eq_ignore_ascii_case(user))))
            .and_then(|m| m["user_id"].as_str().map(str::to_owned))
            .ok_or_else(|| format!("no member '{user}' in this workspace"))
    };
    match cmd {
        MembersCmd::List => c.print(&c.call("GET", &base, None)?, &member_cols),
        MembersCmd::Invite { email, role } => {
            let created = c.call("POST", &base, Some(&json!({"email": email, "role": role})))?;
            c.print(&created, &invitation_cols);
            if !c.json {
                println!(
                    "\ninvitation link (shown this once; send it to {}): {}{}",
                    created["email"].as_str().unwrap_or(""),
                    c.addr,
                    created["path"].as_str().unwrap_or("")
                );
            }
        }
        MembersCmd::Invitations => c.print(&c.call("GET", &invitations, None)?, &invitation_cols),
        MembersCmd::RevokeInvitation { invitation_id } => {
            c.call("DELETE", &format!("{invitations}/{invitation_id}"), None)?;
            if !c.json {
                println!("revoked {invitation_id}");
            }
        }
        MembersCmd::SetRole { user, role } => {
            let id = user_id(&user)?;
            c.print(&c.call("PATCH", &format!("{base}/{id}"), Some(&json!({"role": role})))?, &member_cols);
        }
        MembersCmd::Remove { user } => {
            let id = user_id(&user)?;
            c.call("DELETE", &format!("{base}/{id}"), None)?;
            if !c.json {
                println!("removed {user}");
            }
        }
    }
    Ok(())
}

pub fn audit(remote: &Remote, args: AuditArgs) -> Result<(), String> {
    let c = Client::connect(remote)?;
    let ws = c.workspace()?;
    let mut query = vec![format!("limit={}", args.limit.clamp(1, 500))];
    for (k, v) in
        [("action", &args.action), ("secret", &args.secret), ("agent", &args.agent), ("outcome", &args.outcome)]
    {
        if let Some(v) = v {
            query.push(format!("{k}={v}"));
        }
    }
    let cols = ["id", "at", "action", "outcome", "actor", "secret", "agent_id", "detail"];
    let page = c.call("GET", &format!("/api/v1/workspaces/{ws}/audit?{}", query.join("&")), None)?;
    let mut items: Vec<Value> = page["items"].as_array().cloned().unwrap_or_default();
    items.reverse(); // oldest first, like a log
    let mut last = items.last().and_then(|r| r["id"].as_i64()).unwrap_or(0);
    c.print(&json!({ "items": items }), &cols);
    if !args.follow {
        return Ok(());
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let page = c.call("GET", &format!("/api/v1/workspaces/{ws}/audit?{}", query.join("&")), None)?;
        let mut fresh: Vec<Value> = page["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["id"].as_i64().unwrap_or(0) > last)
            .cloned()
            .collect();
        fresh.reverse();
        for r in &fresh {
            if c.json {
                println!("{r}");
            } else {
                println!("{}", cols.iter().map(|col| cell(&r[*col])).collect::<Vec<_>>().join("  "));
            }
        }
        last = fresh.last().and_then(|r| r["id"].as_i64()).unwrap_or(last);
    }
}

//! Configuration: command-line flags, then `AGENTVAULT_*` environment variables, then the config
//! file (TOML), then defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use agentvault_store::{PostgresStore, SqliteStore, Store};
use clap::Args;
use serde::Deserialize;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8437";
pub const DEFAULT_DATA_DIR: &str = "./agentvault-data";

/// Settings shared by the commands.
#[derive(Args, Debug, Clone, Default)]
pub struct ConfigArgs {
    /// A TOML config file with any of the settings below, by their long names with underscores
    /// (listen, data_dir, root_key_file, log, tls_cert, tls_key, session_ttl, invitation_ttl, ...).
    #[arg(long, env = "AGENTVAULT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8437]
    #[arg(long, env = "AGENTVAULT_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Data directory: the database and, by default, the root key file [default: ./agentvault-data]
    #[arg(long, env = "AGENTVAULT_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keep everything in PostgreSQL instead of the embedded SQLite database, e.g.
    /// postgres://agentvault:PASSWORD@db.example.com/agentvault?sslmode=require. Several servers
    /// may share one database.
    #[arg(long, env = "AGENTVAULT_DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// /readyz fails while this server's read model has been behind the database for longer
    /// than this (servers sharing a PostgreSQL), e.g. 5s [default: 5s]
    #[arg(long, env = "AGENTVAULT_MAX_READ_MODEL_LAG", value_name = "DURATION")]
    pub max_read_model_lag: Option<String>,
    /// Connections to PostgreSQL this server opens at most [default: 16]
    #[arg(long, env = "AGENTVAULT_DATABASE_MAX_CONNECTIONS", value_name = "N")]
    pub database_max_connections: Option<u32>,
    /// Root keyring file (base64 keys, one a line, the first active) [default: DATA_DIR/root.key,
    /// generated on first start]. AGENTVAULT_ROOT_KEY (base64 keys, comma-separated) takes precedence.
    #[arg(long, env = "AGENTVAULT_ROOT_KEY_FILE", value_name = "FILE")]
    pub root_key_file: Option<PathBuf>,
    /// Log filter, e.g. info, debug, agentvault_server=debug [default: info]
    #[arg(long, env = "AGENTVAULT_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    /// TLS certificate chain (PEM); with --tls-key, serve HTTPS
    #[arg(long, env = "AGENTVAULT_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM)
    #[arg(long, env = "AGENTVAULT_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// How long a console session lasts, e.g. 12h, 30m [default: 12h]
    #[arg(long, env = "AGENTVAULT_SESSION_TTL", value_name = "DURATION")]
    pub session_ttl: Option<String>,
    /// How long an invitation to a workspace can be accepted, e.g. 7d, 48h [default: 7d]
    #[arg(long, env = "AGENTVAULT_INVITATION_TTL", value_name = "DURATION")]
    pub invitation_ttl: Option<String>,
    /// Mark session cookies Secure even without --tls-cert (behind an HTTPS reverse proxy)
    #[arg(long, env = "AGENTVAULT_SECURE_COOKIES", value_name = "BOOL")]
    pub secure_cookies: Option<bool>,
    /// Rate-limit sign-ins by the client address in X-Forwarded-For (behind a reverse proxy)
    #[arg(long, env = "AGENTVAULT_TRUST_FORWARDED_FOR", value_name = "BOOL")]
    pub trust_forwarded_for: Option<bool>,
    /// Sign-in attempts allowed per client address per window [default: 30]
    #[arg(long, env = "AGENTVAULT_LOGIN_MAX_PER_CLIENT", value_name = "N")]
    pub login_max_per_client: Option<u32>,
    /// Failed sign-ins allowed per account per window [default: 5]
    #[arg(long, env = "AGENTVAULT_LOGIN_MAX_FAILURES", value_name = "N")]
    pub login_max_failures: Option<u32>,
    /// The sign-in rate-limit window, e.g. 15m [default: 15m]
    #[arg(long, env = "AGENTVAULT_LOGIN_WINDOW", value_name = "DURATION")]
    pub login_window: Option<String>,
    /// Sandbox of agents' functions: auto or bwrap (bubblewrap; without it functions are refused),
    /// off (no sandbox: functions can read the server's files) [default: auto]
    #[arg(long, env = "AGENTVAULT_SANDBOX", value_name = "MODE")]
    pub sandbox: Option<String>,
    /// The Python that runs agents' functions (3.10 or newer) [default: python3]
    #[arg(long, env = "AGENTVAULT_PYTHON", value_name = "PATH")]
    pub python: Option<String>,
    /// Memory (address space) of one function worker, in MiB [default: 512]
    #[arg(long, env = "AGENTVAULT_FUNCTION_MEMORY_MB", value_name = "MIB")]
    pub function_memory_mb: Option<u64>,
    /// Wall-clock limit of a function that sets none, e.g. 5s [default: 5s]
    #[arg(long, env = "AGENTVAULT_FUNCTION_TIMEOUT", value_name = "DURATION")]
    pub function_timeout: Option<String>,
    /// Time for a client to send a complete request head, counted from the connection's start or
    /// the end of its previous response (so also how long an idle keep-alive connection stays
    /// open), e.g. 10s [default: 10s]
    #[arg(long, env = "AGENTVAULT_HEADER_TIMEOUT", value_name = "DURATION")]
    pub header_timeout: Option<String>,
    /// Time for a request body to arrive whole once its head has, e.g. 30s [default: 30s]
    #[arg(long, env = "AGENTVAULT_BODY_TIMEOUT", value_name = "DURATION")]
    pub body_timeout: Option<String>,
    /// Client connections served at once; past it new ones get a 503 and are closed. Lowered to
    /// what the open-file limit allows [default: 4096]
    #[arg(long, env = "AGENTVAULT_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Function invocations running at once on the server; more wait for a slot [default: 32]
    #[arg(long, env = "AGENTVAULT_FUNCTION_MAX_RUNNING", value_name = "N")]
    pub function_max_running: Option<usize>,
    /// Function invocations one workspace may run at once, less than --function-max-running;
    /// more are refused with 429 [default: 16]
    #[arg(long, env = "AGENTVAULT_FUNCTION_MAX_PER_WORKSPACE", value_name = "N")]
    pub function_max_per_workspace: Option<usize>,
    /// Function invocations one agent may run at once; more are refused with 429 [default: 8]
    #[arg(long, env = "AGENTVAULT_FUNCTION_MAX_PER_AGENT", value_name = "N")]
    pub function_max_per_agent: Option<usize>,
    /// A destination functions may reach although it is private or on another port than 80
    /// and 443, e.g. an on-premises API: host:port (repeat the flag, or separate with commas)
    /// [default: none]
    #[arg(long, env = "AGENTVAULT_EGRESS_ALLOW", value_name = "HOST:PORT", value_delimiter = ',')]
    pub egress_allow: Vec<String>,
    /// A CA certificate file (PEM) the egress proxy trusts, besides the system's roots, when it
    /// connects with TLS to a host it injects credentials into (repeat the flag, or separate with
    /// commas) [default: none]
    #[arg(long, env = "AGENTVAULT_EGRESS_CA", value_name = "FILE", value_delimiter = ',')]
    pub egress_ca: Vec<PathBuf>,
    /// How long audit records are kept, e.g. 400d, or forever; older ones are dropped (with the
    /// export stream on, only once it has written them) [default: 400d]
    #[arg(long, env = "AGENTVAULT_AUDIT_RETENTION", value_name = "DURATION")]
    pub audit_retention: Option<String>,
    /// Write every audit record as a JSON line to this file (renamed with the time appended at
    /// --audit-export-rotate-mb, and a new one started) [default: none]
    #[arg(long, env = "AGENTVAULT_AUDIT_EXPORT_FILE", value_name = "FILE", conflicts_with = "audit_export_command")]
    pub audit_export_file: Option<PathBuf>,
    /// Write every audit record as a JSON line to the standard input of this command (run with
    /// sh -c, started again if it exits), e.g. a SIEM's shipper [default: none]
    #[arg(long, env = "AGENTVAULT_AUDIT_EXPORT_COMMAND", value_name = "COMMAND", hide_env_values = true)]
    pub audit_export_command: Option<String>,
    /// Size in MiB at which the export file is rotated [default: 100]
    #[arg(long, env = "AGENTVAULT_AUDIT_EXPORT_ROTATE_MB", value_name = "MIB")]
    pub audit_export_rotate_mb: Option<u64>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    database_max_connections: Option<u32>,
    max_read_model_lag: Option<String>,
    root_key_file: Option<PathBuf>,
    log: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    session_ttl: Option<String>,
    invitation_ttl: Option<String>,
    secure_cookies: Option<bool>,
    trust_forwarded_for: Option<bool>,
    login_max_per_client: Option<u32>,
    login_max_failures: Option<u32>,
    login_window: Option<String>,
    sandbox: Option<String>,
    python: Option<String>,
    function_memory_mb: Option<u64>,
    function_timeout: Option<String>,
    header_timeout: Option<String>,
    body_timeout: Option<String>,
    max_connections: Option<usize>,
    function_max_running: Option<usize>,
    function_max_per_workspace: Option<usize>,
    function_max_per_agent: Option<usize>,
    egress_allow: Option<Vec<String>>,
    egress_ca: Option<Vec<PathBuf>>,
    audit_retention: Option<String>,
    audit_export_file: Option<PathBuf>,
    audit_export_command: Option<String>,
    audit_export_rotate_mb: Option<u64>,
}

/// Where the root keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `AGENTVAULT_ROOT_KEY`.
    Env,
    /// A key file given by the operator.
    File(PathBuf),
    /// The file in the data directory, generated on first start.
    Generated(PathBuf),
}

/// Where agentvault keeps its data.
#[derive(Debug, Clone)]
pub enum Database {
    /// The embedded SQLite database in the data directory.
    Sqlite(PathBuf),
    /// PostgreSQL, with at most this many connections.
    Postgres(agentvault_store::DatabaseUrl, u32),
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database: Database,
    pub key_source: KeySource,
    pub log: String,
    /// Certificate and key files, for HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub server: agentvault_server::ServerOptions,
}

/// A duration such as `90s`, `15m`, `12h` or `7d`.
fn duration(what: &str, text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 =
        number.parse().map_err(|_| format!("{what} '{text}' is not a duration such as 90s, 15m, 12h or 7d"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("{what} '{text}' has an unknown unit; use s, m, h or d")),
    };
    if secs == 0 {
        return Err(format!("{what} must be longer than zero"));
    }
    Ok(Duration::from_secs(secs))
}

impl Config {
    pub fn resolve(args: ConfigArgs) -> Result<Config, String> {
        let file = match &args.config {
            Some(path) => read_file_config(path)?,
            None => FileConfig::default(),
        };
        let listen_text = args.listen.or(file.listen).unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = listen_text.parse::<SocketAddr>().map_err(|_| {
            format!("listen address '{listen_text}' is not an IP:port such as 127.0.0.1:8437 or 0.0.0.0:8437")
        })?;
        let data_dir = args.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let database = match args.database_url.or(file.database_url).filter(|u| !u.trim().is_empty()) {
            Some(url) => {
                let url = agentvault_store::DatabaseUrl::parse(&url).map_err(|e| e.message.into_owned())?;
                let max = args.database_max_connections.or(file.database_max_connections).unwrap_or(16);
                if !(2..=1000).contains(&max) {
                    return Err(format!("database max connections {max} is outside 2 to 1000"));
                }
                Database::Postgres(url, max)
            }
            None => Database::Sqlite(data_dir.join("agentvault.db")),
        };
        let key_source = if std::env::var_os("AGENTVAULT_ROOT_KEY").is_some() {
            KeySource::Env
        } else if let Some(f) = args.root_key_file.or(file.root_key_file) {
            KeySource::File(f)
        } else {
            KeySource::Generated(data_dir.join("root.key"))
        };
        let tls = match (args.tls_cert.or(file.tls_cert), args.tls_key.or(file.tls_key)) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err("give both a TLS certificate and a TLS key (--tls-cert and --tls-key), or neither".into()),
        };
        let defaults = agentvault_server::ServerOptions::default();
        let mut limits = defaults.login_limits.clone();
        if let Some(n) = args.login_max_per_client.or(file.login_max_per_client) {
            limits.per_client = n;
        }
        if let Some(n) = args.login_max_failures.or(file.login_max_failures) {
            limits.failures_per_account = n;
        }
        if let Some(w) = args.login_window.or(file.login_window) {
            limits.window = duration("login window", &w)?;
        }
        let mut server = agentvault_server::ServerOptions {
            session_ttl: match args.session_ttl.or(file.session_ttl) {
                Some(t) => duration("session TTL", &t)?,
                None => defaults.session_ttl,
            },
            invitation_ttl: match args.invitation_ttl.or(file.invitation_ttl) {
                Some(t) => duration("invitation TTL", &t)?,
                None => defaults.invitation_ttl,
            },
            secure_cookies: args.secure_cookies.or(file.secure_cookies).unwrap_or(tls.is_some()),
            trust_forwarded_for: args.trust_forwarded_for.or(file.trust_forwarded_for).unwrap_or(false),
            login_limits: limits,
            runtime: runtime_options(
                args.sandbox.or(file.sandbox),
                args.python.or(file.python),
                args.function_memory_mb.or(file.function_memory_mb),
                args.function_timeout.or(file.function_timeout),
            )?,
            connections: defaults.connections.clone(),
            max_read_model_lag: match args.max_read_model_lag.or(file.max_read_model_lag) {
                Some(t) => duration("max read model lag", &t)?,
                None => defaults.max_read_model_lag,
            },
            egress_allow: Vec::new(),
            egress_ca: Vec::new(),
            audit_retention: defaults.audit_retention,
            audit_export: None,
        };
        if let Some(t) = args.header_timeout.or(file.header_timeout) {
            let d = duration("header timeout", &t)?;
            if d > Duration::from_secs(3600) {
                return Err(format!("header timeout {t} is over the limit of 1h"));
            }
            server.connections.header_timeout = d;
        }
        if let Some(t) = args.body_timeout.or(file.body_timeout) {
            let d = duration("body timeout", &t)?;
            if d > Duration::from_secs(3600) {
                return Err(format!("body timeout {t} is over the limit of 1h"));
            }
            server.connections.body_timeout = d;
        }
        if let Some(n) = args.max_connections.or(file.max_connections) {
            if !(1..=1_000_000).contains(&n) {
                return Err(format!("max connections {n} is outside 1 to 1000000"));
            }
            server.connections.max_connections = n;
        }
        function_concurrency(
            &mut server.runtime,
            args.function_max_running.or(file.function_max_running),
            args.function_max_per_workspace.or(file.function_max_per_workspace),
            args.function_max_per_agent.or(file.function_max_per_agent),
        )?;
        let allow =
            if args.egress_allow.is_empty() { file.egress_allow.unwrap_or_default() } else { args.egress_allow };
        for a in allow.iter().filter(|a| !a.trim().is_empty()) {
            server.egress_allow.push(agentvault_server::egress::policy::OperatorAllow::parse(a)?);
        }
        server.egress_ca = if args.egress_ca.is_empty() { file.egress_ca.unwrap_or_default() } else { args.egress_ca };
        server.audit_retention = match args.audit_retention.or(file.audit_retention).as_deref().map(str::trim) {
            None => defaults.audit_retention,
            Some("forever") => None,
            Some(t) => {
                let d = duration("audit retention", t)?;
                if d < Duration::from_secs(86_400) {
                    return Err(format!(
                        "audit retention {t} is under a day; give a longer period such as 400d, or forever"
                    ));
                }
                Some(d)
            }
        };
        let rotate_mb = args.audit_export_rotate_mb.or(file.audit_export_rotate_mb).unwrap_or(100);
        if rotate_mb == 0 {
            return Err("audit export rotate size must be at least 1 (MiB)".into());
        }
        server.audit_export = match (
            args.audit_export_file.or(file.audit_export_file),
            args.audit_export_command.or(file.audit_export_command),
        ) {
            (Some(_), Some(_)) => {
                return Err("give an audit export file or an audit export command, not both".into());
            }
            (Some(path), None) => Some(agentvault_server::audit_upkeep::ExportTarget::File {
                path,
                rotate_bytes: rotate_mb.saturating_mul(1024 * 1024),
            }),
            (None, Some(c)) if c.trim().is_empty() => {
                return Err("the audit export command is empty".into());
            }
            (None, Some(c)) => Some(agentvault_server::audit_upkeep::ExportTarget::Command(c)),
            (None, None) => None,
        };
        // Workers never see agentvault's own files.
        server.runtime.hidden_paths.push(data_dir.clone());
        if let KeySource::File(f) = &key_source {
            server.runtime.hidden_paths.push(f.clone());
        }
        if let Some((cert, key)) = &tls {
            server.runtime.hidden_paths.extend([cert.clone(), key.clone()]);
        }
        if let Some(c) = &args.config {
            server.runtime.hidden_paths.push(c.clone());
        }
        Ok(Config {
            listen,
            data_dir,
            database,
            key_source,
            log: args.log.or(file.log).unwrap_or_else(|| "info".to_owned()),
            tls,
            server,
        })
    }

    /// Whether the database already holds agentvault's data (PostgreSQL: assumed; it is asked
    /// when opened).
    pub fn database_exists(&self) -> bool {
        match &self.database {
            Database::Sqlite(path) => path.exists(),
            Database::Postgres(..) => true,
        }
    }

    /// Opens the store, applying pending migrations. The caller holds the data directory's lock
    /// (`root_key::lock_data_dir`): one process at a time works on a data directory.
    pub async fn open_store(&self) -> Result<Arc<dyn Store>, String> {
        match &self.database {
            Database::Sqlite(path) => Ok(Arc::new(SqliteStore::open(path).await.map_err(crate::describe)?)),
            Database::Postgres(url, max) => {
                Ok(Arc::new(PostgresStore::open(url, *max).await.map_err(crate::describe)?))
            }
        }
    }
}

/// How agents' functions run: the interpreter, the sandbox and the limits.
fn runtime_options(
    sandbox: Option<String>,
    python: Option<String>,
    memory_mb: Option<u64>,
    timeout: Option<String>,
) -> Result<agentvault_runtime::RuntimeOptions, String> {
    let mut opts = agentvault_runtime::RuntimeOptions::default();
    if let Some(mode) = sandbox {
        opts.sandbox = agentvault_runtime::SandboxMode::parse(&mode)
            .ok_or_else(|| format!("sandbox '{mode}' is not one of auto, bwrap, off"))?;
    }
    if let Some(p) = python.filter(|p| !p.is_empty()) {
        opts.python = p;
    }
    if let Some(mb) = memory_mb {
        if !(64..=65_536).contains(&mb) {
            return Err(format!("function memory {mb} MiB is outside 64 to 65536"));
        }
        opts.limits.memory_bytes = mb << 20;
    }
    if let Some(t) = timeout {
        let d = duration("function timeout", &t)?;
        if d > Duration::from_secs(60) {
            return Err(format!("function timeout {t} is over the limit of 60s"));
        }
        opts.default_timeout = d;
    }
    Ok(opts)
}

/// How many invocations run at once: on the server, per workspace, per agent. One workspace's
/// share is smaller than the whole, so that it cannot keep other workspaces' functions waiting.
fn function_concurrency(
    opts: &mut agentvault_runtime::RuntimeOptions,
    running: Option<usize>,
    per_workspace: Option<usize>,
    per_agent: Option<usize>,
) -> Result<(), String> {
    for (name, value) in [
        ("--function-max-running", running),
        ("--function-max-per-workspace", per_workspace),
        ("--function-max-per-agent", per_agent),
    ] {
        if let Some(n) = value.filter(|n| !(1..=10_000).contains(n)) {
            return Err(format!("{name} is {n}; it must be between 1 and 10000"));
        }
    }
    opts.max_running = running.unwrap_or(opts.max_running);
    // An unset share follows a smaller server-wide limit.
    opts.max_per_workspace = per_workspace.unwrap_or(opts.max_per_workspace.min(opts.max_running.div_ceil(2)));
    opts.max_per_agent = per_agent.unwrap_or(opts.max_per_agent.min(opts.max_per_workspace));
    if opts.max_running < 2 {
        return Err("--function-max-running must be at least 2, so that one workspace cannot take every slot".into());
    }
    if opts.max_per_workspace >= opts.max_running {
        return Err(format!(
            "--function-max-per-workspace ({}) must be less than --function-max-running ({}), so that one workspace \
             cannot take every slot",
            opts.max_per_workspace, opts.max_running
        ));
    }
    if opts.max_per_agent > opts.max_per_workspace {
        return Err(format!(
            "--function-max-per-agent ({}) must not be more than --function-max-per-workspace ({})",
            opts.max_per_agent, opts.max_per_workspace
        ));
    }
    Ok(())
}

fn read_file_config(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("config file {} is invalid: {e}", path.display()))
}

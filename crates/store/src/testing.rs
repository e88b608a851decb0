//! A throwaway PostgreSQL for tests (with the `conformance` feature): the cluster named by
//! `AGENTVAULT_TEST_DATABASE_URL` when it is set, else one started on first use with `initdb` and
//! `pg_ctl` from `/usr/lib/postgresql/<version>/bin` (or `AGENTVAULT_PG_BIN`) in a temporary
//! folder, on a free port of 127.0.0.1. PostgreSQL refuses to run as root, so under root the
//! cluster runs as the `postgres` user (`runuser`). A watchdog stops it and removes its folder
//! once the test process has ended, however it ends. Every caller gets a database of its own.

// Test support: a test that cannot get its database fails, with what is missing.
#![allow(clippy::panic, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::Connection;

use crate::DatabaseUrl;

pub struct TestPostgres {
    /// `postgres://user@host:port` (no database).
    server: String,
    next: AtomicU32,
}

static SHARED: OnceLock<TestPostgres> = OnceLock::new();

impl TestPostgres {
    /// The cluster of this test process, started on first use. Panics with what is missing when
    /// PostgreSQL cannot be started (the test script installs it).
    pub fn shared() -> &'static TestPostgres {
        SHARED.get_or_init(|| {
            let server = match std::env::var("AGENTVAULT_TEST_DATABASE_URL") {
                Ok(url) if !url.trim().is_empty() => server_part(url.trim()),
                _ => start_cluster().unwrap_or_else(|e| panic!("cannot start a PostgreSQL for the tests: {e}")),
            };
            TestPostgres { server, next: AtomicU32::new(0) }
        })
    }

    /// A new, empty database on the cluster.
    pub async fn database(&self) -> DatabaseUrl {
        let name = format!("agentvault_test_{}_{}", std::process::id(), self.next.fetch_add(1, Ordering::Relaxed));
        let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", self.server))
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL at {}: {e}", self.server));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create the test database {name}: {e}"));
        let _ = admin.close().await;
        DatabaseUrl::parse(&format!("{}/{name}", self.server)).expect("a test database URL")
    }

    /// `postgres://user@host:port`, for tests that run SQL of their own (e.g. to end connections).
    pub fn server(&self) -> &str {
        &self.server
    }
}

/// `postgres://user:pass@host:port/db?x` → `postgres://user:pass@host:port`.
fn server_part(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    format!("{scheme}://{authority}")
}

fn bin_dir() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("AGENTVAULT_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| "PostgreSQL is not installed (no /usr/lib/postgresql; apt-get install postgresql)".to_owned())?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().ok_or_else(|| "no initdb under /usr/lib/postgresql/*/bin".to_owned())
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

/// Runs `program args` as the cluster's owner.
fn as_owner(program: &Path, args: &[&str]) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program).args(args);
        c
    } else {
        let mut c = Command::new(program);
        c.args(args);
        c
    }
}

fn run(mut c: Command, what: &str) -> Result<(), String> {
    let out = c.stdin(Stdio::null()).output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

/// A cluster of this test process's own, which a test may stop and start again (to see what
/// agentvault does while its database is away). Stopped and removed when the process ends.
pub struct Cluster {
    bin: PathBuf,
    data: String,
    log: String,
    options: String,
    port: u16,
}

impl Cluster {
    /// Initializes and starts a new cluster.
    pub fn start_new() -> Result<Cluster, String> {
        Cluster::start_new_with(None)
    }

    /// Initializes and starts a new cluster that also accepts TLS, with this certificate chain
    /// and key (PEM).
    pub fn start_new_with_tls(cert_pem: &str, key_pem: &str) -> Result<Cluster, String> {
        Cluster::start_new_with(Some((cert_pem, key_pem)))
    }

    fn start_new_with(tls: Option<(&str, &str)>) -> Result<Cluster, String> {
        let bin = bin_dir()?;
        let dir = std::env::temp_dir().join(format!("agentvault-pg-{}-{}", std::process::id(), now_nanos()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if is_root() {
            let mut c = Command::new("chown");
            c.arg("postgres:postgres").arg(&dir);
            run(c, "chown of the cluster folder to postgres")?;
        }
        let data = dir.join("data").to_string_lossy().into_owned();
        let dir_s = dir.to_string_lossy().into_owned();
        let initdb = ["-D", &data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"];
        run(as_owner(&bin.join("initdb"), &initdb), "initdb")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        // A throwaway cluster: durability of PostgreSQL itself is not under test.
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {dir_s} -c fsync=off -c full_page_writes=off -c max_connections=300"
        );
        if let Some((cert, key)) = tls {
            use std::os::unix::fs::PermissionsExt;
            let (cert_path, key_path) = (dir.join("server.crt"), dir.join("server.key"));
            std::fs::write(&cert_path, cert).map_err(|e| format!("{}: {e}", cert_path.display()))?;
            std::fs::write(&key_path, key).map_err(|e| format!("{}: {e}", key_path.display()))?;
            // PostgreSQL refuses a key that others may read.
            std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("{}: {e}", key_path.display()))?;
            if is_root() {
                let mut c = Command::new("chown");
                c.arg("postgres:postgres").arg(&cert_path).arg(&key_path);
                run(c, "chown of the certificate to postgres")?;
            }
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert_path.display(),
                key_path.display()
            ));
        }
        let cluster = Cluster { log: format!("{dir_s}/log"), bin, data, options, port };
        cluster.start()?;
        // Stops the cluster and removes its folder once this process has ended.
        let watchdog = format!(
            "while [ -d /proc/{pid} ]; do sleep 1; done; {pg_ctl} -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {dir_s}",
            pid = std::process::id(),
            pg_ctl = cluster.bin.join("pg_ctl").display(),
            data = cluster.data,
        );
        let mut c = Command::new("setsid");
        if is_root() {
            c.args(["runuser", "-u", "postgres", "--"]);
        }
        c.args(["sh", "-c", &watchdog]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        c.spawn().map_err(|e| format!("the cluster's watchdog: {e}"))?;
        Ok(cluster)
    }

    /// `postgres://postgres@127.0.0.1:PORT` (no database).
    pub fn server(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// Starts the (stopped) cluster and waits until it accepts connections.
    pub fn start(&self) -> Result<(), String> {
        let args = ["-D", &self.data, "-l", &self.log, "-o", &self.options, "-w", "start"];
        run(as_owner(&self.bin.join("pg_ctl"), &args), "pg_ctl start")
    }

    /// Stops the cluster (fast: open connections are ended).
    pub fn stop(&self) -> Result<(), String> {
        run(as_owner(&self.bin.join("pg_ctl"), &["-D", &self.data, "-m", "fast", "-w", "stop"]), "pg_ctl stop")
    }
}

fn start_cluster() -> Result<String, String> {
    // The shared cluster lives as long as the process.
    let cluster = Cluster::start_new()?;
    Ok(cluster.server())
}

impl TestPostgres {
    /// Databases on `cluster` (a cluster of the test's own).
    pub fn on(cluster: &Cluster) -> TestPostgres {
        TestPostgres { server: cluster.server(), next: AtomicU32::new(0) }
    }
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

//! The storage backend the suite runs on: the embedded SQLite by default, PostgreSQL with
//! `AGENTVAULT_TEST_BACKEND=postgres` (a throwaway cluster the harness starts itself, or the one
//! `AGENTVAULT_TEST_DATABASE_URL` names). On PostgreSQL each data directory gets a database of its
//! own, made on first use and remembered beside the directory, so a restart in the same
//! directory finds its data again.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use agentvault_store::testing::TestPostgres;

pub fn on_postgres() -> bool {
    std::env::var("AGENTVAULT_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// Says that a test checks something only the SQLite backend has (its files on disk) and is left
/// out of the PostgreSQL run; true when it is.
pub fn sqlite_only(what: &str) -> bool {
    if on_postgres() {
        eprintln!("not on PostgreSQL: {what} is about the SQLite backend");
    }
    on_postgres()
}

fn remembered(dir: &Path) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(".database-url");
    PathBuf::from(name)
}

/// A new database on the test cluster, as a URL with its password.
pub fn new_database() -> String {
    new_database_on(TestPostgres::shared())
}

/// A new database on `pg`'s cluster.
pub fn new_database_on(pg: &TestPostgres) -> String {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let rt = RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap());
    rt.block_on(pg.database()).reveal().to_owned()
}

/// On PostgreSQL, the database URL of data directory `dir`.
pub fn database_url(dir: &Path) -> Option<String> {
    if !on_postgres() {
        return None;
    }
    let file = remembered(dir);
    if let Ok(url) = std::fs::read_to_string(&file) {
        return Some(url);
    }
    let url = new_database();
    std::fs::write(&file, &url).unwrap();
    Some(url)
}

/// `cmd` pointed at the database of data directory `dir` (nothing to do on SQLite).
pub fn on_database(cmd: &mut std::process::Command, dir: &Path) {
    if let Some(url) = database_url(dir) {
        cmd.env("AGENTVAULT_DATABASE_URL", url);
    }
}

//! `agentvault migrate-store`: moves a whole installation from its SQLite database into a new,
//! empty PostgreSQL database (see `agentvault_store::transfer`).

use std::path::{Path, PathBuf};

use agentvault_core::model::Binding;
use agentvault_crypto::Keyring;
use agentvault_store::{DatabaseUrl, PostgresStore, SealedVersion, SqliteStore, transfer};
use clap::Args;

use crate::config::KeySource;
use crate::root_key::{load_existing_keyring, lock_data_dir};

#[derive(Args, Debug)]
pub struct MigrateStoreArgs {
    /// The SQLite database to move, e.g. sqlite:///var/lib/agentvault/agentvault.db. No server
    /// may be running on it (its data directory's lock is taken for the copy).
    #[arg(long, value_name = "URL")]
    pub from: String,
    /// The new, empty PostgreSQL database, e.g. postgres://agentvault:PASSWORD@db.example.com/agentvault
    /// (better given as AGENTVAULT_DATABASE_URL, out of the process list). Its schema is made by
    /// agentvault's migrations; a database that already holds data is refused.
    #[arg(long, env = "AGENTVAULT_DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub to: String,
    /// Root keyring file, to open a sample of the copied values [default: root.key beside the
    /// database]. AGENTVAULT_ROOT_KEY (base64 keys, comma-separated) takes precedence.
    #[arg(long, env = "AGENTVAULT_ROOT_KEY_FILE", value_name = "FILE")]
    pub root_key_file: Option<PathBuf>,
    /// Log filter [default: warn]
    #[arg(long, env = "AGENTVAULT_LOG", value_name = "FILTER")]
    pub log: Option<String>,
}

/// `sqlite:///abs/path`, `sqlite://rel/path` or a plain path.
fn sqlite_path(from: &str) -> Result<PathBuf, String> {
    let from = from.trim();
    let path = match from.strip_prefix("sqlite://") {
        Some(p) => p,
        None if from.contains("://") => {
            let scheme = from.split("://").next().unwrap_or("");
            return Err(format!(
                "--from must be the SQLite database to move, as sqlite:///path/to/agentvault.db (not a {scheme}:// URL)"
            ));
        }
        None => from,
    };
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() {
        return Err("--from names no file; give sqlite:///path/to/agentvault.db".into());
    }
    Ok(PathBuf::from(path))
}

pub async fn run(args: MigrateStoreArgs) -> Result<(), String> {
    crate::serve::init_logging(args.log.as_deref().unwrap_or("warn"));
    crate::serve::harden_process();
    let db = sqlite_path(&args.from)?;
    let url = DatabaseUrl::parse(&args.to).map_err(|e| format!("--to: {}", e.message))?;
    transfer::check_sqlite_source(&db).await.map_err(crate::describe)?;
    let data_dir = match db.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // No server may change the source during the copy (nor start on it meanwhile).
    let _lock = lock_data_dir(&data_dir)?;
    let source = if std::env::var_os("AGENTVAULT_ROOT_KEY").is_some() {
        KeySource::Env
    } else {
        KeySource::File(args.root_key_file.clone().unwrap_or_else(|| data_dir.join("root.key")))
    };
    let ring = load_existing_keyring(&source)?;
    transfer::check_postgres_target(&url).await.map_err(crate::describe)?;

    // Opening the SQLite store moves any records still in its audit journal into the table.
    let src = SqliteStore::open(&db).await.map_err(crate::describe)?;
    let dst = match PostgresStore::open(&url, 4).await {
        Ok(d) => d,
        Err(e) => {
            src.close().await;
            return Err(crate::describe(e));
        }
    };
    let open = |v: &SealedVersion| open_sample(&ring, v);
    let result = transfer::copy_sqlite_to_postgres(&src, &dst, &open).await;
    src.close().await;
    dst.close().await;
    let report = result.map_err(|e| format!("{}; the target database was left as it was", crate::describe(e)))?;
    print_summary(&db, &url, &report);
    Ok(())
}

fn open_sample(ring: &Keyring, v: &SealedVersion) -> Result<(), String> {
    let env_id = v.env.map(|e| e.binding_id(&v.secret_id));
    let secret_id = env_id.as_deref().unwrap_or(&v.secret_id);
    let binding = Binding { workspace_id: &v.workspace_id, secret_id, version: v.version };
    ring.open(binding, &v.sealed).map(drop).map_err(|e| e.to_string())
}

fn print_summary(db: &Path, url: &DatabaseUrl, report: &transfer::CopyReport) {
    println!("moved {} into {url}:", db.display());
    for (table, rows) in &report.tables {
        println!("  {table:<22} {rows:>9} rows");
    }
    println!(
        "row counts match; {} of the newest sealed values were opened with the root key on the target; audit records \
         continue at {}, changes at {}",
        report.verified,
        report.audit_seq + 1,
        report.change_seq + 1
    );
    println!(
        "next: start the servers with AGENTVAULT_DATABASE_URL set to the new database and the same root key \
         (AGENTVAULT_ROOT_KEY or --root-key-file; the key is not in the database). Keep {} as a backup; agentvault \
         no longer writes to it.",
        db.display()
    );
}

#[cfg(test)]
mod tests {
    use super::sqlite_path;

    #[test]
    fn the_source_is_an_sqlite_url_or_a_path() {
        assert_eq!(
            sqlite_path("sqlite:///var/lib/av/agentvault.db").unwrap().to_str(),
            Some("/var/lib/av/agentvault.db")
        );
        assert_eq!(sqlite_path("data/agentvault.db").unwrap().to_str(), Some("data/agentvault.db"));
        assert!(sqlite_path("postgres://u:p@h/db").unwrap_err().contains("sqlite:///"));
        assert!(sqlite_path("sqlite://").is_err());
    }
}

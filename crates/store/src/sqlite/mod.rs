//! The SQLite backend: one file in WAL mode. Mutations go through a single writer connection
//! with `synchronous=FULL` (an acknowledged change survives a crash of the process and of the
//! machine); queries use a small pool of reader connections, which WAL lets run beside the
//! writers.
//!
//! Audit appends of agent reads take another road. They sit on the hot path (a read is answered
//! only once its record is durable), so they are appended to a journal file on the calling
//! thread and moved into the table in the background (see [`journal`]). The mover uses a
//! rusqlite connection — the same SQLite library (`libsqlite3-sys`) that sqlx uses — because it
//! is a plain thread doing blocking work, where sqlx would add a hand-off to its own worker
//! thread for every statement.
//!
//! The statements are written to run on PostgreSQL too (`$n` parameters, `ON CONFLICT`, no
//! SQLite functions); what only SQLite has (the pragmas, `BEGIN IMMEDIATE`, the WAL checkpoint,
//! the journal) stays in this module.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use agentvault_core::audit::{AuditEvent, AuditEventRef};
use agentvault_core::{Error, Result};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqliteConnection, SqlitePool};

use crate::errors::DbResult;

/// The insert of one audit record (`columns!(audit)`, in order), shared by transactions and the
/// journal's mover.
macro_rules! audit_insert {
    () => {
        concat!(
            "INSERT INTO audit_log (",
            crate::rows::columns!(audit),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        )
    };
}

/// Brings one agent's last read of a secret (`rules::last_reads_in`) up to date.
const LAST_READ_UPSERT: &str = "INSERT INTO secret_last_reads (workspace_id, secret_name, agent_id, at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (workspace_id, secret_name, agent_id) \
     DO UPDATE SET at = excluded.at WHERE excluded.at > secret_last_reads.at";

mod journal;
mod migrate;

// The SQL every backend shares (`crate::sql`), compiled here for SQLite.
type Backend = SqliteStore;
type Conn = SqliteConnection;
type Db = Sqlite;
crate::shared_sql!();

use journal::AuditJournal;

pub struct SqliteStore {
    write: SqlitePool,
    journal: Option<AuditJournal>,
    /// The next audit sequence number (records are ordered by it, across workspaces).
    audit_seq: Arc<AtomicI64>,
    read: SqlitePool,
    /// The newest change committed here, and its wake-up for the change feed's reader.
    committed: AtomicI64,
    changed: tokio::sync::Notify,
    /// This process's name in the change feed.
    origin: String,
}

impl SqliteStore {
    /// An audit append is a copy into the journal's mapped file.
    const APPENDS_AUDIT_LOCALLY: bool = true;

    /// Opens (creating if needed) the database file and applies pending migrations.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        let base = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            // Deleted rows are overwritten with zeros, not just unlinked: deleted secrets' and
            // retired wrapped data keys must not linger in free space (see `scrub_deleted`).
            .pragma("secure_delete", "on")
            .busy_timeout(Duration::from_secs(10));
        let connect = |sync: SqliteSynchronous, max: u32| {
            SqlitePoolOptions::new()
                .max_connections(max)
                .min_connections(1)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(base.clone().synchronous(sync))
        };
        let write = connect(SqliteSynchronous::Full, 1)
            .await
            .map_err(|e| Error::unavailable(format!("cannot open the database {}: {e}", path.display())))?;
        migrate::run(&write).await?;
        let read = connect(SqliteSynchronous::Normal, 4).await.map_err(crate::errors::DbError::from)?;
        let mut store = SqliteStore {
            read,
            write,
            journal: None,
            audit_seq: Arc::new(AtomicI64::new(1)),
            committed: AtomicI64::new(0),
            changed: tokio::sync::Notify::new(),
            origin: crate::new_origin(),
        };
        // After the migrations: the journal's replay needs the table.
        let mut journal_prefix = path.as_os_str().to_owned();
        journal_prefix.push("-audit-journal");
        store.journal = Some(AuditJournal::open(
            Path::new(&journal_prefix),
            open_audit_connection(path)?,
            store.audit_seq.clone(),
        )?);
        Ok(store)
    }

    /// The reader connections (for `transfer`, which copies the tables as they are).
    pub(crate) fn read_pool(&self) -> &SqlitePool {
        &self.read
    }

    fn journal(&self) -> Result<&AuditJournal> {
        self.journal.as_ref().ok_or_else(|| Error::internal("the audit journal is not open"))
    }

    /// Starts a write transaction: `BEGIN IMMEDIATE` takes the write lock at once, so the reads
    /// a transaction's checks make cannot be outdated by another writer before it commits.
    async fn begin(&self) -> DbResult<WriteTx<'_>> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        let change = changes::next_number(&mut tx).await?;
        Ok(WriteTx { tx, store: self, change })
    }

    /// A transaction for upkeep that is no change of the data (the audit log's compaction and
    /// retention): it takes the write lock at once, and no change number.
    async fn begin_upkeep(&self) -> DbResult<sqlx::Transaction<'static, Sqlite>> {
        Ok(self.write.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Only this process writes an SQLite database: its own commits are every change there is.
    async fn wait_for_changes(&self, timeout: Duration) -> bool {
        let _ = tokio::time::timeout(timeout, self.changed.notified()).await;
        false
    }

    /// Copies every page of the WAL into the database file and truncates the WAL, after a delete
    /// or a re-wrap: `secure_delete` zeroes the deleted cells in the new page images, but until
    /// the checkpoint the old images still sit in the database file, and the WAL still holds the
    /// frames that wrote them. Waits for readers (the busy timeout) and retries for a few seconds;
    /// if the WAL stays busy the next checkpoint (at the latest, the close) finishes the job.
    async fn scrub_deleted(&self) {
        for _ in 0..50 {
            match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(TRUNCATE)").fetch_one(&self.write).await {
                Ok((0, _, _)) => return,
                Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => {
                    tracing::warn!(error = %e, "checkpointing the WAL after a delete failed");
                    return;
                }
            }
        }
        tracing::warn!("the WAL stayed busy; deleted key material leaves it at the next checkpoint");
    }

    /// Appends agent-read audit records to the journal on the calling thread (see [`journal`]):
    /// synchronous on purpose, one short copy into the journal's mapped file.
    async fn append_audit_records(&self, events: Vec<AuditEvent>) -> DbResult<()> {
        self.append_audit_records_now(&events.iter().map(AuditEvent::view).collect::<Vec<_>>())
    }

    fn append_audit_records_now(&self, events: &[AuditEventRef<'_>]) -> DbResult<()> {
        Ok(self.journal()?.append(events)?)
    }

    /// Moves the records still in the journal into the table, before the log is queried.
    fn settle_audit(&self) -> DbResult<()> {
        Ok(self.journal()?.sync()?)
    }

    /// Closes every connection, checkpointing the WAL.
    pub async fn close(&self) {
        if let Some(j) = &self.journal {
            j.close();
        }
        self.read.close().await;
        self.write.close().await;
    }
}

type WriteTx<'s> = crate::write_tx::WriteTx<'s, SqliteStore>;

impl crate::write_tx::Committer for SqliteStore {
    type Db = Sqlite;

    async fn insert_audit(&self, conn: &mut SqliteConnection, audit: &[AuditEvent]) -> DbResult<()> {
        for e in audit {
            sqlx::query(audit_insert!())
                .bind(self.audit_seq.fetch_add(1, Ordering::Relaxed))
                .bind(e.at)
                .bind(e.workspace_id.as_str())
                .bind(e.actor.kind())
                .bind(e.actor.id())
                .bind(e.action.as_str())
                .bind(e.outcome.as_str())
                .bind(e.secret_name.as_deref())
                .bind(e.agent_id.as_deref())
                .bind(e.target_id.as_deref())
                .bind(e.detail.as_deref())
                .execute(&mut *conn)
                .await?;
        }
        for r in crate::rules::last_reads_in(audit.iter().map(AuditEvent::view)) {
            sqlx::query(LAST_READ_UPSERT)
                .bind(r.workspace_id)
                .bind(r.secret_name)
                .bind(r.agent_id)
                .bind(r.at)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    async fn record_change(&self, conn: &mut SqliteConnection, change: i64, audit: &[AuditEvent]) -> DbResult<()> {
        changes::record(conn, change, audit, &self.origin).await
    }

    fn committed(&self) -> (&AtomicI64, &tokio::sync::Notify) {
        (&self.committed, &self.changed)
    }
}

/// Opens the connection the audit journal moves records with.
fn open_audit_connection(path: &Path) -> Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path).map_err(|e| {
        Error::unavailable(format!("cannot open the database {} for the audit log: {e}", path.display()))
    })?;
    let setup = conn.busy_timeout(Duration::from_secs(10)).and_then(|_| {
        // NORMAL: the journal, not this commit, is what makes a record durable first.
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
    });
    setup.map_err(|e| Error::internal(format!("sqlite audit connection: {e}")))?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::SqliteStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_passes_the_store_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("agentvault.db")).await.unwrap();
        crate::conformance::run_all(&store).await;
        store.close().await;
    }
}

//! The PostgreSQL backend: several agentvault replicas share one database. It runs the same SQL
//! as SQLite (`crate::sql`); what differs is here:
//!
//! - *Writers are serialized by a row lock.* Every mutating transaction starts by taking the next
//!   number of the `changes` counter (`UPDATE … RETURNING`), which holds that row's lock until
//!   commit. So, as with SQLite's single writer, the checks a transaction makes (the last admin,
//!   a secret's version) cannot be outdated by another writer — on any replica — before it
//!   commits, and change numbers become visible in commit order.
//! - *Audit records are numbered by the `audit` counter* in the transaction that inserts them, so
//!   a record with a lower number is never committed after one with a higher number: a client
//!   paging the log by `seq` never skips a record that commits late. Agent reads append their
//!   records with one multi-row `INSERT` per group commit.
//! - *Migrations* run under sqlx's advisory lock, so replicas starting together apply them once.

use std::str::FromStr;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use agentvault_core::audit::AuditEvent;
use agentvault_core::{Error, Result};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};

use crate::errors::{DbError, DbResult};
use crate::migrations::{self, Migrations};

// The SQL every backend shares (`crate::sql`), compiled here for PostgreSQL.
type Backend = PostgresStore;
type Conn = PgConnection;
type Db = Postgres;
crate::shared_sql!();

const MIGRATIONS: &Migrations = &[
    (1, "init", include_str!("../../migrations/postgres/0001_init.sql")),
    (2, "people", include_str!("../../migrations/postgres/0002_people.sql")),
    (3, "functions", include_str!("../../migrations/postgres/0003_functions.sql")),
    (4, "invitations", include_str!("../../migrations/postgres/0004_invitations.sql")),
    (5, "email index", include_str!("../../migrations/postgres/0005_email_index.sql")),
    (6, "settings", include_str!("../../migrations/postgres/0006_settings.sql")),
    (7, "changes", include_str!("../../migrations/postgres/0007_changes.sql")),
    (8, "egress", include_str!("../../migrations/postgres/0008_egress.sql")),
    (9, "function secret refs", include_str!("../../migrations/postgres/0009_function_secret_refs.sql")),
    (10, "access requests", include_str!("../../migrations/postgres/0010_access_requests.sql")),
    (11, "environments", include_str!("../../migrations/postgres/0011_environments.sql")),
];

/// At most this many audit records go into one `INSERT` (PostgreSQL takes at most 65,535
/// parameters in a statement, and a record has 11).
const AUDIT_ROWS_PER_INSERT: usize = 1000;

/// Where a PostgreSQL database is, as a `postgres://user:password@host:port/db?sslmode=…` URL.
/// Its `Debug` and `Display` never show the password.
#[derive(Clone)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Checks the URL's form; 400-like `invalid_input` with what is wrong (never the password).
    pub fn parse(url: &str) -> Result<DatabaseUrl> {
        let url = url.trim();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(Error::invalid(
                "database_url",
                "the database URL must start with postgres:// (e.g. postgres://agentvault:PASSWORD@db.example.com/agentvault)",
            ));
        }
        PgConnectOptions::from_str(url).map_err(|e| {
            Error::invalid(
                "database_url",
                format!("the database URL cannot be read: {}", redact_password(&e.to_string(), url)),
            )
        })?;
        Ok(DatabaseUrl(url.to_owned()))
    }

    /// The whole URL, password included: only for handing it to another agentvault process
    /// (through its environment, not its command line).
    pub fn reveal(&self) -> &str {
        &self.0
    }

    fn options(&self) -> Result<PgConnectOptions> {
        PgConnectOptions::from_str(&self.0).map_err(|e| {
            Error::invalid("database_url", format!("the database URL cannot be read: {}", self.redact(&e.to_string())))
        })
    }

    /// `text` with this URL's password replaced by `***`.
    fn redact(&self, text: &str) -> String {
        redact_password(text, &self.0)
    }
}

/// Replaces the password of `url` (if any) in `text`.
fn redact_password(text: &str, url: &str) -> String {
    let Some(rest) = url.split_once("://").map(|(_, r)| r) else { return text.to_owned() };
    let userinfo = rest.split(['/', '?']).next().unwrap_or("").rsplit_once('@').map(|(u, _)| u);
    match userinfo.and_then(|u| u.split_once(':')).map(|(_, p)| p) {
        Some(password) if !password.is_empty() => text.replace(password, "***"),
        _ => text.to_owned(),
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_password(&self.0, &self.0))
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

pub struct PostgresStore {
    /// One pool: PostgreSQL runs readers and writers side by side (`write` is the same pool,
    /// named apart so that the shared SQL reads the same on both backends).
    read: PgPool,
    write: PgPool,
    /// The newest change committed by this process, and its local wake-up.
    committed: AtomicI64,
    changed: tokio::sync::Notify,
    /// This process's name in the change feed.
    origin: String,
    /// `LISTEN agentvault_changes`, opened by the first wait: wakes this server when another
    /// commits a change. Only a wake-up: the feed itself is read from the `changes` table.
    listener: tokio::sync::Mutex<Option<PgListener>>,
}

/// The channel every committed change is announced on (`NOTIFY`, delivered at commit).
const CHANGES_CHANNEL: &str = "agentvault_changes";

impl PostgresStore {
    /// Connects (`max_connections` at most) and applies pending migrations under sqlx's advisory
    /// lock.
    pub async fn open(url: &DatabaseUrl, max_connections: u32) -> Result<PostgresStore> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(url.options()?)
            .await
            .map_err(|e| {
                Error::unavailable(format!("cannot connect to the database {url}: {}", url.redact(&e.to_string())))
            })?;
        let migrator = migrations::migrator(MIGRATIONS);
        migrator.run(&pool).await.map_err(|e| migrations::migrate_err(&migrator, e))?;
        Ok(PostgresStore {
            read: pool.clone(),
            write: pool,
            committed: AtomicI64::new(0),
            changed: tokio::sync::Notify::new(),
            origin: crate::new_origin(),
            listener: tokio::sync::Mutex::new(None),
        })
    }

    /// Waits for a `NOTIFY` of another server's change, a change of this one, or `timeout`.
    /// Returns true when the listening connection was (re)opened or lost, since notifications
    /// sent meanwhile are gone.
    async fn wait_for_changes(&self, timeout: Duration) -> bool {
        let mut guard = self.listener.lock().await;
        let mut missed = false;
        if guard.is_none() {
            match PgListener::connect_with(&self.read).await {
                Ok(mut l) => match l.listen(CHANGES_CHANNEL).await {
                    Ok(()) => *guard = Some(l),
                    Err(e) => tracing::warn!(error = %e, "cannot listen for changes; polling instead"),
                },
                Err(e) => tracing::warn!(error = %e, "cannot open the connection that listens for changes"),
            }
            missed = true;
        }
        let Some(listener) = guard.as_mut() else {
            tokio::time::sleep(timeout).await;
            return true;
        };
        tokio::select! {
            r = tokio::time::timeout(timeout, listener.try_recv()) => match r {
                Ok(Ok(Some(_))) | Err(_) => {}
                // The connection was lost (sqlx reconnects on the next receive) or failed.
                Ok(Ok(None)) => missed = true,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "listening for changes failed; reconnecting");
                    *guard = None;
                    missed = true;
                }
            },
            _ = self.changed.notified() => {}
        }
        missed
    }

    /// Starts a write transaction, taking the next change number (and with it the lock that
    /// serializes writers until commit).
    async fn begin(&self) -> DbResult<WriteTx<'_>> {
        let mut tx = self.write.begin().await?;
        let change = changes::next_number(&mut tx).await?;
        Ok(WriteTx { tx, store: self, change })
    }

    /// Appends agent-read audit records in one transaction (the audit writer's group commit).
    async fn append_audit_records(&self, events: &[AuditEvent]) -> DbResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.write.begin().await?;
        insert_audit(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Nothing waits outside the table: an acknowledged record is committed.
    fn settle_audit(&self) -> DbResult<()> {
        Ok(())
    }

    /// A deleted row stays in its page until `VACUUM` reclaims it; PostgreSQL's autovacuum does
    /// that in the background (see the README on deleted key material).
    async fn scrub_deleted(&self) {}

    /// Closes every connection (the listening one first: the pool's close waits for it).
    pub async fn close(&self) {
        self.listener.lock().await.take();
        self.write.close().await;
    }
}

/// Numbers `events` with the `audit` counter and inserts them, in `tx`.
async fn insert_audit(tx: &mut PgConnection, events: &[AuditEvent]) -> DbResult<()> {
    let count = i64::try_from(events.len()).map_err(|_| DbError::from(Error::internal("too many audit records")))?;
    let last: i64 = sqlx::query_scalar("UPDATE counters SET value = value + $1 WHERE name = 'audit' RETURNING value")
        .bind(count)
        .fetch_one(&mut *tx)
        .await?;
    let mut seq = last - count;
    for chunk in events.chunks(AUDIT_ROWS_PER_INSERT) {
        let mut qb: QueryBuilder<Postgres> =
            QueryBuilder::new(concat!("INSERT INTO audit_log (", crate::rows::columns!(audit), ") "));
        qb.push_values(chunk, |mut row, e| {
            seq += 1;
            row.push_bind(seq)
                .push_bind(e.at)
                .push_bind(e.workspace_id.as_str())
                .push_bind(e.actor.kind())
                .push_bind(e.actor.id())
                .push_bind(e.action.as_str())
                .push_bind(e.outcome.as_str())
                .push_bind(e.secret_name.as_deref())
                .push_bind(e.agent_id.as_deref())
                .push_bind(e.target_id.as_deref())
                .push_bind(e.detail.as_deref());
        });
        qb.build().execute(&mut *tx).await?;
    }
    Ok(())
}

type WriteTx<'s> = crate::write_tx::WriteTx<'s, PostgresStore>;

impl crate::write_tx::Committer for PostgresStore {
    type Db = Postgres;

    async fn insert_audit(&self, conn: &mut PgConnection, audit: &[AuditEvent]) -> DbResult<()> {
        if audit.is_empty() {
            return Ok(());
        }
        insert_audit(conn, audit).await
    }

    /// The feed's row, and a `NOTIFY` that every listening server receives at commit.
    async fn record_change(&self, conn: &mut PgConnection, change: i64, audit: &[AuditEvent]) -> DbResult<()> {
        changes::record(&mut *conn, change, audit, &self.origin).await?;
        sqlx::query("SELECT pg_notify($1, $2)").bind(CHANGES_CHANNEL).bind(change.to_string()).execute(conn).await?;
        Ok(())
    }

    fn committed(&self) -> (&AtomicI64, &tokio::sync::Notify) {
        (&self.committed, &self.changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_file_is_embedded() {
        migrations::assert_all_embedded("postgres", MIGRATIONS);
    }

    #[test]
    fn the_password_never_shows() {
        let url = DatabaseUrl::parse("postgres://av:s3cr%3Et@db.example.com:5433/agentvault?sslmode=require").unwrap();
        for shown in [format!("{url}"), format!("{url:?}")] {
            assert!(!shown.contains("s3cr"), "{shown}");
            assert!(shown.contains("db.example.com:5433/agentvault"), "{shown}");
        }
        let e = DatabaseUrl::parse("mysql://u:p@h/db").err().unwrap();
        assert!(e.message.contains("postgres://"), "{}", e.message);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_passes_the_store_conformance_suite() {
        let db = crate::testing::TestPostgres::shared().database().await;
        let store = PostgresStore::open(&db, 8).await.unwrap();
        crate::conformance::run_all(&store).await;
        store.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn replicas_starting_together_migrate_once() {
        let db = crate::testing::TestPostgres::shared().database().await;
        let (a, b, c, d) = tokio::join!(
            PostgresStore::open(&db, 2),
            PostgresStore::open(&db, 2),
            PostgresStore::open(&db, 2),
            PostgresStore::open(&db, 2)
        );
        let stores = [a.unwrap(), b.unwrap(), c.unwrap(), d.unwrap()];
        let applied: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations").fetch_one(&stores[0].read).await.unwrap();
        assert_eq!(applied, MIGRATIONS.len() as i64);
        for s in &stores {
            s.close().await;
        }
    }

    #[tokio::test]
    async fn a_database_of_a_newer_agentvault_is_refused() {
        let db = crate::testing::TestPostgres::shared().database().await;
        let store = PostgresStore::open(&db, 2).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (1000, 'from the future', TRUE, '\\x00', 0)",
        )
        .execute(&store.write)
        .await
        .unwrap();
        store.close().await;
        let e = PostgresStore::open(&db, 2).await.err().unwrap();
        assert_eq!(e.kind, agentvault_core::ErrorKind::Unavailable);
        assert!(e.message.contains("schema version 1000"), "{}", e.message);
    }

    /// Two replicas append agent-read records while a client pages the log newest first with the
    /// `before_seq` cursor, from the top again and again: no page skips a record that an earlier
    /// page's cursor has passed, and none repeats one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn paging_the_audit_log_never_skips_or_repeats_while_two_replicas_write() {
        use agentvault_core::audit::{Action, AuditFilter, Outcome};
        use agentvault_core::model::Actor;

        use crate::Store;

        let db = crate::testing::TestPostgres::shared().database().await;
        let a = std::sync::Arc::new(PostgresStore::open(&db, 4).await.unwrap());
        let b = std::sync::Arc::new(PostgresStore::open(&db, 4).await.unwrap());
        let event = |n: usize| {
            AuditEvent::new(n as i64, "ws_paging", Actor::ApiKey("key_x".into()), Action::SecretRead, Outcome::Success)
        };
        let writers: Vec<_> = [a.clone(), b.clone()]
            .into_iter()
            .map(|store| {
                tokio::spawn(async move {
                    for round in 0..60 {
                        let batch: Vec<AuditEvent> = (0..5).map(|i| event(round * 5 + i)).collect();
                        store.append_audit_records(&batch).await.unwrap();
                    }
                })
            })
            .collect();
        // Page through while they write: newest first, 7 at a time, from the top each pass.
        let mut passes = 0;
        loop {
            let done = writers.iter().all(|w| w.is_finished());
            let mut seen = std::collections::BTreeSet::new();
            let mut cursor = None;
            loop {
                let filter = AuditFilter { limit: 7, before_seq: cursor, ..AuditFilter::default() };
                let page = a.list_audit("ws_paging", &filter).await.unwrap();
                for r in &page {
                    assert!(seen.insert(r.seq), "seq {} repeated", r.seq);
                }
                match page.last() {
                    Some(r) => cursor = Some(r.seq),
                    None => break,
                }
            }
            // Whatever the pass saw is a gapless run 1..=n: a record numbered below one already
            // visible is never committed later.
            let n = seen.len() as i64;
            assert_eq!(seen.iter().copied().collect::<Vec<_>>(), (1..=n).collect::<Vec<_>>());
            passes += 1;
            if done {
                assert_eq!(n, 600);
                break;
            }
        }
        assert!(passes > 1, "the client paged while the replicas wrote");
        a.close().await;
        b.close().await;
    }
}

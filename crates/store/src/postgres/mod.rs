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
//!   records with one `INSERT … SELECT … FROM unnest(…)` statement per group commit.
//! - *Agent reads' records commit asynchronously* (`synchronous_commit = off` on the audit
//!   writer's own connections): a read is answered once PostgreSQL has committed its record —
//!   durable against a crash of agentvault, as SQLite's audit journal is — without waiting for
//!   the WAL flush. The `audit` counter's row lock is then held for microseconds rather than
//!   through a flush, so group commits no longer queue behind each other's disk writes. A crash
//!   of PostgreSQL's own machine can lose the last fraction of a second of read records
//!   (`wal_writer_delay`), never a mutation: mutations and their records commit synchronously.
//! - *Migrations* run under sqlx's advisory lock, so replicas starting together apply them once.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use agentvault_core::audit::{AuditEvent, AuditEventRef};
use agentvault_core::{Error, Result};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres};

use crate::errors::DbResult;
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
    (12, "secret last reads", include_str!("../../migrations/postgres/0012_secret_last_reads.sql")),
    (13, "audit segments", include_str!("../../migrations/postgres/0013_audit_segments.sql")),
];

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

    pub(crate) fn options(&self) -> Result<PgConnectOptions> {
        PgConnectOptions::from_str(&self.0).map_err(|e| {
            Error::invalid("database_url", format!("the database URL cannot be read: {}", self.redact(&e.to_string())))
        })
    }

    /// `text` with this URL's password replaced by `***`.
    pub(crate) fn redact(&self, text: &str) -> String {
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
    /// The audit writer's connections: `synchronous_commit = off` (see the module's notes).
    audit: PgPool,
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
    /// An audit append is a round trip to the database: the audit writer group-commits.
    const APPENDS_AUDIT_LOCALLY: bool = false;

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
        // One group commit runs at a time; the second connection serves a batch finished on its
        // own task while a new leader starts.
        let audit = PgPoolOptions::new()
            .max_connections(2)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(url.options()?.options([("synchronous_commit", "off")]))
            .await
            .map_err(|e| {
                Error::unavailable(format!("cannot connect to the database {url}: {}", url.redact(&e.to_string())))
            })?;
        Ok(PostgresStore {
            read: pool.clone(),
            write: pool,
            audit,
            committed: AtomicI64::new(0),
            changed: tokio::sync::Notify::new(),
            origin: crate::new_origin(),
            listener: tokio::sync::Mutex::new(None),
        })
    }

    /// The connections mutations use (for `transfer`, which fills an empty database).
    pub(crate) fn write_pool(&self) -> &PgPool {
        &self.write
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

    /// A transaction for upkeep that is no change of the data (the audit log's compaction and
    /// retention): no change number.
    async fn begin_upkeep(&self) -> DbResult<sqlx::Transaction<'static, Postgres>> {
        Ok(self.write.begin().await?)
    }

    /// Never called: PostgreSQL's appends are round trips, group-committed by the audit writer.
    fn append_audit_records_now(&self, _: &[AuditEventRef<'_>]) -> DbResult<()> {
        Err(Error::internal("PostgreSQL has no local audit append; records are group-committed").into())
    }

    /// Appends agent-read audit records in one statement (the audit writer's group commit).
    async fn append_audit_records(&self, events: Vec<AuditEvent>) -> DbResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut conn = self.audit.acquire().await?;
        insert_segments(&mut conn, &events).await
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
        self.audit.close().await;
        self.write.close().await;
    }
}

/// The last step of both audit statements: the readers' last reads (`rules::last_reads_in`),
/// bound first as `$1`–`$4` by [`bind_last_reads`].
macro_rules! last_reads_upsert {
    () => {
        "INSERT INTO secret_last_reads (workspace_id, secret_name, agent_id, at) \
         SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[]) \
         ON CONFLICT (workspace_id, secret_name, agent_id) \
         DO UPDATE SET at = excluded.at WHERE excluded.at > secret_last_reads.at"
    };
}

/// Binds the readers' last reads in `events` as `$1`–`$4` of an audit statement.
fn bind_last_reads<'q>(
    events: &'q [AuditEvent],
    query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    let reads = crate::rules::last_reads_in(events.iter().map(AuditEvent::view));
    query
        .bind(reads.iter().map(|r| r.workspace_id).collect::<Vec<_>>())
        .bind(reads.iter().map(|r| r.secret_name).collect::<Vec<_>>())
        .bind(reads.iter().map(|r| r.agent_id).collect::<Vec<_>>())
        .bind(reads.iter().map(|r| r.at).collect::<Vec<_>>())
}

/// Numbers `events` with the `audit` counter and stores them as one audit segment per workspace
/// (see [`crate::audit_segment`]), with the segments' index keys and the readers' last reads:
/// one statement, whatever the number of records, run without `BEGIN`/`COMMIT` — one round trip
/// per group commit. The blocks are encoded with the records' offsets in the batch (1, 2, …);
/// the statement adds the counter's base, so a segment's first sequence number is known only in
/// the database.
async fn insert_segments(conn: &mut PgConnection, events: &[AuditEvent]) -> DbResult<()> {
    let mut by_workspace: BTreeMap<&str, Vec<(i64, AuditEventRef<'_>)>> = BTreeMap::new();
    for (offset, e) in (1..).zip(events) {
        by_workspace.entry(e.workspace_id.as_str()).or_default().push((offset, e.view()));
    }
    let n = by_workspace.len();
    let (mut first, mut workspace, mut last, mut min_at, mut max_at, mut records, mut data) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut key_workspace, mut key, mut key_first) = (Vec::new(), Vec::new(), Vec::new());
    for (ws, batch) in by_workspace {
        let mut block = Vec::with_capacity(64 + batch.len() * 4);
        let summary = crate::audit_segment::encode(batch.iter().copied(), &mut block);
        for k in crate::audit_segment::index_keys(batch.iter().map(|(_, e)| *e)) {
            key_workspace.push(ws);
            key.push(k);
            key_first.push(summary.first_seq);
        }
        first.push(summary.first_seq);
        workspace.push(ws);
        last.push(summary.last_seq);
        min_at.push(summary.min_at);
        max_at.push(summary.max_at);
        records.push(summary.records);
        data.push(block);
    }
    bind_last_reads(events, sqlx::query(concat!(
        "WITH numbered AS (UPDATE counters SET value = value + $5 WHERE name = 'audit' RETURNING value - $5 AS base), \
         segments AS (INSERT INTO audit_segments (first_seq, workspace_id, last_seq, min_at, max_at, records, data) \
           SELECT numbered.base + r.first_seq, r.workspace_id, numbered.base + r.last_seq, r.min_at, r.max_at, \
                  r.records, r.data \
           FROM numbered, unnest($6::BIGINT[], $7::TEXT[], $8::BIGINT[], $9::BIGINT[], $10::BIGINT[], $11::BIGINT[], \
                                 $12::BYTEA[]) AS r(first_seq, workspace_id, last_seq, min_at, max_at, records, data)), \
         keys AS (INSERT INTO audit_segment_keys (workspace_id, key, first_seq) \
           SELECT k.workspace_id, k.key, numbered.base + k.first_seq \
           FROM numbered, unnest($13::TEXT[], $14::TEXT[], $15::BIGINT[]) AS k(workspace_id, key, first_seq)) \
         ",
        last_reads_upsert!()
    )))
    .bind(events.len() as i64)
    .bind(first)
    .bind(workspace)
    .bind(last)
    .bind(min_at)
    .bind(max_at)
    .bind(records)
    .bind(data)
    .bind(key_workspace)
    .bind(key)
    .bind(key_first)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Numbers `events` with the `audit` counter and inserts them as rows: one statement, whatever the
/// number of records (the columns travel as arrays, so the statement is prepared once per
/// connection). A single statement is atomic on its own, so the audit writer runs it without
/// `BEGIN`/`COMMIT`: one round trip per group commit. A mutation runs it inside its transaction.
async fn insert_audit(conn: &mut PgConnection, events: &[AuditEvent]) -> DbResult<()> {
    let mut at = Vec::with_capacity(events.len());
    let mut workspace = Vec::with_capacity(events.len());
    let mut actor_type = Vec::with_capacity(events.len());
    let mut actor_id = Vec::with_capacity(events.len());
    let mut action = Vec::with_capacity(events.len());
    let mut outcome = Vec::with_capacity(events.len());
    let mut secret = Vec::with_capacity(events.len());
    let mut agent = Vec::with_capacity(events.len());
    let mut target = Vec::with_capacity(events.len());
    let mut detail = Vec::with_capacity(events.len());
    for e in events {
        at.push(e.at);
        workspace.push(e.workspace_id.as_str());
        actor_type.push(e.actor.kind());
        actor_id.push(e.actor.id());
        action.push(e.action.as_str());
        outcome.push(e.outcome.as_str());
        secret.push(e.secret_name.as_deref());
        agent.push(e.agent_id.as_deref());
        target.push(e.target_id.as_deref());
        detail.push(e.detail.as_deref());
    }
    // The records go in (a data-modifying WITH runs to completion whatever the main statement
    // reads), and the main statement brings the readers' last reads up to date.
    bind_last_reads(events, sqlx::query(concat!(
        "WITH numbered AS (UPDATE counters SET value = value + cardinality($5::BIGINT[]) WHERE name = 'audit' \
           RETURNING value - cardinality($5::BIGINT[]) AS base), \
         inserted AS (INSERT INTO audit_log (",
        crate::rows::columns!(audit),
        ") SELECT numbered.base + r.n, r.at, r.workspace_id, r.actor_type, r.actor_id, r.action, r.outcome, \
                  r.secret_name, r.agent_id, r.target_id, r.detail \
           FROM numbered, unnest($5::BIGINT[], $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::TEXT[], \
                                 $11::TEXT[], $12::TEXT[], $13::TEXT[], $14::TEXT[]) WITH ORDINALITY \
             AS r(at, workspace_id, actor_type, actor_id, action, outcome, secret_name, agent_id, target_id, detail, n)) \
         ",
        last_reads_upsert!()
    )))
    .bind(at)
    .bind(workspace)
    .bind(actor_type)
    .bind(actor_id)
    .bind(action)
    .bind(outcome)
    .bind(secret)
    .bind(agent)
    .bind(target)
    .bind(detail)
    .execute(&mut *conn)
    .await?;
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

    /// Agent reads' records commit without waiting for the WAL flush; mutations (and every other
    /// connection) keep PostgreSQL's synchronous commit.
    #[tokio::test]
    async fn only_agent_read_records_commit_asynchronously() {
        let db = crate::testing::TestPostgres::shared().database().await;
        let store = PostgresStore::open(&db, 2).await.unwrap();
        let show = |pool: PgPool| async move {
            sqlx::query_scalar::<_, String>("SHOW synchronous_commit").fetch_one(&pool).await.unwrap()
        };
        assert_eq!(show(store.audit.clone()).await, "off");
        assert_eq!(show(store.write.clone()).await, "on");
        assert_eq!(show(store.read.clone()).await, "on");
        store.close().await;
    }

    /// `?sslmode=` is honoured: `require` encrypts, `verify-full` with the cluster's CA
    /// (`sslrootcert`) connects, and without that CA it refuses the certificate, saying so.
    #[tokio::test]
    async fn tls_to_postgresql_follows_sslmode() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::default();
        ca.distinguished_name.push(rcgen::DnType::CommonName, "agentvault test CA");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let cluster = crate::testing::Cluster::start_new_with_tls(&leaf.pem(), &key.serialize_pem()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca_cert.pem()).unwrap();
        let url = |query: &str| {
            let server = cluster.server().replace("127.0.0.1", "localhost");
            DatabaseUrl::parse(&format!("{server}/postgres?{query}")).unwrap()
        };
        let encrypted = |store: PostgresStore| async move {
            let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .fetch_one(&store.read)
                .await
                .unwrap();
            store.close().await;
            ssl
        };
        assert!(!encrypted(PostgresStore::open(&url("sslmode=disable"), 2).await.unwrap()).await);
        assert!(encrypted(PostgresStore::open(&url("sslmode=require"), 2).await.unwrap()).await);
        let verified = url(&format!("sslmode=verify-full&sslrootcert={}", ca_path.display()));
        assert!(encrypted(PostgresStore::open(&verified, 2).await.unwrap()).await);
        let e = PostgresStore::open(&url("sslmode=verify-full"), 2).await.err().unwrap();
        assert_eq!(e.kind, agentvault_core::ErrorKind::Unavailable);
        assert!(e.message.contains("cannot connect to the database"), "{}", e.message);
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
                        store.append_audit_records(batch.clone()).await.unwrap();
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
            // Oldest first with the `after_seq` cursor: a gapless run too, in order.
            let mut up = Vec::new();
            let mut cursor = None;
            loop {
                let filter = AuditFilter { limit: 7, after_seq: cursor, oldest_first: true, ..AuditFilter::default() };
                let page = a.list_audit("ws_paging", &filter).await.unwrap();
                up.extend(page.iter().map(|r| r.seq));
                match page.last() {
                    Some(r) => cursor = Some(r.seq),
                    None => break,
                }
            }
            assert_eq!(up, (1..=up.len() as i64).collect::<Vec<_>>(), "oldest first");
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

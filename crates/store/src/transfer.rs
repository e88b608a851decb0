//! Moving a whole installation from SQLite into an empty PostgreSQL database
//! (`agentvault migrate-store`).
//!
//! The copy is driven by [`TABLES`]: every table of the schema, in an order that satisfies the
//! foreign keys. Rows are copied as they are — sealed values, wrapped data keys and hashes byte
//! for byte, nothing is opened or re-sealed — in chunks, each column bound by the type the
//! PostgreSQL schema gives it (TEXT, BIGINT, BYTEA; SQLite's 0/1 integers become BOOLEAN where
//! PostgreSQL has one), inside ONE PostgreSQL transaction: a failure (or a failed verification)
//! leaves the target as empty as it was. The source is read in one SQLite read transaction, so
//! it is one consistent snapshot.

use std::collections::BTreeSet;

use agentvault_core::{Error, Result};
use futures_util::TryStreamExt;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row, SqliteConnection};

use crate::rows::SealedVersionRow;
use crate::{DatabaseUrl, PostgresStore, SealedVersion, SqliteStore};

/// Every table agentvault keeps, parents before children (the copy inserts in this order). A new
/// table (a new migration) is one more line here; a table missing from this list makes
/// `migrate-store` refuse to run rather than leave it behind (see `unknown_tables`).
pub const TABLES: &[&str] = &[
    "workspaces",
    "users",
    "agents",
    "secrets",
    "secret_versions",
    "secret_env_versions",
    "secret_envs",
    "secret_access",
    "secret_injection",
    "admin_tokens",
    "api_keys",
    "api_key_agents",
    "memberships",
    "sessions",
    "personal_tokens",
    "one_time_codes",
    "functions",
    "function_versions",
    "function_deployments",
    "function_secret_refs",
    "invitations",
    "access_requests",
    "agent_egress",
    "egress_ca",
    "settings",
    "changes",
    "audit_log",
    "audit_segments",
    "audit_segment_keys",
    "secret_last_reads",
    // Last: continues after the copied records (see `continue_counters`).
    "counters",
];

/// Tables that belong to the database, not to the installation: each backend keeps its own.
const NOT_COPIED: &[&str] = &["_sqlx_migrations"];

/// The table whose rows the migrations insert themselves (the counters, at zero).
const COUNTERS: &str = "counters";

/// Rows per `INSERT` (at most ~12 columns a table: well under PostgreSQL's 65535 parameters).
const CHUNK: usize = 500;

/// How many of the newest sealed versions (default values, and environments' own) are opened
/// on the target after the copy.
pub const SAMPLE: i64 = 20;

/// What a copy did.
#[derive(Debug, Clone, Default)]
pub struct CopyReport {
    /// Each table and the rows copied into it.
    pub tables: Vec<(String, u64)>,
    /// How many sealed values were opened with the root keyring on the target.
    pub verified: usize,
    /// The audit and change counters on the target, after the copy.
    pub audit_seq: i64,
    pub change_seq: i64,
}

/// A column of the target, by the type PostgreSQL gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ColumnType {
    Text,
    BigInt,
    Bytes,
    Bool,
}

/// One value on its way from SQLite to PostgreSQL.
enum Value {
    Text(Option<String>),
    BigInt(Option<i64>),
    Bytes(Option<Vec<u8>>),
    Bool(Option<bool>),
}

fn copy_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::internal(format!("{what}: {e}"))
}

/// Refuses unless `path` is an existing agentvault SQLite database. Reads only: a file that is
/// not one is left exactly as it was (opening the store would create or migrate it).
pub async fn check_sqlite_source(path: &std::path::Path) -> Result<()> {
    if !path.is_file() {
        return Err(Error::invalid(
            "from",
            format!("there is no SQLite database at {}; give the path of an agentvault.db", path.display()),
        ));
    }
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path).read_only(true);
    let not_ours = || {
        Error::invalid(
            "from",
            format!(
                "{} is not an agentvault database (it has no agentvault tables); give the agentvault.db of a data \
                 directory",
                path.display()
            ),
        )
    };
    let mut conn = <SqliteConnection as sqlx::Connection>::connect_with(&options).await.map_err(|_| not_ours())?;
    let tables: Vec<String> = sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
        .fetch_all(&mut conn)
        .await
        .map_err(|_| not_ours())?;
    let _ = sqlx::Connection::close(conn).await;
    let has = |t: &str| tables.iter().any(|n| n == t);
    if !(has("secrets") && has("secret_versions") && (has("_sqlx_migrations") || has("schema_migrations"))) {
        return Err(not_ours());
    }
    Ok(())
}

/// Refuses a target database that holds tables of something other than agentvault, before
/// agentvault's migrations would add theirs to it. A database of agentvault's own (it has the
/// migrations table) passes here; whether it is empty is checked in the copy's transaction.
pub async fn check_postgres_target(url: &DatabaseUrl) -> Result<()> {
    let mut conn = <PgConnection as sqlx::Connection>::connect_with(&url.options()?).await.map_err(|e| {
        Error::unavailable(format!("cannot connect to the database {url}: {}", url.redact(&e.to_string())))
    })?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::TEXT FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .map_err(|e| copy_err("listing the target's tables", e))?;
    let _ = sqlx::Connection::close(conn).await;
    if !tables.is_empty() && !tables.iter().any(|t| t == "_sqlx_migrations") {
        return Err(Error::conflict(
            "target_not_empty",
            format!(
                "the target database {url} is not empty (it has tables {}) and is not an agentvault database; \
                 give migrate-store a new, empty database",
                tables.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Copies everything from `src` into `dst` (migrated, and empty: refused otherwise), in one
/// transaction. Before committing it checks that every table holds as many rows as the source's
/// and hands up to [`SAMPLE`] of the newest sealed versions, as the target holds them, to
/// `open` (which opens them with the root keyring): any failure rolls the whole copy back.
pub async fn copy_sqlite_to_postgres(
    src: &SqliteStore,
    dst: &PostgresStore,
    open: &(dyn Fn(&SealedVersion) -> std::result::Result<(), String> + Sync),
) -> Result<CopyReport> {
    let mut stx = src.read_pool().begin().await.map_err(|e| copy_err("reading the source", e))?;
    let mut ptx = dst.write_pool().begin().await.map_err(|e| copy_err("writing the target", e))?;

    // Both databases have exactly the tables this build knows.
    let src_tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
    )
    .fetch_all(&mut *stx)
    .await
    .map_err(|e| copy_err("listing the source's tables", e))?;
    let dst_tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::TEXT FROM information_schema.tables WHERE table_schema = current_schema()",
    )
    .fetch_all(&mut *ptx)
    .await
    .map_err(|e| copy_err("listing the target's tables", e))?;
    for (side, tables) in [("source", &src_tables), ("target", &dst_tables)] {
        let unknown = unknown_tables(tables);
        if !unknown.is_empty() {
            return Err(Error::unprocessable(
                "unknown_tables",
                format!(
                    "the {side} database has tables this build of migrate-store does not copy ({}); use the agentvault \
                 release that matches the database",
                    unknown.join(", ")
                ),
            ));
        }
    }

    // Writers on the target (a server started on it too early) wait for the copy: every
    // mutating transaction takes the change counter's row first.
    sqlx::query("SELECT value FROM counters WHERE name = 'changes' FOR UPDATE")
        .fetch_optional(&mut *ptx)
        .await
        .map_err(|e| copy_err("locking the target's change counter", e))?;
    refuse_non_empty(&mut ptx).await?;

    let mut report = CopyReport::default();
    for table in TABLES {
        let columns = target_columns(&mut ptx, table).await?;
        let src_columns: BTreeSet<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info($1)")
            .bind(*table)
            .fetch_all(&mut *stx)
            .await
            .map_err(|e| copy_err(&format!("reading the columns of {table}"), e))?
            .into_iter()
            .collect();
        let dst_columns: BTreeSet<String> = columns.iter().map(|(c, _)| c.clone()).collect();
        if src_columns != dst_columns {
            return Err(Error::unprocessable(
                "schemas_differ",
                format!(
                    "table {table} has columns {src_columns:?} in SQLite but {dst_columns:?} in PostgreSQL; the two \
                 schemas differ, so nothing was copied"
                ),
            ));
        }
        let copied = copy_table(&mut stx, &mut ptx, table, &columns).await?;
        report.tables.push(((*table).to_owned(), copied));
    }
    let (audit_seq, change_seq) = continue_counters(&mut ptx).await?;
    report.audit_seq = audit_seq;
    report.change_seq = change_seq;

    // Verification, inside the transaction: counts, then values opened as the target holds them.
    for (table, copied) in &report.tables {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        let in_src: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()))
            .fetch_one(&mut *stx)
            .await
            .map_err(|e| copy_err(&format!("counting {table} in the source"), e))?;
        let in_dst: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut *ptx)
            .await
            .map_err(|e| copy_err(&format!("counting {table} in the target"), e))?;
        // The target's counters may have rows of their own (PostgreSQL numbers audit records
        // with a counter that SQLite keeps in memory).
        let matches = if *table == COUNTERS { in_dst >= in_src } else { in_dst == in_src };
        if !matches || u64::try_from(in_src).ok() != Some(*copied) {
            return Err(Error::unprocessable(
                "verification_failed",
                format!(
                    "table {table}: the source has {in_src} rows, {copied} were copied and the target has {in_dst}; \
                 nothing was committed"
                ),
            ));
        }
    }
    for sql in [
        "SELECT s.workspace_id, v.secret_id, CAST(NULL AS TEXT) AS env, v.version, v.root_key_id, v.wrapped_dek, \
         v.ciphertext FROM secret_versions v JOIN secrets s ON s.id = v.secret_id \
         ORDER BY v.created_at DESC, v.secret_id, v.version DESC LIMIT $1",
        "SELECT s.workspace_id, v.secret_id, v.env, v.version, v.root_key_id, v.wrapped_dek, v.ciphertext \
         FROM secret_env_versions v JOIN secrets s ON s.id = v.secret_id \
         ORDER BY v.created_at DESC, v.secret_id, v.env, v.version DESC LIMIT $1",
    ] {
        let rows: Vec<SealedVersionRow> = sqlx::query_as(sql)
            .bind(SAMPLE)
            .fetch_all(&mut *ptx)
            .await
            .map_err(|e| copy_err("reading sealed versions back from the target", e))?;
        for row in rows {
            let v = SealedVersion::try_from(row)?;
            open(&v).map_err(|e| {
                Error::unprocessable(
                    "verification_failed",
                    format!(
                        "secret {} version {} could not be opened after the copy: {}; nothing was committed",
                        v.secret_id, v.version, e
                    ),
                )
            })?;
            report.verified += 1;
        }
    }

    ptx.commit().await.map_err(|e| copy_err("committing the copy", e))?;
    let _ = stx.rollback().await;
    Ok(report)
}

/// The tables of `present` that are neither copied nor deliberately left out.
fn unknown_tables(present: &[String]) -> Vec<String> {
    present.iter().filter(|t| !TABLES.contains(&t.as_str()) && !NOT_COPIED.contains(&t.as_str())).cloned().collect()
}

/// Refuses a target that holds any row besides what its migrations inserted (counters at zero).
async fn refuse_non_empty(ptx: &mut PgConnection) -> Result<()> {
    for table in TABLES {
        let sql = if *table == COUNTERS {
            "SELECT EXISTS (SELECT 1 FROM counters WHERE value <> 0)".to_owned()
        } else {
            format!("SELECT EXISTS (SELECT 1 FROM {table})")
        };
        let has_rows: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut *ptx)
            .await
            .map_err(|e| copy_err(&format!("checking that {table} is empty"), e))?;
        if has_rows {
            return Err(Error::conflict(
                "target_not_empty",
                format!(
                    "the target database is not empty (table {table} has rows); migrate-store copies only into a \
                     new, empty database, and changed nothing"
                ),
            ));
        }
    }
    Ok(())
}

/// The target table's columns, in order, with their types.
async fn target_columns(ptx: &mut PgConnection, table: &str) -> Result<Vec<(String, ColumnType)>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::TEXT, data_type::TEXT FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(&mut *ptx)
    .await
    .map_err(|e| copy_err(&format!("reading the columns of {table}"), e))?;
    rows.into_iter()
        .map(|(name, ty)| {
            let t = match ty.as_str() {
                "text" => ColumnType::Text,
                "bigint" | "integer" | "smallint" => ColumnType::BigInt,
                "bytea" => ColumnType::Bytes,
                "boolean" => ColumnType::Bool,
                other => {
                    return Err(Error::internal(format!(
                        "column {table}.{name} has type {other}, which migrate-store does not copy"
                    )));
                }
            };
            Ok((name, t))
        })
        .collect()
}

/// Streams one table from SQLite into PostgreSQL, [`CHUNK`] rows per `INSERT`; returns the rows
/// copied.
async fn copy_table(
    stx: &mut SqliteConnection,
    ptx: &mut PgConnection,
    table: &str,
    columns: &[(String, ColumnType)],
) -> Result<u64> {
    let list = columns.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>().join(", ");
    let select = format!("SELECT {list} FROM {table}");
    let insert = format!("INSERT INTO {table} ({list}) ");
    let mut rows = sqlx::query(sqlx::AssertSqlSafe(select)).fetch(&mut *stx);
    let mut chunk: Vec<Vec<Value>> = Vec::with_capacity(CHUNK);
    let mut copied = 0u64;
    loop {
        let row = rows.try_next().await.map_err(|e| copy_err(&format!("reading {table} from the source"), e))?;
        if let Some(row) = &row {
            let mut values = Vec::with_capacity(columns.len());
            for (i, (name, ty)) in columns.iter().enumerate() {
                let bad = |e: sqlx::Error| copy_err(&format!("reading {table}.{name} from the source"), e);
                values.push(match ty {
                    ColumnType::Text => Value::Text(row.try_get(i).map_err(bad)?),
                    ColumnType::BigInt => Value::BigInt(row.try_get(i).map_err(bad)?),
                    ColumnType::Bytes => Value::Bytes(row.try_get(i).map_err(bad)?),
                    ColumnType::Bool => Value::Bool(row.try_get::<Option<i64>, _>(i).map_err(bad)?.map(|n| n != 0)),
                });
            }
            refuse_nul(table, columns, &values, copied + chunk.len() as u64 + 1)?;
            chunk.push(values);
        }
        if chunk.len() >= CHUNK || (row.is_none() && !chunk.is_empty()) {
            let n = chunk.len() as u64;
            let mut q = QueryBuilder::<Postgres>::new(insert.clone());
            q.push_values(chunk.drain(..), |mut b, values| {
                for v in values {
                    match v {
                        Value::Text(x) => b.push_bind(x),
                        Value::BigInt(x) => b.push_bind(x),
                        Value::Bytes(x) => b.push_bind(x),
                        Value::Bool(x) => b.push_bind(x),
                    };
                }
            });
            if table == COUNTERS {
                q.push(" ON CONFLICT (name) DO UPDATE SET value = GREATEST(counters.value, excluded.value)");
            }
            q.build().execute(&mut *ptx).await.map_err(|e| copy_err(&format!("writing {table} to the target"), e))?;
            copied += n;
        }
        if row.is_none() {
            return Ok(copied);
        }
    }
}

/// PostgreSQL's text cannot hold a NUL character. agentvault refuses one in what it stores, but a
/// database written by an earlier release may hold one (in a description, say): name the value,
/// so that it can be changed before the copy runs again (the transaction leaves nothing behind).
fn refuse_nul(table: &str, columns: &[(String, ColumnType)], values: &[Value], row: u64) -> Result<()> {
    let Some(column) = columns
        .iter()
        .zip(values)
        .find_map(|((name, _), v)| matches!(v, Value::Text(Some(t)) if t.contains('\0')).then_some(name))
    else {
        return Ok(());
    };
    let id = columns.iter().zip(values).find_map(|((name, _), v)| match v {
        Value::Text(Some(id)) if name == "id" => Some(id),
        _ => None,
    });
    let which = id.map_or_else(|| format!("row {row} of {table}"), |id| format!("the {table} row with id {id}"));
    Err(Error::unprocessable(
        "unstorable_text",
        format!(
            "{table}.{column} of {which} holds a NUL character (U+0000), which PostgreSQL cannot store in text; \
             an earlier agentvault accepted it. Change that value (a description can be edited in the console or \
             through the API) and run migrate-store again; nothing was copied"
        ),
    ))
}

/// Sets the target's counters past every copied number, so new records never collide: the audit
/// counter (SQLite numbers records in memory from the table) and the change counter.
async fn continue_counters(ptx: &mut PgConnection) -> Result<(i64, i64)> {
    let mut out = [0i64; 2];
    let last = [
        // Audit records are rows of `audit_log` and records of segments.
        (
            "audit",
            "GREATEST((SELECT COALESCE(MAX(seq), 0) FROM audit_log), (SELECT COALESCE(MAX(last_seq), 0) FROM audit_segments))",
        ),
        ("changes", "(SELECT COALESCE(MAX(seq), 0) FROM changes)"),
    ];
    for (i, (name, highest)) in last.into_iter().enumerate() {
        let sql = format!(
            "INSERT INTO counters (name, value) VALUES ($1, {highest}) \
             ON CONFLICT (name) DO UPDATE SET value = GREATEST(counters.value, excluded.value) RETURNING value"
        );
        out[i] = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .fetch_one(&mut *ptx)
            .await
            .map_err(|e| copy_err(&format!("setting the {name} counter"), e))?;
    }
    Ok((out[0], out[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nul_in_text_is_named_by_table_column_and_row() {
        let columns = [("name".to_owned(), ColumnType::Text), ("id".to_owned(), ColumnType::Text)];
        let clean = [Value::Text(Some("refunds".into())), Value::Text(Some("agt_1".into()))];
        assert!(refuse_nul("agents", &columns, &clean, 1).is_ok());
        let nul = [Value::Text(Some("refu\0nds".into())), Value::Text(Some("agt_1".into()))];
        let e = refuse_nul("agents", &columns, &nul, 7).unwrap_err().to_string();
        assert!(e.contains("agents.name of the agents row with id agt_1") && e.contains("NUL"), "{e}");
        let columns = [("detail".to_owned(), ColumnType::Text), ("seq".to_owned(), ColumnType::BigInt)];
        let e = refuse_nul("audit_log", &columns, &[Value::Text(Some("\0".into())), Value::BigInt(Some(3))], 7)
            .unwrap_err()
            .to_string();
        assert!(e.contains("audit_log.detail of row 7 of audit_log"), "{e}");
    }

    /// Every table of the SQLite schema is copied or deliberately left out: a new migration's
    /// table must be added to `TABLES`.
    #[tokio::test]
    async fn every_table_of_the_schema_is_copied() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("agentvault.db")).await.unwrap();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
        )
        .fetch_all(store.read_pool())
        .await
        .unwrap();
        assert_eq!(unknown_tables(&tables), Vec::<String>::new());
        for t in TABLES {
            assert!(tables.iter().any(|n| n == t), "{t} is not a table of the schema");
        }
        store.close().await;
    }

    /// An audit log longer than a chunk moves whole, in order (rows and segments); the target numbers new records and
    /// changes after the copied ones; a second copy into it is refused and changes nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_audit_log_moves_in_chunks_and_numbering_continues() {
        use agentvault_core::audit::{Action, AuditEvent, AuditFilter, Outcome};
        use agentvault_core::model::{Actor, Workspace};

        use crate::Store;

        let dir = tempfile::tempdir().unwrap();
        let src = SqliteStore::open(&dir.path().join("agentvault.db")).await.unwrap();
        let ws = Workspace { id: "ws_big".into(), name: "big".into(), created_at: 1 };
        let event = |n: i64, action| AuditEvent::new(n, "ws_big", Actor::System, action, Outcome::Success);
        src.create_workspace(&ws, None, &event(1, Action::WorkspaceCreate)).await.unwrap();
        let reads: Vec<AuditEvent> = (0..(2 * CHUNK as i64 + 7)).map(|n| event(n + 2, Action::SecretRead)).collect();
        src.append_audit(reads.clone()).await.unwrap();
        let all = AuditFilter { limit: 10_000, oldest_first: true, ..AuditFilter::default() };
        let before = src.list_audit("ws_big", &all).await.unwrap();
        assert_eq!(before.len(), reads.len() + 1);

        let url = crate::testing::TestPostgres::shared().database().await;
        let dst = PostgresStore::open(&url, 4).await.unwrap();
        let report = copy_sqlite_to_postgres(&src, &dst, &|_| Ok(())).await.unwrap();
        let copied = |t: &str| report.tables.iter().find(|(n, _)| n == t).map(|(_, c)| *c);
        // The workspace's creation is a row; the reads are in segments.
        assert_eq!(copied("audit_log"), Some(1));
        assert!(copied("audit_segments").is_some_and(|n| n >= 1));
        assert!(copied("audit_segment_keys").is_some_and(|n| n >= 1));
        assert_eq!(report.audit_seq, before.last().unwrap().seq);
        let after = dst.list_audit("ws_big", &all).await.unwrap();
        let key = |r: &agentvault_core::audit::AuditRecord| (r.seq, r.event.at, r.event.action.as_str().to_owned());
        assert_eq!(after.iter().map(key).collect::<Vec<_>>(), before.iter().map(key).collect::<Vec<_>>());

        let latest = dst.latest_change().await.unwrap();
        assert_eq!(latest, src.latest_change().await.unwrap());
        let ws2 = Workspace { id: "ws_new".into(), name: "new".into(), created_at: 2 };
        dst.create_workspace(&ws2, None, &event(9, Action::WorkspaceCreate)).await.unwrap();
        assert_eq!(dst.latest_change().await.unwrap(), latest + 1);
        let newest = dst.list_audit("ws_big", &all).await.unwrap();
        assert_eq!(newest.last().map(|r| r.seq), Some(report.audit_seq + 1));

        let again = copy_sqlite_to_postgres(&src, &dst, &|_| Ok(())).await.unwrap_err();
        assert_eq!(again.code, "target_not_empty");
        assert_eq!(dst.list_audit("ws_big", &all).await.unwrap().len(), newest.len());
        src.close().await;
        dst.close().await;
    }
}

//! The SQLite backend: one file in WAL mode. Mutations go through a single writer connection
//! with `synchronous=FULL` (an acknowledged change survives a crash of the process and of the
//! machine); queries use a small pool of reader connections, which WAL lets run beside the
//! writers.
//!
//! Audit appends of agent reads take another road. They sit on the hot path (a read is answered
//! only once its record is durable), so they are appended to a journal file on the calling
//! thread and moved into the table in the background (see [`crate::journal`]). The mover uses a
//! rusqlite connection — the same SQLite library (`libsqlite3-sys`) that sqlx uses — because it
//! is a plain thread doing blocking work, where sqlx would add a hand-off to its own worker
//! thread for every statement.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use agentvault_core::audit::{Action, AuditEvent, AuditFilter, AuditRecord, Outcome};
use agentvault_core::model::{
    Actor, AdminToken, Agent, ApiKeyMeta, Function, FunctionParam, Invitation, KeyScope, Member, Millis, ParamType,
    PersonalToken, Role, Sealed, SecretMeta, SecretVersionMeta, Session, User, Workspace,
};
use agentvault_core::{Error, Result, SecretKind};
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};

use crate::journal::AuditJournal;
use crate::{NewAccount, PasswordChange, SealedVersion, SecretChange, SecretRecord, Store};

/// `SELECT <the columns of an invitation> FROM invitations <rest>`, as one static string.
macro_rules! select_invitations {
    ($rest:literal) => {
        concat!(
            "SELECT id, workspace_id, email, role, invited_by, created_at, expires_at, revoked_at, accepted_at \
             FROM invitations ",
            $rest
        )
    };
}

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../migrations/sqlite/0002_people.sql")),
    (3, include_str!("../migrations/sqlite/0003_functions.sql")),
    (4, include_str!("../migrations/sqlite/0004_invitations.sql")),
];

pub struct SqliteStore {
    write: SqlitePool,
    journal: Option<AuditJournal>,
    /// The next audit sequence number (records are ordered by it, across workspaces).
    audit_seq: Arc<AtomicI64>,
    read: SqlitePool,
}

fn db_err(e: sqlx::Error) -> Error {
    match &e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
            Error::unavailable("the database is busy or closed; try again shortly")
        }
        _ => Error::internal(format!("sqlite: {e}")),
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| d.is_unique_violation())
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        let base = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            // Deleted rows are overwritten with zeros, not just unlinked: deleted secrets' and
            // retired wrapped data keys must not linger in free space (see `wipe_wal`).
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
        let read = connect(SqliteSynchronous::Normal, 4).await.map_err(db_err)?;
        let mut store = SqliteStore { read, write, journal: None, audit_seq: Arc::new(AtomicI64::new(1)) };
        store.migrate().await?;
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

    async fn migrate(&self) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations").fetch_all(&mut *tx).await.map_err(db_err)?;
        for (version, sql) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            sqlx::raw_sql(*sql).execute(&mut *tx).await.map_err(db_err)?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, strftime('%s','now') * 1000)")
                .bind(version)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        if let Some(newest) = applied.iter().max().filter(|v| **v > MIGRATIONS.len() as i64) {
            return Err(Error::unavailable(format!(
                "the database has schema version {newest}, newer than this agentvault knows; run a newer agentvault"
            )));
        }
        tx.commit().await.map_err(db_err)
    }

    fn journal(&self) -> Result<&AuditJournal> {
        self.journal.as_ref().ok_or_else(|| Error::internal("the audit journal is not open"))
    }

    /// Copies every page of the WAL into the database file and truncates the WAL, after a delete
    /// or a re-wrap: `secure_delete` zeroes the deleted cells in the new page images, but until
    /// the checkpoint the old images still sit in the database file, and the WAL still holds the
    /// frames that wrote them. Waits for readers (the busy timeout) and retries for a few seconds;
    /// if the WAL stays busy the next checkpoint (at the latest, the close) finishes the job.
    async fn wipe_wal(&self) {
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

    /// Closes every connection, checkpointing the WAL.
    pub async fn close(&self) {
        if let Some(j) = &self.journal {
            j.close();
        }
        self.read.close().await;
        self.write.close().await;
    }
}

/// Revokes the pending invitations a person made in a workspace, when they stop being its admin:
/// an invitation must not carry an admin's power past their removal or demotion.
async fn revoke_invitations_by(
    tx: &mut sqlx::SqliteConnection,
    workspace_id: &str,
    user_id: &str,
    now: Millis,
) -> Result<()> {
    sqlx::query(
        "UPDATE invitations SET revoked_at = $1 \
         WHERE workspace_id = $2 AND invited_by = $3 AND revoked_at IS NULL AND accepted_at IS NULL",
    )
    .bind(now)
    .bind(workspace_id)
    .bind(user_id)
    .execute(&mut *tx)
    .await
    .map_err(db_err)?;
    Ok(())
}

// --- row mapping --------------------------------------------------------------------------------

fn get<'r, T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>>(row: &'r SqliteRow, col: &str) -> Result<T> {
    row.try_get(col).map_err(db_err)
}

fn agent_from(row: &SqliteRow) -> Result<Agent> {
    Ok(Agent {
        id: get(row, "id")?,
        workspace_id: get(row, "workspace_id")?,
        name: get(row, "name")?,
        description: get(row, "description")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

fn kind_from(row: &SqliteRow) -> Result<SecretKind> {
    let kind: String = get(row, "kind")?;
    SecretKind::parse(&kind).ok_or_else(|| Error::internal(format!("unknown secret kind {kind:?} in the database")))
}

fn keys_from(row: &SqliteRow) -> Result<Option<Vec<String>>> {
    let keys: Option<String> = get(row, "keys")?;
    keys.map(|k| serde_json::from_str(&k).map_err(|e| Error::internal(format!("bad key list: {e}")))).transpose()
}

fn keys_json(keys: Option<&[String]>) -> Option<String> {
    keys.map(|k| serde_json::Value::from(k.to_vec()).to_string())
}

fn version_from(row: &SqliteRow, col: &str) -> Result<u32> {
    let v: i64 = get(row, col)?;
    u32::try_from(v).map_err(|_| Error::internal("secret version out of range"))
}

/// Secret metadata from a row of `SECRET_META_SELECT`; `agents` filled in by the caller.
fn secret_meta_from(row: &SqliteRow) -> Result<SecretMeta> {
    Ok(SecretMeta {
        id: get(row, "id")?,
        workspace_id: get(row, "workspace_id")?,
        name: get(row, "name")?,
        description: get(row, "description")?,
        kind: kind_from(row)?,
        keys: keys_from(row)?,
        version: version_from(row, "current_version")?,
        agents: Vec::new(),
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

fn sealed_from(row: &SqliteRow) -> Result<Sealed> {
    Ok(Sealed {
        root_key_id: get(row, "root_key_id")?,
        wrapped_dek: get(row, "wrapped_dek")?,
        ciphertext: get(row, "ciphertext")?,
    })
}

const SECRET_META_SELECT: &str = "SELECT s.id, s.workspace_id, s.name, s.description, s.current_version, \
     s.created_at, s.updated_at, v.kind, v.keys, v.root_key_id, v.wrapped_dek, v.ciphertext \
     FROM secrets s JOIN secret_versions v ON v.secret_id = s.id AND v.version = s.current_version";

fn api_key_from(row: &SqliteRow, agents: Option<BTreeSet<String>>) -> Result<ApiKeyMeta> {
    let all: bool = get(row, "all_agents")?;
    Ok(ApiKeyMeta {
        id: get(row, "id")?,
        workspace_id: get(row, "workspace_id")?,
        name: get(row, "name")?,
        prefix: get(row, "prefix")?,
        scope: if all { KeyScope::All } else { KeyScope::Agents(agents.unwrap_or_default()) },
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
        revoked_at: get(row, "revoked_at")?,
        last_used_at: get(row, "last_used_at")?,
        created_by: get(row, "created_by")?,
    })
}

// --- helpers that run inside a transaction ------------------------------------------------------

const AUDIT_INSERT: &str = "INSERT INTO audit_log \
     (seq, at, workspace_id, actor_type, actor_id, action, outcome, secret_name, agent_id, target_id, detail) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

/// Appends audit records inside a sqlx transaction (mutations write their record with the change).
async fn insert_audit(conn: &mut SqliteConnection, seq: &AtomicI64, events: &[AuditEvent]) -> Result<()> {
    for e in events {
        sqlx::query(AUDIT_INSERT)
            .bind(seq.fetch_add(1, Ordering::Relaxed))
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
            .await
            .map_err(db_err)?;
    }
    Ok(())
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

/// Fails with 422 `unknown_agent` unless every agent belongs to the workspace.
async fn check_agents(conn: &mut SqliteConnection, workspace_id: &str, agents: &[String]) -> Result<()> {
    for agent in agents {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM agents WHERE id = ? AND workspace_id = ?")
            .bind(agent)
            .bind(workspace_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_err)?;
        if found.is_none() {
            return Err(Error::unprocessable(
                "unknown_agent",
                format!("agent {agent} does not exist in this workspace; nothing was changed"),
            )
            .with_field("agents"));
        }
    }
    Ok(())
}

async fn replace_access(conn: &mut SqliteConnection, secret_id: &str, agents: &[String], now: Millis) -> Result<()> {
    sqlx::query("DELETE FROM secret_access WHERE secret_id = ?")
        .bind(secret_id)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    for agent in agents {
        sqlx::query("INSERT OR IGNORE INTO secret_access (secret_id, agent_id, granted_at) VALUES (?, ?, ?)")
            .bind(secret_id)
            .bind(agent)
            .bind(now)
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
    }
    Ok(())
}

async fn access_of(conn: &mut SqliteConnection, secret_id: &str) -> Result<Vec<String>> {
    sqlx::query_scalar("SELECT agent_id FROM secret_access WHERE secret_id = ? ORDER BY agent_id")
        .bind(secret_id)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)
}

async fn secret_meta_by(
    conn: &mut SqliteConnection,
    workspace_id: &str,
    clause: &'static str,
    key: &str,
) -> Result<Option<SecretMeta>> {
    let sql = match clause {
        "name" => format!("{SECRET_META_SELECT} WHERE s.workspace_id = ? AND s.name = ?"),
        _ => format!("{SECRET_META_SELECT} WHERE s.workspace_id = ? AND s.id = ?"),
    };
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(workspace_id)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
    let Some(row) = row else { return Ok(None) };
    let mut meta = secret_meta_from(&row)?;
    meta.agents = access_of(conn, &meta.id).await?;
    Ok(Some(meta))
}

fn secret_gone() -> Error {
    Error::not_found("secret_not_found", "the secret no longer exists")
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.read).await.map_err(db_err).map(|_| ())
    }

    async fn list_workspaces(&self) -> Result<Vec<Workspace>> {
        let rows = sqlx::query("SELECT id, name, created_at FROM workspaces ORDER BY created_at, id")
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| Ok(Workspace { id: get(r, "id")?, name: get(r, "name")?, created_at: get(r, "created_at")? }))
            .collect()
    }

    async fn get_workspace(&self, id: &str) -> Result<Option<Workspace>> {
        let row = sqlx::query("SELECT id, name, created_at FROM workspaces WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.read)
            .await
            .map_err(db_err)?;
        row.map(|r| Ok(Workspace { id: get(&r, "id")?, name: get(&r, "name")?, created_at: get(&r, "created_at")? }))
            .transpose()
    }

    async fn create_workspace(&self, ws: &Workspace, owner: Option<&str>, audit: &AuditEvent) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        sqlx::query("INSERT INTO workspaces (id, name, created_at) VALUES (?, ?, ?)")
            .bind(&ws.id)
            .bind(&ws.name)
            .bind(ws.created_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    Error::conflict("workspace_exists", format!("a workspace named '{}' already exists", ws.name))
                        .with_field("name")
                } else {
                    db_err(e)
                }
            })?;
        if let Some(user_id) = owner {
            sqlx::query("INSERT INTO memberships (user_id, workspace_id, role, created_at) VALUES (?, ?, 'admin', ?)")
                .bind(user_id)
                .bind(&ws.id)
                .bind(ws.created_at)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        insert_audit(&mut tx, &self.audit_seq, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn has_admin_tokens(&self) -> Result<bool> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM admin_tokens").fetch_one(&self.read).await.map_err(db_err)?;
        Ok(n > 0)
    }

    async fn create_admin_token(&self, token: &AdminToken, token_hash: &[u8]) -> Result<()> {
        sqlx::query("INSERT INTO admin_tokens (id, name, token_hash, created_at, revoked_at) VALUES (?, ?, ?, ?, ?)")
            .bind(&token.id)
            .bind(&token.name)
            .bind(token_hash)
            .bind(token.created_at)
            .bind(token.revoked_at)
            .execute(&self.write)
            .await
            .map_err(db_err)
            .map(|_| ())
    }

    async fn delete_admin_tokens(&self) -> Result<u64> {
        let done = sqlx::query("DELETE FROM admin_tokens").execute(&self.write).await.map_err(db_err)?;
        Ok(done.rows_affected())
    }

    async fn load_admin_tokens(&self) -> Result<Vec<(AdminToken, Vec<u8>)>> {
        let rows = sqlx::query("SELECT id, name, token_hash, created_at, revoked_at FROM admin_tokens")
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok((
                    AdminToken {
                        id: get(r, "id")?,
                        name: get(r, "name")?,
                        created_at: get(r, "created_at")?,
                        revoked_at: get(r, "revoked_at")?,
                    },
                    get(r, "token_hash")?,
                ))
            })
            .collect()
    }

    async fn list_agents(&self, workspace_id: &str) -> Result<Vec<Agent>> {
        let rows = sqlx::query("SELECT * FROM agents WHERE workspace_id = ? ORDER BY name, id")
            .bind(workspace_id)
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?;
        rows.iter().map(agent_from).collect()
    }

    async fn load_all_agents(&self) -> Result<Vec<Agent>> {
        let rows = sqlx::query("SELECT * FROM agents").fetch_all(&self.read).await.map_err(db_err)?;
        rows.iter().map(agent_from).collect()
    }

    async fn get_agent(&self, workspace_id: &str, agent_id: &str) -> Result<Option<Agent>> {
        let row = sqlx::query("SELECT * FROM agents WHERE workspace_id = ? AND id = ?")
            .bind(workspace_id)
            .bind(agent_id)
            .fetch_optional(&self.read)
            .await
            .map_err(db_err)?;
        row.as_ref().map(agent_from).transpose()
    }

    async fn create_agent(&self, agent: &Agent, audit: &AuditEvent) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        sqlx::query("INSERT INTO agents (id, workspace_id, name, description, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(&agent.id)
            .bind(&agent.workspace_id)
            .bind(&agent.name)
            .bind(&agent.description)
            .bind(agent.created_at)
            .bind(agent.updated_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| duplicate_agent(e, &agent.name))?;
        insert_audit(&mut tx, &self.audit_seq, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn update_agent(&self, agent: &Agent, audit: &AuditEvent) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        let done = sqlx::query(
            "UPDATE agents SET name = ?, description = ?, updated_at = ? WHERE id = ? AND workspace_id = ?",
        )
        .bind(&agent.name)
        .bind(&agent.description)
        .bind(agent.updated_at)
        .bind(&agent.id)
        .bind(&agent.workspace_id)
        .execute(&mut *tx)
        .await
        .map_err(|e| duplicate_agent(e, &agent.name))?;
        if done.rows_affected() == 0 {
            return Err(agent_gone());
        }
        insert_audit(&mut tx, &self.audit_seq, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn delete_agent(&self, workspace_id: &str, agent_id: &str, audit: &AuditEvent) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        let done = sqlx::query("DELETE FROM agents WHERE id = ? AND workspace_id = ?")
            .bind(agent_id)
            .bind(workspace_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        if done.rows_affected() == 0 {
            return Err(agent_gone());
        }
        insert_audit(&mut tx, &self.audit_seq, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn list_secrets(&self, workspace_id: &str) -> Result<Vec<SecretMeta>> {
        let mut conn = self.read.acquire().await.map_err(db_err)?;
        let sql = format!("{SECRET_META_SELECT} WHERE s.workspace_id = ? ORDER BY s.name");
        let rows =
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(workspace_id).fetch_all(&mut *conn).await.map_err(db_err)?;
        let access = sqlx::query(
            "SELECT a.secret_id, a.agent_id FROM secret_access a JOIN secrets s ON s.id = a.secret_id \
             WHERE s.workspace_id = ? ORDER BY a.agent_id",
        )
        .bind(workspace_id)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
        let mut by_secret: HashMap<String, Vec<String>> = HashMap::new();
        for r in &access {
            by_secret.entry(get(r, "secret_id")?).or_default().push(get(r, "agent_id")?);
        }
        rows.iter()
            .map(|r| {
                let mut meta = secret_meta_from(r)?;
                meta.agents = by_secret.remove(&meta.id).unwrap_or_default();
                Ok(meta)
            })
            .collect()
    }

    async fn get_secret(&self, workspace_id: &str, name: &str) -> Result<Option<SecretMeta>> {
        let mut conn = self.read.acquire().await.map_err(db_err)?;
        secret_meta_by(&mut conn, workspace_id, "name", name).await
    }

    async fn create_secret(&self, meta: &SecretMeta, sealed: &Sealed, audit: &AuditEvent) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        check_agents(&mut tx, &meta.workspace_id, &meta.agents).await?;
        sqlx::query(
            "INSERT INTO secrets (id, workspace_id, name, description, current_version, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&meta.id)
        .bind(&meta.workspace_id)
        .bind(&meta.name)
        .bind(&meta.description)
        .bind(i64::from(meta.version))
        .bind(meta.created_at)
        .bind(meta.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                Error::conflict("secret_exists", format!("a secret named '{}' already exists in this workspace", meta.name))
                    .with_field("name")
                    .with_field("name")
            } else {
                db_err(e)
            }
        })?;
        insert_version(
            &mut tx,
            &meta.id,
            meta.version,
            meta.kind,
            meta.keys.as_deref(),
            sealed,
            meta.created_at,
            audit.actor.id(),
        )
        .await?;
        replace_access(&mut tx, &meta.id, &meta.agents, meta.created_at).await?;
        insert_audit(&mut tx, &self.audit_seq, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn update_secret(
        &self,
        workspace_id: &str,
        change: &SecretChange<'_>,
        audit: &AuditEvent,
    ) -> Result<SecretMeta> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        let current: Option<i64> =
            sqlx::query_scalar("SELECT current_version FROM secrets WHERE id = ? AND workspace_id = ?")
                .bind(change.secret_id)
                .bind(workspace_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        let current = current.ok_or_else(secret_gone)?;
        if current != i64::from(change.expected_version) {
            return Err(Error::conflict(
                "version_conflict",
                "the secret was changed by someone else meanwhile; reload it and try again",
            ));
        }
        let mut version = change.expected_version;
        if let Some(v) = &change.value {
            version += 1;
            insert_version(&mut tx, change.secret_id, version, v.kind, v.keys, v.sealed, change.now, change.actor_id)
                .await?;
        }
        sqlx::query(
            "UPDATE secrets SET description = COALESCE(?, description), current_version = ?, updated_at = ? WHERE id = ?",
        )
        .bind(change.description)
        .bind(i64::from(version))
        .bind(change.now)
        .bind(change.secret_id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        insert_audit(&mut tx, &self.audit_seq, std::slice::from_ref(audit)).await?;
        let meta = secret_meta_by(&mut tx, workspace_id, "id", change.secret_id).await?.ok_or_else(secret_gone)?;
        tx.commit().await.map_err(db_err)?;
        Ok(meta)
    }

    async fn set_secret_access(
        &self,
        workspace_id: &str,
        secret_id: &str,
        agents: &[String],
        now: Millis,
        audit: &AuditEvent,
    ) -> Result<SecretMeta> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        check_agents(&mut tx, workspace_id, agents).await?;
        let done = sqlx::query("UPDATE secrets SET updated_at = ? WHERE id = ? AND workspace_id = ?")
            .bind(now)
            .bind(secret_id)
            .bind(workspace_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        if done.rows_affected() == 0 {
            return Err(secret_gone());
        }
        replace_access(&mut tx, secret_id, agents, now).await?;
        insert_audit(&mut tx, &self.audit_seq, std::slice::from_ref(audit)).await?;
        let meta = secret_meta_by(&mut tx, workspace_id, "id", secret_id).await?.ok_or_else(secret_gone)?;
        tx.commit().await.map_err(db_err)?;
        Ok(meta)
    }

    async fn delete_secret(&self, workspace_id: &str, secret_id: &str, audit: &AuditEvent) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        // Versions first, explicitly: their wrapped data keys are the key material.
        sqlx::query("DELETE FROM secret_versions WHERE secret_id = ? AND secret_id IN (SELECT id FROM secrets WHERE workspace_id = ?)")
            .bind(secret_id)
            .bind(workspace_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let done = sqlx::query("DELETE FROM secrets WHERE id = ? AND workspace_id = ?")
            .bind(secret_id)
            .bind(workspace_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        if done.rows_affected() == 0 {
            return Err(secret_gone());
        }
        insert_audit(&mut tx, &self.audit_seq, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(db_err)?;
        self.wipe_wal().await;
        Ok(())
    }

    async fn list_versions(&self, workspace_id: &str, secret_id: &str) -> Result<Vec<SecretVersionMeta>> {
        let rows = sqlx::query(
            "SELECT v.version, v.kind, v.keys, v.created_at, v.created_by FROM secret_versions v \
             JOIN secrets s ON s.id = v.secret_id WHERE s.workspace_id = ? AND v.secret_id = ? ORDER BY v.version DESC",
        )
        .bind(workspace_id)
        .bind(secret_id)
        .fetch_all(&self.read)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok(SecretVersionMeta {
                    version: version_from(r, "version")?,
                    kind: kind_from(r)?,
                    keys: keys_from(r)?,
                    created_at: get(r, "created_at")?,
                    created_by: get(r, "created_by")?,
                })
            })
            .collect()
    }

    async fn load_current_secrets(&self) -> Result<Vec<SecretRecord>> {
        let mut conn = self.read.acquire().await.map_err(db_err)?;
        let rows = sqlx::query(SECRET_META_SELECT).fetch_all(&mut *conn).await.map_err(db_err)?;
        let access = sqlx::query("SELECT secret_id, agent_id FROM secret_access ORDER BY agent_id")
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err)?;
        let mut by_secret: HashMap<String, Vec<String>> = HashMap::new();
        for r in &access {
            by_secret.entry(get(r, "secret_id")?).or_default().push(get(r, "agent_id")?);
        }
        rows.iter()
            .map(|r| {
                let mut meta = secret_meta_from(r)?;
                meta.agents = by_secret.remove(&meta.id).unwrap_or_default();
                Ok(SecretRecord { meta, sealed: sealed_from(r)? })
            })
            .collect()
    }

    async fn create_api_key(&self, key: &ApiKeyMeta, token_hash: &[u8], audit: &AuditEvent) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        let agents: Vec<String> = match &key.scope {
            KeyScope::All => Vec::new(),
            KeyScope::Agents(set) => set.iter().cloned().collect(),
        };
        check_agents(&mut tx, &key.workspace_id, &agents).await?;
        sqlx::query(
            "INSERT INTO api_keys (id, workspace_id, name, prefix, token_hash, all_agents, created_at, expires_at, revoked_at, last_used_at, created_by) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?)",
        )
        .bind(&key.id)
        .bind(&key.workspace_id)
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(token_hash)
        .bind(matches!(key.scope, KeyScope::All))
        .bind(key.created_at)
        .bind(key.expires_at)
        .bind(&key.created_by)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        for agent in &agents {
            sqlx::query("INSERT INTO api_key_agents (key_id, agent_id) VALUES (?, ?)")
                .bind(&key.id)
                .bind(agent)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        insert_audit(&mut tx, &self.audit_seq, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn list_api_keys(&self, workspace_id: &str) -> Result<Vec<ApiKeyMeta>> {
        let mut keys: Vec<ApiKeyMeta> =
            self.load_api_keys_where(Some(workspace_id)).await?.into_iter().map(|(k, _)| k).collect();
        keys.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| a.id.cmp(&b.id)));
        Ok(keys)
    }

    async fn revoke_api_key(
        &self,
        workspace_id: &str,
        key_id: &str,
        now: Millis,
        audit: &AuditEvent,
    ) -> Result<ApiKeyMeta> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? AND workspace_id = ?")
                .bind(now)
                .bind(key_id)
                .bind(workspace_id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("api_key_not_found", format!("no API key {key_id} exists in this workspace")));
        }
        insert_audit(&mut tx, &self.audit_seq, std::slice::from_ref(audit)).await?;
        let row = sqlx::query("SELECT * FROM api_keys WHERE id = ?")
            .bind(key_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
        let agents: Vec<String> = sqlx::query_scalar("SELECT agent_id FROM api_key_agents WHERE key_id = ?")
            .bind(key_id)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        let key = api_key_from(&row, Some(agents.into_iter().collect()))?;
        tx.commit().await.map_err(db_err)?;
        Ok(key)
    }

    async fn load_api_keys(&self) -> Result<Vec<(ApiKeyMeta, Vec<u8>)>> {
        self.load_api_keys_where(None).await
    }

    async fn record_api_key_use(&self, uses: &[(String, Millis)]) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        for (id, at) in uses {
            sqlx::query("UPDATE api_keys SET last_used_at = MAX(COALESCE(last_used_at, 0), ?) WHERE id = ?")
                .bind(at)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn append_audit(&self, events: &[AuditEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        // Synchronous on purpose: one short write() on the calling thread (see crate::journal).
        let records = events.iter().map(|e| (self.audit_seq.fetch_add(1, Ordering::Relaxed), e.clone())).collect();
        self.journal()?.append(records)
    }

    async fn list_audit(&self, workspace_id: &str, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        // Records still in the journal are moved first, so the caller sees every answered read.
        self.journal()?.sync()?;
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT * FROM audit_log WHERE workspace_id = ");
        qb.push_bind(workspace_id);
        if let Some(a) = filter.action {
            qb.push(" AND action = ").push_bind(a.as_str());
        }
        if let Some(o) = filter.outcome {
            qb.push(" AND outcome = ").push_bind(o.as_str());
        }
        if let Some(s) = &filter.secret_name {
            qb.push(" AND secret_name = ").push_bind(s.as_str());
        }
        if let Some(a) = &filter.agent_id {
            qb.push(" AND agent_id = ").push_bind(a.as_str());
        }
        if let Some(a) = &filter.actor_id {
            qb.push(" AND actor_id = ").push_bind(a.as_str());
        }
        if let Some(t) = filter.since {
            qb.push(" AND at >= ").push_bind(t);
        }
        if let Some(t) = filter.until {
            qb.push(" AND at < ").push_bind(t);
        }
        if let Some(seq) = filter.before_seq {
            qb.push(" AND seq < ").push_bind(seq);
        }
        qb.push(" ORDER BY seq DESC LIMIT ").push_bind(i64::from(filter.limit));
        let rows = qb.build().fetch_all(&self.read).await.map_err(db_err)?;
        rows.iter()
            .map(|r| {
                let action: String = get(r, "action")?;
                let outcome: String = get(r, "outcome")?;
                let actor_type: String = get(r, "actor_type")?;
                Ok(AuditRecord {
                    seq: get(r, "seq")?,
                    event: AuditEvent {
                        at: get(r, "at")?,
                        workspace_id: get(r, "workspace_id")?,
                        actor: Actor::from_parts(&actor_type, get(r, "actor_id")?),
                        action: Action::parse(&action)
                            .ok_or_else(|| Error::internal(format!("unknown audit action {action:?}")))?,
                        outcome: Outcome::parse(&outcome)
                            .ok_or_else(|| Error::internal(format!("unknown audit outcome {outcome:?}")))?,
                        secret_name: get(r, "secret_name")?,
                        agent_id: get(r, "agent_id")?,
                        target_id: get(r, "target_id")?,
                        detail: get(r, "detail")?,
                    },
                })
            })
            .collect()
    }

    async fn count_users(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(&self.read).await.map_err(db_err)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn setup_first_admin(&self, user: &User, password_hash: &str, audit: &[AuditEvent]) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(&mut *tx).await.map_err(db_err)?;
        if users > 0 {
            return Err(Error::conflict("setup_done", "the first admin already exists; sign in instead"));
        }
        insert_user(&mut tx, user, password_hash).await?;
        sqlx::query("INSERT INTO memberships (user_id, workspace_id, role, created_at) SELECT ?, id, 'admin', ? FROM workspaces")
            .bind(&user.id)
            .bind(user.created_at)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        // The bootstrap token becomes the first admin's personal access token.
        sqlx::query(
            "INSERT INTO personal_tokens (id, user_id, name, prefix, token_hash, created_at) \
             SELECT 'pat_' || substr(id, 5), ?, 'bootstrap token', 'bootstrap', token_hash, created_at \
             FROM admin_tokens WHERE revoked_at IS NULL",
        )
        .bind(&user.id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query("DELETE FROM admin_tokens").execute(&mut *tx).await.map_err(db_err)?;
        sqlx::query("DELETE FROM one_time_codes WHERE purpose = 'setup'").execute(&mut *tx).await.map_err(db_err)?;
        insert_audit(&mut tx, &self.audit_seq, audit).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn create_user(
        &self,
        user: &User,
        password_hash: &str,
        memberships: &[(String, Role)],
        audit: &[AuditEvent],
    ) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        insert_user(&mut tx, user, password_hash).await?;
        for (ws, role) in memberships {
            sqlx::query("INSERT INTO memberships (user_id, workspace_id, role, created_at) VALUES (?, ?, ?, ?)")
                .bind(&user.id)
                .bind(ws)
                .bind(role.as_str())
                .bind(user.created_at)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        insert_audit(&mut tx, &self.audit_seq, audit).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<(User, String)>> {
        let row = sqlx::query("SELECT * FROM users WHERE email = ? COLLATE NOCASE")
            .bind(email)
            .fetch_optional(&self.read)
            .await
            .map_err(db_err)?;
        row.map(|r| Ok((user_from(&r)?, get(&r, "password_hash")?))).transpose()
    }

    async fn get_user(&self, user_id: &str) -> Result<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE id = ?")
            .bind(user_id)
            .fetch_optional(&self.read)
            .await
            .map_err(db_err)?;
        row.as_ref().map(user_from).transpose()
    }

    async fn set_password(&self, change: &PasswordChange<'_>, audit: &[AuditEvent]) -> Result<(u64, u64)> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        let done = sqlx::query("UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?")
            .bind(change.password_hash)
            .bind(change.now)
            .bind(change.user_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("user_not_found", "the user no longer exists"));
        }
        let sessions = sqlx::query(
            "UPDATE sessions SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL AND expires_at > ? \
             AND id <> ?",
        )
        .bind(change.now)
        .bind(change.user_id)
        .bind(change.now)
        .bind(change.keep_session.unwrap_or(""))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?
        .rows_affected();
        let tokens = if change.revoke_tokens {
            sqlx::query(
                "UPDATE personal_tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL \
                 AND (expires_at IS NULL OR expires_at > ?) AND id <> ?",
            )
            .bind(change.now)
            .bind(change.user_id)
            .bind(change.now)
            .bind(change.keep_token.unwrap_or(""))
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected()
        } else {
            0
        };
        insert_audit(&mut tx, &self.audit_seq, audit).await?;
        tx.commit().await.map_err(db_err)?;
        Ok((sessions, tokens))
    }

    async fn memberships_of(&self, user_id: &str) -> Result<Vec<(String, Role)>> {
        let rows = sqlx::query("SELECT workspace_id, role FROM memberships WHERE user_id = ?")
            .bind(user_id)
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?;
        rows.iter().map(|r| Ok((get(r, "workspace_id")?, role_from(r)?))).collect()
    }

    async fn list_members(&self, workspace_id: &str) -> Result<Vec<Member>> {
        let rows = sqlx::query(
            "SELECT u.*, m.role, m.created_at AS joined_at FROM memberships m JOIN users u ON u.id = m.user_id \
             WHERE m.workspace_id = ? ORDER BY u.email",
        )
        .bind(workspace_id)
        .fetch_all(&self.read)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| Ok(Member { user: user_from(r)?, role: role_from(r)?, joined_at: get(r, "joined_at")? }))
            .collect()
    }

    async fn add_member(
        &self,
        workspace_id: &str,
        user_id: &str,
        role: Role,
        now: Millis,
        audit: &AuditEvent,
    ) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        sqlx::query("INSERT INTO memberships (user_id, workspace_id, role, created_at) VALUES (?, ?, ?, ?)")
            .bind(user_id)
            .bind(workspace_id)
            .bind(role.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    Error::conflict("already_member", "that user is already a member of this workspace")
                        .with_field("email")
                } else {
                    db_err(e)
                }
            })?;
        insert_audit(&mut tx, &self.audit_seq, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn set_role(&self, workspace_id: &str, user_id: &str, role: Role, audit: &AuditEvent) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        let current = member_role(&mut tx, workspace_id, user_id).await?;
        if current == Role::Admin && role != Role::Admin {
            refuse_last_admin(&mut tx, workspace_id, "demoted").await?;
        }
        sqlx::query("UPDATE memberships SET role = ? WHERE workspace_id = ? AND user_id = ?")
            .bind(role.as_str())
            .bind(workspace_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        if role != Role::Admin {
            revoke_invitations_by(&mut tx, workspace_id, user_id, audit.at).await?;
        }
        insert_audit(&mut tx, &self.audit_seq, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn remove_member(&self, workspace_id: &str, user_id: &str, audit: &AuditEvent) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        if member_role(&mut tx, workspace_id, user_id).await? == Role::Admin {
            refuse_last_admin(&mut tx, workspace_id, "removed").await?;
        }
        sqlx::query("DELETE FROM memberships WHERE workspace_id = ? AND user_id = ?")
            .bind(workspace_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        revoke_invitations_by(&mut tx, workspace_id, user_id, audit.at).await?;
        insert_audit(&mut tx, &self.audit_seq, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn create_session(&self, session: &Session, token_hash: &[u8], audit: &[AuditEvent]) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        sqlx::query(
            "INSERT INTO sessions (id, user_id, token_hash, created_at, expires_at, revoked_at, client, user_agent) \
             VALUES (?, ?, ?, ?, ?, NULL, ?, ?)",
        )
        .bind(&session.id)
        .bind(&session.user_id)
        .bind(token_hash)
        .bind(session.created_at)
        .bind(session.expires_at)
        .bind(&session.client)
        .bind(&session.user_agent)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        // Expired sessions of this user are of no use to anyone.
        sqlx::query("DELETE FROM sessions WHERE user_id = ? AND expires_at < ?")
            .bind(&session.user_id)
            .bind(session.created_at)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        insert_audit(&mut tx, &self.audit_seq, audit).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn session_by_hash(&self, token_hash: &[u8]) -> Result<Option<Session>> {
        let row = sqlx::query("SELECT * FROM sessions WHERE token_hash = ?")
            .bind(token_hash)
            .fetch_optional(&self.read)
            .await
            .map_err(db_err)?;
        row.as_ref().map(session_from).transpose()
    }

    async fn list_sessions(&self, user_id: &str) -> Result<Vec<Session>> {
        let rows = sqlx::query("SELECT * FROM sessions WHERE user_id = ? ORDER BY created_at DESC")
            .bind(user_id)
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?;
        rows.iter().map(session_from).collect()
    }

    async fn revoke_session(&self, user_id: &str, session_id: &str, now: Millis, audit: &[AuditEvent]) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        let done = sqlx::query("UPDATE sessions SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? AND user_id = ?")
            .bind(now)
            .bind(session_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("session_not_found", "no such session of yours"));
        }
        insert_audit(&mut tx, &self.audit_seq, audit).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn create_personal_token(
        &self,
        token: &PersonalToken,
        token_hash: &[u8],
        audit: &[AuditEvent],
    ) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        sqlx::query(
            "INSERT INTO personal_tokens (id, user_id, name, prefix, token_hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&token.id)
        .bind(&token.user_id)
        .bind(&token.name)
        .bind(&token.prefix)
        .bind(token_hash)
        .bind(token.created_at)
        .bind(token.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        insert_audit(&mut tx, &self.audit_seq, audit).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn personal_token_by_hash(&self, token_hash: &[u8]) -> Result<Option<PersonalToken>> {
        let row = sqlx::query("SELECT * FROM personal_tokens WHERE token_hash = ?")
            .bind(token_hash)
            .fetch_optional(&self.read)
            .await
            .map_err(db_err)?;
        row.as_ref().map(personal_token_from).transpose()
    }

    async fn list_personal_tokens(&self, user_id: &str) -> Result<Vec<PersonalToken>> {
        let rows = sqlx::query("SELECT * FROM personal_tokens WHERE user_id = ? ORDER BY created_at DESC")
            .bind(user_id)
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?;
        rows.iter().map(personal_token_from).collect()
    }

    async fn revoke_personal_token(
        &self,
        user_id: &str,
        token_id: &str,
        now: Millis,
        audit: &[AuditEvent],
    ) -> Result<PersonalToken> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        let done =
            sqlx::query("UPDATE personal_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? AND user_id = ?")
                .bind(now)
                .bind(token_id)
                .bind(user_id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("token_not_found", "no such personal access token of yours"));
        }
        insert_audit(&mut tx, &self.audit_seq, audit).await?;
        let row = sqlx::query("SELECT * FROM personal_tokens WHERE id = ?")
            .bind(token_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
        let token = personal_token_from(&row)?;
        tx.commit().await.map_err(db_err)?;
        Ok(token)
    }

    async fn record_personal_token_use(&self, token_id: &str, at: Millis) -> Result<()> {
        sqlx::query("UPDATE personal_tokens SET last_used_at = MAX(COALESCE(last_used_at, 0), ?) WHERE id = ?")
            .bind(at)
            .bind(token_id)
            .execute(&self.write)
            .await
            .map_err(db_err)
            .map(|_| ())
    }

    async fn set_one_time_code(&self, purpose: &str, code_hash: &[u8], now: Millis) -> Result<()> {
        sqlx::query("INSERT OR REPLACE INTO one_time_codes (purpose, code_hash, created_at) VALUES (?, ?, ?)")
            .bind(purpose)
            .bind(code_hash)
            .bind(now)
            .execute(&self.write)
            .await
            .map_err(db_err)
            .map(|_| ())
    }

    async fn one_time_code(&self, purpose: &str) -> Result<Option<Vec<u8>>> {
        sqlx::query_scalar("SELECT code_hash FROM one_time_codes WHERE purpose = ?")
            .bind(purpose)
            .fetch_optional(&self.read)
            .await
            .map_err(db_err)
    }

    async fn create_invitation(&self, invitation: &Invitation, code_hash: &[u8], audit: &[AuditEvent]) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        let member: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM memberships m JOIN users u ON u.id = m.user_id \
             WHERE m.workspace_id = ? AND LOWER(u.email) = LOWER(?)",
        )
        .bind(&invitation.workspace_id)
        .bind(&invitation.email)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        if member.is_some() {
            return Err(Error::conflict(
                "already_member",
                format!("{} is already a member of this workspace", invitation.email),
            )
            .with_field("email"));
        }
        // A new invitation replaces the pending one for the same person and workspace.
        sqlx::query(
            "UPDATE invitations SET revoked_at = ? WHERE workspace_id = ? AND LOWER(email) = LOWER(?) \
             AND revoked_at IS NULL AND accepted_at IS NULL",
        )
        .bind(invitation.created_at)
        .bind(&invitation.workspace_id)
        .bind(&invitation.email)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query(
            "INSERT INTO invitations (id, workspace_id, email, role, code_hash, invited_by, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&invitation.id)
        .bind(&invitation.workspace_id)
        .bind(&invitation.email)
        .bind(invitation.role.as_str())
        .bind(code_hash)
        .bind(&invitation.invited_by)
        .bind(invitation.created_at)
        .bind(invitation.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        insert_audit(&mut tx, &self.audit_seq, audit).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn list_invitations(&self, workspace_id: &str, now: Millis) -> Result<Vec<Invitation>> {
        let rows = sqlx::query(select_invitations!(
            "WHERE workspace_id = ? AND revoked_at IS NULL AND accepted_at IS NULL AND expires_at > ? \
             ORDER BY created_at DESC"
        ))
        .bind(workspace_id)
        .bind(now)
        .fetch_all(&self.read)
        .await
        .map_err(db_err)?;
        rows.iter().map(invitation_from).collect()
    }

    async fn invitation_by_hash(&self, code_hash: &[u8]) -> Result<Option<Invitation>> {
        let row = sqlx::query(select_invitations!("WHERE code_hash = ?"))
            .bind(code_hash)
            .fetch_optional(&self.read)
            .await
            .map_err(db_err)?;
        row.as_ref().map(invitation_from).transpose()
    }

    async fn revoke_invitation(
        &self,
        workspace_id: &str,
        invitation_id: &str,
        now: Millis,
        audit: &[AuditEvent],
    ) -> Result<Invitation> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        let done = sqlx::query(
            "UPDATE invitations SET revoked_at = ? WHERE id = ? AND workspace_id = ? AND revoked_at IS NULL \
             AND accepted_at IS NULL AND expires_at > ?",
        )
        .bind(now)
        .bind(invitation_id)
        .bind(workspace_id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found(
                "invitation_not_found",
                "no pending invitation with that id in this workspace (it may have been accepted, revoked or expired)",
            ));
        }
        insert_audit(&mut tx, &self.audit_seq, audit).await?;
        let row = sqlx::query(select_invitations!("WHERE id = ?"))
            .bind(invitation_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
        let invitation = invitation_from(&row)?;
        tx.commit().await.map_err(db_err)?;
        Ok(invitation)
    }

    async fn accept_invitation(
        &self,
        invitation: &Invitation,
        user_id: &str,
        new_account: Option<NewAccount<'_>>,
        now: Millis,
        audit: &[AuditEvent],
    ) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        // Single use: only a pending invitation is marked used, inside the transaction that
        // adds the membership.
        let done = sqlx::query(
            "UPDATE invitations SET accepted_at = ?, accepted_by = ? WHERE id = ? AND revoked_at IS NULL \
             AND accepted_at IS NULL AND expires_at > ?",
        )
        .bind(now)
        .bind(user_id)
        .bind(&invitation.id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if done.rows_affected() == 0 {
            return Err(Invitation::unusable());
        }
        if let Some(account) = new_account {
            insert_user(&mut tx, account.user, account.password_hash).await?;
        }
        sqlx::query("INSERT INTO memberships (user_id, workspace_id, role, created_at) VALUES (?, ?, ?, ?)")
            .bind(user_id)
            .bind(&invitation.workspace_id)
            .bind(invitation.role.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    Error::conflict("already_member", "you are already a member of this workspace; sign in to use it")
                } else {
                    db_err(e)
                }
            })?;
        insert_audit(&mut tx, &self.audit_seq, audit).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn list_functions(&self, workspace_id: &str, agent_id: &str) -> Result<Vec<Function>> {
        let rows = sqlx::query("SELECT * FROM functions WHERE workspace_id = ? AND agent_id = ? ORDER BY name")
            .bind(workspace_id)
            .bind(agent_id)
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?;
        rows.iter().map(function_from).collect()
    }

    async fn get_function(&self, workspace_id: &str, agent_id: &str, name: &str) -> Result<Option<Function>> {
        let row = sqlx::query("SELECT * FROM functions WHERE workspace_id = ? AND agent_id = ? AND name = ?")
            .bind(workspace_id)
            .bind(agent_id)
            .bind(name)
            .fetch_optional(&self.read)
            .await
            .map_err(db_err)?;
        row.as_ref().map(function_from).transpose()
    }

    async fn create_function(&self, f: &Function, audit: &AuditEvent) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        sqlx::query(
            "INSERT INTO functions (id, workspace_id, agent_id, name, description, parameters, code, timeout_ms, version, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&f.id)
        .bind(&f.workspace_id)
        .bind(&f.agent_id)
        .bind(&f.name)
        .bind(&f.description)
        .bind(params_json(&f.parameters))
        .bind(&f.code)
        .bind(f.timeout_ms.map(i64::from))
        .bind(i64::from(f.version))
        .bind(f.created_at)
        .bind(f.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                Error::conflict("function_exists", format!("this agent already has a function named '{}'", f.name))
                    .with_field("name")
            } else {
                db_err(e)
            }
        })?;
        insert_audit(&mut tx, &self.audit_seq, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn update_function(&self, f: &Function, audit: &AuditEvent) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        let done = sqlx::query(
            "UPDATE functions SET description = ?, parameters = ?, code = ?, timeout_ms = ?, version = ?, updated_at = ? \
             WHERE id = ? AND workspace_id = ? AND version = ?",
        )
        .bind(&f.description)
        .bind(params_json(&f.parameters))
        .bind(&f.code)
        .bind(f.timeout_ms.map(i64::from))
        .bind(i64::from(f.version))
        .bind(f.updated_at)
        .bind(&f.id)
        .bind(&f.workspace_id)
        .bind(i64::from(f.version) - 1)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if done.rows_affected() == 0 {
            return Err(Error::conflict(
                "version_conflict",
                "the function was changed or deleted meanwhile; reload it and try again",
            ));
        }
        insert_audit(&mut tx, &self.audit_seq, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn delete_function(&self, workspace_id: &str, agent_id: &str, name: &str, audit: &AuditEvent) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        let done = sqlx::query("DELETE FROM functions WHERE workspace_id = ? AND agent_id = ? AND name = ?")
            .bind(workspace_id)
            .bind(agent_id)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("function_not_found", format!("this agent has no function named '{name}'")));
        }
        insert_audit(&mut tx, &self.audit_seq, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn all_sealed_versions(&self) -> Result<Vec<SealedVersion>> {
        let rows = sqlx::query(
            "SELECT s.workspace_id, v.secret_id, v.version, v.root_key_id, v.wrapped_dek, v.ciphertext \
             FROM secret_versions v JOIN secrets s ON s.id = v.secret_id ORDER BY v.secret_id, v.version",
        )
        .fetch_all(&self.read)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok(SealedVersion {
                    workspace_id: get(r, "workspace_id")?,
                    secret_id: get(r, "secret_id")?,
                    version: version_from(r, "version")?,
                    sealed: sealed_from(r)?,
                })
            })
            .collect()
    }

    async fn replace_wrapped_keys(&self, rewrapped: &[SealedVersion], audit: &[AuditEvent]) -> Result<()> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?;
        for v in rewrapped {
            let done = sqlx::query("UPDATE secret_versions SET root_key_id = ?, wrapped_dek = ? WHERE secret_id = ? AND version = ? AND ciphertext = ?")
                .bind(&v.sealed.root_key_id)
                .bind(&v.sealed.wrapped_dek)
                .bind(&v.secret_id)
                .bind(i64::from(v.version))
                .bind(&v.sealed.ciphertext)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            if done.rows_affected() != 1 {
                return Err(Error::conflict(
                    "version_conflict",
                    format!(
                        "secret {} version {} changed during the rotation; nothing was changed, run it again",
                        v.secret_id, v.version
                    ),
                ));
            }
        }
        insert_audit(&mut tx, &self.audit_seq, audit).await?;
        tx.commit().await.map_err(db_err)?;
        self.wipe_wal().await;
        Ok(())
    }
}

impl SqliteStore {
    async fn load_api_keys_where(&self, workspace_id: Option<&str>) -> Result<Vec<(ApiKeyMeta, Vec<u8>)>> {
        let mut conn = self.read.acquire().await.map_err(db_err)?;
        let (rows, scopes) = match workspace_id {
            Some(ws) => (
                sqlx::query("SELECT * FROM api_keys WHERE workspace_id = ?").bind(ws).fetch_all(&mut *conn).await,
                sqlx::query("SELECT g.key_id, g.agent_id FROM api_key_agents g JOIN api_keys k ON k.id = g.key_id WHERE k.workspace_id = ?")
                    .bind(ws)
                    .fetch_all(&mut *conn)
                    .await,
            ),
            None => (
                sqlx::query("SELECT * FROM api_keys").fetch_all(&mut *conn).await,
                sqlx::query("SELECT key_id, agent_id FROM api_key_agents").fetch_all(&mut *conn).await,
            ),
        };
        let mut by_key: HashMap<String, BTreeSet<String>> = HashMap::new();
        for r in &scopes.map_err(db_err)? {
            by_key.entry(get(r, "key_id")?).or_default().insert(get(r, "agent_id")?);
        }
        rows.map_err(db_err)?
            .iter()
            .map(|r| {
                let id: String = get(r, "id")?;
                let scope = by_key.remove(&id);
                Ok((api_key_from(r, scope)?, get(r, "token_hash")?))
            })
            .collect()
    }
}

// --- function helpers ---------------------------------------------------------------------------

fn params_json(params: &[FunctionParam]) -> String {
    let list: Vec<serde_json::Value> = params
        .iter()
        .map(|p| serde_json::json!({"name": p.name, "description": p.description, "type": p.kind.as_str()}))
        .collect();
    serde_json::Value::from(list).to_string()
}

fn function_from(row: &SqliteRow) -> Result<Function> {
    let params: String = get(row, "parameters")?;
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&params).map_err(|e| Error::internal(format!("bad function parameters: {e}")))?;
    let parameters = list
        .iter()
        .map(|p| {
            Ok(FunctionParam {
                name: p["name"].as_str().unwrap_or_default().to_owned(),
                description: p["description"].as_str().unwrap_or_default().to_owned(),
                kind: ParamType::parse(p["type"].as_str().unwrap_or_default())
                    .ok_or_else(|| Error::internal("bad function parameter type"))?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let timeout: Option<i64> = get(row, "timeout_ms")?;
    Ok(Function {
        id: get(row, "id")?,
        workspace_id: get(row, "workspace_id")?,
        agent_id: get(row, "agent_id")?,
        name: get(row, "name")?,
        description: get(row, "description")?,
        parameters,
        code: get(row, "code")?,
        timeout_ms: timeout.and_then(|t| u32::try_from(t).ok()),
        version: version_from(row, "version")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

// --- people helpers -----------------------------------------------------------------------------

fn user_from(row: &SqliteRow) -> Result<User> {
    Ok(User {
        id: get(row, "id")?,
        email: get(row, "email")?,
        name: get(row, "name")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

fn invitation_from(row: &SqliteRow) -> Result<Invitation> {
    Ok(Invitation {
        id: get(row, "id")?,
        workspace_id: get(row, "workspace_id")?,
        email: get(row, "email")?,
        role: role_from(row)?,
        invited_by: get(row, "invited_by")?,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
        revoked_at: get(row, "revoked_at")?,
        accepted_at: get(row, "accepted_at")?,
    })
}

fn role_from(row: &SqliteRow) -> Result<Role> {
    let role: String = get(row, "role")?;
    Role::parse(&role).ok_or_else(|| Error::internal(format!("unknown role {role:?} in the database")))
}

fn session_from(row: &SqliteRow) -> Result<Session> {
    Ok(Session {
        id: get(row, "id")?,
        user_id: get(row, "user_id")?,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
        revoked_at: get(row, "revoked_at")?,
        client: get(row, "client")?,
        user_agent: get(row, "user_agent")?,
    })
}

fn personal_token_from(row: &SqliteRow) -> Result<PersonalToken> {
    Ok(PersonalToken {
        id: get(row, "id")?,
        user_id: get(row, "user_id")?,
        name: get(row, "name")?,
        prefix: get(row, "prefix")?,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
        revoked_at: get(row, "revoked_at")?,
        last_used_at: get(row, "last_used_at")?,
    })
}

async fn insert_user(conn: &mut SqliteConnection, user: &User, password_hash: &str) -> Result<()> {
    sqlx::query("INSERT INTO users (id, email, name, password_hash, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)")
        .bind(&user.id)
        .bind(&user.email)
        .bind(&user.name)
        .bind(password_hash)
        .bind(user.created_at)
        .bind(user.updated_at)
        .execute(&mut *conn)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                Error::conflict("user_exists", format!("a user with the email {} already exists", user.email))
                    .with_field("email")
            } else {
                db_err(e)
            }
        })
        .map(|_| ())
}

async fn member_role(conn: &mut SqliteConnection, workspace_id: &str, user_id: &str) -> Result<Role> {
    let role: Option<String> =
        sqlx::query_scalar("SELECT role FROM memberships WHERE workspace_id = ? AND user_id = ?")
            .bind(workspace_id)
            .bind(user_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_err)?;
    let role =
        role.ok_or_else(|| Error::not_found("member_not_found", "that user is not a member of this workspace"))?;
    Role::parse(&role).ok_or_else(|| Error::internal(format!("unknown role {role:?} in the database")))
}

/// 409 `last_admin` when the workspace has no other admin.
async fn refuse_last_admin(conn: &mut SqliteConnection, workspace_id: &str, what: &str) -> Result<()> {
    let admins: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM memberships WHERE workspace_id = ? AND role = 'admin'")
        .bind(workspace_id)
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err)?;
    if admins <= 1 {
        return Err(Error::conflict(
            "last_admin",
            format!("the last admin of a workspace cannot be {what}; make someone else an admin first"),
        ));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn insert_version(
    conn: &mut SqliteConnection,
    secret_id: &str,
    version: u32,
    kind: SecretKind,
    keys: Option<&[String]>,
    sealed: &Sealed,
    now: Millis,
    created_by: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO secret_versions (secret_id, version, kind, keys, root_key_id, wrapped_dek, ciphertext, created_at, created_by) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(secret_id)
    .bind(i64::from(version))
    .bind(kind.as_str())
    .bind(keys_json(keys))
    .bind(&sealed.root_key_id)
    .bind(&sealed.wrapped_dek)
    .bind(&sealed.ciphertext)
    .bind(now)
    .bind(created_by)
    .execute(&mut *conn)
    .await
    .map_err(db_err)
    .map(|_| ())
}

fn duplicate_agent(e: sqlx::Error, name: &str) -> Error {
    if is_unique_violation(&e) {
        Error::conflict("agent_exists", format!("an agent named '{name}' already exists in this workspace"))
            .with_field("name")
    } else {
        db_err(e)
    }
}

fn agent_gone() -> Error {
    Error::not_found("agent_not_found", "the agent no longer exists")
}

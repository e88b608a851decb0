//! Secrets, their immutable versions and their access lists.

use std::collections::HashMap;

use super::Conn;
use agentvault_core::SecretKind;
use agentvault_core::audit::AuditEvent;
use agentvault_core::model::{Env, EnvValueMeta, Millis, Sealed, SecretMeta, SecretVersionMeta};

use super::{Backend, WriteTx, agents};
use crate::errors::{self, DbResult, OnUnique};
use crate::rows::{EnvValueRow, SecretRow, VersionRow, columns, convert, keys_json};
use crate::{SecretChange, SecretRecord, rules};

/// `SELECT` of environments' own values `e` joined with their current version `v` and their
/// secret `s`, then `$rest`.
macro_rules! select_env_values {
    ($rest:literal) => {
        concat!(
            "SELECT ",
            columns!(env_value),
            " FROM secret_envs e JOIN secret_env_versions v ON v.secret_id = e.secret_id AND v.env = e.env \
             AND v.version = e.current_version JOIN secrets s ON s.id = e.secret_id ",
            $rest,
            " ORDER BY e.secret_id, e.env"
        )
    };
}

/// The environments' own values by secret id, each list in [`Env::ALL`] order.
fn env_values_by_secret(rows: Vec<EnvValueRow>) -> DbResult<HashMap<String, Vec<(EnvValueMeta, Sealed)>>> {
    let mut out: HashMap<String, Vec<(EnvValueMeta, Sealed)>> = HashMap::new();
    for row in rows {
        let (secret_id, meta, sealed) = row.into_parts()?;
        out.entry(secret_id).or_default().push((meta, sealed));
    }
    for list in out.values_mut() {
        list.sort_by_key(|(m, _)| m.env);
    }
    Ok(out)
}

/// `SELECT` of secrets `s` joined with their current version `v`, then `$rest`.
macro_rules! select_secrets {
    ($rest:literal) => {
        concat!(
            "SELECT ",
            columns!(secret),
            " FROM secrets s JOIN secret_versions v ON v.secret_id = s.id AND v.version = s.current_version ",
            $rest
        )
    };
}

/// Secrets with their access lists (`access`: `(secret_id, agent_id)` pairs ordered by agent).
fn with_access(rows: Vec<SecretRow>, access: Vec<(String, String)>) -> DbResult<Vec<(SecretMeta, Sealed)>> {
    let mut by_secret: HashMap<String, Vec<String>> = HashMap::new();
    for (secret_id, agent_id) in access {
        by_secret.entry(secret_id).or_default().push(agent_id);
    }
    let records = rows.into_iter().map(|r| {
        let agents = by_secret.remove(r.id()).unwrap_or_default();
        r.into_record(agents)
    });
    Ok(records.collect::<agentvault_core::Result<_>>()?)
}

/// The secrets of a workspace by name.
pub(super) async fn list(s: &Backend, workspace_id: &str) -> DbResult<Vec<SecretMeta>> {
    let mut metas: Vec<SecretMeta> = load_current(s, Some(workspace_id)).await?.into_iter().map(|r| r.meta).collect();
    metas.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(metas)
}

/// Every secret (of one workspace, or all) with its current sealed version, for the read model.
pub(super) async fn load_current(s: &Backend, workspace_id: Option<&str>) -> DbResult<Vec<SecretRecord>> {
    let mut conn = s.read.acquire().await?;
    let env_rows: Vec<EnvValueRow> = match workspace_id {
        Some(ws) => {
            sqlx::query_as(select_env_values!("WHERE s.workspace_id = $1")).bind(ws).fetch_all(&mut *conn).await?
        }
        None => sqlx::query_as(select_env_values!("")).fetch_all(&mut *conn).await?,
    };
    let mut envs = env_values_by_secret(env_rows)?;
    let (rows, access): (Vec<SecretRow>, Vec<(String, String)>) = match workspace_id {
        Some(ws) => (
            sqlx::query_as(select_secrets!("WHERE s.workspace_id = $1")).bind(ws).fetch_all(&mut *conn).await?,
            sqlx::query_as(
                "SELECT a.secret_id, a.agent_id FROM secret_access a JOIN secrets s ON s.id = a.secret_id \
                 WHERE s.workspace_id = $1 ORDER BY a.agent_id",
            )
            .bind(ws)
            .fetch_all(&mut *conn)
            .await?,
        ),
        None => (
            sqlx::query_as(select_secrets!("")).fetch_all(&mut *conn).await?,
            sqlx::query_as("SELECT secret_id, agent_id FROM secret_access ORDER BY agent_id")
                .fetch_all(&mut *conn)
                .await?,
        ),
    };
    Ok(with_access(rows, access)?
        .into_iter()
        .map(|(mut meta, sealed)| {
            let own = envs.remove(&meta.id).unwrap_or_default();
            let mut sealed_envs = Vec::with_capacity(own.len());
            for (m, s) in own {
                sealed_envs.push((m.env, s));
                meta.envs.push(m);
            }
            SecretRecord { meta, sealed, envs: sealed_envs }
        })
        .collect())
}

pub(super) async fn get(s: &Backend, workspace_id: &str, name: &str) -> DbResult<Option<SecretMeta>> {
    let mut conn = s.read.acquire().await?;
    let row: Option<SecretRow> = sqlx::query_as(select_secrets!("WHERE s.workspace_id = $1 AND s.name = $2"))
        .bind(workspace_id)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        Some(row) => Ok(Some(with_agents(&mut conn, row).await?)),
        None => Ok(None),
    }
}

/// The metadata of a secret by id, inside a transaction that changed it.
async fn meta_by_id(conn: &mut Conn, workspace_id: &str, secret_id: &str) -> DbResult<SecretMeta> {
    let row: Option<SecretRow> = sqlx::query_as(select_secrets!("WHERE s.workspace_id = $1 AND s.id = $2"))
        .bind(workspace_id)
        .bind(secret_id)
        .fetch_optional(&mut *conn)
        .await?;
    with_agents(conn, row.ok_or_else(errors::secret_gone)?).await
}

async fn with_agents(conn: &mut Conn, row: SecretRow) -> DbResult<SecretMeta> {
    let agents: Vec<String> =
        sqlx::query_scalar("SELECT agent_id FROM secret_access WHERE secret_id = $1 ORDER BY agent_id")
            .bind(row.id())
            .fetch_all(&mut *conn)
            .await?;
    let env_rows: Vec<EnvValueRow> =
        sqlx::query_as(select_env_values!("WHERE e.secret_id = $1")).bind(row.id()).fetch_all(&mut *conn).await?;
    let mut meta = row.into_record(agents)?.0;
    meta.envs = env_values_by_secret(env_rows)?.into_values().flatten().map(|(m, _)| m).collect();
    meta.envs.sort_by_key(|m| m.env);
    Ok(meta)
}

pub(super) async fn replace_access(conn: &mut Conn, secret_id: &str, agents: &[String], now: Millis) -> DbResult<()> {
    sqlx::query("DELETE FROM secret_access WHERE secret_id = $1").bind(secret_id).execute(&mut *conn).await?;
    for agent in agents {
        sqlx::query(
            "INSERT INTO secret_access (secret_id, agent_id, granted_at) VALUES ($1, $2, $3) \
             ON CONFLICT (secret_id, agent_id) DO NOTHING",
        )
        .bind(secret_id)
        .bind(agent)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// One new version of a secret's value.
struct NewRow<'a> {
    secret_id: &'a str,
    version: u32,
    kind: SecretKind,
    keys: Option<&'a [String]>,
    sealed: &'a Sealed,
    now: Millis,
    created_by: &'a str,
}

/// Stores version `v.version` of environment `env`'s own value and makes it the current one.
async fn insert_env_version(conn: &mut Conn, env: Env, v: NewRow<'_>) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO secret_env_versions \
         (secret_id, env, version, kind, keys, root_key_id, wrapped_dek, ciphertext, created_at, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(v.secret_id)
    .bind(env.as_str())
    .bind(i64::from(v.version))
    .bind(v.kind.as_str())
    .bind(keys_json(v.keys))
    .bind(&v.sealed.root_key_id)
    .bind(&v.sealed.wrapped_dek)
    .bind(&v.sealed.ciphertext)
    .bind(v.now)
    .bind(v.created_by)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO secret_envs (secret_id, env, current_version, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (secret_id, env) DO UPDATE SET current_version = excluded.current_version, \
         updated_at = excluded.updated_at",
    )
    .bind(v.secret_id)
    .bind(env.as_str())
    .bind(i64::from(v.version))
    .bind(v.now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The next version number of environment `env`'s own value (its versions outlive a removal).
async fn next_env_version(conn: &mut Conn, secret_id: &str, env: Env) -> DbResult<u32> {
    let max: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM secret_env_versions WHERE secret_id = $1 AND env = $2")
            .bind(secret_id)
            .bind(env.as_str())
            .fetch_one(&mut *conn)
            .await?;
    let max = u32::try_from(max.unwrap_or(0)).map_err(|_| errors::bad_column("version", max.unwrap_or(0)))?;
    Ok(max + 1)
}

async fn insert_version(conn: &mut Conn, v: NewRow<'_>) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO secret_versions \
         (secret_id, version, kind, keys, root_key_id, wrapped_dek, ciphertext, created_at, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(v.secret_id)
    .bind(i64::from(v.version))
    .bind(v.kind.as_str())
    .bind(keys_json(v.keys))
    .bind(&v.sealed.root_key_id)
    .bind(&v.sealed.wrapped_dek)
    .bind(&v.sealed.ciphertext)
    .bind(v.now)
    .bind(v.created_by)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(super) async fn create(
    s: &Backend,
    meta: &SecretMeta,
    sealed: &Sealed,
    envs: &[(Env, Sealed)],
    audit: &AuditEvent,
) -> DbResult<()> {
    let mut tx = s.begin().await?;
    insert_secret(&mut tx, meta, sealed, audit.actor.id()).await?;
    for (env, sealed) in envs {
        let own = meta.env_value(*env).ok_or_else(|| errors::bad_column("secret environment", env.as_str()))?;
        let row = NewRow {
            secret_id: &meta.id,
            version: 1,
            kind: own.kind,
            keys: own.keys.as_deref(),
            sealed,
            now: meta.created_at,
            created_by: audit.actor.id(),
        };
        insert_env_version(&mut tx, *env, row).await?;
    }
    tx.commit_one(audit).await
}

/// Creates several secrets in one transaction: all of them, or none.
pub(super) async fn create_many(
    s: &Backend,
    secrets: &[(SecretMeta, Sealed)],
    audit: &[AuditEvent],
) -> DbResult<()> {
    let mut tx = s.begin().await?;
    let actor = audit.first().map(|e| e.actor.id()).unwrap_or_default();
    for (meta, sealed) in secrets {
        insert_secret(&mut tx, meta, sealed, actor).await?;
    }
    tx.commit(audit).await
}

async fn insert_secret(tx: &mut WriteTx<'_>, meta: &SecretMeta, sealed: &Sealed, created_by: &str) -> DbResult<()> {
    agents::check_known(tx, &meta.workspace_id, &meta.agents).await?;
    sqlx::query(
        "INSERT INTO secrets (id, workspace_id, name, description, current_version, created_at, updated_at, \
         protected) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&meta.id)
    .bind(&meta.workspace_id)
    .bind(&meta.name)
    .bind(&meta.description)
    .bind(i64::from(meta.version))
    .bind(meta.created_at)
    .bind(meta.updated_at)
    .bind(meta.protected)
    .execute(&mut **tx)
    .await
    .on_unique(|| errors::secret_exists(&meta.name))?;
    let version = NewRow {
        secret_id: &meta.id,
        version: meta.version,
        kind: meta.kind,
        keys: meta.keys.as_deref(),
        sealed,
        now: meta.created_at,
        created_by,
    };
    insert_version(tx, version).await?;
    replace_access(tx, &meta.id, &meta.agents, meta.created_at).await
}

pub(super) async fn update(
    s: &Backend,
    workspace_id: &str,
    change: &SecretChange<'_>,
    audit: &AuditEvent,
) -> DbResult<SecretMeta> {
    let mut tx = s.begin().await?;
    let current: Option<i64> =
        sqlx::query_scalar("SELECT current_version FROM secrets WHERE id = $1 AND workspace_id = $2")
            .bind(change.secret_id)
            .bind(workspace_id)
            .fetch_optional(&mut *tx)
            .await?;
    rules::expected_version(current.ok_or_else(errors::secret_gone)?, change.expected_version)?;
    let mut version = change.expected_version;
    if let Some(v) = &change.value {
        version += 1;
        let row = NewRow {
            secret_id: change.secret_id,
            version,
            kind: v.kind,
            keys: v.keys,
            sealed: v.sealed,
            now: change.now,
            created_by: change.actor_id,
        };
        insert_version(&mut tx, row).await?;
    }
    for c in change.envs {
        match &c.value {
            Some(v) => {
                let next = next_env_version(&mut tx, change.secret_id, c.env).await?;
                if c.version != next {
                    return Err(errors::env_value_moved_on(c.env).into());
                }
                let row = NewRow {
                    secret_id: change.secret_id,
                    version: next,
                    kind: v.kind,
                    keys: v.keys,
                    sealed: v.sealed,
                    now: change.now,
                    created_by: change.actor_id,
                };
                insert_env_version(&mut tx, c.env, row).await?;
            }
            None => {
                sqlx::query("DELETE FROM secret_envs WHERE secret_id = $1 AND env = $2")
                    .bind(change.secret_id)
                    .bind(c.env.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    sqlx::query(
        "UPDATE secrets SET description = COALESCE($1, description), current_version = $2, updated_at = $3, \
         protected = COALESCE($4, protected) WHERE id = $5",
    )
    .bind(change.description)
    .bind(i64::from(version))
    .bind(change.now)
    .bind(change.protected)
    .bind(change.secret_id)
    .execute(&mut *tx)
    .await?;
    let meta = meta_by_id(&mut tx, workspace_id, change.secret_id).await?;
    tx.commit_one(audit).await?;
    Ok(meta)
}

pub(super) async fn set_access(
    s: &Backend,
    workspace_id: &str,
    secret_id: &str,
    agents: &[String],
    now: Millis,
    audit: &AuditEvent,
) -> DbResult<SecretMeta> {
    let mut tx = s.begin().await?;
    agents::check_known(&mut tx, workspace_id, agents).await?;
    let done = sqlx::query("UPDATE secrets SET updated_at = $1 WHERE id = $2 AND workspace_id = $3")
        .bind(now)
        .bind(secret_id)
        .bind(workspace_id)
        .execute(&mut *tx)
        .await?;
    errors::changed(done.rows_affected(), errors::secret_gone)?;
    replace_access(&mut tx, secret_id, agents, now).await?;
    let meta = meta_by_id(&mut tx, workspace_id, secret_id).await?;
    tx.commit_one(audit).await?;
    Ok(meta)
}

/// Deletes the secret, its versions (and so their key material) and grants, then wipes the
/// deleted pages from the WAL.
pub(super) async fn delete(s: &Backend, workspace_id: &str, secret_id: &str, audit: &AuditEvent) -> DbResult<()> {
    let mut tx = s.begin().await?;
    // Versions first, explicitly: their wrapped data keys are the key material.
    sqlx::query(
        "DELETE FROM secret_env_versions WHERE secret_id = $1 \
         AND secret_id IN (SELECT id FROM secrets WHERE workspace_id = $2)",
    )
    .bind(secret_id)
    .bind(workspace_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM secret_versions WHERE secret_id = $1 \
         AND secret_id IN (SELECT id FROM secrets WHERE workspace_id = $2)",
    )
    .bind(secret_id)
    .bind(workspace_id)
    .execute(&mut *tx)
    .await?;
    let done = sqlx::query("DELETE FROM secrets WHERE id = $1 AND workspace_id = $2")
        .bind(secret_id)
        .bind(workspace_id)
        .execute(&mut *tx)
        .await?;
    errors::changed(done.rows_affected(), errors::secret_gone)?;
    tx.commit_one(audit).await?;
    s.scrub_deleted().await;
    Ok(())
}

pub(super) async fn list_versions(
    s: &Backend,
    workspace_id: &str,
    secret_id: &str,
) -> DbResult<Vec<SecretVersionMeta>> {
    let rows: Vec<VersionRow> = sqlx::query_as(
        "SELECT v.version, v.kind, v.keys, v.created_at, v.created_by FROM secret_versions v \
         JOIN secrets s ON s.id = v.secret_id WHERE s.workspace_id = $1 AND v.secret_id = $2 \
         ORDER BY v.version DESC",
    )
    .bind(workspace_id)
    .bind(secret_id)
    .fetch_all(&s.read)
    .await?;
    Ok(convert(rows)?)
}

pub(super) async fn list_env_versions(
    s: &Backend,
    workspace_id: &str,
    secret_id: &str,
    env: Env,
) -> DbResult<Vec<SecretVersionMeta>> {
    let rows: Vec<VersionRow> = sqlx::query_as(
        "SELECT v.version, v.kind, v.keys, v.created_at, v.created_by FROM secret_env_versions v \
         JOIN secrets s ON s.id = v.secret_id WHERE s.workspace_id = $1 AND v.secret_id = $2 AND v.env = $3 \
         ORDER BY v.version DESC",
    )
    .bind(workspace_id)
    .bind(secret_id)
    .bind(env.as_str())
    .fetch_all(&s.read)
    .await?;
    Ok(convert(rows)?)
}

pub(super) async fn load_injections(s: &Backend) -> DbResult<Vec<(String, String, Vec<String>)>> {
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT workspace_id, secret_id, hosts FROM secret_injection").fetch_all(&s.read).await?;
    let mut out = Vec::with_capacity(rows.len());
    for (ws, id, hosts) in rows {
        let hosts: Vec<String> =
            serde_json::from_str(&hosts).map_err(|_| errors::bad_column("secret_injection.hosts", &hosts))?;
        out.push((ws, id, hosts));
    }
    Ok(out)
}

pub(super) async fn set_injection(
    s: &Backend,
    workspace_id: &str,
    secret_id: &str,
    hosts: Option<&[String]>,
    now: Millis,
    audit: &AuditEvent,
) -> DbResult<()> {
    let mut tx = s.begin().await?;
    let exists: Option<(String,)> = sqlx::query_as("SELECT id FROM secrets WHERE id = $1 AND workspace_id = $2")
        .bind(secret_id)
        .bind(workspace_id)
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_none() {
        return Err(agentvault_core::Error::not_found("secret_not_found", "the secret no longer exists").into());
    }
    match hosts {
        Some(hosts) => {
            sqlx::query(
                "INSERT INTO secret_injection (secret_id, workspace_id, hosts, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (secret_id) DO UPDATE SET hosts = excluded.hosts, updated_at = excluded.updated_at",
            )
            .bind(secret_id)
            .bind(workspace_id)
            .bind(serde_json::Value::from(hosts.to_vec()).to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        None => {
            sqlx::query("DELETE FROM secret_injection WHERE secret_id = $1 AND workspace_id = $2")
                .bind(secret_id)
                .bind(workspace_id)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit_one(audit).await
}

pub(super) async fn get_egress_ca(s: &Backend) -> DbResult<Option<(String, Sealed)>> {
    let row: Option<(String, String, Vec<u8>, Vec<u8>)> =
        sqlx::query_as("SELECT cert_pem, root_key_id, wrapped_dek, ciphertext FROM egress_ca WHERE id = 1")
            .fetch_optional(&s.read)
            .await?;
    Ok(row.map(|(pem, root_key_id, wrapped_dek, ciphertext)| (pem, Sealed { root_key_id, wrapped_dek, ciphertext })))
}

pub(super) async fn create_egress_ca(s: &Backend, cert_pem: &str, sealed: &Sealed, now: Millis) -> DbResult<()> {
    let mut tx = s.begin().await?;
    sqlx::query(
        "INSERT INTO egress_ca (id, cert_pem, root_key_id, wrapped_dek, ciphertext, created_at) \
         VALUES (1, $1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
    )
    .bind(cert_pem)
    .bind(&sealed.root_key_id)
    .bind(&sealed.wrapped_dek)
    .bind(&sealed.ciphertext)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit(&[]).await?;
    Ok(())
}

pub(super) async fn rewrap_egress_ca(s: &Backend, sealed: &Sealed) -> DbResult<()> {
    let mut tx = s.begin().await?;
    sqlx::query("UPDATE egress_ca SET root_key_id = $1, wrapped_dek = $2, ciphertext = $3 WHERE id = 1")
        .bind(&sealed.root_key_id)
        .bind(&sealed.wrapped_dek)
        .bind(&sealed.ciphertext)
        .execute(&mut *tx)
        .await?;
    tx.commit(&[]).await?;
    Ok(())
}

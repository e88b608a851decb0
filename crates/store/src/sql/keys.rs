//! API keys, and the root key rotation (re-wrapped data keys).

use std::collections::{BTreeSet, HashMap};

use agentvault_core::audit::AuditEvent;
use agentvault_core::model::{ApiKeyMeta, KeyScope, Millis};

use super::{Backend, Conn, agents};
use crate::errors::{self, DbResult};
use crate::rows::{ApiKeyRow, SealedVersionRow, columns, convert};
use crate::{SealedVersion, rules};

pub(super) async fn create(s: &Backend, key: &ApiKeyMeta, token_hash: &[u8], audit: &AuditEvent) -> DbResult<()> {
    let mut tx = s.begin().await?;
    let agents = rules::scope_agents(&key.scope);
    agents::check_known(&mut tx, &key.workspace_id, &agents).await?;
    sqlx::query(
        "INSERT INTO api_keys (id, workspace_id, name, prefix, token_hash, all_agents, created_at, expires_at, \
         revoked_at, last_used_at, created_by, env) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL, $9, $10)",
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
    .bind(key.env.map(|e| e.as_str()))
    .execute(&mut *tx)
    .await?;
    for agent in &agents {
        sqlx::query("INSERT INTO api_key_agents (key_id, agent_id) VALUES ($1, $2)")
            .bind(&key.id)
            .bind(agent)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit_one(audit).await
}

/// The keys (of one workspace, or all) with their token hashes and scopes.
pub(super) async fn load(s: &Backend, workspace_id: Option<&str>) -> DbResult<Vec<(ApiKeyMeta, Vec<u8>)>> {
    let mut conn = s.read.acquire().await?;
    let (rows, scopes): (Vec<ApiKeyRow>, Vec<(String, String)>) = match workspace_id {
        Some(ws) => (
            sqlx::query_as(concat!("SELECT ", columns!(api_key), " FROM api_keys WHERE workspace_id = $1"))
                .bind(ws)
                .fetch_all(&mut *conn)
                .await?,
            sqlx::query_as(
                "SELECT g.key_id, g.agent_id FROM api_key_agents g JOIN api_keys k ON k.id = g.key_id \
                 WHERE k.workspace_id = $1",
            )
            .bind(ws)
            .fetch_all(&mut *conn)
            .await?,
        ),
        None => (
            sqlx::query_as(concat!("SELECT ", columns!(api_key), " FROM api_keys")).fetch_all(&mut *conn).await?,
            sqlx::query_as("SELECT key_id, agent_id FROM api_key_agents").fetch_all(&mut *conn).await?,
        ),
    };
    let mut by_key: HashMap<String, BTreeSet<String>> = HashMap::new();
    for (key_id, agent_id) in scopes {
        by_key.entry(key_id).or_default().insert(agent_id);
    }
    Ok(rows
        .into_iter()
        .map(|r| {
            let scope = by_key.remove(r.id());
            r.into_key(scope)
        })
        .collect::<agentvault_core::Result<_>>()?)
}

/// Newest first.
pub(super) async fn list(s: &Backend, workspace_id: &str) -> DbResult<Vec<ApiKeyMeta>> {
    let mut keys: Vec<ApiKeyMeta> = load(s, Some(workspace_id)).await?.into_iter().map(|(k, _)| k).collect();
    keys.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| a.id.cmp(&b.id)));
    Ok(keys)
}

pub(super) async fn revoke(
    s: &Backend,
    workspace_id: &str,
    key_id: &str,
    now: Millis,
    audit: &AuditEvent,
) -> DbResult<ApiKeyMeta> {
    let mut tx = s.begin().await?;
    let done =
        sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND workspace_id = $3")
            .bind(now)
            .bind(key_id)
            .bind(workspace_id)
            .execute(&mut *tx)
            .await?;
    errors::changed(done.rows_affected(), || errors::api_key_not_found(key_id))?;
    let row: ApiKeyRow = sqlx::query_as(concat!("SELECT ", columns!(api_key), " FROM api_keys WHERE id = $1"))
        .bind(key_id)
        .fetch_one(&mut *tx)
        .await?;
    let agents: Vec<String> = sqlx::query_scalar("SELECT agent_id FROM api_key_agents WHERE key_id = $1")
        .bind(key_id)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit_one(audit).await?;
    Ok(row.into_key(Some(agents.into_iter().collect()))?.0)
}

/// Records when keys were last used (never moving the time back).
pub(super) async fn record_use(s: &Backend, uses: &[(String, Millis)]) -> DbResult<()> {
    let mut tx = s.begin().await?;
    for (id, at) in uses {
        sqlx::query(
            "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
        )
        .bind(at)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit(&[]).await
}

/// Every sealed version: the default values' (`env` None), then the environments' own.
pub(super) async fn all_sealed_versions(s: &Backend) -> DbResult<Vec<SealedVersion>> {
    let mut conn = s.read.acquire().await?;
    let mut rows: Vec<SealedVersionRow> = sqlx::query_as(
        "SELECT s.workspace_id, v.secret_id, CAST(NULL AS TEXT) AS env, v.version, v.root_key_id, v.wrapped_dek, \
         v.ciphertext FROM secret_versions v JOIN secrets s ON s.id = v.secret_id ORDER BY v.secret_id, v.version",
    )
    .fetch_all(&mut *conn)
    .await?;
    let envs: Vec<SealedVersionRow> = sqlx::query_as(
        "SELECT s.workspace_id, v.secret_id, v.env, v.version, v.root_key_id, v.wrapped_dek, v.ciphertext \
         FROM secret_env_versions v JOIN secrets s ON s.id = v.secret_id ORDER BY v.secret_id, v.env, v.version",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.extend(envs);
    Ok(convert(rows)?)
}

/// One sealed version of a secret of the workspace.
pub(super) async fn sealed_version(
    s: &Backend,
    workspace_id: &str,
    secret_id: &str,
    version: u32,
) -> DbResult<Option<SealedVersion>> {
    let row: Option<SealedVersionRow> = sqlx::query_as(
        "SELECT s.workspace_id, v.secret_id, CAST(NULL AS TEXT) AS env, v.version, v.root_key_id, v.wrapped_dek, \
         v.ciphertext FROM secret_versions v JOIN secrets s ON s.id = v.secret_id \
         WHERE s.workspace_id = $1 AND v.secret_id = $2 AND v.version = $3",
    )
    .bind(workspace_id)
    .bind(secret_id)
    .bind(i64::from(version))
    .fetch_optional(&s.read)
    .await?;
    Ok(row.map(SealedVersion::try_from).transpose()?)
}

/// Stores re-wrapped data keys; refuses the whole rotation if any version changed meanwhile.
pub(super) async fn replace_wrapped_keys(
    s: &Backend,
    rewrapped: &[SealedVersion],
    active_key_id: &str,
    audit: &[AuditEvent],
) -> DbResult<()> {
    let mut tx = s.begin().await?;
    set_root_key(&mut tx, active_key_id).await?;
    for v in rewrapped {
        let sql = match v.env {
            None => {
                "UPDATE secret_versions SET root_key_id = $1, wrapped_dek = $2 \
                 WHERE secret_id = $3 AND version = $4 AND ciphertext = $5 AND $6 = ''"
            }
            Some(_) => {
                "UPDATE secret_env_versions SET root_key_id = $1, wrapped_dek = $2 \
                 WHERE secret_id = $3 AND version = $4 AND ciphertext = $5 AND env = $6"
            }
        };
        let done = sqlx::query(sql)
            .bind(&v.sealed.root_key_id)
            .bind(&v.sealed.wrapped_dek)
            .bind(&v.secret_id)
            .bind(i64::from(v.version))
            .bind(&v.sealed.ciphertext)
            .bind(v.env.map_or("", |e| e.as_str()))
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Err(errors::rotation_moved_on(&v.secret_id, v.version).into());
        }
    }
    tx.commit(audit).await?;
    s.scrub_deleted().await;
    Ok(())
}

/// The setting naming the root key the data is sealed under.
const ROOT_KEY_SETTING: &str = "root_key_id";

async fn set_root_key(conn: &mut Conn, key_id: &str) -> DbResult<()> {
    sqlx::query("INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = $2")
        .bind(ROOT_KEY_SETTING)
        .bind(key_id)
        .execute(conn)
        .await?;
    Ok(())
}

pub(super) async fn claim_root_key(s: &Backend, key_id: &str) -> DbResult<String> {
    let mut conn = s.write.acquire().await?;
    sqlx::query("INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
        .bind(ROOT_KEY_SETTING)
        .bind(key_id)
        .execute(&mut *conn)
        .await?;
    Ok(sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
        .bind(ROOT_KEY_SETTING)
        .fetch_one(&mut *conn)
        .await?)
}

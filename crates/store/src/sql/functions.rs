//! Agents' Python functions.

use agentvault_core::audit::AuditEvent;
use agentvault_core::model::{DeployedFunction, Deployment, Function, FunctionVersion, SecretUse};

use super::{Backend, Db, WriteTx};
use crate::errors::{self, DbResult, OnUnique};
use crate::rows::{
    DeployedRow, DeploymentRow, FunctionRow, FunctionVersionRow, SecretRefRow, SecretUseRow, columns, convert, params_json,
};

pub(super) async fn list(s: &Backend, workspace_id: &str, agent_id: &str) -> DbResult<Vec<Function>> {
    let rows: Vec<FunctionRow> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(function),
        " FROM functions WHERE workspace_id = $1 AND agent_id = $2 ORDER BY name"
    ))
    .bind(workspace_id)
    .bind(agent_id)
    .fetch_all(&s.read)
    .await?;
    let mut functions: Vec<Function> = convert(rows)?;
    let refs: Vec<SecretRefRow> = sqlx::query_as(
        "SELECT r.function_id, r.secret_name, r.line FROM function_secret_refs r \
         JOIN functions f ON f.id = r.function_id \
         WHERE f.workspace_id = $1 AND f.agent_id = $2 ORDER BY r.line, r.secret_name",
    )
    .bind(workspace_id)
    .bind(agent_id)
    .fetch_all(&s.read)
    .await?;
    for (function_id, r) in refs.into_iter().map(SecretRefRow::into_parts) {
        if let Some(f) = functions.iter_mut().find(|f| f.id == function_id) {
            f.secret_refs.push(r);
        }
    }
    let deployments: Vec<DeploymentRow> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(deployment),
        " FROM function_deployments WHERE function_id IN \
         (SELECT id FROM functions WHERE workspace_id = $1 AND agent_id = $2) ORDER BY function_id, env"
    ))
    .bind(workspace_id)
    .bind(agent_id)
    .fetch_all(&s.read)
    .await?;
    for row in deployments {
        let (function_id, d) = row.into_parts()?;
        if let Some(f) = functions.iter_mut().find(|f| f.id == function_id) {
            f.deployments.push(d);
        }
    }
    for f in &mut functions {
        f.deployments.sort_by_key(|d| d.env);
    }
    Ok(functions)
}

/// The deployments of one function, in `Env::ALL` order.
async fn deployments_of(conn: &mut super::Conn, function_id: &str) -> DbResult<Vec<Deployment>> {
    let rows: Vec<DeploymentRow> =
        sqlx::query_as(concat!("SELECT ", columns!(deployment), " FROM function_deployments WHERE function_id = $1"))
            .bind(function_id)
            .fetch_all(&mut *conn)
            .await?;
    let mut out = rows.into_iter().map(|r| r.into_parts().map(|(_, d)| d)).collect::<agentvault_core::Result<Vec<_>>>()?;
    out.sort_by_key(|d| d.env);
    Ok(out)
}

/// Stores `f`'s definition as its version `f.version` (immutable), saved by `created_by`.
async fn insert_version(tx: &mut WriteTx<'_>, f: &Function, created_by: &str) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO function_versions (function_id, version, description, parameters, code, timeout_ms, \
         created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&f.id)
    .bind(i64::from(f.version))
    .bind(&f.description)
    .bind(params_json(&f.parameters))
    .bind(&f.code)
    .bind(f.timeout_ms.map(i64::from))
    .bind(f.updated_at)
    .bind(created_by)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Every saved version of a function, newest first.
pub(super) async fn list_versions(
    s: &Backend,
    workspace_id: &str,
    agent_id: &str,
    name: &str,
) -> DbResult<Vec<FunctionVersion>> {
    let mut conn = s.read.acquire().await?;
    let id: Option<String> =
        sqlx::query_scalar("SELECT id FROM functions WHERE workspace_id = $1 AND agent_id = $2 AND name = $3")
            .bind(workspace_id)
            .bind(agent_id)
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
    let id = id.ok_or_else(|| errors::function_not_found(name))?;
    let rows: Vec<FunctionVersionRow> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(function_version),
        " FROM function_versions WHERE function_id = $1 ORDER BY version DESC"
    ))
    .bind(&id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(convert(rows)?)
}

/// Makes `d.version` the version `d.env` runs.
pub(super) async fn deploy(
    s: &Backend,
    workspace_id: &str,
    agent_id: &str,
    name: &str,
    d: &Deployment,
    audit: &AuditEvent,
) -> DbResult<Function> {
    let mut tx = s.begin().await?;
    let row = find(&mut *tx, workspace_id, agent_id, name).await?;
    let mut f = Function::try_from(row.ok_or_else(|| errors::function_not_found(name))?)?;
    let exists: Option<i64> =
        sqlx::query_scalar("SELECT version FROM function_versions WHERE function_id = $1 AND version = $2")
            .bind(&f.id)
            .bind(i64::from(d.version))
            .fetch_optional(&mut *tx)
            .await?;
    if exists.is_none() {
        return Err(errors::function_version_not_found(name, d.version, f.version).into());
    }
    sqlx::query(
        "INSERT INTO function_deployments (function_id, env, version, deployed_by, deployed_at, by_admin) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (function_id, env) DO UPDATE SET version = excluded.version, \
         deployed_by = excluded.deployed_by, deployed_at = excluded.deployed_at, by_admin = excluded.by_admin",
    )
    .bind(&f.id)
    .bind(d.env.as_str())
    .bind(i64::from(d.version))
    .bind(&d.deployed_by)
    .bind(d.deployed_at)
    .bind(d.by_admin)
    .execute(&mut *tx)
    .await?;
    f.deployments = deployments_of(&mut tx, &f.id).await?;
    tx.commit_one(audit).await?;
    Ok(f)
}

/// `SELECT` of deployments `d` with their function `f` and version `v`, then `$rest`.
macro_rules! select_deployed {
    ($rest:literal) => {
        concat!(
            "SELECT f.id, f.workspace_id, f.agent_id, f.name, v.description, v.parameters, v.code, v.timeout_ms, \
             v.version, f.created_at, v.created_at AS updated_at, d.env, d.deployed_by, d.deployed_at, d.by_admin \
             FROM function_deployments d JOIN functions f ON f.id = d.function_id \
             JOIN function_versions v ON v.function_id = d.function_id AND v.version = d.version ",
            $rest
        )
    };
}

/// Every deployed version (of one workspace, or all) with its definition.
pub(super) async fn load_deployed(s: &Backend, workspace_id: Option<&str>) -> DbResult<Vec<DeployedFunction>> {
    let rows: Vec<DeployedRow> = match workspace_id {
        Some(ws) => sqlx::query_as(select_deployed!("WHERE f.workspace_id = $1")).bind(ws).fetch_all(&s.read).await?,
        None => sqlx::query_as(select_deployed!("")).fetch_all(&s.read).await?,
    };
    Ok(convert(rows)?)
}

/// The functions of a workspace that name `secret_name`, by agent, function and line.
pub(super) async fn uses_of_secret(s: &Backend, workspace_id: &str, secret_name: &str) -> DbResult<Vec<SecretUse>> {
    let rows: Vec<SecretUseRow> = sqlx::query_as(
        "SELECT f.agent_id AS agent_id, f.name AS function_name, r.line AS line FROM function_secret_refs r \
         JOIN functions f ON f.id = r.function_id \
         WHERE r.workspace_id = $1 AND r.secret_name = $2 ORDER BY f.agent_id, f.name, r.line",
    )
    .bind(workspace_id)
    .bind(secret_name)
    .fetch_all(&s.read)
    .await?;
    Ok(rows.into_iter().map(SecretUse::from).collect())
}

/// Stores the check's findings (parameters, references) for `f` if its version is the stored one.
pub(super) async fn record_check(s: &Backend, f: &Function) -> DbResult<()> {
    let mut tx = s.begin().await?;
    let done = sqlx::query("UPDATE functions SET parameters = $1 WHERE id = $2 AND workspace_id = $3 AND version = $4")
        .bind(params_json(&f.parameters))
        .bind(&f.id)
        .bind(&f.workspace_id)
        .bind(i64::from(f.version))
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Ok(());
    }
    // The saved version (which pre-release or live may run) gets the findings too.
    sqlx::query("UPDATE function_versions SET parameters = $1 WHERE function_id = $2 AND version = $3")
        .bind(params_json(&f.parameters))
        .bind(&f.id)
        .bind(i64::from(f.version))
        .execute(&mut *tx)
        .await?;
    write_refs(&mut tx, f).await?;
    tx.commit(&[]).await
}

/// Replaces the stored references of `f` with `f.secret_refs`, in the transaction of its change.
async fn write_refs(tx: &mut WriteTx<'_>, f: &Function) -> DbResult<()> {
    sqlx::query("DELETE FROM function_secret_refs WHERE function_id = $1").bind(&f.id).execute(&mut **tx).await?;
    for r in &f.secret_refs {
        sqlx::query(
            "INSERT INTO function_secret_refs (function_id, workspace_id, secret_name, line) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&f.id)
        .bind(&f.workspace_id)
        .bind(&r.secret)
        .bind(i64::from(r.line))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Every function (of one workspace, or all), for the read model.
pub(super) async fn load(s: &Backend, workspace_id: Option<&str>) -> DbResult<Vec<Function>> {
    let rows: Vec<FunctionRow> = match workspace_id {
        Some(ws) => {
            sqlx::query_as(concat!("SELECT ", columns!(function), " FROM functions WHERE workspace_id = $1"))
                .bind(ws)
                .fetch_all(&s.read)
                .await?
        }
        None => sqlx::query_as(concat!("SELECT ", columns!(function), " FROM functions")).fetch_all(&s.read).await?,
    };
    Ok(convert(rows)?)
}

/// The row of an agent's function by name, in a transaction or from the pool.
async fn find<'c, E: sqlx::Executor<'c, Database = Db>>(
    e: E,
    workspace_id: &str,
    agent_id: &str,
    name: &str,
) -> DbResult<Option<FunctionRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(function),
        " FROM functions WHERE workspace_id = $1 AND agent_id = $2 AND name = $3"
    ))
    .bind(workspace_id)
    .bind(agent_id)
    .bind(name)
    .fetch_optional(e)
    .await?)
}

pub(super) async fn get(s: &Backend, workspace_id: &str, agent_id: &str, name: &str) -> DbResult<Option<Function>> {
    let row = find(&s.read, workspace_id, agent_id, name).await?;
    let Some(mut f) = row.map(Function::try_from).transpose()? else { return Ok(None) };
    let refs: Vec<SecretRefRow> = sqlx::query_as(
        "SELECT function_id, secret_name, line FROM function_secret_refs WHERE function_id = $1 \
         ORDER BY line, secret_name",
    )
    .bind(&f.id)
    .fetch_all(&s.read)
    .await?;
    f.secret_refs = refs.into_iter().map(|r| r.into_parts().1).collect();
    let mut conn = s.read.acquire().await?;
    f.deployments = deployments_of(&mut conn, &f.id).await?;
    Ok(Some(f))
}

pub(super) async fn create(s: &Backend, f: &Function, audit: &AuditEvent) -> DbResult<()> {
    let mut tx = s.begin().await?;
    sqlx::query(
        "INSERT INTO functions (id, workspace_id, agent_id, name, description, parameters, code, timeout_ms, \
         version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
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
    .on_unique(|| errors::function_exists(&f.name))?;
    insert_version(&mut tx, f, audit.actor.id()).await?;
    write_refs(&mut tx, f).await?;
    tx.commit_one(audit).await
}

/// Stores `f` as version `f.version` if the stored one is still the version before it.
pub(super) async fn update(s: &Backend, f: &Function, audit: &AuditEvent) -> DbResult<()> {
    let mut tx = s.begin().await?;
    let done = sqlx::query(
        "UPDATE functions SET description = $1, parameters = $2, code = $3, timeout_ms = $4, version = $5, \
         updated_at = $6 WHERE id = $7 AND workspace_id = $8 AND version = $9",
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
    .await?;
    errors::changed(done.rows_affected(), errors::function_moved_on)?;
    insert_version(&mut tx, f, audit.actor.id()).await?;
    write_refs(&mut tx, f).await?;
    tx.commit_one(audit).await
}

pub(super) async fn delete(
    s: &Backend,
    workspace_id: &str,
    agent_id: &str,
    name: &str,
    audit: &AuditEvent,
) -> DbResult<()> {
    let mut tx = s.begin().await?;
    let done = sqlx::query("DELETE FROM functions WHERE workspace_id = $1 AND agent_id = $2 AND name = $3")
        .bind(workspace_id)
        .bind(agent_id)
        .bind(name)
        .execute(&mut *tx)
        .await?;
    errors::changed(done.rows_affected(), || errors::function_not_found(name))?;
    tx.commit_one(audit).await
}

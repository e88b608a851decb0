//! Agents' Python functions.

use agentvault_core::audit::AuditEvent;
use agentvault_core::model::Function;

use super::Backend;
use crate::errors::{self, DbResult, OnUnique};
use crate::rows::{FunctionRow, columns, convert, params_json};

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
    Ok(convert(rows)?)
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

pub(super) async fn get(s: &Backend, workspace_id: &str, agent_id: &str, name: &str) -> DbResult<Option<Function>> {
    let row: Option<FunctionRow> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(function),
        " FROM functions WHERE workspace_id = $1 AND agent_id = $2 AND name = $3"
    ))
    .bind(workspace_id)
    .bind(agent_id)
    .bind(name)
    .fetch_optional(&s.read)
    .await?;
    Ok(row.map(Function::try_from).transpose()?)
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

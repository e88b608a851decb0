//! Agents.

use agentvault_core::audit::AuditEvent;
use agentvault_core::model::{Agent, EgressMode, EgressPolicy};

use super::{Backend, Conn};
use crate::errors::{self, DbResult, OnUnique};
use crate::rows::{AgentRow, columns};

pub(super) async fn list(s: &Backend, workspace_id: &str) -> DbResult<Vec<Agent>> {
    let rows: Vec<AgentRow> =
        sqlx::query_as(concat!("SELECT ", columns!(agent), " FROM agents WHERE workspace_id = $1 ORDER BY name, id"))
            .bind(workspace_id)
            .fetch_all(&s.read)
            .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

pub(super) async fn load_all(s: &Backend) -> DbResult<Vec<Agent>> {
    let rows: Vec<AgentRow> =
        sqlx::query_as(concat!("SELECT ", columns!(agent), " FROM agents")).fetch_all(&s.read).await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

pub(super) async fn get(s: &Backend, workspace_id: &str, agent_id: &str) -> DbResult<Option<Agent>> {
    let row: Option<AgentRow> =
        sqlx::query_as(concat!("SELECT ", columns!(agent), " FROM agents WHERE workspace_id = $1 AND id = $2"))
            .bind(workspace_id)
            .bind(agent_id)
            .fetch_optional(&s.read)
            .await?;
    Ok(row.map(Into::into))
}

pub(super) async fn create(s: &Backend, agent: &Agent, audit: &AuditEvent) -> DbResult<()> {
    let mut tx = s.begin().await?;
    sqlx::query(
        "INSERT INTO agents (id, workspace_id, name, description, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&agent.id)
    .bind(&agent.workspace_id)
    .bind(&agent.name)
    .bind(&agent.description)
    .bind(agent.created_at)
    .bind(agent.updated_at)
    .execute(&mut *tx)
    .await
    .on_unique(|| errors::agent_exists(&agent.name))?;
    tx.commit_one(audit).await
}

pub(super) async fn update(s: &Backend, agent: &Agent, audit: &AuditEvent) -> DbResult<()> {
    let mut tx = s.begin().await?;
    let done = sqlx::query(
        "UPDATE agents SET name = $1, description = $2, updated_at = $3 WHERE id = $4 AND workspace_id = $5",
    )
    .bind(&agent.name)
    .bind(&agent.description)
    .bind(agent.updated_at)
    .bind(&agent.id)
    .bind(&agent.workspace_id)
    .execute(&mut *tx)
    .await
    .on_unique(|| errors::agent_exists(&agent.name))?;
    errors::changed(done.rows_affected(), errors::agent_gone)?;
    tx.commit_one(audit).await
}

/// Deletes the agent; its grants, API key scopes and functions go with it (foreign keys).
pub(super) async fn delete(s: &Backend, workspace_id: &str, agent_id: &str, audit: &AuditEvent) -> DbResult<()> {
    let mut tx = s.begin().await?;
    let done = sqlx::query("DELETE FROM agents WHERE id = $1 AND workspace_id = $2")
        .bind(agent_id)
        .bind(workspace_id)
        .execute(&mut *tx)
        .await?;
    errors::changed(done.rows_affected(), errors::agent_gone)?;
    tx.commit_one(audit).await
}

pub(super) async fn get_egress(s: &Backend, workspace_id: &str, agent_id: &str) -> DbResult<Option<EgressPolicy>> {
    let row: Option<(String, String, i64)> =
        sqlx::query_as("SELECT mode, hosts, updated_at FROM agent_egress WHERE workspace_id = $1 AND agent_id = $2")
            .bind(workspace_id)
            .bind(agent_id)
            .fetch_optional(&s.read)
            .await?;
    let Some((mode, hosts, updated_at)) = row else { return Ok(None) };
    let mode = EgressMode::parse(&mode).ok_or_else(|| errors::bad_column("agent_egress.mode", &mode))?;
    let hosts: Vec<String> =
        serde_json::from_str(&hosts).map_err(|_| errors::bad_column("agent_egress.hosts", &hosts))?;
    Ok(Some(EgressPolicy { mode, hosts, updated_at }))
}

/// Inserts or replaces the agent's policy, if the agent is still in the workspace.
pub(super) async fn set_egress(
    s: &Backend,
    workspace_id: &str,
    agent_id: &str,
    policy: &EgressPolicy,
    audit: &AuditEvent,
) -> DbResult<()> {
    let mut tx = s.begin().await?;
    let done = sqlx::query(
        "INSERT INTO agent_egress (agent_id, workspace_id, mode, hosts, updated_at) \
         SELECT id, workspace_id, $3, $4, $5 FROM agents WHERE id = $1 AND workspace_id = $2 \
         ON CONFLICT (agent_id) DO UPDATE SET mode = excluded.mode, hosts = excluded.hosts, \
         updated_at = excluded.updated_at",
    )
    .bind(agent_id)
    .bind(workspace_id)
    .bind(policy.mode.as_str())
    .bind(serde_json::Value::from(policy.hosts.clone()).to_string())
    .bind(policy.updated_at)
    .execute(&mut *tx)
    .await?;
    errors::changed(done.rows_affected(), errors::agent_gone)?;
    tx.commit_one(audit).await
}

/// Fails with 422 `unknown_agent` unless every agent of `agents` belongs to the workspace.
pub(super) async fn check_known(conn: &mut Conn, workspace_id: &str, agents: &[String]) -> DbResult<()> {
    if agents.is_empty() {
        return Ok(());
    }
    let known: Vec<String> =
        sqlx::query_scalar("SELECT id FROM agents WHERE workspace_id = $1").bind(workspace_id).fetch_all(conn).await?;
    Ok(crate::rules::known_agents(agents, &known)?)
}

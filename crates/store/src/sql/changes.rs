//! The change feed: one row per mutating transaction, numbered by the `changes` counter that the
//! transaction took first (so rows become visible in the order of their numbers, with no gaps:
//! a transaction that rolls back gives its number back).

use std::collections::BTreeSet;

use agentvault_core::audit::AuditEvent;
use agentvault_core::model::Millis;

use super::{Backend, Conn};
use crate::Change;
use crate::errors::DbResult;
use crate::rows::ChangeRow;

/// Takes the next change number; the counter row stays locked until the transaction ends, which
/// serializes writers.
pub(super) async fn next_number(conn: &mut Conn) -> DbResult<i64> {
    Ok(sqlx::query_scalar("UPDATE counters SET value = value + 1 WHERE name = 'changes' RETURNING value")
        .fetch_one(conn)
        .await?)
}

/// Records change `seq`, described by the audit records committed with it.
pub(super) async fn record(conn: &mut Conn, seq: i64, audit: &[AuditEvent], origin: &str) -> DbResult<()> {
    // When: the time of its audit records (the time the change was made).
    let at: Millis = audit.iter().map(|e| e.at).max().unwrap_or_default();
    let workspaces: BTreeSet<&str> = audit.iter().map(|e| e.workspace_id.as_str()).collect();
    let agents: BTreeSet<Option<&str>> = audit.iter().map(|e| e.agent_id.as_deref()).collect();
    let actions: BTreeSet<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    let agent = if agents.len() == 1 { agents.first().copied().flatten() } else { None };
    sqlx::query("INSERT INTO changes (seq, at, workspace_id, agent_id, actions, origin) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(seq)
        .bind(at)
        .bind(if workspaces.len() == 1 { workspaces.first().copied() } else { None })
        .bind(agent)
        .bind(actions.into_iter().collect::<Vec<_>>().join(" "))
        .bind(origin)
        .execute(conn)
        .await?;
    Ok(())
}

pub(super) async fn latest(s: &Backend) -> DbResult<i64> {
    Ok(sqlx::query_scalar("SELECT value FROM counters WHERE name = 'changes'").fetch_one(&s.read).await?)
}

pub(super) async fn since(s: &Backend, after: i64, limit: u32) -> DbResult<Vec<Change>> {
    let rows: Vec<ChangeRow> = sqlx::query_as(
        "SELECT seq, workspace_id, agent_id, actions, origin FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(&s.read)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| r.into_change(&s.origin))
        .collect())
}

/// Forgets the changes before `before` (servers further behind reload everything).
pub(super) async fn prune(s: &Backend, before: i64) -> DbResult<u64> {
    Ok(sqlx::query("DELETE FROM changes WHERE seq < $1").bind(before).execute(&s.write).await?.rows_affected())
}

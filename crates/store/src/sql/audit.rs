//! The audit log's queries (each backend appends in its own way).

use agentvault_core::audit::{AuditFilter, AuditRecord};
use agentvault_core::model::Millis;
use sqlx::QueryBuilder;


use super::{Backend, Db};
use crate::errors::DbResult;
use crate::rows::{AuditRow, columns, convert};

/// Newest first from the `before_seq` cursor on, or oldest first from the `after_seq` cursor on.
pub(super) async fn list(s: &Backend, workspace_id: &str, filter: &AuditFilter) -> DbResult<Vec<AuditRecord>> {
    // Records the backend has acknowledged but not yet put in the table are moved first, so the
    // caller sees every answered read.
    s.settle_audit()?;
    let mut qb: QueryBuilder<Db> =
        QueryBuilder::new(concat!("SELECT ", columns!(audit), " FROM audit_log WHERE workspace_id = "));
    qb.push_bind(workspace_id);
    if let Some(a) = filter.action {
        qb.push(" AND action = ").push_bind(a.as_str());
    }
    if let Some(o) = filter.outcome {
        qb.push(" AND outcome = ").push_bind(o.as_str());
    }
    match (&filter.secret_name, filter.secret_prefix) {
        // SUBSTR rather than LIKE: `_`, common in secret names, is a LIKE wildcard. The length is
        // an i32: PostgreSQL's substr takes an integer, not a bigint.
        (Some(s), true) => {
            qb.push(" AND SUBSTR(secret_name, 1, ")
                .push_bind(i32::try_from(s.chars().count()).unwrap_or(i32::MAX))
                .push(") = ")
                .push_bind(s.as_str());
        }
        (Some(s), false) => {
            qb.push(" AND secret_name = ").push_bind(s.as_str());
        }
        (None, _) => {}
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
    if let Some(seq) = filter.after_seq {
        qb.push(" AND seq > ").push_bind(seq);
    }
    qb.push(if filter.oldest_first { " ORDER BY seq ASC LIMIT " } else { " ORDER BY seq DESC LIMIT " });
    qb.push_bind(i64::from(filter.limit));
    let rows: Vec<AuditRow> = qb.build_query_as().fetch_all(&s.read).await?;
    Ok(convert(rows)?)
}

/// When each of `secret_names` was last read successfully by an agent (by `agent_id` when
/// given, else by any agent); names never read are left out.
pub(super) async fn last_reads(
    s: &Backend,
    workspace_id: &str,
    agent_id: Option<&str>,
    secret_names: &[String],
) -> DbResult<Vec<(String, Millis)>> {
    if secret_names.is_empty() {
        return Ok(Vec::new());
    }
    // Reads still in the journal (SQLite) count once they are in `secret_last_reads`.
    s.settle_audit()?;
    // One row per secret and reader in the workspace: all of them, then the names asked for.
    let rows: Vec<(String, Millis)> = match agent_id {
        Some(agent) => {
            sqlx::query_as("SELECT secret_name, at FROM secret_last_reads WHERE workspace_id = $1 AND agent_id = $2")
                .bind(workspace_id)
                .bind(agent)
                .fetch_all(&s.read)
                .await?
        }
        None => {
            sqlx::query_as(
                "SELECT secret_name, MAX(at) FROM secret_last_reads WHERE workspace_id = $1 GROUP BY secret_name",
            )
            .bind(workspace_id)
            .fetch_all(&s.read)
            .await?
        }
    };
    Ok(rows.into_iter().filter(|(name, _)| secret_names.contains(name)).collect())
}

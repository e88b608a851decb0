//! The audit log's queries (each backend appends in its own way).

use agentvault_core::audit::{AuditFilter, AuditRecord};
use agentvault_core::model::Millis;
use sqlx::QueryBuilder;

use std::sync::LazyLock;

use super::{Backend, Db, READ_INDEX_HINT};
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

/// The newest successful agent read of secret `$2` by agent `$3`: the highest `seq` is one probe
/// of the `audit_log_reads` index (a partial index: `action` and `outcome` must be these
/// literals), its record one more.
pub(super) static LAST_READ_BY_AGENT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT at FROM audit_log WHERE workspace_id = $1 AND seq = ( \
           SELECT MAX(a.seq) FROM audit_log AS a {READ_INDEX_HINT} \
            WHERE a.workspace_id = $1 AND a.secret_name = $2 AND a.agent_id = $3 \
              AND a.action = 'secret.read' AND a.outcome = 'success')"
    )
});

/// The newest successful agent read of secret `$2` by any agent. The index is ordered by agent
/// within a secret, so the agents that read it are found one index probe each (a loose index
/// scan: the next agent id after the last one), and each one's newest read is one more probe.
pub(super) static LAST_READ_BY_ANY_AGENT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH RECURSIVE readers(agent_id) AS ( \
           SELECT MIN(a.agent_id) FROM audit_log AS a {READ_INDEX_HINT} \
            WHERE a.workspace_id = $1 AND a.secret_name = $2 AND a.action = 'secret.read' \
              AND a.outcome = 'success' \
           UNION ALL \
           SELECT (SELECT MIN(a.agent_id) FROM audit_log AS a {READ_INDEX_HINT} \
                    WHERE a.workspace_id = $1 AND a.secret_name = $2 AND a.action = 'secret.read' \
                      AND a.outcome = 'success' AND a.agent_id > r.agent_id) \
             FROM readers r WHERE r.agent_id IS NOT NULL \
         ) \
         SELECT MAX(l.at) FROM readers r JOIN audit_log l ON l.workspace_id = $1 AND l.seq = ( \
           SELECT MAX(a.seq) FROM audit_log AS a {READ_INDEX_HINT} \
            WHERE a.workspace_id = $1 AND a.secret_name = $2 AND a.agent_id = r.agent_id \
              AND a.action = 'secret.read' AND a.outcome = 'success')"
    )
});

/// When each of `secret_names` was last read successfully by an agent (by `agent_id` when
/// given, else by any agent); names never read are left out.
pub(super) async fn last_reads(
    s: &Backend,
    workspace_id: &str,
    agent_id: Option<&str>,
    secret_names: &[String],
) -> DbResult<Vec<(String, Millis)>> {
    s.settle_audit()?;
    let mut conn = s.read.acquire().await?;
    let mut out = Vec::new();
    for name in secret_names {
        let at: Option<Millis> = match agent_id {
            Some(agent) => {
                sqlx::query_scalar(LAST_READ_BY_AGENT.as_str())
                    .bind(workspace_id)
                    .bind(name)
                    .bind(agent)
                    .fetch_optional(&mut *conn)
                    .await?
            }
            None => {
                sqlx::query_scalar(LAST_READ_BY_ANY_AGENT.as_str())
                    .bind(workspace_id)
                    .bind(name)
                    .fetch_one(&mut *conn)
                    .await?
            }
        };
        if let Some(at) = at {
            out.push((name.clone(), at));
        }
    }
    Ok(out)
}

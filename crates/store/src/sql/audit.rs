//! The audit log's queries (each backend appends in its own way).

use agentvault_core::audit::{AuditFilter, AuditRecord};
use agentvault_core::model::Millis;
use sqlx::QueryBuilder;


use super::{Backend, Db};
use crate::audit_segment;
use crate::errors::DbResult;
use crate::rows::{AuditRow, columns, convert};

/// Newest first from the `before_seq` cursor on, or oldest first from the `after_seq` cursor on:
/// the rows of `audit_log` (mutations, and reads recorded before segments) and the records of the
/// audit segments, merged by sequence number.
pub(super) async fn list(s: &Backend, workspace_id: &str, filter: &AuditFilter) -> DbResult<Vec<AuditRecord>> {
    // Records the backend has acknowledged but not yet put in the database are moved first, so
    // the caller sees every answered read.
    s.settle_audit()?;
    let mut records = list_rows(s, workspace_id, filter).await?;
    records.extend(list_segments(s, workspace_id, filter).await?);
    if filter.oldest_first {
        records.sort_unstable_by_key(|r| r.seq);
    } else {
        records.sort_unstable_by_key(|r| std::cmp::Reverse(r.seq));
    }
    records.truncate(filter.limit as usize);
    Ok(records)
}

/// Segments fetched per query while a listing looks for matching records.
const SEGMENTS_PER_QUERY: i64 = 16;

/// Up to `filter.limit` records of the audit segments, in the listing's order. A workspace's
/// segments never overlap in sequence numbers, so walking them in order and stopping at the
/// limit finds the right records; the segment index skips those without a filtered value.
async fn list_segments(s: &Backend, workspace_id: &str, filter: &AuditFilter) -> DbResult<Vec<AuditRecord>> {
    let keys = audit_segment::required_keys(filter);
    let limit = filter.limit as usize;
    // Oldest first from a cursor: from the segment that holds the cursor's record on.
    let start: Option<i64> = match (filter.oldest_first, filter.after_seq) {
        (true, Some(after)) => {
            sqlx::query_scalar(
                "SELECT MAX(first_seq) FROM audit_segments WHERE workspace_id = $1 AND first_seq <= $2",
            )
            .bind(workspace_id)
            .bind(after)
            .fetch_one(&s.read)
            .await?
        }
        _ => None,
    };
    let mut out = Vec::new();
    let mut position: Option<i64> = None;
    loop {
        let mut qb: QueryBuilder<Db> =
            QueryBuilder::new("SELECT first_seq, data FROM audit_segments s WHERE workspace_id = ");
        qb.push_bind(workspace_id);
        if filter.oldest_first {
            if let Some(first) = start {
                qb.push(" AND first_seq >= ").push_bind(first);
            }
            if let Some(p) = position {
                qb.push(" AND first_seq > ").push_bind(p);
            }
        } else {
            if let Some(before) = filter.before_seq {
                qb.push(" AND first_seq < ").push_bind(before);
            }
            if let Some(p) = position {
                qb.push(" AND first_seq < ").push_bind(p);
            }
        }
        if let Some(t) = filter.since {
            qb.push(" AND max_at >= ").push_bind(t);
        }
        if let Some(t) = filter.until {
            qb.push(" AND min_at < ").push_bind(t);
        }
        for k in &keys {
            qb.push(
                " AND EXISTS (SELECT 1 FROM audit_segment_keys k WHERE k.workspace_id = s.workspace_id \
                 AND k.first_seq = s.first_seq AND k.key = ",
            )
            .push_bind(k.as_str())
            .push(")");
        }
        qb.push(if filter.oldest_first { " ORDER BY first_seq ASC LIMIT " } else { " ORDER BY first_seq DESC LIMIT " });
        qb.push_bind(SEGMENTS_PER_QUERY);
        let segments: Vec<(i64, Vec<u8>)> = qb.build_query_as().fetch_all(&s.read).await?;
        for (first_seq, data) in &segments {
            position = Some(*first_seq);
            let block = audit_segment::Block::parse(*first_seq, data).map_err(|e| damaged(*first_seq, e))?;
            let n = block.len();
            for k in 0..n {
                let i = if filter.oldest_first { k } else { n - 1 - k };
                if !block.matches(filter, i) {
                    continue;
                }
                let event = block.event(i).map_err(|e| damaged(*first_seq, e))?;
                out.push(AuditRecord { seq: block.seq(i), event });
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
        if (segments.len() as i64) < SEGMENTS_PER_QUERY {
            return Ok(out);
        }
    }
}

fn damaged(first_seq: i64, e: audit_segment::Damaged) -> crate::errors::DbError {
    agentvault_core::Error::internal(format!("the audit segment at {first_seq}: {e}")).into()
}

/// Up to `filter.limit` rows of `audit_log`, in the listing's order.
async fn list_rows(s: &Backend, workspace_id: &str, filter: &AuditFilter) -> DbResult<Vec<AuditRecord>> {
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

//! The audit log's queries (each backend appends in its own way).

use agentvault_core::audit::{AuditFilter, AuditRecord};
use agentvault_core::model::Millis;
use sqlx::QueryBuilder;


use super::{Backend, Conn, Db};
use crate::audit_segment;
use crate::{ExportBatch, ExportPosition};
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

/// Segments fetched by a listing's first query (a page is usually within the newest one or two),
/// doubled by each further query up to [`MAX_SEGMENTS_PER_QUERY`].
const FIRST_SEGMENTS_PER_QUERY: i64 = 2;
const MAX_SEGMENTS_PER_QUERY: i64 = 32;

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
    let mut per_query = FIRST_SEGMENTS_PER_QUERY;
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
        qb.push_bind(per_query);
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
        if (segments.len() as i64) < per_query {
            return Ok(out);
        }
        per_query = (per_query * 2).min(MAX_SEGMENTS_PER_QUERY);
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

/// Segments with fewer records than half of this are merged with their neighbours, up to this.
const COMPACT_TARGET: i64 = 4096;

/// Merges runs of adjacent small segments of a workspace into segments of up to
/// [`COMPACT_TARGET`] records (at most `max_merges` merges per call); only segments that start at
/// or before `through_seq`, when given (the export stream's position: a merged segment takes the
/// first one's position, so it must hold nothing the stream has not read). Returns the number of
/// segments merged away.
pub(super) async fn compact(s: &Backend, through_seq: Option<i64>, max_merges: usize) -> DbResult<u64> {
    let through = through_seq.unwrap_or(i64::MAX);
    let workspaces: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT workspace_id FROM audit_segments").fetch_all(&s.read).await?;
    let mut merges = 0;
    let mut merged_away = 0;
    for ws in workspaces {
        let segments: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT first_seq, records FROM audit_segments WHERE workspace_id = $1 AND first_seq <= $2 ORDER BY first_seq",
        )
        .bind(&ws)
        .bind(through)
        .fetch_all(&s.read)
        .await?;
        for run in crate::rules::compaction_runs(&segments, COMPACT_TARGET) {
            if merges >= max_merges {
                return Ok(merged_away);
            }
            if merge(s, &ws, &run).await? {
                merges += 1;
                merged_away += run.len() as u64 - 1;
            }
        }
    }
    Ok(merged_away)
}

fn in_list(qb: &mut QueryBuilder<Db>, firsts: &[i64]) {
    qb.push(" IN (");
    let mut list = qb.separated(", ");
    for f in firsts {
        list.push_bind(*f);
    }
    qb.push(")");
}

/// Replaces adjacent segments by one; false if another server merged or dropped them first.
///
/// The segments are read and the merged one built before the write transaction, and the build
/// (decoding and encoding thousands of records) runs on a blocking thread, so that neither the
/// database's writers nor the requests on the async workers wait for it. A segment never changes
/// once written: it is merged away or dropped whole. A merge by another server may put a new
/// segment under the first number of one read here, holding more records (a later last number),
/// so the transaction deletes the segments by first and last number, and gives up unless it
/// deletes every one of those it read.
async fn merge(s: &Backend, ws: &str, firsts: &[i64]) -> DbResult<bool> {
    let mut qb: QueryBuilder<Db> =
        QueryBuilder::new("SELECT first_seq, last_seq, data FROM audit_segments WHERE first_seq");
    in_list(&mut qb, firsts);
    qb.push(" ORDER BY first_seq");
    let read: Vec<(i64, i64, Vec<u8>)> = qb.build_query_as().fetch_all(&s.read).await?;
    if read.len() != firsts.len() {
        return Ok(false);
    }
    let spans: Vec<(i64, i64)> = read.iter().map(|(first, last, _)| (*first, *last)).collect();
    let blocks: Vec<(i64, Vec<u8>)> = read.into_iter().map(|(first, _, data)| (first, data)).collect();
    let merged = tokio::task::spawn_blocking(move || merged_segment(&blocks))
        .await
        .map_err(|e| agentvault_core::Error::internal(format!("merging audit segments stopped: {e}")))??;
    let mut tx = s.begin_upkeep().await?;
    let mut qb: QueryBuilder<Db> = QueryBuilder::new("DELETE FROM audit_segments WHERE ");
    let mut any = qb.separated(" OR ");
    for (first, last) in &spans {
        any.push("(first_seq = ").push_bind_unseparated(*first);
        any.push_unseparated(" AND last_seq = ").push_bind_unseparated(*last).push_unseparated(")");
    }
    if qb.build().execute(&mut *tx).await?.rows_affected() != spans.len() as u64 {
        return Ok(false);
    }
    let mut qb: QueryBuilder<Db> = QueryBuilder::new("DELETE FROM audit_segment_keys WHERE first_seq");
    in_list(&mut qb, firsts);
    qb.build().execute(&mut *tx).await?;
    insert_segment(&mut tx, ws, &merged).await?;
    tx.commit().await?;
    Ok(true)
}

/// A segment ready to store: its block, summary and index keys.
struct Segment {
    block: Vec<u8>,
    summary: audit_segment::Summary,
    keys: Vec<String>,
}

/// The blocks of adjacent segments (in sequence order) as one segment.
fn merged_segment(blocks: &[(i64, Vec<u8>)]) -> DbResult<Segment> {
    let mut total = 0;
    for (first, data) in blocks {
        total += audit_segment::records_in(data).map_err(|e| damaged(*first, e))?;
    }
    let mut records = Vec::with_capacity(total);
    for (first, data) in blocks {
        audit_segment::views(*first, data, &mut records).map_err(|e| damaged(*first, e))?;
    }
    let mut block = Vec::new();
    let summary = audit_segment::encode(records.iter().copied(), &mut block);
    let keys = audit_segment::index_keys(records.iter().map(|(_, e)| *e));
    Ok(Segment { block, summary, keys })
}

/// Stores a segment (records of one workspace) with its index keys.
async fn insert_segment(conn: &mut Conn, ws: &str, segment: &Segment) -> DbResult<()> {
    let summary = &segment.summary;
    sqlx::query(audit_segment::INSERT_SEGMENT)
        .bind(summary.first_seq)
        .bind(ws)
        .bind(summary.last_seq)
        .bind(summary.min_at)
        .bind(summary.max_at)
        .bind(summary.records)
        .bind(&segment.block)
        .execute(&mut *conn)
        .await?;
    for k in &segment.keys {
        sqlx::query(audit_segment::INSERT_KEY).bind(ws).bind(k).bind(summary.first_seq).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Drops what is older than `before`: whole segments whose newest record is older, and older
/// rows of `audit_log`; only what the export stream has read when its positions are given.
/// Works in short transactions. Returns the number of records dropped.
pub(super) async fn drop_before(s: &Backend, before: Millis, exported: Option<ExportPosition>) -> DbResult<u64> {
    let (segments_through, rows_through) = exported.map_or((i64::MAX, i64::MAX), |p| (p.segments, p.rows));
    let mut dropped = 0u64;
    loop {
        let mut tx = s.begin_upkeep().await?;
        let doomed: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT first_seq, records FROM audit_segments WHERE max_at < $1 AND first_seq <= $2 \
             ORDER BY first_seq LIMIT 256",
        )
        .bind(before)
        .bind(segments_through)
        .fetch_all(&mut *tx)
        .await?;
        if doomed.is_empty() {
            break;
        }
        let firsts: Vec<i64> = doomed.iter().map(|(f, _)| *f).collect();
        // The age is checked again: a merge by another server since the query above may have put
        // newer records under one of these numbers. Only the keys of what went are deleted.
        let mut qb: QueryBuilder<Db> = QueryBuilder::new("DELETE FROM audit_segments WHERE max_at < ");
        qb.push_bind(before).push(" AND first_seq");
        in_list(&mut qb, &firsts);
        qb.push(" RETURNING first_seq, records");
        let gone: Vec<(i64, i64)> = qb.build_query_as().fetch_all(&mut *tx).await?;
        if !gone.is_empty() {
            let firsts: Vec<i64> = gone.iter().map(|(f, _)| *f).collect();
            let mut qb: QueryBuilder<Db> = QueryBuilder::new("DELETE FROM audit_segment_keys WHERE first_seq");
            in_list(&mut qb, &firsts);
            qb.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        dropped += gone.iter().map(|(_, n)| *n as u64).sum::<u64>();
    }
    loop {
        let mut tx = s.begin_upkeep().await?;
        let done = sqlx::query(
            "DELETE FROM audit_log WHERE (workspace_id, seq) IN \
             (SELECT workspace_id, seq FROM audit_log WHERE at < $1 AND seq <= $2 LIMIT 5000)",
        )
        .bind(before)
        .bind(rows_through)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        dropped += done.rows_affected();
        if done.rows_affected() == 0 {
            break;
        }
    }
    Ok(dropped)
}

/// The next records for the export stream, across workspaces: rows of `audit_log` after the
/// position's row (by sequence number) and the segments that start after its segment (whole, in
/// order). Rows and segments each commit in sequence order, so two positions read each record
/// once.
pub(super) async fn export_batch(s: &Backend, from: ExportPosition, limit: u32) -> DbResult<ExportBatch> {
    let (segments_after, rows_after) = (from.segments, from.rows);
    s.settle_audit()?;
    let rows: Vec<AuditRow> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(audit),
        " FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
    ))
    .bind(rows_after)
    .bind(i64::from(limit))
    .fetch_all(&s.read)
    .await?;
    let blocks: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT first_seq, data FROM audit_segments WHERE first_seq > $1 ORDER BY first_seq LIMIT $2")
            .bind(segments_after)
            .bind(i64::from(limit.div_ceil(256).max(1)))
            .fetch_all(&s.read)
            .await?;
    let mut segments = Vec::with_capacity(blocks.len());
    for (first, data) in &blocks {
        let records = audit_segment::decode(*first, data).map_err(|e| damaged(*first, e))?;
        segments.push((*first, records.into_iter().map(|(seq, event)| AuditRecord { seq, event }).collect()));
    }
    Ok(ExportBatch { rows: convert(rows)?, segments })
}

/// The export stream's position and when it was last recorded: `segments,rows,at`.
const EXPORT_SETTING: &str = "audit_export_position";

pub(super) async fn export_position(s: &Backend) -> DbResult<Option<(ExportPosition, Millis)>> {
    let value: Option<String> = sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
        .bind(EXPORT_SETTING)
        .fetch_optional(&s.read)
        .await?;
    Ok(value.and_then(|v| {
        let mut parts = v.split(',').map(|p| p.parse::<i64>().ok());
        let (segments, rows, at) = (parts.next()??, parts.next()??, parts.next()??);
        Some((ExportPosition { segments, rows }, at))
    }))
}

pub(super) async fn set_export_position(s: &Backend, p: ExportPosition, now: Millis) -> DbResult<()> {
    sqlx::query("INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = $2")
        .bind(EXPORT_SETTING)
        .bind(format!("{},{},{now}", p.segments, p.rows))
        .execute(&s.write)
        .await?;
    Ok(())
}

//! Audit upkeep, in the background: the export stream for SIEMs, the merging of small audit
//! segments, and retention.
//!
//! - **Export**: every record (every workspace, mutations and reads) is written once, in order,
//!   as a JSON line to a file that rotates by size or to the standard input of a command. The
//!   stream keeps its position in the database and writes before it moves the position on, so a
//!   crash repeats at most the last batch and loses nothing (at least once).
//! - **Compaction**: the small segments the group commit writes under light load are merged into
//!   segments of up to 4,096 records (only what the stream has exported, when it is on).
//! - **Retention**: records older than the retention period are dropped, as whole segments
//!   (only what the stream has exported, when it is on: a stream that is behind holds them).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use agentvault_core::Result;
use agentvault_core::audit::AuditRecord;
use agentvault_store::ExportPosition;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::AppState;
use crate::api::audit::AuditOut;

/// How often segments are merged and old records dropped.
const UPKEEP_EVERY: Duration = Duration::from_secs(60);
/// The first upkeep runs this long after the start.
const FIRST_UPKEEP: Duration = Duration::from_secs(10);
/// How often the export stream looks for new records when it has caught up.
const EXPORT_EVERY: Duration = Duration::from_secs(1);
/// Records per export batch.
const EXPORT_BATCH: u32 = 1000;
/// Merges per upkeep round (each is a short transaction).
const MERGES_PER_ROUND: usize = 256;
/// A server exporting records its position at least this often, even with nothing to write…
const EXPORT_HEARTBEAT: Duration = Duration::from_secs(60);
/// …so that every server's merging and retention stay behind a position recorded this recently
/// (with several servers, one exports; the others must not merge or drop past it either).
const EXPORT_ACTIVE: Duration = Duration::from_secs(600);

/// Where the export stream goes. (`Debug` leaves the command out: it may carry a shipper's
/// credentials.)
#[derive(Clone, PartialEq, Eq)]
pub enum ExportTarget {
    /// JSON lines appended to a file; at `rotate_bytes` it is renamed with the time appended and a
    /// new one started.
    File { path: PathBuf, rotate_bytes: u64 },
    /// JSON lines to the standard input of `sh -c <command>`, started again if it exits.
    Command(String),
}

impl std::fmt::Debug for ExportTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExportTarget::File { path, rotate_bytes } => {
                f.debug_struct("File").field("path", path).field("rotate_bytes", rotate_bytes).finish()
            }
            ExportTarget::Command(_) => f.write_str("Command(<redacted>)"),
        }
    }
}

/// One exported line: the record as the API lists it, with its workspace.
#[derive(Serialize)]
struct Line {
    workspace_id: String,
    #[serde(flatten)]
    record: AuditOut,
}

/// Where the stream writes.
enum Sink {
    File { file: tokio::fs::File, path: PathBuf, bytes: u64, rotate_bytes: u64 },
    Command { child: tokio::process::Child },
}

impl Sink {
    async fn open(target: &ExportTarget) -> std::io::Result<Sink> {
        match target {
            ExportTarget::File { path, rotate_bytes } => {
                let mut file = tokio::fs::OpenOptions::new().create(true).append(true).open(path).await?;
                let mut bytes = file.metadata().await?.len();
                if bytes > 0 && !ends_with_newline(path)? {
                    // A line cut off by a crash: end it, so the lines written again stay whole.
                    file.write_all(b"\n").await?;
                    bytes += 1;
                }
                Ok(Sink::File { file, path: path.clone(), bytes, rotate_bytes: *rotate_bytes })
            }
            ExportTarget::Command(command) => {
                let child = tokio::process::Command::new("sh")
                    .arg("-c")
                    .arg(command)
                    .stdin(std::process::Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()?;
                Ok(Sink::Command { child })
            }
        }
    }

    /// Writes the lines and makes them durable (file) or hands them over (command).
    async fn write(&mut self, lines: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::File { file, path, bytes, rotate_bytes } => {
                if *bytes > 0 && *bytes + lines.len() as u64 > *rotate_bytes {
                    file.sync_all().await?;
                    let stamp = crate::rfc3339(crate::now_millis()).replace(':', "");
                    let mut rotated = PathBuf::from(format!("{}.{stamp}", path.display()));
                    // Never over an earlier one rotated within the same millisecond.
                    let mut n = 1;
                    while tokio::fs::try_exists(&rotated).await? {
                        rotated = PathBuf::from(format!("{}.{stamp}.{n}", path.display()));
                        n += 1;
                    }
                    tokio::fs::rename(&*path, &rotated).await?;
                    *file = tokio::fs::OpenOptions::new().create(true).append(true).open(&*path).await?;
                    *bytes = 0;
                }
                file.write_all(lines).await?;
                file.sync_data().await?;
                *bytes += lines.len() as u64;
                Ok(())
            }
            Sink::Command { child } => {
                let stdin = child.stdin.as_mut().ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the export command has no standard input")
                })?;
                stdin.write_all(lines).await?;
                stdin.flush().await
            }
        }
    }
}

fn ends_with_newline(path: &std::path::Path) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    f.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// Runs the upkeep until `stop` turns true (checked between batches, so that a batch is
/// written whole).
pub async fn run(st: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut sink: Option<Sink> = None;
    let mut next_upkeep = Instant::now() + FIRST_UPKEEP;
    let mut said = Instant::now() - EXPORT_HEARTBEAT;
    while !*stop.borrow() {
        if let Some(target) = &st.options.audit_export
            && let Err(e) = export(&st, target, &mut sink, &mut said).await
        {
            tracing::warn!(error = %e, "the audit export stream failed; retrying");
            sink = None;
        }
        if Instant::now() >= next_upkeep {
            next_upkeep = Instant::now() + UPKEEP_EVERY;
            if let Err(e) = upkeep(&st).await {
                tracing::warn!(error = %e, "audit upkeep (merging segments, retention) failed; retrying later");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(EXPORT_EVERY) => {}
            _ = stop.changed() => {}
        }
    }
    if let Some(target) = &st.options.audit_export
        && let Err(e) = export(&st, target, &mut sink, &mut said).await
    {
        tracing::warn!(error = %e, "the audit export stream failed at shutdown; it goes on from there at the next start");
    }
}

/// Writes every record after the stream's position, batch by batch, moving the position on after
/// each write (and recording it now and then when there is nothing to write: `said`).
async fn export(st: &AppState, target: &ExportTarget, sink: &mut Option<Sink>, said: &mut Instant) -> Result<()> {
    let mut position = st.store.audit_export_position().await?.map(|(p, _)| p).unwrap_or_default();
    loop {
        let batch = st.store.audit_export_batch(position, EXPORT_BATCH).await?;
        if batch.rows.is_empty() && batch.segments.is_empty() {
            if said.elapsed() >= EXPORT_HEARTBEAT {
                st.store.set_audit_export_position(position, crate::now_millis()).await?;
                *said = Instant::now();
            }
            return Ok(());
        }
        let mut next = position;
        let mut records: Vec<AuditRecord> = Vec::new();
        if let Some(last) = batch.rows.last() {
            next.rows = last.seq;
        }
        records.extend(batch.rows);
        for (first, segment) in batch.segments {
            next.segments = first;
            records.extend(segment);
        }
        records.sort_unstable_by_key(|r| r.seq);
        let mut lines = Vec::with_capacity(records.len() * 200);
        for mut r in records {
            let workspace_id = std::mem::take(&mut r.event.workspace_id);
            serde_json::to_writer(&mut lines, &Line { workspace_id, record: AuditOut::from(r) })
                .map_err(|e| agentvault_core::Error::internal(format!("encoding an audit record: {e}")))?;
            lines.push(b'\n');
        }
        let open = match sink.take() {
            Some(s) => s,
            None => Sink::open(target)
                .await
                .map_err(|e| agentvault_core::Error::unavailable(format!("opening the audit export: {e}")))?,
        };
        let written = sink.insert(open).write(&lines).await;
        if let Err(e) = written {
            *sink = None;
            return Err(agentvault_core::Error::unavailable(format!("writing the audit export: {e}")));
        }
        st.store.set_audit_export_position(next, crate::now_millis()).await?;
        *said = Instant::now();
        position = next;
    }
}

/// Merges small segments and drops what retention no longer keeps (never what an export stream,
/// this server's or another's, has not read).
async fn upkeep(st: &AppState) -> Result<()> {
    let recorded = st.store.audit_export_position().await?;
    let active = |at: i64| crate::now_millis().saturating_sub(at) <= EXPORT_ACTIVE.as_millis() as i64;
    let exported: Option<ExportPosition> = match (&st.options.audit_export, recorded) {
        (Some(_), recorded) => Some(recorded.map(|(p, _)| p).unwrap_or_default()),
        (None, Some((p, at))) if active(at) => Some(p),
        (None, _) => None,
    };
    let merged = st.store.compact_audit(exported.map(|p| p.segments), MERGES_PER_ROUND).await?;
    if merged > 0 {
        tracing::debug!(segments = merged, "merged small audit segments");
    }
    if let Some(retention) = st.options.audit_retention {
        let before = crate::now_millis().saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
        let dropped = st.store.drop_audit_before(before, exported).await?;
        if dropped > 0 {
            tracing::info!(records = dropped, "dropped audit records older than the retention period");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_export_command_stays_out_of_debug_output() {
        let target = ExportTarget::Command("ship --token s3cr3t-TOKEN".into());
        assert!(!format!("{target:?}").contains("s3cr3t"));
    }

    #[tokio::test]
    async fn the_export_file_rotates_by_size_and_a_cut_line_is_ended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        // A line cut off by a crash of an earlier process.
        std::fs::write(&path, b"{\"id\":1}\n{\"id\":2,\"act").unwrap();
        let target = ExportTarget::File { path: path.clone(), rotate_bytes: 64 };
        let mut sink = Sink::open(&target).await.unwrap();
        sink.write(b"{\"id\":2}\n").await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"id\":1}\n{\"id\":2,\"act\n{\"id\":2}\n");
        // Past 64 bytes the file is renamed and a new one started.
        sink.write(&[b'x'; 60]).await.unwrap();
        sink.write(b"next\n").await.unwrap();
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "next\n");
        assert!(names.iter().any(|n| n.starts_with("audit.jsonl.") && n.ends_with('Z')), "{names:?}");
        let rotated: usize = names
            .iter()
            .filter(|n| n.starts_with("audit.jsonl."))
            .map(|n| std::fs::read(dir.path().join(n)).unwrap().len())
            .sum();
        assert_eq!(rotated, 31 + 60, "nothing rotated is lost");
    }
}

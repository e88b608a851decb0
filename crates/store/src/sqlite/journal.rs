//! The audit journal of the SQLite backend.
//!
//! An agent's read is answered only once its audit record is durable. Committing an SQLite
//! transaction for every group of reads costs tens of microseconds (WAL frames, checksums,
//! shared-memory locks) and was the largest share of the read path's CPU. So records are first
//! appended to a journal file with one `write()` per batch — durable against a crash of the
//! process, like a WAL commit with `synchronous=NORMAL` — and a background thread moves them
//! into the `audit_log` table in large transactions.
//!
//! Every record carries its sequence number and the table's key is `(workspace_id, seq)`, so
//! moving a record twice is harmless: after a crash the whole journal is simply replayed with
//! an insert that skips the records already there. The journal is a series of segment files (`<db>-audit-journal.<n>`); a new
//! segment starts when the current one is large, and a segment is deleted once every record in
//! it is in the table.
//!
//! Framing: `u32 length (LE) | u32 crc32 (LE) | JSON array`; a short or corrupt tail (a write
//! cut off by a power failure) ends the replay.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use agentvault_core::audit::{Action, AuditEvent, Outcome};
use agentvault_core::model::Actor;
use agentvault_core::{Error, Result};

/// Records are moved to the table at most this often (so that each transaction carries many).
const INGEST_EVERY: Duration = Duration::from_millis(5);
/// A new segment starts once the current one is this large.
const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

/// One journal record: the sequence number and the event's columns.
type Row =
    (i64, i64, String, String, String, String, String, Option<String>, Option<String>, Option<String>, Option<String>);

fn to_row(seq: i64, e: &AuditEvent) -> Row {
    (
        seq,
        e.at,
        e.workspace_id.clone(),
        e.actor.kind().to_owned(),
        e.actor.id().to_owned(),
        e.action.as_str().to_owned(),
        e.outcome.as_str().to_owned(),
        e.secret_name.clone(),
        e.agent_id.clone(),
        e.target_id.clone(),
        e.detail.clone(),
    )
}

fn from_row(r: Row) -> Option<(i64, AuditEvent)> {
    let (seq, at, workspace_id, actor_type, actor_id, action, outcome, secret_name, agent_id, target_id, detail) = r;
    Some((
        seq,
        AuditEvent {
            at,
            workspace_id,
            actor: Actor::from_parts(&actor_type, actor_id),
            action: Action::parse(&action)?,
            outcome: Outcome::parse(&outcome)?,
            secret_name,
            agent_id,
            target_id,
            detail,
        },
    ))
}

fn encode(seq: i64, e: &AuditEvent, out: &mut Vec<u8>) {
    let body = serde_json::to_vec(&to_row(seq, e)).unwrap_or_default();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
}

/// Every whole, intact record at the start of `bytes` (stops at the first bad one).
fn decode_all(bytes: &[u8]) -> Vec<(i64, AuditEvent)> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 8 {
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let Some(body) = rest.get(8..8 + len) else { break };
        if crc32fast::hash(body) != crc {
            break;
        }
        match serde_json::from_slice::<Row>(body).ok().and_then(from_row) {
            Some(record) => out.push(record),
            None => break,
        }
        rest = &rest[8 + len..];
    }
    out
}

fn journal_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::internal(format!("audit journal: {what}: {e}"))
}

struct Pending {
    records: Vec<(i64, AuditEvent)>,
    /// The highest sequence number appended.
    appended: i64,
    /// The highest sequence number in the table (everything appended up to it is moved).
    ingested: i64,
    /// Whether the last move into the table failed.
    failing: bool,
}

/// The segment being appended to.
struct Segment {
    file: File,
    number: u64,
    bytes: u64,
}

struct Shared {
    /// Segment `n` is `<prefix>.<n>`.
    prefix: PathBuf,
    current: Mutex<Segment>,
    /// Full segments and the last sequence number in each; deleted once it is in the table.
    retired: Mutex<Vec<(u64, i64)>>,
    pending: Mutex<Pending>,
    /// Signalled when records are appended (wakes the mover) and when they are moved.
    changed: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn current(&self) -> MutexGuard<'_, Segment> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn retired(&self) -> MutexGuard<'_, Vec<(u64, i64)>> {
        self.retired.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn segment_path(&self, number: u64) -> PathBuf {
        segment_path(&self.prefix, number)
    }
}

fn segment_path(prefix: &Path, number: u64) -> PathBuf {
    let mut p = prefix.as_os_str().to_owned();
    p.push(format!(".{number}"));
    PathBuf::from(p)
}

/// The segment numbers present on disk, in order.
fn segments_on_disk(prefix: &Path) -> Result<Vec<u64>> {
    let dir = prefix.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let stem = prefix.file_name().map(|n| format!("{}.", n.to_string_lossy())).unwrap_or_default();
    let mut numbers: Vec<u64> = std::fs::read_dir(dir)
        .map_err(|e| journal_err(&format!("listing {}", dir.display()), e))?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().to_string_lossy().strip_prefix(&stem).and_then(|n| n.parse().ok()))
        .collect();
    numbers.sort_unstable();
    Ok(numbers)
}

fn open_segment(prefix: &Path, number: u64) -> Result<Segment> {
    let path = segment_path(prefix, number);
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| journal_err(&format!("opening {}", path.display()), e))?;
    Ok(Segment { file, number, bytes: 0 })
}

/// The journal and the thread that moves its records into the table.
pub struct AuditJournal {
    shared: Arc<Shared>,
    mover: Mutex<Option<JoinHandle<()>>>,
}

impl AuditJournal {
    /// Replays what an earlier process left in the journal into the table, truncates it, and
    /// starts the mover. `conn` is the connection the mover writes with; `seq` hands out
    /// sequence numbers.
    pub fn open(prefix: &Path, mut conn: rusqlite::Connection, seq: Arc<AtomicI64>) -> Result<AuditJournal> {
        let found = segments_on_disk(prefix)?;
        let mut replayed = 0;
        for number in &found {
            let path = segment_path(prefix, *number);
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|e| journal_err(&format!("reading {}", path.display()), e))?;
            let records = decode_all(&bytes);
            if !records.is_empty() {
                insert(&mut conn, &records)?;
                replayed += records.len();
            }
        }
        if replayed > 0 {
            tracing::info!(records = replayed, segments = found.len(), "replayed the audit journal");
        }
        // Everything is in the table now; the old segments can go.
        for number in &found {
            let path = segment_path(prefix, *number);
            std::fs::remove_file(&path).map_err(|e| journal_err(&format!("removing {}", path.display()), e))?;
        }
        let last_in_table: i64 = conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM audit_log", [], |r| r.get(0))
            .map_err(|e| journal_err("reading the last sequence number", e))?;
        seq.store(last_in_table + 1, Ordering::SeqCst);
        let first = found.last().map_or(0, |n| n + 1);
        let shared = Arc::new(Shared {
            prefix: prefix.to_owned(),
            current: Mutex::new(open_segment(prefix, first)?),
            retired: Mutex::new(Vec::new()),
            pending: Mutex::new(Pending {
                records: Vec::new(),
                appended: last_in_table,
                ingested: last_in_table,
                failing: false,
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let mover = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("audit-journal".into())
                .spawn(move || move_records(&shared, conn))
                .map_err(|e| journal_err("starting the mover thread", e))?
        };
        Ok(AuditJournal { shared, mover: Mutex::new(Some(mover)) })
    }

    /// Appends records (with the sequence numbers given) in one write.
    pub fn append(&self, records: Vec<(i64, AuditEvent)>) -> Result<()> {
        let mut buf = Vec::with_capacity(records.len() * 256);
        for (seq, e) in &records {
            encode(*seq, e, &mut buf);
        }
        let mut segment = self.shared.current();
        if segment.bytes >= SEGMENT_BYTES {
            let next = open_segment(&self.shared.prefix, segment.number + 1)?;
            let full = std::mem::replace(&mut *segment, next);
            let last = self.shared.pending().appended;
            self.shared.retired().push((full.number, last));
        }
        segment.file.write_all(&buf).map_err(|e| journal_err("appending", e))?;
        segment.bytes += buf.len() as u64;
        let mut p = self.shared.pending();
        if let Some((last, _)) = records.last() {
            p.appended = p.appended.max(*last);
        }
        p.records.extend(records);
        drop(p);
        drop(segment);
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Waits until every record appended so far is in the table.
    pub fn sync(&self) -> Result<()> {
        let mut p = self.shared.pending();
        let target = p.appended;
        while p.ingested < target {
            if p.failing {
                return Err(Error::unavailable(
                    "the audit log cannot be written to the database right now; try again shortly",
                ));
            }
            p = self
                .shared
                .changed
                .wait_timeout(p, Duration::from_millis(50))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        Ok(())
    }

    /// Moves what is left and stops the mover.
    pub fn close(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        let handle = self.mover.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Drop for AuditJournal {
    fn drop(&mut self) {
        self.close();
    }
}

fn insert(conn: &mut rusqlite::Connection, records: &[(i64, AuditEvent)]) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| journal_err("beginning a transaction", e))?;
    {
        let mut stmt = tx
            .prepare_cached(concat!(audit_insert!(), " ON CONFLICT (workspace_id, seq) DO NOTHING"))
            .map_err(|e| journal_err("preparing the insert", e))?;
        for (seq, e) in records {
            stmt.execute(rusqlite::params![
                seq,
                e.at,
                e.workspace_id,
                e.actor.kind(),
                e.actor.id(),
                e.action.as_str(),
                e.outcome.as_str(),
                e.secret_name,
                e.agent_id,
                e.target_id,
                e.detail,
            ])
            .map_err(|e| journal_err("inserting", e))?;
        }
        let mut upsert =
            tx.prepare_cached(super::LAST_READ_UPSERT).map_err(|e| journal_err("preparing the last-read update", e))?;
        for r in crate::rules::last_reads_in(records.iter().map(|(_, e)| e)) {
            upsert
                .execute(rusqlite::params![r.workspace_id, r.secret_name, r.agent_id, r.at])
                .map_err(|e| journal_err("updating last reads", e))?;
        }
    }
    tx.commit().map_err(|e| journal_err("committing", e))
}

/// The mover thread: takes what was appended, inserts it in one transaction, and truncates the
/// journal once it is large and everything in it is in the table.
fn move_records(shared: &Shared, mut conn: rusqlite::Connection) {
    loop {
        let batch = {
            let mut p = shared.pending();
            while p.records.is_empty() && !shared.stop.load(Ordering::SeqCst) {
                p = shared.changed.wait(p).unwrap_or_else(|e| e.into_inner());
            }
            if p.records.is_empty() {
                return;
            }
            std::mem::take(&mut p.records)
        };
        let last = batch.last().map(|(s, _)| *s).unwrap_or(0);
        let result = insert(&mut conn, &batch);
        {
            let mut p = shared.pending();
            match &result {
                Ok(()) => {
                    p.ingested = p.ingested.max(last);
                    p.failing = false;
                }
                Err(e) => {
                    tracing::error!(error = %e, records = batch.len(), "moving audit records into the database failed; retrying");
                    p.failing = true;
                    // Put them back in front: nothing is dropped.
                    let newer = std::mem::take(&mut p.records);
                    p.records = batch;
                    p.records.extend(newer);
                }
            }
        }
        shared.changed.notify_all();
        if result.is_ok() {
            remove_moved_segments(shared);
        }
        if !shared.stop.load(Ordering::SeqCst) {
            std::thread::sleep(if result.is_ok() { INGEST_EVERY } else { Duration::from_millis(200) });
        }
    }
}

/// Deletes the full segments whose records are all in the table.
fn remove_moved_segments(shared: &Shared) {
    let ingested = shared.pending().ingested;
    let mut retired = shared.retired();
    retired.retain(|(number, last)| {
        if *last > ingested {
            return true;
        }
        let path = shared.segment_path(*number);
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(error = %e, path = %path.display(), "removing an audit journal segment failed");
        }
        false
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: i64) -> AuditEvent {
        AuditEvent::new(i, "ws_1", Actor::ApiKey("key_1".into()), Action::SecretRead, Outcome::Success)
            .secret("stripe_api_key")
            .agent("agt_1")
            .detail(format!("version={i}"))
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_dropped() {
        let mut buf = Vec::new();
        for i in 1..=3 {
            encode(i, &event(i), &mut buf);
        }
        let whole = decode_all(&buf);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[2], (3, event(3)));
        // Cut in the middle of the last record: the first two survive.
        assert_eq!(decode_all(&buf[..buf.len() - 5]).len(), 2);
        // A flipped byte in the second record ends the replay there.
        let mut bad = buf.clone();
        let second = 8 + u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize + 12;
        bad[second] ^= 0x55;
        assert_eq!(decode_all(&bad).len(), 1);
        assert!(decode_all(&[1, 2, 3]).is_empty());
    }
}

#[cfg(test)]
mod recovery_tests {
    use agentvault_core::audit::AuditFilter;

    use super::*;
    use crate::{SqliteStore, Store};

    fn event(i: i64) -> AuditEvent {
        AuditEvent::new(1_000 + i, "ws_r", Actor::ApiKey("key_r".into()), Action::SecretRead, Outcome::Success)
            .secret("k")
            .agent("agt_r")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_journal_left_by_a_crash_is_replayed_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("agentvault.db");
        let store = SqliteStore::open(&db).await.unwrap();
        store.append_audit(&[event(1)]).await.unwrap();
        store.close().await;
        drop(store);

        // What a killed process leaves: a segment with records 2..=4 (record 1 again, as a
        // segment not yet deleted would hold it) and a torn fifth record.
        let prefix = dir.path().join("agentvault.db-audit-journal");
        let mut bytes = Vec::new();
        let first_seq = 1; // the sequence number record 1 got above
        encode(first_seq, &event(1), &mut bytes);
        for i in 2..=4 {
            encode(first_seq + i - 1, &event(i), &mut bytes);
        }
        let mut torn = Vec::new();
        encode(99, &event(5), &mut torn);
        bytes.extend_from_slice(&torn[..torn.len() / 2]);
        std::fs::write(segment_path(&prefix, 7), &bytes).unwrap();

        let store = SqliteStore::open(&db).await.unwrap();
        let filter = AuditFilter { limit: 100, ..AuditFilter::default() };
        let records = store.list_audit("ws_r", &filter).await.unwrap();
        let ats: Vec<i64> = records.iter().map(|r| r.event.at).collect();
        assert_eq!(ats, vec![1_004, 1_003, 1_002, 1_001], "each intact record once, the torn one dropped");
        assert!(!segment_path(&prefix, 7).exists(), "replayed segments are removed");
        // New records continue after the replayed ones, in a new segment.
        store.append_audit(&[event(6)]).await.unwrap();
        let records = store.list_audit("ws_r", &filter).await.unwrap();
        assert_eq!(records[0].event.at, 1_006);
        assert!(records[0].seq > records[1].seq);
        assert!(segment_path(&prefix, 8).exists());
        store.close().await;
    }
}

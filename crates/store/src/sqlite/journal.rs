//! The audit journal of the SQLite backend.
//!
//! An agent's read is answered only once its audit record is durable. Committing an SQLite
//! transaction for every group of reads costs tens of microseconds (WAL frames, checksums,
//! shared-memory locks) and was the largest share of the read path's CPU. So records are first
//! appended to a journal file — durable against a crash of the process, like a WAL commit with
//! `synchronous=NORMAL` — and a background thread moves them
//! into audit segments (see [`crate::audit_segment`]) in large transactions: one segment per
//! workspace and move, a row per segment instead of one per record.
//!
//! The mover takes the records from a copy of the frames appended since its last move (kept in
//! memory beside the file), not as records: an append is then a copy of bytes the request has
//! already encoded, and the mover reads the strings in place instead of freeing strings that the
//! request's thread allocated.
//!
//! Sequence numbers are handed out under the journal's lock, so the journal, the mover's batches
//! and a workspace's segments are all in sequence order. Each move records the last number it
//! moved (the `audit_moved` counter) in the same transaction, so after a crash the journal is
//! replayed from that number on and no record is moved twice. The journal is a series of files
//! (`<db>-audit-journal.<n>`); a new file starts when the current one is full, and a file is
//! deleted once every record in it is moved (the last one at a clean stop).
//!
//! A journal file is allocated whole when it is created and mapped shared into memory: an append
//! is a copy into the file's pages in the kernel's page cache, with no system call, and that copy
//! survives a crash of the process as a `write()` would. Because its blocks are allocated up front,
//! a full disk is an error when a file is created, never a fault while a record is copied. The
//! zeros after the last frame read as the end of the journal. The mover prepares the next file
//! (`<db>-audit-journal.next.<k>`, renamed when appends reach it) with its pages already faulted
//! in, so that neither creating a file nor a page's first write falls on a read.
//!
//! Framing: `u32 length (LE) | u32 crc32 (LE) | body`; the body is `0xA5 | first sequence number
//! (i64 LE) | an audit segment block` for a batch. Journals written before segments hold one JSON
//! array per record (`[seq, at, …]`); they are replayed into `audit_log` rows as they were. A short
//! or corrupt tail (a write cut off by a power failure) ends the replay.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use agentvault_core::audit::{Action, AuditEvent, AuditEventRef, Outcome};
use agentvault_core::model::Actor;
use agentvault_core::{Error, Result};

use crate::audit_segment;

/// Records are moved at most this often (so that each transaction, and each segment, carries
/// many), unless the log is being queried or enough are waiting.
const INGEST_EVERY: Duration = Duration::from_millis(50);
/// A move starts at once when this many records wait.
const INGEST_RECORDS: usize = 4096;
/// The size of a journal file (a larger one holds a batch that does not fit in this).
#[cfg(not(test))]
const FILE_BYTES: usize = 4 * 1024 * 1024;
/// Small in the unit tests, so that they fill several files.
#[cfg(test)]
const FILE_BYTES: usize = 64 * 1024;
/// The mover keeps its emptied frame buffer for the next appends up to this size: four full moves
/// of reads' frames (about 128 bytes each).
const SPARE_FRAMES_BYTES: usize = 4 * INGEST_RECORDS * 128;
/// The first byte of a batch frame's body (a legacy record's body starts with `[`).
const BATCH: u8 = 0xA5;

/// One legacy journal record: the sequence number and the event's columns.
type Row =
    (i64, i64, String, String, String, String, String, Option<String>, Option<String>, Option<String>, Option<String>);

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

/// Frames a body: length, checksum, body.
#[cfg(test)]
fn frame(body: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    out.extend_from_slice(body);
    seal_frame(&mut out[start..]);
}

/// A frame's header: the body's length and CRC-32, little-endian.
const FRAME_HEADER: usize = 8;

/// Fills in the header of a frame whose body follows its (reserved) header in `frame`.
fn seal_frame(frame: &mut [u8]) {
    let (header, body) = frame.split_at_mut(FRAME_HEADER);
    header[..4].copy_from_slice(&(body.len() as u32).to_le_bytes());
    header[4..].copy_from_slice(&crc32fast::hash(body).to_le_bytes());
}

/// What a journal holds: batches (to move into segments) and legacy records (for `audit_log`).
#[derive(Default, Debug, PartialEq)]
struct Replay {
    batches: Vec<(i64, AuditEvent)>,
    legacy: Vec<(i64, AuditEvent)>,
}

/// The bodies of the whole frames at the start of `bytes`, up to the first one cut short or
/// (when `check` is set: bytes read back from a file) whose checksum does not match.
fn bodies(bytes: &[u8], check: bool) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        let header = rest.get(..FRAME_HEADER)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let body = rest.get(FRAME_HEADER..FRAME_HEADER.checked_add(len)?)?;
        if check && crc32fast::hash(body) != crc {
            return None;
        }
        rest = &rest[FRAME_HEADER + len..];
        Some(body)
    })
}

/// A batch frame's body: its first sequence number and its block.
fn batch_body(body: &[u8]) -> Option<(i64, &[u8])> {
    match body {
        [BATCH, first @ ..] if first.len() >= 8 => {
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&first[..8]);
            Some((i64::from_le_bytes(seq), &first[8..]))
        }
        _ => None,
    }
}

/// Every whole, intact frame at the start of `bytes` (stops at the first bad one).
fn decode_all(bytes: &[u8]) -> Replay {
    let mut out = Replay::default();
    for body in bodies(bytes, true) {
        if let Some((first, block)) = batch_body(body) {
            match audit_segment::decode(first, block) {
                Ok(records) => out.batches.extend(records),
                Err(_) => break,
            }
        } else if body.first() == Some(&b'[') {
            match serde_json::from_slice::<Row>(body).ok().and_then(from_row) {
                Some(record) => out.legacy.push(record),
                None => break,
            }
        } else {
            break;
        }
    }
    out
}

/// The records of batch frames as the mover holds them (frames made by this process, in its
/// memory: their checksums are not checked again), with their strings borrowed from `frames`.
/// Any other frame, or another number of records than `count`, is damage.
fn views_of(frames: &[u8], count: usize) -> std::result::Result<Vec<(i64, AuditEventRef<'_>)>, audit_segment::Damaged> {
    let mut out = Vec::with_capacity(count);
    let mut read = 0;
    let mut views = audit_segment::Views::default();
    for body in bodies(frames, false) {
        read += FRAME_HEADER + body.len();
        let (first, block) = batch_body(body).ok_or(audit_segment::Damaged("not a batch frame"))?;
        views.push(first, block, &mut out)?;
    }
    if read != frames.len() || out.len() != count {
        return Err(audit_segment::Damaged("records are missing"));
    }
    Ok(out)
}

fn journal_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::internal(format!("audit journal: {what}: {e}"))
}

struct Pending {
    /// The frames appended and not yet moved, in sequence order: a copy of what the journal's
    /// files hold, from which the mover reads the records. (Not the records themselves: their
    /// strings would be freed by the mover, on another thread than the one that made them.)
    frames: Vec<u8>,
    /// How many records `frames` holds.
    waiting: usize,
    /// The highest sequence number appended.
    appended: i64,
    /// The highest sequence number moved (everything appended up to it is in segments).
    ingested: i64,
    /// Whether the last move failed.
    failing: bool,
    /// Someone waits for the move (the log is being queried): move now.
    hurry: bool,
}

/// The journal file being appended to, mapped shared.
struct JournalFile {
    map: memmap2::MmapMut,
    path: PathBuf,
    number: u64,
    /// The bytes at the start of `map` that hold frames; the rest are zeros.
    used: usize,
}

struct Shared {
    /// File `n` is `<prefix>.<n>`.
    prefix: PathBuf,
    /// The file appended to and the frames waiting for the mover, under one lock (an append
    /// takes one). It is also the lock under which sequence numbers are handed out, so the
    /// journal is in sequence order.
    appends: Mutex<Appends>,
    /// The next audit sequence number (shared with the mutations' records).
    seq: Arc<AtomicI64>,
    /// Full files and the last sequence number in each; deleted once everything in it is moved.
    retired: Mutex<Vec<(u64, i64)>>,
    /// The next file, prepared by the mover (see [`prepare_next`]).
    next: Mutex<Option<JournalFile>>,
    /// How many files the mover has prepared: each gets a name of its own.
    prepared: AtomicU64,
    /// Signalled when records are appended (wakes the mover) and when they are moved.
    changed: Condvar,
    stop: AtomicBool,
}

/// What an append changes.
struct Appends {
    file: JournalFile,
    pending: Pending,
}

impl Shared {
    fn appends(&self) -> MutexGuard<'_, Appends> {
        self.appends.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn retired(&self) -> MutexGuard<'_, Vec<(u64, i64)>> {
        self.retired.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next(&self) -> MutexGuard<'_, Option<JournalFile>> {
        self.next.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The file that follows `number`, with room for `at_least` bytes: the prepared one when it
    /// is large enough, renamed to its number, else one created now.
    fn next_file(&self, number: u64, at_least: usize) -> Result<JournalFile> {
        let path = self.file_path(number);
        let prepared = self.next().take_if(|f| f.map.len() >= at_least);
        if let Some(mut file) = prepared {
            std::fs::rename(&file.path, &path)
                .map_err(|e| journal_err(&format!("renaming {} to {}", file.path.display(), path.display()), e))?;
            file.number = number;
            file.path = path;
            return Ok(file);
        }
        open_file(&path, number, at_least)
    }

    fn file_path(&self, number: u64) -> PathBuf {
        file_path(&self.prefix, number)
    }
}

/// The journal's file `<prefix>.<name>`.
fn journal_path(prefix: &Path, name: impl std::fmt::Display) -> PathBuf {
    let mut p = prefix.as_os_str().to_owned();
    p.push(format!(".{name}"));
    PathBuf::from(p)
}

fn file_path(prefix: &Path, number: u64) -> PathBuf {
    journal_path(prefix, number)
}

/// Where the mover prepares its `k`th file (not a number: a replay never reads it).
fn prepared_path(prefix: &Path, k: u64) -> PathBuf {
    journal_path(prefix, format_args!("{PREPARED}{k}"))
}

/// What follows `<prefix>.` in the name of a prepared file.
const PREPARED: &str = "next.";

/// Prepares the next journal file if none is: created, allocated, mapped, and its pages faulted
/// in writable (`MADV_POPULATE_WRITE`, where the kernel has it; else they fault at first write).
fn prepare_next(shared: &Shared) {
    if shared.next().is_some() {
        return;
    }
    let path = prepared_path(&shared.prefix, shared.prepared.fetch_add(1, Ordering::Relaxed));
    match open_file(&path, 0, 0) {
        Ok(file) => {
            if let Err(e) = file.map.advise(memmap2::Advice::PopulateWrite) {
                tracing::debug!(error = %e, "faulting in the next audit journal file's pages failed");
            }
            *shared.next() = Some(file);
        }
        Err(e) => tracing::warn!(error = %e, "preparing the next audit journal file failed"),
    }
}

/// What follows `<prefix>.` in the name of each journal file on disk.
fn names_on_disk(prefix: &Path) -> Result<Vec<String>> {
    let dir = prefix.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let stem = prefix.file_name().map(|n| format!("{}.", n.to_string_lossy())).unwrap_or_default();
    Ok(std::fs::read_dir(dir)
        .map_err(|e| journal_err(&format!("listing {}", dir.display()), e))?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().to_string_lossy().strip_prefix(&stem).map(str::to_owned))
        .collect())
}

/// The journal file numbers present on disk, in order.
fn files_on_disk(prefix: &Path) -> Result<Vec<u64>> {
    let mut numbers: Vec<u64> = names_on_disk(prefix)?.iter().filter_map(|n| n.parse().ok()).collect();
    numbers.sort_unstable();
    Ok(numbers)
}

/// Removes the files prepared by the mover and not used (by an earlier process, or at a stop).
fn remove_prepared(prefix: &Path) -> Result<()> {
    for name in names_on_disk(prefix)? {
        if name.starts_with(PREPARED) {
            let path = journal_path(prefix, name);
            std::fs::remove_file(&path).map_err(|e| journal_err(&format!("removing {}", path.display()), e))?;
        }
    }
    Ok(())
}

/// Creates the journal file at `path` (number `number`) with room for at least `at_least` bytes,
/// allocated and mapped.
fn open_file(path: &Path, number: u64, at_least: usize) -> Result<JournalFile> {
    let failed = |what: &str, e: std::io::Error| journal_err(&format!("{what} {}", path.display()), e);
    let file = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(|e| failed("creating", e))?;
    let mapped = allocate(&file, FILE_BYTES.max(at_least)).map_err(|e| failed("allocating", e)).and_then(|()| {
        #[allow(unsafe_code)]
        // SAFETY: the file was just created by this process and nothing truncates it (the journal
        // only ever unlinks a file, which leaves a mapping whole); its blocks are allocated, so a
        // write into the mapping cannot fault for want of disk space.
        unsafe { memmap2::MmapMut::map_mut(&file) }.map_err(|e| failed("mapping", e))
    });
    match mapped {
        Ok(map) => Ok(JournalFile { map, path: path.to_owned(), number, used: 0 }),
        Err(e) => {
            // Not left behind holding what space a partial allocation took.
            let _ = std::fs::remove_file(path);
            Err(e)
        }
    }
}

/// Gives `file` a length of `len` bytes whose blocks are allocated on disk (not a sparse file).
fn allocate(file: &File, len: usize) -> std::io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    #[allow(unsafe_code)]
    // SAFETY: posix_fallocate(3) on a file descriptor that `file` owns; it reads no memory of ours.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::from_raw_os_error(rc)) }
}

fn query_i64(conn: &rusqlite::Connection, sql: &str) -> Result<i64> {
    conn.query_row(sql, [], |r| r.get(0)).map_err(|e| journal_err("reading the audit positions", e))
}

/// The journal and the thread that moves its records into segments.
pub struct AuditJournal {
    shared: Arc<Shared>,
    mover: Mutex<Option<JoinHandle<()>>>,
}

impl AuditJournal {
    /// Replays what an earlier process left in the journal, removes it, and starts the mover.
    /// `conn` is the connection the mover writes with; `seq` hands out sequence numbers.
    pub fn open(prefix: &Path, mut conn: rusqlite::Connection, seq: Arc<AtomicI64>) -> Result<AuditJournal> {
        let found = files_on_disk(prefix)?;
        let moved = query_i64(&conn, "SELECT value FROM counters WHERE name = 'audit_moved'")?;
        let mut replayed = 0;
        for number in &found {
            let path = file_path(prefix, *number);
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|e| journal_err(&format!("reading {}", path.display()), e))?;
            let replay = decode_all(&bytes);
            if !replay.legacy.is_empty() {
                insert_legacy(&mut conn, &replay.legacy)?;
                replayed += replay.legacy.len();
            }
            let batches: Vec<_> =
                replay.batches.iter().filter(|(s, _)| *s > moved).map(|(s, e)| (*s, e.view())).collect();
            if !batches.is_empty() {
                insert(&mut conn, &batches)?;
                replayed += batches.len();
            }
        }
        if replayed > 0 {
            tracing::info!(records = replayed, files = found.len(), "replayed the audit journal");
        }
        // Everything is moved now; the old files can go.
        for number in &found {
            let path = file_path(prefix, *number);
            std::fs::remove_file(&path).map_err(|e| journal_err(&format!("removing {}", path.display()), e))?;
        }
        remove_prepared(prefix)?;
        let last = query_i64(
            &conn,
            "SELECT MAX((SELECT COALESCE(MAX(seq), 0) FROM audit_log), \
                        (SELECT COALESCE(MAX(last_seq), 0) FROM audit_segments), \
                        (SELECT value FROM counters WHERE name = 'audit_moved'))",
        )?;
        seq.store(last + 1, Ordering::SeqCst);
        let first = found.last().map_or(0, |n| n + 1);
        let shared = Arc::new(Shared {
            prefix: prefix.to_owned(),
            appends: Mutex::new(Appends {
                file: open_file(&file_path(prefix, first), first, 0)?,
                pending: Pending {
                    frames: Vec::new(),
                    waiting: 0,
                    appended: last,
                    ingested: last,
                    failing: false,
                    hurry: false,
                },
            }),
            seq,
            retired: Mutex::new(Vec::new()),
            next: Mutex::new(None),
            prepared: AtomicU64::new(0),
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

    /// Numbers the records and appends them in one write.
    pub fn append(&self, events: &[AuditEventRef<'_>]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        // The block is built before the lock: within a batch the numbers are consecutive, and
        // the first one goes in the body's header. The frame's header (length, CRC) comes last.
        let block = match events {
            [one] => audit_segment::one_len(one),
            _ => 128 + events.len() * 16,
        };
        let mut buf = Vec::with_capacity(FRAME_HEADER + 9 + block);
        buf.extend_from_slice(&[0; FRAME_HEADER]);
        buf.push(BATCH);
        buf.extend_from_slice(&[0; 8]);
        match events {
            [one] => audit_segment::encode_one(one, &mut buf),
            _ => {
                audit_segment::encode((0..).zip(events.iter().copied()), &mut buf);
            }
        }
        let mut appends = self.shared.appends();
        let Appends { file, pending: p } = &mut *appends;
        if self.shared.stop.load(Ordering::SeqCst) {
            return Err(Error::unavailable("the audit journal is closed: agentvault is stopping"));
        }
        let mut full = None;
        if file.used + buf.len() > file.map.len() {
            let next = self.shared.next_file(file.number + 1, buf.len())?;
            let done = std::mem::replace(file, next);
            self.shared.retired().push((done.number, p.appended));
            full = Some(done);
        }
        let first = self.shared.seq.fetch_add(events.len() as i64, Ordering::Relaxed);
        let last = first + events.len() as i64 - 1;
        buf[FRAME_HEADER + 1..FRAME_HEADER + 9].copy_from_slice(&first.to_le_bytes());
        seal_frame(&mut buf);
        let at = file.used;
        // It fits: the file was replaced above by one with room for the frame.
        let Some(place) = file.map.get_mut(at..at + buf.len()) else {
            return Err(journal_err("appending", "the frame does not fit in its file"));
        };
        place.copy_from_slice(&buf);
        file.used += buf.len();
        p.appended = last;
        let was_empty = p.waiting == 0;
        p.frames.extend_from_slice(&buf);
        p.waiting += events.len();
        // The mover sleeps while nothing waits, and otherwise only until its next move is due.
        let wake = was_empty || p.waiting >= INGEST_RECORDS;
        drop(appends);
        if wake {
            self.shared.changed.notify_all();
        }
        // A full file is unmapped outside the lock.
        drop(full);
        Ok(())
    }

    /// Waits until every record appended so far is moved.
    pub fn sync(&self) -> Result<()> {
        let mut a = self.shared.appends();
        let target = a.pending.appended;
        if a.pending.ingested < target {
            a.pending.hurry = true;
            self.shared.changed.notify_all();
        }
        while a.pending.ingested < target {
            if a.pending.failing {
                return Err(Error::unavailable(
                    "the audit log cannot be written to the database right now; try again shortly",
                ));
            }
            a = self
                .shared
                .changed
                .wait_timeout(a, Duration::from_millis(50))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        Ok(())
    }

    /// Moves what is left, stops the mover, and removes the journal's files once everything in
    /// them is moved. Appends after this fail.
    pub fn close(&self) {
        // Under the appends' lock, so that no append is half done, and so that the mover, which
        // reads it there before it waits, cannot miss the wake-up.
        let current = {
            let a = self.shared.appends();
            self.shared.stop.store(true, Ordering::SeqCst);
            a.file.number
        };
        self.shared.changed.notify_all();
        let handle = self.mover.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(h) = handle else { return };
        let _ = h.join();
        let prepared = self.shared.next().take();
        if let Some(file) = prepared
            && let Err(e) = std::fs::remove_file(&file.path)
        {
            tracing::warn!(error = %e, path = %file.path.display(), "removing an audit journal file failed");
        }
        let moved = {
            let p = &self.shared.appends().pending;
            p.waiting == 0 && p.ingested >= p.appended
        };
        if moved {
            remove_moved_files(&self.shared);
            let path = self.shared.file_path(current);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(error = %e, path = %path.display(), "removing an audit journal file failed");
            }
        }
    }
}

impl Drop for AuditJournal {
    fn drop(&mut self) {
        self.close();
    }
}

/// Legacy journal records go back into `audit_log`, as the version that wrote them did.
fn insert_legacy(conn: &mut rusqlite::Connection, records: &[(i64, AuditEvent)]) -> Result<()> {
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
        last_reads(&tx, records.iter().map(|(_, e)| e.view()))?;
    }
    tx.commit().map_err(|e| journal_err("committing", e))
}

fn last_reads<'a>(tx: &rusqlite::Transaction<'_>, records: impl IntoIterator<Item = AuditEventRef<'a>>) -> Result<()> {
    let mut upsert =
        tx.prepare_cached(super::LAST_READ_UPSERT).map_err(|e| journal_err("preparing the last-read update", e))?;
    for r in crate::rules::last_reads_in(records) {
        upsert
            .execute(rusqlite::params![r.workspace_id, r.secret_name, r.agent_id, r.at])
            .map_err(|e| journal_err("updating last reads", e))?;
    }
    Ok(())
}

/// Moves records (in sequence order) into one segment per workspace, in one transaction that
/// also brings last reads and the `audit_moved` position up to date.
fn insert(conn: &mut rusqlite::Connection, records: &[(i64, AuditEventRef<'_>)]) -> Result<()> {
    let Some((last, newest)) = records.last() else { return Ok(()) };
    // Usually every record is of one workspace: then they are not copied into groups.
    let mut by_workspace: BTreeMap<&str, Vec<(i64, AuditEventRef<'_>)>> = BTreeMap::new();
    let mut groups: Vec<(&str, &[(i64, AuditEventRef<'_>)])> = Vec::new();
    if records.iter().all(|(_, e)| e.workspace_id == newest.workspace_id) {
        groups.push((newest.workspace_id, records));
    } else {
        for (seq, e) in records {
            by_workspace.entry(e.workspace_id).or_default().push((*seq, *e));
        }
        groups.extend(by_workspace.iter().map(|(ws, records)| (*ws, records.as_slice())));
    }
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| journal_err("beginning a transaction", e))?;
    {
        let mut segment = tx
            .prepare_cached(audit_segment::INSERT_SEGMENT)
            .map_err(|e| journal_err("preparing the segment insert", e))?;
        let mut key = tx
            .prepare_cached(audit_segment::INSERT_KEY)
            .map_err(|e| journal_err("preparing the segment key insert", e))?;
        let mut block = Vec::new();
        for (workspace, records) in groups {
            block.clear();
            let s = audit_segment::encode(records.iter().copied(), &mut block);
            segment
                .execute(rusqlite::params![s.first_seq, workspace, s.last_seq, s.min_at, s.max_at, s.records, block])
                .map_err(|e| journal_err("inserting a segment", e))?;
            for k in audit_segment::index_keys(records.iter().map(|(_, e)| *e)) {
                key.execute(rusqlite::params![workspace, k, s.first_seq])
                    .map_err(|e| journal_err("inserting a segment key", e))?;
            }
        }
        last_reads(&tx, records.iter().map(|(_, e)| *e))?;
        tx.execute("UPDATE counters SET value = MAX(value, $1) WHERE name = 'audit_moved'", [last])
            .map_err(|e| journal_err("recording the moved position", e))?;
    }
    tx.commit().map_err(|e| journal_err("committing", e))
}

/// The mover thread: waits for records (at most [`INGEST_EVERY`], less when many wait or the log
/// is queried), moves them in one transaction, and deletes journal files whose records are all
/// moved.
fn move_records(shared: &Shared, mut conn: rusqlite::Connection) {
    let mut last_move = Instant::now();
    // The frames moved last time, emptied: appends fill it next, without growing a new one.
    let mut spare = Vec::new();
    loop {
        let (mut batch, count) = {
            let mut a = shared.appends();
            loop {
                let stopping = shared.stop.load(Ordering::SeqCst);
                if a.pending.waiting == 0 {
                    if stopping {
                        return;
                    }
                    a = shared.changed.wait(a).unwrap_or_else(|e| e.into_inner());
                    continue;
                }
                let due = last_move.elapsed() >= INGEST_EVERY;
                if stopping || due || a.pending.hurry || a.pending.waiting >= INGEST_RECORDS {
                    break;
                }
                let left = INGEST_EVERY.saturating_sub(last_move.elapsed());
                a = shared.changed.wait_timeout(a, left).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
            }
            let p = &mut a.pending;
            p.hurry = false;
            (std::mem::replace(&mut p.frames, std::mem::take(&mut spare)), std::mem::take(&mut p.waiting))
        };
        last_move = Instant::now();
        let mut last = 0;
        let result = views_of(&batch, count)
            .map_err(|e| {
                // The frames are this process's own, so this is a defect; the records stay
                // durable in the journal's files, and the next start replays them.
                journal_err("reading back the records to move (they stay in the journal's files)", e)
            })
            .and_then(|records| {
                last = records.last().map_or(0, |(seq, _)| *seq);
                insert(&mut conn, &records)
            });
        {
            let p = &mut shared.appends().pending;
            match &result {
                Ok(()) => {
                    p.ingested = p.ingested.max(last);
                    p.failing = false;
                }
                Err(e) => {
                    tracing::error!(error = %e, records = count, "moving audit records into the database failed; retrying");
                    p.failing = true;
                    // Put them back in front: nothing is dropped.
                    let newer = std::mem::replace(&mut p.frames, std::mem::take(&mut batch));
                    p.frames.extend_from_slice(&newer);
                    p.waiting += count;
                }
            }
        }
        shared.changed.notify_all();
        if result.is_ok() {
            remove_moved_files(shared);
            if !shared.stop.load(Ordering::SeqCst) {
                prepare_next(shared);
            }
            batch.clear();
            // Kept unless a backlog grew it far past a usual move.
            if batch.capacity() <= SPARE_FRAMES_BYTES {
                spare = batch;
            }
        } else {
            // Stopping: what was not moved stays in the journal's files (the stop leaves them),
            // and the next start replays it.
            if shared.stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Deletes the full journal files whose records are all moved.
fn remove_moved_files(shared: &Shared) {
    let ingested = shared.appends().pending.ingested;
    let mut retired = shared.retired();
    retired.retain(|(number, last)| {
        if *last > ingested {
            return true;
        }
        let path = shared.file_path(*number);
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(error = %e, path = %path.display(), "removing an audit journal file failed");
        }
        false
    });
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn event(i: i64) -> AuditEvent {
        AuditEvent::new(i, "ws_1", Actor::ApiKey("key_1".into()), Action::SecretRead, Outcome::Success)
            .secret("stripe_api_key")
            .agent("agt_1")
            .detail(format!("version={i}"))
    }

    /// A batch frame as `append` writes it.
    pub(super) fn batch(first: i64, events: &[AuditEvent], out: &mut Vec<u8>) {
        let mut body = vec![BATCH];
        body.extend_from_slice(&first.to_le_bytes());
        audit_segment::encode((0..).zip(events.iter().map(AuditEvent::view)), &mut body);
        frame(&body, out);
    }

    /// A record as journals written before segments hold it.
    pub(super) fn legacy(seq: i64, e: &AuditEvent, out: &mut Vec<u8>) {
        let row = (
            seq,
            e.at,
            &e.workspace_id,
            e.actor.kind(),
            e.actor.id(),
            e.action.as_str(),
            e.outcome.as_str(),
            &e.secret_name,
            &e.agent_id,
            &e.target_id,
            &e.detail,
        );
        frame(&serde_json::to_vec(&row).unwrap(), out);
    }

    #[test]
    fn batches_and_legacy_records_round_trip_and_a_torn_tail_is_dropped() {
        let mut buf = Vec::new();
        legacy(1, &event(1), &mut buf);
        let first_frame = buf.len();
        batch(2, &[event(2), event(3)], &mut buf);
        batch(4, &[event(4)], &mut buf);
        let whole = decode_all(&buf);
        assert_eq!(whole.legacy, vec![(1, event(1))]);
        assert_eq!(whole.batches, vec![(2, event(2)), (3, event(3)), (4, event(4))]);
        // Cut in the middle of the last frame: the others survive.
        assert_eq!(decode_all(&buf[..buf.len() - 5]).batches.len(), 2);
        // A flipped byte in the second frame ends the replay there.
        let mut bad = buf.clone();
        bad[first_frame + 12] ^= 0x55;
        let replay = decode_all(&bad);
        assert_eq!((replay.legacy.len(), replay.batches.len()), (1, 0));
        assert_eq!(decode_all(&[1, 2, 3]), Replay::default());
    }

    #[test]
    fn the_mover_reads_its_frames_back_and_refuses_what_it_did_not_write() {
        let mut frames = Vec::new();
        batch(2, &[event(2), event(3)], &mut frames);
        batch(4, &[event(4)], &mut frames);
        let expected: Vec<_> = [(2, event(2)), (3, event(3)), (4, event(4))].into_iter().collect();
        let read = views_of(&frames, 3).unwrap();
        assert_eq!(read.iter().map(|(s, e)| (*s, e.to_event())).collect::<Vec<_>>(), expected);
        // A count that does not match, a torn frame, a legacy frame: damage, not a short move.
        assert!(views_of(&frames, 4).is_err());
        assert!(views_of(&frames[..frames.len() - 1], 3).is_err());
        let mut with_legacy = frames.clone();
        legacy(5, &event(5), &mut with_legacy);
        assert!(views_of(&with_legacy, 4).is_err());
        assert_eq!(views_of(&[], 0).map(|v| v.len()), Ok(0));
    }
}

#[cfg(test)]
mod recovery_tests {
    use agentvault_core::audit::AuditFilter;

    use super::tests::{batch, legacy};
    use super::*;
    use crate::{SqliteStore, Store};

    fn event(i: i64) -> AuditEvent {
        AuditEvent::new(1_000 + i, "ws_r", Actor::ApiKey("key_r".into()), Action::SecretRead, Outcome::Success)
            .secret("k")
            .agent("agt_r")
    }

    /// A store opened in a new temporary directory: the directory, the database's path, the
    /// journal's prefix and the store.
    async fn opened() -> (tempfile::TempDir, PathBuf, PathBuf, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("agentvault.db");
        let prefix = dir.path().join("agentvault.db-audit-journal");
        let store = SqliteStore::open(&db).await.unwrap();
        (dir, db, prefix, store)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_journal_left_by_a_crash_is_replayed_once() {
        let (_dir, db, prefix, store) = opened().await;
        store.append_audit(vec![event(1)]).await.unwrap();
        store.close().await;
        drop(store);

        // What a killed process leaves: a file with record 1 again (moved already, as a file
        // not yet deleted would hold it), records 2..=4, and a torn batch. Beside it, a file
        // from a version before segments, with one record already in `audit_log` and one not.
        let mut bytes = Vec::new();
        let first_seq = 1; // the sequence number record 1 got above
        batch(first_seq, &[event(1)], &mut bytes);
        batch(first_seq + 1, &[event(2), event(3), event(4)], &mut bytes);
        let mut torn = Vec::new();
        batch(first_seq + 4, &[event(5), event(5)], &mut torn);
        bytes.extend_from_slice(&torn[..torn.len() / 2]);
        std::fs::write(file_path(&prefix, 7), &bytes).unwrap();

        let store = SqliteStore::open(&db).await.unwrap();
        let filter = AuditFilter { limit: 100, ..AuditFilter::default() };
        let records = store.list_audit("ws_r", &filter).await.unwrap();
        let ats: Vec<i64> = records.iter().map(|r| r.event.at).collect();
        assert_eq!(ats, vec![1_004, 1_003, 1_002, 1_001], "each intact record once, the torn ones dropped");
        let seqs: Vec<i64> = records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![4, 3, 2, 1]);
        assert!(!file_path(&prefix, 7).exists(), "replayed files are removed");
        // New records continue after the replayed ones, in a new file.
        store.append_audit(vec![event(6)]).await.unwrap();
        let records = store.list_audit("ws_r", &filter).await.unwrap();
        assert_eq!((records[0].event.at, records[0].seq), (1_006, 5));
        assert!(file_path(&prefix, 8).exists());
        store.close().await;
        drop(store);

        // A journal of the previous version: its records become rows again, once.
        let mut old = Vec::new();
        legacy(30, &event(30), &mut old); // moved by that version already: kept once
        legacy(40, &event(40), &mut old);
        std::fs::write(file_path(&prefix, 9), &old).unwrap();
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute(
            "INSERT INTO audit_log (seq, at, workspace_id, actor_type, actor_id, action, outcome) \
             VALUES (30, 1030, 'ws_r', 'api_key', 'key_r', 'secret.read', 'success')",
            [],
        )
        .unwrap();
        drop(conn);
        let store = SqliteStore::open(&db).await.unwrap();
        let records = store.list_audit("ws_r", &filter).await.unwrap();
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![40, 30, 5, 4, 3, 2, 1]);
        // Numbers continue after the highest one anywhere.
        store.append_audit(vec![event(41)]).await.unwrap();
        let records = store.list_audit("ws_r", &filter).await.unwrap();
        assert_eq!(records[0].seq, 41);
        store.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stop_while_moves_fail_leaves_the_records_to_the_next_start() {
        let (_dir, db, prefix, store) = opened().await;
        // From now on every move fails: its table is gone.
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute("ALTER TABLE audit_segments RENAME TO audit_segments_away", []).unwrap();
        // The append is the journal's own write: it succeeds, durable in the file.
        store.append_audit(vec![event(1)]).await.unwrap();
        // The stop returns (the mover does not retry forever) and leaves the file. (On a thread of
        // its own: the stop joins the mover, blocking.)
        let (stopped, done) = std::sync::mpsc::channel();
        let runtime = tokio::runtime::Handle::current();
        std::thread::spawn(move || {
            runtime.block_on(store.close());
            let _ = stopped.send(());
        });
        done.recv_timeout(Duration::from_secs(20)).expect("the stop returns");
        assert_eq!(journal_files(&prefix).len(), 1, "the records not moved stay in the journal");
        conn.execute("ALTER TABLE audit_segments_away RENAME TO audit_segments", []).unwrap();
        drop(conn);
        let store = SqliteStore::open(&db).await.unwrap();
        let filter = AuditFilter { limit: 10, ..AuditFilter::default() };
        let records = store.list_audit("ws_r", &filter).await.unwrap();
        assert_eq!(records.iter().map(|r| r.event.at).collect::<Vec<_>>(), vec![1_001], "moved at the next start");
        store.close().await;
    }

    fn journal_files(prefix: &Path) -> Vec<u64> {
        files_on_disk(prefix).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_fill_allocated_files_in_turn_and_a_clean_stop_leaves_none() {
        let (_dir, db, prefix, store) = opened().await;
        let first = journal_files(&prefix);
        assert_eq!(first.len(), 1);
        let meta = std::fs::metadata(file_path(&prefix, first[0])).unwrap();
        assert_eq!(meta.len(), FILE_BYTES as u64, "a journal file is created whole");
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 >= FILE_BYTES as u64, "and its blocks are allocated, not sparse");

        // One record at a time, as reads append them: several files' worth.
        let n = 6_000;
        for i in 1..=n {
            store.append_audit(vec![event(i)]).await.unwrap();
        }
        // What the files hold now is what a crash would leave: every record not yet moved. (The
        // newest file first: the mover may remove the oldest ones meanwhile, never a newer one
        // before an older one.)
        let mut on_disk = Vec::new();
        for f in journal_files(&prefix).iter().rev() {
            let Ok(bytes) = std::fs::read(file_path(&prefix, *f)) else { break };
            let seqs: Vec<i64> = decode_all(&bytes).batches.into_iter().map(|(seq, _)| seq).collect();
            on_disk.splice(0..0, seqs);
        }
        assert_eq!(on_disk.windows(2).filter(|w| w[1] != w[0] + 1).count(), 0, "in order, no gap: {on_disk:?}");
        assert_eq!(on_disk.last(), Some(&n), "the last record appended is in the journal");
        let filter = AuditFilter { limit: 3, ..AuditFilter::default() };
        let records = store.list_audit("ws_r", &filter).await.unwrap();
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![n, n - 1, n - 2]);
        // Once moved, the full files go; the one being appended to stays. And the mover has the
        // next file ready.
        let prepared = || -> Vec<String> {
            names_on_disk(&prefix).unwrap().into_iter().filter(|n| n.starts_with(PREPARED)).collect()
        };
        let (mut left, mut ready) = (journal_files(&prefix), prepared());
        for _ in 0..100 {
            if left.len() == 1 && ready.len() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            (left, ready) = (journal_files(&prefix), prepared());
        }
        assert_eq!(left.len(), 1, "full files whose records are moved are removed: {left:?}");
        assert!(left[0] > first[0], "appends moved on to new files");
        assert_eq!(ready.len(), 1, "{ready:?}");
        let at = left[0];
        let mut i = 0;
        while journal_files(&prefix).last() == Some(&at) {
            i += 1;
            store.append_audit(vec![event(n + i)]).await.unwrap();
        }
        assert!(!prepared().contains(&ready[0]), "the prepared file became file {}", at + 1);
        assert_eq!(std::fs::metadata(file_path(&prefix, at + 1)).unwrap().len(), FILE_BYTES as u64);
        let n = n + i;
        // The file being appended to as a crash would leave it: allocated whole, zeros after its
        // last frame (replayed below).
        let left_by_crash = std::fs::read(file_path(&prefix, at + 1)).unwrap();
        assert_eq!(decode_all(&left_by_crash).batches.last().map(|(seq, _)| *seq), Some(n));

        // A batch larger than a file gets a file that fits it.
        let big: Vec<AuditEvent> =
            (0..5_000).map(|i| event(n + 1 + i).detail(format!("a detail long enough to spread {i}"))).collect();
        store.append_audit(big).await.unwrap();
        let newest = *journal_files(&prefix).last().unwrap();
        assert!(std::fs::metadata(file_path(&prefix, newest)).unwrap().len() > FILE_BYTES as u64);
        let records = store.list_audit("ws_r", &filter).await.unwrap();
        assert_eq!(records[0].seq, n + 5_000);

        // A clean stop moves everything and leaves no journal; an append after it is refused.
        store.close().await;
        assert_eq!(names_on_disk(&prefix).unwrap(), Vec::<String>::new());
        let refused = store.append_audit(vec![event(0)]).await.unwrap_err();
        assert!(refused.to_string().contains("closed"), "{refused}");
        drop(store);
        // A file prepared by a process that was killed is removed at the next start, and a
        // journal file with records already moved is replayed without adding them again.
        std::fs::write(prepared_path(&prefix, 3), [0; 64]).unwrap();
        std::fs::write(file_path(&prefix, 99), &left_by_crash).unwrap();
        let store = SqliteStore::open(&db).await.unwrap();
        let records = store.list_audit("ws_r", &filter).await.unwrap();
        let top: Vec<i64> = records.iter().map(|r| r.seq).collect();
        assert_eq!(top, vec![n + 5_000, n + 4_999, n + 4_998], "nothing lost, nothing added at the restart");
        assert!(!file_path(&prefix, 99).exists());
        assert_eq!(prepared(), Vec::<String>::new());
        store.close().await;
    }
}

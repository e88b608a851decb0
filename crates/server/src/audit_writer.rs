//! The audit writer for agent reads: group commit without a writer thread.
//!
//! A read is answered only once its audit record is committed. Records queue in memory, in the
//! open batch. A record queued while no committer runs starts one: a task of its own (a request
//! whose client goes away takes no record with it), which runs next on the same worker thread
//! once the request waits (no hand-off to another thread, which costs more than the commit on an
//! idle machine). The committer lets requests that are ready to run join the batch, commits it,
//! and goes on with the records queued meanwhile, one batch at a time, until the queue is empty.
//! Each request waits for its own batch and is woken once, when that batch is finished: none is
//! woken for a batch that is not its own, and none has to lead one. Under load, batches grow by
//! themselves and one commit serves many requests.
//!
//! Where the store's append is one local write (SQLite's journal: a copy into its mapped file
//! under a lock, no round trip), a record the caller waits for is appended by the request itself
//! instead: no queue, no committer, no wake-up of other tasks, and the journal's lock orders the
//! records.
//!
//! Mutations do not come through here: their audit record is written in the same transaction
//! as the change itself.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use agentvault_core::audit::{AuditEvent, AuditEventRef};
use agentvault_core::{Error, Result};
use agentvault_store::Store;
use tokio::sync::Notify;

use crate::metrics::Metrics;

/// How many times the committer yields to let ready requests join a batch, at most.
const MAX_JOIN_ROUNDS: usize = 32;
/// It takes the batch after this many yields in a row brought no new record.
const QUIET_ROUNDS: usize = 4;

/// What became of a batch.
const OPEN: u8 = 0;
const COMMITTED: u8 = 1;
const FAILED: u8 = 2;

/// A batch of records; the requests of its records wait on it.
#[derive(Default)]
struct Batch {
    outcome: AtomicU8,
    finished: Notify,
}

impl Batch {
    /// Waits until the batch is finished; true if it was committed.
    async fn wait(&self) -> bool {
        loop {
            let finished = self.finished.notified();
            tokio::pin!(finished);
            // Registered before the outcome is read, so no wake-up is missed.
            finished.as_mut().enable();
            match self.outcome.load(Ordering::Acquire) {
                OPEN => finished.await,
                outcome => return outcome == COMMITTED,
            }
        }
    }

    fn finish(&self, committed: bool) {
        self.outcome.store(if committed { COMMITTED } else { FAILED }, Ordering::Release);
        self.finished.notify_waiters();
    }
}

#[derive(Default)]
struct State {
    /// Records waiting for the next commit; they belong to `open`.
    queue: Vec<AuditEvent>,
    /// The batch the queued records will be committed in.
    open: Arc<Batch>,
    /// The batch being committed now, if any.
    committing: Option<Arc<Batch>>,
    /// Whether the committer is started: it runs until it finds the queue empty.
    running: bool,
}

struct Inner {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    /// Records waited for are appended by their own request (see the module's documentation).
    direct: bool,
    /// Whether the last append was written.
    healthy: AtomicBool,
}

impl Inner {
    /// Counts an append of `records` (a batch, or a request's own record) and notes whether the
    /// log is healthy. The flag is written only when it changes: on SQLite every read comes
    /// here, on every core.
    fn appended(&self, records: usize, ok: bool) {
        self.metrics.audit_batch(records, ok);
        if self.healthy.load(Ordering::Relaxed) != ok {
            self.healthy.store(ok, Ordering::Relaxed);
        }
    }
}

#[derive(Clone)]
pub struct AuditWriter {
    inner: Arc<Inner>,
}

fn unavailable() -> Error {
    Error::unavailable("the audit log cannot be written right now, so the request was refused; try again shortly")
}

impl AuditWriter {
    pub fn new(store: Arc<dyn Store>, metrics: Arc<Metrics>) -> AuditWriter {
        let direct = store.appends_audit_locally();
        AuditWriter {
            inner: Arc::new(Inner {
                store,
                metrics,
                state: Mutex::new(State::default()),
                direct,
                healthy: AtomicBool::new(true),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a record; returns its batch and whether the caller must start the committer.
    fn enqueue(&self, event: AuditEvent) -> (Arc<Batch>, bool) {
        let mut s = self.state();
        s.queue.push(event);
        let start = !std::mem::replace(&mut s.running, true);
        (s.open.clone(), start)
    }

    /// Appends a record and waits until it is committed. Fails (and the caller must not hand
    /// out anything) if the record could not be written.
    pub async fn append(&self, event: AuditEvent) -> Result<()> {
        if self.inner.direct {
            return self.append_here(event.view());
        }
        self.append_queued(event).await
    }

    /// [`AuditWriter::append`] of a record's borrowed fields: where the store appends locally,
    /// no string of the record is copied.
    pub async fn append_ref(&self, event: AuditEventRef<'_>) -> Result<()> {
        if self.inner.direct {
            return self.append_here(event);
        }
        self.append_queued(event.to_event()).await
    }

    /// Whether records are appended on the request's own thread, without waiting (SQLite's
    /// journal): [`AuditWriter::append_here`] then writes them.
    pub fn appends_here(&self) -> bool {
        self.inner.direct
    }

    /// Appends a record on the request's own thread (see the module's documentation), where
    /// [`AuditWriter::appends_here`]. A store that cannot refuses it, and so does this.
    pub fn append_here(&self, event: AuditEventRef<'_>) -> Result<()> {
        let result = self.inner.store.append_audit_now(&[event]);
        self.inner.appended(1, result.is_ok());
        result.map_err(|e| {
            tracing::error!(error = %e, "audit append failed");
            unavailable()
        })
    }

    async fn append_queued(&self, event: AuditEvent) -> Result<()> {
        let (batch, start) = self.enqueue(event);
        if start {
            self.spawn_committer();
        }
        if batch.wait().await { Ok(()) } else { Err(unavailable()) }
    }

    /// Appends a record without waiting for its commit (for denials: nothing is handed out).
    /// It is committed with the next batch, or by a committer started here.
    pub fn append_nowait(&self, event: AuditEvent) {
        if self.enqueue(event).1 {
            self.spawn_committer();
        }
    }

    /// Waits until every record queued so far is finished (used at shutdown). Batches are
    /// committed one after another, so the last one finishes last.
    pub async fn flush(&self) {
        let last = {
            let s = self.state();
            if s.queue.is_empty() { s.committing.clone() } else { Some(s.open.clone()) }
        };
        if let Some(batch) = last {
            batch.wait().await;
        }
    }

    /// Whether the last append was written.
    pub fn is_healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Relaxed)
    }

    /// Started by the request that queues a record while none runs: its task runs next on the
    /// same worker thread, once the request waits.
    fn spawn_committer(&self) {
        let writer = self.clone();
        tokio::spawn(async move { writer.commit_all().await });
    }

    /// Yields until the queue stops growing: a few rounds in a row without a new record, or one
    /// round when a single record waits alone (latency first), or at most [`MAX_JOIN_ROUNDS`].
    async fn let_ready_requests_join(&self) {
        let mut queued = self.state().queue.len();
        let mut quiet = 0;
        for _ in 0..MAX_JOIN_ROUNDS {
            tokio::task::yield_now().await;
            let now = self.state().queue.len();
            if now == queued {
                quiet += 1;
                if quiet >= QUIET_ROUNDS || now == 1 {
                    return;
                }
            } else {
                quiet = 0;
            }
            queued = now;
        }
    }

    /// The committer: commits the queue as one batch, again and again, until it finds the queue
    /// empty. Before it takes a batch it lets requests that are ready to run join it (a yield
    /// costs about a microsecond when nothing else is runnable). If its task ends midway (a
    /// panic in the store, or the runtime shutting down), the batch in hand fails and a new
    /// committer takes over the queue.
    async fn commit_all(&self) {
        let mut running = Running { writer: self.clone(), batch: None, stopped: false };
        loop {
            self.let_ready_requests_join().await;
            let events = {
                let mut s = self.state();
                if s.queue.is_empty() {
                    s.running = false;
                    s.committing = None;
                    running.stopped = true;
                    return;
                }
                let batch = std::mem::take(&mut s.open);
                s.committing = Some(batch.clone());
                running.batch = Some(batch);
                std::mem::take(&mut s.queue)
            };
            let records = events.len();
            let result = self.inner.store.append_audit(events).await;
            self.inner.appended(records, result.is_ok());
            if let Err(e) = &result {
                tracing::error!(error = %e, records, "audit append failed");
            }
            if let Some(batch) = running.batch.take() {
                batch.finish(result.is_ok());
            }
        }
    }
}

/// Held by the committer. If its task ends before the committer stopped (a panic in the store, or
/// the runtime shutting down), fails the batch in hand (its requests learn that their records
/// may not be written) and starts a new committer for what is queued.
struct Running {
    writer: AuditWriter,
    batch: Option<Arc<Batch>>,
    stopped: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        if let Some(batch) = self.batch.take() {
            self.writer.inner.appended(0, false);
            batch.finish(false);
        }
        // Without a runtime (the process is ending) no committer can start; nothing waits then.
        let can_restart = tokio::runtime::Handle::try_current().is_ok();
        let restart = {
            let mut s = self.writer.state();
            s.committing = None;
            s.running = can_restart && !s.queue.is_empty();
            s.running
        };
        if restart {
            self.writer.spawn_committer();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::future::Future;
    use std::task::Poll;
    use std::time::Duration;

    use agentvault_core::audit::{Action, AuditFilter, Outcome};
    use agentvault_core::model::Actor;
    use agentvault_store::SqliteStore;

    use super::*;

    fn read(n: usize) -> AuditEvent {
        let mut e = AuditEvent::new(
            1_700_000_000_000,
            "ws_1",
            Actor::ApiKey("key_1".into()),
            Action::SecretRead,
            Outcome::Success,
        )
        .secret("stripe_api_key");
        e.detail = Some(format!("read {n}"));
        e
    }

    /// How many times each record's detail is in the workspace's audit log.
    async fn listed(store: &dyn Store) -> BTreeMap<String, usize> {
        let filter = AuditFilter { limit: 10_000, ..AuditFilter::default() };
        let mut seen = BTreeMap::new();
        for r in store.list_audit("ws_1", &filter).await.unwrap() {
            *seen.entry(r.event.detail.unwrap_or_default()).or_default() += 1;
        }
        seen
    }

    // The queued path serves the backends whose append is a round trip; SQLite's store takes it
    // the same way (it is what `append_nowait` uses on every backend).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_queued_record_is_committed_once_in_batches_and_its_request_answered() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("a.db")).await.unwrap());
        let metrics = Arc::new(Metrics::new());
        let writer = AuditWriter::new(store.clone(), metrics);
        let tasks: Vec<_> = (0..400)
            .map(|n| {
                let writer = writer.clone();
                tokio::spawn(async move { writer.append_queued(read(n)).await })
            })
            .collect();
        let all = async {
            for t in tasks {
                t.await.unwrap().unwrap();
            }
            for n in 400..450 {
                writer.append_nowait(read(n));
            }
            writer.flush().await;
        };
        tokio::time::timeout(Duration::from_secs(30), all).await.expect("every request was answered");
        let seen = listed(&*store).await;
        assert_eq!(seen.len(), 450, "every record is in the log");
        assert!(seen.values().all(|&c| c == 1), "no record twice");
        let s = writer.state();
        assert!(
            s.queue.is_empty() && s.committing.is_none() && !s.running,
            "the committer stopped when the queue was empty"
        );
    }

    // One thread: the committer cannot run before the request has been dropped.
    #[tokio::test(flavor = "current_thread")]
    async fn a_request_cancelled_while_it_waits_loses_no_record() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("a.db")).await.unwrap());
        let writer = AuditWriter::new(store.clone(), Arc::new(Metrics::new()));
        // The first poll queues the record and starts the committer, which has not run yet; the
        // request's future is then dropped (its client went away).
        let mut request = Box::pin(writer.append_queued(read(1)));
        let first = std::future::poll_fn(|cx| Poll::Ready(request.as_mut().poll(cx))).await;
        assert!(first.is_pending(), "the request waits for its batch");
        {
            let s = writer.state();
            assert!(s.running && s.committing.is_none() && s.queue.len() == 1);
        }
        drop(request);
        tokio::time::timeout(Duration::from_secs(10), writer.flush()).await.expect("the record is committed");
        // The next record is committed too: the committer is not left marked as running.
        tokio::time::timeout(Duration::from_secs(10), writer.append_queued(read(2)))
            .await
            .expect("a committer runs for the next record")
            .unwrap();
        let seen = listed(&*store).await;
        assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), ["read 1", "read 2"]);
    }
}

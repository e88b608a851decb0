//! The audit writer for agent reads: group commit without a writer thread.
//!
//! A read is answered only once its audit record is committed. Records queue in memory; the
//! first request that finds no commit in progress becomes the leader: it takes the whole queue
//! and commits it as one batch, on a task of its own (so that a cancelled leader loses nothing),
//! while requests arriving meanwhile queue up for the next batch and wait. With one request at a
//! time every request leads; the commit task runs next on the same worker thread (no hand-off
//! to another thread, which costs more than the commit on an idle machine). Under load, batches
//! grow by themselves and one commit serves many requests.
//!
//! Where the store's append is one local write (SQLite's journal: a `write()` under a lock, no
//! round trip), a record the caller waits for is appended by the request itself instead: no
//! queue, no leader, no wake-up of other tasks, and the journal's lock orders the records.
//!
//! Mutations do not come through here: their audit record is written in the same transaction
//! as the change itself.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use agentvault_core::audit::{AuditEvent, AuditEventRef};
use agentvault_core::{Error, Result};
use agentvault_store::Store;
use tokio::sync::Notify;

use crate::metrics::Metrics;

/// Failed batches remembered so that their waiters learn of the failure.
const FAILED_BATCHES_KEPT: usize = 64;
/// How many times a leader yields to let ready requests join its batch, at most.
const MAX_JOIN_ROUNDS: usize = 32;
/// A leader commits after this many yields in a row brought no new record.
const QUIET_ROUNDS: usize = 4;

#[derive(Default)]
struct State {
    /// Records waiting for the next batch; their tickets are `committed..next_ticket`.
    queue: Vec<AuditEvent>,
    /// The ticket the next record gets.
    next_ticket: u64,
    /// Every ticket below this one is finished (committed or failed).
    committed: u64,
    /// Whether a leader is committing a batch now.
    leading: bool,
    /// Ticket ranges of recent batches that failed.
    failed: Vec<Range<u64>>,
}

struct Inner {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    finished: Notify,
    /// Records waited for are appended by their own request (see the module's documentation).
    direct: bool,
    /// Whether the last append was written.
    healthy: AtomicBool,
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
                finished: Notify::new(),
                direct,
                healthy: AtomicBool::new(true),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enqueue(&self, event: AuditEvent) -> u64 {
        let mut s = self.state();
        let ticket = s.next_ticket;
        s.next_ticket += 1;
        s.queue.push(event);
        ticket
    }

    /// Appends a record and waits until it is committed. Fails (and the caller must not hand
    /// out anything) if the record could not be written.
    pub async fn append(&self, event: AuditEvent) -> Result<()> {
        if self.inner.direct {
            return self.append_now(event.view());
        }
        self.append_queued(event).await
    }

    /// [`AuditWriter::append`] of a record's borrowed fields: where the store appends locally,
    /// no string of the record is copied.
    pub async fn append_ref(&self, event: AuditEventRef<'_>) -> Result<()> {
        if self.inner.direct {
            return self.append_now(event);
        }
        self.append_queued(event.to_event()).await
    }

    /// The request's own append (see the module's documentation).
    fn append_now(&self, event: AuditEventRef<'_>) -> Result<()> {
        let result = self.inner.store.append_audit_now(&[event]);
        self.inner.metrics.audit_batch(1, result.is_ok());
        self.inner.healthy.store(result.is_ok(), Ordering::Relaxed);
        result.map_err(|e| {
            tracing::error!(error = %e, "audit append failed");
            unavailable()
        })
    }

    async fn append_queued(&self, event: AuditEvent) -> Result<()> {
        let ticket = self.enqueue(event);
        self.wait_for(ticket + 1).await;
        let s = self.state();
        if s.failed.iter().any(|r| r.contains(&ticket)) { Err(unavailable()) } else { Ok(()) }
    }

    /// Appends a record without waiting for its commit (for denials: nothing is handed out).
    /// It is committed with the next batch, or by a task started here if no batch is coming.
    pub fn append_nowait(&self, event: AuditEvent) {
        let ticket = self.enqueue(event);
        let writer = self.clone();
        tokio::spawn(async move { writer.wait_for(ticket + 1).await });
    }

    /// Waits until every record queued so far is finished (used at shutdown).
    pub async fn flush(&self) {
        let end = self.state().next_ticket;
        self.wait_for(end).await;
    }

    /// Whether the last append was written.
    pub fn is_healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Relaxed)
    }

    /// Waits until every ticket below `end` is finished, leading batches as needed.
    async fn wait_for(&self, end: u64) {
        loop {
            let finished = self.inner.finished.notified();
            tokio::pin!(finished);
            // Registered before the state is read, so no wake-up is missed.
            finished.as_mut().enable();
            let lead = {
                let mut s = self.state();
                if s.committed >= end {
                    return;
                }
                !std::mem::replace(&mut s.leading, true)
            };
            if lead {
                self.lead().await;
            } else {
                finished.await;
            }
        }
    }

    /// Commits the queue as one batch. First it lets requests that are ready to run join the
    /// batch (a yield costs about a microsecond when nothing else is runnable); then it commits,
    /// on a task of its own: a leading request cancelled midway (its client went away) takes no
    /// record with it and strands no waiter.
    async fn lead(&self) {
        let mut guard = LeaderGuard { writer: self.clone(), done: false };
        let mut queued = self.state().queue.len();
        let mut quiet = 0;
        for _ in 0..MAX_JOIN_ROUNDS {
            tokio::task::yield_now().await;
            let now = self.state().queue.len();
            if now == queued {
                quiet += 1;
                // Alone (a single record after a quiet round): commit now, latency first.
                if quiet >= QUIET_ROUNDS || now == 1 {
                    break;
                }
            } else {
                quiet = 0;
            }
            queued = now;
        }
        let batch = self.take_queue();
        guard.done = true;
        let (tickets, records) = (batch.tickets.clone(), batch.events.len());
        let writer = self.clone();
        if tokio::spawn(async move { writer.commit(batch).await }).await.is_err() {
            self.finish(tickets, records, Err(Error::internal("the audit commit stopped")));
        }
    }

    fn take_queue(&self) -> Batch {
        let mut s = self.state();
        Batch { tickets: s.committed..s.next_ticket, events: std::mem::take(&mut s.queue) }
    }

    async fn commit(&self, batch: Batch) {
        let records = batch.events.len();
        let result = self.inner.store.append_audit(batch.events).await;
        self.finish(batch.tickets, records, result);
    }

    fn finish(&self, tickets: Range<u64>, records: usize, result: Result<()>) {
        self.inner.metrics.audit_batch(records, result.is_ok());
        {
            let mut s = self.state();
            s.committed = s.committed.max(tickets.end);
            s.leading = false;
            self.inner.healthy.store(result.is_ok(), Ordering::Relaxed);
            if let Err(e) = &result {
                tracing::error!(error = %e, records, "audit append failed");
                s.failed.push(tickets);
                let excess = s.failed.len().saturating_sub(FAILED_BATCHES_KEPT);
                s.failed.drain(..excess);
            }
        }
        self.inner.finished.notify_waiters();
    }
}

struct Batch {
    tickets: Range<u64>,
    events: Vec<AuditEvent>,
}

/// Held by a leader until it has taken its batch; if the leader is dropped first, commits the
/// queue on a task of its own.
struct LeaderGuard {
    writer: AuditWriter,
    done: bool,
}

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let batch = self.writer.take_queue();
        let writer = self.writer.clone();
        tokio::spawn(async move { writer.commit(batch).await });
    }
}

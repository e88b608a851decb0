//! The audit writer: agent reads are appended through a queue that a single task drains in
//! batches, one statement per batch (group commit). A request waits until its record is
//! committed, so an answered read is always in the log, and auditing stays cheap because every
//! waiting request shares one commit.
//!
//! Mutations do not come through here: their audit record is written in the same transaction
//! as the change itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use agentvault_core::audit::AuditEvent;
use agentvault_core::{Error, Result};
use agentvault_store::Store;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

/// The most records written in one commit.
const MAX_BATCH: usize = 4_096;
/// Requests queue at most this many records before they wait for room (back-pressure).
const QUEUE: usize = 65_536;

struct Job {
    /// `None` is a barrier: acknowledged once everything queued before it is written.
    event: Option<AuditEvent>,
    ack: Option<oneshot::Sender<Result<()>>>,
}

#[derive(Clone)]
pub struct AuditWriter {
    tx: mpsc::Sender<Job>,
    healthy: Arc<AtomicBool>,
}

impl AuditWriter {
    /// Starts the writer task. It ends once every `AuditWriter` clone is dropped and the queue
    /// is drained; [`flush`](Self::flush) waits for what is queued.
    pub fn start(store: Arc<dyn Store>, metrics: Arc<Metrics>) -> AuditWriter {
        let (tx, rx) = mpsc::channel(QUEUE);
        let healthy = Arc::new(AtomicBool::new(true));
        tokio::spawn(run(store, rx, healthy.clone(), metrics));
        AuditWriter { tx, healthy }
    }

    /// Appends a record and waits until it is committed. Fails (and the caller must not answer
    /// with a value) if the record could not be written.
    pub async fn append(&self, event: AuditEvent) -> Result<()> {
        let (ack, done) = oneshot::channel();
        self.tx.send(Job { event: Some(event), ack: Some(ack) }).await.map_err(|_| unavailable())?;
        done.await.map_err(|_| unavailable())?
    }

    /// Appends a record without waiting for the commit (for denials, where nothing is handed out).
    pub async fn append_nowait(&self, event: AuditEvent) {
        if self.tx.send(Job { event: Some(event), ack: None }).await.is_err() {
            tracing::error!("the audit writer has stopped; a record was lost");
        }
    }

    /// Waits until every record queued so far is written (used at shutdown).
    pub async fn flush(&self) -> Result<()> {
        let (ack, done) = oneshot::channel();
        self.tx.send(Job { event: None, ack: Some(ack) }).await.map_err(|_| unavailable())?;
        done.await.map_err(|_| unavailable())?
    }

    /// Whether the last batch was written.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.tx.is_closed()
    }
}

fn unavailable() -> Error {
    Error::unavailable("the audit log cannot be written right now, so the request was refused; try again shortly")
}

async fn run(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Job>, healthy: Arc<AtomicBool>, metrics: Arc<Metrics>) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut events: Vec<AuditEvent> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        events.extend(jobs.iter().filter_map(|j| j.event.clone()));
        let result = if events.is_empty() { Ok(()) } else { store.append_audit(&events).await };
        metrics.audit_batch(events.len(), result.is_ok());
        healthy.store(result.is_ok(), Ordering::Relaxed);
        if let Err(e) = &result {
            tracing::error!(error = %e, records = events.len(), "audit append failed");
        }
        for job in jobs.drain(..) {
            if let Some(ack) = job.ack {
                let _ = ack.send(result.clone());
            }
        }
        events.clear();
    }
}

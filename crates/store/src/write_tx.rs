//! The write transaction both backends use: it holds the change number it took first, and
//! commits a change only with the audit records describing it and its row in the change feed.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicI64, Ordering};

use agentvault_core::audit::AuditEvent;
use sqlx::{Database, Transaction};

use crate::errors::DbResult;

/// What a backend adds to the shared commit.
pub(crate) trait Committer: Sync {
    type Db: Database;
    /// Inserts `audit`, numbered, inside the transaction.
    async fn insert_audit(&self, conn: &mut <Self::Db as Database>::Connection, audit: &[AuditEvent]) -> DbResult<()>;
    /// Records change `change` (its feed row, and any announcement) inside the transaction.
    async fn record_change(
        &self,
        conn: &mut <Self::Db as Database>::Connection,
        change: i64,
        audit: &[AuditEvent],
    ) -> DbResult<()>;
    /// The newest change this process committed, and the wake-up of its feed reader.
    fn committed(&self) -> (&AtomicI64, &tokio::sync::Notify);
}

/// A write transaction. Dropping it uncommitted rolls everything back.
pub(crate) struct WriteTx<'s, S: Committer> {
    pub(crate) tx: Transaction<'static, S::Db>,
    pub(crate) store: &'s S,
    /// This transaction's number in the change feed.
    pub(crate) change: i64,
}

impl<S: Committer> WriteTx<'_, S> {
    /// Appends `audit`, records the change and commits; this process's feed reader is woken.
    pub(crate) async fn commit(mut self, audit: &[AuditEvent]) -> DbResult<()> {
        self.store.insert_audit(&mut self.tx, audit).await?;
        self.store.record_change(&mut self.tx, self.change, audit).await?;
        self.tx.commit().await?;
        let (committed, changed) = self.store.committed();
        committed.fetch_max(self.change, Ordering::AcqRel);
        changed.notify_waiters();
        Ok(())
    }

    /// Commits a change with its one audit record.
    pub(crate) async fn commit_one(self, audit: &AuditEvent) -> DbResult<()> {
        self.commit(std::slice::from_ref(audit)).await
    }
}

impl<S: Committer> Deref for WriteTx<'_, S> {
    type Target = <S::Db as Database>::Connection;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl<S: Committer> DerefMut for WriteTx<'_, S> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

//! Group commit for SQLite's single writer connection.
//!
//! With `synchronous = FULL` every COMMIT waits for the disk, so one
//! transaction per write caps writes at one flush each. Instead, writes that
//! queue up while one runs share a transaction: each runs inside a savepoint
//! of its own (so a failed write rolls back alone), and a committer task
//! commits the batch once the writes queued so far have run. A write returns
//! only after the batch committed, so nothing is acknowledged before it is
//! durable; if the commit fails, every write in the batch gets the error.
//!
//! The writers' lock is FIFO: the committer queues behind the writes that
//! were already waiting, so the batch holds exactly the writes that arrived
//! while the previous one was busy, and a lone write commits at once.
//!
//! A write either gets a savepoint from sea-orm ([`GroupCommit::join`]), one
//! round trip to the connection's thread for each of its statements, or
//! brings its savepoint in its own statement text ([`GroupCommit::enter`])
//! and runs all of it in one.
//!
//! After some errors (a full disk, an I/O error) SQLite rolls back the whole
//! transaction on its own, savepoints and all, and the connection is back in
//! autocommit mode. A later SAVEPOINT would then open a transaction of its
//! own and its RELEASE commit it, outside the batch, and the batch's commit
//! would fail for writes that were in fact written (or, once sqlx's count of
//! open transactions has drifted, "commit" nothing at all). So a batch that
//! one of its writes left without committing is suspect: before the next
//! write joins it or the committer commits it, [`GroupCommit::check`] asks
//! SQLite whether the transaction is still open. If it is not, every write
//! of the batch is told it failed, and the connection goes back to the pool,
//! which replaces a connection whose state is not clean (see
//! `writer_is_clean` in `sea`).

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseConnection, DatabaseTransaction, DbErr, QueryResult,
    SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
};
use tokio::sync::{Mutex, Notify, OwnedMutexGuard, oneshot, watch};

use super::writer::is_storage_full;
use crate::repository::{RepoError, Revision};

/// Why a write in a batch was not committed; every write of the batch gets
/// the same one.
#[derive(Debug, Clone, thiserror::Error)]
pub(in crate::repository) enum BatchError {
    #[error("the write batch failed to commit")]
    Commit(#[source] Arc<DbErr>),
    #[error("SQLite rolled the write batch back after an error in one of its writes")]
    RolledBack,
    #[error("the server stopped before the write committed")]
    Stopped,
}

pub(in crate::repository) struct GroupCommit {
    batch: Arc<Mutex<Batch>>,
    /// Rung by every write as it leaves the batch.
    wake: Notify,
    /// The next revision, while a batch is open: read from the counter row
    /// when the batch opens (under its write lock, so no other process can
    /// write meanwhile) and stored back when it commits, instead of one
    /// counter update per write. A write rolled back to its savepoint
    /// leaves a gap, which readers tolerate.
    next_revision: Arc<AtomicI64>,
}

#[derive(Default)]
struct Batch {
    /// The shared transaction, open while writes are pending.
    outer: Option<DatabaseTransaction>,
    /// One per write whose savepoint was released into the batch.
    waiters: Vec<oneshot::Sender<Result<(), BatchError>>>,
    newest: Revision,
    /// A write left the batch without committing into it (it failed, or its
    /// caller went away): the transaction may have been rolled back.
    suspect: bool,
}

impl From<BatchError> for RepoError {
    fn from(e: BatchError) -> Self {
        match &e {
            BatchError::Commit(db) if is_storage_full(db) => RepoError::StorageFull(Box::new(e)),
            _ => RepoError::Unavailable(Box::new(e)),
        }
    }
}

/// The transaction a write runs in: its own (PostgreSQL), or a savepoint in
/// the current batch (SQLite).
pub(in crate::repository) struct WriteTxn {
    txn: DatabaseTransaction,
    slot: Option<Slot>,
}

/// A write's place in the batch; holds the writers' lock.
struct Slot {
    group: Arc<GroupCommit>,
    batch: OwnedMutexGuard<Batch>,
    /// Set by `leave`: the write's savepoint was released into the batch.
    left: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.left {
            self.batch.suspect = true;
        }
        // Runs before the lock is released, so the committer cannot miss
        // this write (Notify keeps the wake-up if nobody is waiting yet).
        self.group.wake.notify_one();
    }
}

impl Deref for WriteTxn {
    type Target = DatabaseTransaction;

    fn deref(&self) -> &DatabaseTransaction {
        &self.txn
    }
}

/// How a write ended.
pub(in crate::repository) enum Finished {
    /// Committed on its own; the caller announces the revision.
    Committed,
    /// Committed with its batch; the committer announced the revision.
    Batched,
}

impl WriteTxn {
    /// A write in a transaction of its own.
    pub(in crate::repository) fn single(txn: DatabaseTransaction) -> Self {
        WriteTxn { txn, slot: None }
    }

    /// Where a batched write takes its revisions (None: on its own).
    pub(in crate::repository) fn batch_revisions(&self) -> Option<Arc<AtomicI64>> {
        self.slot
            .as_ref()
            .map(|slot| slot.group.next_revision.clone())
    }

    /// Commits the write: its own transaction, or its savepoint into the
    /// batch, then waits until the batch is durable.
    pub(in crate::repository) async fn finish(
        self,
        revision: Revision,
    ) -> Result<Finished, FinishError> {
        let WriteTxn { txn, slot } = self;
        txn.commit().await.map_err(FinishError::Db)?;
        let Some(slot) = slot else {
            return Ok(Finished::Committed);
        };
        slot.leave(revision)
            .await
            .map(|()| Finished::Batched)
            .map_err(FinishError::Batch)
    }
}

impl Slot {
    /// The batch's transaction, which `GroupCommit::slot` opened.
    fn outer(&self) -> Result<&DatabaseTransaction, DbErr> {
        self.batch
            .outer
            .as_ref()
            .ok_or_else(|| DbErr::Custom("the batch's transaction is not open".into()))
    }

    /// Leaves the batch with the write's revision (the writers' lock is
    /// free once this returns); the future tells when the batch is durable.
    fn leave(mut self, revision: Revision) -> impl Future<Output = Result<(), BatchError>> {
        let (done, outcome) = oneshot::channel();
        self.batch.waiters.push(done);
        self.batch.newest = self.batch.newest.max(revision);
        self.left = true;
        drop(self);
        async move { outcome.await.unwrap_or(Err(BatchError::Stopped)) }
    }
}

/// A write that runs its own statements, savepoint included, on the
/// batch's transaction; holds the writers' lock.
pub(in crate::repository) struct BatchWrite {
    slot: Slot,
}

impl BatchWrite {
    /// The first of `count` consecutive revisions for the write's changes.
    pub(in crate::repository) fn reserve_revisions(&self, count: usize) -> Revision {
        let count = Revision::try_from(count).unwrap_or(Revision::MAX);
        self.slot
            .group
            .next_revision
            .fetch_add(count, Ordering::SeqCst)
    }

    /// Runs `statement` (which may be several) in the batch's transaction.
    pub(in crate::repository) async fn query_all(
        &self,
        statement: Statement,
    ) -> Result<Vec<QueryResult>, DbErr> {
        self.slot.outer()?.query_all_raw(statement).await
    }

    /// Runs `sql` (which may be several statements, without parameters).
    pub(in crate::repository) async fn execute(&self, sql: &str) -> Result<(), DbErr> {
        self.slot.outer()?.execute_unprepared(sql).await.map(drop)
    }

    /// Leaves what the write's statements wrote in the batch (its savepoint
    /// must be released), newest change at `revision`; the future tells
    /// when the batch is durable.
    pub(in crate::repository) fn leave(
        self,
        revision: Revision,
    ) -> impl Future<Output = Result<(), BatchError>> {
        self.slot.leave(revision)
    }
}

pub(in crate::repository) enum FinishError {
    Db(DbErr),
    Batch(BatchError),
}

impl GroupCommit {
    pub(in crate::repository) fn new() -> Arc<Self> {
        Arc::new(GroupCommit {
            batch: Arc::new(Mutex::new(Batch::default())),
            wake: Notify::new(),
            next_revision: Arc::new(AtomicI64::new(0)),
        })
    }

    /// Joins the open batch (opening one if there is none) in a savepoint
    /// of its own.
    pub(in crate::repository) async fn join(
        self: &Arc<Self>,
        writer: &DatabaseConnection,
    ) -> Result<WriteTxn, DbErr> {
        let slot = self.slot(writer).await?;
        let txn = slot.outer()?.begin().await?;
        Ok(WriteTxn {
            txn,
            slot: Some(slot),
        })
    }

    /// Enters the open batch (opening one if there is none) for a write
    /// that brings its own savepoint.
    pub(in crate::repository) async fn enter(
        self: &Arc<Self>,
        writer: &DatabaseConnection,
    ) -> Result<BatchWrite, DbErr> {
        Ok(BatchWrite {
            slot: self.slot(writer).await?,
        })
    }

    /// Takes the writers' lock, opening a batch if there is none (or if the
    /// open one turns out to be lost).
    async fn slot(self: &Arc<Self>, writer: &DatabaseConnection) -> Result<Slot, DbErr> {
        let mut batch = self.batch.clone().lock_owned().await;
        Self::check(&mut batch).await;
        if batch.outer.is_none() {
            let outer = writer
                .begin_with_options(TransactionOptions {
                    sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                    ..Default::default()
                })
                .await?;
            let current = outer
                .query_one_raw(Statement::from_string(
                    DatabaseBackend::Sqlite,
                    "SELECT value FROM revision_counter WHERE id = 1",
                ))
                .await?
                .ok_or_else(|| DbErr::RecordNotFound("revision counter row".into()))?
                .try_get::<i64>("", "value")?;
            self.next_revision.store(current + 1, Ordering::SeqCst);
            batch.outer = Some(outer);
        }
        Ok(Slot {
            group: self.clone(),
            batch,
            left: false,
        })
    }

    /// If the batch is suspect, asks SQLite whether its transaction is still
    /// open; if it is not, fails every write of the batch and closes it.
    async fn check(batch: &mut Batch) {
        if !batch.suspect {
            return;
        }
        let Some(outer) = &batch.outer else {
            batch.suspect = false;
            return;
        };
        // BEGIN inside an open transaction is refused and changes nothing;
        // accepted, it means SQLite had already ended the batch's one (and
        // the rollback below ends the probe's).
        let open = match outer.execute_unprepared("BEGIN").await {
            Err(e) => e.to_string().contains("within a transaction"),
            Ok(_) => false,
        };
        batch.suspect = false;
        if open {
            return;
        }
        tracing::error!(
            "SQLite rolled back an open write batch after an error; failing its writes"
        );
        if let Some(outer) = batch.outer.take() {
            // Whatever this answers, the connection's state is checked as it
            // goes back to the pool, and replaced if it is not clean.
            let _ = outer.rollback().await;
        }
        batch.newest = 0;
        for w in std::mem::take(&mut batch.waiters) {
            let _ = w.send(Err(BatchError::RolledBack));
        }
    }

    /// Commits batches until `closed` turns true; `announce` is told the
    /// newest revision of each batch that commits.
    pub(in crate::repository) async fn run(
        self: Arc<Self>,
        announce: impl Fn(Revision) + Send + 'static,
        mut closed: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = closed.changed() => return,
                _ = self.wake.notified() => {}
            }
            let mut batch = self.batch.lock().await;
            Self::check(&mut batch).await;
            let Some(outer) = batch.outer.take() else {
                continue;
            };
            let waiters = std::mem::take(&mut batch.waiters);
            let newest = std::mem::take(&mut batch.newest);
            // The lock is held through the commit: the next batch needs the
            // connection this one is using.
            let result = match self.store_counter(&outer).await {
                Ok(()) => outer.commit().await,
                Err(e) => Err(e),
            }
            .map_err(|e| BatchError::Commit(Arc::new(e)));
            drop(batch);
            if result.is_ok() && !waiters.is_empty() {
                announce(newest);
            }
            for w in waiters {
                let _ = w.send(result.clone());
            }
        }
    }

    /// Stores the batch's last revision in the counter row.
    async fn store_counter(&self, outer: &DatabaseTransaction) -> Result<(), DbErr> {
        let last = self.next_revision.load(Ordering::SeqCst) - 1;
        outer
            .execute_raw(Statement::from_sql_and_values(
                DatabaseBackend::Sqlite,
                "UPDATE revision_counter SET value = ? WHERE id = 1 AND value < ?",
                [last.into(), last.into()],
            ))
            .await
            .map(drop)
    }
}

//! Concurrent CreateSubscription calls on PostgreSQL, several to a
//! statement.
//!
//! Each create alone is one statement and one commit (see
//! `one_statement`); a commit, its round trip and its WAL flush cost more
//! than the rows it writes. Here one task takes the creates that arrive
//! while its last statement runs and writes them all in one statement, so
//! under load a commit carries many creates and at low load a create waits
//! for nothing. Only plain creates come here: those with a request id or a
//! verification take their own path.
//!
//! A batch writes all its rows or none. When any check fails (a parent
//! missing, suspended, changed or locked by another write) or a unique
//! index refuses a row, every create of the batch is told to run alone,
//! and the rare failing one then finds its own error as before. One
//! statement runs at a time, so a batch never waits for a lock: a write
//! holding one tenant must not hold up every tenant's creates.

use std::sync::Arc;

use sea_orm::sqlx;
use sea_orm::{DbErr, RuntimeErr};
use tokio::sync::{mpsc, oneshot, watch};

use super::one_statement::{self, BatchedCreate};
use super::pg_lanes::PgLanes;
use super::{RepoError, Revision};

/// Creates per statement at most: 32 rows of 16 parameters stay far below
/// PostgreSQL's limit, and the statement shapes a connection prepares stay
/// few.
const MAX_BATCH: usize = 32;

/// Low bits of a revision: the row's position in its transaction.
const POSITION_MASK: i64 = (1 << 20) - 1;

/// What became of one create sent to the batch.
pub(super) enum Outcome {
    /// Written at this revision.
    Written(Revision),
    /// Nothing written: run the create on its own.
    Alone,
    /// The database could not be reached; nothing is known to be written.
    Failed(RepoError),
}

struct Pending {
    create: BatchedCreate,
    reply: oneshot::Sender<Outcome>,
}

/// The queue of creates waiting for the next statement.
pub(super) struct CreateBatches {
    queue: mpsc::Sender<Pending>,
}

impl CreateBatches {
    /// Starts the writing task; it ends when `closed` turns true.
    pub(super) fn start(lanes: Arc<PgLanes>, closed: watch::Receiver<bool>) -> Self {
        let (queue, pending) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(write_batches(pending, lanes, closed));
        CreateBatches { queue }
    }

    /// Writes `create` with whatever else is waiting.
    pub(super) async fn write(&self, create: BatchedCreate) -> Outcome {
        let (reply, outcome) = oneshot::channel();
        if self.queue.send(Pending { create, reply }).await.is_err() {
            return Outcome::Alone;
        }
        // A task that stopped (the repository closing) answers nothing.
        outcome.await.unwrap_or(Outcome::Alone)
    }
}

async fn write_batches(
    mut pending: mpsc::Receiver<Pending>,
    lanes: Arc<PgLanes>,
    mut closed: watch::Receiver<bool>,
) {
    loop {
        let first = tokio::select! {
            next = pending.recv() => match next {
                Some(p) => p,
                None => return,
            },
            _ = closed.wait_for(|c| *c) => return,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match pending.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (creates, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|p| (p.create, p.reply)).unzip();
        let statement = one_statement::create_subscriptions(&creates);
        let outcomes = outcomes(lanes.query_all(statement).await, creates.len());
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            let _ = reply.send(outcome);
        }
    }
}

/// Each create's outcome from the statement's answer.
fn outcomes(answer: Result<Vec<sea_orm::QueryResult>, DbErr>, count: usize) -> Vec<Outcome> {
    let rows = match answer {
        Ok(rows) => rows,
        Err(e) if is_database_answer(&e) => return (0..count).map(|_| Outcome::Alone).collect(),
        Err(e) => {
            // Every create of the batch reports the one error, whole.
            let shared = Arc::new(e);
            return (0..count)
                .map(|_| Outcome::Failed(RepoError::Unavailable(Box::new(shared.clone()))))
                .collect();
        }
    };
    let mut revisions: Vec<Option<Revision>> = vec![None; count];
    for row in rows {
        if let Ok(revision) = row.try_get::<i64>("", "revision")
            && let Some(slot) = revisions.get_mut((revision & POSITION_MASK) as usize)
        {
            *slot = Some(revision);
        }
    }
    if revisions.iter().all(Option::is_none) {
        // A check failed: nothing was written.
        return (0..count).map(|_| Outcome::Alone).collect();
    }
    revisions
        .into_iter()
        .map(|r| match r {
            Some(revision) => Outcome::Written(revision),
            // All rows or none are written; a missing one cannot be told
            // apart from a lost answer, so it is not retried.
            None => Outcome::Failed(RepoError::Internal(
                "a batched create returned no revision".into(),
            )),
        })
        .collect()
}

/// Whether the database answered with an error (a check or constraint),
/// rather than the connection failing.
fn is_database_answer(e: &DbErr) -> bool {
    let runtime = match e {
        DbErr::Query(r) | DbErr::Exec(r) | DbErr::Conn(r) => r,
        _ => return false,
    };
    matches!(runtime, RuntimeErr::SqlxError(e) if matches!(**e, sqlx::Error::Database(_)))
}

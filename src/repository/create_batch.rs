//! Concurrent plain CreateSubscription calls, several to a statement.
//!
//! Each create alone is one statement (see `one_statement`) and, on
//! PostgreSQL, one commit; a commit, its round trip and its WAL flush cost
//! more than the rows it writes. On SQLite each statement is a hand-off to
//! the writer connection's thread and back, and creates take turns at the
//! one writer: those hand-offs, not the disk, bounded the create rate. Here
//! one task takes the creates that arrive while its last statement runs
//! and writes them all in one, so under load a statement carries many
//! creates and at low load a create waits for nothing. Only plain creates
//! come here: those with a request id or a verification take their own
//! path.
//!
//! On PostgreSQL a batch writes all its rows or none. When any check fails
//! (a parent missing, suspended, changed or locked by another write) or a
//! unique index refuses a row, every create of the batch is told to run
//! alone, and the rare failing one then finds its own error as before. One
//! statement runs at a time, so a batch never waits for a lock: a write
//! holding one tenant must not hold up every tenant's creates.
//!
//! On SQLite the statements run in the open group-commit batch under a
//! savepoint, and each create is checked on its own: one whose parent
//! check fails writes nothing and runs alone, the others are written. A
//! unique violation rolls the savepoint back and sends every create of the
//! statement to run alone. A written create is answered once its
//! group-commit batch is durable.

use std::sync::Arc;

use sea_orm::sqlx;
use sea_orm::{DatabaseConnection, DbErr, QueryResult, RuntimeErr};
use tokio::sync::{mpsc, oneshot, watch};

use super::availability::lost_connection;
use super::group_commit::GroupCommit;
use super::one_statement::{self, BatchedCreate};
use super::pg_lanes::PgLanes;
use super::sqlite_writer::is_storage_full;
use super::{RepoError, Revision};

/// Creates per statement at most: 32 rows of 16 parameters (26 on SQLite)
/// stay far below either database's limit, and the statement shapes a
/// connection prepares stay few.
pub(super) const MAX_BATCH: usize = 32;

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

/// Where the batches are written.
pub(super) enum Writer {
    /// PostgreSQL, each batch one statement in its own transaction.
    Postgres(Arc<PgLanes>),
    /// SQLite, each batch in the open group-commit batch.
    Sqlite {
        group: Arc<GroupCommit>,
        connection: DatabaseConnection,
    },
}

impl CreateBatches {
    /// Starts the writing task; it ends when `closed` turns true.
    pub(super) fn start(writer: Writer, closed: watch::Receiver<bool>) -> Self {
        let (queue, pending) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(write_batches(pending, writer, closed));
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
    writer: Writer,
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
        match &writer {
            Writer::Postgres(lanes) => {
                let statement = one_statement::create_subscriptions(&creates);
                let outcomes = outcomes(lanes.query_all(statement).await, creates.len());
                answer(replies, outcomes);
            }
            Writer::Sqlite { group, connection } => {
                write_sqlite(group, connection, &creates, replies).await;
            }
        }
    }
}

fn answer(replies: Vec<oneshot::Sender<Outcome>>, outcomes: Vec<Outcome>) {
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        let _ = reply.send(outcome);
    }
}

/// Writes `creates` in the open group-commit batch. Returns once the
/// statements ran (the writers' lock is free again); the creates that
/// wrote are answered when their batch is durable.
async fn write_sqlite(
    group: &Arc<GroupCommit>,
    connection: &DatabaseConnection,
    creates: &[BatchedCreate],
    replies: Vec<oneshot::Sender<Outcome>>,
) {
    let count = creates.len();
    let write = match group.enter(connection).await {
        Ok(write) => write,
        Err(e) => return answer(replies, failed(e, count)),
    };
    let first = write.reserve_revisions(count);
    let statement = one_statement::create_subscriptions_sqlite(creates, first);
    let rows = match write.query_all(statement).await {
        Ok(rows) => rows,
        Err(e) => {
            let savepoint = one_statement::SQLITE_SAVEPOINT;
            let outcomes = match write
                .execute(&format!("ROLLBACK TO {savepoint}; RELEASE {savepoint}"))
                .await
            {
                Ok(()) if is_database_answer(&e) => alone(count),
                Ok(()) => failed(e, count),
                Err(rollback) => failed(rollback, count),
            };
            return answer(replies, outcomes);
        }
    };
    let written = by_position(&rows, count, |revision| revision - first);
    let Some(newest) = written.iter().flatten().max().copied() else {
        // Every parent check failed: nothing was written.
        return answer(replies, alone(count));
    };
    let durable = write.leave(newest);
    tokio::spawn(async move {
        let committed = durable.await;
        for (reply, revision) in replies.into_iter().zip(written) {
            let outcome = match (revision, &committed) {
                (Some(revision), Ok(())) => Outcome::Written(revision),
                (Some(_), Err(e)) => Outcome::Failed(e.clone().into()),
                // Its parent check failed and it wrote nothing.
                (None, _) => Outcome::Alone,
            };
            let _ = reply.send(outcome);
        }
    });
}

/// Each create's revision, if the rows name one: `position` tells which
/// create of the batch a returned revision belongs to.
fn by_position(
    rows: &[QueryResult],
    count: usize,
    position: impl Fn(Revision) -> i64,
) -> Vec<Option<Revision>> {
    let mut revisions = vec![None; count];
    for row in rows {
        if let Ok(revision) = row.try_get::<i64>("", "revision")
            && let Some(slot) = usize::try_from(position(revision))
                .ok()
                .and_then(|i| revisions.get_mut(i))
        {
            *slot = Some(revision);
        }
    }
    revisions
}

/// Every create of a batch runs alone.
fn alone(count: usize) -> Vec<Outcome> {
    (0..count).map(|_| Outcome::Alone).collect()
}

/// Every create of a batch reports the one error, whole.
fn failed(e: DbErr, count: usize) -> Vec<Outcome> {
    let full = is_storage_full(&e);
    let shared = Arc::new(e);
    (0..count)
        .map(|_| {
            let source = Box::new(shared.clone());
            Outcome::Failed(if full {
                RepoError::StorageFull(source)
            } else {
                RepoError::Unavailable(source)
            })
        })
        .collect()
}

/// Each create's outcome from the statement's answer.
fn outcomes(answer: Result<Vec<QueryResult>, DbErr>, count: usize) -> Vec<Outcome> {
    let rows = match answer {
        Ok(rows) => rows,
        Err(e) if is_database_answer(&e) => return alone(count),
        Err(e) => return failed(e, count),
    };
    let revisions = by_position(&rows, count, |revision| revision & POSITION_MASK);
    if revisions.iter().all(Option::is_none) {
        // A check failed: nothing was written.
        return alone(count);
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
/// rather than the connection failing. PostgreSQL ending the session
/// (57P01 at a restart) is an error message too, but not an answer: the
/// batch may or may not have committed, so its creates are not run again.
fn is_database_answer(e: &DbErr) -> bool {
    let runtime = match e {
        DbErr::Query(r) | DbErr::Exec(r) | DbErr::Conn(r) => r,
        _ => return false,
    };
    matches!(runtime, RuntimeErr::SqlxError(e) if matches!(**e, sqlx::Error::Database(_)))
        && !lost_connection(e)
}

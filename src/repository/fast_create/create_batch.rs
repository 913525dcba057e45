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

use super::one_statement::{self, BatchedCreate};
use crate::repository::error::lost_connection;
use crate::repository::postgres::HeldConnections;
use crate::repository::revision::pg_position;
use crate::repository::sqlite::group_commit::GroupCommit;
use crate::repository::sqlite::writer::is_storage_full;
use crate::repository::{RepoError, Revision};

/// Creates per statement at most: 32 rows of 16 parameters (26 on SQLite)
/// stay far below either database's limit, and the statement shapes a
/// connection prepares stay few.
pub(in crate::repository) const MAX_BATCH: usize = 32;

/// What became of one create sent to the batch.
pub(in crate::repository) enum Outcome {
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
pub(in crate::repository) struct CreateBatches {
    queue: mpsc::Sender<Pending>,
}

/// Where the batches are written.
pub(in crate::repository) enum Writer {
    /// PostgreSQL, each batch one statement in its own transaction.
    Postgres(Arc<HeldConnections>),
    /// SQLite, each batch in the open group-commit batch.
    Sqlite {
        group: Arc<GroupCommit>,
        connection: DatabaseConnection,
    },
}

impl CreateBatches {
    /// Starts the writing task; it ends when `closed` turns true.
    pub(in crate::repository) fn start(writer: Writer, closed: watch::Receiver<bool>) -> Self {
        let (queue, pending) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(write_batches(pending, writer, closed));
        CreateBatches { queue }
    }

    /// Writes `create` with whatever else is waiting.
    pub(in crate::repository) async fn write(&self, create: BatchedCreate) -> Outcome {
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
            Writer::Postgres(held) => {
                let statement = one_statement::create_subscriptions(&creates);
                let returned = held.query_all(statement).await;
                let outcomes = outcomes(returned.map(|rows| revisions(&rows)), creates.len());
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
    let written = by_position(revisions(&rows), count, |revision| revision - first);
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

/// The revisions a batch statement returned, one per create that wrote.
fn revisions(rows: &[QueryResult]) -> Vec<Revision> {
    rows.iter()
        .filter_map(|row| row.try_get::<i64>("", "revision").ok())
        .collect()
}

/// Each create's revision, if one was returned: `position` tells which
/// create of the batch a returned revision belongs to.
fn by_position(
    returned: impl IntoIterator<Item = Revision>,
    count: usize,
    position: impl Fn(Revision) -> i64,
) -> Vec<Option<Revision>> {
    let mut revisions = vec![None; count];
    for revision in returned {
        if let Some(slot) = usize::try_from(position(revision))
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

/// Each create's outcome from the PostgreSQL statement's answer: the
/// revisions it returned, or its error.
fn outcomes(answer: Result<Vec<Revision>, DbErr>, count: usize) -> Vec<Outcome> {
    let returned = match answer {
        Ok(returned) => returned,
        Err(e) if is_database_answer(&e) => return alone(count),
        Err(e) => return failed(e, count),
    };
    let revisions = by_position(returned, count, pg_position);
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

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::error::Error as StdError;

    use super::*;
    use crate::repository::revision::pg_base;

    /// A database's answer refusing a statement, with its SQLSTATE.
    #[derive(Debug)]
    struct Refusal(&'static str);

    impl std::fmt::Display for Refusal {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "refused with {}", self.0)
        }
    }

    impl StdError for Refusal {}

    impl sqlx::error::DatabaseError for Refusal {
        fn message(&self) -> &str {
            "refused"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(self.0.into())
        }
        fn as_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn StdError + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn StdError + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn refused(sqlstate: &'static str) -> DbErr {
        DbErr::Query(RuntimeErr::SqlxError(Arc::new(sqlx::Error::Database(
            Box::new(Refusal(sqlstate)),
        ))))
    }

    fn connection_reset() -> DbErr {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        DbErr::Query(RuntimeErr::SqlxError(Arc::new(sqlx::Error::Io(io))))
    }

    /// Each outcome, short: `W<revision>`, `alone`, `unavailable`, `internal`.
    fn shown(outcomes: &[Outcome]) -> Vec<String> {
        outcomes
            .iter()
            .map(|o| match o {
                Outcome::Written(r) => format!("W{r}"),
                Outcome::Alone => "alone".to_owned(),
                Outcome::Failed(RepoError::Unavailable(_)) => "unavailable".to_owned(),
                Outcome::Failed(RepoError::StorageFull(_)) => "full".to_owned(),
                Outcome::Failed(RepoError::Internal(_)) => "internal".to_owned(),
                Outcome::Failed(other) => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn by_position_puts_each_revision_at_its_create() {
        let base = pg_base(9).unwrap();
        // Rows come back in any order.
        let got = by_position([base + 2, base, base + 1], 3, pg_position);
        assert_eq!(got, [Some(base), Some(base + 1), Some(base + 2)]);
    }

    #[test]
    fn by_position_leaves_creates_without_a_revision_empty() {
        let got = by_position([12, 10], 4, |r| r - 10);
        assert_eq!(got, [Some(10), None, Some(12), None]);
        assert_eq!(by_position([], 2, |r| r), [None, None]);
    }

    #[test]
    fn by_position_ignores_positions_outside_the_batch() {
        // Before the first (a negative position) and past the last.
        let got = by_position([9, 10, 13], 3, |r| r - 10);
        assert_eq!(got, [Some(10), None, None]);
    }

    #[test]
    fn every_create_written_gets_its_own_revision() {
        let base = pg_base(77).unwrap();
        let got = outcomes(Ok(vec![base + 1, base]), 2);
        assert_eq!(shown(&got), [format!("W{base}"), format!("W{}", base + 1)]);
    }

    #[test]
    fn nothing_returned_means_a_check_failed_and_every_create_runs_alone() {
        assert_eq!(shown(&outcomes(Ok(vec![]), 3)), ["alone"; 3]);
    }

    /// All rows or none are written on PostgreSQL; a create missing from a
    /// batch that wrote cannot be told apart from a lost answer, so it is
    /// not run again (it might then be written twice).
    #[test]
    fn a_create_missing_from_a_written_batch_fails_rather_than_running_again() {
        let base = pg_base(5).unwrap();
        let got = outcomes(Ok(vec![base, base + 2]), 3);
        assert_eq!(
            shown(&got),
            [
                format!("W{base}"),
                "internal".into(),
                format!("W{}", base + 2)
            ]
        );
    }

    /// A refusal by the database (a unique violation, a parent row locked
    /// by another write) wrote nothing: each create runs alone and finds
    /// its own error.
    #[test]
    fn a_refused_batch_sends_every_create_alone() {
        for sqlstate in ["23505", "55P03", "23502"] {
            let got = outcomes(Err(refused(sqlstate)), 2);
            assert_eq!(shown(&got), ["alone"; 2], "{sqlstate}");
        }
    }

    /// A lost connection, or PostgreSQL ending the session, may have
    /// committed the batch: its creates report the outage instead of
    /// running again.
    #[test]
    fn a_lost_answer_fails_every_create_as_unavailable() {
        for e in [connection_reset(), refused("57P01"), refused("08006")] {
            let got = outcomes(Err(e), 2);
            assert_eq!(shown(&got), ["unavailable"; 2]);
        }
    }

    #[test]
    fn a_failure_reaches_every_create_with_its_source() {
        let got = failed(connection_reset(), 2);
        for outcome in &got {
            let Outcome::Failed(e) = outcome else {
                panic!("not failed")
            };
            let source = e.source().expect("the database error is kept");
            assert!(source.to_string().contains("reset"), "{source}");
        }
    }
}

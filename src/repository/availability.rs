//! Whether the database answers, known without asking it on every call.
//!
//! On PostgreSQL a background probe checks the database once a second and
//! publishes the answer: gRPC health (`hookplane.database`) and `/healthz` read it, and
//! every statement and transaction start fails UNAVAILABLE at once while the
//! database is down ([`Availability::guard`]). Without that, a call waits out
//! the pool's acquire timeout: sqlx keeps retrying a refused connection
//! until then. A statement already waiting when the probe finds the
//! database down fails at that moment.
//!
//! A connection that failed makes every connection opened before it
//! suspect: a PostgreSQL restart ends them all, and each would otherwise
//! fail one more call after PostgreSQL is back. The pool and the held connections
//! drop a connection that [`Availability::outdated`] names instead of
//! using it. A failure also wakes the probe early (at most
//! [`PROBE_GAP`] after the previous probe), so an outage that calls run
//! into is published within milliseconds.
//!
//! SQLite is a file of this process: it has no probe and is always up here
//! (its failures are the errors of the statements themselves).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, ExecResult,
    QueryResult, RuntimeErr, Statement, TransactionOptions, TransactionTrait,
};
use tokio::sync::{Notify, watch};

use super::error::{broken_connection, lost_connection};
use super::postgres::Probe;

/// How often the probe asks the database when nothing went wrong.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// The least time between two probes, however many failures wake it.
const PROBE_GAP: Duration = Duration::from_millis(200);

pub(super) struct Availability {
    up: watch::Sender<bool>,
    /// When a connection last failed, in nanoseconds after `epoch` (0: never).
    failed: AtomicU64,
    epoch: Instant,
    suspect: Notify,
}

impl Availability {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Availability {
            up: watch::channel(true).0,
            failed: AtomicU64::new(0),
            epoch: Instant::now(),
            suspect: Notify::new(),
        })
    }

    /// True while the database answers; changes as the probe finds.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.up.subscribe()
    }

    /// Records that a connection failed: connections opened until now are
    /// not used again, and the probe looks soon.
    pub(in crate::repository) fn connection_failed(&self) {
        let since = self.epoch.elapsed().as_nanos().max(1);
        self.failed
            .fetch_max(u64::try_from(since).unwrap_or(u64::MAX), Ordering::SeqCst);
        self.suspect.notify_one();
    }

    /// Takes note of a failed statement: a broken connection outdates the
    /// others; any failure to reach the database has the probe look soon.
    pub(super) fn saw(&self, e: &DbErr) {
        if broken_connection(e) {
            self.connection_failed();
        } else if lost_connection(e) {
            self.suspect.notify_one();
        }
    }

    /// Whether a connection opened (or last checked) at `opened` predates
    /// the last connection failure.
    pub(super) fn outdated(&self, opened: Instant) -> bool {
        match self.failed.load(Ordering::SeqCst) {
            0 => false,
            failed => opened <= self.epoch + Duration::from_nanos(failed),
        }
    }

    /// Runs `work` (a statement, or a transaction's start) unless the
    /// database is known to be down; fails as soon as the probe finds it
    /// down; records a connection failure `work` runs into.
    pub(super) async fn guard<T>(
        &self,
        work: impl Future<Output = Result<T, DbErr>>,
    ) -> Result<T, DbErr> {
        let mut up = self.up.subscribe();
        if !*up.borrow_and_update() {
            return Err(unreachable());
        }
        tokio::select! {
            biased;
            result = work => {
                if let Err(e) = &result {
                    self.saw(e);
                }
                result
            }
            _ = up.wait_for(|up| !*up) => Err(unreachable()),
        }
    }

    fn set(&self, up: bool) {
        let changed = self.up.send_if_modified(|current| {
            let changed = *current != up;
            *current = up;
            changed
        });
        match (changed, up) {
            (true, true) => tracing::info!("database reachable again"),
            (true, false) => {
                tracing::error!("database unreachable; calls that need it fail at once")
            }
            _ => {}
        }
    }

    /// Probes the database until `closed` turns true.
    pub(super) async fn run_probe(
        self: Arc<Self>,
        mut probe: Probe,
        mut closed: watch::Receiver<bool>,
    ) {
        loop {
            let up = probe.check(&self).await;
            self.set(up);
            let checked = tokio::time::Instant::now();
            let woken = tokio::select! {
                _ = closed.changed() => return,
                _ = tokio::time::sleep(PROBE_EVERY) => false,
                _ = self.suspect.notified() => true,
            };
            if woken {
                tokio::time::sleep_until(checked + PROBE_GAP).await;
            }
        }
    }
}

/// A pool whose statements and transaction starts all pass
/// [`Availability::guard`]. Statements inside a transaction run on the
/// connection it already holds and need no gate.
#[derive(Clone)]
pub(super) struct Gated {
    db: DatabaseConnection,
    availability: Arc<Availability>,
}

impl Gated {
    pub(super) fn new(db: DatabaseConnection, availability: Arc<Availability>) -> Self {
        Gated { db, availability }
    }

    /// The pool itself, for what is not a statement (closing, held connections).
    pub(super) fn pool(&self) -> &DatabaseConnection {
        &self.db
    }

    pub(super) async fn begin_with_options(
        &self,
        options: TransactionOptions,
    ) -> Result<DatabaseTransaction, DbErr> {
        self.availability
            .guard(self.db.begin_with_options(options))
            .await
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for Gated {
    fn get_database_backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.availability.guard(self.db.execute_raw(stmt)).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.availability
            .guard(self.db.execute_unprepared(sql))
            .await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.availability.guard(self.db.query_one_raw(stmt)).await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.availability.guard(self.db.query_all_raw(stmt)).await
    }

    fn support_returning(&self) -> bool {
        self.db.support_returning()
    }
}

/// The error of a call refused because the database is down.
fn unreachable() -> DbErr {
    DbErr::Conn(RuntimeErr::Internal(
        "the database is unreachable (known from the last probe)".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failure_outdates_connections_opened_before_it() {
        let availability = Availability::new();
        let before = Instant::now();
        assert!(!availability.outdated(before));
        availability.connection_failed();
        assert!(availability.outdated(before));
        assert!(!availability.outdated(Instant::now() + Duration::from_millis(1)));
    }

    #[tokio::test]
    async fn guard_fails_at_once_while_down_and_when_going_down() {
        let availability = Availability::new();
        assert_eq!(availability.guard(async { Ok(7) }).await.ok(), Some(7));
        // A statement waiting (as sqlx waits for a refused connection)
        // fails when the probe finds the database down.
        let waiting = {
            let availability = availability.clone();
            tokio::spawn(async move {
                availability
                    .guard(std::future::pending::<Result<(), DbErr>>())
                    .await
            })
        };
        tokio::task::yield_now().await;
        availability.set(false);
        let failed = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("released at once")
            .expect("task");
        assert!(failed.as_ref().is_err_and(lost_connection), "{failed:?}");
        let refused = availability.guard(async { Ok(1) }).await;
        assert!(refused.is_err_and(|e| lost_connection(&e)));
        availability.set(true);
        assert_eq!(availability.guard(async { Ok(2) }).await.ok(), Some(2));
    }
}

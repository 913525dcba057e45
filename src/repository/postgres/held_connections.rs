//! PostgreSQL connections held out of the pool for the hottest single
//! statements: reads by key, the one-statement subscription create, the
//! create batches and the change-log reads every write waits for.
//!
//! sqlx pings every connection it takes back into its pool, a round trip
//! per checkout, and in a CreateSubscription profile those pings were a
//! large share of the server's CPU (and as many wake-ups on the database).
//! A held connection stays checked out, so a statement on it costs one
//! round trip. When every held connection is busy, the statement goes
//! through the pool as before, so holding connections never adds waiting.
//!
//! A slot whose connection broke (see `availability`) gives it up and takes
//! a fresh one from the pool next time; so does every other slot whose
//! connection is older than the failure, since a PostgreSQL restart ends
//! them all: after a restart only the call that found a broken connection
//! fails, with UNAVAILABLE.
//!
//! Held connections plan generically (`plan_cache_mode =
//! force_generic_plan`): without it PostgreSQL plans the change-log range
//! read afresh on every execution. But a generic plan is made once, with
//! the table sizes of that moment, and kept: made on empty tables (a new
//! database, with autovacuum off or not yet run) it reads by whichever
//! index leads with the right column, or scans the whole table. The
//! follower's change-log read then joined through `subscriptions_by_endpoint`
//! and read every subscription of the tenant per change, and even a
//! primary-key lookup plans as a sequential scan once an empty table has
//! been analyzed. No statement is safe from that, so a held connection
//! drops its plans (`DISCARD PLANS`, which keeps the prepared statements)
//! at most once per [`REPLAN_EVERY`]; the next plans see the tables as they
//! are then.
//!
//! A statement takes the lowest free slot, not the next in turn: at low
//! concurrency the same one or two connections then carry nearly every
//! statement (the create batches, the change-log reads), so the same
//! database backends stay warm instead of several taking turns (measured
//! in BENCHMARKS.md).
//!
//! A statement cancelled half-way (a dropped request) leaves its answer
//! unread; sqlx reads and discards it before the slot's next statement.
//!
//! ("Lane" is a serving word: the per-core serving runtimes. These were
//! once called lanes too.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sea_orm::sqlx;
use sea_orm::sqlx::pool::PoolConnection;
use sea_orm::sqlx::postgres::{PgArguments, Postgres};
use sea_orm::sqlx::query::Query;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbErr, QueryResult, RuntimeErr, Statement, Value,
};
use tokio::sync::Mutex;

use crate::repository::availability::Availability;
use crate::repository::error::sqlx_broken_connection;

/// How long a held connection keeps its plans at most (see the module notes).
pub(in crate::repository) const REPLAN_EVERY: Duration = Duration::from_secs(1);

pub(in crate::repository) struct HeldConnections {
    db: DatabaseConnection,
    /// Each slot holds a connection once it was first needed.
    slots: Vec<Mutex<Option<Held>>>,
    /// Set by `close`: from then on statements go through the pool.
    closed: AtomicBool,
    availability: Arc<Availability>,
}

/// A slot's connection.
struct Held {
    conn: PoolConnection<Postgres>,
    /// When it came from the pool (which checked it then).
    taken: Instant,
    /// When its plans were last dropped.
    planned: Instant,
}

impl Held {
    /// Closes the connection: it carries the slot's plan setting, so it does
    /// not go back to the pool.
    fn close(self) {
        drop(self.conn.detach());
    }
}

impl HeldConnections {
    /// Up to `count` held connections from the pool behind `db`.
    pub(in crate::repository) fn new(
        db: &DatabaseConnection,
        count: usize,
        availability: Arc<Availability>,
    ) -> Self {
        HeldConnections {
            db: db.clone(),
            slots: (0..count.max(1)).map(|_| Mutex::new(None)).collect(),
            closed: AtomicBool::new(false),
            availability,
        }
    }

    /// Gives every connection back: the pool's close waits for all of them.
    pub(in crate::repository) async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for slot in &self.slots {
            if let Some(held) = slot.lock().await.take() {
                held.close();
            }
        }
    }

    /// Runs one statement and returns its first row.
    pub(in crate::repository) async fn query_one(
        &self,
        statement: Statement,
    ) -> Result<Option<QueryResult>, DbErr> {
        self.run(statement, Fetch::One)
            .await
            .map(|rows| rows.into_iter().next())
    }

    /// Runs one statement and returns all its rows.
    pub(in crate::repository) async fn query_all(
        &self,
        statement: Statement,
    ) -> Result<Vec<QueryResult>, DbErr> {
        self.run(statement, Fetch::All).await
    }

    /// Runs one statement, unless the database is known to be down (see
    /// `availability`).
    async fn run(&self, statement: Statement, fetch: Fetch) -> Result<Vec<QueryResult>, DbErr> {
        self.availability
            .guard(self.run_held(statement, fetch))
            .await
    }

    async fn run_held(
        &self,
        statement: Statement,
        fetch: Fetch,
    ) -> Result<Vec<QueryResult>, DbErr> {
        let free = self.slots.iter().find_map(|slot| slot.try_lock().ok());
        let Some(mut slot) = free.filter(|_| !self.closed.load(Ordering::SeqCst)) else {
            return fetch.through_pool(&self.db, statement).await;
        };
        if let Some(held) = slot.take_if(|held| self.availability.outdated(held.taken)) {
            held.close();
        }
        let held = match slot.as_mut() {
            Some(held) => held,
            None => slot.insert(self.take().await?),
        };
        let query = bind(
            sqlx::query(sqlx::AssertSqlSafe(statement.sql.as_str())),
            statement.values,
        )?;
        let rows = async {
            if held.planned.elapsed() >= REPLAN_EVERY {
                sqlx::raw_sql("DISCARD PLANS")
                    .execute(&mut *held.conn)
                    .await?;
                held.planned = Instant::now();
            }
            match fetch {
                Fetch::One => query
                    .fetch_optional(&mut *held.conn)
                    .await
                    .map(|r| r.into_iter().collect()),
                Fetch::All => query.fetch_all(&mut *held.conn).await,
            }
        };
        match rows.await {
            Ok(rows) => Ok(rows.into_iter().map(QueryResult::from).collect()),
            Err(e) => {
                // An error that is not the database's answer to the
                // statement may have left the connection unusable.
                if (sqlx_broken_connection(&e) || !matches!(e, sqlx::Error::Database(_)))
                    && let Some(held) = slot.take()
                {
                    held.close();
                }
                Err(sqlx_err(e))
            }
        }
    }

    /// A connection from the pool, set up to be held.
    async fn take(&self) -> Result<Held, DbErr> {
        let mut conn = self
            .db
            .get_postgres_connection_pool()
            .acquire()
            .await
            .map_err(sqlx_err)?;
        let taken = Instant::now();
        // Servers without the setting (before 12) just plan as before.
        let _ = sqlx::query("SET plan_cache_mode = force_generic_plan")
            .execute(&mut *conn)
            .await;
        Ok(Held {
            conn,
            taken,
            planned: Instant::now(),
        })
    }
}

/// How many rows a statement's caller wants.
#[derive(Clone, Copy)]
enum Fetch {
    One,
    All,
}

impl Fetch {
    async fn through_pool(
        self,
        db: &DatabaseConnection,
        statement: Statement,
    ) -> Result<Vec<QueryResult>, DbErr> {
        match self {
            Fetch::One => Ok(db.query_one_raw(statement).await?.into_iter().collect()),
            Fetch::All => db.query_all_raw(statement).await,
        }
    }
}

fn sqlx_err(e: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(Arc::new(e)))
}

/// Binds sea-query values: the types hookplane's statements use.
fn bind<'q>(
    mut query: Query<'q, Postgres, PgArguments>,
    values: Option<sea_orm::sea_query::Values>,
) -> Result<Query<'q, Postgres, PgArguments>, DbErr> {
    for value in values.map(|v| v.0).unwrap_or_default() {
        query = match value {
            Value::String(v) => query.bind(v),
            Value::BigInt(v) => query.bind(v),
            Value::Int(v) => query.bind(v),
            Value::Bool(v) => query.bind(v),
            Value::Bytes(v) => query.bind(v),
            Value::BigUnsigned(v) => query.bind(
                v.map(i64::try_from)
                    .transpose()
                    .map_err(|e| DbErr::Custom(format!("parameter out of range: {e}")))?,
            ),
            other => {
                return Err(DbErr::Custom(format!(
                    "no held-connection binding for parameter {other:?}"
                )));
            }
        };
    }
    Ok(query)
}

//! [`SeaRepository`], the repository on SQLite and PostgreSQL through
//! SeaORM: what it holds, how it connects and migrates, and the background
//! tasks it starts. Each resource's storage is in `resources/`.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::{
    ConnectionTrait, Database, DatabaseBackend, DatabaseConnection, DbErr, Statement,
    TransactionTrait,
};
use tokio::sync::watch;

use super::ChangeLogStore;
use super::Revision;
use super::availability::{Availability, Gated};
use super::fast_create::create_batch::{CreateBatches, Writer as BatchWriter};
use super::postgres::HeldConnections;
use super::postgres::Probe;
use super::postgres::{self, listen_for_changes, notify_replicas};
use super::quota::Quotas;
use super::sqlite::group_commit::GroupCommit;
use super::sqlite::inline_read::InlineReader;
use super::sqlite::{self, checkpoint_wal};
use super::write::announce;
use crate::crypto::Keyring;

/// Arbitrary constants naming hookplane's PostgreSQL advisory locks.
const MIGRATION_LOCK: i64 = 0x686f_6f6b_0001;

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: String,
    /// Pool size for readers (and, on PostgreSQL, writers too).
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

pub struct SeaRepository {
    /// On SQLite one connection, so writers queue in-process instead of
    /// failing with "database is locked".
    pub(super) writer: Gated,
    pub(super) reader: Gated,
    /// Whether the database answers (see `availability`).
    pub(super) availability: Arc<Availability>,
    /// What only this database has.
    pub(super) engine: Engine,
    pub(super) key: Keyring,
    pub(super) revisions: watch::Sender<Revision>,
    /// Counts this process's commits that queued outbox rows, so its
    /// delivery worker wakes for them and not for every other commit.
    pub(super) outbox: watch::Sender<u64>,
    pub(super) closed: watch::Sender<bool>,
    /// Plain creates, written several to a statement (see `fast_create`).
    pub(super) batches: Option<CreateBatches>,
    /// Per-tenant limits every create checks in its write.
    pub(super) quotas: Quotas,
}

/// The parts of the repository that one database has and the other lacks.
pub(super) enum Engine {
    Sqlite {
        /// Concurrent writes share one commit.
        group: Arc<GroupCommit>,
        /// File databases only: single-row reads on the caller's thread.
        inline: Option<InlineReader>,
    },
    Postgres {
        /// This process's commits, which `notify_replicas` announces to
        /// the other replicas.
        committed: watch::Sender<Revision>,
        /// Connections held for single statements; none from a pool of
        /// one, since transactions need connections not held out of it.
        held: Option<Arc<HeldConnections>>,
    },
}

impl Engine {
    pub(super) fn backend(&self) -> DatabaseBackend {
        match self {
            Engine::Sqlite { .. } => DatabaseBackend::Sqlite,
            Engine::Postgres { .. } => DatabaseBackend::Postgres,
        }
    }

    /// Held PostgreSQL connections, if there are any.
    pub(super) fn held(&self) -> Option<&Arc<HeldConnections>> {
        match self {
            Engine::Postgres { held, .. } => held.as_ref(),
            Engine::Sqlite { .. } => None,
        }
    }

    /// Where plain creates are batched: the group commit on SQLite, held
    /// connections on PostgreSQL (none without them).
    fn batch_writer(&self, writer: &DatabaseConnection) -> Option<BatchWriter> {
        match self {
            Engine::Sqlite { group, .. } => Some(BatchWriter::Sqlite {
                group: group.clone(),
                connection: writer.clone(),
            }),
            Engine::Postgres { held, .. } => held.clone().map(BatchWriter::Postgres),
        }
    }
}

/// A pooled connection idle this long is pinged before use (one that was
/// just used is not: a ping per checkout would add a round trip to every
/// statement; sqlx still pings each connection as it goes back).
pub(super) const PING_IF_IDLE_FOR: Duration = Duration::from_secs(10);

impl SeaRepository {
    /// Connects, applies migrations and returns the repository.
    pub async fn connect(settings: &DatabaseSettings, key: Keyring) -> Result<Self, DbErr> {
        let availability = Availability::new();
        let (writer, reader, engine) = if settings.url.starts_with("sqlite:") {
            let (writer, reader, inline) = sqlite::open(settings).await?;
            let group = GroupCommit::new();
            (writer, reader, Engine::Sqlite { group, inline })
        } else if is_postgres_url(&settings.url) {
            let pool = Database::connect(postgres::pool_options(settings, &availability)).await?;
            migrate(&pool, DatabaseBackend::Postgres).await?;
            let held = (settings.max_connections >= 2).then(|| {
                Arc::new(HeldConnections::new(
                    &pool,
                    settings.max_connections as usize / 2,
                    availability.clone(),
                ))
            });
            let committed = watch::channel(0).0;
            (pool.clone(), pool, Engine::Postgres { committed, held })
        } else {
            return Err(DbErr::Custom(
                "database url must start with sqlite: or postgres://".into(),
            ));
        };
        let closed = watch::channel(false).0;
        let batches = engine
            .batch_writer(&writer)
            .map(|target| CreateBatches::start(target, closed.subscribe()));
        let repo = SeaRepository {
            writer: Gated::new(writer, availability.clone()),
            reader: Gated::new(reader, availability.clone()),
            availability,
            engine,
            key,
            revisions: watch::channel(0).0,
            outbox: watch::channel(0).0,
            closed,
            batches,
            quotas: Quotas::UNLIMITED,
        };
        repo.start_tasks(&settings.url);
        let current = repo
            .current_revision()
            .await
            .map_err(|e| DbErr::Custom(e.to_string()))?;
        repo.revisions.send_replace(current);
        Ok(repo)
    }

    /// Starts the background tasks of the database's engine; each ends
    /// when the repository closes.
    fn start_tasks(&self, url: &str) {
        match &self.engine {
            Engine::Sqlite { group, .. } => {
                let revisions = self.revisions.clone();
                tokio::spawn(group.clone().run(
                    move |revision| announce(&revisions, revision),
                    self.closed.subscribe(),
                ));
                tokio::spawn(checkpoint_wal(
                    self.reader.pool().clone(),
                    self.closed.subscribe(),
                ));
            }
            Engine::Postgres { committed, .. } => {
                tokio::spawn(notify_replicas(
                    url.to_owned(),
                    committed.subscribe(),
                    self.closed.subscribe(),
                ));
                tokio::spawn(
                    self.availability
                        .clone()
                        .run_probe(Probe::new(url.to_owned()), self.closed.subscribe()),
                );
                // Other replicas' commits arrive as notifications; the
                // follower also polls, so a lost notification only delays
                // a change.
                tokio::spawn(listen_for_changes(
                    url.to_owned(),
                    self.revisions.clone(),
                    self.closed.subscribe(),
                ));
            }
        }
    }

    /// The repository with per-tenant quotas in force (none by default).
    pub fn with_quotas(mut self, quotas: Quotas) -> Self {
        self.quotas = quotas;
        self
    }

    /// Closes the pools; later calls fail as unavailable.
    pub async fn close(&self) {
        self.closed.send_replace(true);
        // At once: the pools stop handing out connections while held
        // give theirs back.
        let held = async {
            if let Some(held) = self.engine.held() {
                held.close().await;
            }
        };
        let _ = tokio::join!(
            held,
            self.writer.pool().close_by_ref(),
            self.reader.pool().close_by_ref()
        );
    }

    /// True while the database answers, as a background probe finds once a
    /// second on PostgreSQL (see `availability`); always true on SQLite.
    pub fn database_up(&self) -> watch::Receiver<bool> {
        self.availability.subscribe()
    }

    pub fn backend(&self) -> DatabaseBackend {
        self.engine.backend()
    }

    pub(super) fn keyring(&self) -> &Keyring {
        &self.key
    }

    /// Revisions committed by this process, as they commit.
    pub fn subscribe_revisions(&self) -> watch::Receiver<Revision> {
        self.revisions.subscribe()
    }

    /// Changes after each commit by this process that queued outbox rows.
    pub fn subscribe_outbox(&self) -> watch::Receiver<u64> {
        self.outbox.subscribe()
    }
}

/// Applies migrations; on PostgreSQL under an advisory lock so replicas
/// starting together do not race.
pub(crate) async fn migrate(
    db: &DatabaseConnection,
    backend: DatabaseBackend,
) -> Result<(), DbErr> {
    use migration::MigratorTrait;
    if backend == DatabaseBackend::Postgres {
        let txn = db.begin().await?;
        txn.execute_raw(Statement::from_string(
            backend,
            format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"),
        ))
        .await?;
        migration::Migrator::up(&txn, None).await?;
        txn.commit().await
    } else {
        migration::Migrator::up(db, None).await
    }
}

/// Whether `url` names a PostgreSQL database.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

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
use super::availability::{Availability, Gated, Probe};
use super::fast_create::create_batch::{CreateBatches, Writer as BatchWriter};
use super::postgres::HeldConnections;
use super::postgres::{self, listen_for_changes, notify_replicas};
use super::quota::Quotas;
use super::sqlite::group_commit::GroupCommit;
use super::sqlite::inline_read::InlineReader;
use super::sqlite::{checkpoint_wal, open_inline_reader, sqlite_options};
use super::write::announce;
use crate::crypto::Keyring;

// Sibling modules name these as `sea::...`.

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
    pub(super) backend: DatabaseBackend,
    pub(super) key: Keyring,
    pub(super) revisions: watch::Sender<Revision>,
    /// Counts this process's commits that queued outbox rows, so its
    /// delivery worker wakes for them and not for every other commit.
    pub(super) outbox: watch::Sender<u64>,
    pub(super) closed: watch::Sender<bool>,
    /// SQLite only: concurrent writes share one commit.
    pub(super) group: Option<Arc<GroupCommit>>,
    /// SQLite file databases only: single-row reads on the caller's thread.
    pub(super) inline: Option<InlineReader>,
    /// PostgreSQL only: this process's commits, which `notify_replicas`
    /// announces to the other replicas.
    pub(super) committed: Option<watch::Sender<Revision>>,
    /// PostgreSQL only: connections held for single statements.
    pub(super) held: Option<Arc<HeldConnections>>,
    /// Plain creates, written several to a statement.
    pub(super) batches: Option<CreateBatches>,
    /// Per-tenant limits every create checks in its write.
    pub(super) quotas: Quotas,
}

/// A pooled connection idle this long is pinged before use (one that was
/// just used is not: a ping per checkout would add a round trip to every
/// statement; sqlx still pings each connection as it goes back).
pub(super) const PING_IF_IDLE_FOR: Duration = Duration::from_secs(10);

impl SeaRepository {
    /// Connects, applies migrations and returns the repository.
    pub async fn connect(settings: &DatabaseSettings, key: Keyring) -> Result<Self, DbErr> {
        let backend = if settings.url.starts_with("sqlite:") {
            DatabaseBackend::Sqlite
        } else if settings.url.starts_with("postgres://")
            || settings.url.starts_with("postgresql://")
        {
            DatabaseBackend::Postgres
        } else {
            return Err(DbErr::Custom(
                "database url must start with sqlite: or postgres://".into(),
            ));
        };
        let availability = Availability::new();
        let (writer, reader, inline) = match backend {
            DatabaseBackend::Sqlite => {
                let writer = Database::connect(sqlite_options(settings, 1)).await?;
                // Migrate before readers open, so they see the final schema.
                migrate(&writer, backend).await?;
                let reader =
                    Database::connect(sqlite_options(settings, settings.max_connections)).await?;
                let inline = open_inline_reader(&reader)?;
                (writer, reader, inline)
            }
            _ => {
                let pool =
                    Database::connect(postgres::pool_options(settings, &availability)).await?;
                migrate(&pool, backend).await?;
                (pool.clone(), pool, None)
            }
        };
        // Half the pool, and none from a pool of one: transactions need
        // connections not held out of the pool.
        let held =
            (backend == DatabaseBackend::Postgres && settings.max_connections >= 2).then(|| {
                Arc::new(HeldConnections::new(
                    &writer,
                    settings.max_connections as usize / 2,
                    availability.clone(),
                ))
            });
        let closed = watch::channel(false).0;
        let group = (backend == DatabaseBackend::Sqlite).then(GroupCommit::new);
        let batch_writer = match (&held, &group) {
            (Some(held), _) => Some(BatchWriter::Postgres(held.clone())),
            (None, Some(group)) => Some(BatchWriter::Sqlite {
                group: group.clone(),
                connection: writer.clone(),
            }),
            (None, None) => None,
        };
        let batches = batch_writer.map(|target| CreateBatches::start(target, closed.subscribe()));
        let repo = SeaRepository {
            writer: Gated::new(writer, availability.clone()),
            reader: Gated::new(reader, availability.clone()),
            availability,
            backend,
            key,
            revisions: watch::channel(0).0,
            outbox: watch::channel(0).0,
            closed,
            group,
            inline,
            committed: (backend == DatabaseBackend::Postgres).then(|| watch::channel(0).0),
            held,
            batches,
            quotas: Quotas::UNLIMITED,
        };
        if let Some(group) = &repo.group {
            let revisions = repo.revisions.clone();
            tokio::spawn(group.clone().run(
                move |revision| announce(&revisions, revision),
                repo.closed.subscribe(),
            ));
            tokio::spawn(checkpoint_wal(
                repo.reader.pool().clone(),
                repo.closed.subscribe(),
            ));
        }
        if let Some(committed) = &repo.committed {
            tokio::spawn(notify_replicas(
                settings.url.clone(),
                committed.subscribe(),
                repo.closed.subscribe(),
            ));
        }
        if backend == DatabaseBackend::Postgres {
            tokio::spawn(
                repo.availability
                    .clone()
                    .run_probe(Probe::new(settings.url.clone()), repo.closed.subscribe()),
            );
            // Other replicas' commits arrive as notifications; the follower
            // also polls, so a lost notification only delays a change.
            tokio::spawn(listen_for_changes(
                settings.url.clone(),
                repo.revisions.clone(),
                repo.closed.subscribe(),
            ));
        }
        let current = repo
            .current_revision()
            .await
            .map_err(|e| DbErr::Custom(e.to_string()))?;
        repo.revisions.send_replace(current);
        Ok(repo)
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
            if let Some(held) = &self.held {
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
        self.backend
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

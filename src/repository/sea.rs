//! The SeaORM implementation of [`Repository`] for SQLite and PostgreSQL.

use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseBackend,
    DatabaseConnection, DatabaseTransaction, DbErr, EntityTrait, FromQueryResult, IntoActiveModel,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Select, SqlErr, SqliteTransactionMode,
    Statement, TransactionOptions, TransactionTrait,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use tokio::sync::watch;

use super::availability::{Availability, Gated, Probe, lost_connection};
use super::create_batch::{CreateBatches, Outcome, Writer as BatchWriter};
use super::entities::{
    change, confirmation_token, credential, endpoint, event_type, idempotency, nonce, outbox,
    subscription, tenant,
};
use super::group_commit::{FinishError, Finished, GroupCommit, WriteTxn};
use super::inline_read::InlineReader;
use super::one_statement;
use super::pg_lanes::PgLanes;
use super::quota::{self, Quota, Quotas};
use super::sqlite_writer;
use super::{
    Bootstrap, ChangeRecord, CredentialFilter, DeliveryOutcome, IdempotencyRecord, OutboxItem,
    Page, PageRequest, RepoError, RepoResult, Repository, Revision, Snapshot, SubscriptionFilter,
    TokenState, Verification, WriteMeta,
};
use crate::auth::Role;
use crate::crypto::Keyring;
use crate::model::{
    Credential, Endpoint, EventType, Micros, PreviousSecret, Subscription, SubscriptionStatus,
    Tenant, TenantSettings, TenantState, new_etag,
};

/// Arbitrary constants naming hookplane's PostgreSQL advisory locks.
const MIGRATION_LOCK: i64 = 0x686f_6f6b_0001;
const BOOTSTRAP_LOCK: i64 = 0x686f_6f6b_0002;

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
    writer: Gated,
    reader: Gated,
    /// Whether the database answers (see `availability`).
    availability: Arc<Availability>,
    backend: DatabaseBackend,
    key: Keyring,
    revisions: watch::Sender<Revision>,
    /// Counts this process's commits that queued outbox rows, so its
    /// delivery worker wakes for them and not for every other commit.
    outbox: watch::Sender<u64>,
    closed: watch::Sender<bool>,
    /// SQLite only: concurrent writes share one commit.
    group: Option<Arc<GroupCommit>>,
    /// SQLite file databases only: single-row reads on the caller's thread.
    inline: Option<InlineReader>,
    /// PostgreSQL only: this process's commits, which `notify_replicas`
    /// announces to the other replicas.
    committed: Option<watch::Sender<Revision>>,
    /// PostgreSQL only: connections held for single statements.
    lanes: Option<Arc<PgLanes>>,
    /// Plain creates, written several to a statement.
    batches: Option<CreateBatches>,
    /// Per-tenant limits every create checks in its write.
    quotas: Quotas,
}

/// A pooled connection idle this long is pinged before use (one that was
/// just used is not: a ping per checkout would add a round trip to every
/// statement; sqlx still pings each connection as it goes back).
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(10);

/// How long a pooled PostgreSQL connection is used. PostgreSQL keeps a
/// prepared statement's generic plan, made with the table sizes of that
/// moment, for as long as the connection lives: one made on empty tables
/// (autovacuum off, nothing analyzed) can scan a table that has since
/// grown. A new connection plans afresh. (The held lanes drop their plans
/// more often; see `pg_lanes`.)
const PG_CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// The outbox kind of a confirmation message.
const CONFIRMATION: &str = "confirmation";

/// What becomes of a subscription's earlier confirmation tokens when a new
/// one is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EarlierTokens {
    /// A new subscription has none.
    None,
    /// ResendConfirmation: they stay known, as used ("replaced by a newer one").
    Replaced,
    /// The subscription's endpoint or that endpoint's URL changed: a
    /// confirmation is bound to where it was sent, so they are forgotten
    /// and answer as unknown tokens.
    Voided,
}

/// The PostgreSQL channel on which every commit announces its revision.
const CHANGES_CHANNEL: &str = "hookplane_changes";

pub(super) fn classify(err: DbErr) -> RepoError {
    if sqlite_writer::is_storage_full(&err) {
        return RepoError::StorageFull(Box::new(err));
    }
    if sqlite_writer::is_storage_error(&err) {
        return RepoError::Unavailable(Box::new(err));
    }
    if let Some(SqlErr::UniqueConstraintViolation(_)) = err.sql_err() {
        return RepoError::AlreadyExists("resource");
    }
    match &err {
        // PostgreSQL broke a deadlock or a serialization conflict by
        // rolling this transaction back: nothing was written, retry is safe.
        DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e))
        | DbErr::Query(sea_orm::RuntimeErr::SqlxError(e))
            if e.as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == "40001" || c == "40P01") =>
        {
            RepoError::Unavailable(Box::new(err))
        }
        // The database went away, restarted or refuses connections.
        _ if lost_connection(&err) => RepoError::Unavailable(Box::new(err)),
        _ => RepoError::Internal(Box::new(err)),
    }
}

/// Classifies a unique violation as a clash on `what`.
fn unique_as(what: &'static str) -> impl Fn(DbErr) -> RepoError {
    move |err| match classify(err) {
        RepoError::AlreadyExists(_) => RepoError::AlreadyExists(what),
        other => other,
    }
}

fn internal(msg: impl Into<String>) -> RepoError {
    RepoError::Internal(msg.into().into())
}

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
                let mut opts = ConnectOptions::new(settings.url.clone());
                opts.max_connections(settings.max_connections)
                    .min_connections(1)
                    .acquire_timeout(settings.acquire_timeout)
                    .test_before_acquire_if_idle_for(PING_IF_IDLE_FOR)
                    .max_lifetime(PG_CONNECTION_LIFETIME)
                    .sqlx_logging(false);
                // A connection opened before another one broke is dropped
                // instead of used (see `availability`).
                let outdated = availability.clone();
                opts.map_sqlx_postgres_before_acquire(move |_, meta| {
                    let opened = std::time::Instant::now()
                        .checked_sub(meta.age)
                        .unwrap_or_else(std::time::Instant::now);
                    let usable = !outdated.outdated(opened);
                    Box::pin(async move { Ok(usable) })
                });
                let pool = Database::connect(opts).await?;
                migrate(&pool, backend).await?;
                (pool.clone(), pool, None)
            }
        };
        // Half the pool, and none from a pool of one: transactions need
        // connections the lanes do not hold.
        let lanes =
            (backend == DatabaseBackend::Postgres && settings.max_connections >= 2).then(|| {
                Arc::new(PgLanes::new(
                    &writer,
                    settings.max_connections as usize / 2,
                    availability.clone(),
                ))
            });
        let closed = watch::channel(false).0;
        let group = (backend == DatabaseBackend::Sqlite).then(GroupCommit::new);
        let batch_writer = match (&lanes, &group) {
            (Some(lanes), _) => Some(BatchWriter::Postgres(lanes.clone())),
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
            lanes,
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
        // At once: the pools stop handing out connections while the lanes
        // give theirs back.
        let lanes = async {
            if let Some(lanes) = &self.lanes {
                lanes.close().await;
            }
        };
        let _ = tokio::join!(
            lanes,
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

    /// The row a primary-key select finds: on SQLite inline (see
    /// `inline_read`), elsewhere through the reader pool.
    async fn read_by_key<E>(&self, select: Select<E>) -> RepoResult<Option<E::Model>>
    where
        E: EntityTrait,
        E::ActiveModel: sea_orm::TryIntoModel<E::Model>,
    {
        match &self.inline {
            Some(_) if *self.closed.borrow() => {
                Err(RepoError::Unavailable("the repository is closed".into()))
            }
            Some(inline) => inline.one(select),
            None => match &self.lanes {
                Some(lanes) => {
                    let statement = sea_orm::QueryTrait::build(&select, self.backend);
                    model_of::<E>(lanes.query_one(statement).await.map_err(classify)?)
                }
                None => by_key(&self.reader, select).await,
            },
        }
    }

    /// Every row a read statement returns, on a PostgreSQL lane when there
    /// are lanes (the follower's reads, which every write waits for),
    /// elsewhere through the reader pool.
    async fn read_rows(&self, statement: Statement) -> RepoResult<Vec<sea_orm::QueryResult>> {
        match &self.lanes {
            Some(lanes) => lanes.query_all(statement).await,
            None => self.reader.query_all_raw(statement).await,
        }
        .map_err(classify)
    }

    /// Revisions committed by this process, as they commit.
    pub fn subscribe_revisions(&self) -> watch::Receiver<Revision> {
        self.revisions.subscribe()
    }

    /// Changes after each commit by this process that queued outbox rows.
    pub fn subscribe_outbox(&self) -> watch::Receiver<u64> {
        self.outbox.subscribe()
    }

    /// Commits a write that queued outbox rows, then wakes the delivery
    /// worker (after the commit: woken before it, the worker would not see
    /// the rows yet).
    async fn commit_queued(
        &self,
        txn: WriteTxn,
        meta: &WriteMeta,
        revision: Revision,
    ) -> RepoResult<Revision> {
        let revision = self.commit(txn, meta, revision).await?;
        self.outbox.send_modify(|n| *n = n.wrapping_add(1));
        Ok(revision)
    }

    pub(super) async fn begin(&self) -> RepoResult<DatabaseTransaction> {
        self.writer
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await
            .map_err(classify)
    }

    /// Starts a write: takes the transaction's first revision and records
    /// the request nonce (one statement on PostgreSQL).
    async fn begin_write(&self, meta: &WriteMeta) -> RepoResult<(WriteTxn, ChangeLog)> {
        let txn = match &self.group {
            Some(group) => group.join(self.writer.pool()).await.map_err(classify)?,
            None => WriteTxn::single(self.begin().await?),
        };
        let replay = |e: DbErr| match classify(e) {
            RepoError::AlreadyExists(_) => RepoError::Replay,
            other => other,
        };
        let revision = match (&meta.nonce, self.backend) {
            (Some(n), DatabaseBackend::Postgres) => {
                // The insert gives the transaction its id, from which the
                // revision derives; RETURNING saves a round trip.
                let row = txn
                    .query_one_raw(Statement::from_sql_and_values(
                        self.backend,
                        "INSERT INTO request_nonces (api_id, nonce, expire_time) VALUES ($1, $2, $3) \
                         RETURNING pg_current_xact_id()::text::bigint AS value",
                        [
                            meta.api_id.clone().into(),
                            n.clone().into(),
                            meta.nonce_expire_time.into(),
                        ],
                    ))
                    .await
                    .map_err(replay)?
                    .ok_or_else(|| internal("nonce insert returned no row"))?;
                pg_revision_base(row.try_get::<i64>("", "value").map_err(classify)?)?
            }
            _ => {
                // A batched SQLite write counts in memory (see GroupCommit).
                let revision = match txn.batch_revisions() {
                    Some(next) => next.fetch_add(1, Ordering::SeqCst),
                    None => first_revision(&txn).await?,
                };
                if let Some(row) = nonce_row(meta) {
                    nonce::Entity::insert(row)
                        .exec_without_returning(&*txn)
                        .await
                        .map_err(replay)?;
                }
                revision
            }
        };
        let log = ChangeLog::of(&txn, revision);
        Ok((txn, log))
    }

    /// Stores the idempotent response and commits.
    async fn commit(
        &self,
        txn: WriteTxn,
        meta: &WriteMeta,
        revision: Revision,
    ) -> RepoResult<Revision> {
        if let Some(row) = self.idempotency_row(meta) {
            idempotency::Entity::insert(row)
                .exec_without_returning(&*txn)
                .await
                .map_err(|e| match classify(e) {
                    RepoError::AlreadyExists(_) => RepoError::IdempotencyRace,
                    other => other,
                })?;
        }
        match txn.finish(revision).await {
            Ok(Finished::Committed) => self.publish(revision),
            Ok(Finished::Batched) => {}
            Err(FinishError::Db(e)) => return Err(classify(e)),
            Err(FinishError::Batch(e)) => return Err(e.into()),
        }
        Ok(revision)
    }

    /// The response a write with a request id stores, encrypted.
    fn idempotency_row(&self, meta: &WriteMeta) -> Option<idempotency::ActiveModel> {
        let idem = meta.idempotency.as_ref()?;
        let aad = idempotency_aad(&meta.api_id, &idem.request_id);
        Some(idempotency::ActiveModel {
            api_id: sea_orm::Set(meta.api_id.clone()),
            request_id: sea_orm::Set(idem.request_id.clone()),
            method: sea_orm::Set(idem.method.to_owned()),
            fingerprint: sea_orm::Set(idem.fingerprint.clone()),
            response_enc: sea_orm::Set(self.key.encrypt(&idem.response, aad.as_bytes())),
            create_time: sea_orm::Set(meta.now),
        })
    }

    /// Creates the subscription in one statement (see `one_statement`),
    /// shared with concurrent creates when it can be (see `create_batch`).
    /// `None` when that wrote nothing because a check failed, or when only
    /// the transactional path can write it (on SQLite, a create with a
    /// request id): that path then names the error.
    async fn create_subscription_at_once(
        &self,
        s: &Subscription,
        tenant_etag: &str,
        meta: &WriteMeta,
    ) -> RepoResult<Option<Revision>> {
        if let Some(batches) = &self.batches
            && meta.idempotency.is_none()
        {
            let create = one_statement::BatchedCreate {
                row: subscription_to_row(s)?,
                tenant_etag: tenant_etag.to_owned(),
                nonce: nonce_row(meta),
                change_time: meta.now,
                subscription_limit: self.quotas.limit(Quota::Subscriptions),
            };
            match batches.write(create).await {
                Outcome::Written(revision) => {
                    self.publish(revision);
                    return Ok(Some(revision));
                }
                Outcome::Failed(e) => return Err(e),
                Outcome::Alone => {}
            }
        }
        if self.backend != DatabaseBackend::Postgres {
            return Ok(None);
        }
        let statement = one_statement::create_subscription(
            subscription_to_row(s)?,
            tenant_etag,
            nonce_row(meta).as_ref(),
            self.idempotency_row(meta).as_ref(),
            meta.now,
            self.quotas.limit(Quota::Subscriptions),
        );
        let run = match &self.lanes {
            Some(lanes) => lanes.query_one(statement).await,
            None => self.writer.query_one_raw(statement).await,
        };
        let row = match run {
            Ok(row) => row,
            Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                return Ok(None);
            }
            Err(e) => return Err(classify(e)),
        };
        let Some(row) = row else { return Ok(None) };
        let revision = row.try_get::<i64>("", "revision").map_err(classify)?;
        self.publish(revision);
        Ok(Some(revision))
    }

    /// Ends the subscription's earlier tokens as `earlier` says, stores the
    /// new token's hash and queues the confirmation message.
    async fn queue_verification(
        &self,
        txn: &DatabaseTransaction,
        tenant_id: &str,
        v: &Verification,
        earlier: EarlierTokens,
        now: Micros,
    ) -> RepoResult<()> {
        let of_subscription = sea_orm::Condition::all()
            .add(confirmation_token::Column::TenantId.eq(tenant_id))
            .add(confirmation_token::Column::SubscriptionId.eq(v.subscription_id.clone()));
        match earlier {
            EarlierTokens::None => {}
            EarlierTokens::Replaced => {
                confirmation_token::Entity::update_many()
                    .col_expr(
                        confirmation_token::Column::UsedTime,
                        sea_orm::sea_query::Expr::value(now),
                    )
                    .filter(of_subscription)
                    .filter(confirmation_token::Column::UsedTime.is_null())
                    .exec(txn)
                    .await
                    .map_err(classify)?;
            }
            EarlierTokens::Voided => {
                confirmation_token::Entity::delete_many()
                    .filter(of_subscription)
                    .exec(txn)
                    .await
                    .map_err(classify)?;
                // Their messages, if still queued, would carry dead links
                // (and go to the endpoint's new URL).
                outbox::Entity::update_many()
                    .col_expr(
                        outbox::Column::DoneTime,
                        sea_orm::sea_query::Expr::value(now),
                    )
                    .col_expr(
                        outbox::Column::LastError,
                        sea_orm::sea_query::Expr::value(
                            "superseded: the subscription's endpoint or URL changed",
                        ),
                    )
                    .filter(outbox::Column::DoneTime.is_null())
                    .filter(outbox::Column::Kind.eq(CONFIRMATION))
                    .filter(outbox::Column::TenantId.eq(tenant_id))
                    .filter(outbox::Column::SubscriptionId.eq(v.subscription_id.clone()))
                    .exec(txn)
                    .await
                    .map_err(classify)?;
            }
        }
        confirmation_token::Entity::insert(
            confirmation_token::Model {
                token_hash: v.token_hash.clone(),
                tenant_id: tenant_id.to_owned(),
                subscription_id: v.subscription_id.clone(),
                expire_time: v.token_expire_time,
                used_time: None,
                create_time: now,
            }
            .into_active_model(),
        )
        .exec_without_returning(txn)
        .await
        .map_err(classify)?;
        outbox::Entity::insert(
            outbox::Model {
                id: v.outbox_id.clone(),
                kind: CONFIRMATION.into(),
                tenant_id: tenant_id.to_owned(),
                subscription_id: v.subscription_id.clone(),
                endpoint_id: v.endpoint_id.clone(),
                payload_enc: self
                    .key
                    .encrypt(&v.payload, outbox_aad(&v.outbox_id).as_bytes()),
                attempts: 0,
                next_attempt_time: now,
                done_time: None,
                last_error: String::new(),
                create_time: now,
            }
            .into_active_model(),
        )
        .exec_without_returning(txn)
        .await
        .map_err(classify)?;
        Ok(())
    }

    /// Live state of the given tenants (all when `None`), read in one
    /// transaction so the three lists agree.
    async fn snapshot_where(&self, tenant_ids: Option<Vec<String>>) -> RepoResult<Snapshot> {
        let mut tenants = tenant::Entity::find().filter(tenant::Column::DeleteTime.is_null());
        let mut endpoints = endpoint::Entity::find().filter(endpoint::Column::DeleteTime.is_null());
        let mut subscriptions = subscription::Entity::find().filter(live_subscriptions());
        if let Some(ids) = tenant_ids {
            tenants = tenants.filter(tenant::Column::TenantId.is_in(ids.clone()));
            endpoints = endpoints.filter(endpoint::Column::TenantId.is_in(ids.clone()));
            subscriptions = subscriptions.filter(subscription::Column::TenantId.is_in(ids));
        }
        // One read transaction, so the three lists agree with each other
        // (REPEATABLE READ on PostgreSQL: one snapshot for all three); on a
        // reader, so a long snapshot never holds SQLite's writer.
        let options = match self.backend {
            DatabaseBackend::Postgres => TransactionOptions {
                isolation_level: Some(sea_orm::IsolationLevel::RepeatableRead),
                access_mode: Some(sea_orm::AccessMode::ReadOnly),
                ..Default::default()
            },
            _ => TransactionOptions::default(),
        };
        let txn = self
            .reader
            .begin_with_options(options)
            .await
            .map_err(classify)?;
        let tenants = tenants.all(&txn).await.map_err(classify)?;
        let endpoints = endpoints
            .order_by_asc(endpoint::Column::CreateTime)
            .all(&txn)
            .await
            .map_err(classify)?;
        let subscriptions = subscriptions
            .order_by_asc(subscription::Column::CreateTime)
            .order_by_asc(subscription::Column::SubscriptionId)
            .all(&txn)
            .await
            .map_err(classify)?;
        txn.commit().await.map_err(classify)?;
        Ok(Snapshot {
            tenants: tenants
                .into_iter()
                .map(tenant_from_row)
                .collect::<RepoResult<_>>()?,
            endpoints: endpoints
                .into_iter()
                .map(|e| self.endpoint_from_row(e))
                .collect::<RepoResult<_>>()?,
            subscriptions: subscriptions
                .into_iter()
                .map(subscription_from_row)
                .collect::<RepoResult<_>>()?,
        })
    }

    /// Tells this process's followers that `revision` committed.
    fn publish(&self, revision: Revision) {
        announce(&self.revisions, revision);
        if let Some(committed) = &self.committed {
            announce(committed, revision);
        }
    }

    fn seal(&self, secret: &str, aad: &str) -> Vec<u8> {
        self.key.encrypt(secret.as_bytes(), aad.as_bytes())
    }

    fn open(&self, blob: &[u8], aad: &str) -> RepoResult<String> {
        let plain = self
            .key
            .decrypt(blob, aad.as_bytes())
            .map_err(|e| RepoError::Internal(Box::new(e)))?;
        String::from_utf8(plain).map_err(|e| RepoError::Internal(Box::new(e)))
    }

    fn credential_from_row(&self, row: credential::Model) -> RepoResult<Credential> {
        let secret = self.open(&row.secret_enc, &credential_aad(&row.api_id))?;
        Ok(Credential {
            role: Role::parse(&row.role)
                .ok_or_else(|| internal(format!("unknown role {}", row.role)))?,
            api_id: row.api_id,
            tenant_id: row.tenant_id,
            description: row.description,
            secret,
            create_time: row.create_time,
            update_time: row.update_time,
            revoke_time: row.revoke_time,
            etag: row.etag,
        })
    }

    fn endpoint_from_row(&self, row: endpoint::Model) -> RepoResult<Endpoint> {
        let aad = endpoint_aad(&row.tenant_id, &row.endpoint_id);
        let secret = self.open(&row.secret_enc, &aad)?;
        let previous_secret = match (&row.previous_secret_enc, row.previous_secret_expire_time) {
            (Some(blob), Some(expire_time)) => Some(PreviousSecret {
                secret: self.open(blob, &format!("{aad}:previous"))?,
                expire_time,
            }),
            _ => None,
        };
        Ok(Endpoint {
            tenant_id: row.tenant_id,
            endpoint_id: row.endpoint_id,
            url: row.url,
            description: row.description,
            enabled: row.enabled,
            secret,
            previous_secret,
            create_time: row.create_time,
            update_time: row.update_time,
            delete_time: row.delete_time,
            etag: row.etag,
        })
    }

    fn endpoint_to_row(&self, e: &Endpoint) -> endpoint::Model {
        let aad = endpoint_aad(&e.tenant_id, &e.endpoint_id);
        endpoint::Model {
            tenant_id: e.tenant_id.clone(),
            endpoint_id: e.endpoint_id.clone(),
            url: e.url.clone(),
            description: e.description.clone(),
            enabled: e.enabled,
            secret_enc: self.seal(&e.secret, &aad),
            previous_secret_enc: e
                .previous_secret
                .as_ref()
                .map(|p| self.seal(&p.secret, &format!("{aad}:previous"))),
            previous_secret_expire_time: e.previous_secret.as_ref().map(|p| p.expire_time),
            create_time: e.create_time,
            update_time: e.update_time,
            delete_time: e.delete_time,
            etag: e.etag.clone(),
        }
    }
}

/// How often the SQLite write-ahead log is copied back into the database.
const WAL_CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Checkpoints SQLite's write-ahead log from a reader connection until the
/// repository closes. The writer's automatic checkpoint is off: it ran inside
/// a commit, so every few batches one commit also wrote back a thousand
/// pages while every other write waited. A PASSIVE checkpoint never blocks
/// the writer or readers; a commit only appends to the log.
async fn checkpoint_wal(reader: DatabaseConnection, mut closed: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = closed.changed() => return,
            _ = tokio::time::sleep(WAL_CHECKPOINT_EVERY) => {}
        }
        if let Err(e) = reader
            .execute_unprepared("PRAGMA wal_checkpoint(PASSIVE)")
            .await
        {
            tracing::warn!(error = %e, "write-ahead log checkpoint failed; retrying");
        }
    }
}

/// At most one NOTIFY per this interval: each is a transaction of its own,
/// and a few milliseconds are nothing next to the poll it replaces.
const NOTIFY_SPACING: Duration = Duration::from_millis(5);

/// PostgreSQL: tells the other replicas about this process's commits, with
/// one NOTIFY per burst of commits, sent after they committed.
///
/// A NOTIFY inside each writing transaction would serialise all commits:
/// PostgreSQL holds a global lock on its notification queue from a
/// notifying transaction's commit until it ends, WAL flush included. Here
/// the NOTIFY runs on a connection of its own with `synchronous_commit`
/// off, so it waits for no flush either. A notification lost here (a crash,
/// a dropped connection) only delays the change until the other replicas'
/// next poll.
async fn notify_replicas(
    url: String,
    mut committed: watch::Receiver<Revision>,
    mut closed: watch::Receiver<bool>,
) {
    use sea_orm::sqlx::postgres::PgConnection;
    use sea_orm::sqlx::{Connection, query};

    async fn connect(url: &str) -> Result<PgConnection, sea_orm::sqlx::Error> {
        let mut conn = PgConnection::connect(url).await?;
        query("SET synchronous_commit = off")
            .execute(&mut conn)
            .await?;
        Ok(conn)
    }

    let mut conn = None;
    loop {
        tokio::select! {
            _ = closed.changed() => return,
            changed = committed.changed() => if changed.is_err() { return },
        }
        let revision = *committed.borrow_and_update();
        let sent = async {
            if conn.is_none() {
                conn = Some(connect(&url).await?);
            }
            let Some(c) = conn.as_mut() else {
                return Ok(());
            };
            query("SELECT pg_notify($1, $2)")
                .bind(CHANGES_CHANNEL)
                .bind(revision.to_string())
                .execute(c)
                .await
                .map(|_| ())
        };
        if let Err(e) = sent.await {
            conn = None;
            if !*closed.borrow() {
                tracing::warn!(
                    error = %e,
                    "cannot notify other replicas of a commit; they see it at their next poll"
                );
            }
        }
        // Commits in the meantime go out together with the next one.
        tokio::time::sleep(NOTIFY_SPACING).await;
    }
}

/// Publishes revisions announced by other replicas until the repository closes.
async fn listen_for_changes(
    url: String,
    revisions: watch::Sender<Revision>,
    mut closed: watch::Receiver<bool>,
) {
    use sea_orm::sqlx::postgres::PgListener;
    let mut backoff = Duration::from_millis(200);
    while !*closed.borrow() {
        let listener = async {
            let mut listener = PgListener::connect(&url).await?;
            listener.listen(CHANGES_CHANNEL).await?;
            Ok::<_, sea_orm::sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            _ = closed.changed() => return,
            l = listener => match l {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot LISTEN for changes; polling only until it works");
                    tokio::select! {
                        _ = closed.changed() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            },
        };
        backoff = Duration::from_millis(200);
        loop {
            tokio::select! {
                _ = closed.changed() => return,
                n = listener.recv() => match n {
                    Ok(n) => {
                        if let Ok(revision) = n.payload().parse::<Revision>() {
                            revisions.send_if_modified(|current| {
                                let newer = revision > *current;
                                if newer {
                                    *current = revision;
                                }
                                newer
                            });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                        break;
                    }
                },
            }
        }
    }
}

/// Page cache per SQLite connection, in KiB (SQLite's default is 2 MiB,
/// too small for random access into a large subscriptions table).
const SQLITE_WRITER_CACHE_KIB: u32 = 65_536;
const SQLITE_READER_CACHE_KIB: u32 = 16_384;
/// How much of the database file each inline reader memory-maps. Only those
/// map it: mapped pages count in RSS once per connection that touched them,
/// and the pool's readers (start-up load, listings) touch the whole file.
pub(crate) const SQLITE_MMAP_BYTES: i64 = 1 << 31;

fn sqlite_options(settings: &DatabaseSettings, pool: u32) -> ConnectOptions {
    // The writer is the pool of one.
    let writer = pool == 1;
    let cache_kib = if pool == 1 {
        SQLITE_WRITER_CACHE_KIB
    } else {
        SQLITE_READER_CACHE_KIB
    };
    let mut opts = ConnectOptions::new(settings.url.clone());
    opts.max_connections(pool)
        .min_connections(1)
        .acquire_timeout(settings.acquire_timeout)
        .test_before_acquire_if_idle_for(PING_IF_IDLE_FOR)
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(move |o| {
            o.create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // FULL: an acknowledged write survives power loss.
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10))
                .pragma("cache_size", format!("-{cache_kib}"))
                // Checkpoints run in the background (see checkpoint_wal).
                .pragma("wal_autocheckpoint", if pool == 1 { "0" } else { "1000" })
                // The writer's savepoints (one per write of a group-commit
                // batch) journal the pages they change; past 64 KiB a
                // batch's sub-journal would spill to a temporary file, one
                // write(2) per page. In memory it is dropped at each
                // release instead.
                .pragma("temp_store", if pool == 1 { "memory" } else { "default" })
        })
        .map_sqlx_sqlite_pool_opts(move |pool| {
            let pool = pool.after_connect(|conn, _| Box::pin(stable_plans(conn)));
            if writer {
                pool.after_release(|conn, _| Box::pin(sqlite_writer::writer_is_clean(conn)))
            } else {
                pool
            }
        });
    opts
}

/// Turns SQLite's memory statistics off for this process. With them on (the
/// bundled build's default) every allocation and free inside SQLite takes
/// one process-wide mutex, and sqlx copies each row's values on its worker
/// thread and frees them on the thread that reads the row: in a
/// ListSubscriptions profile those threads queued on that mutex (futex
/// wake-ups were a quarter of the samples). Nothing here reads the
/// statistics.
///
/// Call before SQLite is first used, while no other thread can use it: the
/// server does so first thing in `main`. Returns false when SQLite was
/// already initialized, in which case nothing changed.
pub fn sqlite_memory_statistics_off() -> bool {
    use rusqlite::ffi;
    // SAFETY: the caller guarantees no other thread is using SQLite;
    // MEMSTATUS takes one int (0: off). After initialization the call is
    // refused with SQLITE_MISUSE and changes nothing.
    let rc = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as std::ffi::c_int) };
    rc == ffi::SQLITE_OK
}

/// Turns on SQLite's query planner stability guarantee, as the inline
/// readers do: the bundled SQLite otherwise plans with some bound values
/// and prepares a statement again whenever they change. In a ListSubscriptions
/// profile that re-preparing was 30 % of the pool threads' CPU (each page
/// binds another tenant). There is no pragma for it, only
/// `sqlite3_db_config`.
async fn stable_plans(
    conn: &mut sea_orm::sqlx::SqliteConnection,
) -> Result<(), sea_orm::sqlx::Error> {
    match planner_stability(conn, 1).await? {
        Ok(_) => Ok(()),
        Err(rc) => Err(sea_orm::sqlx::Error::Configuration(
            format!("enabling SQLite's query planner stability guarantee failed ({rc})").into(),
        )),
    }
}

/// Sets a connection's query planner stability guarantee (`value` 1: on,
/// 0: off, -1: as it is) and returns the setting after the call, or
/// SQLite's error code.
async fn planner_stability(
    conn: &mut sea_orm::sqlx::SqliteConnection,
    value: std::ffi::c_int,
) -> Result<Result<bool, std::ffi::c_int>, sea_orm::sqlx::Error> {
    use rusqlite::ffi;
    let mut handle = conn.lock_handle().await?;
    let mut now: std::ffi::c_int = -1;
    // SAFETY: the handle is the open connection's, and its lock keeps
    // sqlx's worker thread from using it meanwhile. ENABLE_QPSG takes an
    // int and a pointer to an int that receives the setting; `now`
    // outlives the call.
    let rc = unsafe {
        ffi::sqlite3_db_config(
            handle.as_raw_handle().as_ptr(),
            ffi::SQLITE_DBCONFIG_ENABLE_QPSG,
            value,
            &mut now as *mut std::ffi::c_int,
        )
    };
    Ok(if rc == ffi::SQLITE_OK {
        Ok(now == 1)
    } else {
        Err(rc)
    })
}

/// Inline readers for a SQLite file (an in-memory database is private to
/// the pool's connections, so it has none).
fn open_inline_reader(reader: &DatabaseConnection) -> Result<Option<InlineReader>, DbErr> {
    let options = reader.get_sqlite_connection_pool().connect_options();
    let path = options.get_filename();
    if path.as_os_str().is_empty() || path.to_str().is_some_and(|p| p.contains(":memory:")) {
        return Ok(None);
    }
    // One per runtime thread covers every reader that can run at once
    // (a read never awaits while it holds its connection).
    let connections = std::thread::available_parallelism().map_or(2, |n| n.get());
    InlineReader::open(path, connections, SQLITE_READER_CACHE_KIB)
        .map(Some)
        .map_err(|e| DbErr::Custom(format!("opening the SQLite inline readers: {e}")))
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

/// Tells this process's followers that `revision` committed (never moves
/// the announced revision backwards).
fn announce(revisions: &watch::Sender<Revision>, revision: Revision) {
    revisions.send_if_modified(|current| {
        let newer = revision > *current;
        if newer {
            *current = revision;
        }
        newer
    });
}

/// How revisions are made.
///
/// SQLite has one writer at a time, so revisions come from a counter row
/// updated inside each write transaction: counter order is commit order.
///
/// PostgreSQL writers run concurrently. A transaction's revisions are its
/// transaction id shifted left by [`PG_REVISION_SHIFT`], plus the row's
/// index within the transaction. Readers only see change rows below the
/// oldest transaction still running (`pg_snapshot_xmin`, see
/// [`SeaRepository::changes_since`]): every transaction with a smaller id
/// has finished by then, so a reader that has seen revision N never later
/// finds a committed change below N. Revisions are therefore monotonic in
/// the order readers see them, but sparse.
const PG_REVISION_SHIFT: u32 = 20;

/// Readers' horizon on PostgreSQL: change rows below it are final. Evaluated
/// inside the reading statement, so it uses that statement's snapshot.
const PG_HORIZON_SQL: &str = "(pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20)";

fn pg_revision_base(xid: i64) -> RepoResult<Revision> {
    xid.checked_shl(PG_REVISION_SHIFT)
        .filter(|r| r >> PG_REVISION_SHIFT == xid)
        .ok_or_else(|| internal(format!("transaction id {xid} is beyond the revision range")))
}

/// The first revision of a write transaction.
async fn first_revision(txn: &DatabaseTransaction) -> RepoResult<Revision> {
    let backend = txn.get_database_backend();
    let sql = match backend {
        DatabaseBackend::Postgres => "SELECT pg_current_xact_id()::text::bigint AS value",
        _ => "UPDATE revision_counter SET value = value + 1 WHERE id = 1 RETURNING value",
    };
    let value = txn
        .query_one_raw(Statement::from_string(backend, sql))
        .await
        .map_err(classify)?
        .ok_or_else(|| internal("revision counter row is missing"))?
        .try_get::<i64>("", "value")
        .map_err(classify)?;
    match backend {
        DatabaseBackend::Postgres => pg_revision_base(value),
        _ => Ok(value),
    }
}

/// Appends change-log rows. The first row of a transaction uses the
/// revision taken at its start; further rows take the next ones.
struct ChangeLog {
    next: Option<Revision>,
    last: Revision,
    /// A batched SQLite write's source of further revisions.
    batch: Option<Arc<AtomicI64>>,
}

impl ChangeLog {
    fn new(first: Revision) -> Self {
        ChangeLog {
            next: Some(first),
            last: first,
            batch: None,
        }
    }

    /// The change log of a write that began with `first`.
    fn of(txn: &WriteTxn, first: Revision) -> Self {
        ChangeLog {
            batch: txn.batch_revisions(),
            ..ChangeLog::new(first)
        }
    }

    async fn next_revision(&mut self, txn: &DatabaseTransaction) -> RepoResult<Revision> {
        if let Some(r) = self.next.take() {
            return Ok(r);
        }
        if let Some(next) = &self.batch {
            return Ok(next.fetch_add(1, Ordering::SeqCst));
        }
        match txn.get_database_backend() {
            DatabaseBackend::Postgres => {
                let next = self.last + 1;
                if next >> PG_REVISION_SHIFT != self.last >> PG_REVISION_SHIFT {
                    return Err(internal(format!(
                        "one transaction may record at most {} changes",
                        1u64 << PG_REVISION_SHIFT
                    )));
                }
                Ok(next)
            }
            _ => first_revision(txn).await,
        }
    }

    async fn record(
        &mut self,
        txn: &DatabaseTransaction,
        tenant_id: Option<&str>,
        resource_type: &str,
        resource_key: &str,
        kind: &str,
        now: Micros,
    ) -> RepoResult<()> {
        let revision = self.next_revision(txn).await?;
        self.last = revision;
        let row = change::ActiveModel {
            revision: sea_orm::Set(revision),
            tenant_id: sea_orm::Set(tenant_id.map(str::to_owned)),
            resource_type: sea_orm::Set(resource_type.to_owned()),
            resource_key: sea_orm::Set(resource_key.to_owned()),
            kind: sea_orm::Set(kind.to_owned()),
            change_time: sea_orm::Set(now),
        };
        change::Entity::insert(row)
            .exec_without_returning(txn)
            .await
            .map_err(classify)?;
        Ok(())
    }
}

/// The request nonce a signed write records.
fn nonce_row(meta: &WriteMeta) -> Option<nonce::ActiveModel> {
    Some(nonce::ActiveModel {
        api_id: sea_orm::Set(meta.api_id.clone()),
        nonce: sea_orm::Set(meta.nonce.clone()?),
        expire_time: sea_orm::Set(meta.nonce_expire_time),
    })
}

fn token_state(row: &confirmation_token::Model) -> TokenState {
    TokenState {
        tenant_id: row.tenant_id.clone(),
        used: row.used_time.is_some(),
        expire_time: row.expire_time,
    }
}

pub(super) fn credential_aad(api_id: &str) -> String {
    format!("credential:{api_id}")
}

pub(super) fn endpoint_aad(tenant_id: &str, endpoint_id: &str) -> String {
    format!("endpoint:{tenant_id}/{endpoint_id}")
}

pub(super) fn outbox_aad(id: &str) -> String {
    format!("outbox:{id}")
}

pub(super) fn idempotency_aad(api_id: &str, request_id: &str) -> String {
    format!("idempotency:{api_id}/{request_id}")
}

fn tenant_from_row(row: tenant::Model) -> RepoResult<Tenant> {
    Ok(Tenant {
        state: TenantState::parse(&row.state)
            .ok_or_else(|| internal(format!("unknown tenant state {}", row.state)))?,
        settings: TenantSettings {
            require_verification: row.require_verification,
            https_only: row.https_only,
            default_ttl_seconds: row.default_ttl_seconds,
            max_ttl_seconds: row.max_ttl_seconds,
        },
        tenant_id: row.tenant_id,
        display_name: row.display_name,
        create_time: row.create_time,
        update_time: row.update_time,
        delete_time: row.delete_time,
        etag: row.etag,
    })
}

fn tenant_to_row(t: &Tenant) -> tenant::Model {
    tenant::Model {
        tenant_id: t.tenant_id.clone(),
        display_name: t.display_name.clone(),
        state: t.state.as_str().to_owned(),
        require_verification: t.settings.require_verification,
        https_only: t.settings.https_only,
        default_ttl_seconds: t.settings.default_ttl_seconds,
        max_ttl_seconds: t.settings.max_ttl_seconds,
        create_time: t.create_time,
        update_time: t.update_time,
        delete_time: t.delete_time,
        etag: t.etag.clone(),
    }
}

fn event_type_from_row(row: event_type::Model) -> EventType {
    EventType {
        name: row.name,
        description: row.description,
        schema_json: row.schema_json,
        legacy_code: row.legacy_code,
        deprecated: row.deprecated,
        create_time: row.create_time,
        update_time: row.update_time,
        etag: row.etag,
    }
}

fn event_type_to_row(e: &EventType) -> event_type::Model {
    event_type::Model {
        name: e.name.clone(),
        description: e.description.clone(),
        schema_json: e.schema_json.clone(),
        legacy_code: e.legacy_code,
        deprecated: e.deprecated,
        create_time: e.create_time,
        update_time: e.update_time,
        etag: e.etag.clone(),
    }
}

/// The change log after `$1`, at most `$2` rows, each subscription change
/// with the subscription's row as of the same snapshot (NULLs when it is
/// gone): one round trip where the follower took two. Written out, and its
/// rows read by position, because the follower reads it after every batch
/// of writes: building it with sea-query and mapping rows by prefixed
/// column names were most of the follower's time in a create profile.
const CHANGES_SINCE: &str = "SELECT c.revision, c.tenant_id, c.resource_type, c.resource_key, c.kind, \
     s.tenant_id, s.subscription_id, s.endpoint_id, s.name, s.event_types, s.status, \
     s.expire_time, s.create_time, s.update_time, s.etag \
     FROM changes c LEFT JOIN subscriptions s ON c.resource_type = 'subscription' \
     AND s.tenant_id = c.tenant_id AND s.subscription_id = c.resource_key \
     WHERE c.revision > $1";
const CHANGES_ORDER: &str = "ORDER BY c.revision LIMIT $2";

/// One row of [`CHANGES_SINCE`]: the change, with the subscription if the
/// change is a subscription's and the subscription is there.
fn change_from_row(row: &sea_orm::QueryResult) -> RepoResult<ChangeRecord> {
    let subscription = match at::<Option<String>>(row, 5)? {
        None => None,
        Some(tenant_id) => Some(subscription_from_row(subscription::Model {
            tenant_id,
            subscription_id: at(row, 6)?,
            endpoint_id: at(row, 7)?,
            name: at(row, 8)?,
            event_types: at(row, 9)?,
            status: at(row, 10)?,
            expire_time: at(row, 11)?,
            create_time: at(row, 12)?,
            update_time: at(row, 13)?,
            etag: at(row, 14)?,
        })?),
    };
    Ok(ChangeRecord {
        revision: at(row, 0)?,
        tenant_id: at(row, 1)?,
        resource_type: at(row, 2)?,
        resource_key: at(row, 3)?,
        kind: at(row, 4)?,
        subscription,
    })
}

/// Column `index` of `row`.
fn at<T: sea_orm::TryGetable>(row: &sea_orm::QueryResult, index: usize) -> RepoResult<T> {
    row.try_get_by_index(index).map_err(classify)
}

fn subscription_from_row(row: subscription::Model) -> RepoResult<Subscription> {
    Ok(Subscription {
        event_types: serde_json::from_str(&row.event_types)
            .map_err(|e| RepoError::Internal(Box::new(e)))?,
        status: SubscriptionStatus::parse(&row.status)
            .ok_or_else(|| internal(format!("unknown subscription status {}", row.status)))?,
        tenant_id: row.tenant_id,
        subscription_id: row.subscription_id,
        endpoint_id: row.endpoint_id,
        name: row.name,
        expire_time: row.expire_time,
        create_time: row.create_time,
        update_time: row.update_time,
        etag: row.etag,
    })
}

fn subscription_to_row(s: &Subscription) -> RepoResult<subscription::Model> {
    Ok(subscription::Model {
        tenant_id: s.tenant_id.clone(),
        subscription_id: s.subscription_id.clone(),
        endpoint_id: s.endpoint_id.clone(),
        name: s.name.clone(),
        event_types: serde_json::to_string(&s.event_types)
            .map_err(|e| RepoError::Internal(Box::new(e)))?,
        status: s.status.as_str().to_owned(),
        expire_time: s.expire_time,
        create_time: s.create_time,
        update_time: s.update_time,
        etag: s.etag.clone(),
    })
}

/// Marks every column of a model as set, for a full-row UPDATE.
fn all_set<M, A>(model: M) -> A
where
    M: IntoActiveModel<A>,
    A: ActiveModelTrait,
{
    model.into_active_model().reset_all()
}

/// Runs a keyset page over `select`, ordered by (create_time, key).
async fn page<E, C>(
    db: &C,
    select: Select<E>,
    time_col: E::Column,
    key_col: E::Column,
    page: &PageRequest,
) -> RepoResult<(Vec<E::Model>, bool, u64)>
where
    E: EntityTrait,
    E::Model: Sync,
    C: ConnectionTrait,
{
    let total = select.clone().count(db).await.map_err(classify)?;
    let mut q = select;
    if let Some((t, key)) = &page.after {
        q = q.filter(
            sea_orm::Condition::any().add(time_col.gt(*t)).add(
                sea_orm::Condition::all()
                    .add(time_col.eq(*t))
                    .add(key_col.gt(key.clone())),
            ),
        );
    }
    let mut rows = q
        .order_by_asc(time_col)
        .order_by_asc(key_col)
        .offset(page.skip)
        .limit(page.limit + 1)
        .all(db)
        .await
        .map_err(classify)?;
    let has_more = rows.len() as u64 > page.limit;
    rows.truncate(page.limit as usize);
    Ok((rows, has_more, total))
}

async fn load_tenant_for_write(
    txn: &DatabaseTransaction,
    tenant_id: &str,
) -> RepoResult<tenant::Model> {
    let row = by_key(
        txn,
        tenant::Entity::find_by_id(tenant_id.to_owned()).lock_shared(),
    )
    .await?
    .filter(|t| t.delete_time.is_none())
    .ok_or(RepoError::NotFound("tenant"))?;
    ensure_tenant_active(tenant_id, &row.state)?;
    Ok(row)
}

fn ensure_tenant_active(tenant_id: &str, state: &str) -> RepoResult<()> {
    if state != TenantState::Active.as_str() {
        return Err(RepoError::Precondition(format!(
            "tenant {tenant_id} is suspended; its resources cannot be changed"
        )));
    }
    Ok(())
}

/// What a subscription write checks of its parents: the tenant is live and
/// active, the endpoint live; on PostgreSQL both rows stay share-locked (in
/// the usual order, tenant first) until commit. One statement when both
/// rows exist, the common case; otherwise the separate reads name what is
/// missing. Returns the tenant's etag.
async fn ensure_parents(
    txn: &DatabaseTransaction,
    tenant_id: &str,
    endpoint_id: &str,
) -> RepoResult<String> {
    let backend = txn.get_database_backend();
    let (params, lock) = match backend {
        DatabaseBackend::Postgres => (("$1", "$2"), " FOR SHARE"),
        _ => (("?", "?"), ""),
    };
    let sql = format!(
        "SELECT t.state, t.etag, t.delete_time AS tenant_delete_time, \
         e.delete_time AS endpoint_delete_time \
         FROM tenants t JOIN endpoints e ON e.tenant_id = t.tenant_id \
         WHERE t.tenant_id = {} AND e.endpoint_id = {}{lock}",
        params.0, params.1
    );
    let statement = Statement::from_sql_and_values(
        backend,
        sql,
        [tenant_id.to_owned().into(), endpoint_id.to_owned().into()],
    );
    let Some(row) = txn.query_one_raw(statement).await.map_err(classify)? else {
        let tenant = load_tenant_for_write(txn, tenant_id).await?;
        ensure_live_endpoint(txn, tenant_id, endpoint_id).await?;
        return Ok(tenant.etag);
    };
    let field = |e: DbErr| RepoError::Internal(e.into());
    let tenant_deleted: Option<i64> = row.try_get("", "tenant_delete_time").map_err(field)?;
    if tenant_deleted.is_some() {
        return Err(RepoError::NotFound("tenant"));
    }
    let state: String = row.try_get("", "state").map_err(field)?;
    ensure_tenant_active(tenant_id, &state)?;
    let endpoint_deleted: Option<i64> = row.try_get("", "endpoint_delete_time").map_err(field)?;
    if endpoint_deleted.is_some() {
        return Err(RepoError::NotFound("endpoint"));
    }
    row.try_get("", "etag").map_err(field)
}

async fn ensure_live_endpoint(
    txn: &DatabaseTransaction,
    tenant_id: &str,
    endpoint_id: &str,
) -> RepoResult<()> {
    by_key(
        txn,
        endpoint::Entity::find_by_id((tenant_id.to_owned(), endpoint_id.to_owned())).lock_shared(),
    )
    .await?
    .filter(|e| e.delete_time.is_none())
    .map(|_| ())
    .ok_or(RepoError::NotFound("endpoint"))
}

/// The row a primary-key select finds. `Select::one` would add `LIMIT ?`,
/// and the bundled SQLite, which looks at a bound LIMIT when it plans, then
/// prepares the statement again every time it runs: a key selects at most
/// one row anyway.
async fn by_key<E, C>(db: &C, select: Select<E>) -> RepoResult<Option<E::Model>>
where
    E: EntityTrait,
    C: ConnectionTrait,
{
    let statement = sea_orm::QueryTrait::build(&select, db.get_database_backend());
    model_of::<E>(db.query_one_raw(statement).await.map_err(classify)?)
}

/// The model in a row a key read returned.
fn model_of<E: EntityTrait>(row: Option<sea_orm::QueryResult>) -> RepoResult<Option<E::Model>> {
    row.map(|row| E::Model::from_query_result(&row, "").map_err(classify))
        .transpose()
}

/// Soft-deletes the given live subscriptions, recording each change.
async fn soft_delete_subscriptions(
    txn: &DatabaseTransaction,
    rows: Vec<subscription::Model>,
    log: &mut ChangeLog,
    now: Micros,
) -> RepoResult<()> {
    for row in rows {
        let mut am = row.clone().into_active_model();
        am.status = sea_orm::Set(SubscriptionStatus::Deleted.as_str().to_owned());
        am.update_time = sea_orm::Set(now);
        am.etag = sea_orm::Set(new_etag());
        am.update(txn).await.map_err(classify)?;
        log.record(
            txn,
            Some(&row.tenant_id),
            "subscription",
            &row.subscription_id,
            "DELETE",
            now,
        )
        .await?;
    }
    Ok(())
}

fn live_subscriptions() -> sea_orm::Condition {
    sea_orm::Condition::all()
        .add(subscription::Column::Status.ne(SubscriptionStatus::Deleted.as_str()))
}

#[async_trait::async_trait]
impl Repository for SeaRepository {
    async fn current_revision(&self) -> RepoResult<Revision> {
        let sql = match self.backend {
            // Every revision below the horizon is final; see PG_REVISION_SHIFT.
            DatabaseBackend::Postgres => format!("SELECT {PG_HORIZON_SQL} - 1 AS value"),
            _ => "SELECT value FROM revision_counter WHERE id = 1".to_owned(),
        };
        let row = self
            .reader
            .query_one_raw(Statement::from_string(self.backend, sql))
            .await
            .map_err(classify)?
            .ok_or_else(|| internal("revision counter row is missing"))?;
        row.try_get::<i64>("", "value").map_err(classify)
    }

    async fn find_idempotency(
        &self,
        api_id: &str,
        request_id: &str,
        not_before: Micros,
    ) -> RepoResult<Option<IdempotencyRecord>> {
        // Read through the writer: a retry must see a record committed a
        // moment ago, whatever the reader pool's snapshot.
        let Some(row) = idempotency::Entity::find_by_id((api_id.to_owned(), request_id.to_owned()))
            .one(&self.writer)
            .await
            .map_err(classify)?
        else {
            return Ok(None);
        };
        if row.create_time < not_before {
            return Ok(None);
        }
        let response = self
            .key
            .decrypt(
                &row.response_enc,
                idempotency_aad(api_id, request_id).as_bytes(),
            )
            .map_err(|e| RepoError::Internal(Box::new(e)))?;
        Ok(Some(IdempotencyRecord {
            method: row.method,
            fingerprint: row.fingerprint,
            response,
            create_time: row.create_time,
        }))
    }

    async fn nonce_recorded(&self, api_id: &str, nonce: &str) -> RepoResult<bool> {
        // Through the writer, like `find_idempotency`: a write acknowledged a
        // moment ago must be seen.
        Ok(
            nonce::Entity::find_by_id((api_id.to_owned(), nonce.to_owned()))
                .one(&self.writer)
                .await
                .map_err(classify)?
                .is_some(),
        )
    }

    async fn record_nonce(&self, meta: &WriteMeta) -> RepoResult<()> {
        let Some(row) = nonce_row(meta) else {
            return Ok(());
        };
        nonce::Entity::insert(row)
            .exec_without_returning(&self.writer)
            .await
            .map_err(|e| match classify(e) {
                RepoError::AlreadyExists(_) => RepoError::Replay,
                other => other,
            })?;
        Ok(())
    }

    async fn purge_expired(&self, now: Micros, idempotency_before: Micros) -> RepoResult<u64> {
        let nonces = nonce::Entity::delete_many()
            .filter(nonce::Column::ExpireTime.lt(now))
            .exec(&self.writer)
            .await
            .map_err(classify)?;
        let records = idempotency::Entity::delete_many()
            .filter(idempotency::Column::CreateTime.lt(idempotency_before))
            .exec(&self.writer)
            .await
            .map_err(classify)?;
        Ok(nonces.rows_affected + records.rows_affected)
    }

    async fn changes_since(&self, after: Revision, limit: u64) -> RepoResult<Vec<ChangeRecord>> {
        let sql = match self.backend {
            // Hold readers below the oldest running writer (see
            // PG_REVISION_SHIFT).
            DatabaseBackend::Postgres => {
                format!("{CHANGES_SINCE} AND c.revision < {PG_HORIZON_SQL} {CHANGES_ORDER}")
            }
            _ => format!("{CHANGES_SINCE} {CHANGES_ORDER}"),
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let statement =
            Statement::from_sql_and_values(self.backend, sql, [after.into(), limit.into()]);
        self.read_rows(statement)
            .await?
            .iter()
            .map(change_from_row)
            .collect()
    }

    async fn pruned_through(&self) -> RepoResult<Revision> {
        let row = self
            .reader
            .query_one_raw(Statement::from_string(
                self.backend,
                "SELECT pruned_through AS value FROM revision_counter WHERE id = 1",
            ))
            .await
            .map_err(classify)?
            .ok_or_else(|| internal("revision counter row is missing"))?;
        row.try_get::<i64>("", "value").map_err(classify)
    }

    async fn prune_changes(&self, before: Micros) -> RepoResult<u64> {
        use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
        let horizon = self.current_revision().await?;
        let txn = self.begin().await?;
        let through: Option<Revision> = change::Entity::find()
            .select_only()
            .column_as(change::Column::Revision.max(), "value")
            .filter(change::Column::ChangeTime.lt(before))
            .filter(change::Column::Revision.lte(horizon))
            .into_tuple()
            .one(&txn)
            .await
            .map_err(classify)?
            .flatten();
        let Some(through) = through else {
            return Ok(0);
        };
        let result = change::Entity::delete_many()
            .filter(change::Column::Revision.lte(through))
            .exec(&txn)
            .await
            .map_err(classify)?;
        let mark = Query::update()
            .table(Alias::new("revision_counter"))
            .value(Alias::new("pruned_through"), through)
            .and_where(Expr::col(Alias::new("id")).eq(1))
            .and_where(Expr::col(Alias::new("pruned_through")).lt(through))
            .to_owned();
        txn.execute_raw(self.backend.build(&mark))
            .await
            .map_err(classify)?;
        txn.commit().await.map_err(classify)?;
        Ok(result.rows_affected)
    }

    async fn snapshot(&self, tenant_id: Option<&str>) -> RepoResult<Snapshot> {
        self.snapshot_where(tenant_id.map(|t| vec![t.to_owned()]))
            .await
    }

    async fn snapshot_tenants(&self, tenant_ids: &[String]) -> RepoResult<Snapshot> {
        self.snapshot_where(Some(tenant_ids.to_vec())).await
    }

    async fn tenant_ids(&self, after: &str, limit: u64) -> RepoResult<Vec<String>> {
        Ok(tenant::Entity::find()
            .filter(tenant::Column::DeleteTime.is_null())
            .filter(tenant::Column::TenantId.gt(after))
            .order_by_asc(tenant::Column::TenantId)
            .limit(limit)
            .all(&self.reader)
            .await
            .map_err(classify)?
            .into_iter()
            .map(|t| t.tenant_id)
            .collect())
    }

    async fn sweep_expired(&self, now: Micros) -> RepoResult<u64> {
        // PENDING_VERIFICATION stays as stored (readers present it as
        // EXPIRED): renewing an EXPIRED subscription makes it ACTIVE, which
        // an unconfirmed one must never become.
        let due_subscriptions = sea_orm::Condition::all()
            .add(subscription::Column::ExpireTime.lte(now))
            .add(subscription::Column::Status.is_in([
                SubscriptionStatus::Active.as_str(),
                SubscriptionStatus::Disabled.as_str(),
            ]));
        let due_secrets = endpoint::Column::PreviousSecretExpireTime.lte(now);
        // Cheap check first, so an idle sweeper does not take the write lock.
        let pending = subscription::Entity::find()
            .filter(due_subscriptions.clone())
            .count(&self.reader)
            .await
            .map_err(classify)?
            + endpoint::Entity::find()
                .filter(due_secrets.clone())
                .count(&self.reader)
                .await
                .map_err(classify)?;
        if pending == 0 {
            return Ok(0);
        }
        let txn = self.begin().await?;
        let revision = first_revision(&txn).await?;
        let mut log = ChangeLog::new(revision);
        // Endpoints before subscriptions: the lock order of every write.
        let mut count = 0;
        let endpoints = endpoint::Entity::find()
            .filter(due_secrets)
            .order_by_asc(endpoint::Column::TenantId)
            .order_by_asc(endpoint::Column::EndpointId)
            .lock_exclusive()
            .all(&txn)
            .await
            .map_err(classify)?;
        for row in endpoints {
            let mut am = row.clone().into_active_model();
            // The rotated-out secret leaves storage once its grace ends.
            am.previous_secret_enc = sea_orm::Set(None);
            am.previous_secret_expire_time = sea_orm::Set(None);
            am.update_time = sea_orm::Set(now);
            am.etag = sea_orm::Set(new_etag());
            am.update(&txn).await.map_err(classify)?;
            log.record(
                &txn,
                Some(&row.tenant_id),
                "endpoint",
                &row.endpoint_id,
                "UPSERT",
                now,
            )
            .await?;
            count += 1;
        }
        let subs = subscription::Entity::find()
            .filter(due_subscriptions)
            .order_by_asc(subscription::Column::TenantId)
            .order_by_asc(subscription::Column::SubscriptionId)
            .lock_exclusive()
            .all(&txn)
            .await
            .map_err(classify)?;
        for row in subs {
            let mut am = row.clone().into_active_model();
            am.status = sea_orm::Set(SubscriptionStatus::Expired.as_str().to_owned());
            am.update_time = sea_orm::Set(now);
            am.etag = sea_orm::Set(new_etag());
            am.update(&txn).await.map_err(classify)?;
            log.record(
                &txn,
                Some(&row.tenant_id),
                "subscription",
                &row.subscription_id,
                "UPSERT",
                now,
            )
            .await?;
            count += 1;
        }
        if count == 0 {
            // Raced with another replica's sweeper: give the revision back.
            txn.rollback().await.map_err(classify)?;
            return Ok(0);
        }
        txn.commit().await.map_err(classify)?;
        self.publish(log.last);
        Ok(count)
    }

    async fn import(&self, batch: &Snapshot, now: Micros) -> RepoResult<Revision> {
        // Rows per INSERT, under both backends' bind-parameter limits.
        const CHUNK: usize = 500;
        if batch.tenants.is_empty() && batch.endpoints.is_empty() && batch.subscriptions.is_empty()
        {
            return self.current_revision().await;
        }
        let txn = self.begin().await?;
        let revision = first_revision(&txn).await?;
        let mut log = ChangeLog::new(revision);
        for chunk in batch.tenants.chunks(CHUNK) {
            tenant::Entity::insert_many(chunk.iter().map(|t| tenant_to_row(t).into_active_model()))
                .exec_without_returning(&txn)
                .await
                .map_err(unique_as("tenant"))?;
        }
        for chunk in batch.endpoints.chunks(CHUNK) {
            endpoint::Entity::insert_many(
                chunk
                    .iter()
                    .map(|e| self.endpoint_to_row(e).into_active_model()),
            )
            .exec_without_returning(&txn)
            .await
            .map_err(unique_as("endpoint"))?;
        }
        for chunk in batch.subscriptions.chunks(CHUNK) {
            let rows = chunk
                .iter()
                .map(|s| subscription_to_row(s).map(IntoActiveModel::into_active_model))
                .collect::<RepoResult<Vec<_>>>()?;
            subscription::Entity::insert_many(rows)
                .exec_without_returning(&txn)
                .await
                .map_err(unique_as("subscription"))?;
        }
        let mut tenants: Vec<&str> = batch
            .tenants
            .iter()
            .map(|t| t.tenant_id.as_str())
            .chain(batch.endpoints.iter().map(|e| e.tenant_id.as_str()))
            .chain(batch.subscriptions.iter().map(|s| s.tenant_id.as_str()))
            .collect();
        tenants.sort_unstable();
        tenants.dedup();
        for t in tenants {
            quota::recount(&txn, t).await?;
            log.record(&txn, Some(t), "tenant", t, "UPSERT", now)
                .await?;
        }
        txn.commit().await.map_err(classify)?;
        self.publish(log.last);
        Ok(log.last)
    }

    async fn create_tenant(&self, t: &Tenant, meta: &WriteMeta) -> RepoResult<Revision> {
        let (txn, mut log) = self.begin_write(meta).await?;
        tenant::Entity::insert(tenant_to_row(t).into_active_model())
            .exec_without_returning(&*txn)
            .await
            .map_err(unique_as("tenant"))?;
        quota::open(&txn, &t.tenant_id).await?;
        log.record(
            &txn,
            Some(&t.tenant_id),
            "tenant",
            &t.tenant_id,
            "UPSERT",
            meta.now,
        )
        .await?;
        self.commit(txn, meta, log.last).await
    }

    async fn get_tenant(&self, tenant_id: &str) -> RepoResult<Option<Tenant>> {
        self.read_by_key(tenant::Entity::find_by_id(tenant_id.to_owned()))
            .await?
            .map(tenant_from_row)
            .transpose()
    }

    async fn list_tenants(&self, req: &PageRequest) -> RepoResult<Page<Tenant>> {
        let select = tenant::Entity::find().filter(tenant::Column::DeleteTime.is_null());
        let (rows, has_more, total) = page(
            &self.reader,
            select,
            tenant::Column::CreateTime,
            tenant::Column::TenantId,
            req,
        )
        .await?;
        Ok(Page {
            items: rows
                .into_iter()
                .map(tenant_from_row)
                .collect::<RepoResult<_>>()?,
            has_more,
            total,
        })
    }

    async fn update_tenant(
        &self,
        t: &Tenant,
        prev_etag: &str,
        meta: &WriteMeta,
    ) -> RepoResult<Revision> {
        let (txn, mut log) = self.begin_write(meta).await?;
        let result = tenant::Entity::update_many()
            .set(all_set(tenant_to_row(t)))
            .filter(tenant::Column::TenantId.eq(t.tenant_id.clone()))
            .filter(tenant::Column::Etag.eq(prev_etag))
            .filter(tenant::Column::DeleteTime.is_null())
            .exec(&*txn)
            .await
            .map_err(classify)?;
        if result.rows_affected == 0 {
            return Err(RepoError::Stale);
        }
        log.record(
            &txn,
            Some(&t.tenant_id),
            "tenant",
            &t.tenant_id,
            "UPSERT",
            meta.now,
        )
        .await?;
        self.commit(txn, meta, log.last).await
    }

    async fn delete_tenant(
        &self,
        tenant_id: &str,
        prev_etag: &str,
        force: bool,
        meta: &WriteMeta,
    ) -> RepoResult<(Tenant, Revision)> {
        let (txn, mut log) = self.begin_write(meta).await?;
        let row = by_key(
            &*txn,
            tenant::Entity::find_by_id(tenant_id.to_owned()).lock_exclusive(),
        )
        .await?
        .filter(|t| t.delete_time.is_none())
        .ok_or(RepoError::NotFound("tenant"))?;
        if !prev_etag.is_empty() && row.etag != prev_etag {
            return Err(RepoError::Stale);
        }
        // Lock order everywhere: tenant, endpoints, subscriptions (each by key).
        let endpoints = endpoint::Entity::find()
            .filter(endpoint::Column::TenantId.eq(tenant_id))
            .filter(endpoint::Column::DeleteTime.is_null())
            .order_by_asc(endpoint::Column::EndpointId)
            .lock_exclusive()
            .all(&*txn)
            .await
            .map_err(classify)?;
        let subs = subscription::Entity::find()
            .filter(subscription::Column::TenantId.eq(tenant_id))
            .filter(live_subscriptions())
            .order_by_asc(subscription::Column::SubscriptionId)
            .lock_exclusive()
            .all(&*txn)
            .await
            .map_err(classify)?;
        if !subs.is_empty() && !force {
            return Err(RepoError::Precondition(format!(
                "tenant {tenant_id} still has {} live subscriptions; delete them first or set force",
                subs.len()
            )));
        }
        quota::give_back(&txn, tenant_id, endpoints.len(), subs.len()).await?;
        soft_delete_subscriptions(&txn, subs, &mut log, meta.now).await?;
        for ep in endpoints {
            let mut am = ep.clone().into_active_model();
            am.delete_time = sea_orm::Set(Some(meta.now));
            am.update_time = sea_orm::Set(meta.now);
            am.etag = sea_orm::Set(new_etag());
            am.update(&*txn).await.map_err(classify)?;
            log.record(
                &txn,
                Some(tenant_id),
                "endpoint",
                &ep.endpoint_id,
                "DELETE",
                meta.now,
            )
            .await?;
        }
        let mut am = row.into_active_model();
        am.delete_time = sea_orm::Set(Some(meta.now));
        am.update_time = sea_orm::Set(meta.now);
        am.etag = sea_orm::Set(new_etag());
        let updated = am.update(&*txn).await.map_err(classify)?;
        log.record(
            &txn,
            Some(tenant_id),
            "tenant",
            tenant_id,
            "DELETE",
            meta.now,
        )
        .await?;
        let revision = self.commit(txn, meta, log.last).await?;
        Ok((tenant_from_row(updated)?, revision))
    }

    async fn create_credential(&self, c: &Credential, meta: &WriteMeta) -> RepoResult<Revision> {
        let (txn, mut log) = self.begin_write(meta).await?;
        if let Some(tenant_id) = &c.tenant_id {
            by_key(
                &*txn,
                tenant::Entity::find_by_id(tenant_id.clone()).lock_shared(),
            )
            .await?
            .filter(|t| t.delete_time.is_none())
            .ok_or(RepoError::NotFound("tenant"))?;
        }
        insert_credential(&txn, self, c).await?;
        log.record(
            &txn,
            c.tenant_id.as_deref(),
            "credential",
            &c.api_id,
            "UPSERT",
            meta.now,
        )
        .await?;
        self.commit(txn, meta, log.last).await
    }

    async fn get_credential(&self, api_id: &str) -> RepoResult<Option<Credential>> {
        self.read_by_key(credential::Entity::find_by_id(api_id.to_owned()))
            .await?
            .map(|row| self.credential_from_row(row))
            .transpose()
    }

    async fn list_credentials(
        &self,
        filter: &CredentialFilter,
        req: &PageRequest,
    ) -> RepoResult<Page<Credential>> {
        let mut select = credential::Entity::find();
        select = match &filter.tenant_id {
            Some(t) => select.filter(credential::Column::TenantId.eq(t.clone())),
            None => select.filter(credential::Column::TenantId.is_null()),
        };
        if !filter.show_revoked {
            select = select.filter(credential::Column::RevokeTime.is_null());
        }
        let (rows, has_more, total) = page(
            &self.reader,
            select,
            credential::Column::CreateTime,
            credential::Column::ApiId,
            req,
        )
        .await?;
        Ok(Page {
            items: rows
                .into_iter()
                .map(|r| self.credential_from_row(r))
                .collect::<RepoResult<_>>()?,
            has_more,
            total,
        })
    }

    async fn revoke_credential(
        &self,
        api_id: &str,
        meta: &WriteMeta,
    ) -> RepoResult<(Credential, Revision)> {
        let (txn, mut log) = self.begin_write(meta).await?;
        let row = by_key(
            &*txn,
            credential::Entity::find_by_id(api_id.to_owned()).lock_exclusive(),
        )
        .await?
        .ok_or(RepoError::NotFound("credential"))?;
        let updated = if row.revoke_time.is_some() {
            row
        } else {
            let mut am = row.into_active_model();
            am.revoke_time = sea_orm::Set(Some(meta.now));
            am.update_time = sea_orm::Set(meta.now);
            am.etag = sea_orm::Set(new_etag());
            am.update(&*txn).await.map_err(classify)?
        };
        log.record(
            &txn,
            updated.tenant_id.as_deref(),
            "credential",
            api_id,
            "UPSERT",
            meta.now,
        )
        .await?;
        let revision = self.commit(txn, meta, log.last).await?;
        Ok((self.credential_from_row(updated)?, revision))
    }

    async fn all_credentials(&self) -> RepoResult<Vec<Credential>> {
        credential::Entity::find()
            .all(&self.reader)
            .await
            .map_err(classify)?
            .into_iter()
            .map(|row| self.credential_from_row(row))
            .collect()
    }

    async fn count_credentials(&self) -> RepoResult<u64> {
        credential::Entity::find()
            .count(&self.reader)
            .await
            .map_err(classify)
    }

    async fn bootstrap_credential(
        &self,
        c: &Credential,
        only_if_empty: bool,
    ) -> RepoResult<Bootstrap> {
        let txn = self.begin().await?;
        if self.backend == DatabaseBackend::Postgres {
            txn.execute_raw(Statement::from_string(
                self.backend,
                format!("SELECT pg_advisory_xact_lock({BOOTSTRAP_LOCK})"),
            ))
            .await
            .map_err(classify)?;
        }
        let existing = if only_if_empty {
            if credential::Entity::find()
                .count(&txn)
                .await
                .map_err(classify)?
                > 0
            {
                return Ok(Bootstrap::Unchanged);
            }
            None
        } else {
            credential::Entity::find_by_id(c.api_id.clone())
                .one(&txn)
                .await
                .map_err(classify)?
        };
        let outcome = match existing {
            None => {
                insert_credential(&txn, self, c).await?;
                Bootstrap::Created
            }
            Some(row) => {
                let stored = self.credential_from_row(row.clone())?;
                if stored.role != Role::PlatformAdmin || stored.tenant_id.is_some() {
                    return Ok(Bootstrap::NotPlatformAdmin);
                }
                if stored.revoke_time.is_some() {
                    return Ok(Bootstrap::Revoked);
                }
                if stored.secret == c.secret {
                    return Ok(Bootstrap::Unchanged);
                }
                let mut am = row.into_active_model();
                am.secret_enc = sea_orm::Set(self.seal(&c.secret, &credential_aad(&c.api_id)));
                am.update_time = sea_orm::Set(c.update_time);
                am.etag = sea_orm::Set(new_etag());
                am.update(&txn).await.map_err(classify)?;
                Bootstrap::SecretReplaced
            }
        };
        // Other replicas' credential caches follow the change log.
        let revision = first_revision(&txn).await?;
        let mut log = ChangeLog::new(revision);
        log.record(&txn, None, "credential", &c.api_id, "UPSERT", c.update_time)
            .await?;
        txn.commit().await.map_err(classify)?;
        self.publish(revision);
        Ok(outcome)
    }

    async fn create_event_type(&self, e: &EventType, meta: &WriteMeta) -> RepoResult<Revision> {
        let (txn, mut log) = self.begin_write(meta).await?;
        if let Some(code) = e.legacy_code {
            let taken = event_type::Entity::find()
                .filter(event_type::Column::LegacyCode.eq(code))
                .count(&*txn)
                .await
                .map_err(classify)?;
            if taken > 0 {
                return Err(RepoError::AlreadyExists("event type legacy_code"));
            }
        }
        event_type::Entity::insert(event_type_to_row(e).into_active_model())
            .exec_without_returning(&*txn)
            .await
            .map_err(unique_as("event type"))?;
        log.record(&txn, None, "event_type", &e.name, "UPSERT", meta.now)
            .await?;
        self.commit(txn, meta, log.last).await
    }

    async fn get_event_type(&self, name: &str) -> RepoResult<Option<EventType>> {
        Ok(self
            .read_by_key(event_type::Entity::find_by_id(name.to_owned()))
            .await?
            .map(event_type_from_row))
    }

    async fn get_event_type_by_code(&self, legacy_code: i32) -> RepoResult<Option<EventType>> {
        Ok(event_type::Entity::find()
            .filter(event_type::Column::LegacyCode.eq(legacy_code))
            .one(&self.reader)
            .await
            .map_err(classify)?
            .map(event_type_from_row))
    }

    async fn list_event_types(&self, req: &PageRequest) -> RepoResult<Page<EventType>> {
        let (rows, has_more, total) = page(
            &self.reader,
            event_type::Entity::find(),
            event_type::Column::CreateTime,
            event_type::Column::Name,
            req,
        )
        .await?;
        Ok(Page {
            items: rows.into_iter().map(event_type_from_row).collect(),
            has_more,
            total,
        })
    }

    async fn all_event_types(&self) -> RepoResult<Vec<EventType>> {
        Ok(event_type::Entity::find()
            .order_by_asc(event_type::Column::Name)
            .all(&self.reader)
            .await
            .map_err(classify)?
            .into_iter()
            .map(event_type_from_row)
            .collect())
    }

    async fn update_event_type(
        &self,
        e: &EventType,
        prev_etag: &str,
        meta: &WriteMeta,
    ) -> RepoResult<Revision> {
        let (txn, mut log) = self.begin_write(meta).await?;
        if let Some(code) = e.legacy_code {
            let taken = event_type::Entity::find()
                .filter(event_type::Column::LegacyCode.eq(code))
                .filter(event_type::Column::Name.ne(e.name.clone()))
                .count(&*txn)
                .await
                .map_err(classify)?;
            if taken > 0 {
                return Err(RepoError::AlreadyExists("event type legacy_code"));
            }
        }
        let result = event_type::Entity::update_many()
            .set(all_set(event_type_to_row(e)))
            .filter(event_type::Column::Name.eq(e.name.clone()))
            .filter(event_type::Column::Etag.eq(prev_etag))
            .exec(&*txn)
            .await
            .map_err(unique_as("event type legacy_code"))?;
        if result.rows_affected == 0 {
            return Err(RepoError::Stale);
        }
        log.record(&txn, None, "event_type", &e.name, "UPSERT", meta.now)
            .await?;
        self.commit(txn, meta, log.last).await
    }

    async fn create_endpoint(&self, e: &Endpoint, meta: &WriteMeta) -> RepoResult<Revision> {
        let (txn, mut log) = self.begin_write(meta).await?;
        load_tenant_for_write(&txn, &e.tenant_id).await?;
        quota::take(&txn, &e.tenant_id, Quota::Endpoints, &self.quotas).await?;
        endpoint::Entity::insert(self.endpoint_to_row(e).into_active_model())
            .exec_without_returning(&*txn)
            .await
            .map_err(unique_as("endpoint"))?;
        log.record(
            &txn,
            Some(&e.tenant_id),
            "endpoint",
            &e.endpoint_id,
            "UPSERT",
            meta.now,
        )
        .await?;
        self.commit(txn, meta, log.last).await
    }

    async fn get_endpoint(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
    ) -> RepoResult<Option<Endpoint>> {
        self.read_by_key(endpoint::Entity::find_by_id((
            tenant_id.to_owned(),
            endpoint_id.to_owned(),
        )))
        .await?
        .map(|row| self.endpoint_from_row(row))
        .transpose()
    }

    async fn list_endpoints(
        &self,
        tenant_id: &str,
        req: &PageRequest,
    ) -> RepoResult<Page<Endpoint>> {
        let select = endpoint::Entity::find()
            .filter(endpoint::Column::TenantId.eq(tenant_id))
            .filter(endpoint::Column::DeleteTime.is_null());
        let (rows, has_more, total) = page(
            &self.reader,
            select,
            endpoint::Column::CreateTime,
            endpoint::Column::EndpointId,
            req,
        )
        .await?;
        Ok(Page {
            items: rows
                .into_iter()
                .map(|r| self.endpoint_from_row(r))
                .collect::<RepoResult<_>>()?,
            has_more,
            total,
        })
    }

    async fn update_endpoint(
        &self,
        e: &Endpoint,
        prev_etag: &str,
        verifications: &[Verification],
        meta: &WriteMeta,
    ) -> RepoResult<Revision> {
        let (txn, mut log) = self.begin_write(meta).await?;
        load_tenant_for_write(&txn, &e.tenant_id).await?;
        let result = endpoint::Entity::update_many()
            .set(all_set(self.endpoint_to_row(e)))
            .filter(endpoint::Column::TenantId.eq(e.tenant_id.clone()))
            .filter(endpoint::Column::EndpointId.eq(e.endpoint_id.clone()))
            .filter(endpoint::Column::Etag.eq(prev_etag))
            .filter(endpoint::Column::DeleteTime.is_null())
            .exec(&*txn)
            .await
            .map_err(classify)?;
        if result.rows_affected == 0 {
            return Err(RepoError::Stale);
        }
        log.record(
            &txn,
            Some(&e.tenant_id),
            "endpoint",
            &e.endpoint_id,
            "UPSERT",
            meta.now,
        )
        .await?;
        for v in verifications {
            let pending = subscription::Entity::update_many()
                .col_expr(
                    subscription::Column::Status,
                    sea_orm::sea_query::Expr::value(
                        SubscriptionStatus::PendingVerification.as_str(),
                    ),
                )
                .col_expr(
                    subscription::Column::UpdateTime,
                    sea_orm::sea_query::Expr::value(meta.now),
                )
                .col_expr(
                    subscription::Column::Etag,
                    sea_orm::sea_query::Expr::value(new_etag()),
                )
                .filter(subscription::Column::TenantId.eq(e.tenant_id.clone()))
                .filter(subscription::Column::SubscriptionId.eq(v.subscription_id.clone()))
                .filter(live_subscriptions())
                .exec(&*txn)
                .await
                .map_err(classify)?;
            if pending.rows_affected == 0 {
                continue;
            }
            log.record(
                &txn,
                Some(&e.tenant_id),
                "subscription",
                &v.subscription_id,
                "UPSERT",
                meta.now,
            )
            .await?;
            self.queue_verification(&txn, &e.tenant_id, v, EarlierTokens::Voided, meta.now)
                .await?;
        }
        if verifications.is_empty() {
            self.commit(txn, meta, log.last).await
        } else {
            self.commit_queued(txn, meta, log.last).await
        }
    }

    async fn delete_endpoint(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
        prev_etag: &str,
        force: bool,
        meta: &WriteMeta,
    ) -> RepoResult<(Endpoint, Revision)> {
        let (txn, mut log) = self.begin_write(meta).await?;
        load_tenant_for_write(&txn, tenant_id).await?;
        let row = by_key(
            &*txn,
            endpoint::Entity::find_by_id((tenant_id.to_owned(), endpoint_id.to_owned()))
                .lock_exclusive(),
        )
        .await?
        .filter(|e| e.delete_time.is_none())
        .ok_or(RepoError::NotFound("endpoint"))?;
        if !prev_etag.is_empty() && row.etag != prev_etag {
            return Err(RepoError::Stale);
        }
        let subs = subscription::Entity::find()
            .filter(subscription::Column::TenantId.eq(tenant_id))
            .filter(subscription::Column::EndpointId.eq(endpoint_id))
            .filter(live_subscriptions())
            .order_by_asc(subscription::Column::SubscriptionId)
            .lock_exclusive()
            .all(&*txn)
            .await
            .map_err(classify)?;
        if !subs.is_empty() && !force {
            return Err(RepoError::Precondition(format!(
                "endpoint {endpoint_id} still has {} live subscriptions; delete them first or set force",
                subs.len()
            )));
        }
        quota::give_back(&txn, tenant_id, 1, subs.len()).await?;
        soft_delete_subscriptions(&txn, subs, &mut log, meta.now).await?;
        let mut am = row.into_active_model();
        am.delete_time = sea_orm::Set(Some(meta.now));
        am.update_time = sea_orm::Set(meta.now);
        am.etag = sea_orm::Set(new_etag());
        let updated = am.update(&*txn).await.map_err(classify)?;
        log.record(
            &txn,
            Some(tenant_id),
            "endpoint",
            endpoint_id,
            "DELETE",
            meta.now,
        )
        .await?;
        let revision = self.commit(txn, meta, log.last).await?;
        Ok((self.endpoint_from_row(updated)?, revision))
    }

    async fn create_subscription(
        &self,
        s: &Subscription,
        verification: Option<&Verification>,
        tenant_etag: &str,
        meta: &WriteMeta,
    ) -> RepoResult<Revision> {
        if verification.is_none()
            && let Some(revision) = self
                .create_subscription_at_once(s, tenant_etag, meta)
                .await?
        {
            return Ok(revision);
        }
        let (txn, mut log) = self.begin_write(meta).await?;
        if ensure_parents(&txn, &s.tenant_id, &s.endpoint_id).await? != tenant_etag {
            return Err(RepoError::TenantChanged);
        }
        quota::take(&txn, &s.tenant_id, Quota::Subscriptions, &self.quotas).await?;
        // The key (its row stays after a delete) and the live name are both
        // unique in the database; the violated one names the clash.
        subscription::Entity::insert(subscription_to_row(s)?.into_active_model())
            .exec_without_returning(&*txn)
            .await
            .map_err(|e| {
                let what = match e.sql_err() {
                    Some(SqlErr::UniqueConstraintViolation(m)) if !m.contains("name") => {
                        "subscription"
                    }
                    _ => "subscription name",
                };
                unique_as(what)(e)
            })?;
        log.record(
            &txn,
            Some(&s.tenant_id),
            "subscription",
            &s.subscription_id,
            "UPSERT",
            meta.now,
        )
        .await?;
        if let Some(v) = verification {
            self.queue_verification(&txn, &s.tenant_id, v, EarlierTokens::None, meta.now)
                .await?;
        }
        if verification.is_some() {
            self.commit_queued(txn, meta, log.last).await
        } else {
            self.commit(txn, meta, log.last).await
        }
    }

    async fn get_subscription(
        &self,
        tenant_id: &str,
        subscription_id: &str,
    ) -> RepoResult<Option<Subscription>> {
        self.read_by_key(subscription::Entity::find_by_id((
            tenant_id.to_owned(),
            subscription_id.to_owned(),
        )))
        .await?
        .map(subscription_from_row)
        .transpose()
    }

    async fn list_subscriptions(
        &self,
        filter: &SubscriptionFilter,
        req: &PageRequest,
    ) -> RepoResult<Page<Subscription>> {
        let (rows, has_more, total) = page(
            &self.reader,
            subscription_select(filter),
            subscription::Column::CreateTime,
            subscription::Column::SubscriptionId,
            req,
        )
        .await?;
        Ok(Page {
            items: rows
                .into_iter()
                .map(subscription_from_row)
                .collect::<RepoResult<_>>()?,
            has_more,
            total,
        })
    }

    async fn all_subscriptions(
        &self,
        filter: &SubscriptionFilter,
    ) -> RepoResult<Vec<Subscription>> {
        subscription_select(filter)
            .order_by_asc(subscription::Column::CreateTime)
            .order_by_asc(subscription::Column::SubscriptionId)
            .all(&self.reader)
            .await
            .map_err(classify)?
            .into_iter()
            .map(subscription_from_row)
            .collect()
    }

    async fn update_subscription(
        &self,
        s: &Subscription,
        prev_etag: &str,
        verification: Option<&Verification>,
        meta: &WriteMeta,
    ) -> RepoResult<Revision> {
        let (txn, mut log) = self.begin_write(meta).await?;
        ensure_parents(&txn, &s.tenant_id, &s.endpoint_id).await?;
        let result = subscription::Entity::update_many()
            .set(all_set(subscription_to_row(s)?))
            .filter(subscription::Column::TenantId.eq(s.tenant_id.clone()))
            .filter(subscription::Column::SubscriptionId.eq(s.subscription_id.clone()))
            .filter(subscription::Column::Etag.eq(prev_etag))
            .filter(live_subscriptions())
            .exec(&*txn)
            .await
            .map_err(unique_as("subscription name"))?;
        if result.rows_affected == 0 {
            return Err(RepoError::Stale);
        }
        log.record(
            &txn,
            Some(&s.tenant_id),
            "subscription",
            &s.subscription_id,
            "UPSERT",
            meta.now,
        )
        .await?;
        match verification {
            Some(v) => {
                self.queue_verification(&txn, &s.tenant_id, v, EarlierTokens::Voided, meta.now)
                    .await?;
                self.commit_queued(txn, meta, log.last).await
            }
            None => self.commit(txn, meta, log.last).await,
        }
    }

    async fn delete_subscription(
        &self,
        tenant_id: &str,
        subscription_id: &str,
        prev_etag: &str,
        meta: &WriteMeta,
    ) -> RepoResult<(Subscription, Revision)> {
        let (txn, mut log) = self.begin_write(meta).await?;
        load_tenant_for_write(&txn, tenant_id).await?;
        let row = by_key(
            &*txn,
            subscription::Entity::find_by_id((tenant_id.to_owned(), subscription_id.to_owned()))
                .lock_exclusive(),
        )
        .await?
        .filter(|s| s.status != SubscriptionStatus::Deleted.as_str())
        .ok_or(RepoError::NotFound("subscription"))?;
        if !prev_etag.is_empty() && row.etag != prev_etag {
            return Err(RepoError::Stale);
        }
        let mut am = row.into_active_model();
        am.status = sea_orm::Set(SubscriptionStatus::Deleted.as_str().to_owned());
        am.update_time = sea_orm::Set(meta.now);
        am.etag = sea_orm::Set(new_etag());
        let updated = am.update(&*txn).await.map_err(classify)?;
        quota::give_back(&txn, tenant_id, 0, 1).await?;
        log.record(
            &txn,
            Some(tenant_id),
            "subscription",
            subscription_id,
            "DELETE",
            meta.now,
        )
        .await?;
        let revision = self.commit(txn, meta, log.last).await?;
        Ok((subscription_from_row(updated)?, revision))
    }

    async fn confirm_subscription(
        &self,
        token_hash: &str,
        meta: &WriteMeta,
    ) -> RepoResult<(Subscription, Revision)> {
        let (txn, mut log) = self.begin_write(meta).await?;
        let token = by_key(
            &*txn,
            confirmation_token::Entity::find_by_id(token_hash.to_owned()).lock_exclusive(),
        )
        .await?
        .ok_or(RepoError::NotFound("confirmation token"))?;
        if let Some(refusal) = token_state(&token).refusal(meta.now) {
            return Err(refusal);
        }
        let row = by_key(
            &*txn,
            subscription::Entity::find_by_id((
                token.tenant_id.clone(),
                token.subscription_id.clone(),
            ))
            .lock_exclusive(),
        )
        .await?
        .ok_or(RepoError::NotFound("subscription"))?;
        if row.status != SubscriptionStatus::PendingVerification.as_str() {
            return Err(RepoError::Precondition(format!(
                "subscription {} is {}, not PENDING_VERIFICATION",
                row.subscription_id, row.status
            )));
        }
        load_tenant_for_write(&txn, &row.tenant_id).await?;
        let mut used = token.into_active_model();
        used.used_time = sea_orm::Set(Some(meta.now));
        used.update(&*txn).await.map_err(classify)?;
        let mut am = row.clone().into_active_model();
        am.status = sea_orm::Set(SubscriptionStatus::Active.as_str().to_owned());
        am.update_time = sea_orm::Set(meta.now);
        am.etag = sea_orm::Set(new_etag());
        let updated = am.update(&*txn).await.map_err(classify)?;
        log.record(
            &txn,
            Some(&row.tenant_id),
            "subscription",
            &row.subscription_id,
            "UPSERT",
            meta.now,
        )
        .await?;
        let revision = self.commit(txn, meta, log.last).await?;
        Ok((subscription_from_row(updated)?, revision))
    }

    async fn resend_confirmation(
        &self,
        tenant_id: &str,
        v: &Verification,
        meta: &WriteMeta,
    ) -> RepoResult<(Subscription, Revision)> {
        let (txn, mut log) = self.begin_write(meta).await?;
        load_tenant_for_write(&txn, tenant_id).await?;
        let row = by_key(
            &*txn,
            subscription::Entity::find_by_id((tenant_id.to_owned(), v.subscription_id.clone()))
                .lock_exclusive(),
        )
        .await?
        .filter(|s| s.status != SubscriptionStatus::Deleted.as_str())
        .ok_or(RepoError::NotFound("subscription"))?;
        if row.status != SubscriptionStatus::PendingVerification.as_str() {
            return Err(RepoError::Precondition(format!(
                "subscription {} is {}, not PENDING_VERIFICATION",
                row.subscription_id, row.status
            )));
        }
        ensure_live_endpoint(&txn, tenant_id, &row.endpoint_id).await?;
        self.queue_verification(&txn, tenant_id, v, EarlierTokens::Replaced, meta.now)
            .await?;
        log.record(
            &txn,
            Some(tenant_id),
            "subscription",
            &row.subscription_id,
            "UPSERT",
            meta.now,
        )
        .await?;
        let revision = self.commit_queued(txn, meta, log.last).await?;
        Ok((subscription_from_row(row)?, revision))
    }

    async fn confirmation_token(&self, token_hash: &str) -> RepoResult<Option<TokenState>> {
        Ok(self
            .read_by_key(confirmation_token::Entity::find_by_id(
                token_hash.to_owned(),
            ))
            .await?
            .map(|t| token_state(&t)))
    }

    async fn due_deliveries(
        &self,
        now: Micros,
        limit: u64,
        busy: &[(String, String)],
    ) -> RepoResult<Vec<OutboxItem>> {
        let mut select = outbox::Entity::find()
            .filter(outbox::Column::DoneTime.is_null())
            .filter(outbox::Column::NextAttemptTime.lte(now));
        for (tenant_id, endpoint_id) in busy {
            select = select.filter(
                sea_orm::Condition::any()
                    .add(outbox::Column::TenantId.ne(tenant_id.clone()))
                    .add(outbox::Column::EndpointId.ne(endpoint_id.clone())),
            );
        }
        select
            .order_by_asc(outbox::Column::NextAttemptTime)
            .limit(limit)
            .all(&self.writer)
            .await
            .map_err(classify)?
            .into_iter()
            .map(|row| {
                let payload = self
                    .key
                    .decrypt(&row.payload_enc, outbox_aad(&row.id).as_bytes())
                    .map_err(|e| RepoError::Internal(Box::new(e)))?;
                Ok(OutboxItem {
                    id: row.id,
                    kind: row.kind,
                    tenant_id: row.tenant_id,
                    subscription_id: row.subscription_id,
                    endpoint_id: row.endpoint_id,
                    payload,
                    attempts: row.attempts,
                    next_attempt_time: row.next_attempt_time,
                })
            })
            .collect()
    }

    async fn claim_delivery(&self, item: &OutboxItem, lease_until: Micros) -> RepoResult<bool> {
        // Compare-and-set on the due time: only one worker (or replica) wins.
        let result = outbox::Entity::update_many()
            .col_expr(
                outbox::Column::NextAttemptTime,
                sea_orm::sea_query::Expr::value(lease_until),
            )
            .filter(outbox::Column::Id.eq(item.id.clone()))
            .filter(outbox::Column::NextAttemptTime.eq(item.next_attempt_time))
            .filter(outbox::Column::DoneTime.is_null())
            .exec(&self.writer)
            .await
            .map_err(classify)?;
        Ok(result.rows_affected == 1)
    }

    async fn finish_delivery(
        &self,
        item: &OutboxItem,
        outcome: &DeliveryOutcome,
        now: Micros,
    ) -> RepoResult<()> {
        let mut update = outbox::Entity::update_many()
            .col_expr(
                outbox::Column::Attempts,
                sea_orm::sea_query::Expr::value(item.attempts + 1),
            )
            .filter(outbox::Column::Id.eq(item.id.clone()));
        update = match outcome {
            DeliveryOutcome::Delivered => update
                .col_expr(
                    outbox::Column::DoneTime,
                    sea_orm::sea_query::Expr::value(now),
                )
                .col_expr(
                    outbox::Column::LastError,
                    sea_orm::sea_query::Expr::value(""),
                ),
            DeliveryOutcome::Retry {
                next_attempt_time,
                error,
            } => update
                .col_expr(
                    outbox::Column::NextAttemptTime,
                    sea_orm::sea_query::Expr::value(*next_attempt_time),
                )
                .col_expr(
                    outbox::Column::LastError,
                    sea_orm::sea_query::Expr::value(error.clone()),
                ),
            DeliveryOutcome::GiveUp { error } => update
                .col_expr(
                    outbox::Column::DoneTime,
                    sea_orm::sea_query::Expr::value(now),
                )
                .col_expr(
                    outbox::Column::LastError,
                    sea_orm::sea_query::Expr::value(error.clone()),
                ),
        };
        update.exec(&self.writer).await.map_err(classify)?;
        Ok(())
    }
}

fn subscription_select(filter: &SubscriptionFilter) -> Select<subscription::Entity> {
    let mut select = subscription::Entity::find()
        .filter(subscription::Column::TenantId.eq(filter.tenant_id.clone()));
    if let Some(e) = &filter.endpoint_id {
        select = select.filter(subscription::Column::EndpointId.eq(e.clone()));
    }
    if let Some(status) = filter.status {
        select = select.filter(subscription::Column::Status.eq(status.as_str()));
    } else if !filter.show_deleted {
        select = select.filter(live_subscriptions());
    }
    select
}

async fn insert_credential(
    txn: &DatabaseTransaction,
    repo: &SeaRepository,
    c: &Credential,
) -> RepoResult<()> {
    let row = credential::Model {
        api_id: c.api_id.clone(),
        tenant_id: c.tenant_id.clone(),
        role: c.role.as_str().to_owned(),
        description: c.description.clone(),
        secret_enc: repo.seal(&c.secret, &credential_aad(&c.api_id)),
        create_time: c.create_time,
        update_time: c.update_time,
        revoke_time: c.revoke_time,
        etag: c.etag.clone(),
    };
    credential::Entity::insert(row.into_active_model())
        .exec_without_returning(txn)
        .await
        .map_err(unique_as("credential"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn stable_plans_on(conn: &mut sea_orm::sqlx::SqliteConnection) -> bool {
        planner_stability(conn, -1).await.unwrap().unwrap()
    }

    fn signed(nonce: &str, now: Micros) -> WriteMeta {
        WriteMeta {
            api_id: "test".into(),
            nonce: Some(nonce.into()),
            nonce_expire_time: now + 600_000_000,
            now,
            idempotency: None,
        }
    }

    fn subscription(id: &str, now: Micros) -> Subscription {
        Subscription {
            tenant_id: "t1".into(),
            subscription_id: id.into(),
            endpoint_id: "e1".into(),
            name: Some(format!("name-{id}")),
            event_types: vec!["orders.*".into()],
            status: SubscriptionStatus::Active,
            expire_time: None,
            create_time: now,
            update_time: now,
            etag: new_etag(),
        }
    }

    /// A create on SQLite runs as one text of statements in the batch (see
    /// `create_batch`). A unique violation stops the text part-way, after
    /// rows were inserted; those must be rolled back with its savepoint,
    /// not committed with the group-commit batch, and the create then runs
    /// alone to name its error.
    #[tokio::test]
    async fn a_refused_sqlite_create_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let settings = DatabaseSettings {
            url: format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display()),
            max_connections: 2,
            acquire_timeout: Duration::from_secs(5),
        };
        let repo = SeaRepository::connect(&settings, crate::crypto::MasterKey::generate().into())
            .await
            .unwrap();
        let now = crate::model::now_micros();
        let tenant = Tenant {
            tenant_id: "t1".into(),
            display_name: "t1".into(),
            state: TenantState::Active,
            settings: TenantSettings::default(),
            create_time: now,
            update_time: now,
            delete_time: None,
            etag: new_etag(),
        };
        repo.create_tenant(&tenant, &signed("n0", now))
            .await
            .unwrap();
        let endpoint = Endpoint {
            tenant_id: "t1".into(),
            endpoint_id: "e1".into(),
            url: "https://hooks.example.com/e1".into(),
            description: String::new(),
            enabled: true,
            secret: "whsec_test".into(),
            previous_secret: None,
            create_time: now,
            update_time: now,
            delete_time: None,
            etag: new_etag(),
        };
        repo.create_endpoint(&endpoint, &signed("n1", now))
            .await
            .unwrap();

        let create = |id: &'static str, name: &'static str, nonce: &'static str| {
            let mut s = subscription(id, now);
            s.name = Some(name.into());
            let (repo, etag) = (&repo, &tenant.etag);
            async move {
                repo.create_subscription(&s, None, etag, &signed(nonce, now))
                    .await
            }
        };
        let first = create("s1", "one", "n2").await.unwrap();
        // The nonce row goes in first, then the subscription is refused.
        let clash = create("s2", "one", "n3").await;
        assert!(
            matches!(clash, Err(RepoError::AlreadyExists("subscription name"))),
            "{clash:?}"
        );
        // The subscription goes in under a new name, then its nonce is
        // refused as a replay.
        let replayed = create("s3", "three", "n2").await;
        assert!(matches!(replayed, Err(RepoError::Replay)), "{replayed:?}");
        // Nothing of the two was kept: the refused create's nonce is free,
        // and the replayed create's subscription is not stored. (Batches
        // commit in order, so once this create returned, the earlier
        // batches are durable too.)
        let last = create("s4", "four", "n3").await.unwrap();
        assert!(last > first);
        for id in ["s2", "s3"] {
            assert!(repo.get_subscription("t1", id).await.unwrap().is_none());
        }
        let changed: Vec<(Revision, String)> = repo
            .changes_since(0, 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|c| c.resource_type == "subscription")
            .map(|c| (c.revision, c.resource_key))
            .collect();
        assert_eq!(changed, [(first, "s1".to_owned()), (last, "s4".to_owned())]);
        repo.close().await;
    }

    #[tokio::test]
    async fn every_pooled_sqlite_connection_plans_stably() {
        let dir = tempfile::tempdir().unwrap();
        let settings = DatabaseSettings {
            url: format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display()),
            max_connections: 2,
            acquire_timeout: Duration::from_secs(5),
        };
        let db = Database::connect(sqlite_options(&settings, 2))
            .await
            .unwrap();
        let pool = db.get_sqlite_connection_pool();
        // Both connections: the pool opens a second while the first is held.
        let mut first = pool.acquire().await.unwrap();
        let mut second = pool.acquire().await.unwrap();
        assert!(stable_plans_on(&mut first).await);
        assert!(stable_plans_on(&mut second).await);
    }
}

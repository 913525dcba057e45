//! The write protocol every transactional write follows: begin (taking the
//! first revision and recording the request nonce), commit (storing the
//! idempotent response), and publishing the revision to followers.

use std::sync::atomic::Ordering;

use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseTransaction, DbErr, EntityTrait,
    SqliteTransactionMode, Statement, TransactionOptions,
};
use tokio::sync::watch;

use super::change_log::{ChangeLog, first_revision, pg_revision_base};
use super::entities::{idempotency, nonce};
use super::error::{classify, internal};
use super::sea::{Engine, SeaRepository};
use super::secrets::idempotency_aad;
use super::sqlite::group_commit::{FinishError, Finished, WriteTxn};
use super::{RepoError, RepoResult, Revision, WriteMeta};

impl SeaRepository {
    /// Commits a write that queued outbox rows, then wakes the delivery
    /// worker (after the commit: woken before it, the worker would not see
    /// the rows yet).
    pub(super) async fn commit_queued(
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
    pub(super) async fn begin_write(&self, meta: &WriteMeta) -> RepoResult<(WriteTxn, ChangeLog)> {
        let txn = match &self.engine {
            Engine::Sqlite { group, .. } => {
                group.join(self.writer.pool()).await.map_err(classify)?
            }
            Engine::Postgres { .. } => WriteTxn::single(self.begin().await?),
        };
        let replay = |e: DbErr| match classify(e) {
            RepoError::AlreadyExists(_) => RepoError::Replay,
            other => other,
        };
        let revision = match (&meta.nonce, self.backend()) {
            (Some(n), DatabaseBackend::Postgres) => {
                // The insert gives the transaction its id, from which the
                // revision derives; RETURNING saves a round trip.
                let row = txn
                    .query_one_raw(Statement::from_sql_and_values(
                        self.backend(),
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
    pub(super) async fn commit(
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
    pub(super) fn idempotency_row(&self, meta: &WriteMeta) -> Option<idempotency::ActiveModel> {
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

    /// Tells this process's followers that `revision` committed.
    pub(super) fn publish(&self, revision: Revision) {
        announce(&self.revisions, revision);
        if let Engine::Postgres { committed, .. } = &self.engine {
            announce(committed, revision);
        }
    }
}

/// Tells this process's followers that `revision` committed (never moves
/// the announced revision backwards).
pub(super) fn announce(revisions: &watch::Sender<Revision>, revision: Revision) {
    revisions.send_if_modified(|current| {
        let newer = revision > *current;
        if newer {
            *current = revision;
        }
        newer
    });
}

/// The request nonce a signed write records.
pub(super) fn nonce_row(meta: &WriteMeta) -> Option<nonce::ActiveModel> {
    Some(nonce::ActiveModel {
        api_id: sea_orm::Set(meta.api_id.clone()),
        nonce: sea_orm::Set(meta.nonce.clone()?),
        expire_time: sea_orm::Set(meta.nonce_expire_time),
    })
}

//! A write's change-log rows: the revision a write transaction starts at,
//! and the rows it appends, each with the next revision (the scheme is in
//! `revision`).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseTransaction, EntityTrait, Statement};

use super::change_state::Changed;
use super::entities::change;
use super::error::{classify, internal};
use super::revision;
use super::sqlite::group_commit::WriteTxn;
use super::{ChangeKind, RepoResult, Revision};
use crate::model::Micros;

pub(super) fn pg_revision_base(xid: i64) -> RepoResult<Revision> {
    revision::pg_base(xid)
        .ok_or_else(|| internal(format!("transaction id {xid} is beyond the revision range")))
}

/// The first revision of a write transaction.
pub(super) async fn first_revision(txn: &DatabaseTransaction) -> RepoResult<Revision> {
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
pub(super) struct ChangeLog {
    next: Option<Revision>,
    pub(super) last: Revision,
    /// A batched SQLite write's source of further revisions.
    batch: Option<Arc<AtomicI64>>,
}

impl ChangeLog {
    pub(super) fn new(first: Revision) -> Self {
        ChangeLog {
            next: Some(first),
            last: first,
            batch: None,
        }
    }

    /// The change log of a write that began with `first`.
    pub(super) fn of(txn: &WriteTxn, first: Revision) -> Self {
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
            DatabaseBackend::Postgres => revision::pg_next(self.last).ok_or_else(|| {
                internal(format!(
                    "one transaction may record at most {} changes",
                    revision::MAX_CHANGES_PER_TRANSACTION
                ))
            }),
            _ => first_revision(txn).await,
        }
    }

    /// Appends the change of `changed`, with the row as it was written.
    pub(super) async fn record(
        &mut self,
        txn: &DatabaseTransaction,
        changed: Changed<'_>,
        kind: ChangeKind,
        now: Micros,
    ) -> RepoResult<()> {
        let state = changed.state()?;
        let revision = self.next_revision(txn).await?;
        self.last = revision;
        let row = change::ActiveModel {
            revision: sea_orm::Set(revision),
            tenant_id: sea_orm::Set(changed.tenant_id().map(str::to_owned)),
            resource_type: sea_orm::Set(changed.resource().as_str().to_owned()),
            resource_key: sea_orm::Set(changed.key().to_owned()),
            kind: sea_orm::Set(kind.as_str().to_owned()),
            change_time: sea_orm::Set(now),
            state: sea_orm::Set(Some(state)),
        };
        change::Entity::insert(row)
            .exec_without_returning(txn)
            .await
            .map_err(classify)?;
        Ok(())
    }
}

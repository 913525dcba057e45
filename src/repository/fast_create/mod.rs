//! The fast ways to CreateSubscription, and the parent rule every way
//! shares.
//!
//! A create must see its tenant live, ACTIVE and still at the etag the
//! caller built the subscription from, and its endpoint live (see
//! [`parent`]); take one from the tenant's quota; record the request nonce;
//! insert the row and its change-log row; and, with a request id, store the
//! response to replay. The transaction in `sea` does all that in six round
//! trips and names every error. Creates are the hottest write, so the
//! plain ones try a shorter way first, and a create that way refuses runs
//! the transaction, which writes it or names its error:
//!
//! PostgreSQL:
//! 1. **Batch over held connections** ([`create_batch`], statement from
//!    [`one_statement::create_subscriptions`]): concurrent plain creates
//!    (no request id, no verification) share one statement and one commit,
//!    on a connection held out of the pool (`postgres::HeldConnections`).
//!    All rows or none: any refused create sends every create of the batch
//!    on to 2.
//! 2. **One-statement create** ([`one_statement::create_subscription`]):
//!    one data-modifying `WITH` statement, its own transaction, for a
//!    create with a request id or one the batch sent on.
//! 3. **The transaction**: a create with a verification (its confirmation
//!    goes to the outbox in the same transaction), and any create 1 or 2
//!    refused.
//!
//! SQLite:
//! 1. **Batch text in the group commit** ([`create_batch`], text from
//!    [`one_statement::create_subscriptions_sqlite`]): plain creates run as
//!    one text of statements on the writer's thread inside the open
//!    group-commit batch (`sqlite::group_commit`), each create checked on
//!    its own, so a single hand-off to the writer thread carries many.
//! 2. **The transaction**: creates with a request id or a verification,
//!    and any create the batch refused.
//!
//! Why each exists: a commit, its round trip and its WAL flush cost more
//! than the rows a create writes (PostgreSQL batches); the transaction's
//! round trips cost more than its work (the one-statement create); on
//! SQLite the hand-offs to the one writer thread, not the disk, bound the
//! create rate (the batch text). The measured gains are in BENCHMARKS.md.

pub(in crate::repository) mod create_batch;
pub(in crate::repository) mod one_statement;
pub(in crate::repository) mod parent;

use sea_orm::{ConnectionTrait, SqlErr};

use super::change_state::Changed;
use super::error::classify;
use super::quota::Quota;
use super::rows::subscription_to_row;
use super::sea::{Engine, SeaRepository};
use super::write::nonce_row;
use super::{RepoResult, Revision, WriteMeta};
use crate::model::Subscription;
use create_batch::Outcome;

impl SeaRepository {
    /// Creates the subscription in one statement (see `one_statement`),
    /// shared with concurrent creates when it can be (see `create_batch`).
    /// `None` when that wrote nothing because a check failed, or when only
    /// the transactional path can write it (on SQLite, a create with a
    /// request id): that path then names the error.
    pub(in crate::repository) async fn create_subscription_at_once(
        &self,
        s: &Subscription,
        tenant_etag: &str,
        meta: &WriteMeta,
    ) -> RepoResult<Option<Revision>> {
        if let Some(batches) = &self.batches
            && meta.idempotency.is_none()
        {
            let row = subscription_to_row(s)?;
            let create = one_statement::BatchedCreate {
                state: Changed::Subscription(&row).state()?,
                row,
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
        let Engine::Postgres { held, .. } = &self.engine else {
            return Ok(None);
        };
        let row = subscription_to_row(s)?;
        let statement = one_statement::create_subscription(
            Changed::Subscription(&row).state()?,
            row,
            tenant_etag,
            nonce_row(meta).as_ref(),
            self.idempotency_row(meta).as_ref(),
            meta.now,
            self.quotas.limit(Quota::Subscriptions),
        );
        let run = match held {
            Some(held) => held.query_one(statement).await,
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
}

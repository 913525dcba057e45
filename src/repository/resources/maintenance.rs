//! Housekeeping and bulk loads: expiring subscriptions and rotated secrets,
//! purging old nonces and responses, importing data.

use crate::repository::ChangeKind;
use crate::repository::change_state::Changed;
use crate::repository::query::by_key;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

use crate::model::{Micros, SubscriptionStatus, new_etag};
use crate::repository::change_log::{ChangeLog, first_revision};
use crate::repository::entities::{endpoint, idempotency, nonce, subscription, tenant};
use crate::repository::error::{classify, unique_as};
use crate::repository::quota;
use crate::repository::rows::{subscription_to_row, tenant_to_row};
use crate::repository::{
    ChangeLogStore, Maintenance, RepoError, RepoResult, Revision, SeaRepository, Snapshot,
};

#[async_trait::async_trait]
impl Maintenance for SeaRepository {
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
            let mut am = row.into_active_model();
            // The rotated-out secret leaves storage once its grace ends.
            am.previous_secret_enc = sea_orm::Set(None);
            am.previous_secret_expire_time = sea_orm::Set(None);
            am.update_time = sea_orm::Set(now);
            am.etag = sea_orm::Set(new_etag());
            let swept = am.update(&txn).await.map_err(classify)?;
            log.record(&txn, Changed::Endpoint(&swept), ChangeKind::Upsert, now)
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
            let mut am = row.into_active_model();
            am.status = sea_orm::Set(SubscriptionStatus::Expired.as_str().to_owned());
            am.update_time = sea_orm::Set(now);
            am.etag = sea_orm::Set(new_etag());
            let expired = am.update(&txn).await.map_err(classify)?;
            log.record(
                &txn,
                Changed::Subscription(&expired),
                ChangeKind::Upsert,
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
            // The tenant's row as it stands, imported or not: the change
            // tells followers to reload the tenant.
            let row = by_key(&txn, tenant::Entity::find_by_id(t.to_owned()))
                .await?
                .ok_or(RepoError::NotFound("tenant"))?;
            log.record(&txn, Changed::Tenant(&row), ChangeKind::Upsert, now)
                .await?;
        }
        txn.commit().await.map_err(classify)?;
        self.publish(log.last);
        Ok(log.last)
    }
}

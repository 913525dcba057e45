//! Live state read whole, for the resolve index and Watch.

use sea_orm::{
    ColumnTrait, DatabaseBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionOptions,
};

use super::subscriptions::live_subscriptions;
use crate::repository::entities::{endpoint, subscription, tenant};
use crate::repository::error::classify;
use crate::repository::rows::{subscription_from_row, tenant_from_row};
use crate::repository::{RepoResult, SeaRepository, Snapshot, SnapshotStore};

impl SeaRepository {
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
        let options = match self.backend() {
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
}

#[async_trait::async_trait]
impl SnapshotStore for SeaRepository {
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
}

//! Tenants' storage.

use crate::repository::ChangeKind;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::subscriptions::{live_subscriptions, soft_delete_subscriptions};
use crate::model::{Tenant, new_etag};
use crate::repository::change_state::Changed;
use crate::repository::entities::{endpoint, subscription, tenant};
use crate::repository::error::{classify, unique_as};
use crate::repository::query::{all_set, by_key, page};
use crate::repository::quota;
use crate::repository::rows::{tenant_from_row, tenant_to_row};
use crate::repository::{
    Page, PageRequest, RepoError, RepoResult, Revision, SeaRepository, TenantStore, WriteMeta,
};

#[async_trait::async_trait]
impl TenantStore for SeaRepository {
    async fn create_tenant(&self, t: &Tenant, meta: &WriteMeta) -> RepoResult<Revision> {
        let (txn, mut log) = self.begin_write(meta).await?;
        let row = tenant_to_row(t);
        tenant::Entity::insert(row.clone().into_active_model())
            .exec_without_returning(&*txn)
            .await
            .map_err(unique_as("tenant"))?;
        quota::open(&txn, &t.tenant_id).await?;
        log.record(&txn, Changed::Tenant(&row), ChangeKind::Upsert, meta.now)
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
        let row = tenant_to_row(t);
        let result = tenant::Entity::update_many()
            .set(all_set(row.clone()))
            .filter(tenant::Column::TenantId.eq(t.tenant_id.clone()))
            .filter(tenant::Column::Etag.eq(prev_etag))
            .filter(tenant::Column::DeleteTime.is_null())
            .exec(&*txn)
            .await
            .map_err(classify)?;
        if result.rows_affected == 0 {
            return Err(RepoError::Stale);
        }
        log.record(&txn, Changed::Tenant(&row), ChangeKind::Upsert, meta.now)
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
            let mut am = ep.into_active_model();
            am.delete_time = sea_orm::Set(Some(meta.now));
            am.update_time = sea_orm::Set(meta.now);
            am.etag = sea_orm::Set(new_etag());
            let deleted = am.update(&*txn).await.map_err(classify)?;
            log.record(
                &txn,
                Changed::Endpoint(&deleted),
                ChangeKind::Delete,
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
            Changed::Tenant(&updated),
            ChangeKind::Delete,
            meta.now,
        )
        .await?;
        let revision = self.commit(txn, meta, log.last).await?;
        Ok((tenant_from_row(updated)?, revision))
    }
}

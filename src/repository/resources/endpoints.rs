//! Endpoints' storage.

use crate::repository::ChangeKind;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::parents::load_tenant_for_write;
use super::subscriptions::{live_subscriptions, soft_delete_subscriptions};
use super::verification::EarlierTokens;
use crate::model::{Endpoint, SubscriptionStatus, new_etag};
use crate::repository::change_state::Changed;
use crate::repository::entities::{endpoint, subscription};
use crate::repository::error::{classify, unique_as};
use crate::repository::query::{all_set, by_key, page};
use crate::repository::quota;
use crate::repository::{
    EndpointStore, Page, PageRequest, Quota, RepoError, RepoResult, Revision, SeaRepository,
    Verification, WriteMeta,
};

#[async_trait::async_trait]
impl EndpointStore for SeaRepository {
    async fn create_endpoint(&self, e: &Endpoint, meta: &WriteMeta) -> RepoResult<Revision> {
        let (txn, mut log) = self.begin_write(meta).await?;
        load_tenant_for_write(&txn, &e.tenant_id).await?;
        quota::take(&txn, &e.tenant_id, Quota::Endpoints, &self.quotas).await?;
        let row = self.endpoint_to_row(e);
        endpoint::Entity::insert(row.clone().into_active_model())
            .exec_without_returning(&*txn)
            .await
            .map_err(unique_as("endpoint"))?;
        log.record(&txn, Changed::Endpoint(&row), ChangeKind::Upsert, meta.now)
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
        let row = self.endpoint_to_row(e);
        let result = endpoint::Entity::update_many()
            .set(all_set(row.clone()))
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
        log.record(&txn, Changed::Endpoint(&row), ChangeKind::Upsert, meta.now)
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
                .exec_with_returning(&*txn)
                .await
                .map_err(classify)?;
            let Some(pending) = pending.first() else {
                continue;
            };
            log.record(
                &txn,
                Changed::Subscription(pending),
                ChangeKind::Upsert,
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
            Changed::Endpoint(&updated),
            ChangeKind::Delete,
            meta.now,
        )
        .await?;
        let revision = self.commit(txn, meta, log.last).await?;
        Ok((self.endpoint_from_row(updated)?, revision))
    }
}

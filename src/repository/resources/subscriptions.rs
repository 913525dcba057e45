//! Subscriptions' storage. A plain create first tries the fast paths (see
//! `fast_create`); this file holds the transaction every path falls back to.

use crate::repository::ChangeKind;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseTransaction, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect, Select, SqlErr,
};

use super::parents::{ensure_parents, load_tenant_for_write};
use super::verification::EarlierTokens;
use crate::model::{Micros, Subscription, SubscriptionStatus, new_etag};
use crate::repository::change_log::ChangeLog;
use crate::repository::change_state::Changed;
use crate::repository::entities::subscription;
use crate::repository::error::{classify, unique_as};
use crate::repository::query::{all_set, by_key, page};
use crate::repository::quota;
use crate::repository::rows::{subscription_from_row, subscription_to_row};
use crate::repository::{
    Page, PageRequest, Quota, RepoError, RepoResult, Revision, SeaRepository, SubscriptionFilter,
    SubscriptionStore, Verification, WriteMeta,
};

#[async_trait::async_trait]
impl SubscriptionStore for SeaRepository {
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
        ensure_parents(&txn, &s.tenant_id, &s.endpoint_id, Some(tenant_etag)).await?;
        quota::take(&txn, &s.tenant_id, Quota::Subscriptions, &self.quotas).await?;
        // The key (its row stays after a delete) and the live name are both
        // unique in the database; the violated one names the clash.
        let row = subscription_to_row(s)?;
        subscription::Entity::insert(row.clone().into_active_model())
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
            Changed::Subscription(&row),
            ChangeKind::Upsert,
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
        ensure_parents(&txn, &s.tenant_id, &s.endpoint_id, None).await?;
        let row = subscription_to_row(s)?;
        let result = subscription::Entity::update_many()
            .set(all_set(row.clone()))
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
            Changed::Subscription(&row),
            ChangeKind::Upsert,
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
            Changed::Subscription(&updated),
            ChangeKind::Delete,
            meta.now,
        )
        .await?;
        let revision = self.commit(txn, meta, log.last).await?;
        Ok((subscription_from_row(updated)?, revision))
    }
}

/// Soft-deletes the given live subscriptions, recording each change.
pub(super) async fn soft_delete_subscriptions(
    txn: &DatabaseTransaction,
    rows: Vec<subscription::Model>,
    log: &mut ChangeLog,
    now: Micros,
) -> RepoResult<()> {
    for row in rows {
        let mut am = row.into_active_model();
        am.status = sea_orm::Set(SubscriptionStatus::Deleted.as_str().to_owned());
        am.update_time = sea_orm::Set(now);
        am.etag = sea_orm::Set(new_etag());
        let deleted = am.update(txn).await.map_err(classify)?;
        log.record(
            txn,
            Changed::Subscription(&deleted),
            ChangeKind::Delete,
            now,
        )
        .await?;
    }
    Ok(())
}

pub(super) fn live_subscriptions() -> sea_orm::Condition {
    sea_orm::Condition::all()
        .add(subscription::Column::Status.ne(SubscriptionStatus::Deleted.as_str()))
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::{Endpoint, Tenant, TenantSettings, TenantState};
    use crate::repository::DatabaseSettings;
    use crate::repository::{ChangeLogStore, EndpointStore, TenantStore};

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
}

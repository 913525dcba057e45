//! The outbox: messages waiting to be delivered, leased to one worker at a time.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::model::Micros;
use crate::repository::entities::outbox;
use crate::repository::error::classify;
use crate::repository::secrets::outbox_aad;
use crate::repository::{
    DeliveryOutcome, OutboxItem, OutboxStore, RepoError, RepoResult, SeaRepository,
};

#[async_trait::async_trait]
impl OutboxStore for SeaRepository {
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

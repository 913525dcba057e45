//! Subscription verification: confirmation tokens and the messages that
//! carry them.

use crate::repository::ChangeKind;
use crate::repository::change_state::Changed;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseTransaction, EntityTrait, IntoActiveModel, QueryFilter,
    QuerySelect,
};

use super::parents::{ensure_live_endpoint, load_tenant_for_write};
use crate::model::{Micros, Subscription, SubscriptionStatus, new_etag};
use crate::repository::entities::{confirmation_token, outbox, subscription};
use crate::repository::error::classify;
use crate::repository::query::by_key;
use crate::repository::rows::{subscription_from_row, token_state};
use crate::repository::secrets::outbox_aad;
use crate::repository::{
    RepoError, RepoResult, Revision, SeaRepository, TokenState, Verification, VerificationStore,
    WriteMeta,
};

/// The outbox kind of a confirmation message.
const CONFIRMATION: &str = "confirmation";

/// What becomes of a subscription's earlier confirmation tokens when a new
/// one is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EarlierTokens {
    /// A new subscription has none.
    None,
    /// ResendConfirmation: they stay known, as used ("replaced by a newer one").
    Replaced,
    /// The subscription's endpoint or that endpoint's URL changed: a
    /// confirmation is bound to where it was sent, so they are forgotten
    /// and answer as unknown tokens.
    Voided,
}

impl SeaRepository {
    /// Ends the subscription's earlier tokens as `earlier` says, stores the
    /// new token's hash and queues the confirmation message.
    pub(super) async fn queue_verification(
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
}

#[async_trait::async_trait]
impl VerificationStore for SeaRepository {
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
            Changed::Subscription(&updated),
            ChangeKind::Upsert,
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
            Changed::Subscription(&row),
            ChangeKind::Upsert,
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
}

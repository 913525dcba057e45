//! Subscription verification: confirmation tokens, the confirmation message,
//! confirm and resend; and PingEndpoint.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use super::{Services, other_tenant};
use crate::auth::Caller;
use crate::crypto::random_bytes;
use crate::delivery::DeliveryResult;
use crate::domain::Permission;
use crate::domain::{EndpointId, SubscriptionId};
use crate::error::{Error, FieldExt, Result};
use crate::model::{Micros, Subscription, now_micros};
use crate::repository::{Verification, WriteMeta};

use super::Written;

/// SHA-256 of a token, hex: what the database keeps.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn unknown_token() -> Error {
    Error::NotFound("unknown confirmation token".into())
}

fn seconds(micros: Micros) -> f64 {
    (micros as f64 / 1000.0).round() / 1000.0
}

impl Services {
    /// A new token and the confirmation message carrying it.
    pub(crate) fn new_verification(&self, s: &Subscription, now: Micros) -> Result<Verification> {
        let token = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
        let message = uuid::Uuid::new_v4().to_string();
        let confirmation_url = format!(
            "{}/v1/confirm?token={token}",
            self.settings.public_url.trim_end_matches('/')
        );
        let body = serde_json::json!({
            "type": "Confirmation",
            "message": message,
            "confirmation_url": confirmation_url,
            "subscription": {
                "subscription_id": s.subscription_id,
                "account": s.tenant_id,
                "topic": s.event_types.first(),
                "event_types": s.event_types,
                "validity_ts": s.expire_time.map(seconds),
            },
        });
        Ok(Verification {
            subscription_id: s.subscription_id.clone(),
            endpoint_id: s.endpoint_id.clone(),
            token_hash: token_hash(&token),
            token_expire_time: now + self.settings.confirmation_ttl_secs * 1_000_000,
            outbox_id: uuid::Uuid::now_v7().to_string(),
            payload: serde_json::to_vec(&body).map_err(Error::internal)?,
        })
    }

    fn check_token(token: &str) -> Result<String> {
        if token.is_empty()
            || token.len() > 256
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::invalid("token", "is not a confirmation token"));
        }
        Ok(token_hash(token))
    }

    /// ConfirmSubscription: the caller must be allowed to write the token's tenant.
    pub async fn confirm_subscription(
        &self,
        caller: &Caller,
        token: &str,
    ) -> Result<Written<Subscription>> {
        self.require(caller, Permission::SubscriptionsWrite)?;
        let hash = Self::check_token(token)?;
        let meta = self.write_meta(caller, now_micros());
        self.live_token(&hash, meta.now, Some(caller)).await?;
        self.confirm_with(&hash, meta).await
    }

    /// GET /v1/confirm: the token itself is the authority.
    pub async fn confirm_by_link(&self, token: &str) -> Result<Written<Subscription>> {
        let hash = Self::check_token(token)?;
        let now = now_micros();
        self.live_token(&hash, now, None).await?;
        let meta = WriteMeta {
            api_id: String::new(),
            nonce: None,
            nonce_expire_time: now,
            now,
            idempotency: None,
        };
        self.confirm_with(&hash, meta).await
    }

    /// Refuses a token that cannot confirm anything, reading it without a
    /// write: only a live token starts one. A caller (ConfirmSubscription)
    /// must also be allowed to act on the token's tenant.
    async fn live_token(&self, hash: &str, now: Micros, caller: Option<&Caller>) -> Result<()> {
        let token = self
            .repo
            .confirmation_token(hash)
            .await?
            .ok_or_else(unknown_token)?;
        if let Some(caller) = caller
            && !caller.may_access_tenant(&token.tenant_id)
        {
            return Err(other_tenant());
        }
        match token.refusal(now) {
            Some(refusal) => Err(refusal.into()),
            None => Ok(()),
        }
    }

    async fn confirm_with(&self, hash: &str, meta: WriteMeta) -> Result<Written<Subscription>> {
        let (s, revision) =
            self.repo
                .confirm_subscription(hash, &meta)
                .await
                .map_err(|e| match e {
                    crate::repository::RepoError::NotFound("confirmation token") => unknown_token(),
                    other => other.into(),
                })?;
        Ok(self.applied(s, revision))
    }

    pub async fn resend_confirmation(
        &self,
        caller: &Caller,
        tenant_id: &str,
        subscription_id: &str,
    ) -> Result<Written<Subscription>> {
        let tenant_id = self.tenant_scope(caller, Permission::SubscriptionsWrite, tenant_id)?;
        let subscription_id = SubscriptionId::parse(subscription_id).field("subscription_id")?;
        self.writable_tenant(tenant_id.as_str()).await?;
        let current = self
            .repo
            .get_subscription(tenant_id.as_str(), subscription_id.as_str())
            .await?
            .ok_or_else(|| Error::NotFound(format!("subscription {subscription_id} not found")))?;
        let meta = self.write_meta(caller, now_micros());
        let verification = self.new_verification(&current, meta.now)?;
        let (s, revision) = self
            .repo
            .resend_confirmation(tenant_id.as_str(), &verification, &meta)
            .await?;
        Ok(self.applied(s, revision))
    }

    /// Sends a signed `webhook.ping` and reports what happened.
    pub async fn ping_endpoint(
        &self,
        caller: &Caller,
        tenant_id: &str,
        endpoint_id: &str,
    ) -> Result<DeliveryResult> {
        let tenant_id = self.tenant_scope(caller, Permission::EndpointsWrite, tenant_id)?;
        let endpoint_id = EndpointId::parse(endpoint_id).field("endpoint_id")?;
        let endpoint = self
            .live_endpoint(tenant_id.as_str(), endpoint_id.as_str())
            .await?;
        let now = now_micros();
        // A ping writes nothing, but a replayed one would still send: its
        // nonce is recorded like a write's.
        self.repo
            .record_nonce(&self.write_meta(caller, now))
            .await?;
        let msg_id = format!("msg_{}", uuid::Uuid::now_v7().simple());
        let body = serde_json::json!({
            "type": "webhook.ping",
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "data": {"tenant_id": tenant_id.as_str(), "endpoint_id": endpoint.endpoint_id},
        });
        let secrets = endpoint.live_secrets(now);
        Ok(self
            .sender
            .post(
                &endpoint.url,
                &secrets,
                &msg_id,
                body.to_string().as_bytes(),
            )
            .await)
    }
}

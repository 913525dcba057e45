//! Entity rows to records and back (secrets opened and sealed on the way).

use super::entities::{confirmation_token, credential, endpoint, event_type, subscription, tenant};
use super::error::internal;
use super::sea::SeaRepository;
use super::secrets::{credential_aad, endpoint_aad, endpoint_previous_aad};
use super::{RepoError, RepoResult, TokenState};
use crate::domain::Role;
use crate::model::{
    Credential, Endpoint, EventType, PreviousSecret, Subscription, SubscriptionStatus, Tenant,
    TenantSettings, TenantState,
};

impl SeaRepository {
    pub(super) fn credential_from_row(&self, row: credential::Model) -> RepoResult<Credential> {
        let secret = self.open(&row.secret_enc, &credential_aad(&row.api_id))?;
        Ok(Credential {
            role: Role::parse(&row.role)
                .ok_or_else(|| internal(format!("unknown role {}", row.role)))?,
            api_id: row.api_id,
            tenant_id: row.tenant_id,
            description: row.description,
            secret,
            create_time: row.create_time,
            update_time: row.update_time,
            revoke_time: row.revoke_time,
            etag: row.etag,
        })
    }

    pub(super) fn endpoint_from_row(&self, row: endpoint::Model) -> RepoResult<Endpoint> {
        let aad = endpoint_aad(&row.tenant_id, &row.endpoint_id);
        let secret = self.open(&row.secret_enc, &aad)?;
        let previous_secret = match (&row.previous_secret_enc, row.previous_secret_expire_time) {
            (Some(blob), Some(expire_time)) => Some(PreviousSecret {
                secret: self.open(
                    blob,
                    &endpoint_previous_aad(&row.tenant_id, &row.endpoint_id),
                )?,
                expire_time,
            }),
            _ => None,
        };
        Ok(Endpoint {
            tenant_id: row.tenant_id,
            endpoint_id: row.endpoint_id,
            url: row.url,
            description: row.description,
            enabled: row.enabled,
            secret,
            previous_secret,
            create_time: row.create_time,
            update_time: row.update_time,
            delete_time: row.delete_time,
            etag: row.etag,
        })
    }

    pub(super) fn endpoint_to_row(&self, e: &Endpoint) -> endpoint::Model {
        let aad = endpoint_aad(&e.tenant_id, &e.endpoint_id);
        endpoint::Model {
            tenant_id: e.tenant_id.clone(),
            endpoint_id: e.endpoint_id.clone(),
            url: e.url.clone(),
            description: e.description.clone(),
            enabled: e.enabled,
            secret_enc: self.seal(&e.secret, &aad),
            previous_secret_enc: e.previous_secret.as_ref().map(|p| {
                self.seal(
                    &p.secret,
                    &endpoint_previous_aad(&e.tenant_id, &e.endpoint_id),
                )
            }),
            previous_secret_expire_time: e.previous_secret.as_ref().map(|p| p.expire_time),
            create_time: e.create_time,
            update_time: e.update_time,
            delete_time: e.delete_time,
            etag: e.etag.clone(),
        }
    }
}

pub(super) fn token_state(row: &confirmation_token::Model) -> TokenState {
    TokenState {
        tenant_id: row.tenant_id.clone(),
        used: row.used_time.is_some(),
        expire_time: row.expire_time,
    }
}

pub(super) fn tenant_from_row(row: tenant::Model) -> RepoResult<Tenant> {
    Ok(Tenant {
        state: TenantState::parse(&row.state)
            .ok_or_else(|| internal(format!("unknown tenant state {}", row.state)))?,
        settings: TenantSettings {
            require_verification: row.require_verification,
            https_only: row.https_only,
            default_ttl_seconds: row.default_ttl_seconds,
            max_ttl_seconds: row.max_ttl_seconds,
        },
        tenant_id: row.tenant_id,
        display_name: row.display_name,
        create_time: row.create_time,
        update_time: row.update_time,
        delete_time: row.delete_time,
        etag: row.etag,
    })
}

pub(super) fn tenant_to_row(t: &Tenant) -> tenant::Model {
    tenant::Model {
        tenant_id: t.tenant_id.clone(),
        display_name: t.display_name.clone(),
        state: t.state.as_str().to_owned(),
        require_verification: t.settings.require_verification,
        https_only: t.settings.https_only,
        default_ttl_seconds: t.settings.default_ttl_seconds,
        max_ttl_seconds: t.settings.max_ttl_seconds,
        create_time: t.create_time,
        update_time: t.update_time,
        delete_time: t.delete_time,
        etag: t.etag.clone(),
    }
}

pub(super) fn event_type_from_row(row: event_type::Model) -> EventType {
    EventType {
        name: row.name,
        description: row.description,
        schema_json: row.schema_json,
        legacy_code: row.legacy_code,
        deprecated: row.deprecated,
        create_time: row.create_time,
        update_time: row.update_time,
        etag: row.etag,
    }
}

pub(super) fn event_type_to_row(e: &EventType) -> event_type::Model {
    event_type::Model {
        name: e.name.clone(),
        description: e.description.clone(),
        schema_json: e.schema_json.clone(),
        legacy_code: e.legacy_code,
        deprecated: e.deprecated,
        create_time: e.create_time,
        update_time: e.update_time,
        etag: e.etag.clone(),
    }
}

pub(super) fn subscription_from_row(row: subscription::Model) -> RepoResult<Subscription> {
    Ok(Subscription {
        event_types: serde_json::from_str(&row.event_types)
            .map_err(|e| RepoError::Internal(Box::new(e)))?,
        status: SubscriptionStatus::parse(&row.status)
            .ok_or_else(|| internal(format!("unknown subscription status {}", row.status)))?,
        tenant_id: row.tenant_id,
        subscription_id: row.subscription_id,
        endpoint_id: row.endpoint_id,
        name: row.name,
        expire_time: row.expire_time,
        create_time: row.create_time,
        update_time: row.update_time,
        etag: row.etag,
    })
}

pub(super) fn subscription_to_row(s: &Subscription) -> RepoResult<subscription::Model> {
    Ok(subscription::Model {
        tenant_id: s.tenant_id.clone(),
        subscription_id: s.subscription_id.clone(),
        endpoint_id: s.endpoint_id.clone(),
        name: s.name.clone(),
        event_types: serde_json::to_string(&s.event_types)
            .map_err(|e| RepoError::Internal(Box::new(e)))?,
        status: s.status.as_str().to_owned(),
        expire_time: s.expire_time,
        create_time: s.create_time,
        update_time: s.update_time,
        etag: s.etag.clone(),
    })
}

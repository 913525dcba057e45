//! Conversions between proto messages and model records.

use crate::domain::Role;
use crate::error::Error;
use crate::model::{
    Credential, Endpoint, EventType, Micros, Subscription, SubscriptionStatus, Tenant,
    TenantSettings, TenantState,
};
use crate::proto;
use crate::service::{WatchEvent, WatchResource};

pub fn timestamp(micros: Micros) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    })
}

pub fn tenant(t: Tenant) -> proto::Tenant {
    proto::Tenant {
        tenant_id: t.tenant_id,
        display_name: t.display_name,
        state: match t.state {
            TenantState::Active => proto::tenant::State::Active,
            TenantState::Suspended => proto::tenant::State::Suspended,
        } as i32,
        settings: Some(proto::tenant::Settings {
            require_verification: t.settings.require_verification,
            https_only: t.settings.https_only,
            default_ttl_seconds: t.settings.default_ttl_seconds,
            max_ttl_seconds: t.settings.max_ttl_seconds,
        }),
        create_time: timestamp(t.create_time),
        update_time: timestamp(t.update_time),
        etag: t.etag,
    }
}

pub fn tenant_state(field: &str, value: i32) -> Result<Option<TenantState>, Error> {
    use proto::tenant::State;
    match State::try_from(value) {
        Ok(State::Unspecified) => Ok(None),
        Ok(State::Active) => Ok(Some(TenantState::Active)),
        Ok(State::Suspended) => Ok(Some(TenantState::Suspended)),
        Err(_) => Err(Error::invalid(
            field,
            format!("{value} is not a tenant state"),
        )),
    }
}

pub fn tenant_settings(s: Option<proto::tenant::Settings>) -> TenantSettings {
    s.map(|s| TenantSettings {
        require_verification: s.require_verification,
        https_only: s.https_only,
        default_ttl_seconds: s.default_ttl_seconds,
        max_ttl_seconds: s.max_ttl_seconds,
    })
    .unwrap_or_default()
}

pub fn role(field: &str, value: i32) -> Result<Option<Role>, Error> {
    use proto::credential::Role as R;
    match R::try_from(value) {
        Ok(R::Unspecified) => Ok(None),
        Ok(R::PlatformAdmin) => Ok(Some(Role::PlatformAdmin)),
        Ok(R::TenantAdmin) => Ok(Some(Role::TenantAdmin)),
        Ok(R::Dispatcher) => Ok(Some(Role::Dispatcher)),
        Ok(R::Reader) => Ok(Some(Role::Reader)),
        Err(_) => Err(Error::invalid(field, format!("{value} is not a role"))),
    }
}

/// A credential; its secret only when `with_secret` (CreateCredential).
pub fn credential(c: Credential, with_secret: bool) -> proto::Credential {
    use proto::credential::Role as R;
    proto::Credential {
        api_id: c.api_id,
        tenant_id: c.tenant_id.unwrap_or_default(),
        role: match c.role {
            Role::PlatformAdmin => R::PlatformAdmin,
            Role::TenantAdmin => R::TenantAdmin,
            Role::Dispatcher => R::Dispatcher,
            Role::Reader => R::Reader,
        } as i32,
        description: c.description,
        secret: if with_secret { c.secret } else { String::new() },
        create_time: timestamp(c.create_time),
        update_time: timestamp(c.update_time),
        revoke_time: c.revoke_time.and_then(timestamp),
        etag: c.etag,
    }
}

pub fn event_type(e: EventType) -> proto::EventType {
    proto::EventType {
        name: e.name,
        description: e.description,
        schema_json: e.schema_json.unwrap_or_default(),
        legacy_code: e.legacy_code.unwrap_or(0),
        deprecated: e.deprecated,
        create_time: timestamp(e.create_time),
        update_time: timestamp(e.update_time),
        etag: e.etag,
    }
}

/// An endpoint; its secret only when `with_secret` (Create, Rotate).
pub fn endpoint(e: Endpoint, with_secret: bool) -> proto::Endpoint {
    proto::Endpoint {
        tenant_id: e.tenant_id,
        endpoint_id: e.endpoint_id,
        url: e.url,
        description: e.description,
        enabled: Some(e.enabled),
        secret: if with_secret { e.secret } else { String::new() },
        create_time: timestamp(e.create_time),
        update_time: timestamp(e.update_time),
        etag: e.etag,
        signing_secrets: Vec::new(),
        previous_secret_expire_time: None,
    }
}

pub fn subscription_status(field: &str, value: i32) -> Result<Option<SubscriptionStatus>, Error> {
    use proto::subscription::Status as S;
    match S::try_from(value) {
        Ok(S::Unspecified) => Ok(None),
        Ok(S::Active) => Ok(Some(SubscriptionStatus::Active)),
        Ok(S::Disabled) => Ok(Some(SubscriptionStatus::Disabled)),
        Ok(S::Deleted) => Ok(Some(SubscriptionStatus::Deleted)),
        Ok(S::PendingVerification) => Ok(Some(SubscriptionStatus::PendingVerification)),
        Ok(S::Expired) => Ok(Some(SubscriptionStatus::Expired)),
        Err(_) => Err(Error::invalid(
            field,
            format!("{value} is not a subscription status"),
        )),
    }
}

pub fn subscription(s: Subscription) -> proto::Subscription {
    use proto::subscription::Status as S;
    proto::Subscription {
        tenant_id: s.tenant_id,
        subscription_id: s.subscription_id,
        endpoint_id: s.endpoint_id,
        name: s.name.unwrap_or_default(),
        event_types: s.event_types,
        status: match s.status {
            SubscriptionStatus::Active => S::Active,
            SubscriptionStatus::Disabled => S::Disabled,
            SubscriptionStatus::Deleted => S::Deleted,
            SubscriptionStatus::PendingVerification => S::PendingVerification,
            SubscriptionStatus::Expired => S::Expired,
        } as i32,
        expire_time: s.expire_time.and_then(timestamp),
        create_time: timestamp(s.create_time),
        update_time: timestamp(s.update_time),
        etag: s.etag,
    }
}

/// A Watch event as the stream sends it. Endpoints carry their secrets only
/// when the watcher may read them (the list is empty otherwise).
pub fn watch_event(event: WatchEvent) -> proto::WatchSubscriptionsResponse {
    use proto::watch_subscriptions_response::{Kind, Resource};
    let (revision, kind, resource) = match event {
        WatchEvent::Snapshot(rev, r) => (rev, Kind::Snapshot, Some(r)),
        WatchEvent::Upsert(rev, r) => (rev, Kind::Upsert, Some(r)),
        WatchEvent::Delete(rev, r) => (rev, Kind::Delete, Some(r)),
        WatchEvent::Heartbeat(rev) => (rev, Kind::Heartbeat, None),
    };
    proto::WatchSubscriptionsResponse {
        revision,
        kind: kind as i32,
        resource: resource.map(|r| match r {
            WatchResource::Tenant(t) => Resource::Tenant(tenant(t)),
            WatchResource::EventType(e) => Resource::EventType(event_type(e)),
            WatchResource::Subscription(s) => Resource::Subscription(subscription(s)),
            WatchResource::Endpoint(e, secrets) => {
                let previous_until = e.previous_secret.as_ref().map(|p| p.expire_time);
                let mut out = endpoint(e, false);
                if let Some(newest) = secrets.first() {
                    out.secret = newest.clone();
                }
                if secrets.len() > 1 {
                    out.previous_secret_expire_time = previous_until.and_then(timestamp);
                }
                out.signing_secrets = secrets;
                Resource::Endpoint(out)
            }
        }),
    }
}

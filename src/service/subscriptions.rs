//! Subscriptions: pattern rules against the catalog, status transitions,
//! TTLs, soft delete that frees the name, and the filtered listing.

use std::sync::Arc;

use super::paging::page_in_memory;
use super::{Idempotency, Listed, Paging, Services, Settle, Written, attach_response};
use crate::auth::Caller;
use crate::domain::Permission;
use crate::domain::{EndpointId, EventPattern, SubscriptionId, resolve_ttl};
use crate::error::{Error, FieldExt, Result};
use crate::model::{
    Micros, Subscription, SubscriptionStatus, Tenant, TenantState, new_etag, now_micros,
};
use crate::repository::{RepoError, SubscriptionFilter};
use crate::resolve::Catalog;

#[derive(Clone)]
pub struct NewSubscription {
    pub tenant_id: String,
    pub subscription_id: String,
    pub endpoint_id: String,
    pub name: String,
    pub event_types: Vec<String>,
    pub status: Option<SubscriptionStatus>,
    pub ttl_seconds: i64,
}

#[derive(Default, Clone)]
pub struct SubscriptionChanges {
    pub etag: String,
    pub endpoint_id: Option<String>,
    pub name: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub status: Option<SubscriptionStatus>,
}

#[derive(Default)]
pub struct SubscriptionListFilter {
    pub endpoint_id: String,
    pub status: Option<SubscriptionStatus>,
    pub event_type: String,
    pub legacy_code: i32,
    pub show_deleted: bool,
}

const MAX_PATTERNS: usize = 64;
const NAME_MAX: usize = 128;

fn check_name(field: &str, name: &str) -> Result<Option<String>> {
    if name.is_empty() {
        return Ok(None);
    }
    super::check_text(field, name, NAME_MAX)?;
    if name.trim() != name {
        return Err(Error::invalid(
            field,
            "must not start or end with whitespace",
        ));
    }
    Ok(Some(name.to_owned()))
}

/// Create and Update accept ACTIVE (the default) and DISABLED only.
fn check_requested_status(
    field: &str,
    status: Option<SubscriptionStatus>,
) -> Result<SubscriptionStatus> {
    match status {
        None | Some(SubscriptionStatus::Active) => Ok(SubscriptionStatus::Active),
        Some(SubscriptionStatus::Disabled) => Ok(SubscriptionStatus::Disabled),
        Some(other) => Err(Error::invalid(
            field,
            format!("must be ACTIVE or DISABLED, not {}", other.as_str()),
        )),
    }
}

/// Parses the patterns and checks them against the catalog: an exact name
/// must exist and not be deprecated; a wildcard must match some entry.
fn check_patterns(field: &str, patterns: &[String], catalog: &Catalog) -> Result<Vec<String>> {
    if patterns.is_empty() || patterns.len() > MAX_PATTERNS {
        return Err(Error::invalid(
            field,
            format!("must hold 1..{MAX_PATTERNS} event types or patterns"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, raw) in patterns.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let pattern = EventPattern::parse(raw).field(&at)?;
        if !seen.insert(raw.as_str()) {
            return Err(Error::invalid(at, format!("repeats {raw}")));
        }
        if pattern.is_wildcard() {
            if !catalog.keys().any(|name| pattern.matches(name)) {
                return Err(Error::invalid(
                    at,
                    format!("{raw} matches no event type in the catalog"),
                ));
            }
        } else {
            match catalog.get(raw.as_str()) {
                None => {
                    return Err(Error::invalid(
                        at,
                        format!("{raw} is not in the event-type catalog"),
                    ));
                }
                Some(true) => {
                    return Err(Error::invalid(at, format!("{raw} is deprecated")));
                }
                Some(false) => {}
            }
        }
    }
    Ok(patterns.to_vec())
}

fn ttl_expiry(tenant: &Tenant, ttl_seconds: i64, now: Micros) -> Result<Option<Micros>> {
    let ttl = resolve_ttl(
        ttl_seconds,
        tenant.settings.default_ttl_seconds,
        tenant.settings.max_ttl_seconds,
    )
    .field("ttl_seconds")?;
    Ok(ttl.map(|secs| now + secs * 1_000_000))
}

/// What a reader sees: a subscription past its expiry is EXPIRED even before
/// the sweeper records it.
pub fn presented(mut s: Subscription, now: Micros) -> Subscription {
    if let Some(expire) = s.expire_time
        && hookplane_core::has_expired(expire, now)
        && matches!(
            s.status,
            SubscriptionStatus::Active
                | SubscriptionStatus::Disabled
                | SubscriptionStatus::PendingVerification
        )
    {
        s.status = SubscriptionStatus::Expired;
    }
    s
}

impl Services {
    /// Checks patterns against this replica's catalog and, when that refuses
    /// them, against the database (an entry created a moment ago on another
    /// replica may not have arrived yet).
    async fn checked_patterns(&self, field: &str, patterns: &[String]) -> Result<Vec<String>> {
        match check_patterns(field, patterns, &self.index.catalog()) {
            Ok(p) => Ok(p),
            Err(Error::InvalidArgument(_)) => {
                let stored: Catalog = self
                    .repo
                    .all_event_types()
                    .await?
                    .into_iter()
                    .map(|e| (e.name, e.deprecated))
                    .collect();
                check_patterns(field, patterns, &stored)
            }
            Err(e) => Err(e),
        }
    }

    pub async fn create_subscription(
        &self,
        caller: &Caller,
        new: NewSubscription,
        idempotency: Option<Idempotency>,
    ) -> Result<Written<Subscription>> {
        let tenant_id = self.tenant_scope_at(
            caller,
            Permission::SubscriptionsWrite,
            &new.tenant_id,
            "subscription.tenant_id",
        )?;
        let subscription_id = if new.subscription_id.is_empty() {
            SubscriptionId::generate()
        } else {
            SubscriptionId::parse(&new.subscription_id).field("subscription.subscription_id")?
        };
        if new.endpoint_id.is_empty() {
            return Err(Error::invalid("subscription.endpoint_id", "must be set"));
        }
        let endpoint_id = EndpointId::parse(&new.endpoint_id).field("subscription.endpoint_id")?;
        let name = check_name("subscription.name", &new.name)?;
        let status = check_requested_status("subscription.status", new.status)?;
        if new.ttl_seconds < 0 {
            return Err(Error::invalid("ttl_seconds", "must not be negative"));
        }
        let event_types = self
            .checked_patterns("subscription.event_types", &new.event_types)
            .await?;
        // The tenant as this replica last applied it saves a read per create;
        // the database checks its etag, and a tenant changed since is read
        // afresh and the create built again from it.
        let (mut tenant, mut fresh) = match self
            .index
            .tenant_record(tenant_id.as_str())
            .filter(|t| t.state == TenantState::Active)
        {
            Some(cached) => (cached, false),
            None => (
                Arc::new(self.writable_tenant(tenant_id.as_str()).await?),
                true,
            ),
        };
        let ttl_seconds = new.ttl_seconds;
        self.idempotent_settled(
            caller,
            "CreateSubscription",
            idempotency,
            Settle::Applied,
            |mut meta| async move {
                loop {
                    let status = if tenant.settings.require_verification {
                        SubscriptionStatus::PendingVerification
                    } else {
                        status
                    };
                    let subscription = Subscription {
                        tenant_id: tenant_id.as_str().to_owned(),
                        subscription_id: subscription_id.as_str().to_owned(),
                        endpoint_id: endpoint_id.as_str().to_owned(),
                        name: name.clone(),
                        event_types: event_types.clone(),
                        status,
                        expire_time: ttl_expiry(&tenant, ttl_seconds, meta.now)?,
                        create_time: meta.now,
                        update_time: meta.now,
                        etag: new_etag(),
                    };
                    attach_response(&mut meta, &subscription)?;
                    let verification =
                        if subscription.status == SubscriptionStatus::PendingVerification {
                            Some(self.new_verification(&subscription, meta.now)?)
                        } else {
                            None
                        };
                    match self
                        .repo
                        .create_subscription(
                            &subscription,
                            verification.as_ref(),
                            &tenant.etag,
                            &meta,
                        )
                        .await
                    {
                        Err(RepoError::TenantChanged) if !fresh => {
                            tenant = Arc::new(self.writable_tenant(tenant_id.as_str()).await?);
                            fresh = true;
                        }
                        written => {
                            let revision = written?;
                            self.index.apply_written(&subscription, revision);
                            return Ok((subscription, revision));
                        }
                    }
                }
            },
        )
        .await
    }

    async fn stored_subscription(
        &self,
        tenant_id: &str,
        subscription_id: &str,
    ) -> Result<Subscription> {
        self.repo
            .get_subscription(tenant_id, subscription_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("subscription {subscription_id} not found")))
    }

    pub async fn get_subscription(
        &self,
        caller: &Caller,
        tenant_id: &str,
        subscription_id: &str,
    ) -> Result<Subscription> {
        let tenant_id = self.tenant_scope(caller, Permission::SubscriptionsRead, tenant_id)?;
        let subscription_id = SubscriptionId::parse(subscription_id).field("subscription_id")?;
        let s = self
            .stored_subscription(tenant_id.as_str(), subscription_id.as_str())
            .await?;
        Ok(presented(s, now_micros()))
    }

    pub async fn list_subscriptions(
        &self,
        caller: &Caller,
        tenant_id: &str,
        filter: SubscriptionListFilter,
        paging: &Paging,
    ) -> Result<Listed<Subscription>> {
        let tenant_id = self.tenant_scope(caller, Permission::SubscriptionsRead, tenant_id)?;
        let endpoint_id = match filter.endpoint_id.as_str() {
            "" => None,
            e => Some(EndpointId::parse(e).field("endpoint_id")?.into_string()),
        };
        if filter.status == Some(SubscriptionStatus::Deleted) && !filter.show_deleted {
            return Err(Error::invalid("status", "DELETED needs show_deleted"));
        }
        if filter.legacy_code < 0 {
            return Err(Error::invalid("legacy_code", "must not be negative"));
        }
        let event_type = if !filter.event_type.is_empty() {
            crate::domain::EventTypeName::parse(&filter.event_type).field("event_type")?;
            Some(filter.event_type.clone())
        } else if filter.legacy_code > 0 {
            // An unknown code matches nothing rather than failing.
            Some(
                self.repo
                    .get_event_type_by_code(filter.legacy_code)
                    .await?
                    .map(|e| e.name)
                    .unwrap_or_default(),
            )
        } else {
            None
        };
        let scope = format!(
            "subscriptions/{tenant_id}/{}/{}/{}/{}/{}",
            endpoint_id.as_deref().unwrap_or(""),
            filter.status.map(|s| s.as_str()).unwrap_or(""),
            filter.event_type,
            filter.legacy_code,
            filter.show_deleted
        );
        let request = self.page_request(&scope, paging)?;
        self.live_tenant(tenant_id.as_str()).await?;
        let repo_filter = SubscriptionFilter {
            tenant_id: tenant_id.into_string(),
            endpoint_id,
            status: filter.status,
            show_deleted: filter.show_deleted,
        };
        let now = now_micros();
        let page = match event_type {
            None => self.repo.list_subscriptions(&repo_filter, &request).await?,
            Some(event_type) => {
                // Pattern matching happens here, over the tenant's
                // subscriptions in creation order.
                let matching: Vec<Subscription> = self
                    .repo
                    .all_subscriptions(&repo_filter)
                    .await?
                    .into_iter()
                    .filter(|s| {
                        !event_type.is_empty()
                            && s.event_types.iter().any(|p| {
                                EventPattern::parse(p)
                                    .map(|p| p.matches(&event_type))
                                    .unwrap_or(false)
                            })
                    })
                    .collect();
                page_in_memory(matching, &request, |s| {
                    (s.create_time, s.subscription_id.as_str())
                })
            }
        };
        let mut listed = self.listed(&scope, page, |s| (s.create_time, s.subscription_id.clone()));
        listed.items = listed
            .items
            .into_iter()
            .map(|s| presented(s, now))
            .collect();
        Ok(listed)
    }

    /// Updates; when the caller sent no etag, a concurrent change is not
    /// its conflict, so the update is re-read and retried a few times.
    pub async fn update_subscription(
        &self,
        caller: &Caller,
        tenant_id: &str,
        subscription_id: &str,
        changes: SubscriptionChanges,
        upsert: Option<NewSubscription>,
    ) -> Result<Written<Subscription>> {
        let mut attempt = 0;
        loop {
            match self
                .update_subscription_once(
                    caller,
                    tenant_id,
                    subscription_id,
                    changes.clone(),
                    upsert.clone(),
                )
                .await
            {
                Err(Error::Aborted(_)) if changes.etag.is_empty() && attempt < 5 => attempt += 1,
                other => return other,
            }
        }
    }

    async fn update_subscription_once(
        &self,
        caller: &Caller,
        tenant_id: &str,
        subscription_id: &str,
        changes: SubscriptionChanges,
        upsert: Option<NewSubscription>,
    ) -> Result<Written<Subscription>> {
        let tenant_id = self.tenant_scope_at(
            caller,
            Permission::SubscriptionsWrite,
            tenant_id,
            "subscription.tenant_id",
        )?;
        let subscription_id =
            SubscriptionId::parse(subscription_id).field("subscription.subscription_id")?;
        let endpoint_id = match &changes.endpoint_id {
            Some(e) => Some(
                EndpointId::parse(e)
                    .field("subscription.endpoint_id")?
                    .into_string(),
            ),
            None => None,
        };
        let name = match &changes.name {
            Some(n) => Some(check_name("subscription.name", n)?),
            None => None,
        };
        let status = match changes.status {
            Some(s) => Some(check_requested_status("subscription.status", Some(s))?),
            None => None,
        };
        let event_types = match &changes.event_types {
            Some(p) => Some(self.checked_patterns("subscription.event_types", p).await?),
            None => None,
        };
        let tenant = self.writable_tenant(tenant_id.as_str()).await?;
        let current = match (
            self.repo
                .get_subscription(tenant_id.as_str(), subscription_id.as_str())
                .await?,
            upsert,
        ) {
            (Some(s), _) => s,
            (None, Some(new)) => {
                return self
                    .create_subscription(
                        caller,
                        NewSubscription {
                            tenant_id: tenant_id.into_string(),
                            subscription_id: subscription_id.into_string(),
                            ..new
                        },
                        None,
                    )
                    .await;
            }
            (None, None) => {
                return Err(Error::NotFound(format!(
                    "subscription {subscription_id} not found"
                )));
            }
        };
        if current.status == SubscriptionStatus::Deleted {
            return Err(Error::FailedPrecondition(format!(
                "subscription {subscription_id} is deleted and cannot be updated"
            )));
        }
        if !changes.etag.is_empty() && changes.etag != current.etag {
            return Err(Error::Aborted(
                "etag does not match the subscription's current etag".into(),
            ));
        }
        let now = now_micros();
        let mut next = current.clone();
        if let Some(status) = status
            && status != current.status
        {
            let effective = presented(current.clone(), now).status;
            if !matches!(
                effective,
                SubscriptionStatus::Active | SubscriptionStatus::Disabled
            ) {
                return Err(Error::FailedPrecondition(format!(
                    "subscription {subscription_id} is {}; only ACTIVE and DISABLED subscriptions change status by Update",
                    effective.as_str()
                )));
            }
            next.status = status;
        }
        if let Some(e) = endpoint_id {
            next.endpoint_id = e;
        }
        if let Some(n) = name {
            next.name = n;
        }
        if let Some(p) = event_types {
            next.event_types = p;
        }
        let meta = self.write_meta(caller, now);
        next.update_time = meta.now;
        next.etag = new_etag();
        // A confirmation is bound to the endpoint it was sent to: on a
        // verifying tenant, a move (whatever the status) is confirmed anew.
        let verification =
            if tenant.settings.require_verification && next.endpoint_id != current.endpoint_id {
                next.status = SubscriptionStatus::PendingVerification;
                Some(self.new_verification(&next, meta.now)?)
            } else {
                None
            };
        let revision = self
            .repo
            .update_subscription(&next, &current.etag, verification.as_ref(), &meta)
            .await?;
        let written = self.applied(next, revision);
        Ok(Written {
            value: presented(written.value, now),
            ..written
        })
    }

    pub async fn delete_subscription(
        &self,
        caller: &Caller,
        tenant_id: &str,
        subscription_id: &str,
        etag: &str,
    ) -> Result<Written<Subscription>> {
        let tenant_id = self.tenant_scope(caller, Permission::SubscriptionsWrite, tenant_id)?;
        let subscription_id = SubscriptionId::parse(subscription_id).field("subscription_id")?;
        self.writable_tenant(tenant_id.as_str()).await?;
        let current = self
            .stored_subscription(tenant_id.as_str(), subscription_id.as_str())
            .await?;
        if current.status == SubscriptionStatus::Deleted {
            return Err(Error::NotFound(format!(
                "subscription {subscription_id} not found"
            )));
        }
        if !etag.is_empty() && etag != current.etag {
            return Err(Error::Aborted(
                "etag does not match the subscription's current etag".into(),
            ));
        }
        let meta = self.write_meta(caller, now_micros());
        let (subscription, revision) = self
            .repo
            .delete_subscription(
                tenant_id.as_str(),
                subscription_id.as_str(),
                &current.etag,
                &meta,
            )
            .await?;
        Ok(self.applied(subscription, revision))
    }

    /// Sets expire_time to now + ttl; revives an EXPIRED subscription.
    pub async fn renew_subscription(
        &self,
        caller: &Caller,
        tenant_id: &str,
        subscription_id: &str,
        ttl_seconds: i64,
    ) -> Result<Written<Subscription>> {
        let tenant_id = self.tenant_scope(caller, Permission::SubscriptionsWrite, tenant_id)?;
        let subscription_id = SubscriptionId::parse(subscription_id).field("subscription_id")?;
        if ttl_seconds < 0 {
            return Err(Error::invalid("ttl_seconds", "must not be negative"));
        }
        let tenant = self.writable_tenant(tenant_id.as_str()).await?;
        let current = self
            .stored_subscription(tenant_id.as_str(), subscription_id.as_str())
            .await?;
        if current.status == SubscriptionStatus::Deleted {
            return Err(Error::FailedPrecondition(format!(
                "subscription {subscription_id} is deleted and cannot be renewed"
            )));
        }
        let meta = self.write_meta(caller, now_micros());
        let mut next = presented(current.clone(), meta.now);
        next.expire_time = ttl_expiry(&tenant, ttl_seconds, meta.now)?;
        if next.status == SubscriptionStatus::Expired {
            next.status = if current.status == SubscriptionStatus::Expired {
                SubscriptionStatus::Active
            } else {
                current.status
            };
        }
        next.update_time = meta.now;
        next.etag = new_etag();
        let revision = self
            .repo
            .update_subscription(&next, &current.etag, None, &meta)
            .await?;
        Ok(self.applied(next, revision))
    }
}

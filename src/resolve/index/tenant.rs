//! One tenant's index: its subscribers (hookplane-core's, which the client
//! library's local resolver holds too), with what the server keeps beside
//! them: the tenant's row, how far the follower got, and this process's
//! own writes not yet followed.

use std::sync::Arc;

use hookplane_core::{EndpointState, Patterns, SubscriptionState, TenantSubscribers};

use crate::model::{Endpoint, Subscription, SubscriptionStatus, Tenant, TenantState};
use crate::repository::Revision;

use super::FastMap;

/// An endpoint row as the index files it.
fn endpoint_state(e: &Endpoint) -> EndpointState<'_> {
    EndpointState {
        endpoint_id: &e.endpoint_id,
        url: &e.url,
        secret: &e.secret,
        previous_secret: e
            .previous_secret
            .as_ref()
            .map(|p| (p.secret.as_str(), p.expire_time)),
        live: e.enabled && e.delete_time.is_none(),
    }
}

/// A subscription row as the index files it.
fn subscription_state(s: &Subscription) -> SubscriptionState<'_> {
    SubscriptionState {
        subscription_id: &s.subscription_id,
        endpoint_id: &s.endpoint_id,
        name: s.name.as_deref().unwrap_or_default(),
        event_types: &s.event_types,
        expire_time: s.expire_time,
        active: s.status == SubscriptionStatus::Active,
    }
}

#[derive(Default)]
pub(super) struct TenantIndex {
    /// The tenant row as of this index's revision: writes start from it and
    /// the database checks its etag, instead of reading it first.
    pub(super) record: Option<Arc<Tenant>>,
    /// Every change to this tenant up to this revision has been applied
    /// from the change log (a write applied here directly is newer only if
    /// its revision is above it).
    pub(super) followed: Revision,
    /// Subscriptions this process wrote and applied here directly, by id,
    /// with the write's revision and the state written; kept until
    /// `followed` reaches that revision. Until then the follower may still
    /// hold a read from before the write, which must not undo it.
    pub(super) written: FastMap<Box<str>, (Revision, Subscription)>,
    pub(super) subscribers: TenantSubscribers,
}

impl TenantIndex {
    pub(super) fn build(
        tenant: Tenant,
        endpoints: Vec<Endpoint>,
        subscriptions: Vec<Subscription>,
        patterns: &Patterns,
        followed: Revision,
    ) -> Self {
        let mut index = TenantIndex {
            subscribers: TenantSubscribers::new(tenant.state == TenantState::Active),
            record: Some(Arc::new(tenant)),
            followed,
            ..Default::default()
        };
        for e in &endpoints {
            index.upsert_endpoint(e);
        }
        for s in &subscriptions {
            index.upsert_subscription(s, patterns);
        }
        index.subscribers.shrink_to_fit();
        index
    }

    /// Records that the follower has applied this tenant's changes up to
    /// `followed`, and forgets direct writes it has thereby caught up with.
    pub(super) fn follow(&mut self, followed: Revision) {
        self.followed = self.followed.max(followed);
        let followed = self.followed;
        if !self.written.is_empty() {
            self.written.retain(|_, (revision, _)| *revision > followed);
        }
    }

    /// Applies the direct writes of `older` (the index this one replaces)
    /// that are newer than what this one was built from.
    pub(super) fn keep_written(&mut self, older: &mut TenantIndex, patterns: &Patterns) {
        for (id, (revision, s)) in std::mem::take(&mut older.written) {
            if revision > self.followed {
                self.upsert_subscription(&s, patterns);
                self.written.insert(id, (revision, s));
            }
        }
    }

    pub(super) fn upsert_endpoint(&mut self, e: &Endpoint) {
        self.subscribers.upsert_endpoint(endpoint_state(e));
    }

    pub(super) fn remove_endpoint(&mut self, endpoint_id: &str) {
        self.subscribers.remove_endpoint(endpoint_id);
    }

    pub(super) fn remove_subscription(&mut self, subscription_id: &str, patterns: &Patterns) {
        self.subscribers
            .remove_subscription(subscription_id, patterns);
    }

    /// Indexes an ACTIVE subscription; anything else leaves the index.
    pub(super) fn upsert_subscription(&mut self, s: &Subscription, patterns: &Patterns) {
        self.subscribers
            .upsert_subscription(subscription_state(s), patterns);
    }
}

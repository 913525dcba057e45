//! One tenant's index and how a changed endpoint or subscription is filed
//! into it or taken out.

use std::sync::Arc;

use hookplane_core::PatternTrie;

use crate::domain::EventPattern;
use crate::model::{Endpoint, Micros, Subscription, SubscriptionStatus, Tenant, TenantState};
use crate::repository::Revision;

use super::FastMap;
use super::interner::Patterns;
use super::packed::Packed;

/// An enabled, live endpoint.
pub(super) struct IndexedEndpoint {
    /// URL, signing secret.
    pub(super) text: Packed<2>,
    pub(super) previous: Option<(Box<str>, Micros)>,
}

/// Kept small: a million of these live in memory.
pub(super) struct Entry {
    /// Subscription id, name, endpoint id.
    pub(super) text: Packed<3>,
    /// The endpoint's slot in the tenant's `endpoints`.
    pub(super) endpoint: u32,
    /// Shared across subscriptions through the index's pattern interner.
    /// The first is held here, the rest behind a pointer: most
    /// subscriptions have one, and a resolve then reads no other memory to
    /// name the matched pattern.
    pub(super) pattern: Arc<EventPattern>,
    pub(super) more_patterns: Box<[Arc<EventPattern>]>,
    pub(super) expire_time: Option<Micros>,
}

impl Entry {
    pub(super) fn subscription_id(&self) -> &str {
        self.text.get(0)
    }

    pub(super) fn patterns(&self) -> impl Iterator<Item = &Arc<EventPattern>> {
        std::iter::once(&self.pattern).chain(self.more_patterns.iter())
    }
}

#[derive(Default)]
pub(super) struct TenantIndex {
    /// The tenant row as of this index's revision: writes start from it and
    /// the database checks its etag, instead of reading it first.
    pub(super) record: Option<Arc<Tenant>>,
    /// Whether `record` is an ACTIVE tenant, kept here so a resolve need
    /// not read the record.
    pub(super) active: bool,
    /// Every change to this tenant up to this revision has been applied
    /// from the change log (a write applied here directly is newer only if
    /// its revision is above it).
    pub(super) followed: Revision,
    /// Subscriptions this process wrote and applied here directly, by id,
    /// with the write's revision and the state written; kept until
    /// `followed` reaches that revision. Until then the follower may still
    /// hold a read from before the write, which must not undo it.
    pub(super) written: FastMap<Box<str>, (Revision, Subscription)>,
    /// By slot; `None` while the endpoint is disabled, deleted or not yet
    /// seen. A slot stays with its endpoint id for the index's lifetime, so
    /// subscriptions refer to endpoints by slot.
    pub(super) endpoints: Vec<Option<IndexedEndpoint>>,
    endpoint_slots: FastMap<Box<str>, u32>,
    pub(super) entries: Vec<Option<Entry>>,
    free: Vec<u32>,
    slots: FastMap<Box<str>, u32>,
    /// By the interned id of the event type name (see [`Patterns::id`]).
    pub(super) exact: FastMap<u32, Vec<Tagged>>,
    pub(super) wildcards: PatternTrie,
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
            active: tenant.state == TenantState::Active,
            record: Some(Arc::new(tenant)),
            followed,
            ..Default::default()
        };
        for e in endpoints {
            index.upsert_endpoint(e);
        }
        for s in subscriptions {
            index.upsert_subscription(&s, patterns);
        }
        index.entries.shrink_to_fit();
        index.slots.shrink_to_fit();
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

    fn endpoint_slot(&mut self, endpoint_id: &str) -> u32 {
        if let Some(slot) = self.endpoint_slots.get(endpoint_id) {
            return *slot;
        }
        let slot = self.endpoints.len() as u32;
        self.endpoints.push(None);
        self.endpoint_slots.insert(endpoint_id.into(), slot);
        slot
    }

    pub(super) fn upsert_endpoint(&mut self, e: Endpoint) {
        let slot = self.endpoint_slot(&e.endpoint_id) as usize;
        self.endpoints[slot] = (e.enabled && e.delete_time.is_none()).then(|| IndexedEndpoint {
            text: Packed::new([&e.url, &e.secret]),
            previous: e.previous_secret.map(|p| (p.secret.into(), p.expire_time)),
        });
    }

    pub(super) fn remove_endpoint(&mut self, endpoint_id: &str) {
        if let Some(slot) = self.endpoint_slots.get(endpoint_id) {
            self.endpoints[*slot as usize] = None;
        }
    }

    pub(super) fn remove_subscription(&mut self, subscription_id: &str, interner: &Patterns) {
        let Some(slot) = self.slots.remove(subscription_id) else {
            return;
        };
        if let Some(entry) = self.entries[slot as usize].take() {
            for (i, p) in entry.patterns().enumerate() {
                if p.is_wildcard() {
                    self.wildcards
                        .remove(p.as_str(), tagged(slot, i), |s| interner.id(s));
                } else {
                    let name = interner.id(p.as_str());
                    if let Some(list) = self.exact.get_mut(&name) {
                        list.retain(|t| slot_of(*t) != slot);
                        if list.is_empty() {
                            self.exact.remove(&name);
                        }
                    }
                }
            }
        }
        self.free.push(slot);
    }

    /// Indexes an ACTIVE subscription; anything else leaves the index.
    pub(super) fn upsert_subscription(&mut self, s: &Subscription, interner: &Patterns) {
        self.remove_subscription(&s.subscription_id, interner);
        if s.status != SubscriptionStatus::Active {
            return;
        }
        let mut patterns = s.event_types.iter().filter_map(|p| interner.get(p));
        let Some(pattern) = patterns.next() else {
            // Nothing it could match (every pattern was checked on the way in).
            return;
        };
        let more_patterns: Box<[Arc<EventPattern>]> = patterns.collect();
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.entries.push(None);
                (self.entries.len() - 1) as u32
            }
        };
        for (i, p) in std::iter::once(&pattern)
            .chain(more_patterns.iter())
            .enumerate()
        {
            if p.is_wildcard() {
                self.wildcards
                    .insert(p.as_str(), tagged(slot, i), |s| interner.id(s));
            } else {
                let name = interner.id(p.as_str());
                self.exact.entry(name).or_default().push(tagged(slot, i));
            }
        }
        self.slots.insert(s.subscription_id.as_str().into(), slot);
        let endpoint = self.endpoint_slot(&s.endpoint_id);
        let name = s.name.as_deref().unwrap_or_default();
        self.entries[slot as usize] = Some(Entry {
            text: Packed::new([&s.subscription_id, name, &s.endpoint_id]),
            endpoint,
            pattern,
            more_patterns,
            expire_time: s.expire_time,
        });
    }
}

/// An entry in a slot list: the entry's slot and the index of the pattern
/// that filed it there (capped at [`LAST_PATTERN`]), so that a resolve names
/// the matched pattern without testing patterns again.
pub(super) type Tagged = u64;

const PATTERN_BITS: u32 = 8;
pub(super) const LAST_PATTERN: usize = (1 << PATTERN_BITS) - 1;

fn tagged(slot: u32, pattern: usize) -> Tagged {
    (u64::from(slot) << PATTERN_BITS) | pattern.min(LAST_PATTERN) as u64
}

pub(super) fn slot_of(tag: Tagged) -> u32 {
    (tag >> PATTERN_BITS) as u32
}

pub(super) fn pattern_of(tag: Tagged) -> usize {
    (tag & LAST_PATTERN as u64) as usize
}

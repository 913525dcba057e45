//! One tenant's subscribers, and how a changed endpoint or subscription is
//! filed into them or taken out.

use std::sync::Arc;

use super::FastMap;
use super::packed::Packed;
use super::patterns::Patterns;
use crate::{EventPattern, Micros, PatternTrie};

/// An endpoint as the index needs it.
pub struct EndpointState<'a> {
    pub endpoint_id: &'a str,
    pub url: &'a str,
    /// The current signing secret.
    pub secret: &'a str,
    /// The rotated-out secret and when it stops being sent.
    pub previous_secret: Option<(&'a str, Micros)>,
    /// Enabled and not deleted: only then do its subscriptions resolve.
    pub live: bool,
}

/// A subscription as the index needs it.
pub struct SubscriptionState<'a> {
    pub subscription_id: &'a str,
    pub endpoint_id: &'a str,
    /// Empty when it has none.
    pub name: &'a str,
    /// Its event-type names and patterns, as stored.
    pub event_types: &'a [String],
    pub expire_time: Option<Micros>,
    /// Its status is ACTIVE: anything else leaves the index.
    pub active: bool,
}

/// An enabled, live endpoint.
pub(crate) struct IndexedEndpoint {
    /// URL, signing secret.
    pub(crate) text: Packed<2>,
    pub(crate) previous: Option<(Box<str>, Micros)>,
}

/// Kept small: a million of these live in memory.
pub(crate) struct Entry {
    /// Subscription id, name, endpoint id.
    pub(crate) text: Packed<3>,
    /// The endpoint's slot in the tenant's `endpoints`.
    pub(crate) endpoint: u32,
    /// Shared across subscriptions through the index's pattern interner.
    /// The first is held here, the rest behind a pointer: most
    /// subscriptions have one, and a resolve then reads no other memory to
    /// name the matched pattern.
    pub(crate) pattern: Arc<EventPattern>,
    pub(crate) more_patterns: Box<[Arc<EventPattern>]>,
    pub(crate) expire_time: Option<Micros>,
}

impl Entry {
    pub(crate) fn subscription_id(&self) -> &str {
        self.text.get(0)
    }

    pub(crate) fn patterns(&self) -> impl Iterator<Item = &Arc<EventPattern>> {
        std::iter::once(&self.pattern).chain(self.more_patterns.iter())
    }
}

/// Whom an event of one tenant reaches: exact event names in a hash map,
/// wildcard patterns in a segment trie, and the tenant's live endpoints.
/// The server's index and the client library's local resolver both hold
/// one per tenant, so both answer with this code.
#[derive(Default)]
pub struct TenantSubscribers {
    /// The tenant is ACTIVE: a suspended one resolves to nothing.
    pub(crate) active: bool,
    /// By slot; `None` while the endpoint is disabled, deleted or not yet
    /// seen. A slot stays with its endpoint id for the index's lifetime, so
    /// subscriptions refer to endpoints by slot.
    pub(crate) endpoints: Vec<Option<IndexedEndpoint>>,
    endpoint_slots: FastMap<Box<str>, u32>,
    pub(crate) entries: Vec<Option<Entry>>,
    free: Vec<u32>,
    slots: FastMap<Box<str>, u32>,
    /// By the interned id of the event type name (see [`Patterns`]).
    pub(crate) exact: FastMap<u32, Vec<Tagged>>,
    pub(crate) wildcards: PatternTrie,
    /// Moves with every subscription filed or taken out: the answer
    /// orders kept for paging (see `pages.rs`) are good while it stays.
    pub(crate) version: u64,
    pub(crate) orders: super::pages::Orders,
}

impl TenantSubscribers {
    pub fn new(active: bool) -> Self {
        TenantSubscribers {
            active,
            ..Default::default()
        }
    }

    /// The tenant's state changed: only an ACTIVE tenant's events reach
    /// anyone.
    pub fn set_active(&mut self, active: bool) {
        self.active = active;
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Subscriptions indexed (ACTIVE ones, whatever their endpoint's state).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Gives back the spare capacity of a freshly built index.
    pub fn shrink_to_fit(&mut self) {
        self.entries.shrink_to_fit();
        self.slots.shrink_to_fit();
        self.endpoints.shrink_to_fit();
        self.endpoint_slots.shrink_to_fit();
        self.exact.shrink_to_fit();
        for list in self.exact.values_mut() {
            list.shrink_to_fit();
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

    pub fn upsert_endpoint(&mut self, e: EndpointState<'_>) {
        let slot = self.endpoint_slot(e.endpoint_id) as usize;
        self.endpoints[slot] = e.live.then(|| IndexedEndpoint {
            text: Packed::new([e.url, e.secret]),
            previous: e.previous_secret.map(|(p, until)| (p.into(), until)),
        });
    }

    pub fn remove_endpoint(&mut self, endpoint_id: &str) {
        if let Some(slot) = self.endpoint_slots.get(endpoint_id) {
            self.endpoints[*slot as usize] = None;
        }
    }

    pub fn remove_subscription(&mut self, subscription_id: &str, interner: &Patterns) {
        let Some(slot) = self.slots.remove(subscription_id) else {
            return;
        };
        self.version += 1;
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
    pub fn upsert_subscription(&mut self, s: SubscriptionState<'_>, interner: &Patterns) {
        self.remove_subscription(s.subscription_id, interner);
        if !s.active {
            return;
        }
        let mut patterns = s.event_types.iter().filter_map(|p| interner.get(p));
        let Some(pattern) = patterns.next() else {
            // Nothing it could match (every pattern was checked on the way in).
            return;
        };
        let more_patterns: Box<[Arc<EventPattern>]> = patterns.collect();
        self.version += 1;
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
        self.slots.insert(s.subscription_id.into(), slot);
        let endpoint = self.endpoint_slot(s.endpoint_id);
        self.entries[slot as usize] = Some(Entry {
            text: Packed::new([s.subscription_id, s.name, s.endpoint_id]),
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
pub(crate) type Tagged = u64;

const PATTERN_BITS: u32 = 8;
pub(crate) const LAST_PATTERN: usize = (1 << PATTERN_BITS) - 1;

fn tagged(slot: u32, pattern: usize) -> Tagged {
    (u64::from(slot) << PATTERN_BITS) | pattern.min(LAST_PATTERN) as u64
}

pub(crate) fn slot_of(tag: Tagged) -> u32 {
    (tag >> PATTERN_BITS) as u32
}

pub(crate) fn pattern_of(tag: Tagged) -> usize {
    (tag & LAST_PATTERN as u64) as usize
}

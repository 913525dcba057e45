//! Resolve: the subscriptions an event type reaches in one tenant's index,
//! read in place while it is locked, and the answers built from them.

use super::patterns::Resolvable;
use super::tenant::{
    Entry, IndexedEndpoint, LAST_PATTERN, Tagged, TenantSubscribers, pattern_of, slot_of,
};
use crate::{EventPattern, Micros, has_expired};

/// One subscription to deliver an event to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub subscription_id: String,
    pub endpoint_id: String,
    pub name: String,
    pub url: String,
    pub matched_pattern: String,
    /// Newest first.
    pub signing_secrets: Vec<String>,
}

impl TenantSubscribers {
    /// The live subscriptions `event_type` reaches, in the order of
    /// answers: by subscription id. `ids` are the interned ids of its
    /// name and segments, from the same [`Patterns`](super::Patterns) the
    /// subscriptions were filed with. None while the tenant is not ACTIVE;
    /// a subscription past its expiry time, or on an endpoint that is not
    /// live, is left out. With `with_secrets`, each match carries its
    /// endpoint's live signing secrets.
    pub fn matches(
        &self,
        event_type: &str,
        ids: &Resolvable,
        now: Micros,
        with_secrets: bool,
    ) -> Vec<Match<'_>> {
        if !self.active {
            return Vec::new();
        }
        let tags = self.tags(ids);
        // In an index larger than the CPU's caches, each entry reached and
        // each string it points to is a likely miss. Asking for all the
        // entries first, then for all their strings, lets those misses
        // overlap instead of queueing one behind the other (profiles of
        // resolve over 1M subscriptions were dominated by them).
        for &tag in &tags {
            if let Some(entry) = self.entries.get(slot_of(tag) as usize) {
                prefetch(entry);
            }
        }
        let mut live: Vec<(&Entry, &IndexedEndpoint, Tagged)> = Vec::with_capacity(tags.len());
        live.extend(tags.into_iter().filter_map(|tag| {
            let entry = self.entries.get(slot_of(tag) as usize)?.as_ref()?;
            if entry.expire_time.is_some_and(|t| has_expired(t, now)) {
                return None;
            }
            let endpoint = self.endpoints.get(entry.endpoint as usize)?.as_ref()?;
            prefetch(entry.text.text.as_ptr());
            prefetch(endpoint.text.text.as_ptr());
            Some((entry, endpoint, tag))
        }));
        let mut found: Vec<Match<'_>> = Vec::with_capacity(live.len());
        found.extend(live.into_iter().filter_map(|(entry, endpoint, tag)| {
            Match::of(entry, endpoint, tag, event_type, now, with_secrets)
        }));
        // The contract's order, which pages of an answer follow.
        found.sort_unstable_by(|a, b| a.entry.subscription_id().cmp(b.entry.subscription_id()));
        found
    }
}

impl TenantSubscribers {
    /// The tags of the entries `ids` reaches, one per entry: the lowest of
    /// its tags, which names the first of its patterns that matched.
    pub(crate) fn tags(&self, ids: &Resolvable) -> Vec<Tagged> {
        let exact = self.exact.get(&ids.name).map_or(&[][..], Vec::as_slice);
        let mut tags: Vec<Tagged> = Vec::with_capacity(exact.len() + 16);
        tags.extend_from_slice(exact);
        self.wildcards.collect(&ids.segments, &mut tags);
        tags.sort_unstable();
        tags.dedup_by_key(|t| slot_of(*t));
        tags
    }

    /// The entry a tag files.
    pub(crate) fn entry(&self, tag: Tagged) -> Option<&Entry> {
        self.entries.get(slot_of(tag) as usize)?.as_ref()
    }

    /// The match a tag makes at `now`: `None` if its entry expired or its
    /// endpoint is not live.
    pub(crate) fn live_match(
        &self,
        tag: Tagged,
        event_type: &str,
        now: Micros,
        with_secrets: bool,
    ) -> Option<Match<'_>> {
        let entry = self.entry(tag)?;
        if entry.expire_time.is_some_and(|t| has_expired(t, now)) {
            return None;
        }
        let endpoint = self.endpoints.get(entry.endpoint as usize)?.as_ref()?;
        Match::of(entry, endpoint, tag, event_type, now, with_secrets)
    }
}

/// Asks the CPU to start loading the memory `value` starts at (its first
/// and last cache lines), without waiting for it. A hint only: it reads
/// nothing the program sees and never faults.
#[inline(always)]
fn prefetch<T>(value: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let first = value.cast::<i8>();
        // SAFETY: a prefetch never faults, whatever the address, and
        // changes nothing but the cache.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(first) };
        // For a single byte (the start of a string) there is no last line
        // to ask for; the size is known when compiling, so this costs
        // nothing on the request path.
        if std::mem::size_of::<T>() > 1 {
            let last = first.wrapping_add(std::mem::size_of::<T>() - 1);
            // SAFETY: as above.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(last) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// One subscription an event reaches, read in place from a tenant's index
/// while it is locked: answers are written from these without copying the
/// strings first.
pub struct Match<'a> {
    entry: &'a Entry,
    endpoint: &'a IndexedEndpoint,
    pattern: &'a EventPattern,
    /// The endpoint's live secrets, newest first, when asked for.
    secrets: [Option<&'a str>; 2],
}

impl<'a> Match<'a> {
    /// The match of a live entry on a live endpoint, filed under `tag`.
    #[inline]
    fn of(
        entry: &'a Entry,
        endpoint: &'a IndexedEndpoint,
        tag: Tagged,
        event_type: &str,
        now: Micros,
        with_secrets: bool,
    ) -> Option<Self> {
        let pattern = match pattern_of(tag) {
            0 => &entry.pattern,
            n if n < LAST_PATTERN => entry.more_patterns.get(n - 1)?,
            // Past the tags' range: test those patterns.
            _ => entry
                .patterns()
                .skip(LAST_PATTERN)
                .find(|p| p.matches(event_type))?,
        };
        let secrets = if with_secrets {
            let previous = endpoint
                .previous
                .as_ref()
                .filter(|(_, until)| !has_expired(*until, now))
                .map(|(previous, _)| &**previous);
            // A local resolver without secrets.read files none.
            let current = Some(endpoint.text.get(1)).filter(|s| !s.is_empty());
            [current, previous]
        } else {
            [None, None]
        };
        Some(Match {
            entry,
            endpoint,
            pattern,
            secrets,
        })
    }

    #[inline]
    pub fn subscription_id(&self) -> &'a str {
        self.entry.text.get(0)
    }

    #[inline]
    pub fn endpoint_id(&self) -> &'a str {
        self.entry.text.get(2)
    }

    /// Empty when the subscription has none.
    #[inline]
    pub fn name(&self) -> &'a str {
        self.entry.text.get(1)
    }

    #[inline]
    pub fn url(&self) -> &'a str {
        self.endpoint.text.get(0)
    }

    /// The subscription's first pattern that matches the event type.
    #[inline]
    pub fn matched_pattern(&self) -> &'a str {
        self.pattern.as_str()
    }

    /// Newest first; none unless the caller asked for secrets.
    #[inline]
    pub fn signing_secrets(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        self.secrets.into_iter().flatten()
    }

    pub fn to_target(&self) -> Target {
        // String::from, not to_string(): the latter goes through the
        // formatter and grows the buffer as it writes.
        Target {
            subscription_id: String::from(self.subscription_id()),
            endpoint_id: String::from(self.endpoint_id()),
            name: String::from(self.name()),
            url: String::from(self.url()),
            matched_pattern: String::from(self.matched_pattern()),
            signing_secrets: self.signing_secrets().map(String::from).collect(),
        }
    }
}

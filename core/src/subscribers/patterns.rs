//! The index's interner: one parsed pattern per distinct pattern text, and
//! one id per distinct event type name and segment.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::FastMap;
use crate::EventPattern;

/// One parsed pattern per distinct pattern text, shared by every
/// subscription that uses it; and one id per distinct event type name and
/// name segment, which the index compares instead of strings. One per
/// index, shared by all of its tenants.
#[derive(Default)]
pub struct Patterns {
    parsed: Mutex<HashMap<Box<str>, Arc<EventPattern>>>,
    ids: Mutex<FastMap<Box<str>, u32>>,
}

impl Patterns {
    /// The id of a segment or a whole name, the same for the interner's
    /// lifetime (ids are never given back: there is one per distinct
    /// string ever seen).
    pub(crate) fn id(&self, text: &str) -> u32 {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = ids.get(text) {
            return *id;
        }
        let id = ids.len() as u32;
        ids.insert(text.into(), id);
        id
    }

    /// What a resolve of `event_type` looks up: the ids of its name and
    /// segments. Made once per catalog entry, when the catalog changes.
    pub fn resolvable(&self, event_type: &str) -> Resolvable {
        Resolvable {
            name: self.id(event_type),
            segments: event_type.split('.').map(|s| self.id(s)).collect(),
        }
    }

    /// The parsed pattern of `raw`; `None` if it is not a valid pattern
    /// (every stored one was checked on the way in).
    pub(crate) fn get(&self, raw: &str) -> Option<Arc<EventPattern>> {
        let mut map = self.parsed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = map.get(raw) {
            return Some(p.clone());
        }
        let parsed = Arc::new(EventPattern::parse(raw).ok()?);
        map.insert(raw.into(), parsed.clone());
        Some(parsed)
    }
}

/// What a resolve needs of a catalog entry: the interned ids of its name
/// and of its segments.
pub struct Resolvable {
    pub(crate) name: u32,
    pub(crate) segments: Box<[u32]>,
}

//! The index's interner: one parsed pattern per distinct pattern text, and
//! one id per distinct event type name and segment.

use std::collections::HashMap;
use std::sync::Arc;

use crate::domain::EventPattern;

use super::FastMap;

/// One parsed pattern per distinct pattern text, shared by every
/// subscription that uses it; and one id per distinct event type name and
/// name segment, which the index compares instead of strings.
#[derive(Default)]
pub(crate) struct Patterns {
    parsed: std::sync::Mutex<HashMap<Box<str>, Arc<EventPattern>>>,
    ids: std::sync::Mutex<FastMap<Box<str>, u32>>,
}

impl Patterns {
    /// The id of a segment or a whole name, the same for the process's
    /// lifetime (ids are never given back: there is one per distinct
    /// string ever seen).
    pub(super) fn id(&self, text: &str) -> u32 {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = ids.get(text) {
            return *id;
        }
        let id = ids.len() as u32;
        ids.insert(text.into(), id);
        id
    }

    /// The ids of an event type's name and segments.
    pub(super) fn resolvable(&self, event_type: &str) -> Resolvable {
        Resolvable {
            name: self.id(event_type),
            segments: event_type.split('.').map(|s| self.id(s)).collect(),
        }
    }

    pub(super) fn get(&self, raw: &str) -> Option<Arc<EventPattern>> {
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
pub(super) struct Resolvable {
    pub(super) name: u32,
    pub(super) segments: Box<[u32]>,
}

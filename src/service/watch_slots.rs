//! The bounds on open WatchSubscriptions streams of this replica: in all
//! (`--max-watch-streams`) and per credential
//! (`--max-watch-streams-per-credential`). A stream holds its slot for as
//! long as it runs; the slot is given back when its task ends, however it
//! ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, Result};

pub(super) struct WatchSlots {
    max_total: usize,
    max_per_credential: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_credential: HashMap<String, usize>,
}

/// One open stream's slot; dropping it frees the slot.
pub(super) struct WatchSlot {
    slots: Arc<WatchSlots>,
    api_id: String,
}

impl WatchSlots {
    pub(super) fn new(max_total: usize, max_per_credential: usize) -> Arc<Self> {
        Arc::new(WatchSlots {
            max_total,
            max_per_credential,
            open: Mutex::default(),
        })
    }

    /// A slot for a stream of `api_id`, unless a bound is reached.
    pub(super) fn take(self: &Arc<Self>, api_id: &str) -> Result<WatchSlot> {
        let mut open = self.lock();
        if open.total >= self.max_total {
            return Err(Error::ResourceExhausted(format!(
                "this server has its maximum of {} open Watch streams (--max-watch-streams); retry later or on another replica",
                self.max_total
            )));
        }
        let of_credential = open.by_credential.get(api_id).copied().unwrap_or(0);
        if of_credential >= self.max_per_credential {
            return Err(Error::ResourceExhausted(format!(
                "this credential has its maximum of {} open Watch streams on this server (--max-watch-streams-per-credential)",
                self.max_per_credential
            )));
        }
        open.total += 1;
        open.by_credential
            .insert(api_id.to_owned(), of_credential + 1);
        Ok(WatchSlot {
            slots: self.clone(),
            api_id: api_id.to_owned(),
        })
    }

    /// Open streams in all.
    #[cfg(test)]
    pub(super) fn open(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        // Two counters updated together under the lock: never half-done.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self.slots.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.by_credential.get_mut(&self.api_id) {
            *count -= 1;
            if *count == 0 {
                open.by_credential.remove(&self.api_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bound_refuses_and_a_dropped_slot_frees_room() {
        let slots = WatchSlots::new(3, 2);
        let a1 = slots.take("a").unwrap();
        let _a2 = slots.take("a").unwrap();
        let refused = slots.take("a").err().unwrap().to_string();
        assert!(
            refused.contains("--max-watch-streams-per-credential"),
            "{refused}"
        );
        let _b1 = slots.take("b").unwrap();
        let refused = slots.take("c").err().unwrap().to_string();
        assert!(refused.contains("--max-watch-streams)"), "{refused}");
        drop(a1);
        assert_eq!(slots.open(), 2);
        let _c1 = slots.take("c").unwrap();
        assert_eq!(slots.open(), 3);
    }
}

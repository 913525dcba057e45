//! The replica's change feed: the changes the follower applies, in revision
//! order, each with its resource's state as that change left it. Every Watch stream of the replica is served from
//! it, so the database's load does not grow with the number of streams:
//! the log is read once per replica, not once per stream. The feed holds
//! the most recent changes only; a stream below them reads the change log
//! itself, then rejoins.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use crate::model::{Endpoint, EventType, Subscription, Tenant};
use crate::repository::{ChangeKind, ChangeRecord, ResourceKind, Revision};

/// One change, as a Watch stream needs it.
#[derive(Debug)]
pub struct FeedEvent {
    pub revision: Revision,
    pub tenant_id: Option<String>,
    pub kind: ChangeKind,
    pub change: FeedChange,
}

#[derive(Debug)]
pub enum FeedChange {
    Subscription(Subscription),
    Endpoint(Endpoint),
    Tenant(Tenant),
    /// The catalog's: every stream carries it.
    EventType(EventType),
    /// A credential changed: whether it still exists unrevoked.
    Credential {
        api_id: String,
        live: bool,
    },
}

impl FeedEvent {
    /// The event a change-log row makes; `None` for a kind this build does
    /// not know, and for a change stored without its state (before states
    /// were kept) whose resource was gone when the log was read.
    pub fn from_change(c: ChangeRecord) -> Option<FeedEvent> {
        let kind = c.change()?;
        let change = match c.resource()? {
            ResourceKind::Subscription => FeedChange::Subscription(c.subscription?),
            ResourceKind::Endpoint => FeedChange::Endpoint(c.endpoint?),
            ResourceKind::Credential => FeedChange::Credential {
                live: c.credential_live.unwrap_or(false),
                api_id: c.resource_key,
            },
            ResourceKind::Tenant => FeedChange::Tenant(c.tenant?),
            ResourceKind::EventType => FeedChange::EventType(c.event_type?),
        };
        Some(FeedEvent {
            revision: c.revision,
            tenant_id: c.tenant_id,
            kind,
            change,
        })
    }
}

/// The feed no longer holds the changes after the revision asked for; they
/// are in the change log from `floor` down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Behind {
    pub floor: Revision,
}

pub struct ChangeFeed {
    ring: RwLock<Ring>,
    /// The revision through which the feed is complete.
    tip: watch::Sender<Revision>,
    capacity: usize,
}

/// Every change with a revision in `(floor, tip]` that Watch carries.
struct Ring {
    floor: Revision,
    events: VecDeque<Arc<FeedEvent>>,
}

impl ChangeFeed {
    /// A feed holding at most `capacity` events (at least one).
    pub fn new(capacity: usize) -> Self {
        ChangeFeed {
            ring: RwLock::new(Ring {
                floor: 0,
                events: VecDeque::new(),
            }),
            tip: watch::channel(0).0,
            capacity: capacity.max(1),
        }
    }

    /// Starts again at `revision`, holding nothing before it: after the
    /// follower loaded everything anew.
    pub fn reset(&self, revision: Revision) {
        let mut ring = self.ring.write().unwrap_or_else(|e| e.into_inner());
        ring.events.clear();
        ring.floor = revision;
        // Under the ring's lock: a reader sees the events and the tip
        // that goes with them, never one without the other.
        self.tip.send_replace(revision);
    }

    /// Appends the events of the changes after the tip through `through`,
    /// in revision order, and wakes the streams.
    pub fn push(&self, events: impl IntoIterator<Item = FeedEvent>, through: Revision) {
        let mut ring = self.ring.write().unwrap_or_else(|e| e.into_inner());
        let tip = *self.tip.borrow();
        for event in events {
            debug_assert!(event.revision > tip && event.revision <= through);
            ring.events.push_back(Arc::new(event));
        }
        while ring.events.len() > self.capacity {
            if let Some(oldest) = ring.events.pop_front() {
                ring.floor = oldest.revision;
            }
        }
        // Under the ring's lock, as in `reset`: a reader that found these
        // events and an older tip would read them again from that tip.
        self.tip.send_if_modified(|tip| {
            let moved = through > *tip;
            *tip = (*tip).max(through);
            moved
        });
    }

    /// Wakes whenever the tip moves.
    pub fn subscribe(&self) -> watch::Receiver<Revision> {
        self.tip.subscribe()
    }

    /// Adds to `out` the events after `after`, at most `max`, and returns
    /// the revision through which what was added is complete: the tip when
    /// they all fit, else the last one's revision.
    pub fn read_after(
        &self,
        after: Revision,
        max: usize,
        out: &mut Vec<Arc<FeedEvent>>,
    ) -> Result<Revision, Behind> {
        let ring = self.ring.read().unwrap_or_else(|e| e.into_inner());
        if after < ring.floor {
            return Err(Behind { floor: ring.floor });
        }
        let tip = *self.tip.borrow();
        let first = ring.events.partition_point(|e| e.revision <= after);
        let taken = ring.events.range(first..).take(max);
        let before = out.len();
        out.extend(taken.cloned());
        if out.len() - before == max
            && let Some(last) = out.last()
            && ring
                .events
                .back()
                .is_some_and(|b| b.revision > last.revision)
        {
            return Ok(last.revision);
        }
        let last = out.last().map_or(after, |e| e.revision);
        Ok(tip.max(after).max(last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(revision: Revision) -> FeedEvent {
        FeedEvent {
            revision,
            tenant_id: None,
            kind: ChangeKind::Upsert,
            change: FeedChange::Credential {
                api_id: format!("k{revision}"),
                live: true,
            },
        }
    }

    fn revisions(events: &[Arc<FeedEvent>]) -> Vec<Revision> {
        events.iter().map(|e| e.revision).collect()
    }

    #[test]
    fn reads_after_a_revision_in_order_and_in_pages() {
        let feed = ChangeFeed::new(100);
        feed.reset(10);
        feed.push([11, 13, 20].map(credential), 25);
        let mut out = Vec::new();
        assert_eq!(feed.read_after(10, 100, &mut out), Ok(25));
        assert_eq!(revisions(&out), [11, 13, 20]);
        out.clear();
        assert_eq!(
            feed.read_after(11, 1, &mut out),
            Ok(13),
            "a full page ends at its last"
        );
        assert_eq!(revisions(&out), [13]);
        out.clear();
        assert_eq!(feed.read_after(20, 1, &mut out), Ok(25));
        assert!(out.is_empty());
        assert_eq!(feed.read_after(30, 1, &mut out), Ok(30), "ahead of the tip");
    }

    #[test]
    fn a_full_ring_drops_the_oldest_and_raises_the_floor() {
        let feed = ChangeFeed::new(2);
        feed.reset(0);
        feed.push([1, 2, 3].map(credential), 3);
        let mut out = Vec::new();
        assert_eq!(feed.read_after(0, 10, &mut out), Err(Behind { floor: 1 }));
        assert_eq!(feed.read_after(1, 10, &mut out), Ok(3));
        assert_eq!(revisions(&out), [2, 3]);
    }

    #[test]
    fn a_reset_forgets_everything_before_it() {
        let feed = ChangeFeed::new(10);
        feed.push([1, 2].map(credential), 2);
        feed.reset(50);
        let mut out = Vec::new();
        assert_eq!(feed.read_after(2, 10, &mut out), Err(Behind { floor: 50 }));
        assert_eq!(feed.read_after(50, 10, &mut out), Ok(50));
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn a_push_wakes_subscribers_only_when_the_tip_moves() {
        let feed = ChangeFeed::new(10);
        let mut tip = feed.subscribe();
        tip.borrow_and_update();
        feed.push([], 0);
        assert!(!tip.has_changed().unwrap());
        feed.push([credential(1)], 4);
        assert!(tip.has_changed().unwrap());
        assert_eq!(*tip.borrow_and_update(), 4);
    }
}

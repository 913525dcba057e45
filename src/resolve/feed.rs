//! The replica's change feed: the changes the follower applies, in revision
//! order, each with its resource's state as that change left it. Every Watch stream of the replica is served from
//! it, so the database's load does not grow with the number of streams:
//! the log is read once per replica, not once per stream. The feed holds
//! the most recent changes only; a stream below them reads the change log
//! itself, then rejoins.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

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

/// How often a stream says it is alive when nothing happens.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// How soon after the tip moved every stream says how far it got, also a
/// stream that carries none of the changes (another tenant's, a
/// credential's): a local resolver then knows it is current to that
/// revision. One beat per replica, so streams write their heartbeats
/// together, and none while nothing changes.
pub const PROGRESS: Duration = Duration::from_secs(1);

/// What a beat asks of every stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Beat {
    /// Send a heartbeat even if the client knows the stream's revision.
    pub keepalive: bool,
}

pub struct ChangeFeed {
    ring: RwLock<Ring>,
    /// The revision through which the feed is complete.
    tip: watch::Sender<Revision>,
    capacity: usize,
    /// Wakes the streams of one tenant, for a change of that tenant: a
    /// write wakes its tenant's few streams, not all of the replica's
    /// (waking thousands per write was most of a write's cost with 5,000
    /// streams open).
    tenants: Mutex<HashMap<String, watch::Sender<()>>>,
    /// Wakes the platform-wide streams, for every change.
    everyone: watch::Sender<()>,
    beat: watch::Sender<Beat>,
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
            tenants: Mutex::default(),
            everyone: watch::channel(()).0,
            beat: watch::channel(Beat::default()).0,
        }
    }

    fn tenants(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<()>>> {
        self.tenants.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the streams of `tenants` (every stream when `None`) and the
    /// platform-wide ones; forgets tenants whose streams have all ended.
    fn wake(&self, tenants: Option<&[String]>) {
        self.everyone.send_replace(());
        let mut wakers = self.tenants();
        match tenants {
            None => wakers.retain(|_, waker| {
                waker.send_replace(());
                waker.receiver_count() > 0
            }),
            Some(tenants) => {
                for tenant in tenants {
                    if let Some(waker) = wakers.get(tenant) {
                        if waker.receiver_count() == 0 {
                            wakers.remove(tenant);
                        } else {
                            waker.send_replace(());
                        }
                    }
                }
            }
        }
    }

    /// Starts again at `revision`, holding nothing before it: after the
    /// follower loaded everything anew.
    pub fn reset(&self, revision: Revision) {
        let mut ring = self.ring.write().unwrap_or_else(|e| e.into_inner());
        ring.events.clear();
        ring.floor = revision;
        // Under the ring's lock: a reader sees the events and the tip
        // that goes with them, never one without the other. Streams are
        // woken before the tip moves (see `push`).
        self.wake(None);
        self.tip.send_replace(revision);
    }

    /// Appends the events of the changes after the tip through `through`,
    /// in revision order, and wakes the streams.
    pub fn push(&self, events: impl IntoIterator<Item = FeedEvent>, through: Revision) {
        // The tenants to wake; `None` once a change concerns every stream
        // (the catalog, a credential's revocation).
        let mut concerned: Option<Vec<String>> = Some(Vec::new());
        let mut ring = self.ring.write().unwrap_or_else(|e| e.into_inner());
        let tip = *self.tip.borrow();
        for event in events {
            debug_assert!(event.revision > tip && event.revision <= through);
            match (&event.change, &event.tenant_id, concerned.as_mut()) {
                (FeedChange::EventType(_) | FeedChange::Credential { .. }, _, _) | (_, None, _) => {
                    concerned = None;
                }
                (_, Some(tenant), Some(tenants)) => {
                    if !tenants.contains(tenant) {
                        tenants.push(tenant.clone());
                    }
                }
                (_, Some(_), None) => {}
            }
            ring.events.push_back(Arc::new(event));
        }
        while ring.events.len() > self.capacity {
            if let Some(oldest) = ring.events.pop_front() {
                ring.floor = oldest.revision;
            }
        }
        // The streams a change concerns are woken before the tip moves
        // past it: a stream that sees the new tip and no wake of its own
        // knows none of the changes up to that tip is its, and moves its
        // cursor there without reading them (see `service/watch.rs`).
        if concerned.as_ref().is_none_or(|tenants| !tenants.is_empty()) {
            self.wake(concerned.as_deref());
        }
        // Under the ring's lock, as in `reset`: a reader that found these
        // events and an older tip would read them again from that tip.
        self.tip.send_if_modified(|tip| {
            let moved = through > *tip;
            *tip = (*tip).max(through);
            moved
        });
    }

    /// The revision through which the feed is complete.
    pub fn tip(&self) -> Revision {
        *self.tip.borrow()
    }

    /// Wakes when a change a stream of `tenant` (every tenant's when
    /// `None`) may carry arrives; ends when the feed is gone.
    pub fn subscribe(&self, tenant: Option<&str>) -> watch::Receiver<()> {
        match tenant {
            None => self.everyone.subscribe(),
            Some(tenant) => self
                .tenants()
                .entry(tenant.to_owned())
                .or_insert_with(|| watch::channel(()).0)
                .subscribe(),
        }
    }

    /// The replica's beat (see [`PROGRESS`] and [`HEARTBEAT`]).
    pub fn beat(&self) -> watch::Receiver<Beat> {
        self.beat.subscribe()
    }

    /// Beats for as long as the feed lives: within [`PROGRESS`] of the tip
    /// moving, and every [`HEARTBEAT`] for keepalives.
    pub async fn run_beat(feed: Weak<ChangeFeed>) {
        let mut ticks = tokio::time::interval(PROGRESS);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut told = 0;
        let mut kept_alive = tokio::time::Instant::now();
        loop {
            ticks.tick().await;
            let Some(feed) = feed.upgrade() else { return };
            let tip = feed.tip();
            let keepalive = kept_alive.elapsed() >= HEARTBEAT;
            if keepalive || tip != told {
                told = tip;
                if keepalive {
                    kept_alive = tokio::time::Instant::now();
                }
                feed.beat.send_replace(Beat { keepalive });
            }
        }
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

    fn of_tenant(revision: Revision, tenant: &str) -> FeedEvent {
        FeedEvent {
            revision,
            tenant_id: Some(tenant.to_owned()),
            kind: ChangeKind::Upsert,
            change: FeedChange::Tenant(crate::resolve::fixtures::tenant()),
        }
    }

    #[tokio::test]
    async fn a_change_wakes_its_tenants_streams_and_the_platform_wide_ones() {
        let feed = ChangeFeed::new(10);
        let (mut acme, mut other, mut all) = (
            feed.subscribe(Some("acme")),
            feed.subscribe(Some("other")),
            feed.subscribe(None),
        );
        feed.push([], 3);
        assert!(!all.has_changed().unwrap(), "no change, no wake");
        assert_eq!(feed.tip(), 3);
        feed.push([of_tenant(4, "acme")], 4);
        assert!(acme.has_changed().unwrap() && all.has_changed().unwrap());
        assert!(
            !other.has_changed().unwrap(),
            "another tenant's streams sleep"
        );
        acme.borrow_and_update();
        all.borrow_and_update();
        feed.push([credential(5)], 5);
        for stream in [&mut acme, &mut other, &mut all] {
            assert!(
                stream.has_changed().unwrap(),
                "a credential wakes every stream"
            );
        }
        drop(other);
        feed.push([credential(6)], 6);
        assert_eq!(
            feed.tenants().len(),
            1,
            "a tenant without streams is forgotten"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_beat_follows_the_tip_and_keeps_streams_alive() {
        let feed = Arc::new(ChangeFeed::new(10));
        let mut beat = feed.beat();
        tokio::spawn(ChangeFeed::run_beat(Arc::downgrade(&feed)));
        tokio::time::sleep(PROGRESS * 3).await;
        assert!(
            !beat.has_changed().unwrap(),
            "no beat while nothing changes"
        );
        feed.push([credential(1)], 1);
        tokio::time::sleep(PROGRESS + Duration::from_millis(10)).await;
        assert_eq!(*beat.borrow_and_update(), Beat { keepalive: false });
        tokio::time::sleep(HEARTBEAT).await;
        assert_eq!(*beat.borrow_and_update(), Beat { keepalive: true });
        drop(feed);
        tokio::time::sleep(PROGRESS * 2).await;
        assert!(beat.has_changed().is_err(), "the beat ends with the feed");
    }
}

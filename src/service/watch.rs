//! WatchSubscriptions: a snapshot, then every change from the replica's
//! change feed (the change log for a stream further behind than the feed
//! holds).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::Services;
use super::subscriptions::presented;
use crate::auth::Caller;
use crate::domain::{Permission, TenantId};
use crate::error::{Error, Result};
use crate::model::{Endpoint, EventType, Subscription, Tenant, now_micros};
use crate::repository::{ChangeKind, Revision};
use crate::resolve::{Beat, Behind, ChangeFeed, FeedChange, FeedEvent};

/// How long a resume from a revision above the current one waits for it to
/// become current before it is refused.
const SETTLE: Duration = Duration::from_secs(1);

/// Events queued for one stream's connection: enough to keep it busy,
/// small because every open stream has one.
const STREAM_QUEUE: usize = 32;

/// Events a stream takes from the feed at a time.
const FEED_PAGE: usize = 256;

/// Change-log rows a stream below the feed reads at a time.
const LOG_PAGE: u64 = 1000;

#[derive(Debug, Clone)]
pub enum WatchResource {
    Tenant(Tenant),
    EventType(EventType),
    Subscription(Subscription),
    /// The endpoint, and its live secrets newest first when the caller may
    /// read secrets (empty otherwise).
    Endpoint(Endpoint, Vec<String>),
}

#[derive(Debug, Clone)]
pub enum WatchEvent {
    /// Carries the revision the snapshot reflects.
    Snapshot(Revision, WatchResource),
    Upsert(Revision, WatchResource),
    Delete(Revision, WatchResource),
    Heartbeat(Revision),
}

impl Services {
    /// Starts a watch; events arrive on the returned channel until the
    /// receiver is dropped.
    pub async fn watch_subscriptions(
        &self,
        caller: &Caller,
        tenant_id: &str,
        since_revision: i64,
        progress_heartbeats: bool,
    ) -> Result<mpsc::Receiver<Result<WatchEvent>>> {
        // A platform-wide dispatcher may watch every tenant (empty tenant_id).
        let tenant = self.tenant_scope_or_all(caller, Permission::SubscribersResolve, tenant_id)?;
        if since_revision < 0 {
            return Err(Error::invalid("since_revision", "must not be negative"));
        }
        if let Some(tenant_id) = &tenant {
            self.live_tenant(tenant_id.as_str()).await?;
        }
        let mut current = self.repo.current_revision().await?;
        // A revision a write just answered with can lie above the current
        // one for a moment on PostgreSQL, while an older transaction is
        // still running (see the revision rule): wait for it briefly rather
        // than send a client that resumes from its own write back to 0.
        let waited = tokio::time::Instant::now();
        while since_revision > current && waited.elapsed() < SETTLE {
            tokio::time::sleep(Duration::from_millis(10)).await;
            current = self.repo.current_revision().await?;
        }
        // The cache that admitted the call may not have the revocation yet.
        ensure_not_revoked(self.repo.as_ref(), &caller.api_id).await?;
        if since_revision > current {
            return Err(Error::OutOfRange(format!(
                "since_revision {since_revision} is newer than the current revision {current}; resync from 0"
            )));
        }
        if since_revision > 0 && since_revision < self.repo.pruned_through().await? {
            return Err(Error::OutOfRange(format!(
                "since_revision {since_revision} is older than the retained change log; resync from 0"
            )));
        }
        let slot = self.watch_slots.take(&caller.api_id)?;
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let wake = self.feed.subscribe(tenant.as_ref().map(TenantId::as_str));
        let watcher = Watcher {
            repo: self.repo.clone(),
            feed: self.feed.clone(),
            api_id: caller.api_id.clone(),
            tenant,
            with_secrets: caller.has(Permission::SecretsRead),
            wake,
            progress_heartbeats,
            beat: self.feed.beat(),
            tx,
            told: std::sync::atomic::AtomicI64::new(0),
        };
        let mut stopping = self.stopping.clone();
        let stopped = async move {
            if stopping.wait_for(|stop| *stop).await.is_err() {
                // The server went away without stopping.
                std::future::pending::<()>().await;
            }
        };
        let ended = watcher.tx.clone();
        tokio::spawn(async move {
            // The stream's slot is taken until this task ends.
            let _slot = slot;
            tokio::select! {
                failed = watcher.run(since_revision, current) => {
                    if let Err(e) = failed {
                        let _ = e.tx.send(Err(e.error)).await;
                    }
                }
                // The server is stopping: a stream would hold its shutdown
                // for the whole grace period. A client that does not read
                // (its queue full) just sees the stream end.
                () = stopped => {
                    let _ = ended.try_send(Err(Error::ShuttingDown));
                }
            }
        });
        Ok(rx)
    }
}

/// Refuses a credential the store has revoked (or forgotten). Read from the
/// store, not the cache: whatever was read before this check committed
/// before the revocation, if any, did.
async fn ensure_not_revoked(repo: &dyn crate::repository::Repository, api_id: &str) -> Result<()> {
    match repo.get_credential(api_id).await? {
        Some(c) if c.revoke_time.is_none() => Ok(()),
        _ => Err(Error::Unauthenticated(
            "the credential of this watch was revoked".into(),
        )),
    }
}

struct Watcher {
    repo: Arc<dyn crate::repository::Repository>,
    feed: Arc<ChangeFeed>,
    /// The caller's credential: its revocation ends the watch.
    api_id: String,
    tenant: Option<TenantId>,
    with_secrets: bool,
    /// Wakes when the feed has a change this stream may carry.
    wake: tokio::sync::watch::Receiver<()>,
    /// The client asked to hear of progress past changes it does not get.
    progress_heartbeats: bool,
    /// The replica's beat: progress and keepalive heartbeats.
    beat: tokio::sync::watch::Receiver<Beat>,
    tx: mpsc::Sender<Result<WatchEvent>>,
    /// The revision of the last message sent: the client knows the stream
    /// up to here.
    told: std::sync::atomic::AtomicI64,
}

struct WatchFailure {
    tx: mpsc::Sender<Result<WatchEvent>>,
    error: Error,
}

/// Stops the watch quietly when the client went away.
struct Gone;

impl Watcher {
    fn endpoint(&self, e: Endpoint) -> WatchResource {
        let secrets = if self.with_secrets {
            e.live_secrets(now_micros())
        } else {
            Vec::new()
        };
        WatchResource::Endpoint(e, secrets)
    }

    async fn send(&self, event: WatchEvent) -> std::result::Result<(), Gone> {
        let revision = match &event {
            WatchEvent::Snapshot(r, _)
            | WatchEvent::Upsert(r, _)
            | WatchEvent::Delete(r, _)
            | WatchEvent::Heartbeat(r) => *r,
        };
        self.tx.send(Ok(event)).await.map_err(|_| Gone)?;
        self.told
            .fetch_max(revision, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    async fn run(
        mut self,
        since: Revision,
        current: Revision,
    ) -> std::result::Result<(), WatchFailure> {
        match self.stream(since, current).await {
            Ok(Ok(())) | Ok(Err(Gone)) => Ok(()),
            Err(error) => Err(WatchFailure {
                tx: self.tx.clone(),
                error,
            }),
        }
    }

    async fn stream(
        &mut self,
        since: Revision,
        current: Revision,
    ) -> Result<std::result::Result<(), Gone>> {
        let mut cursor = since;
        if since == 0 {
            // Changes after `current` are replayed below, so nothing
            // committed while the snapshot is read is lost.
            cursor = current;
            let snapshot = self
                .repo
                .snapshot(self.tenant.as_ref().map(TenantId::as_str))
                .await?;
            let catalog = self.repo.all_event_types().await?;
            ensure_not_revoked(self.repo.as_ref(), &self.api_id).await?;
            let now = now_micros();
            // What a client needs to resolve as the server does: the
            // tenants, the catalog, then the endpoints and subscriptions.
            let resources = (snapshot.tenants.into_iter().map(WatchResource::Tenant))
                .chain(catalog.into_iter().map(WatchResource::EventType))
                .chain(snapshot.endpoints.into_iter().map(|e| self.endpoint(e)))
                .chain(
                    (snapshot.subscriptions.into_iter())
                        .map(|s| WatchResource::Subscription(presented(s, now))),
                );
            for resource in resources {
                if self
                    .send(WatchEvent::Snapshot(cursor, resource))
                    .await
                    .is_err()
                {
                    return Ok(Err(Gone));
                }
            }
            if self.send(WatchEvent::Heartbeat(cursor)).await.is_err() {
                return Ok(Err(Gone));
            }
        }
        // Whether the stream was woken for a change it may carry.
        let mut woken = true;
        loop {
            if woken {
                self.wake.borrow_and_update();
                if let Err(Gone) = self.forward_changes(&mut cursor).await? {
                    return Ok(Err(Gone));
                }
            }
            woken = false;
            tokio::select! {
                _ = self.tx.closed() => return Ok(Err(Gone)),
                wake = self.wake.changed() => {
                    // The feed is gone: the server is stopping.
                    if wake.is_err() {
                        return Ok(Err(Gone));
                    }
                    woken = true;
                }
                beat = self.beat.changed() => {
                    if beat.is_err() {
                        return Ok(Err(Gone));
                    }
                    let Beat { keepalive } = *self.beat.borrow_and_update();
                    // The tip first, then the wake: the feed wakes a
                    // stream before its tip passes the stream's change, so
                    // with no wake pending nothing up to this tip is the
                    // stream's, and its cursor moves there without reading
                    // the feed (a beat then costs each stream O(1)).
                    let tip = self.feed.tip();
                    match self.wake.has_changed() {
                        Err(_) => return Ok(Err(Gone)),
                        Ok(false) => cursor = cursor.max(tip),
                        Ok(true) => {
                            self.wake.borrow_and_update();
                            if let Err(Gone) = self.forward_changes(&mut cursor).await? {
                                return Ok(Err(Gone));
                            }
                        }
                    }
                    let told = self.told.load(std::sync::atomic::Ordering::Relaxed);
                    let progress = self.progress_heartbeats && told < cursor;
                    if (keepalive || progress)
                        && self.send(WatchEvent::Heartbeat(cursor)).await.is_err()
                    {
                        return Ok(Err(Gone));
                    }
                }
            }
        }
    }

    /// Sends the changes after `cursor` that the feed has, in revision
    /// order: from the feed, or from the change log while the stream is
    /// below what the feed holds.
    async fn forward_changes(
        &mut self,
        cursor: &mut Revision,
    ) -> Result<std::result::Result<(), Gone>> {
        let mut events = Vec::new();
        loop {
            events.clear();
            let through = match self.feed.read_after(*cursor, FEED_PAGE, &mut events) {
                Ok(through) => through,
                Err(Behind { floor }) => {
                    if let Err(Gone) = self.forward_from_log(cursor, floor).await? {
                        return Ok(Err(Gone));
                    }
                    continue;
                }
            };
            if let Err(Gone) = self.send_events(events.iter().map(|e| &**e)).await? {
                return Ok(Err(Gone));
            }
            let full = events.len() == FEED_PAGE;
            *cursor = through;
            if !full {
                return Ok(Ok(()));
            }
        }
    }

    /// Sends one page of the change log after `cursor`, for a stream below
    /// the feed's `floor`. Once the log has nothing more, the stream is
    /// at the floor: the feed has everything after it.
    async fn forward_from_log(
        &mut self,
        cursor: &mut Revision,
        floor: Revision,
    ) -> Result<std::result::Result<(), Gone>> {
        if *cursor > 0 && *cursor < self.repo.pruned_through().await? {
            return Err(Error::OutOfRange(format!(
                "the watch fell behind the retained change log at revision {cursor}; resync from 0"
            )));
        }
        let changes = self.repo.changes_since(*cursor, LOG_PAGE).await?;
        let complete = (changes.len() as u64) < LOG_PAGE;
        let last = changes.last().map(|c| c.revision);
        let events: Vec<FeedEvent> = changes
            .into_iter()
            .filter_map(FeedEvent::from_change)
            .collect();
        if let Err(Gone) = self.send_events(events.iter()).await? {
            return Ok(Err(Gone));
        }
        if let Some(last) = last {
            *cursor = last;
        }
        if complete {
            // The log was read through its readable end, which the floor
            // (a revision the follower read before) cannot be above.
            *cursor = (*cursor).max(floor);
        }
        Ok(Ok(()))
    }

    /// Sends the events this stream carries. A revocation of the stream's
    /// own credential among them ends the stream before any of them is
    /// sent: a change stored before the change log kept states carries its
    /// resource as the log read found it, which may be newer than the
    /// revocation.
    async fn send_events<'a>(
        &self,
        events: impl Iterator<Item = &'a FeedEvent> + Clone,
    ) -> Result<std::result::Result<(), Gone>> {
        let revoked = events.clone().any(|e| {
            matches!(&e.change, FeedChange::Credential { api_id, live: false } if *api_id == self.api_id)
        });
        if revoked {
            return Err(Error::Unauthenticated(
                "the credential of this watch was revoked".into(),
            ));
        }
        for event in events {
            // The catalog is every stream's; the rest, its tenant's.
            let catalog = matches!(event.change, FeedChange::EventType(_));
            if let Some(watched) = &self.tenant
                && !catalog
                && event.tenant_id.as_deref() != Some(watched.as_str())
            {
                continue;
            }
            let resource = match &event.change {
                FeedChange::Tenant(t) => WatchResource::Tenant(t.clone()),
                FeedChange::EventType(e) => WatchResource::EventType(e.clone()),
                FeedChange::Subscription(s) => {
                    WatchResource::Subscription(presented(s.clone(), now_micros()))
                }
                FeedChange::Endpoint(e) => self.endpoint(e.clone()),
                FeedChange::Credential { .. } => continue,
            };
            let event = match event.kind {
                ChangeKind::Delete => WatchEvent::Delete(event.revision, resource),
                ChangeKind::Upsert => WatchEvent::Upsert(event.revision, resource),
            };
            if self.send(event).await.is_err() {
                return Ok(Err(Gone));
            }
        }
        Ok(Ok(()))
    }
}

//! Follows the change log: after every commit on this replica (notified in
//! process), on every PostgreSQL notification and every 250 ms, reads the new
//! change rows and refreshes what they touched: a tenant's resolve index, the
//! catalog, a credential in the cache.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::ResolveIndex;
use super::feed::{ChangeFeed, FeedEvent};
use super::index::Catalog;
use crate::auth::{CachedCredential, CredentialCache};
use crate::error::chain;
use crate::repository::{RepoResult, Repository, ResourceKind, Revision};

const POLL: Duration = Duration::from_millis(250);
/// Re-reads while an announced commit is not yet readable: 1, 2, 4, 8 ms.
/// Short: what holds a commit back is usually another transaction that ends
/// within milliseconds without announcing anything here (another replica's
/// write, this process's NOTIFY), and writers wait for the follower.
const RETRY_FIRST: Duration = Duration::from_millis(1);
const RETRY_MAX: Duration = Duration::from_millis(8);
/// How soon an announced commit is read when nobody waits for it.
const LAZY: Duration = Duration::from_millis(5);
const BATCH: u64 = 5_000;
const PRUNED_MAX_AGE: Duration = Duration::from_secs(1);
/// Tenants per query when loading everything.
const LOAD_BATCH: u64 = 500;

/// Hands memory freed after a bulk load back to the system (glibc keeps it
/// otherwise, and the load's row buffers would stay in the RSS).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; it has no
    // preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

pub struct Follower {
    repo: Arc<dyn Repository>,
    index: Arc<ResolveIndex>,
    credentials: Arc<CredentialCache>,
    /// What Watch streams are served from.
    feed: Arc<ChangeFeed>,
    /// The change log's pruning mark and when it was read.
    pruned: std::sync::Mutex<Option<(Revision, Instant)>>,
}

impl Follower {
    pub fn new(
        repo: Arc<dyn Repository>,
        memory: super::InMemory,
        credentials: Arc<CredentialCache>,
    ) -> Self {
        Follower {
            repo,
            index: memory.index,
            credentials,
            feed: memory.feed,
            pruned: std::sync::Mutex::new(None),
        }
    }

    /// Loads everything; the index is then current as of the returned revision.
    pub async fn load(&self) -> RepoResult<Revision> {
        // Read the revision first: changes after it are replayed later, so
        // nothing committed during the load is missed.
        let revision = self.repo.current_revision().await?;
        let catalog = self.catalog().await?;
        // Tenants in batches, so only one batch of rows is in memory at once.
        let repo = self.repo.clone();
        let cursor = std::sync::Arc::new(std::sync::Mutex::new(Some(String::new())));
        self.index
            .load_all(
                || {
                    let repo = repo.clone();
                    let cursor = cursor.clone();
                    async move {
                        let after = cursor.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        let Some(after) = after else { return Ok(None) };
                        let ids = repo.tenant_ids(&after, LOAD_BATCH).await?;
                        *cursor.lock().unwrap_or_else(|e| e.into_inner()) = ids.last().cloned();
                        if ids.is_empty() {
                            return Ok(None);
                        }
                        repo.snapshot_tenants(&ids).await.map(Some)
                    }
                },
                catalog,
                revision,
            )
            .await?;
        release_freed_memory();
        let credentials = self.repo.all_credentials().await?;
        self.credentials
            .replace_all(credentials.iter().map(CachedCredential::from).collect());
        self.feed.reset(revision);
        self.index.mark_applied(revision);
        Ok(revision)
    }

    async fn catalog(&self) -> RepoResult<Catalog> {
        Ok(self
            .repo
            .all_event_types()
            .await?
            .into_iter()
            .map(|e| (e.name, e.deprecated))
            .collect())
    }

    /// The change log's pruning mark, read at most once per
    /// [`PRUNED_MAX_AGE`]: on PostgreSQL revisions are sparse, so nearly every
    /// batch looks like a gap and asks. Rows are kept for at least an hour,
    /// so a mark a second old still tells a follower that fell behind.
    async fn pruned_through(&self) -> RepoResult<Revision> {
        let cached = *self.pruned.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((mark, _)) = cached.filter(|(_, read)| read.elapsed() < PRUNED_MAX_AGE) {
            return Ok(mark);
        }
        let mark = self.repo.pruned_through().await?;
        *self.pruned.lock().unwrap_or_else(|e| e.into_inner()) = Some((mark, Instant::now()));
        Ok(mark)
    }

    /// Applies every change after the applied revision.
    pub async fn catch_up(&self) -> RepoResult<()> {
        loop {
            let applied = self.index.applied();
            let changes = self.repo.changes_since(applied, BATCH).await?;
            let Some(last) = changes.last().map(|c| c.revision) else {
                return Ok(());
            };
            if changes[0].revision > applied + 1
                && applied > 0
                && applied < self.pruned_through().await?
            {
                // Rows after our position were pruned: we fell too far behind.
                tracing::warn!(
                    applied,
                    first = changes[0].revision,
                    "change log gap; reloading everything"
                );
                self.load().await?;
                return Ok(());
            }
            // Tenant-level changes reload the tenant; resource changes are
            // applied one by one, in the state the log read brought along.
            let mut tenants = BTreeSet::new();
            let mut subscriptions = BTreeMap::new();
            let mut endpoints = BTreeMap::new();
            let mut catalog = false;
            let mut credentials = BTreeSet::new();
            let count = changes.len();
            for c in &changes {
                let tenant = c.tenant_id.clone().unwrap_or_default();
                let key = c.resource_key.clone();
                // Changes come in revision order, so the last state kept
                // for a resource is its latest.
                match c.resource() {
                    Some(ResourceKind::EventType) => catalog = true,
                    Some(ResourceKind::Credential) => {
                        credentials.insert(key);
                    }
                    Some(ResourceKind::Subscription) => {
                        subscriptions.insert((tenant, key), (c.revision, c.subscription.clone()));
                    }
                    Some(ResourceKind::Endpoint) => {
                        endpoints.insert((tenant, key), c.endpoint.clone());
                    }
                    // A kind this build does not know reloads the tenant.
                    Some(ResourceKind::Tenant) | None => {
                        tenants.insert(tenant);
                    }
                }
            }
            for tenant in &tenants {
                let snapshot = self.repo.snapshot(Some(tenant)).await?;
                self.index.load_tenant(tenant, snapshot, last);
            }
            for ((tenant, id), current) in endpoints {
                if tenants.contains(&tenant) {
                    continue;
                }
                if !self.index.has_tenant(&tenant) {
                    let snapshot = self.repo.snapshot(Some(&tenant)).await?;
                    self.index.load_tenant(&tenant, snapshot, last);
                    continue;
                }
                self.index.apply_endpoint(&tenant, &id, current, last);
            }
            let mut reloaded = BTreeSet::new();
            for ((tenant, id), (changed, current)) in subscriptions {
                if tenants.contains(&tenant) || reloaded.contains(&tenant) {
                    continue;
                }
                if self.index.has_tenant(&tenant) {
                    self.index
                        .apply_subscription(&tenant, &id, current, changed, last);
                } else {
                    let snapshot = self.repo.snapshot(Some(&tenant)).await?;
                    self.index.load_tenant(&tenant, snapshot, last);
                    reloaded.insert(tenant);
                }
            }
            if catalog {
                self.index.set_catalog(self.catalog().await?);
            }
            for api_id in &credentials {
                match self.repo.get_credential(api_id).await? {
                    Some(c) => self.credentials.upsert(CachedCredential::from(&c)),
                    None => self.credentials.remove(api_id),
                }
            }
            // Before the index says `last` is applied: a write answered
            // once it is applied is then in every stream's feed too.
            self.feed
                .push(changes.into_iter().filter_map(FeedEvent::from_change), last);
            self.index.mark_applied(last);
            if (count as u64) < BATCH {
                return Ok(());
            }
        }
    }

    /// Runs until `stop` turns true.
    ///
    /// Announced commits (this process's, and other replicas' through
    /// PostgreSQL notifications) are read within [`LAZY`], several to a
    /// read; a caller waiting for a revision (a write that answers once its
    /// replica reflects it) has the log read at once.
    pub async fn run(self, mut local: watch::Receiver<Revision>, mut stop: watch::Receiver<bool>) {
        let mut retry: Option<Duration> = None;
        let mut due = Instant::now() + POLL;
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = self.index.awaited() => {}
                changed = local.changed() => {
                    if changed.is_err() {
                        // The repository is gone.
                        return;
                    }
                    due = due.min(Instant::now() + LAZY);
                    continue;
                }
                _ = tokio::time::sleep_until(due.into()) => {}
            }
            if *stop.borrow() {
                return;
            }
            let before = self.index.applied();
            if let Err(e) = self.catch_up().await {
                tracing::warn!(error = %chain(&e), "cannot follow the change log; retrying");
                retry = None;
                due = Instant::now() + POLL;
                continue;
            }
            // On PostgreSQL a commit is announced before it is readable when
            // an older transaction is still running (readers stay below the
            // oldest one); that usually ends within milliseconds, so while a
            // caller waits, look again soon instead of at the next poll.
            // Under a steady stream of writes there is always a newer commit
            // waiting: back off only while nothing becomes readable.
            let announced = *local.borrow_and_update();
            let applied = self.index.applied();
            let behind = applied < announced;
            retry = (behind && self.index.is_awaited()).then(|| match retry {
                Some(d) if applied == before => (d * 2).min(RETRY_MAX),
                _ => RETRY_FIRST,
            });
            due = Instant::now()
                + match retry {
                    Some(d) => d,
                    None if behind => LAZY,
                    None => POLL,
                };
        }
    }
}

//! Per-tenant subscriber indexes: exact event names in a hash map, wildcard
//! patterns in a segment trie. The change-log follower applies each changed
//! subscription or endpoint incrementally; a tenant-level change (state,
//! bulk import) reloads that tenant whole.

use std::collections::HashMap;

/// The index's hot maps hash with foldhash (randomly seeded per process, so
/// still resistant to chosen collisions): SipHash showed up in resolve
/// profiles.
pub(super) type FastMap<K, V> = foldhash::HashMap<K, V>;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use super::trie::PatternTrie;
use crate::domain::EventPattern;
use crate::model::{Endpoint, Micros, Subscription, SubscriptionStatus, TenantState};
use crate::repository::{Revision, Snapshot};

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

struct IndexedEndpoint {
    url: Box<str>,
    secret: Box<str>,
    previous: Option<(Box<str>, Micros)>,
}

/// Kept small: a million of these live in memory.
struct Entry {
    subscription_id: Box<str>,
    name: Box<str>,
    endpoint_id: Box<str>,
    /// Shared across subscriptions through the index's pattern interner.
    patterns: Box<[Arc<EventPattern>]>,
    expire_time: Option<Micros>,
    /// Creation time; with the id, the stable order of answers.
    create_time: Micros,
}

/// One parsed pattern per distinct pattern text, shared by every
/// subscription that uses it.
#[derive(Default)]
pub(crate) struct Patterns(std::sync::Mutex<HashMap<Box<str>, Arc<EventPattern>>>);

impl Patterns {
    fn get(&self, raw: &str) -> Option<Arc<EventPattern>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = map.get(raw) {
            return Some(p.clone());
        }
        let parsed = Arc::new(EventPattern::parse(raw).ok()?);
        map.insert(raw.into(), parsed.clone());
        Some(parsed)
    }
}

#[derive(Default)]
struct TenantIndex {
    active: bool,
    /// Enabled, live endpoints only.
    endpoints: FastMap<Box<str>, IndexedEndpoint>,
    entries: Vec<Option<Entry>>,
    free: Vec<u32>,
    slots: FastMap<Box<str>, u32>,
    exact: FastMap<Box<str>, Vec<u32>>,
    wildcards: PatternTrie,
}

impl TenantIndex {
    fn build(
        active: bool,
        endpoints: Vec<Endpoint>,
        subscriptions: Vec<Subscription>,
        patterns: &Patterns,
    ) -> Self {
        let mut index = TenantIndex {
            active,
            ..Default::default()
        };
        for e in endpoints {
            index.upsert_endpoint(e);
        }
        for s in subscriptions {
            index.upsert_subscription(s, patterns);
        }
        index.entries.shrink_to_fit();
        index.slots.shrink_to_fit();
        index
    }

    fn upsert_endpoint(&mut self, e: Endpoint) {
        if !e.enabled || e.delete_time.is_some() {
            self.endpoints.remove(e.endpoint_id.as_str());
            return;
        }
        self.endpoints.insert(
            e.endpoint_id.into(),
            IndexedEndpoint {
                url: e.url.into(),
                secret: e.secret.into(),
                previous: e.previous_secret.map(|p| (p.secret.into(), p.expire_time)),
            },
        );
    }

    fn remove_endpoint(&mut self, endpoint_id: &str) {
        self.endpoints.remove(endpoint_id);
    }

    fn remove_subscription(&mut self, subscription_id: &str) {
        let Some(slot) = self.slots.remove(subscription_id) else {
            return;
        };
        if let Some(entry) = self.entries[slot as usize].take() {
            for p in &entry.patterns {
                if p.is_wildcard() {
                    self.wildcards.remove(p.as_str(), slot);
                } else if let Some(list) = self.exact.get_mut(p.as_str()) {
                    list.retain(|s| *s != slot);
                    if list.is_empty() {
                        self.exact.remove(p.as_str());
                    }
                }
            }
        }
        self.free.push(slot);
    }

    /// Indexes an ACTIVE subscription; anything else leaves the index.
    fn upsert_subscription(&mut self, s: Subscription, interner: &Patterns) {
        self.remove_subscription(&s.subscription_id);
        if s.status != SubscriptionStatus::Active {
            return;
        }
        let patterns: Box<[Arc<EventPattern>]> = s
            .event_types
            .iter()
            .filter_map(|p| interner.get(p))
            .collect();
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.entries.push(None);
                (self.entries.len() - 1) as u32
            }
        };
        for p in &patterns {
            if p.is_wildcard() {
                self.wildcards.insert(p.as_str(), slot);
            } else {
                self.exact.entry(p.as_str().into()).or_default().push(slot);
            }
        }
        self.slots.insert(s.subscription_id.as_str().into(), slot);
        self.entries[slot as usize] = Some(Entry {
            create_time: s.create_time,
            subscription_id: s.subscription_id.into(),
            name: s.name.unwrap_or_default().into(),
            endpoint_id: s.endpoint_id.into(),
            patterns,
            expire_time: s.expire_time,
        });
    }

    fn resolve(&self, event_type: &str, now: Micros, with_secrets: bool) -> Vec<Target> {
        if !self.active {
            return Vec::new();
        }
        let mut slots: Vec<u32> = self.exact.get(event_type).cloned().unwrap_or_default();
        let segments: Vec<&str> = event_type.split('.').collect();
        self.wildcards.collect(&segments, &mut slots);
        slots.sort_unstable();
        slots.dedup();
        let mut found: Vec<(&Entry, &IndexedEndpoint, &Arc<EventPattern>)> = slots
            .into_iter()
            .filter_map(|slot| {
                let entry = self.entries.get(slot as usize)?.as_ref()?;
                if entry.expire_time.is_some_and(|t| t <= now) {
                    return None;
                }
                let endpoint = self.endpoints.get(&entry.endpoint_id)?;
                let matched = entry.patterns.iter().find(|p| p.matches(event_type))?;
                Some((entry, endpoint, matched))
            })
            .collect();
        found.sort_by(|a, b| {
            (a.0.create_time, &a.0.subscription_id).cmp(&(b.0.create_time, &b.0.subscription_id))
        });
        found
            .into_iter()
            .map(|(entry, endpoint, matched)| {
                // String::from, not to_string(): the latter goes through
                // the formatter and grows the buffer as it writes.
                let signing_secrets = if with_secrets {
                    let mut secrets = Vec::with_capacity(2);
                    secrets.push(String::from(&*endpoint.secret));
                    if let Some((previous, until)) = &endpoint.previous
                        && *until > now
                    {
                        secrets.push(String::from(&**previous));
                    }
                    secrets
                } else {
                    Vec::new()
                };
                Target {
                    subscription_id: String::from(&*entry.subscription_id),
                    endpoint_id: String::from(&*entry.endpoint_id),
                    name: String::from(&*entry.name),
                    url: String::from(&*endpoint.url),
                    matched_pattern: matched.as_str().to_owned(),
                    signing_secrets,
                }
            })
            .collect()
    }
}

/// The catalog as pattern checks need it: name to deprecated.
pub type Catalog = HashMap<String, bool>;

/// Every tenant's index plus the catalog, and the revision applied.
pub struct ResolveIndex {
    tenants: RwLock<FastMap<String, Arc<RwLock<TenantIndex>>>>,
    catalog: RwLock<Arc<Catalog>>,
    patterns: Patterns,
    applied: watch::Sender<Revision>,
}

impl Default for ResolveIndex {
    fn default() -> Self {
        ResolveIndex {
            tenants: RwLock::default(),
            catalog: RwLock::default(),
            patterns: Patterns::default(),
            applied: watch::channel(0).0,
        }
    }
}

fn group(snapshot: Snapshot, patterns: &Patterns) -> HashMap<String, TenantIndex> {
    let mut endpoints: HashMap<String, Vec<Endpoint>> = HashMap::new();
    for e in snapshot.endpoints {
        endpoints.entry(e.tenant_id.clone()).or_default().push(e);
    }
    let mut subscriptions: HashMap<String, Vec<Subscription>> = HashMap::new();
    for s in snapshot.subscriptions {
        subscriptions
            .entry(s.tenant_id.clone())
            .or_default()
            .push(s);
    }
    snapshot
        .tenants
        .into_iter()
        .map(|t| {
            let index = TenantIndex::build(
                t.state == TenantState::Active,
                endpoints.remove(&t.tenant_id).unwrap_or_default(),
                subscriptions.remove(&t.tenant_id).unwrap_or_default(),
                patterns,
            );
            (t.tenant_id, index)
        })
        .collect()
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

impl ResolveIndex {
    /// Replaces everything (start-up, or after falling behind the log)
    /// with the tenants `batches` yields, built one batch at a time so the
    /// rows of only one batch are in memory at once.
    pub async fn load_all<F, Fut>(
        &self,
        mut batches: F,
        catalog: Catalog,
    ) -> crate::repository::RepoResult<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = crate::repository::RepoResult<Option<Snapshot>>>
            + Send
            + 'static,
    {
        let joined = |r: Result<_, tokio::task::JoinError>| {
            r.map_err(|e| crate::repository::RepoError::Internal(Box::new(e)))
        };
        let mut tenants = FastMap::default();
        // Pipelined: the next batch is read while this one is indexed.
        let mut next = tokio::spawn(batches());
        while let Some(snapshot) = joined(next.await)?? {
            next = tokio::spawn(batches());
            for (k, v) in group(snapshot, &self.patterns) {
                tenants.insert(k, Arc::new(RwLock::new(v)));
            }
        }
        *write(&self.tenants) = tenants;
        *write(&self.catalog) = Arc::new(catalog);
        Ok(())
    }

    /// Replaces one tenant's index from its snapshot (gone if deleted).
    pub fn load_tenant(&self, tenant_id: &str, snapshot: Snapshot) {
        let index = group(snapshot, &self.patterns).remove(tenant_id);
        let mut tenants = write(&self.tenants);
        match index {
            Some(index) => {
                tenants.insert(tenant_id.to_owned(), Arc::new(RwLock::new(index)));
            }
            None => {
                tenants.remove(tenant_id);
            }
        }
    }

    fn tenant(&self, tenant_id: &str) -> Option<Arc<RwLock<TenantIndex>>> {
        read(&self.tenants).get(tenant_id).cloned()
    }

    pub fn has_tenant(&self, tenant_id: &str) -> bool {
        read(&self.tenants).contains_key(tenant_id)
    }

    /// Applies one subscription's current state (None: it is gone).
    pub fn apply_subscription(
        &self,
        tenant_id: &str,
        subscription_id: &str,
        current: Option<Subscription>,
    ) {
        let Some(index) = self.tenant(tenant_id) else {
            return;
        };
        let mut index = write(&index);
        match current {
            Some(s) => index.upsert_subscription(s, &self.patterns),
            None => index.remove_subscription(subscription_id),
        }
    }

    /// Applies one endpoint's current state (None: it is gone).
    pub fn apply_endpoint(&self, tenant_id: &str, endpoint_id: &str, current: Option<Endpoint>) {
        let Some(index) = self.tenant(tenant_id) else {
            return;
        };
        let mut index = write(&index);
        match current {
            Some(e) => index.upsert_endpoint(e),
            None => index.remove_endpoint(endpoint_id),
        }
    }

    pub fn set_catalog(&self, catalog: Catalog) {
        *write(&self.catalog) = Arc::new(catalog);
    }

    /// The catalog as this replica last saw it.
    pub fn catalog(&self) -> Arc<Catalog> {
        read(&self.catalog).clone()
    }

    pub fn mark_applied(&self, revision: Revision) {
        self.applied.send_if_modified(|current| {
            let newer = revision > *current;
            if newer {
                *current = revision;
            }
            newer
        });
    }

    pub fn applied(&self) -> Revision {
        *self.applied.borrow()
    }

    pub fn subscribe_applied(&self) -> watch::Receiver<Revision> {
        self.applied.subscribe()
    }

    /// Targets for an event, and the revision the answer reflects.
    pub fn resolve(
        &self,
        tenant_id: &str,
        event_type: &str,
        now: Micros,
        with_secrets: bool,
    ) -> (Vec<Target>, Revision) {
        let revision = self.applied();
        if !read(&self.catalog).contains_key(event_type) {
            return (Vec::new(), revision);
        }
        match self.tenant(tenant_id) {
            Some(index) => (
                read(&index).resolve(event_type, now, with_secrets),
                revision,
            ),
            None => (Vec::new(), revision),
        }
    }
}

//! Per-tenant subscriber indexes: exact event names in a hash map, wildcard
//! patterns in a segment trie. A tenant's index is rebuilt whole when one of
//! its resources changes and swapped in atomically.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use super::trie::PatternTrie;
use crate::domain::EventPattern;
use crate::model::{Micros, Subscription, SubscriptionStatus, TenantState};
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

struct Endpoint {
    endpoint_id: String,
    url: String,
    secret: String,
    previous: Option<(String, Micros)>,
}

struct Entry {
    subscription_id: String,
    name: String,
    endpoint: usize,
    patterns: Vec<EventPattern>,
    expire_time: Option<Micros>,
}

#[derive(Default)]
struct TenantIndex {
    entries: Vec<Entry>,
    endpoints: Vec<Endpoint>,
    exact: HashMap<String, Vec<u32>>,
    wildcards: PatternTrie,
}

impl TenantIndex {
    /// Indexes the ACTIVE subscriptions on enabled endpoints; a suspended
    /// tenant gets an empty index.
    fn build(
        active: bool,
        endpoints: Vec<crate::model::Endpoint>,
        subscriptions: Vec<Subscription>,
    ) -> Self {
        let mut index = TenantIndex::default();
        if !active {
            return index;
        }
        let mut by_id = HashMap::new();
        for e in endpoints
            .into_iter()
            .filter(|e| e.enabled && e.delete_time.is_none())
        {
            by_id.insert(e.endpoint_id.clone(), index.endpoints.len());
            index.endpoints.push(Endpoint {
                endpoint_id: e.endpoint_id,
                url: e.url,
                secret: e.secret,
                previous: e.previous_secret.map(|p| (p.secret, p.expire_time)),
            });
        }
        for s in subscriptions {
            if s.status != SubscriptionStatus::Active {
                continue;
            }
            let Some(&endpoint) = by_id.get(&s.endpoint_id) else {
                continue;
            };
            let patterns: Vec<EventPattern> = s
                .event_types
                .iter()
                .filter_map(|p| EventPattern::parse(p).ok())
                .collect();
            let slot = index.entries.len() as u32;
            for p in &patterns {
                if p.is_wildcard() {
                    index.wildcards.insert(p.as_str(), slot);
                } else {
                    index
                        .exact
                        .entry(p.as_str().to_owned())
                        .or_default()
                        .push(slot);
                }
            }
            index.entries.push(Entry {
                subscription_id: s.subscription_id,
                name: s.name.unwrap_or_default(),
                endpoint,
                patterns,
                expire_time: s.expire_time,
            });
        }
        index
    }

    fn resolve(&self, event_type: &str, now: Micros, with_secrets: bool) -> Vec<Target> {
        let mut slots: Vec<u32> = self.exact.get(event_type).cloned().unwrap_or_default();
        let segments: Vec<&str> = event_type.split('.').collect();
        self.wildcards.collect(&segments, &mut slots);
        // Slots are in creation order; one target per subscription.
        slots.sort_unstable();
        slots.dedup();
        slots
            .into_iter()
            .filter_map(|slot| {
                let entry = &self.entries[slot as usize];
                if entry.expire_time.is_some_and(|t| t <= now) {
                    return None;
                }
                let matched = entry.patterns.iter().find(|p| p.matches(event_type))?;
                let endpoint = &self.endpoints[entry.endpoint];
                let signing_secrets = if with_secrets {
                    let mut secrets = vec![endpoint.secret.clone()];
                    if let Some((previous, until)) = &endpoint.previous
                        && *until > now
                    {
                        secrets.push(previous.clone());
                    }
                    secrets
                } else {
                    Vec::new()
                };
                Some(Target {
                    subscription_id: entry.subscription_id.clone(),
                    endpoint_id: endpoint.endpoint_id.clone(),
                    name: entry.name.clone(),
                    url: endpoint.url.clone(),
                    matched_pattern: matched.as_str().to_owned(),
                    signing_secrets,
                })
            })
            .collect()
    }
}

/// Every tenant's index plus the catalog's names, and the revision applied.
pub struct ResolveIndex {
    tenants: RwLock<HashMap<String, Arc<TenantIndex>>>,
    catalog: RwLock<HashSet<String>>,
    applied: watch::Sender<Revision>,
}

impl Default for ResolveIndex {
    fn default() -> Self {
        ResolveIndex {
            tenants: RwLock::default(),
            catalog: RwLock::default(),
            applied: watch::channel(0).0,
        }
    }
}

fn group(snapshot: Snapshot) -> HashMap<String, TenantIndex> {
    let mut endpoints: HashMap<String, Vec<crate::model::Endpoint>> = HashMap::new();
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
            );
            (t.tenant_id, index)
        })
        .collect()
}

impl ResolveIndex {
    /// Replaces everything (start-up, or after falling behind the log).
    pub fn load_all(&self, snapshot: Snapshot, catalog: HashSet<String>) {
        let tenants = group(snapshot)
            .into_iter()
            .map(|(k, v)| (k, Arc::new(v)))
            .collect();
        *self.tenants.write().unwrap_or_else(|e| e.into_inner()) = tenants;
        *self.catalog.write().unwrap_or_else(|e| e.into_inner()) = catalog;
    }

    /// Replaces one tenant's index from its snapshot (gone if deleted).
    pub fn load_tenant(&self, tenant_id: &str, snapshot: Snapshot) {
        let index = group(snapshot).remove(tenant_id).map(Arc::new);
        let mut tenants = self.tenants.write().unwrap_or_else(|e| e.into_inner());
        match index {
            Some(index) => {
                tenants.insert(tenant_id.to_owned(), index);
            }
            None => {
                tenants.remove(tenant_id);
            }
        }
    }

    pub fn set_catalog(&self, catalog: HashSet<String>) {
        *self.catalog.write().unwrap_or_else(|e| e.into_inner()) = catalog;
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
        if !self
            .catalog
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(event_type)
        {
            return (Vec::new(), revision);
        }
        let index = self
            .tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant_id)
            .cloned();
        match index {
            Some(index) => (index.resolve(event_type, now, with_secrets), revision),
            None => (Vec::new(), revision),
        }
    }
}

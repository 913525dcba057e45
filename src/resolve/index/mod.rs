//! Per-tenant subscriber indexes (hookplane-core's `TenantSubscribers`: exact
//! event names in a hash map, wildcard patterns in a segment trie). This
//! file holds the index of every tenant and the catalog; loading, applying changes, resolving and the applied revision
//! each have a file of their own.

mod applied;
mod apply;
mod load;
mod matching;
mod tenant;
#[cfg(test)]
pub(crate) mod tests;

use std::sync::atomic::{AtomicI64, AtomicUsize};
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use crate::model::Tenant;
use crate::repository::Revision;

pub use hookplane_core::{Match, Target};

use hookplane_core::subscribers::FastMap;
use hookplane_core::{Patterns, Resolvable};
use tenant::TenantIndex;

/// The catalog as pattern checks need it: name to deprecated.
pub type Catalog = FastMap<String, bool>;

/// Every tenant's index plus the catalog, and the revision applied.
pub struct ResolveIndex {
    tenants: RwLock<FastMap<String, Arc<RwLock<TenantIndex>>>>,
    catalog: RwLock<Arc<Catalog>>,
    /// The catalog's names with the ids of their segments: what a resolve
    /// looks the event type up in.
    resolvable: RwLock<FastMap<Box<str>, Resolvable>>,
    patterns: Patterns,
    applied: watch::Sender<Revision>,
    /// The same revision, for readers that only look: every resolve reads
    /// it, and a load does not write to a line both cores share, as taking
    /// the watch's lock does.
    applied_now: AtomicI64,
    /// Woken when a caller waits for the follower to reach a revision.
    awaited: tokio::sync::Notify,
    /// Callers waiting for the follower right now.
    waiting: AtomicUsize,
}

impl Default for ResolveIndex {
    fn default() -> Self {
        ResolveIndex {
            tenants: RwLock::default(),
            catalog: RwLock::default(),
            resolvable: RwLock::default(),
            patterns: Patterns::default(),
            applied: watch::channel(0).0,
            applied_now: AtomicI64::new(0),
            awaited: tokio::sync::Notify::new(),
            waiting: AtomicUsize::new(0),
        }
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

impl ResolveIndex {
    fn tenant(&self, tenant_id: &str) -> Option<Arc<RwLock<TenantIndex>>> {
        read(&self.tenants).get(tenant_id).cloned()
    }

    pub fn has_tenant(&self, tenant_id: &str) -> bool {
        read(&self.tenants).contains_key(tenant_id)
    }

    /// The live tenant's row as this replica last applied it; it may lag the
    /// database, so a write that starts from it must check its etag.
    pub fn tenant_record(&self, tenant_id: &str) -> Option<Arc<Tenant>> {
        read(&*self.tenant(tenant_id)?).record.clone()
    }

    pub fn set_catalog(&self, catalog: Catalog) {
        let resolvable = catalog
            .keys()
            .map(|name| (name.as_str().into(), self.patterns.resolvable(name)))
            .collect();
        *write(&self.resolvable) = resolvable;
        *write(&self.catalog) = Arc::new(catalog);
    }

    /// The catalog as this replica last saw it.
    pub fn catalog(&self) -> Arc<Catalog> {
        read(&self.catalog).clone()
    }
}

//! Loading the index from snapshots: every tenant at start-up (or after
//! falling behind the log), or one tenant after a tenant-level change.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::model::{Endpoint, Subscription};
use crate::repository::{Revision, Snapshot};

use super::tenant::TenantIndex;
use super::{Catalog, FastMap, ResolveIndex, write};
use hookplane_core::Patterns;

fn group(
    snapshot: Snapshot,
    patterns: &Patterns,
    followed: Revision,
) -> HashMap<String, TenantIndex> {
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
            let tenant_id = t.tenant_id.clone();
            let index = TenantIndex::build(
                t,
                endpoints.remove(&tenant_id).unwrap_or_default(),
                subscriptions.remove(&tenant_id).unwrap_or_default(),
                patterns,
                followed,
            );
            (tenant_id, index)
        })
        .collect()
}

impl ResolveIndex {
    /// Replaces everything (start-up, or after falling behind the log)
    /// with the tenants `batches` yields, built one batch at a time so the
    /// rows of only one batch are in memory at once. The batches must be
    /// read after `followed`, the revision the follower goes on from.
    pub async fn load_all<F, Fut>(
        &self,
        mut batches: F,
        catalog: Catalog,
        followed: Revision,
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
            for (k, v) in group(snapshot, &self.patterns, followed) {
                tenants.insert(k, Arc::new(RwLock::new(v)));
            }
        }
        let mut current = write(&self.tenants);
        for (tenant_id, index) in &tenants {
            if let Some(older) = current.get(tenant_id) {
                write(index).keep_written(&mut write(older), &self.patterns);
            }
        }
        *current = tenants;
        drop(current);
        self.set_catalog(catalog);
        Ok(())
    }

    /// Replaces one tenant's index from its snapshot (gone if deleted),
    /// read after the follower read its changes up to `followed`.
    pub fn load_tenant(&self, tenant_id: &str, snapshot: Snapshot, followed: Revision) {
        let index = group(snapshot, &self.patterns, followed).remove(tenant_id);
        let mut tenants = write(&self.tenants);
        match index {
            Some(mut index) => {
                if let Some(older) = tenants.get(tenant_id) {
                    index.keep_written(&mut write(older), &self.patterns);
                }
                tenants.insert(tenant_id.to_owned(), Arc::new(RwLock::new(index)));
            }
            None => {
                tenants.remove(tenant_id);
            }
        }
    }
}

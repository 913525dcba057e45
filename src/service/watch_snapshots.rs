//! Snapshots for tenant-scoped Watch streams that open together, read
//! together: a stream that asks while a read is running joins the next
//! one, so a fleet of dispatchers reconnecting at once costs a few reads
//! of many tenants each (and of the catalog once), not two reads per
//! stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::model::EventType;
use crate::repository::{RepoError, RepoResult, Repository, Snapshot};

/// Tenants per read, at most (as the follower loads them).
const TENANTS_PER_READ: usize = 500;

/// A tenant's live state and the catalog, read at or after it was asked
/// for.
pub struct TenantSnapshot {
    pub snapshot: Snapshot,
    pub catalog: Arc<[EventType]>,
}

type Reply = oneshot::Sender<RepoResult<TenantSnapshot>>;

pub struct SnapshotReads {
    repo: Arc<dyn Repository>,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    /// A read task is running; it takes whatever waits when it starts its
    /// next read.
    reading: bool,
    waiting: Vec<(String, Reply)>,
}

impl SnapshotReads {
    pub fn new(repo: Arc<dyn Repository>) -> Arc<Self> {
        Arc::new(SnapshotReads {
            repo,
            queue: Mutex::new(Queue::default()),
        })
    }

    /// The live state of `tenant_id` and the catalog, from a read that
    /// starts after this call: what the caller read before it is not newer.
    pub async fn tenant(self: &Arc<Self>, tenant_id: &str) -> RepoResult<TenantSnapshot> {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.waiting.push((tenant_id.to_owned(), reply));
            !std::mem::replace(&mut queue.reading, true)
        };
        if start {
            // A task of its own: a caller that goes away must not take the
            // others' read with it.
            tokio::spawn(self.clone().read_while_asked());
        }
        answer
            .await
            .unwrap_or_else(|_| Err(RepoError::Unavailable("the snapshot read stopped".into())))
    }

    async fn read_while_asked(self: Arc<Self>) {
        loop {
            let asked = {
                let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                if queue.waiting.is_empty() {
                    queue.reading = false;
                    return;
                }
                let take = queue.waiting.len().min(TENANTS_PER_READ);
                queue.waiting.drain(..take).collect::<Vec<_>>()
            };
            self.read(asked).await;
        }
    }

    /// One read for every tenant in `asked`, answered to each.
    async fn read(&self, asked: Vec<(String, Reply)>) {
        let mut ids: Vec<String> = asked.iter().map(|(id, _)| id.clone()).collect();
        ids.sort_unstable();
        ids.dedup();
        let read = async {
            let catalog: Arc<[EventType]> = self.repo.all_event_types().await?.into();
            let snapshot = self.repo.snapshot_tenants(&ids).await?;
            Ok::<_, RepoError>((snapshot, catalog))
        };
        let (snapshot, catalog) = match read.await {
            Ok(read) => read,
            Err(e) => {
                let message = crate::error::chain(&e).to_string();
                for (_, reply) in asked {
                    let _ = reply.send(Err(RepoError::Unavailable(message.clone().into())));
                }
                return;
            }
        };
        // Split by tenant: `ids` is sorted, so each row finds its slot
        // by binary search.
        let slot = |tenant: &str| ids.binary_search_by(|id| id.as_str().cmp(tenant)).ok();
        let mut parts: Vec<Snapshot> = vec![Snapshot::default(); ids.len()];
        for t in snapshot.tenants {
            if let Some(i) = slot(&t.tenant_id) {
                parts[i].tenants.push(t);
            }
        }
        for e in snapshot.endpoints {
            if let Some(i) = slot(&e.tenant_id) {
                parts[i].endpoints.push(e);
            }
        }
        for s in snapshot.subscriptions {
            if let Some(i) = slot(&s.tenant_id) {
                parts[i].subscriptions.push(s);
            }
        }
        let mut askers: HashMap<usize, usize> = HashMap::new();
        for (id, _) in &asked {
            *askers.entry(slot(id).unwrap_or(0)).or_default() += 1;
        }
        for (id, reply) in asked {
            let Some(i) = slot(&id) else { continue };
            let left = askers.entry(i).or_default();
            *left -= 1;
            // The last asker of a tenant takes its part; others copy it.
            let snapshot = if *left == 0 {
                std::mem::take(&mut parts[i])
            } else {
                parts[i].clone()
            };
            let _ = reply.send(Ok(TenantSnapshot {
                snapshot,
                catalog: catalog.clone(),
            }));
        }
    }
}

//! The revision the follower has applied, and callers waiting for it to
//! reach theirs.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::watch;

use crate::repository::Revision;

use super::ResolveIndex;

/// Counts a waiting caller for as long as it waits (also when its future
/// is dropped).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn start(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ResolveIndex {
    pub fn mark_applied(&self, revision: Revision) {
        self.applied_now.fetch_max(revision, Ordering::Release);
        self.applied.send_if_modified(|current| {
            let newer = revision > *current;
            if newer {
                *current = revision;
            }
            newer
        });
    }

    pub fn applied(&self) -> Revision {
        self.applied_now.load(Ordering::Acquire)
    }

    pub fn subscribe_applied(&self) -> watch::Receiver<Revision> {
        self.applied.subscribe()
    }

    /// Waits (at most `limit`) until the follower has applied `revision`,
    /// asking it to read the change log now rather than at its leisure.
    pub async fn wait_applied(&self, revision: Revision, limit: std::time::Duration) {
        let mut applied = self.applied.subscribe();
        if *applied.borrow_and_update() >= revision {
            return;
        }
        let _waiting = Waiting::start(&self.waiting);
        self.awaited.notify_one();
        let _ = tokio::time::timeout(limit, applied.wait_for(|a| *a >= revision)).await;
    }

    /// Whether a caller is waiting for the follower.
    pub fn is_awaited(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }

    /// Completes when a caller waits for the follower (see
    /// [`Self::wait_applied`]).
    pub async fn awaited(&self) {
        self.awaited.notified().await;
    }
}

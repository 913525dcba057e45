//! The in-memory subscriber index that serves ResolveSubscribers, the
//! change feed that serves Watch, and the change-log follower that keeps
//! both (and the credential cache) current.

mod feed;
mod follower;
mod index;
mod sweeper;

pub use feed::{Beat, Behind, ChangeFeed, FeedChange, FeedEvent, HEARTBEAT, PROGRESS};
pub use follower::Follower;
pub use index::{Catalog, Match, ResolveIndex, Target};
pub use sweeper::run_sweeper;

use std::sync::Arc;

/// What the follower keeps current in a replica's memory, and the data
/// plane serves from: the resolve index and the change feed.
#[derive(Clone)]
pub struct InMemory {
    pub index: Arc<ResolveIndex>,
    pub feed: Arc<ChangeFeed>,
}

/// Index fixtures for other modules' tests: the tenant "acme" and helpers
/// to build its endpoints and subscriptions.
#[cfg(test)]
pub(crate) use index::tests as fixtures;

//! The in-memory subscriber index that serves ResolveSubscribers, and the
//! change-log follower that keeps it (and the credential cache) current.

mod follower;
mod index;
mod sweeper;

pub use follower::Follower;
pub use index::{Catalog, Match, ResolveIndex, Target};
pub use sweeper::run_sweeper;

/// Index fixtures for other modules' tests: the tenant "acme" and helpers
/// to build its endpoints and subscriptions.
#[cfg(test)]
pub(crate) use index::tests as fixtures;

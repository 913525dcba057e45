//! The in-memory subscriber index that serves ResolveSubscribers, and the
//! change-log follower that keeps it (and the credential cache) current.

mod follower;
mod index;
mod sweeper;
mod trie;

pub use follower::Follower;
pub use index::{Catalog, ResolveIndex, Target};
pub use sweeper::run_sweeper;

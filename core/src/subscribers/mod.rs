//! Whom an event reaches, per tenant: the index the server resolves from
//! and the client library's local resolver keeps, one implementation for
//! both. Exact event names sit in a hash map, wildcard patterns in a
//! segment trie; entries and endpoints are laid out for resolves over
//! millions of subscriptions (see `matching.rs`).

mod matching;
mod packed;
mod pages;
mod patterns;
mod tenant;
#[cfg(test)]
mod tests;

pub use matching::{Match, Target};
pub use pages::Page;
pub use patterns::{Patterns, Resolvable};
pub use tenant::{EndpointState, SubscriptionState, TenantSubscribers};

/// The index's hot maps hash with foldhash (randomly seeded per process, so
/// still resistant to chosen collisions): SipHash showed up in resolve
/// profiles.
pub type FastMap<K, V> = foldhash::HashMap<K, V>;

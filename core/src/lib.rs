//! The rules that decide which subscriptions an event reaches, as pure
//! code: event-type names and patterns (what is valid, what matches what),
//! the segment trie that finds matching patterns without testing each one,
//! when an expiry time has passed, and the per-tenant index of subscribers
//! that a resolve reads; the request signature every call carries, and
//! the Standard Webhooks signature every delivery carries.
//!
//! They live in a crate of their own so that a client library that resolves
//! locally can depend on exactly the rules the server uses, without
//! depending on the server (no I/O, no runtime, no database). The server
//! re-exports them where its own modules used to define them.

pub mod event_type;
pub mod expiry;
mod invalid;
pub mod secret;
pub mod signing;
pub mod subscribers;
pub mod trie;

pub use event_type::{EventPattern, EventTypeName};
pub use expiry::{Micros, has_expired};
pub use invalid::InvalidValue;
pub use secret::SigningSecret;
pub use subscribers::{
    EndpointState, Match, Patterns, Resolvable, SubscriptionState, Target, TenantSubscribers,
};
pub use trie::PatternTrie;

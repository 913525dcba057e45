//! Each resource's storage: one file per resource, each implementing that
//! resource's trait (see the traits in `repository`) for [`SeaRepository`].
//! A new resource's storage goes in a new file here.
//!
//! [`SeaRepository`]: super::SeaRepository

mod change_log;
mod credentials;
mod endpoints;
mod event_types;
mod maintenance;
mod outbox;
mod parents;
mod requests;
mod snapshots;
mod subscriptions;
mod tenants;
mod verification;

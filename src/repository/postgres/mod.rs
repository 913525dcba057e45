//! What only PostgreSQL has: connections held out of the pool for the
//! hottest statements, the pool's options, the probe that tells whether it
//! answers, and the NOTIFY/LISTEN that tells other replicas about this
//! process's commits.

mod held_connections;
mod notify;
mod probe;

use std::sync::Arc;
use std::time::Duration;

use sea_orm::ConnectOptions;

use super::availability::Availability;
use super::sea::{DatabaseSettings, PING_IF_IDLE_FOR};

pub(in crate::repository) use held_connections::HeldConnections;
pub(super) use notify::{listen_for_changes, notify_replicas};
pub(in crate::repository) use probe::Probe;

/// How long a pooled PostgreSQL connection is used. PostgreSQL keeps a
/// prepared statement's generic plan, made with the table sizes of that
/// moment, for as long as the connection lives: one made on empty tables
/// (autovacuum off, nothing analyzed) can scan a table that has since
/// grown. A new connection plans afresh. (Held connections drop their
/// plans more often; see `held_connections`.)
const PG_CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// The pool's options: connections live [`PG_CONNECTION_LIFETIME`], and one
/// opened before another one broke is dropped instead of used.
pub(super) fn pool_options(
    settings: &DatabaseSettings,
    availability: &Arc<Availability>,
) -> ConnectOptions {
    let mut opts = ConnectOptions::new(settings.url.clone());
    opts.max_connections(settings.max_connections)
        .min_connections(1)
        .acquire_timeout(settings.acquire_timeout)
        .test_before_acquire_if_idle_for(PING_IF_IDLE_FOR)
        .max_lifetime(PG_CONNECTION_LIFETIME)
        .sqlx_logging(false);
    // A connection opened before another one broke is dropped
    // instead of used (see `availability`).
    let outdated = availability.clone();
    opts.map_sqlx_postgres_before_acquire(move |_, meta| {
        let opened = std::time::Instant::now()
            .checked_sub(meta.age)
            .unwrap_or_else(std::time::Instant::now);
        let usable = !outdated.outdated(opened);
        Box::pin(async move { Ok(usable) })
    });
    opts
}

//! How the availability probe asks PostgreSQL whether it answers.

use std::time::Duration;

use sea_orm::sqlx::Connection as _;
use sea_orm::sqlx::postgres::PgConnection;

use crate::repository::availability::Availability;

/// A probe not answered within this counts as the database being down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How the probe asks PostgreSQL: a connection of its own, opened again
/// when it fails, since a server that refuses connections is down even
/// while older ones linger.
pub(in crate::repository) struct Probe {
    url: String,
    conn: Option<PgConnection>,
}

impl Probe {
    pub(in crate::repository) fn new(url: String) -> Self {
        Probe { url, conn: None }
    }

    /// Whether the database answers. A connection found broken on the way
    /// is reported to `availability`: the others are as old as it.
    pub(in crate::repository) async fn check(&mut self, availability: &Availability) -> bool {
        if let Some(c) = self.conn.as_mut() {
            if ping(c).await {
                return true;
            }
            availability.connection_failed();
        }
        // The held connection died (a restart ends it even when the server
        // is back at once): only a fresh one tells.
        self.conn = None;
        let fresh = tokio::time::timeout(PROBE_TIMEOUT, PgConnection::connect(&self.url)).await;
        let Ok(Ok(mut fresh)) = fresh else {
            // Whatever was open before the outage is not used after it.
            availability.connection_failed();
            return false;
        };
        let up = ping(&mut fresh).await;
        if up {
            self.conn = Some(fresh);
        }
        up
    }
}

async fn ping(conn: &mut PgConnection) -> bool {
    tokio::time::timeout(PROBE_TIMEOUT, conn.ping())
        .await
        .is_ok_and(|r| r.is_ok())
}

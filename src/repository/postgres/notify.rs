//! PostgreSQL NOTIFY/LISTEN: commits announced to the other replicas, and
//! theirs received, so followers need not wait for their next poll.

use std::time::Duration;

use tokio::sync::watch;

use crate::error::chain;
use crate::repository::Revision;

/// The PostgreSQL channel on which every commit announces its revision.
const CHANGES_CHANNEL: &str = "hookplane_changes";

/// At most one NOTIFY per this interval: each is a transaction of its own,
/// and a few milliseconds are nothing next to the poll it replaces.
const NOTIFY_SPACING: Duration = Duration::from_millis(5);

/// PostgreSQL: tells the other replicas about this process's commits, with
/// one NOTIFY per burst of commits, sent after they committed.
///
/// A NOTIFY inside each writing transaction would serialise all commits:
/// PostgreSQL holds a global lock on its notification queue from a
/// notifying transaction's commit until it ends, WAL flush included. Here
/// the NOTIFY runs on a connection of its own with `synchronous_commit`
/// off, so it waits for no flush either. A notification lost here (a crash,
/// a dropped connection) only delays the change until the other replicas'
/// next poll.
pub(in crate::repository) async fn notify_replicas(
    url: String,
    mut committed: watch::Receiver<Revision>,
    mut closed: watch::Receiver<bool>,
) {
    use sea_orm::sqlx::postgres::PgConnection;
    use sea_orm::sqlx::{Connection, query};

    async fn connect(url: &str) -> Result<PgConnection, sea_orm::sqlx::Error> {
        let mut conn = PgConnection::connect(url).await?;
        query("SET synchronous_commit = off")
            .execute(&mut conn)
            .await?;
        Ok(conn)
    }

    let mut conn = None;
    loop {
        tokio::select! {
            _ = closed.changed() => return,
            changed = committed.changed() => if changed.is_err() { return },
        }
        let revision = *committed.borrow_and_update();
        let sent = async {
            if conn.is_none() {
                conn = Some(connect(&url).await?);
            }
            let Some(c) = conn.as_mut() else {
                return Ok(());
            };
            query("SELECT pg_notify($1, $2)")
                .bind(CHANGES_CHANNEL)
                .bind(revision.to_string())
                .execute(c)
                .await
                .map(|_| ())
        };
        if let Err(e) = sent.await {
            conn = None;
            if !*closed.borrow() {
                tracing::warn!(
                    error = %chain(&e),
                    "cannot notify other replicas of a commit; they see it at their next poll"
                );
            }
        }
        // Commits in the meantime go out together with the next one.
        tokio::time::sleep(NOTIFY_SPACING).await;
    }
}

/// Publishes revisions announced by other replicas until the repository closes.
pub(in crate::repository) async fn listen_for_changes(
    url: String,
    revisions: watch::Sender<Revision>,
    mut closed: watch::Receiver<bool>,
) {
    use sea_orm::sqlx::postgres::PgListener;
    let mut backoff = Duration::from_millis(200);
    while !*closed.borrow() {
        let listener = async {
            let mut listener = PgListener::connect(&url).await?;
            listener.listen(CHANGES_CHANNEL).await?;
            Ok::<_, sea_orm::sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            _ = closed.changed() => return,
            l = listener => match l {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %chain(&e), "cannot LISTEN for changes; polling only until it works");
                    tokio::select! {
                        _ = closed.changed() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            },
        };
        backoff = Duration::from_millis(200);
        loop {
            tokio::select! {
                _ = closed.changed() => return,
                n = listener.recv() => match n {
                    Ok(n) => {
                        if let Ok(revision) = n.payload().parse::<Revision>() {
                            revisions.send_if_modified(|current| {
                                let newer = revision > *current;
                                if newer {
                                    *current = revision;
                                }
                                newer
                            });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %chain(&e), "LISTEN connection lost; reconnecting");
                        break;
                    }
                },
            }
        }
    }
}

//! Copies SQLite's write-ahead log back into the database in the background,
//! so that no commit has to.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection};
use tokio::sync::watch;

use crate::error::chain;

/// How often the SQLite write-ahead log is copied back into the database.
const WAL_CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Checkpoints SQLite's write-ahead log from a reader connection until the
/// repository closes. The writer's automatic checkpoint is off: it ran inside
/// a commit, so every few batches one commit also wrote back a thousand
/// pages while every other write waited. A PASSIVE checkpoint never blocks
/// the writer or readers; a commit only appends to the log.
pub(in crate::repository) async fn checkpoint_wal(
    reader: DatabaseConnection,
    mut closed: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = closed.changed() => return,
            _ = tokio::time::sleep(WAL_CHECKPOINT_EVERY) => {}
        }
        if let Err(e) = reader
            .execute_unprepared("PRAGMA wal_checkpoint(PASSIVE)")
            .await
        {
            tracing::warn!(error = %chain(&e), "write-ahead log checkpoint failed; retrying");
        }
    }
}

//! What only SQLite needs: its one writer connection (the group commit
//! that shares a transaction among queued writes, and the checks that keep
//! that connection's state honest), reads run on the caller's thread,
//! connection tuning (pragmas, the planner and memory-statistics switches
//! over FFI) and the background WAL checkpoint.

mod checkpoint;
pub(in crate::repository) mod group_commit;
pub(in crate::repository) mod inline_read;
mod tuning;
pub(in crate::repository) mod writer;

pub(super) use checkpoint::checkpoint_wal;
pub(super) use tuning::SQLITE_MMAP_BYTES;
pub use tuning::sqlite_memory_statistics_off;
use tuning::{open_inline_reader, sqlite_options};

use sea_orm::{Database, DatabaseBackend, DatabaseConnection, DbErr};

use super::sea::{DatabaseSettings, migrate};
use inline_read::InlineReader;

/// Opens the database at `settings.url`: its one writer connection, the
/// reader pool and, for a file, the inline readers. Migrates first, so
/// readers see the final schema.
pub(super) async fn open(
    settings: &DatabaseSettings,
) -> Result<(DatabaseConnection, DatabaseConnection, Option<InlineReader>), DbErr> {
    let writer = Database::connect(sqlite_options(settings, 1)).await?;
    migrate(&writer, DatabaseBackend::Sqlite).await?;
    let reader = Database::connect(sqlite_options(settings, settings.max_connections)).await?;
    let inline = open_inline_reader(&reader)?;
    Ok((writer, reader, inline))
}

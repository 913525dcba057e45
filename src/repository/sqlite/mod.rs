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
pub use tuning::sqlite_memory_statistics_off;
pub(super) use tuning::{SQLITE_MMAP_BYTES, open_inline_reader, sqlite_options};

//! How hookplane opens SQLite: pragmas per pool, the query planner
//! stability guarantee and memory statistics (both set over FFI), and the
//! inline readers of a database file.

use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, DatabaseConnection, DbErr};

use crate::repository::sea::{DatabaseSettings, PING_IF_IDLE_FOR};
use crate::repository::sqlite::inline_read::InlineReader;
use crate::repository::sqlite::writer as sqlite_writer;

/// Page cache per SQLite connection, in KiB (SQLite's default is 2 MiB,
/// too small for random access into a large subscriptions table).
const SQLITE_WRITER_CACHE_KIB: u32 = 65_536;

const SQLITE_READER_CACHE_KIB: u32 = 16_384;

/// How much of the database file each inline reader memory-maps. Only those
/// map it: mapped pages count in RSS once per connection that touched them,
/// and the pool's readers (start-up load, listings) touch the whole file.
pub(in crate::repository) const SQLITE_MMAP_BYTES: i64 = 1 << 31;

pub(in crate::repository) fn sqlite_options(
    settings: &DatabaseSettings,
    pool: u32,
) -> ConnectOptions {
    // The writer is the pool of one.
    let writer = pool == 1;
    let cache_kib = if pool == 1 {
        SQLITE_WRITER_CACHE_KIB
    } else {
        SQLITE_READER_CACHE_KIB
    };
    let mut opts = ConnectOptions::new(settings.url.clone());
    opts.max_connections(pool)
        .min_connections(1)
        .acquire_timeout(settings.acquire_timeout)
        .test_before_acquire_if_idle_for(PING_IF_IDLE_FOR)
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(move |o| {
            o.create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // FULL: an acknowledged write survives power loss.
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10))
                .pragma("cache_size", format!("-{cache_kib}"))
                // Checkpoints run in the background (see checkpoint_wal).
                .pragma("wal_autocheckpoint", if pool == 1 { "0" } else { "1000" })
                // The writer's savepoints (one per write of a group-commit
                // batch) journal the pages they change; past 64 KiB a
                // batch's sub-journal would spill to a temporary file, one
                // write(2) per page. In memory it is dropped at each
                // release instead.
                .pragma("temp_store", if pool == 1 { "memory" } else { "default" })
        })
        .map_sqlx_sqlite_pool_opts(move |pool| {
            let pool = pool.after_connect(|conn, _| Box::pin(stable_plans(conn)));
            if writer {
                pool.after_release(|conn, _| Box::pin(sqlite_writer::writer_is_clean(conn)))
            } else {
                pool
            }
        });
    opts
}

/// Turns SQLite's memory statistics off for this process. With them on (the
/// bundled build's default) every allocation and free inside SQLite takes
/// one process-wide mutex, and sqlx copies each row's values on its worker
/// thread and frees them on the thread that reads the row: in a
/// ListSubscriptions profile those threads queued on that mutex (futex
/// wake-ups were a quarter of the samples). Nothing here reads the
/// statistics.
///
/// Returns false when SQLite was already initialized, in which case nothing
/// changed.
///
/// # Safety
///
/// `sqlite3_config` is not thread-safe: call it before SQLite is first
/// used, while no other thread can use it (the server does so first thing
/// in `main`).
pub unsafe fn sqlite_memory_statistics_off() -> bool {
    use rusqlite::ffi;
    // SAFETY: the caller guarantees no other thread is using SQLite;
    // MEMSTATUS takes one int (0: off). After initialization the call is
    // refused with SQLITE_MISUSE and changes nothing.
    let rc = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as std::ffi::c_int) };
    rc == ffi::SQLITE_OK
}

/// Turns on SQLite's query planner stability guarantee, as the inline
/// readers do: the bundled SQLite otherwise plans with some bound values
/// and prepares a statement again whenever they change, which in a
/// ListSubscriptions profile was a large share of the pool threads' CPU
/// (each page binds another tenant; see BENCHMARKS.md). There is no pragma
/// for it, only `sqlite3_db_config`.
async fn stable_plans(
    conn: &mut sea_orm::sqlx::SqliteConnection,
) -> Result<(), sea_orm::sqlx::Error> {
    match planner_stability(conn, 1).await? {
        Ok(_) => Ok(()),
        Err(rc) => Err(sea_orm::sqlx::Error::Configuration(
            format!("enabling SQLite's query planner stability guarantee failed ({rc})").into(),
        )),
    }
}

/// Sets a connection's query planner stability guarantee (`value` 1: on,
/// 0: off, -1: as it is) and returns the setting after the call, or
/// SQLite's error code.
async fn planner_stability(
    conn: &mut sea_orm::sqlx::SqliteConnection,
    value: std::ffi::c_int,
) -> Result<Result<bool, std::ffi::c_int>, sea_orm::sqlx::Error> {
    use rusqlite::ffi;
    let mut handle = conn.lock_handle().await?;
    let mut now: std::ffi::c_int = -1;
    // SAFETY: the handle is the open connection's, and its lock keeps
    // sqlx's worker thread from using it meanwhile. ENABLE_QPSG takes an
    // int and a pointer to an int that receives the setting; `now`
    // outlives the call.
    let rc = unsafe {
        ffi::sqlite3_db_config(
            handle.as_raw_handle().as_ptr(),
            ffi::SQLITE_DBCONFIG_ENABLE_QPSG,
            value,
            &mut now as *mut std::ffi::c_int,
        )
    };
    Ok(if rc == ffi::SQLITE_OK {
        Ok(now == 1)
    } else {
        Err(rc)
    })
}

/// Inline readers for a SQLite file (an in-memory database is private to
/// the pool's connections, so it has none).
pub(in crate::repository) fn open_inline_reader(
    reader: &DatabaseConnection,
) -> Result<Option<InlineReader>, DbErr> {
    let options = reader.get_sqlite_connection_pool().connect_options();
    let path = options.get_filename();
    if path.as_os_str().is_empty() || path.to_str().is_some_and(|p| p.contains(":memory:")) {
        return Ok(None);
    }
    // One per runtime thread covers every reader that can run at once
    // (a read never awaits while it holds its connection).
    let connections = std::thread::available_parallelism().map_or(2, |n| n.get());
    InlineReader::open(path, connections, SQLITE_READER_CACHE_KIB)
        .map(Some)
        .map_err(|e| DbErr::Custom(format!("opening the SQLite inline readers: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::Database;

    async fn stable_plans_on(conn: &mut sea_orm::sqlx::SqliteConnection) -> bool {
        planner_stability(conn, -1).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn every_pooled_sqlite_connection_plans_stably() {
        let dir = tempfile::tempdir().unwrap();
        let settings = DatabaseSettings {
            url: format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display()),
            max_connections: 2,
            acquire_timeout: Duration::from_secs(5),
        };
        let db = Database::connect(sqlite_options(&settings, 2))
            .await
            .unwrap();
        let pool = db.get_sqlite_connection_pool();
        // Both connections: the pool opens a second while the first is held.
        let mut first = pool.acquire().await.unwrap();
        let mut second = pool.acquire().await.unwrap();
        assert!(stable_plans_on(&mut first).await);
        assert!(stable_plans_on(&mut second).await);
    }
}

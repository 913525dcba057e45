//! What can go wrong with SQLite's one writer connection, and how it is
//! noticed: a full disk, and a connection whose transaction state is no
//! longer what sqlx believes it is.
//!
//! After SQLITE_FULL, SQLITE_IOERR and a few others, SQLite may roll the
//! open transaction back on its own. sqlx counts the transactions it opened
//! and does not notice, so its next BEGIN becomes a SAVEPOINT and its next
//! COMMIT a RELEASE: writes would then be acknowledged that no commit ever
//! made durable. The writer pool therefore checks each connection as it
//! comes back ([`writer_is_clean`]) and closes one that is inside a
//! transaction by either count; the pool opens a fresh one for the next
//! write. (The group commit checks an open batch the same way: see
//! `group_commit`.)

use rusqlite::ffi;
use sea_orm::sqlx::{self, Connection as _, SqliteConnection};
use sea_orm::{DbErr, RuntimeErr};

/// The primary SQLite result code of a database error, if that is what
/// `err` is (extended codes keep the primary one in their low byte).
fn sqlite_code(err: &DbErr) -> Option<i32> {
    let runtime = match err {
        DbErr::Query(r) | DbErr::Exec(r) | DbErr::Conn(r) => r,
        _ => return None,
    };
    let RuntimeErr::SqlxError(e) = runtime else {
        return None;
    };
    let sqlx::Error::Database(db) = e.as_ref() else {
        return None;
    };
    // PostgreSQL's codes are numbers too, of another scheme.
    db.try_downcast_ref::<sqlx::sqlite::SqliteError>()?;
    let code: i32 = db.code()?.parse().ok()?;
    Some(code & 0xff)
}

/// Whether SQLite refused a write because its disk (or file system) is full.
pub(in crate::repository) fn is_storage_full(err: &DbErr) -> bool {
    sqlite_code(err) == Some(ffi::SQLITE_FULL)
}

/// Whether SQLite could not read or write its files (an I/O error, a file
/// that cannot be opened): an outage, not a fault of the request.
pub(in crate::repository) fn is_storage_error(err: &DbErr) -> bool {
    matches!(
        sqlite_code(err),
        Some(ffi::SQLITE_IOERR | ffi::SQLITE_CANTOPEN | ffi::SQLITE_READONLY | ffi::SQLITE_NOMEM)
    )
}

/// The writer pool's check of a connection coming back: true when neither
/// sqlx nor SQLite has a transaction open on it, so the next write starts
/// clean. A connection that fails the check is closed by the pool.
pub(in crate::repository) async fn writer_is_clean(
    conn: &mut SqliteConnection,
) -> Result<bool, sqlx::Error> {
    let sqlx_open = conn.is_in_transaction();
    let mut handle = conn.lock_handle().await?;
    // SAFETY: the handle is the open connection's, and its lock keeps
    // sqlx's worker thread from using it meanwhile;
    // sqlite3_get_autocommit only reads the connection's state.
    let autocommit = unsafe { ffi::sqlite3_get_autocommit(handle.as_raw_handle().as_ptr()) };
    let sqlite_open = autocommit == 0;
    if sqlx_open || sqlite_open {
        tracing::warn!(
            sqlx_open,
            sqlite_open,
            "the SQLite writer connection came back inside a transaction; replacing it"
        );
        return Ok(false);
    }
    Ok(true)
}

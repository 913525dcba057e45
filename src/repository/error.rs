//! Database errors as the repository reports them: what a caller can act on
//! (a clash, a lost database, a full disk) told apart from the rest.

use sea_orm::{DbErr, SqlErr};

use super::RepoError;
use super::availability::lost_connection;
use super::sqlite::writer as sqlite_writer;

pub(super) fn classify(err: DbErr) -> RepoError {
    if sqlite_writer::is_storage_full(&err) {
        return RepoError::StorageFull(Box::new(err));
    }
    if sqlite_writer::is_storage_error(&err) {
        return RepoError::Unavailable(Box::new(err));
    }
    if let Some(SqlErr::UniqueConstraintViolation(_)) = err.sql_err() {
        return RepoError::AlreadyExists("resource");
    }
    match &err {
        // PostgreSQL broke a deadlock or a serialization conflict by
        // rolling this transaction back: nothing was written, retry is safe.
        DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e))
        | DbErr::Query(sea_orm::RuntimeErr::SqlxError(e))
            if e.as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == "40001" || c == "40P01") =>
        {
            RepoError::Unavailable(Box::new(err))
        }
        // The database went away, restarted or refuses connections.
        _ if lost_connection(&err) => RepoError::Unavailable(Box::new(err)),
        _ => RepoError::Internal(Box::new(err)),
    }
}

/// Classifies a unique violation as a clash on `what`.
pub(super) fn unique_as(what: &'static str) -> impl Fn(DbErr) -> RepoError {
    move |err| match classify(err) {
        RepoError::AlreadyExists(_) => RepoError::AlreadyExists(what),
        other => other,
    }
}

pub(super) fn internal(msg: impl Into<String>) -> RepoError {
    RepoError::Internal(msg.into().into())
}

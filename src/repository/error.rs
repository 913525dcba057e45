//! Database errors as the repository reports them: what a caller can act on
//! (a clash, a lost database, a full disk) told apart from the rest.

use sea_orm::{DbErr, RuntimeErr, SqlErr, sqlx};

use super::quota::Quota;
use super::sqlite::writer as sqlite_writer;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0} already exists")]
    AlreadyExists(&'static str),
    #[error("the resource changed since it was read")]
    Stale,
    /// A write started from a tenant whose etag is no longer current.
    #[error("the tenant changed since it was read")]
    TenantChanged,
    #[error("{0}")]
    Precondition(String),
    #[error("the request nonce was already used for a write")]
    Replay,
    #[error("the request id was recorded by a concurrent call")]
    IdempotencyRace,
    /// The tenant already holds `.1`, the most `.0` allows.
    #[error("the tenant's quota of {1} is used up")]
    QuotaExceeded(Quota, i64),
    #[error("database unavailable")]
    Unavailable(#[source] crate::error::BoxError),
    /// The database's disk (or file system) is full: nothing was written.
    #[error("the database's disk is full")]
    StorageFull(#[source] crate::error::BoxError),
    #[error("database error")]
    Internal(#[source] crate::error::BoxError),
}

pub type RepoResult<T> = Result<T, RepoError>;

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
        _ if sqlx_error(&err)
            .and_then(sqlstate)
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

/// Whether `e` means the database could not be reached: the connection
/// broke (see [`broken_connection`]) or none could be had. Such failures
/// are UNAVAILABLE, never INTERNAL.
pub(in crate::repository) fn lost_connection(e: &DbErr) -> bool {
    match e {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(RuntimeErr::Internal(_)) => true,
        _ => sqlx_error(e).is_some_and(|e| {
            sqlx_broken_connection(e)
                || matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed)
                || sqlstate(e).is_some_and(|code| code == "53300" || code == "57P03")
        }),
    }
}

/// Whether the connection `e` came from cannot be used again.
pub(in crate::repository) fn broken_connection(e: &DbErr) -> bool {
    sqlx_error(e).is_some_and(sqlx_broken_connection)
}

/// [`broken_connection`] for a sqlx error: the socket failed, or
/// PostgreSQL ended the session: connection exceptions (class 08),
/// administrator or crash shutdown (57P01, 57P02, what every restart
/// sends), the database dropped (57P04), an idle session timed out (57P05).
pub(in crate::repository) fn sqlx_broken_connection(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        _ => sqlstate(e).is_some_and(|code| {
            code.starts_with("08") || ["57P01", "57P02", "57P04", "57P05"].contains(&code.as_ref())
        }),
    }
}

fn sqlx_error(e: &DbErr) -> Option<&sqlx::Error> {
    match e {
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => Some(e),
        _ => None,
    }
}

fn sqlstate(e: &sqlx::Error) -> Option<std::borrow::Cow<'_, str>> {
    e.as_database_error().and_then(|d| d.code())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn database_error(code: &str) -> DbErr {
        #[derive(Debug)]
        struct Coded(String);
        impl std::fmt::Display for Coded {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "error {}", self.0)
            }
        }
        impl std::error::Error for Coded {}
        impl sqlx::error::DatabaseError for Coded {
            fn message(&self) -> &str {
                "coded"
            }
            fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
                Some(self.0.as_str().into())
            }
            fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
                self
            }
            fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
                self
            }
            fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
                self
            }
            fn kind(&self) -> sqlx::error::ErrorKind {
                sqlx::error::ErrorKind::Other
            }
        }
        DbErr::Query(RuntimeErr::SqlxError(Arc::new(sqlx::Error::Database(
            Box::new(Coded(code.to_owned())),
        ))))
    }

    #[test]
    fn shutdowns_and_connection_exceptions_are_lost_connections() {
        for code in ["57P01", "57P02", "08006", "08003", "08P01"] {
            assert!(lost_connection(&database_error(code)), "{code}");
            assert!(broken_connection(&database_error(code)), "{code}");
        }
        // Refusals at connect time: unavailable, but no connection broke.
        for code in ["57P03", "53300"] {
            assert!(lost_connection(&database_error(code)), "{code}");
            assert!(!broken_connection(&database_error(code)), "{code}");
        }
        for code in ["23505", "40001", "22021", "42P01"] {
            assert!(!lost_connection(&database_error(code)), "{code}");
            assert!(!broken_connection(&database_error(code)), "{code}");
        }
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let io = DbErr::Query(RuntimeErr::SqlxError(Arc::new(sqlx::Error::Io(io))));
        assert!(lost_connection(&io) && broken_connection(&io));
        let timed_out = DbErr::Conn(RuntimeErr::SqlxError(Arc::new(sqlx::Error::PoolTimedOut)));
        assert!(lost_connection(&timed_out) && !broken_connection(&timed_out));
        assert!(!lost_connection(&DbErr::Custom("no".into())));
    }
}

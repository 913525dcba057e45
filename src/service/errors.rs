//! What a repository error means to a caller.

use crate::error::Error;
use crate::repository::{Quota, RepoError};

impl From<RepoError> for Error {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::NotFound(what) => Error::NotFound(format!("{what} not found")),
            RepoError::AlreadyExists(what) => {
                Error::AlreadyExists(format!("{what} already exists"))
            }
            RepoError::Stale => Error::Aborted(
                "the resource was changed by another call; read it again and retry".into(),
            ),
            RepoError::TenantChanged => Error::Aborted(
                "the tenant was changed by another call while this one ran; retry".into(),
            ),
            RepoError::Precondition(msg) => Error::FailedPrecondition(msg),
            RepoError::Replay => Error::Unauthenticated("x-api-nonce has already been used".into()),
            RepoError::IdempotencyRace => {
                Error::Aborted("a call with the same request_id is in progress; retry".into())
            }
            RepoError::QuotaExceeded(quota, limit) => {
                let (what, flag) = match quota {
                    Quota::Endpoints => ("endpoints", "--max-endpoints-per-tenant"),
                    Quota::Subscriptions => ("subscriptions", "--max-subscriptions-per-tenant"),
                };
                Error::ResourceExhausted(format!(
                    "the tenant already has {limit} live {what}, the limit {flag} sets; delete some first"
                ))
            }
            RepoError::Unavailable(source) => Error::Unavailable(source),
            RepoError::StorageFull(source) => Error::StorageFull(source),
            RepoError::Internal(source) => Error::Internal(source),
        }
    }
}

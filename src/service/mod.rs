//! Business rules. Talks to the [`Repository`] trait only; takes validated
//! domain values and the authenticated [`Caller`], returns model records.

mod credentials;
mod data_plane;
mod endpoints;
mod event_types;
pub mod page_token;
mod payloads;
mod subscriptions;
mod tenants;
mod verification;
mod watch_slots;

use std::sync::Arc;

use serde::{Serialize, de::DeserializeOwned};

pub use credentials::{NewCredential, generate_api_id, generate_credential_secret};
pub use data_plane::{WatchEvent, WatchResource};
pub use endpoints::{EndpointChanges, NewEndpoint};
pub use event_types::{EventTypeChanges, EventTypeKey, NewEventType};
pub use page_token::PageTokens;
pub use payloads::{MAX_VIOLATIONS, PayloadCheck, PayloadViolation};
pub use subscriptions::{NewSubscription, SubscriptionChanges, SubscriptionListFilter};
pub use tenants::{NewTenant, TenantChanges};
pub use verification::token_hash;

use crate::auth::{CachedCredential, Caller, CredentialCache, ScopeError};
use crate::domain::Permission;
use crate::error::{Error, Result};
use crate::model::{Credential, IDEMPOTENCY_RETENTION_MICROS, Micros, Subscription, now_micros};
use crate::repository::{
    IdempotencyWrite, PageRequest, Quota, RepoError, Repository, Revision, WriteMeta,
};
use crate::resolve::ResolveIndex;

pub const DEFAULT_PAGE_SIZE: u64 = 50;
pub const MAX_PAGE_SIZE: u64 = 1000;

#[derive(Debug, Clone)]
pub struct ServiceSettings {
    pub allow_private_networks: bool,
    pub timestamp_window_secs: i64,
    /// Base of confirmation links, e.g. `https://hooks.example.com`.
    pub public_url: String,
    pub confirmation_ttl_secs: i64,
    /// Open Watch streams on this replica, at most.
    pub max_watch_streams: usize,
    /// Open Watch streams of one credential on this replica, at most.
    pub max_watch_streams_per_credential: usize,
}

pub struct Services {
    repo: Arc<dyn Repository>,
    credentials: Arc<CredentialCache>,
    settings: ServiceSettings,
    tokens: PageTokens,
    index: Arc<ResolveIndex>,
    /// The changes Watch streams are served from.
    feed: Arc<crate::resolve::ChangeFeed>,
    sender: Arc<crate::delivery::Sender>,
    /// Turns true when the server begins to stop.
    stopping: tokio::sync::watch::Receiver<bool>,
    payloads: payloads::PayloadChecker,
    watch_slots: Arc<watch_slots::WatchSlots>,
}

/// A write's result: the value, and the change-log revision it produced
/// (None when an idempotent retry replayed a stored response).
#[derive(Debug, Clone)]
pub struct Written<T> {
    pub value: T,
    pub revision: Option<Revision>,
}

/// How a write waits for this replica's resolve index before it answers, so
/// that its caller can resolve what it wrote right away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    /// Until the change-log follower has applied the write's revision.
    Follower,
    /// Not at all: the write applied itself to the index.
    Applied,
}

/// An idempotency key with the fingerprint of the request that carried it.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub request_id: String,
    pub fingerprint: Vec<u8>,
}

/// Paging input as the caller gave it, already range-checked.
#[derive(Debug, Clone, Default)]
pub struct Paging {
    pub page_size: u64,
    pub page_token: String,
    pub skip: u64,
}

#[derive(Debug, Clone)]
pub struct Listed<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
    pub total_size: i32,
}

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

impl Services {
    pub fn new(
        repo: Arc<dyn Repository>,
        credentials: Arc<CredentialCache>,
        settings: ServiceSettings,
        tokens: PageTokens,
        memory: crate::resolve::InMemory,
        sender: Arc<crate::delivery::Sender>,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let watch_slots = watch_slots::WatchSlots::new(
            settings.max_watch_streams,
            settings.max_watch_streams_per_credential,
        );
        Services {
            repo,
            credentials,
            settings,
            tokens,
            index: memory.index,
            feed: memory.feed,
            sender,
            stopping,
            payloads: payloads::PayloadChecker::default(),
            watch_slots,
        }
    }

    /// A settled write's result.
    async fn done<T>(&self, value: T, revision: Revision) -> Written<T> {
        self.settled(Settle::Follower, value, revision).await
    }

    /// A write's result, once it is settled as `settle` says.
    async fn settled<T>(&self, settle: Settle, value: T, revision: Revision) -> Written<T> {
        if settle == Settle::Follower {
            self.settle(revision).await;
        }
        Written {
            value,
            revision: Some(revision),
        }
    }

    /// A subscription write's result: the subscription as stored goes into
    /// this replica's resolve index at once, instead of the caller waiting
    /// for the follower to read it back.
    fn applied(&self, stored: Subscription, revision: Revision) -> Written<Subscription> {
        self.index.apply_written(&stored, revision);
        Written {
            value: stored,
            revision: Some(revision),
        }
    }

    pub fn repository(&self) -> &Arc<dyn Repository> {
        &self.repo
    }

    fn require(&self, caller: &Caller, permission: Permission) -> Result<()> {
        if caller.has(permission) {
            Ok(())
        } else {
            Err(Error::PermissionDenied(format!(
                "the credential lacks the {} permission",
                permission.as_str()
            )))
        }
    }

    /// Permission plus tenant fencing; an empty tenant means the caller's own.
    fn tenant_scope(
        &self,
        caller: &Caller,
        permission: Permission,
        requested: &str,
    ) -> Result<String> {
        self.tenant_scope_at(caller, permission, requested, "tenant_id")
    }

    /// [`Self::tenant_scope`] for a tenant_id inside a resource (`field`
    /// names it in a violation, e.g. `endpoint.tenant_id`).
    fn tenant_scope_at(
        &self,
        caller: &Caller,
        permission: Permission,
        requested: &str,
        field: &str,
    ) -> Result<String> {
        self.require(caller, permission)?;
        match caller.effective_tenant(requested) {
            Ok(t) => Ok(t.to_owned()),
            Err(ScopeError::TenantRequired) => Err(Error::invalid(field, "must be set")),
            Err(ScopeError::OtherTenant) => Err(Error::PermissionDenied(
                "the credential is scoped to another tenant".into(),
            )),
        }
    }

    fn write_meta(&self, caller: &Caller, now: Micros) -> WriteMeta {
        WriteMeta {
            api_id: caller.api_id.clone(),
            nonce: Some(caller.nonce.clone()),
            // The in-memory store refuses replays within twice the window;
            // the database keeps the nonce as long.
            nonce_expire_time: (caller.timestamp + 2 * self.settings.timestamp_window_secs)
                .saturating_mul(1_000_000),
            now,
            idempotency: None,
        }
    }

    /// Runs a create once per (credential, request_id): a retry returns the
    /// stored response, the same request_id with another request is refused.
    async fn idempotent<T, F, Fut>(
        &self,
        caller: &Caller,
        method: &'static str,
        idempotency: Option<Idempotency>,
        run: F,
    ) -> Result<Written<T>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(WriteMeta) -> Fut,
        Fut: std::future::Future<Output = Result<(T, Revision)>>,
    {
        self.idempotent_settled(caller, method, idempotency, Settle::Follower, run)
            .await
    }

    /// [`Self::idempotent`] for a `run` that settles as `settle` says.
    async fn idempotent_settled<T, F, Fut>(
        &self,
        caller: &Caller,
        method: &'static str,
        idempotency: Option<Idempotency>,
        settle: Settle,
        run: F,
    ) -> Result<Written<T>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(WriteMeta) -> Fut,
        Fut: std::future::Future<Output = Result<(T, Revision)>>,
    {
        let now = now_micros();
        let mut meta = self.write_meta(caller, now);
        let Some(idem) = idempotency.filter(|i| !i.request_id.is_empty()) else {
            let (value, revision) = run(meta).await?;
            return Ok(self.settled(settle, value, revision).await);
        };
        if idem.request_id.len() > 128 || !idem.request_id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::invalid(
                "request_id",
                "must be 1..128 visible ASCII characters",
            ));
        }
        if let Some(found) = self.find_replay(method, &idem, &meta).await? {
            return Ok(found);
        }
        // The lookup after a conflict records the nonce of a call that wrote nothing.
        let lookup_meta = meta.clone();
        meta.idempotency = Some(IdempotencyWrite {
            request_id: idem.request_id.clone(),
            method,
            fingerprint: idem.fingerprint.clone(),
            response: Vec::new(),
        });
        match run(meta).await {
            Ok((value, revision)) => Ok(self.settled(settle, value, revision).await),
            Err(Error::Aborted(_)) => match self.find_replay(method, &idem, &lookup_meta).await? {
                Some(found) => Ok(found),
                None => Err(Error::Aborted(
                    "the call conflicted with another; retry".into(),
                )),
            },
            Err(e) => Err(e),
        }
    }

    /// The stored response of an earlier call with this request id, handed
    /// out only once this call's nonce is recorded: a request that was
    /// accepted before (replayed after a restart or on another replica)
    /// finds its nonce taken and is refused, and never reads the response.
    async fn find_replay<T: DeserializeOwned>(
        &self,
        method: &'static str,
        idem: &Idempotency,
        meta: &WriteMeta,
    ) -> Result<Option<Written<T>>> {
        let Some(record) = self
            .repo
            .find_idempotency(
                &meta.api_id,
                &idem.request_id,
                meta.now - IDEMPOTENCY_RETENTION_MICROS,
            )
            .await?
        else {
            return Ok(None);
        };
        if record.method != method || record.fingerprint != idem.fingerprint {
            return Err(Error::invalid(
                "request_id",
                "was already used for a different request",
            ));
        }
        let value = serde_json::from_slice(&record.response).map_err(Error::internal)?;
        // Last: a recorded nonce marks the call as accepted (see
        // `refused_write`).
        self.repo.record_nonce(meta).await?;
        Ok(Some(Written {
            value,
            revision: None,
        }))
    }

    /// What a refused write answers. A write signed with a nonce that an
    /// earlier write recorded is a replay, and a replay is UNAUTHENTICATED
    /// whatever else is wrong with it (on this replica the nonce store
    /// catches it first; after a restart or on another replica only the
    /// database remembers). Checked only once a write has failed, so an
    /// accepted write costs no extra read.
    pub async fn refused_write(&self, caller: &Caller, error: Error) -> Error {
        if matches!(error, Error::Unauthenticated(_)) {
            return error;
        }
        match self
            .repo
            .nonce_recorded(&caller.api_id, &caller.nonce)
            .await
        {
            Ok(true) => RepoError::Replay.into(),
            _ => error,
        }
    }

    /// Turns caller paging into a repository page for a listing identified
    /// by `scope` (the list method and its filters).
    fn page_request(&self, scope: &str, paging: &Paging) -> Result<PageRequest> {
        let after = if paging.page_token.is_empty() {
            None
        } else {
            Some(self.tokens.decode(scope, &paging.page_token)?)
        };
        Ok(PageRequest {
            after,
            skip: paging.skip,
            limit: if paging.page_size == 0 {
                DEFAULT_PAGE_SIZE
            } else {
                paging.page_size.min(MAX_PAGE_SIZE)
            },
        })
    }

    fn listed<T>(
        &self,
        scope: &str,
        page: crate::repository::Page<T>,
        position: impl Fn(&T) -> (Micros, String),
    ) -> Listed<T> {
        let next_page_token = match (page.has_more, page.items.last()) {
            (true, Some(last)) => self.tokens.encode(scope, &position(last)),
            _ => String::new(),
        };
        Listed {
            items: page.items,
            next_page_token,
            total_size: i32::try_from(page.total).unwrap_or(i32::MAX),
        }
    }

    /// Keeps this replica's credential cache current at once after a write.
    fn cache_credential(&self, c: &Credential) {
        self.credentials.upsert(CachedCredential::from(c));
    }

    /// Replaces the credential cache with the stored credentials.
    pub async fn reload_credentials(&self) -> Result<usize> {
        let all = self.repo.all_credentials().await?;
        let count = all.len();
        self.credentials
            .replace_all(all.iter().map(CachedCredential::from).collect());
        Ok(count)
    }
}

/// Checks a text field's length and that it holds no control characters.
pub(crate) fn check_text(field: &str, value: &str, max_chars: usize) -> Result<()> {
    if value.chars().count() > max_chars {
        return Err(Error::invalid(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// Puts the response an idempotent create will replay into its write.
pub(crate) fn attach_response<T: Serialize>(meta: &mut WriteMeta, value: &T) -> Result<()> {
    if let Some(idem) = meta.idempotency.as_mut() {
        idem.response = serde_json::to_vec(value).map_err(Error::internal)?;
    }
    Ok(())
}

//! Business rules. Talks to the [`Repository`] trait only; takes validated
//! domain values and the authenticated [`Caller`], returns model records.

mod credentials;
mod endpoints;
mod errors;
mod event_types;
mod idempotency;
pub mod page_token;
mod paging;
mod payloads;
mod resolve;
mod subscriptions;
mod tenants;
mod verification;
mod watch;
mod watch_slots;

use std::sync::Arc;

pub use credentials::{NewCredential, generate_api_id, generate_credential_secret};
pub use endpoints::{EndpointChanges, NewEndpoint};
pub use event_types::{EventTypeChanges, EventTypeKey, NewEventType};
pub use idempotency::Idempotency;
pub(crate) use idempotency::attach_response;
pub use page_token::PageTokens;
pub use paging::{DEFAULT_PAGE_SIZE, Listed, MAX_PAGE_SIZE, Paging};
pub use payloads::{MAX_VIOLATIONS, PayloadCheck, PayloadViolation};
pub use resolve::{MAX_BATCH_QUERIES, MAX_RESOLVE_PAGE, ResolveQuery};
pub use subscriptions::{NewSubscription, SubscriptionChanges, SubscriptionListFilter};
pub use tenants::{NewTenant, TenantChanges};
pub use verification::token_hash;
pub use watch::{WatchEvent, WatchResource};

use crate::auth::{CachedCredential, Caller, CredentialCache, ScopeError};
use crate::domain::{Permission, TenantId};
use crate::error::{Error, FieldExt, Result};
use crate::model::{Credential, Micros, Subscription};
use crate::repository::{Repository, Revision, WriteMeta};
use crate::resolve::ResolveIndex;

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

    /// Settles a write: waits (briefly) until this replica's index and
    /// credential cache reflect `revision`, so a caller that reads right after
    /// its write sees it.
    pub(crate) async fn settle(&self, revision: Revision) {
        self.index
            .wait_applied(revision, std::time::Duration::from_secs(2))
            .await;
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
    ) -> Result<TenantId> {
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
    ) -> Result<TenantId> {
        self.require(caller, permission)?;
        parsed_tenant(fenced_tenant(caller, requested)?, field)?
            .ok_or_else(|| Error::invalid(field, "must be set"))
    }

    /// [`Self::tenant_scope`] for a call that may span every tenant: `None`
    /// (all tenants) when a platform-wide caller names none.
    fn tenant_scope_or_all(
        &self,
        caller: &Caller,
        permission: Permission,
        requested: &str,
    ) -> Result<Option<TenantId>> {
        self.require(caller, permission)?;
        parsed_tenant(fenced_tenant(caller, requested)?, "tenant_id")
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

/// The tenant a call acts on: the requested one, or the caller's own when
/// the request leaves it empty; `None` when neither names one (a
/// platform-wide caller). Another tenant's is PERMISSION_DENIED.
fn fenced_tenant<'a>(caller: &'a Caller, requested: &'a str) -> Result<Option<&'a str>> {
    match caller.effective_tenant(requested) {
        Ok(tenant) => Ok(Some(tenant)),
        Err(ScopeError::TenantRequired) => Ok(None),
        Err(ScopeError::OtherTenant) => Err(other_tenant()),
    }
}

/// What a caller scoped to one tenant gets for acting on another.
fn other_tenant() -> Error {
    Error::PermissionDenied("the credential is scoped to another tenant".into())
}

/// A fenced tenant, parsed (`field` names it in a violation).
fn parsed_tenant(tenant: Option<&str>, field: &str) -> Result<Option<TenantId>> {
    tenant.map(|t| TenantId::parse(t).field(field)).transpose()
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

//! Storage. The service layer talks to the [`Repository`] trait only; its one
//! implementation, [`SeaRepository`], runs on SQLite and PostgreSQL.
//!
//! Every write runs in one transaction that (1) takes the next change-log
//! revision first, which serialises writers in commit order, (2) records the
//! caller's request nonce so a replayed write fails on every replica, (3)
//! re-checks parents, (4) writes, (5) appends the change-log rows and (6)
//! stores the idempotent response, then commits. On PostgreSQL,
//! CreateSubscription does all of that in one statement (see
//! `one_statement`), falling back to the transaction to name an error.

mod availability;
mod create_batch;
mod entities;
mod group_commit;
mod inline_read;
mod one_statement;
mod pg_lanes;
mod quota;
mod rekey;
mod sea;
mod sqlite_writer;

use crate::model::{
    Credential, Endpoint, EventType, Micros, Subscription, SubscriptionStatus, Tenant,
};

pub use quota::{Quota, Quotas};
pub use rekey::{RekeyError, RekeyReport};
pub use sea::{DatabaseSettings, SeaRepository, sqlite_memory_statistics_off};

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

/// Who writes, and what the write must record besides the resource.
#[derive(Debug, Clone)]
pub struct WriteMeta {
    pub api_id: String,
    /// Recorded in the transaction so the same signed request cannot write twice.
    pub nonce: Option<String>,
    pub nonce_expire_time: Micros,
    pub now: Micros,
    pub idempotency: Option<IdempotencyWrite>,
}

#[derive(Debug, Clone)]
pub struct IdempotencyWrite {
    pub request_id: String,
    pub method: &'static str,
    pub fingerprint: Vec<u8>,
    /// The response to replay; encrypted at rest by the repository.
    pub response: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct IdempotencyRecord {
    pub method: String,
    pub fingerprint: Vec<u8>,
    pub response: Vec<u8>,
    pub create_time: Micros,
}

/// Keyset position plus offset: results strictly after `after` in creation
/// order, skipping `skip`, at most `limit`.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub after: Option<(Micros, String)>,
    pub skip: u64,
    pub limit: u64,
}

#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// More items follow the last one returned.
    pub has_more: bool,
    /// Items matching the filters, ignoring paging.
    pub total: u64,
}

#[derive(Debug, Clone, Default)]
pub struct SubscriptionFilter {
    pub tenant_id: String,
    pub endpoint_id: Option<String>,
    pub status: Option<SubscriptionStatus>,
    pub show_deleted: bool,
}

#[derive(Debug, Clone, Default)]
pub struct CredentialFilter {
    /// None: platform-wide credentials.
    pub tenant_id: Option<String>,
    pub show_revoked: bool,
}

/// One change-log row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRecord {
    pub revision: Revision,
    pub tenant_id: Option<String>,
    /// tenant, credential, event_type, endpoint or subscription.
    pub resource_type: String,
    pub resource_key: String,
    /// UPSERT or DELETE.
    pub kind: String,
    /// For a subscription change, the subscription's row as of the read
    /// (None if it is gone); None for other resources.
    pub subscription: Option<Subscription>,
}

/// What the resolve index and Watch need of one tenant, or of all.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub tenants: Vec<Tenant>,
    /// Live (not deleted) endpoints.
    pub endpoints: Vec<Endpoint>,
    /// Subscriptions that are not DELETED.
    pub subscriptions: Vec<Subscription>,
}

/// A confirmation to send: its token (stored hashed) and the outbox row that
/// will deliver it, written in the same transaction as the subscription.
#[derive(Debug, Clone)]
pub struct Verification {
    pub subscription_id: String,
    pub endpoint_id: String,
    /// SHA-256 of the token, hex.
    pub token_hash: String,
    pub token_expire_time: Micros,
    pub outbox_id: String,
    /// The message body, without its send time; encrypted at rest.
    pub payload: Vec<u8>,
}

/// What start-up did about the bootstrap credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    Created,
    /// It existed as configured (or, for a generated one, the store already
    /// held credentials).
    Unchanged,
    /// It existed with another secret, now replaced by the configured one.
    SecretReplaced,
    /// It exists but is revoked; nothing was changed.
    Revoked,
    /// The api_id belongs to a credential that is not a platform-wide
    /// PLATFORM_ADMIN; nothing was changed.
    NotPlatformAdmin,
}

/// What is stored of a confirmation token.
#[derive(Debug, Clone)]
pub struct TokenState {
    pub tenant_id: String,
    pub used: bool,
    pub expire_time: Micros,
}

impl TokenState {
    /// Why the token can no longer confirm anything at `now`, if it cannot.
    pub fn refusal(&self, now: Micros) -> Option<RepoError> {
        if self.used {
            return Some(RepoError::Precondition(
                "the confirmation token was already used or replaced by a newer one".into(),
            ));
        }
        if self.expire_time <= now {
            return Some(RepoError::Precondition(
                "the confirmation token has expired; ask for a new one with ResendConfirmation"
                    .into(),
            ));
        }
        None
    }
}

/// A pending outbound delivery.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    pub id: String,
    pub kind: String,
    pub tenant_id: String,
    pub subscription_id: String,
    pub endpoint_id: String,
    pub payload: Vec<u8>,
    pub attempts: i32,
    pub next_attempt_time: Micros,
}

#[derive(Debug, Clone)]
pub enum DeliveryOutcome {
    Delivered,
    Retry {
        next_attempt_time: Micros,
        error: String,
    },
    GiveUp {
        error: String,
    },
}

/// A position in the change log: the revision a write's last change-log row
/// got. Monotonic in the order readers see changes; contiguous on SQLite,
/// sparse on PostgreSQL (derived from transaction ids).
pub type Revision = i64;

#[async_trait::async_trait]
pub trait Repository: Send + Sync + 'static {
    async fn current_revision(&self) -> RepoResult<Revision>;
    async fn find_idempotency(
        &self,
        api_id: &str,
        request_id: &str,
        not_before: Micros,
    ) -> RepoResult<Option<IdempotencyRecord>>;
    /// Whether a write signed with this request nonce was accepted (write
    /// nonces are kept until their signed timestamp leaves the window).
    async fn nonce_recorded(&self, api_id: &str, nonce: &str) -> RepoResult<bool>;
    /// Records the nonce of a call that writes nothing else (a stored
    /// response handed out again, a ping), as a write would: `Replay` when
    /// it is recorded already.
    async fn record_nonce(&self, meta: &WriteMeta) -> RepoResult<()>;
    /// Deletes write nonces and idempotency records older than their retention.
    async fn purge_expired(&self, now: Micros, idempotency_before: Micros) -> RepoResult<u64>;

    /// Change-log rows after `after`, oldest first, at most `limit`.
    async fn changes_since(&self, after: Revision, limit: u64) -> RepoResult<Vec<ChangeRecord>>;
    /// The newest revision pruned from the change log (0 when none was): a
    /// reader positioned below it has missed changes.
    async fn pruned_through(&self) -> RepoResult<Revision>;
    /// Deletes change-log rows older than `before` and records how far.
    async fn prune_changes(&self, before: Micros) -> RepoResult<u64>;
    /// Live state of one tenant (`Some`) or of every tenant (`None`).
    async fn snapshot(&self, tenant_id: Option<&str>) -> RepoResult<Snapshot>;
    /// Live state of the given tenants.
    async fn snapshot_tenants(&self, tenant_ids: &[String]) -> RepoResult<Snapshot>;
    /// Live tenant ids after `after`, in id order, at most `limit` (for
    /// loading everything in batches).
    async fn tenant_ids(&self, after: &str, limit: u64) -> RepoResult<Vec<String>>;
    /// Marks ACTIVE and DISABLED subscriptions past their expire_time
    /// EXPIRED (a PENDING_VERIFICATION one keeps its stored status, so that
    /// renewing it cannot make it ACTIVE) and forgets rotated-out secrets
    /// past their grace period, recording each change.
    async fn sweep_expired(&self, now: Micros) -> RepoResult<u64>;

    /// Bulk-loads tenants, endpoints and subscriptions in one transaction
    /// (data migration and benchmark seeding), with one change-log row per
    /// tenant so every replica reloads them.
    async fn import(&self, batch: &Snapshot, now: Micros) -> RepoResult<Revision>;

    async fn create_tenant(&self, tenant: &Tenant, meta: &WriteMeta) -> RepoResult<Revision>;
    async fn get_tenant(&self, tenant_id: &str) -> RepoResult<Option<Tenant>>;
    async fn list_tenants(&self, page: &PageRequest) -> RepoResult<Page<Tenant>>;
    async fn update_tenant(
        &self,
        tenant: &Tenant,
        prev_etag: &str,
        meta: &WriteMeta,
    ) -> RepoResult<Revision>;
    async fn delete_tenant(
        &self,
        tenant_id: &str,
        prev_etag: &str,
        force: bool,
        meta: &WriteMeta,
    ) -> RepoResult<(Tenant, Revision)>;

    async fn create_credential(
        &self,
        credential: &Credential,
        meta: &WriteMeta,
    ) -> RepoResult<Revision>;
    async fn get_credential(&self, api_id: &str) -> RepoResult<Option<Credential>>;
    async fn list_credentials(
        &self,
        filter: &CredentialFilter,
        page: &PageRequest,
    ) -> RepoResult<Page<Credential>>;
    async fn revoke_credential(
        &self,
        api_id: &str,
        meta: &WriteMeta,
    ) -> RepoResult<(Credential, Revision)>;
    async fn all_credentials(&self) -> RepoResult<Vec<Credential>>;
    async fn count_credentials(&self) -> RepoResult<u64>;
    /// Makes sure the bootstrap credential exists, under a database-wide
    /// lock on PostgreSQL so replicas starting together make one. With
    /// `only_if_empty` (a generated credential) it is created only when the
    /// store holds no credential at all; otherwise the configured one is
    /// authoritative: an existing credential of that api_id with another
    /// secret gets this one.
    async fn bootstrap_credential(
        &self,
        credential: &Credential,
        only_if_empty: bool,
    ) -> RepoResult<Bootstrap>;

    async fn create_event_type(
        &self,
        event_type: &EventType,
        meta: &WriteMeta,
    ) -> RepoResult<Revision>;
    async fn get_event_type(&self, name: &str) -> RepoResult<Option<EventType>>;
    async fn get_event_type_by_code(&self, legacy_code: i32) -> RepoResult<Option<EventType>>;
    async fn list_event_types(&self, page: &PageRequest) -> RepoResult<Page<EventType>>;
    async fn all_event_types(&self) -> RepoResult<Vec<EventType>>;
    async fn update_event_type(
        &self,
        event_type: &EventType,
        prev_etag: &str,
        meta: &WriteMeta,
    ) -> RepoResult<Revision>;

    async fn create_endpoint(&self, endpoint: &Endpoint, meta: &WriteMeta) -> RepoResult<Revision>;
    async fn get_endpoint(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
    ) -> RepoResult<Option<Endpoint>>;
    async fn list_endpoints(
        &self,
        tenant_id: &str,
        page: &PageRequest,
    ) -> RepoResult<Page<Endpoint>>;
    /// Updates the endpoint; each verification also puts its subscription
    /// back to PENDING_VERIFICATION (a URL change on a verifying tenant) and
    /// forgets its earlier tokens.
    async fn update_endpoint(
        &self,
        endpoint: &Endpoint,
        prev_etag: &str,
        verifications: &[Verification],
        meta: &WriteMeta,
    ) -> RepoResult<Revision>;
    async fn delete_endpoint(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
        prev_etag: &str,
        force: bool,
        meta: &WriteMeta,
    ) -> RepoResult<(Endpoint, Revision)>;

    /// Creates the subscription if its tenant's etag is still
    /// `tenant_etag` (else `TenantChanged`, writing nothing).
    async fn create_subscription(
        &self,
        subscription: &Subscription,
        verification: Option<&Verification>,
        tenant_etag: &str,
        meta: &WriteMeta,
    ) -> RepoResult<Revision>;
    async fn get_subscription(
        &self,
        tenant_id: &str,
        subscription_id: &str,
    ) -> RepoResult<Option<Subscription>>;
    async fn list_subscriptions(
        &self,
        filter: &SubscriptionFilter,
        page: &PageRequest,
    ) -> RepoResult<Page<Subscription>>;
    /// Every subscription matching the filter, in creation order (for filters
    /// SQL cannot express, such as pattern matching).
    async fn all_subscriptions(&self, filter: &SubscriptionFilter)
    -> RepoResult<Vec<Subscription>>;
    /// Updates the subscription; a verification (a move to another
    /// endpoint on a verifying tenant) forgets its earlier tokens and queues
    /// a confirmation to the new endpoint.
    async fn update_subscription(
        &self,
        subscription: &Subscription,
        prev_etag: &str,
        verification: Option<&Verification>,
        meta: &WriteMeta,
    ) -> RepoResult<Revision>;
    async fn delete_subscription(
        &self,
        tenant_id: &str,
        subscription_id: &str,
        prev_etag: &str,
        meta: &WriteMeta,
    ) -> RepoResult<(Subscription, Revision)>;

    /// Uses a confirmation token: the subscription becomes ACTIVE.
    async fn confirm_subscription(
        &self,
        token_hash: &str,
        meta: &WriteMeta,
    ) -> RepoResult<(Subscription, Revision)>;
    /// Kills the subscription's earlier tokens and queues a new confirmation.
    async fn resend_confirmation(
        &self,
        tenant_id: &str,
        verification: &Verification,
        meta: &WriteMeta,
    ) -> RepoResult<(Subscription, Revision)>;
    /// A confirmation token as stored, read without a write (a flood of
    /// unknown tokens must not cost a write each).
    async fn confirmation_token(&self, token_hash: &str) -> RepoResult<Option<TokenState>>;

    /// Deliveries due at `now`, oldest first, at most `limit`, leaving out
    /// those to the endpoints in `busy` (tenant id, endpoint id).
    async fn due_deliveries(
        &self,
        now: Micros,
        limit: u64,
        busy: &[(String, String)],
    ) -> RepoResult<Vec<OutboxItem>>;
    /// Takes a delivery for `lease_until`; false when another worker has it.
    async fn claim_delivery(&self, item: &OutboxItem, lease_until: Micros) -> RepoResult<bool>;
    async fn finish_delivery(
        &self,
        item: &OutboxItem,
        outcome: &DeliveryOutcome,
        now: Micros,
    ) -> RepoResult<()>;
}

//! The storage traits, one per resource, and [`Repository`], all of them
//! together: what the service layer and the background tasks call.

use crate::model::{Credential, Endpoint, EventType, Micros, Subscription, Tenant};

use super::*;

/// All of storage, as the service layer and the background tasks use it:
/// one trait per resource, each implemented in `resources/`.
pub trait Repository:
    RequestStore
    + ChangeLogStore
    + SnapshotStore
    + Maintenance
    + TenantStore
    + CredentialStore
    + EventTypeStore
    + EndpointStore
    + SubscriptionStore
    + VerificationStore
    + OutboxStore
    + Send
    + Sync
    + 'static
{
}

impl<T> Repository for T where
    T: RequestStore
        + ChangeLogStore
        + SnapshotStore
        + Maintenance
        + TenantStore
        + CredentialStore
        + EventTypeStore
        + EndpointStore
        + SubscriptionStore
        + VerificationStore
        + OutboxStore
        + Send
        + Sync
        + 'static
{
}

/// Write nonces and idempotent responses, as a write records them.
#[async_trait::async_trait]
pub trait RequestStore: Send + Sync {
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
}

/// The change log: every committed change, in revision order.
#[async_trait::async_trait]
pub trait ChangeLogStore: Send + Sync {
    async fn current_revision(&self) -> RepoResult<Revision>;

    /// Change-log rows after `after`, oldest first, at most `limit`.
    async fn changes_since(&self, after: Revision, limit: u64) -> RepoResult<Vec<ChangeRecord>>;

    /// The newest revision pruned from the change log (0 when none was): a
    /// reader positioned below it has missed changes.
    async fn pruned_through(&self) -> RepoResult<Revision>;

    /// Deletes change-log rows older than `before` and records how far.
    async fn prune_changes(&self, before: Micros) -> RepoResult<u64>;
}

/// Live state read whole, for the resolve index and Watch.
#[async_trait::async_trait]
pub trait SnapshotStore: Send + Sync {
    /// Live state of one tenant (`Some`) or of every tenant (`None`).
    async fn snapshot(&self, tenant_id: Option<&str>) -> RepoResult<Snapshot>;

    /// Live state of the given tenants.
    async fn snapshot_tenants(&self, tenant_ids: &[String]) -> RepoResult<Snapshot>;

    /// Live tenant ids after `after`, in id order, at most `limit` (for
    /// loading everything in batches).
    async fn tenant_ids(&self, after: &str, limit: u64) -> RepoResult<Vec<String>>;
}

/// Housekeeping and bulk loads.
#[async_trait::async_trait]
pub trait Maintenance: Send + Sync {
    /// Deletes write nonces and idempotency records older than their retention.
    async fn purge_expired(&self, now: Micros, idempotency_before: Micros) -> RepoResult<u64>;

    /// Marks ACTIVE and DISABLED subscriptions past their expire_time
    /// EXPIRED (a PENDING_VERIFICATION one keeps its stored status, so that
    /// renewing it cannot make it ACTIVE) and forgets rotated-out secrets
    /// past their grace period, recording each change.
    async fn sweep_expired(&self, now: Micros) -> RepoResult<u64>;

    /// Bulk-loads tenants, endpoints and subscriptions in one transaction
    /// (data migration and benchmark seeding), with one change-log row per
    /// tenant so every replica reloads them.
    async fn import(&self, batch: &Snapshot, now: Micros) -> RepoResult<Revision>;
}

#[async_trait::async_trait]
pub trait TenantStore: Send + Sync {
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
}

#[async_trait::async_trait]
pub trait CredentialStore: Send + Sync {
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
}

#[async_trait::async_trait]
pub trait EventTypeStore: Send + Sync {
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
}

#[async_trait::async_trait]
pub trait EndpointStore: Send + Sync {
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
}

#[async_trait::async_trait]
pub trait SubscriptionStore: Send + Sync {
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
}

/// Confirmation tokens and the subscriptions they confirm.
#[async_trait::async_trait]
pub trait VerificationStore: Send + Sync {
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
}

/// Messages waiting to be delivered.
#[async_trait::async_trait]
pub trait OutboxStore: Send + Sync {
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

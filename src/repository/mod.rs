//! Storage. The service layer talks to the [`Repository`] trait only (one
//! trait per resource, combined); its one implementation, [`SeaRepository`],
//! runs on SQLite and PostgreSQL, and stores each resource in a file of
//! `resources/`. The records live here, [`RepoError`] in `error.rs`, the
//! traits in `stores.rs`. The steps every write takes, and the fast paths
//! of CreateSubscription, are in docs/ARCHITECTURE.md ("How a write flows").

mod availability;
mod change;
mod change_log;
mod change_state;
mod entities;
mod error;
mod fast_create;
mod postgres;
mod query;
mod quota;
mod read;
mod rekey;
mod resources;
mod revision;
mod rows;
mod sea;
mod secrets;
mod sqlite;
mod stores;
mod write;

use crate::model::{Endpoint, Micros, Subscription, SubscriptionStatus, Tenant};

pub use change::{ChangeKind, ResourceKind};

/// The SQL pieces the benchmark harness's database-only baselines replay,
/// taken from where the server builds them, so a baseline cannot drift
/// from the statements it stands for.
pub mod baseline_sql {
    use super::fast_create::parent;
    use super::revision;

    /// A PostgreSQL revision's position bits.
    pub const PG_REVISION_SHIFT: u32 = revision::PG_REVISION_SHIFT;

    /// The current PostgreSQL transaction's first revision.
    pub fn pg_revision() -> &'static str {
        revision::pg_base_sql()
    }

    /// `FROM ... WHERE` of the parent rule, for a tenant and endpoint given
    /// as SQL expressions (the tenant's etag compared with itself: a
    /// baseline cannot know each tenant's etag).
    pub fn parents(tenant_id: &str, endpoint_id: &str) -> String {
        let condition = parent::condition(&parent::Keys {
            tenant_id,
            endpoint_id,
            tenant_etag: "t.etag",
        });
        format!("{} WHERE {condition}", parent::FROM)
    }
}
pub use error::{RepoError, RepoResult};
pub use quota::{Quota, Quotas};
pub use rekey::{RekeyError, RekeyReport};
pub use sea::{DatabaseSettings, SeaRepository, is_postgres_url};
pub use sqlite::sqlite_memory_statistics_off;
pub use stores::{
    ChangeLogStore, CredentialStore, EndpointStore, EventTypeStore, Maintenance, OutboxStore,
    Repository, RequestStore, SnapshotStore, SubscriptionStore, TenantStore, VerificationStore,
};

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

/// One change-log row, with its resource as the change left it. A change
/// stored before the change log kept states carries its resource as the
/// read found it instead (none if it was gone by then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRecord {
    pub revision: Revision,
    pub tenant_id: Option<String>,
    /// tenant, credential, event_type, endpoint or subscription.
    pub resource_type: String,
    pub resource_key: String,
    /// UPSERT or DELETE.
    pub kind: String,
    /// For a subscription change, the subscription; None for other
    /// resources.
    pub subscription: Option<Subscription>,
    /// For an endpoint change, the endpoint; None for other resources.
    pub endpoint: Option<Endpoint>,
    /// For a credential change, whether the credential was unrevoked; None
    /// for other resources.
    pub credential_live: Option<bool>,
    /// For a tenant change, the tenant; None for other resources.
    pub tenant: Option<Tenant>,
    /// For an event-type change, the event type; None for other resources.
    pub event_type: Option<crate::model::EventType>,
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

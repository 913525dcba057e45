//! Resource records as the service layer sees them. Values here come either
//! from validated requests or from the database, so fields are plain types.
//! Times are microseconds since the Unix epoch (both backends agree on them).

use serde::{Deserialize, Serialize};

use crate::domain::Role;

pub use hookplane_core::Micros;
use hookplane_core::has_expired;

/// The current time truncated to microseconds.
pub fn now_micros() -> Micros {
    chrono::Utc::now().timestamp_micros()
}

/// How long a request_id (and the response it replays) is remembered: the
/// service reads idempotency records this far back and the sweeper purges
/// older ones.
pub const IDEMPOTENCY_RETENTION_MICROS: Micros = 24 * 3600 * 1_000_000;

/// A fresh opaque etag.
pub fn new_etag() -> String {
    hex::encode(crate::crypto::random_bytes::<8>())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TenantState {
    Active,
    Suspended,
}

impl TenantState {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantState::Active => "ACTIVE",
            TenantState::Suspended => "SUSPENDED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ACTIVE" => Some(TenantState::Active),
            "SUSPENDED" => Some(TenantState::Suspended),
            _ => None,
        }
    }

    /// Why a write under a tenant in this state is refused, if it is: the
    /// service checks before a write and the repository again inside it,
    /// with the same words.
    pub fn refuses_writes(self, tenant_id: &str) -> Option<String> {
        (self == TenantState::Suspended)
            .then(|| format!("tenant {tenant_id} is suspended; its resources cannot be changed"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TenantSettings {
    pub require_verification: bool,
    pub https_only: bool,
    pub default_ttl_seconds: i64,
    pub max_ttl_seconds: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub tenant_id: String,
    pub display_name: String,
    pub state: TenantState,
    pub settings: TenantSettings,
    pub create_time: Micros,
    pub update_time: Micros,
    pub delete_time: Option<Micros>,
    pub etag: String,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub api_id: String,
    pub tenant_id: Option<String>,
    pub role: Role,
    pub description: String,
    pub secret: String,
    pub create_time: Micros,
    pub update_time: Micros,
    pub revoke_time: Option<Micros>,
    pub etag: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("api_id", &self.api_id)
            .field("tenant_id", &self.tenant_id)
            .field("role", &self.role)
            .field("revoke_time", &self.revoke_time)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventType {
    pub name: String,
    pub description: String,
    pub schema_json: Option<String>,
    pub legacy_code: Option<i32>,
    pub deprecated: bool,
    pub create_time: Micros,
    pub update_time: Micros,
    pub etag: String,
}

/// A signing secret that is still accepted after a rotation, until `expire_time`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousSecret {
    pub secret: String,
    pub expire_time: Micros,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub tenant_id: String,
    pub endpoint_id: String,
    pub url: String,
    pub description: String,
    pub enabled: bool,
    pub secret: String,
    pub previous_secret: Option<PreviousSecret>,
    pub create_time: Micros,
    pub update_time: Micros,
    pub delete_time: Option<Micros>,
    pub etag: String,
}

impl Endpoint {
    /// The secrets receivers must accept at `now`, newest first: the current
    /// one, and the rotated-out one while its grace period lasts.
    pub fn live_secrets(&self, now: Micros) -> Vec<String> {
        let mut secrets = vec![self.secret.clone()];
        if let Some(p) = &self.previous_secret
            && !has_expired(p.expire_time, now)
        {
            secrets.push(p.secret.clone());
        }
        secrets
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("tenant_id", &self.tenant_id)
            .field("endpoint_id", &self.endpoint_id)
            .field("url", &self.url)
            .field("enabled", &self.enabled)
            .field("delete_time", &self.delete_time)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubscriptionStatus {
    Active,
    Disabled,
    Deleted,
    PendingVerification,
    Expired,
}

impl SubscriptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Active => "ACTIVE",
            SubscriptionStatus::Disabled => "DISABLED",
            SubscriptionStatus::Deleted => "DELETED",
            SubscriptionStatus::PendingVerification => "PENDING_VERIFICATION",
            SubscriptionStatus::Expired => "EXPIRED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ACTIVE" => SubscriptionStatus::Active,
            "DISABLED" => SubscriptionStatus::Disabled,
            "DELETED" => SubscriptionStatus::Deleted,
            "PENDING_VERIFICATION" => SubscriptionStatus::PendingVerification,
            "EXPIRED" => SubscriptionStatus::Expired,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub tenant_id: String,
    pub subscription_id: String,
    pub endpoint_id: String,
    pub name: Option<String>,
    pub event_types: Vec<String>,
    pub status: SubscriptionStatus,
    pub expire_time: Option<Micros>,
    pub create_time: Micros,
    pub update_time: Micros,
    pub etag: String,
}

//! Value types that validate when built. Every other layer receives these
//! instead of raw strings, so a value that exists is a value that is valid.
//!
//! This module depends on no other project module.

pub mod event_type;
pub mod ids;
pub mod secret;
pub mod ttl;
pub mod url;

pub use self::url::{CallbackUrl, UrlPolicy, is_forbidden_ip};
pub use event_type::{EventPattern, EventTypeName};
pub use ids::{EndpointId, SubscriptionId, TenantId};
pub use secret::SigningSecret;
pub use ttl::{MAX_TTL_SECONDS_CAP, resolve_ttl, validate_tenant_ttls};

/// Why a value was refused: one clear sentence WITHOUT the field name (the
/// caller attaches the field), e.g. "must be 2..63 characters of a-z, 0-9,
/// '_' and '-', starting with a letter or digit".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

impl InvalidValue {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

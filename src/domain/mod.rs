//! Value types that validate when built. Every other layer receives these
//! instead of raw strings, so a value that exists is a value that is valid.
//!
//! This module depends on no other module of this crate. The rules a
//! client library shares with the server (event-type names and patterns)
//! live in `hookplane-core` and are re-exported here.

pub mod forbidden_ip;
pub mod ids;
pub mod role;
/// Webhook signing secrets: shared with the client library, whose
/// dispatchers sign deliveries the same way.
pub use hookplane_core::secret;
pub mod ttl;
pub mod url;

pub use self::url::{CallbackUrl, UrlPolicy};
pub use forbidden_ip::is_forbidden_ip;
pub use hookplane_core::{EventPattern, EventTypeName, InvalidValue};
pub use ids::{EndpointId, SubscriptionId, TenantId};
pub use role::{Permission, PermissionSet, Role, ScopeRule};
pub use secret::SigningSecret;
pub use ttl::{MAX_TTL_SECONDS_CAP, resolve_ttl, validate_tenant_ttls};

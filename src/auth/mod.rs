//! Authentication and authorization: HMAC request signing, replay protection,
//! the interceptor that ties them together, and roles with their permissions.

pub mod cache;
pub mod caller;
pub mod interceptor;
pub mod nonce;
pub mod permissions;
pub mod rate_limit;
pub mod signature;

pub use cache::{CachedCredential, CredentialCache};
pub use caller::{Caller, RequestId, ScopeError};
pub use interceptor::{Authenticator, MethodPath, MethodPathLayer};
pub use nonce::{NonceCheck, NonceStore};
pub use permissions::{Permission, PermissionSet, Role, ScopeRule};
pub use rate_limit::RateLimit;

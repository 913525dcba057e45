//! Authentication and authorization: HMAC request signing, replay protection,
//! and the interceptor that ties them together. Roles and their permissions
//! are domain rules ([`crate::domain::Role`]).

pub mod cache;
pub mod caller;
pub mod headers;
pub mod interceptor;
pub mod method_path;
pub mod nonce;
pub mod rate_limit;
/// The request signature's rule, shared with the client library.
pub use hookplane_core::signing as signature;

pub use cache::{CachedCredential, CredentialCache};
pub use caller::{Caller, RequestId, ScopeError};
pub use interceptor::Authenticator;
pub use method_path::{MethodPath, MethodPathLayer};
pub use nonce::{NonceCheck, NonceStore};
pub use rate_limit::RateLimit;

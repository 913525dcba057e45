//! SeaORM entities, private to the repository.

pub mod change;
pub mod confirmation_token;
pub mod credential;
pub mod endpoint;
pub mod event_type;
pub mod idempotency;
pub mod nonce;
pub mod outbox;
pub mod subscription;
pub mod tenant;

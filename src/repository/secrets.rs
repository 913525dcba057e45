//! Secrets at rest: sealed with the keyring, bound to their row by the
//! associated data each kind of row uses.

use super::sea::SeaRepository;
use super::{RepoError, RepoResult};

impl SeaRepository {
    pub(super) fn seal(&self, secret: &str, aad: &str) -> Vec<u8> {
        self.key.encrypt(secret.as_bytes(), aad.as_bytes())
    }

    pub(super) fn open(&self, blob: &[u8], aad: &str) -> RepoResult<String> {
        let plain = self
            .key
            .decrypt(blob, aad.as_bytes())
            .map_err(|e| RepoError::Internal(Box::new(e)))?;
        String::from_utf8(plain).map_err(|e| RepoError::Internal(Box::new(e)))
    }
}

pub(super) fn credential_aad(api_id: &str) -> String {
    format!("credential:{api_id}")
}

pub(super) fn endpoint_aad(tenant_id: &str, endpoint_id: &str) -> String {
    format!("endpoint:{tenant_id}/{endpoint_id}")
}

/// The previous secret's, kept during a rotation's grace period.
pub(super) fn endpoint_previous_aad(tenant_id: &str, endpoint_id: &str) -> String {
    format!("{}:previous", endpoint_aad(tenant_id, endpoint_id))
}

pub(super) fn outbox_aad(id: &str) -> String {
    format!("outbox:{id}")
}

pub(super) fn idempotency_aad(api_id: &str, request_id: &str) -> String {
    format!("idempotency:{api_id}/{request_id}")
}

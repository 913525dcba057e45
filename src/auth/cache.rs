//! The in-memory credential cache the interceptor checks against.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use crate::domain::Role;
use crate::model::Credential;

/// A credential as the interceptor needs it.
#[derive(Clone)]
pub struct CachedCredential {
    pub api_id: String,
    /// HMAC key: the UTF-8 bytes of the secret.
    pub key: Vec<u8>,
    /// `None` for a platform-wide credential.
    pub tenant_id: Option<String>,
    pub role: Role,
    pub revoked: bool,
}

/// What the interceptor keeps of a stored credential; the start-up load,
/// the service after a write and the change-log follower all build it here.
impl From<&Credential> for CachedCredential {
    fn from(c: &Credential) -> Self {
        CachedCredential {
            api_id: c.api_id.clone(),
            key: c.secret.as_bytes().to_vec(),
            tenant_id: c.tenant_id.clone(),
            role: c.role,
            revoked: c.revoke_time.is_some(),
        }
    }
}

impl fmt::Debug for CachedCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedCredential")
            .field("api_id", &self.api_id)
            .field("key", &"[redacted]")
            .field("tenant_id", &self.tenant_id)
            .field("role", &self.role)
            .field("revoked", &self.revoked)
            .finish()
    }
}

/// Credentials by api id. Readers share the lock; writes (start-up load and
/// change-log updates) are rare.
#[derive(Default)]
pub struct CredentialCache {
    by_api_id: RwLock<HashMap<String, Arc<CachedCredential>>>,
}

impl CredentialCache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, api_id: &str) -> Option<Arc<CachedCredential>> {
        // The map is replaced or updated whole-entry, so a poisoned lock
        // still guards a consistent map.
        let map = self
            .by_api_id
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(api_id).cloned()
    }

    /// Inserts or replaces one credential, e.g. on creation or revocation.
    pub fn upsert(&self, credential: CachedCredential) {
        let mut map = self
            .by_api_id
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        map.insert(credential.api_id.clone(), Arc::new(credential));
    }

    pub fn remove(&self, api_id: &str) {
        let mut map = self
            .by_api_id
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        map.remove(api_id);
    }

    /// Replaces the whole contents, e.g. after a full reload from the store.
    pub fn replace_all(&self, credentials: Vec<CachedCredential>) {
        let fresh: HashMap<_, _> = credentials
            .into_iter()
            .map(|c| (c.api_id.clone(), Arc::new(c)))
            .collect();
        *self
            .by_api_id
            .write()
            .unwrap_or_else(PoisonError::into_inner) = fresh;
    }

    pub fn len(&self) -> usize {
        self.by_api_id
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for CredentialCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialCache")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(api_id: &str, revoked: bool) -> CachedCredential {
        CachedCredential {
            api_id: api_id.into(),
            key: b"super-secret-value".to_vec(),
            tenant_id: Some("acme".into()),
            role: Role::Reader,
            revoked,
        }
    }

    #[test]
    fn debug_never_shows_the_key() {
        let shown = format!("{:?}", credential("ak_1", false));
        assert!(!shown.contains("super-secret-value"), "{shown}");
        assert!(!shown.contains("115, 117, 112"), "{shown}"); // b"sup" as a byte list
        assert!(shown.contains("ak_1"));
    }

    #[test]
    fn upsert_replaces_and_replace_all_drops_missing() {
        let cache = CredentialCache::new();
        cache.upsert(credential("ak_1", false));
        cache.upsert(credential("ak_2", false));
        cache.upsert(credential("ak_1", true));
        assert_eq!(cache.len(), 2);
        assert!(cache.get("ak_1").is_some_and(|c| c.revoked));

        cache.replace_all(vec![credential("ak_3", false)]);
        assert!(cache.get("ak_1").is_none());
        assert!(cache.get("ak_3").is_some());
        assert_eq!(cache.len(), 1);

        cache.remove("ak_3");
        assert!(cache.is_empty());
    }
}

//! Opaque, tamper-evident page tokens: the keyset position of the last item
//! returned, bound to the listing (method and filters) it came from, and
//! signed with a key derived from the master key so every replica accepts it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};
use crate::model::Micros;

const TAG_LEN: usize = 16;

#[derive(Clone)]
pub struct PageTokens {
    key: Vec<u8>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Position {
    /// Creation time of the last item.
    t: Micros,
    /// Key of the last item.
    k: String,
}

impl PageTokens {
    pub fn new(key: &[u8]) -> Self {
        PageTokens { key: key.to_vec() }
    }

    fn tag(&self, scope: &str, payload: &[u8]) -> Vec<u8> {
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        mac.update(scope.as_bytes());
        mac.update(&[0]);
        mac.update(payload);
        mac.finalize().into_bytes()[..TAG_LEN].to_vec()
    }

    pub fn encode(&self, scope: &str, position: &(Micros, String)) -> String {
        let payload = serde_json::to_vec(&Position {
            t: position.0,
            k: position.1.clone(),
        })
        .unwrap_or_default();
        let mut bytes = self.tag(scope, &payload);
        bytes.extend_from_slice(&payload);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn decode(&self, scope: &str, token: &str) -> Result<(Micros, String)> {
        let invalid = || {
            Error::invalid(
                "page_token",
                "is not a token returned by this listing with the same filters",
            )
        };
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        if bytes.len() <= TAG_LEN {
            return Err(invalid());
        }
        let (tag, payload) = bytes.split_at(TAG_LEN);
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).map_err(|_| invalid())?;
        mac.update(scope.as_bytes());
        mac.update(&[0]);
        mac.update(payload);
        mac.verify_truncated_left(tag).map_err(|_| invalid())?;
        let position: Position = serde_json::from_slice(payload).map_err(|_| invalid())?;
        Ok((position.t, position.k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper_detection() {
        let tokens = PageTokens::new(b"key");
        let token = tokens.encode("tenants", &(42, "acme".into()));
        assert_eq!(
            tokens.decode("tenants", &token).unwrap(),
            (42, "acme".to_owned())
        );
        // Bound to its listing.
        assert!(tokens.decode("endpoints/acme", &token).is_err());
        // Another key (another deployment) refuses it.
        assert!(PageTokens::new(b"other").decode("tenants", &token).is_err());
        // Any flipped character is refused.
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        assert!(
            tokens
                .decode("tenants", &URL_SAFE_NO_PAD.encode(bytes))
                .is_err()
        );
        assert!(tokens.decode("tenants", "garbage!").is_err());
    }
}

//! Encryption of secrets at rest under a master key (AES-256-GCM), and the
//! master key itself.

mod key_file;

pub use key_file::load_or_create_key_file;
pub(crate) use key_file::{IfExists, write_private};

use std::io;
use std::path::PathBuf;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// First byte of every blob, so the format can change without guessing.
const FORMAT_V1: u8 = 0x01;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the master key must be 32 bytes, as standard base64 or 64 hex characters")]
    InvalidKey,
    #[error("the key file {path} does not hold a valid master key")]
    InvalidKeyFile { path: PathBuf },
    #[error("could not read or create the key file {path}")]
    KeyFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the encrypted value is too short to be valid")]
    Truncated,
    #[error("the encrypted value has unsupported format version {0}")]
    UnsupportedVersion(u8),
    #[error(
        "the encrypted value could not be decrypted: wrong key, wrong associated data, or tampered"
    )]
    Decrypt,
}

/// The 256-bit key that secrets are encrypted under.
#[derive(Clone)]
pub struct MasterKey([u8; KEY_LEN]);

impl MasterKey {
    /// A sub-key for another purpose (e.g. page tokens), so the master key
    /// itself is only ever used for encryption.
    pub fn derive(&self, label: &[u8]) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let mut mac = match <Hmac<sha2::Sha256> as hmac::KeyInit>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        mac.update(label);
        mac.finalize().into_bytes().into()
    }

    /// Parses standard base64 of exactly 32 bytes, or 64 hex characters.
    pub fn from_base64(encoded: &str) -> Result<Self, CryptoError> {
        let encoded = encoded.trim();
        // Decoder errors are dropped on purpose: they quote bytes of the key.
        let bytes =
            if encoded.len() == 2 * KEY_LEN && encoded.bytes().all(|b| b.is_ascii_hexdigit()) {
                hex::decode(encoded).map_err(|_| CryptoError::InvalidKey)?
            } else {
                STANDARD
                    .decode(encoded)
                    .map_err(|_| CryptoError::InvalidKey)?
            };
        let key =
            <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| CryptoError::InvalidKey)?;
        Ok(Self(key))
    }

    pub fn generate() -> Self {
        Self(random_bytes())
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Encrypts `plaintext` bound to `aad` (e.g. `credential:<api_id>`), so the
    /// result only decrypts with the same `aad`. Output:
    /// `0x01 || 12-byte random nonce || ciphertext || 16-byte tag`.
    ///
    /// # Panics
    ///
    /// Only for a plaintext over 64 GiB, which AES-GCM cannot encrypt under
    /// one nonce; the secrets stored here are a few hundred bytes at most.
    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = random_bytes();
        let ciphertext = self
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("AES-GCM refuses only plaintexts over 64 GiB");
        let mut blob = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        blob.push(FORMAT_V1);
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ciphertext);
        blob
    }

    /// Reverses [`encrypt`](Self::encrypt); fails unless key, `aad` and blob
    /// are exactly those it was made with.
    pub fn decrypt(&self, blob: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let (&version, rest) = blob.split_first().ok_or(CryptoError::Truncated)?;
        if version != FORMAT_V1 {
            return Err(CryptoError::UnsupportedVersion(version));
        }
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Truncated);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        self.cipher()
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| CryptoError::Decrypt)
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.0.into())
    }
}

/// The key secrets are encrypted under and, during a master-key rotation,
/// the one they may still be under: encrypts with the current key, decrypts
/// with either.
#[derive(Clone, Debug)]
pub struct Keyring {
    current: MasterKey,
    previous: Option<MasterKey>,
}

impl Keyring {
    pub fn new(current: MasterKey, previous: Option<MasterKey>) -> Self {
        Keyring { current, previous }
    }

    pub fn current(&self) -> &MasterKey {
        &self.current
    }

    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        self.current.encrypt(plaintext, aad)
    }

    pub fn decrypt(&self, blob: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match (self.current.decrypt(blob, aad), &self.previous) {
            (Err(CryptoError::Decrypt), Some(previous)) => previous.decrypt(blob, aad),
            (result, _) => result,
        }
    }
}

impl From<MasterKey> for Keyring {
    fn from(current: MasterKey) -> Self {
        Keyring::new(current, None)
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

/// `N` bytes from the operating system's CSPRNG.
///
/// # Panics
///
/// If the operating system cannot supply randomness, which leaves nothing
/// safe to do.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system random number generator failed");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypt_then_decrypt_round_trips() {
        let key = MasterKey::generate();
        let blob = key.encrypt(b"whsec-abc", b"credential:ak_1");
        assert_eq!(blob[0], FORMAT_V1);
        assert_eq!(blob.len(), 1 + NONCE_LEN + 9 + TAG_LEN);
        assert_eq!(
            key.decrypt(&blob, b"credential:ak_1").unwrap(),
            b"whsec-abc"
        );
        // A fresh nonce each time: equal plaintexts do not give equal blobs.
        assert_ne!(blob, key.encrypt(b"whsec-abc", b"credential:ak_1"));
    }

    #[test]
    fn a_keyring_encrypts_with_the_current_key_and_decrypts_with_either() {
        let (old, new) = (MasterKey::generate(), MasterKey::generate());
        let rotating = Keyring::new(new.clone(), Some(old.clone()));
        let under_old = old.encrypt(b"secret", b"aad");
        assert_eq!(rotating.decrypt(&under_old, b"aad").unwrap(), b"secret");
        let sealed = rotating.encrypt(b"secret", b"aad");
        assert_eq!(new.decrypt(&sealed, b"aad").unwrap(), b"secret");
        assert!(old.decrypt(&sealed, b"aad").is_err());
        let stranger = MasterKey::generate().encrypt(b"secret", b"aad");
        assert!(matches!(
            rotating.decrypt(&stranger, b"aad"),
            Err(CryptoError::Decrypt)
        ));
        assert!(Keyring::from(new).decrypt(&under_old, b"aad").is_err());
    }

    #[test]
    fn blob_from_another_row_or_key_does_not_decrypt() {
        let key = MasterKey::generate();
        let blob = key.encrypt(b"whsec-abc", b"credential:ak_1");
        assert!(matches!(
            key.decrypt(&blob, b"credential:ak_2"),
            Err(CryptoError::Decrypt)
        ));
        assert!(matches!(
            MasterKey::generate().decrypt(&blob, b"credential:ak_1"),
            Err(CryptoError::Decrypt)
        ));
    }

    #[test]
    fn tampered_blobs_are_refused() {
        let key = MasterKey::generate();
        let blob = key.encrypt(b"whsec-abc", b"aad");
        for i in 1..blob.len() {
            let mut tampered = blob.clone();
            tampered[i] ^= 0x01;
            assert!(
                matches!(key.decrypt(&tampered, b"aad"), Err(CryptoError::Decrypt)),
                "byte {i}"
            );
        }
        let mut wrong_version = blob.clone();
        wrong_version[0] = 0x02;
        assert!(matches!(
            key.decrypt(&wrong_version, b"aad"),
            Err(CryptoError::UnsupportedVersion(2))
        ));
        assert!(matches!(
            key.decrypt(&blob[..blob.len() - 1 - 9], b"aad"),
            Err(CryptoError::Truncated)
        ));
        assert!(matches!(
            key.decrypt(&[], b"aad"),
            Err(CryptoError::Truncated)
        ));
    }

    #[test]
    fn key_parses_from_base64_and_hex_only_at_32_bytes() {
        let key = MasterKey::generate();
        let again = MasterKey::from_base64(&key.to_base64()).unwrap();
        assert_eq!(again.0, key.0);
        let from_hex = MasterKey::from_base64(&hex::encode(key.0)).unwrap();
        assert_eq!(from_hex.0, key.0);

        assert!(MasterKey::from_base64(&STANDARD.encode([7u8; 31])).is_err());
        assert!(MasterKey::from_base64(&STANDARD.encode([7u8; 33])).is_err());
        assert!(MasterKey::from_base64("not base64 at all!").is_err());
        assert!(MasterKey::from_base64("").is_err());
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let key = MasterKey::generate();
        let shown = format!("{key:?}");
        assert_eq!(shown, "MasterKey([redacted])");
    }
}

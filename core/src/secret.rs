//! The per-endpoint secret that webhook deliveries are signed with.

use std::fmt;

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::InvalidValue;

const PREFIX: &str = "whsec_";
const GENERATED_KEY_LEN: usize = 32;

/// Clients write `whsec_` secrets by hand or copy them from other tools, which
/// do not agree on padding.
const LENIENT_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A webhook signing secret in Standard Webhooks form (`whsec_` + base64 key)
/// or, for receivers that already have one, any other string of printable
/// ASCII that is used as the key byte for byte.
#[derive(Clone)]
pub struct SigningSecret {
    secret: String,
    key: Vec<u8>,
    /// HMAC state with the key already absorbed: building it is the only step
    /// that can fail, so it happens in `parse` rather than on every signature.
    mac: Hmac<Sha256>,
}

impl SigningSecret {
    /// A fresh `whsec_` secret with 32 random bytes.
    ///
    /// # Panics
    /// If the operating system cannot provide randomness, in which case no
    /// secret can be made safely at all.
    pub fn generate() -> Self {
        let mut key = [0u8; GENERATED_KEY_LEN];
        getrandom::fill(&mut key).expect("the OS random number generator is unavailable");
        let secret = format!("{PREFIX}{}", STANDARD.encode(key));
        match Self::from_parts(secret, key.to_vec()) {
            Ok(secret) => secret,
            // HMAC accepts keys of any length, so this cannot happen.
            Err(err) => panic!("generated signing secret refused: {err}"),
        }
    }

    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let key = if let Some(encoded) = s.strip_prefix(PREFIX) {
            let key = LENIENT_STANDARD.decode(encoded).map_err(|_| {
                InvalidValue::new("must be valid standard base64 after the \"whsec_\" prefix")
            })?;
            if !(24..=64).contains(&key.len()) {
                return Err(InvalidValue::new(
                    "must encode 24..64 bytes after the \"whsec_\" prefix",
                ));
            }
            key
        } else {
            let printable = s.bytes().all(|b| (0x21..=0x7e).contains(&b));
            if !(16..=128).contains(&s.len()) || !printable {
                return Err(InvalidValue::new(
                    "must be \"whsec_\" followed by base64 of 24..64 bytes, or 16..128 printable ASCII characters without spaces",
                ));
            }
            s.as_bytes().to_vec()
        };
        Self::from_parts(s.to_owned(), key)
    }

    fn from_parts(secret: String, key: Vec<u8>) -> Result<Self, InvalidValue> {
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key)
            .map_err(|_| InvalidValue::new("must be a usable HMAC key"))?;
        Ok(Self { secret, key, mac })
    }

    /// The secret exactly as given or generated, for showing it to its owner
    /// once or storing it. Named so that every use stands out in review.
    pub fn expose(&self) -> &str {
        &self.secret
    }

    /// The HMAC key bytes.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The Standard Webhooks `webhook-signature` value for one delivery:
    /// `v1,` + base64 HMAC-SHA256 over `{msg_id}.{timestamp}.{body}`.
    pub fn sign_webhook(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

impl PartialEq for SigningSecret {
    fn eq(&self, other: &Self) -> bool {
        // The key and MAC state follow from the secret string.
        self.secret == other.secret
    }
}

impl Eq for SigningSecret {}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secret_round_trips() {
        let secret = SigningSecret::generate();
        let encoded = secret.expose().strip_prefix("whsec_").unwrap();
        assert_eq!(STANDARD.decode(encoded).unwrap(), secret.key());
        assert_eq!(secret.key().len(), 32);
        assert!(encoded.ends_with('='), "32 bytes encode with padding");
        assert_eq!(SigningSecret::parse(secret.expose()), Ok(secret.clone()));
        assert_ne!(SigningSecret::generate(), secret);
    }

    #[test]
    fn whsec_accepts_padded_and_unpadded_base64() {
        let key = [7u8; 32];
        let padded = format!("whsec_{}", STANDARD.encode(key));
        let unpadded = padded.trim_end_matches('=');
        assert_ne!(padded, unpadded);
        for s in [padded.as_str(), unpadded] {
            let secret = SigningSecret::parse(s).unwrap();
            assert_eq!(secret.key(), key);
            assert_eq!(secret.expose(), s);
        }
    }

    #[test]
    fn whsec_key_length_bounds() {
        let encode = |n: usize| format!("whsec_{}", STANDARD.encode(vec![1u8; n]));
        assert!(SigningSecret::parse(&encode(24)).is_ok());
        assert!(SigningSecret::parse(&encode(64)).is_ok());
        for n in [0, 23, 65] {
            assert_eq!(
                SigningSecret::parse(&encode(n)),
                Err(InvalidValue::new(
                    "must encode 24..64 bytes after the \"whsec_\" prefix"
                )),
                "{n} bytes"
            );
        }
    }

    #[test]
    fn whsec_refuses_invalid_base64() {
        let url_safe = format!("whsec_{}", "-_".repeat(20));
        for s in [
            "whsec_not base64 at all!!",
            "whsec_abc$defghijklmnopqrstuvwxyz12",
            &url_safe,
        ] {
            assert_eq!(
                SigningSecret::parse(s),
                Err(InvalidValue::new(
                    "must be valid standard base64 after the \"whsec_\" prefix"
                )),
                "{s}"
            );
        }
    }

    #[test]
    fn plain_secret_is_used_byte_for_byte() {
        let s = "my-receiver's~Secret!";
        let secret = SigningSecret::parse(s).unwrap();
        assert_eq!(secret.key(), s.as_bytes());
        assert_eq!(secret.expose(), s);
        assert!(SigningSecret::parse(&"x".repeat(16)).is_ok());
        assert!(SigningSecret::parse(&"x".repeat(128)).is_ok());
    }

    #[test]
    fn plain_secret_refusals() {
        let too_short = "x".repeat(15);
        let too_long = "x".repeat(129);
        for s in [
            "",
            &too_short,
            &too_long,
            "has a space in it ok",
            "tab\tinside-the-secret",
            "non-ascii-secretä-value",
            "control\u{7f}characters-here",
        ] {
            assert!(SigningSecret::parse(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn debug_is_redacted() {
        let secret = SigningSecret::parse("super-secret-value-123").unwrap();
        assert_eq!(format!("{secret:?}"), "SigningSecret(***)");
        assert_eq!(format!("{:?}", Some(&secret)), "Some(SigningSecret(***))");
    }

    #[test]
    fn signature_matches_an_independent_hmac() {
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"hello":"world"}"#;
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.key()).unwrap();
        mac.update(b"msg_1.-5.");
        mac.update(body);
        let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        assert_eq!(secret.sign_webhook("msg_1", -5, body), expected);
        // Reusing the keyed state must not carry data between signatures.
        assert_eq!(secret.sign_webhook("msg_1", -5, body), expected);
        assert_ne!(secret.sign_webhook("msg_2", -5, body), expected);
    }

    #[test]
    fn signature_matches_standard_webhooks_example() {
        // The example from the Standard Webhooks specification and its
        // reference libraries.
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            secret.sign_webhook(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}

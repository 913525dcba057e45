//! The canonical string to sign and HMAC-SHA256 over it. Pure functions, no I/O.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// First line of every string to sign; names the scheme so a signature made
/// for anything else can never verify here.
pub const ALGORITHM: &str = "HOOKPLANE-HMAC-SHA256";

/// Length of a hex-encoded HMAC-SHA256 signature.
pub const SIGNATURE_HEX_LEN: usize = 64;

/// The message that is signed: the algorithm name, api id, timestamp, nonce and
/// full gRPC method path, joined by `\n` with no trailing newline.
pub fn string_to_sign(api_id: &str, timestamp: &str, nonce: &str, method: &str) -> String {
    format!("{ALGORITHM}\n{api_id}\n{timestamp}\n{nonce}\n{method}")
}

/// Lowercase hex HMAC-SHA256 of [`string_to_sign`] under `key`.
pub fn sign(key: &[u8], api_id: &str, timestamp: &str, nonce: &str, method: &str) -> String {
    hex::encode(
        mac_of(key, api_id, timestamp, nonce, method)
            .finalize()
            .into_bytes(),
    )
}

/// Whether `signature_hex` is the signature of the request under `key`.
///
/// Anything but exactly 64 lowercase hex characters is rejected before any
/// comparison; the comparison itself is constant time. Nothing is allocated:
/// this runs for every call.
pub fn verify(
    key: &[u8],
    api_id: &str,
    timestamp: &str,
    nonce: &str,
    method: &str,
    signature_hex: &str,
) -> bool {
    if !is_lower_hex_signature(signature_hex) {
        return false;
    }
    let mut expected = [0u8; SIGNATURE_HEX_LEN / 2];
    if hex::decode_to_slice(signature_hex, &mut expected).is_err() {
        return false;
    }
    mac_of(key, api_id, timestamp, nonce, method)
        .verify_slice(&expected)
        .is_ok()
}

/// The MAC after [`string_to_sign`]'s bytes, fed piece by piece rather
/// than joined into a string first.
fn mac_of(key: &[u8], api_id: &str, timestamp: &str, nonce: &str, method: &str) -> HmacSha256 {
    let mut mac = keyed(key);
    mac.update(ALGORITHM.as_bytes());
    for part in [api_id, timestamp, nonce, method] {
        mac.update(b"\n");
        mac.update(part.as_bytes());
    }
    mac
}

/// Whether `s` has the shape of a signature: 64 characters of `[0-9a-f]`.
pub fn is_lower_hex_signature(s: &str) -> bool {
    s.len() == SIGNATURE_HEX_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn keyed(key: &[u8]) -> HmacSha256 {
    // HMAC hashes long keys and pads short ones, so no key length is refused.
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"s3cr3t-signing-key";
    const METHOD: &str = "/hookplane.v1.SubscriptionService/CreateSubscription";
    const NONCE: &str = "abcdefghijklmnop";

    #[test]
    fn string_to_sign_is_five_lines_without_trailing_newline() {
        assert_eq!(
            string_to_sign("ak_1", "1700000000", NONCE, METHOD),
            "HOOKPLANE-HMAC-SHA256\nak_1\n1700000000\nabcdefghijklmnop\n\
             /hookplane.v1.SubscriptionService/CreateSubscription"
        );
    }

    #[test]
    fn sign_matches_a_vector_computed_independently() {
        // printf 'HOOKPLANE-HMAC-SHA256\nak_1\n1700000000\nabcdefghijklmnop\n/hookplane.v1.SubscriptionService/CreateSubscription' \
        //   | openssl dgst -sha256 -hmac 's3cr3t-signing-key'
        let expected = "97677f7318b6b215ad04ed19a592d78a8a358e89658b50c60a6e1a6d822c02fd";
        assert_eq!(sign(KEY, "ak_1", "1700000000", NONCE, METHOD), expected);
        assert!(verify(KEY, "ak_1", "1700000000", NONCE, METHOD, expected));
    }

    #[test]
    fn the_mac_is_taken_over_exactly_the_string_to_sign() {
        let mut joined = keyed(KEY);
        joined.update(string_to_sign("ak_1", "1700000000", NONCE, METHOD).as_bytes());
        assert_eq!(
            hex::encode(joined.finalize().into_bytes()),
            sign(KEY, "ak_1", "1700000000", NONCE, METHOD)
        );
        // A field boundary moved by one character signs differently.
        assert_ne!(
            sign(KEY, "ak_1", "1700000000", NONCE, METHOD),
            sign(KEY, "ak_", "11700000000", NONCE, METHOD)
        );
    }

    #[test]
    fn verify_rejects_any_changed_field_or_key() {
        let sig = sign(KEY, "ak_1", "1700000000", NONCE, METHOD);
        assert!(!verify(
            b"other-key",
            "ak_1",
            "1700000000",
            NONCE,
            METHOD,
            &sig
        ));
        assert!(!verify(KEY, "ak_2", "1700000000", NONCE, METHOD, &sig));
        assert!(!verify(KEY, "ak_1", "1700000001", NONCE, METHOD, &sig));
        assert!(!verify(
            KEY,
            "ak_1",
            "1700000000",
            "abcdefghijklmnoq",
            METHOD,
            &sig
        ));
        assert!(!verify(
            KEY,
            "ak_1",
            "1700000000",
            NONCE,
            "/other/Method",
            &sig
        ));
    }

    #[test]
    fn verify_rejects_malformed_signatures() {
        let sig = sign(KEY, "ak_1", "1700000000", NONCE, METHOD);
        let upper = sig.to_uppercase();
        assert!(!verify(KEY, "ak_1", "1700000000", NONCE, METHOD, &upper));
        assert!(!verify(
            KEY,
            "ak_1",
            "1700000000",
            NONCE,
            METHOD,
            &sig[..62]
        ));
        assert!(!verify(
            KEY,
            "ak_1",
            "1700000000",
            NONCE,
            METHOD,
            &format!("{sig}00")
        ));
        assert!(!verify(KEY, "ak_1", "1700000000", NONCE, METHOD, ""));
    }
}

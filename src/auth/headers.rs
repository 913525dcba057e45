//! The headers a call carries as text: their names, the well-formedness of
//! the four signed ones, and the call's request id.

use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::auth::signature;
use crate::error::Error;

pub const API_ID_HEADER: &str = "x-api-id";
pub const TIMESTAMP_HEADER: &str = "x-api-timestamp";
pub const NONCE_HEADER: &str = "x-api-nonce";
pub const SIGNATURE_HEADER: &str = "x-api-signature";
pub const REQUEST_ID_HEADER: &str = "x-request-id";

const MAX_ID_LEN: usize = 128;
const NONCE_LEN: std::ops::RangeInclusive<usize> = 16..=128;

/// The four signed headers of a call, each present and well-formed.
pub(crate) struct SignedHeaders<'a> {
    pub(crate) api_id: &'a str,
    /// As sent: the signature covers the text.
    pub(crate) timestamp_text: &'a str,
    pub(crate) timestamp: i64,
    pub(crate) nonce: &'a str,
    pub(crate) signature_hex: &'a str,
}

impl<'a> SignedHeaders<'a> {
    /// The first missing or malformed header is named in the refusal.
    pub(crate) fn parse(metadata: &'a MetadataMap) -> Result<Self, Status> {
        let api_id = header(metadata, API_ID_HEADER)?;
        if !is_visible_ascii(api_id, MAX_ID_LEN) {
            return Err(malformed(
                API_ID_HEADER,
                "1 to 128 visible ASCII characters",
            ));
        }
        let timestamp_text = header(metadata, TIMESTAMP_HEADER)?;
        let timestamp = parse_timestamp(timestamp_text)
            .ok_or_else(|| malformed(TIMESTAMP_HEADER, "Unix seconds in decimal"))?;
        let nonce = header(metadata, NONCE_HEADER)?;
        if !is_valid_nonce(nonce) {
            return Err(malformed(
                NONCE_HEADER,
                "16 to 128 characters of [A-Za-z0-9_-]",
            ));
        }
        let signature_hex = header(metadata, SIGNATURE_HEADER)?;
        if !signature::is_lower_hex_signature(signature_hex) {
            return Err(malformed(SIGNATURE_HEADER, "64 lowercase hex characters"));
        }
        Ok(SignedHeaders {
            api_id,
            timestamp_text,
            timestamp,
            nonce,
            signature_hex,
        })
    }
}

/// The client's `x-request-id` if it is 1..=128 visible ASCII characters,
/// else a fresh UUID v4.
pub fn request_id(metadata: &MetadataMap) -> String {
    request_id_in(metadata.as_ref())
}

/// [`request_id`] over plain HTTP headers, as the tower layer sees them.
pub(crate) fn request_id_in(headers: &http::HeaderMap) -> String {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_visible_ascii(v, MAX_ID_LEN))
        .map_or_else(new_request_id, str::to_owned)
}

fn header<'a>(metadata: &'a MetadataMap, name: &'static str) -> Result<&'a str, Status> {
    let value = metadata
        .get(name)
        .ok_or_else(|| Status::from(Error::Unauthenticated(format!("missing {name} header"))))?;
    value
        .to_str()
        .map_err(|_| Error::Unauthenticated(format!("{name} header is not valid ASCII")).into())
}

fn malformed(name: &str, expected: &str) -> Status {
    Error::Unauthenticated(format!("{name} header must be {expected}")).into()
}

fn is_visible_ascii(s: &str, max_len: usize) -> bool {
    (1..=max_len).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}

fn parse_timestamp(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn is_valid_nonce(s: &str) -> bool {
    NONCE_LEN.contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A random (version 4) UUID for a call that brought no request id. From a
/// thread-local generator: request ids need to be unique, not secret, and
/// the OS generator cost a system call per call.
fn new_request_id() -> String {
    uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes())
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_is_taken_from_metadata_only_when_valid() {
        let mut md = MetadataMap::new();
        md.insert(REQUEST_ID_HEADER, "abc-123".parse().unwrap());
        assert_eq!(request_id(&md), "abc-123");
        md.insert(REQUEST_ID_HEADER, "has space".parse().unwrap());
        assert!(uuid::Uuid::parse_str(&request_id(&md)).is_ok());
        md.insert(REQUEST_ID_HEADER, "x".repeat(129).parse().unwrap());
        assert!(uuid::Uuid::parse_str(&request_id(&md)).is_ok());
    }
}

//! The properties of the parsers that take caller input, one function per
//! parser. Each takes arbitrary input, must never panic, and asserts what
//! must hold of the answer. The same functions are driven by proptest in
//! the normal suite (`tests/properties/main.rs`) and by libFuzzer in
//! `fuzz/` (`cargo fuzz run <target>`), so the two never disagree.

use std::sync::Arc;

use hookplane::auth::cache::{CachedCredential, CredentialCache};
use hookplane::auth::interceptor::Authenticator;
use hookplane::auth::nonce::NonceStore;
use hookplane::domain::Role;
use hookplane::domain::{CallbackUrl, EventPattern, UrlPolicy, is_forbidden_ip};
use hookplane::service::page_token::PageTokens;
use tonic::Code;
use tonic::metadata::{MetadataMap, MetadataValue};

/// A plain reading of the pattern rules, to check the matcher against: a
/// `*` segment matches one non-empty segment, or, as the last segment, one
/// or more.
fn reference_match(pattern: &[&str], event: &[&str]) -> bool {
    match (pattern, event) {
        ([], []) => true,
        (["*"], rest) => !rest.is_empty() && rest.iter().all(|s| !s.is_empty()),
        (["*", p_rest @ ..], [e, e_rest @ ..]) => !e.is_empty() && reference_match(p_rest, e_rest),
        ([p, p_rest @ ..], [e, e_rest @ ..]) => p == e && reference_match(p_rest, e_rest),
        _ => false,
    }
}

/// Event patterns: parsing is stable, and matching agrees with the rules.
pub fn pattern(text: &str, event: &str) {
    let Ok(pattern) = EventPattern::parse(text) else {
        return;
    };
    assert_eq!(pattern.as_str(), text, "a pattern keeps its text");
    let again = EventPattern::parse(pattern.as_str()).expect("a parsed pattern parses again");
    assert_eq!(again, pattern);
    let segments: Vec<&str> = text.split('.').collect();
    assert_eq!(pattern.is_wildcard(), segments.contains(&"*"));
    for candidate in [event, text.replace('*', "x").as_str()] {
        let expected = reference_match(&segments, &candidate.split('.').collect::<Vec<_>>());
        assert_eq!(
            pattern.matches(candidate),
            expected,
            "{text:?} against {candidate:?}"
        );
        if expected {
            assert!(candidate.starts_with(pattern.literal_prefix()));
        }
    }
}

/// Callback URLs: parsing never panics, a parsed URL parses again to
/// itself, and a URL accepted without private networks names no internal
/// address literally.
pub fn url(text: &str) {
    for allow_private in [false, true] {
        for https_only in [false, true] {
            let policy = UrlPolicy {
                https_only,
                allow_private,
            };
            let Ok(url) = CallbackUrl::parse(text, policy) else {
                continue;
            };
            let again = CallbackUrl::parse(url.as_str(), policy)
                .expect("a stored URL is accepted again under the same policy");
            assert_eq!(again, url);
            assert!(url.as_str().starts_with("https://") || !https_only);
            if !allow_private {
                let host = url.host_str().trim_start_matches('[').trim_end_matches(']');
                if let Ok(ip) = host.parse() {
                    assert!(!is_forbidden_ip(ip), "{text:?} names an internal address");
                }
            }
        }
    }
}

/// Page tokens: a token decodes to its position in its own listing only;
/// anything else is refused as INVALID_ARGUMENT naming page_token.
pub fn page_token(scope: &str, time: i64, key: &str, garbage: &str) {
    let tokens = PageTokens::new(b"a page token key of the test");
    let token = tokens.encode(scope, &(time, key.to_owned()));
    assert_eq!(
        tokens
            .decode(scope, &token)
            .expect("a token decodes in its own listing"),
        (time, key.to_owned())
    );
    let other_scope = format!("{scope}/other");
    assert!(
        tokens.decode(&other_scope, &token).is_err(),
        "a token is bound to its listing"
    );
    if garbage != token {
        match tokens.decode(scope, garbage) {
            // Only a token this listing issued decodes (libFuzzer replays
            // tokens it saw in earlier runs under the same key).
            Ok(position) => assert_eq!(
                tokens.encode(scope, &position),
                garbage,
                "{garbage:?} decoded to {position:?} but was never issued"
            ),
            Err(e) => {
                let status = tonic::Status::from(e);
                assert_eq!(status.code(), Code::InvalidArgument);
                assert!(status.message().starts_with("page_token"));
            }
        }
    }
}

const METHOD: &str = "/hookplane.v1.TenantService/GetTenant";
const NOW: i64 = 1_800_000_000;
const SECRET: &str = "a-signing-secret-of-the-test";

fn authenticator() -> Authenticator {
    let cache = Arc::new(CredentialCache::new());
    cache.upsert(CachedCredential {
        api_id: "ak_test".to_owned(),
        key: SECRET.as_bytes().to_vec(),
        tenant_id: None,
        role: Role::Reader,
        revoked: false,
    });
    Authenticator::new(cache, Arc::new(NonceStore::new(300, 1 << 16)), 300)
}

/// Signature metadata: any header values are refused as UNAUTHENTICATED
/// unless they are a valid signature, which passes once; the answer never
/// echoes more than a bounded part of what was sent.
pub fn signature_metadata(api_id: &str, timestamp: &str, nonce: &str, signature: &str) {
    let auth = authenticator();
    let mut metadata = MetadataMap::new();
    for (key, value) in [
        ("x-api-id", api_id),
        ("x-api-timestamp", timestamp),
        ("x-api-nonce", nonce),
        ("x-api-signature", signature),
    ] {
        if let Ok(value) = MetadataValue::try_from(value) {
            metadata.insert(key, value);
        }
    }
    match auth.check(METHOD, &metadata, "request-1", NOW) {
        Ok(_) => {
            let expected = hookplane::auth::signature::sign(
                SECRET.as_bytes(),
                api_id,
                timestamp,
                nonce,
                METHOD,
            );
            assert_eq!(signature, expected, "only the right signature passes");
            let replay = auth.check(METHOD, &metadata, "request-2", NOW);
            assert_eq!(replay.map(drop).unwrap_err().code(), Code::Unauthenticated);
        }
        Err(status) => {
            assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
            assert!(status.message().len() < 300, "{status:?}");
        }
    }
    // The same values signed correctly pass, whenever they are well formed.
    let signed =
        hookplane::auth::signature::sign(SECRET.as_bytes(), api_id, timestamp, nonce, METHOD);
    if let Ok(value) = MetadataValue::try_from(signed.as_str()) {
        metadata.insert("x-api-signature", value);
        let fresh = authenticator();
        if let Err(status) = fresh.check(METHOD, &metadata, "request-3", NOW) {
            assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        }
    }
}

//! The tonic interceptor that authenticates every call: the timestamp
//! window, the signature against the cached credential, the rate limit and
//! the nonce, in that order; on success the [`Caller`] goes into the request.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Status};

use crate::auth::cache::CredentialCache;
use crate::auth::caller::{Caller, RequestId};
use crate::auth::headers::{
    NONCE_HEADER, REQUEST_ID_HEADER, SignedHeaders, TIMESTAMP_HEADER, request_id,
};
use crate::auth::method_path::MethodPath;
use crate::auth::nonce::{NonceCheck, NonceStore};
use crate::auth::rate_limit::RateLimit;
use crate::auth::signature;
use crate::error::Error;

/// One message for unknown, revoked and wrongly signed, so a caller cannot
/// learn which api ids exist.
const INVALID_CREDENTIALS: &str = "invalid credentials or signature";
/// Signed in place of a real key for unknown api ids, so that they cost the
/// same HMAC work as known ones.
const DUMMY_KEY: &[u8] = b"hookplane-dummy-key-for-unknown-api-ids";

/// Checks the signed metadata of every call against the credential cache,
/// the rate limit and the nonce store; on success puts a [`Caller`] into
/// the request extensions.
#[derive(Clone)]
pub struct Authenticator {
    cache: Arc<CredentialCache>,
    nonces: Arc<NonceStore>,
    window_secs: i64,
    rate_limit: Option<Arc<RateLimit>>,
}

impl Authenticator {
    /// `window_secs` is how far a request timestamp may be from server time.
    pub fn new(cache: Arc<CredentialCache>, nonces: Arc<NonceStore>, window_secs: i64) -> Self {
        Self {
            cache,
            nonces,
            window_secs,
            rate_limit: None,
        }
    }

    /// Counts every authenticated call against `limit`.
    pub fn with_rate_limit(mut self, limit: Option<RateLimit>) -> Self {
        self.rate_limit = limit.map(Arc::new);
        self
    }

    /// Authenticates a call to `method` at server time `now` (Unix seconds).
    pub fn check(
        &self,
        method: &str,
        metadata: &MetadataMap,
        request_id: &str,
        now: i64,
    ) -> Result<Caller, Status> {
        let SignedHeaders {
            api_id,
            timestamp_text,
            timestamp,
            nonce,
            signature_hex,
        } = SignedHeaders::parse(metadata)?;

        if now.abs_diff(timestamp) > self.window_secs.unsigned_abs() {
            return Err(Error::Unauthenticated(format!(
                "{TIMESTAMP_HEADER} is outside the allowed window of {} seconds",
                self.window_secs
            ))
            .into());
        }

        let credential = self.cache.get(api_id);
        let key = credential
            .as_deref()
            .map_or(DUMMY_KEY, |c| c.key.as_slice());
        let signature_ok =
            signature::verify(key, api_id, timestamp_text, nonce, method, signature_hex);
        let credential = match credential {
            Some(c) if signature_ok && !c.revoked => c,
            _ => return Err(Error::Unauthenticated(INVALID_CREDENTIALS.into()).into()),
        };

        // Only after the signature holds, so nobody can spend another
        // caller's budget or burn its nonces; before the nonce, so refused
        // calls take no room in the store.
        if let Some(limit) = &self.rate_limit
            && let Err(retry_after) = limit.check(&credential.api_id)
        {
            return Err(Error::RateLimited {
                message: format!(
                    "this credential's rate limit is reached: --rate-limit {} calls per second, --rate-limit-burst {}; retry in {} ms",
                    limit.rate(),
                    limit.burst(),
                    retry_after.as_millis().max(1)
                ),
                retry_after,
            }
            .into());
        }
        match self.nonces.check_and_insert(api_id, nonce, timestamp, now) {
            NonceCheck::Fresh => {}
            NonceCheck::Replay => {
                return Err(Error::Unauthenticated(format!(
                    "{NONCE_HEADER} has already been used"
                ))
                .into());
            }
            NonceCheck::Full => {
                return Err(Error::ResourceExhausted(format!(
                    "this server remembers its maximum of {} recent nonces (--max-nonces); retry later",
                    self.nonces.max_entries()
                ))
                .into());
            }
        }

        Ok(Caller {
            api_id: credential.api_id.clone(),
            tenant_id: credential.tenant_id.clone(),
            role: credential.role,
            request_id: request_id.to_owned(),
            nonce: nonce.to_owned(),
            timestamp,
        })
    }
}

impl tonic::service::Interceptor for Authenticator {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let request_id = request_id(req.metadata());
        req.extensions_mut().insert(RequestId(request_id.clone()));

        let result = match req.extensions().get::<MethodPath>() {
            Some(MethodPath(method)) => self
                .check(method, req.metadata(), &request_id, unix_now())
                .inspect_err(|status| {
                    tracing::debug!(
                        request_id,
                        method,
                        reason = status.message(),
                        "request failed authentication"
                    );
                }),
            None => {
                tracing::error!(
                    request_id,
                    "MethodPathLayer is not installed; refusing the request"
                );
                Err(Error::internal("MethodPathLayer is not installed").into())
            }
        };

        match result {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                Ok(req)
            }
            Err(mut status) => {
                if let Ok(value) = MetadataValue::try_from(request_id.as_str()) {
                    status.metadata_mut().insert(REQUEST_ID_HEADER, value);
                }
                Err(status)
            }
        }
    }
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("window_secs", &self.window_secs)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use tonic::Code;
    use tonic::service::Interceptor;

    use super::*;
    use crate::auth::cache::CachedCredential;
    use crate::auth::headers::{API_ID_HEADER, SIGNATURE_HEADER};
    use crate::domain::Role;

    const NOW: i64 = 1_700_000_000;
    const WINDOW: i64 = 300;
    const METHOD: &str = "/hookplane.v1.TenantService/GetTenant";
    const SECRET: &str = "whsec-very-secret-value";
    const NONCE: &str = "nonce-0123456789";

    fn authenticator() -> Authenticator {
        let cache = Arc::new(CredentialCache::new());
        cache.upsert(credential("ak_live", false));
        cache.upsert(credential("ak_revoked", true));
        Authenticator::new(cache, Arc::new(NonceStore::new(WINDOW, 1000)), WINDOW)
    }

    fn credential(api_id: &str, revoked: bool) -> CachedCredential {
        CachedCredential {
            api_id: api_id.into(),
            key: SECRET.as_bytes().to_vec(),
            tenant_id: Some("acme".into()),
            role: Role::TenantAdmin,
            revoked,
        }
    }

    fn signed(api_id: &str, ts: i64, nonce: &str) -> MetadataMap {
        let ts = ts.to_string();
        let sig = signature::sign(SECRET.as_bytes(), api_id, &ts, nonce, METHOD);
        let mut md = MetadataMap::new();
        md.insert(API_ID_HEADER, api_id.parse().unwrap());
        md.insert(TIMESTAMP_HEADER, ts.parse().unwrap());
        md.insert(NONCE_HEADER, nonce.parse().unwrap());
        md.insert(SIGNATURE_HEADER, sig.parse().unwrap());
        md
    }

    fn rejection(auth: &Authenticator, md: &MetadataMap) -> String {
        let status = auth.check(METHOD, md, "req-1", NOW).unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert!(!status.message().contains(SECRET));
        status.message().to_owned()
    }

    #[test]
    fn good_signature_yields_the_caller() {
        let caller = authenticator()
            .check(METHOD, &signed("ak_live", NOW, NONCE), "req-1", NOW)
            .unwrap();
        assert_eq!(caller.api_id, "ak_live");
        assert_eq!(caller.tenant_id.as_deref(), Some("acme"));
        assert_eq!(caller.role, Role::TenantAdmin);
        assert_eq!(caller.request_id, "req-1");
        assert_eq!(caller.nonce, NONCE);
        assert_eq!(caller.timestamp, NOW);
    }

    #[test]
    fn each_missing_header_is_named() {
        let auth = authenticator();
        for name in [
            API_ID_HEADER,
            TIMESTAMP_HEADER,
            NONCE_HEADER,
            SIGNATURE_HEADER,
        ] {
            let mut md = signed("ak_live", NOW, NONCE);
            md.remove(name);
            assert_eq!(rejection(&auth, &md), format!("missing {name} header"));
        }
    }

    #[test]
    fn each_malformed_header_is_named() {
        let auth = authenticator();
        let cases = [
            (API_ID_HEADER, "ak live"),
            (API_ID_HEADER, &"a".repeat(129)),
            (TIMESTAMP_HEADER, "+1700000000"),
            (TIMESTAMP_HEADER, "1700000000.5"),
            (TIMESTAMP_HEADER, "99999999999999999999"),
            (NONCE_HEADER, "short"),
            (NONCE_HEADER, "nonce.0123456789"),
            (NONCE_HEADER, &"n".repeat(129)),
            (SIGNATURE_HEADER, &"A".repeat(64)),
            (SIGNATURE_HEADER, &"a".repeat(63)),
        ];
        for (name, value) in cases {
            let mut md = signed("ak_live", NOW, NONCE);
            md.insert(name, value.parse().unwrap());
            let message = rejection(&auth, &md);
            assert!(
                message.starts_with(&format!("{name} header must be")),
                "{name}={value}: {message}"
            );
        }
    }

    #[test]
    fn wrong_unknown_and_revoked_all_get_the_same_message() {
        let auth = authenticator();

        let mut wrong = signed("ak_live", NOW, NONCE);
        wrong.insert(SIGNATURE_HEADER, "0".repeat(64).parse().unwrap());
        let unknown = signed("ak_unknown", NOW, NONCE);
        let revoked = signed("ak_revoked", NOW, NONCE);

        for md in [&wrong, &unknown, &revoked] {
            assert_eq!(rejection(&auth, md), INVALID_CREDENTIALS);
        }
    }

    #[test]
    fn signature_is_bound_to_the_method() {
        let auth = authenticator();
        let md = signed("ak_live", NOW, NONCE);
        let status = auth
            .check(
                "/hookplane.v1.TenantService/DeleteTenant",
                &md,
                "req-1",
                NOW,
            )
            .unwrap_err();
        assert_eq!(status.message(), INVALID_CREDENTIALS);
    }

    #[test]
    fn replayed_nonce_is_refused() {
        let auth = authenticator();
        let md = signed("ak_live", NOW, NONCE);
        assert!(auth.check(METHOD, &md, "req-1", NOW).is_ok());
        assert_eq!(rejection(&auth, &md), "x-api-nonce has already been used");
    }

    #[test]
    fn over_the_rate_limit_is_resource_exhausted_with_retry_info() {
        use tonic_types::StatusExt;
        // One call at once, then one per millisecond.
        let auth = authenticator().with_rate_limit(RateLimit::new(1000, Some(1)));
        assert!(
            auth.check(METHOD, &signed("ak_live", NOW, NONCE), "r", NOW)
                .is_ok()
        );
        let refused = signed("ak_live", NOW, "nonce-rate-00002");
        let status = auth.check(METHOD, &refused, "r", NOW).unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            status.message().contains("--rate-limit"),
            "{}",
            status.message()
        );
        let retry = status.get_details_retry_info().expect("RetryInfo");
        let delay = retry.retry_delay.expect("a delay");
        assert!(delay > std::time::Duration::ZERO && delay <= std::time::Duration::from_millis(1));
        // The refused call's nonce was not spent: once the delay has
        // passed, the same request goes through.
        std::thread::sleep(delay);
        assert!(auth.check(METHOD, &refused, "r", NOW).is_ok());
    }

    #[test]
    fn a_full_nonce_store_is_resource_exhausted() {
        let cache = Arc::new(CredentialCache::new());
        cache.upsert(credential("ak_live", false));
        let auth = Authenticator::new(cache, Arc::new(NonceStore::new(WINDOW, 1)), WINDOW);
        assert!(
            auth.check(METHOD, &signed("ak_live", NOW, NONCE), "r", NOW)
                .is_ok()
        );
        let status = auth
            .check(
                METHOD,
                &signed("ak_live", NOW, "nonce-other-0001"),
                "r",
                NOW,
            )
            .unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            status.message().contains("--max-nonces"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn failed_signature_does_not_consume_the_nonce() {
        let auth = authenticator();
        let mut forged = signed("ak_live", NOW, NONCE);
        forged.insert(SIGNATURE_HEADER, "0".repeat(64).parse().unwrap());
        rejection(&auth, &forged);
        assert!(
            auth.check(METHOD, &signed("ak_live", NOW, NONCE), "req-1", NOW)
                .is_ok()
        );
    }

    #[test]
    fn timestamps_outside_the_window_are_refused() {
        let auth = authenticator();
        let expected = "x-api-timestamp is outside the allowed window of 300 seconds";
        assert_eq!(
            rejection(&auth, &signed("ak_live", NOW - 301, NONCE)),
            expected
        );
        assert_eq!(
            rejection(&auth, &signed("ak_live", NOW + 301, NONCE)),
            expected
        );
        assert_eq!(
            rejection(&auth, &signed("ak_live", i64::MIN, NONCE)),
            expected
        );
        assert!(
            auth.check(METHOD, &signed("ak_live", NOW - 300, NONCE), "r", NOW)
                .is_ok()
        );
        assert!(
            auth.check(
                METHOD,
                &signed("ak_live", NOW + 300, "nonce-other-0001"),
                "r",
                NOW
            )
            .is_ok()
        );
    }

    #[test]
    fn interceptor_inserts_request_id_and_tags_errors_with_it() {
        let mut auth = authenticator();
        let mut req = Request::new(());
        req.metadata_mut()
            .insert(REQUEST_ID_HEADER, "client-req-7".parse().unwrap());
        req.extensions_mut().insert(MethodPath(METHOD.into()));

        let status = auth.call(req).unwrap_err();
        assert_eq!(status.message(), "missing x-api-id header");
        assert_eq!(
            status.metadata().get(REQUEST_ID_HEADER).unwrap(),
            "client-req-7"
        );
    }

    #[test]
    fn interceptor_refuses_without_method_path() {
        let mut auth = authenticator();
        let mut req = Request::new(());
        *req.metadata_mut() = signed("ak_live", unix_now(), NONCE);
        let status = auth.call(req).unwrap_err();
        assert_eq!(status.code(), Code::Internal);
    }

    #[test]
    fn interceptor_puts_caller_and_request_id_into_extensions() {
        let mut auth = authenticator();
        let mut req = Request::new(());
        *req.metadata_mut() = signed("ak_live", unix_now(), NONCE);
        req.extensions_mut().insert(MethodPath(METHOD.into()));

        let req = auth.call(req).unwrap();
        let caller = req.extensions().get::<Caller>().unwrap();
        let RequestId(id) = req.extensions().get::<RequestId>().unwrap();
        assert_eq!(caller.api_id, "ak_live");
        assert_eq!(&caller.request_id, id);
        assert!(uuid::Uuid::parse_str(id).is_ok(), "generated id {id}");
    }
}

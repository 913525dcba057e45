//! Signing every call: a tower layer over the channel that adds the
//! contract's `x-api-*` headers, with a fresh nonce per call.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use hookplane_core::signing;
use http::HeaderValue;

/// An API credential: its id and secret. The secret never appears in
/// `Debug` output.
#[derive(Clone)]
pub struct Credential {
    api_id: String,
    secret: String,
}

impl Credential {
    pub fn new(api_id: impl Into<String>, secret: impl Into<String>) -> Self {
        Credential {
            api_id: api_id.into(),
            secret: secret.into(),
        }
    }

    pub fn api_id(&self) -> &str {
        &self.api_id
    }

    /// The headers of one call to `method` (its full gRPC path), signed now
    /// with a fresh nonce.
    pub fn sign(&self, method: &str, headers: &mut http::HeaderMap) {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .to_string();
        let nonce = nonce();
        let signature = signing::sign(
            self.secret.as_bytes(),
            &self.api_id,
            &timestamp,
            &nonce,
            method,
        );
        for (name, value) in [
            ("x-api-id", self.api_id.as_str()),
            ("x-api-timestamp", &timestamp),
            ("x-api-nonce", &nonce),
            ("x-api-signature", &signature),
        ] {
            // Ids, digits and hex: always valid header values. A credential
            // id that is not would be refused by the server anyway.
            if let Ok(mut value) = HeaderValue::from_str(value) {
                // Kept out of HTTP/2 header compression tables and logs.
                value.set_sensitive(name == "x-api-signature");
                headers.insert(name, value);
            }
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("api_id", &self.api_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// 32 hex characters of OS randomness: never reused in practice, and
/// within the contract's 16..128 of `[A-Za-z0-9_-]`.
fn nonce() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: fall back to the clock and a counter, still
        // unique within this process.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        bytes[..8].copy_from_slice(&t.to_le_bytes());
        bytes[8..].copy_from_slice(&n.to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A gRPC transport that signs each request with a credential.
#[derive(Clone, Debug)]
pub struct Signed<S> {
    inner: S,
    credential: Arc<Credential>,
}

impl<S> Signed<S> {
    pub fn new(inner: S, credential: Credential) -> Self {
        Signed {
            inner,
            credential: Arc::new(credential),
        }
    }
}

impl<S, B> tower::Service<http::Request<B>> for Signed<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().to_owned();
        self.credential.sign(&method, request.headers_mut());
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_call_gets_a_fresh_nonce_and_a_signature_the_server_accepts() {
        let credential = Credential::new("ak_1", "s3cret-s3cret-s3cret");
        let method = "/hookplane.v1.SubscriptionService/ResolveSubscribers";
        let (mut a, mut b) = (http::HeaderMap::new(), http::HeaderMap::new());
        credential.sign(method, &mut a);
        credential.sign(method, &mut b);
        let get = |h: &http::HeaderMap, k: &str| h[k].to_str().unwrap().to_owned();
        assert_ne!(get(&a, "x-api-nonce"), get(&b, "x-api-nonce"));
        assert_eq!(get(&a, "x-api-nonce").len(), 32);
        assert!(signing::verify(
            b"s3cret-s3cret-s3cret",
            "ak_1",
            &get(&a, "x-api-timestamp"),
            &get(&a, "x-api-nonce"),
            method,
            &get(&a, "x-api-signature"),
        ));
        assert!(a["x-api-signature"].is_sensitive());
        assert!(!format!("{credential:?}").contains("s3cret"));
    }
}

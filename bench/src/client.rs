//! A signing gRPC client, as real callers build one: a fresh nonce per call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use hookplane::proto::subscription_service_client::SubscriptionServiceClient;

#[derive(Clone)]
pub struct Signer {
    api_id: String,
    secret: String,
    /// Nonces are this process's random prefix and a counter: unique without
    /// asking the operating system for randomness on every call.
    nonce_prefix: Arc<str>,
    nonces: Arc<AtomicU64>,
}

impl Signer {
    pub fn new(api_id: &str, secret: &str) -> Self {
        Self {
            api_id: api_id.into(),
            secret: secret.into(),
            nonce_prefix: hex::encode(hookplane::crypto::random_bytes::<8>()).into(),
            nonces: Arc::new(AtomicU64::new(0)),
        }
    }

    fn next_nonce(&self) -> String {
        let n = self.nonces.fetch_add(1, Ordering::Relaxed);
        format!("{}{n:016x}", self.nonce_prefix)
    }
}

impl tonic::service::Interceptor for Signer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let method = request
            .extensions()
            .get::<tonic::GrpcMethod>()
            .map(|m| format!("/{}/{}", m.service(), m.method()))
            .unwrap_or_default();
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .to_string();
        let nonce = self.next_nonce();
        let signature = hookplane::auth::signature::sign(
            self.secret.as_bytes(),
            &self.api_id,
            &timestamp,
            &nonce,
            &method,
        );
        let md = request.metadata_mut();
        // Values unique to one call are sent as never-indexed literals
        // (RFC 7541, 7.1.3): the signature is a credential, and neither value
        // would ever be reused from HPACK's table, only push useful entries
        // out of it, on both ends.
        for (key, value, unique) in [
            ("x-api-id", self.api_id.as_str(), false),
            ("x-api-timestamp", timestamp.as_str(), false),
            ("x-api-nonce", nonce.as_str(), true),
            ("x-api-signature", signature.as_str(), true),
        ] {
            let mut value: tonic::metadata::MetadataValue<_> = value
                .parse()
                .map_err(|_| tonic::Status::internal("bad header"))?;
            value.set_sensitive(unique);
            md.insert(key, value);
        }
        Ok(request)
    }
}

pub type Subscriptions = SubscriptionServiceClient<InterceptedService<Channel, Signer>>;

/// `connections` HTTP/2 connections to `addr`.
pub async fn channels(
    addr: std::net::SocketAddr,
    connections: usize,
) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::new();
    for _ in 0..connections.max(1) {
        out.push(
            Endpoint::from_shared(format!("http://{addr}"))?
                .connect()
                .await?,
        );
    }
    Ok(out)
}

//! A signing gRPC client, as real callers build one: a fresh nonce per call.

use std::time::{SystemTime, UNIX_EPOCH};

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use hookplane::proto::subscription_service_client::SubscriptionServiceClient;

#[derive(Clone)]
pub struct Signer {
    pub api_id: String,
    pub secret: String,
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
        let nonce = hex::encode(hookplane::crypto::random_bytes::<16>());
        let signature = hookplane::auth::signature::sign(
            self.secret.as_bytes(),
            &self.api_id,
            &timestamp,
            &nonce,
            &method,
        );
        let md = request.metadata_mut();
        for (key, value) in [
            ("x-api-id", self.api_id.as_str()),
            ("x-api-timestamp", timestamp.as_str()),
            ("x-api-nonce", nonce.as_str()),
            ("x-api-signature", signature.as_str()),
        ] {
            md.insert(
                key,
                value
                    .parse()
                    .map_err(|_| tonic::Status::internal("bad header"))?,
            );
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

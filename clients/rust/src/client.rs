//! One connection, with a signed client for every service on it.

use tonic::transport::{Channel, Endpoint};

use crate::proto::credential_service_client::CredentialServiceClient;
use crate::proto::endpoint_service_client::EndpointServiceClient;
use crate::proto::event_type_service_client::EventTypeServiceClient;
use crate::proto::subscription_service_client::SubscriptionServiceClient;
use crate::proto::tenant_service_client::TenantServiceClient;
use crate::signing::{Credential, Signed};

/// Signed clients for every hookplane service over one channel. Cheap to
/// clone: clones share the connection.
#[derive(Clone, Debug)]
pub struct Client {
    channel: Signed<Channel>,
}

impl Client {
    /// Connects to `address` (e.g. `http://127.0.0.1:50051`).
    pub async fn connect(
        address: impl Into<String>,
        credential: Credential,
    ) -> Result<Self, tonic::transport::Error> {
        let channel = Endpoint::from_shared(address.into())?.connect().await?;
        Ok(Client::new(channel, credential))
    }

    /// Signs calls on a channel set up by the caller (TLS, timeouts, a
    /// lazy connection).
    pub fn new(channel: Channel, credential: Credential) -> Self {
        Client {
            channel: Signed::new(channel, credential),
        }
    }

    pub fn tenants(&self) -> TenantServiceClient<Signed<Channel>> {
        TenantServiceClient::new(self.channel.clone())
    }

    pub fn credentials(&self) -> CredentialServiceClient<Signed<Channel>> {
        CredentialServiceClient::new(self.channel.clone())
    }

    pub fn event_types(&self) -> EventTypeServiceClient<Signed<Channel>> {
        EventTypeServiceClient::new(self.channel.clone())
    }

    pub fn endpoints(&self) -> EndpointServiceClient<Signed<Channel>> {
        EndpointServiceClient::new(self.channel.clone())
    }

    pub fn subscriptions(&self) -> SubscriptionServiceClient<Signed<Channel>> {
        SubscriptionServiceClient::new(self.channel.clone())
    }
}

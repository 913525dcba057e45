//! The writes the fault tests send, and how they read back a delete.

use hookplane::proto::subscription::Status;
use hookplane::proto::{
    CreateSubscriptionRequest, GetSubscriptionRequest, Subscription, UpdateSubscriptionRequest,
};
use tonic::{Code, Status as RpcStatus};

use crate::harness::*;

/// A create of subscription `id` (empty: the server picks) named `name`.
pub fn create(id: &str, name: &str, request_id: &str) -> CreateSubscriptionRequest {
    CreateSubscriptionRequest {
        subscription: Some(Subscription {
            subscription_id: id.to_owned(),
            name: name.to_owned(),
            ..subscription(TENANT, ENDPOINT, &["command.completed"])
        }),
        request_id: request_id.to_owned(),
        ttl_seconds: 0,
    }
}

/// A rename of subscription `id`.
pub fn rename(id: &str, name: &str) -> UpdateSubscriptionRequest {
    UpdateSubscriptionRequest {
        subscription: Some(Subscription {
            tenant_id: TENANT.to_owned(),
            subscription_id: id.to_owned(),
            name: name.to_owned(),
            ..Default::default()
        }),
        update_mask: mask(&["name"]),
        allow_missing: false,
    }
}

/// Subscription `id` as stored.
pub async fn get(admin: &Clients, id: &str) -> Result<Subscription, RpcStatus> {
    admin
        .subscriptions()
        .get_subscription(GetSubscriptionRequest {
            tenant_id: TENANT.to_owned(),
            subscription_id: id.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Whether a delete of `id` holds: not found, or stored as DELETED.
pub async fn deleted(admin: &Clients, id: &str) -> Result<(), String> {
    match get(admin, id).await {
        Err(s) if s.code() == Code::NotFound => Ok(()),
        Ok(s) if s.status == Status::Deleted as i32 => Ok(()),
        other => Err(format!("{id}: deleted, but found {other:?}")),
    }
}

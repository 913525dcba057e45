use std::pin::Pin;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::wire::{EncodedBatchResolve, EncodedResolve};
use super::{Api, caller, convert, idempotency, mask_paths, paging, status, touches, written};
use crate::proto::{self, server::subscription_service_server::SubscriptionService};
use crate::service::{NewSubscription, ResolveQuery, SubscriptionChanges, SubscriptionListFilter};

pub type SubscriptionApi = Api;

const MUTABLE: &[&str] = &["endpoint_id", "name", "event_types", "status"];
const IMMUTABLE: &[&str] = &[
    "tenant_id",
    "subscription_id",
    "expire_time",
    "create_time",
    "update_time",
    "etag",
];

fn new_subscription(s: proto::Subscription, ttl_seconds: i64) -> Result<NewSubscription, Status> {
    Ok(NewSubscription {
        status: convert::subscription_status("subscription.status", s.status).map_err(status)?,
        tenant_id: s.tenant_id,
        subscription_id: s.subscription_id,
        endpoint_id: s.endpoint_id,
        name: s.name,
        event_types: s.event_types,
        ttl_seconds,
    })
}

type WatchStream =
    Pin<Box<dyn Stream<Item = Result<proto::WatchSubscriptionsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SubscriptionService for Api {
    async fn create_subscription(
        &self,
        request: Request<proto::CreateSubscriptionRequest>,
    ) -> Result<Response<proto::Subscription>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let idem = idempotency(&req.request_id, &req);
        let new = new_subscription(req.subscription.unwrap_or_default(), req.ttl_seconds)?;
        let w = self
            .write_result(
                &caller,
                self.services.create_subscription(&caller, new, idem).await,
            )
            .await?;
        Ok(written(w, convert::subscription))
    }

    async fn get_subscription(
        &self,
        request: Request<proto::GetSubscriptionRequest>,
    ) -> Result<Response<proto::Subscription>, Status> {
        let caller = caller(&request)?;
        let req = request.get_ref();
        let s = self
            .services
            .get_subscription(&caller, &req.tenant_id, &req.subscription_id)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::subscription(s)))
    }

    async fn list_subscriptions(
        &self,
        request: Request<proto::ListSubscriptionsRequest>,
    ) -> Result<Response<proto::ListSubscriptionsResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let paging = paging(req.page_size, &req.page_token, req.skip).map_err(status)?;
        let filter = SubscriptionListFilter {
            endpoint_id: req.endpoint_id,
            status: convert::subscription_status("status", req.status).map_err(status)?,
            event_type: req.event_type,
            legacy_code: req.legacy_code,
            show_deleted: req.show_deleted,
        };
        let listed = self
            .services
            .list_subscriptions(&caller, &req.tenant_id, filter, &paging)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::ListSubscriptionsResponse {
            subscriptions: listed
                .items
                .into_iter()
                .map(convert::subscription)
                .collect(),
            next_page_token: listed.next_page_token,
            total_size: listed.total_size,
        }))
    }

    async fn update_subscription(
        &self,
        request: Request<proto::UpdateSubscriptionRequest>,
    ) -> Result<Response<proto::Subscription>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let paths = mask_paths(req.update_mask.as_ref(), MUTABLE, IMMUTABLE).map_err(status)?;
        let s = req.subscription.unwrap_or_default();
        let changes = SubscriptionChanges {
            etag: s.etag.clone(),
            endpoint_id: touches(&paths, "endpoint_id", !s.endpoint_id.is_empty())
                .then(|| s.endpoint_id.clone()),
            name: touches(&paths, "name", !s.name.is_empty()).then(|| s.name.clone()),
            event_types: touches(&paths, "event_types", !s.event_types.is_empty())
                .then(|| s.event_types.clone()),
            status: if touches(&paths, "status", s.status != 0) {
                Some(
                    convert::subscription_status("subscription.status", s.status)
                        .map_err(status)?
                        .ok_or_else(|| {
                            status(crate::error::Error::invalid(
                                "subscription.status",
                                "must be ACTIVE or DISABLED",
                            ))
                        })?,
                )
            } else {
                None
            },
        };
        let (tenant_id, subscription_id) = (s.tenant_id.clone(), s.subscription_id.clone());
        let upsert = if req.allow_missing {
            Some(new_subscription(s, 0)?)
        } else {
            None
        };
        let w = self
            .write_result(
                &caller,
                self.services
                    .update_subscription(&caller, &tenant_id, &subscription_id, changes, upsert)
                    .await,
            )
            .await?;
        Ok(written(w, convert::subscription))
    }

    async fn delete_subscription(
        &self,
        request: Request<proto::DeleteSubscriptionRequest>,
    ) -> Result<Response<proto::Subscription>, Status> {
        let caller = caller(&request)?;
        let req = request.get_ref();
        let w = self
            .write_result(
                &caller,
                self.services
                    .delete_subscription(&caller, &req.tenant_id, &req.subscription_id, &req.etag)
                    .await,
            )
            .await?;
        Ok(written(w, convert::subscription))
    }

    async fn renew_subscription(
        &self,
        request: Request<proto::RenewSubscriptionRequest>,
    ) -> Result<Response<proto::Subscription>, Status> {
        let caller = caller(&request)?;
        let req = request.get_ref();
        let w = self
            .write_result(
                &caller,
                self.services
                    .renew_subscription(
                        &caller,
                        &req.tenant_id,
                        &req.subscription_id,
                        req.ttl_seconds,
                    )
                    .await,
            )
            .await?;
        Ok(written(w, convert::subscription))
    }

    async fn confirm_subscription(
        &self,
        request: Request<proto::ConfirmSubscriptionRequest>,
    ) -> Result<Response<proto::Subscription>, Status> {
        let caller = caller(&request)?;
        let w = self
            .write_result(
                &caller,
                self.services
                    .confirm_subscription(&caller, &request.get_ref().token)
                    .await,
            )
            .await?;
        Ok(written(w, convert::subscription))
    }

    async fn resend_confirmation(
        &self,
        request: Request<proto::ResendConfirmationRequest>,
    ) -> Result<Response<proto::Subscription>, Status> {
        let caller = caller(&request)?;
        let req = request.get_ref();
        let w = self
            .write_result(
                &caller,
                self.services
                    .resend_confirmation(&caller, &req.tenant_id, &req.subscription_id)
                    .await,
            )
            .await?;
        Ok(written(w, convert::subscription))
    }

    async fn resolve_subscribers(
        &self,
        request: Request<proto::ResolveSubscribersRequest>,
    ) -> Result<Response<EncodedResolve>, Status> {
        let caller = caller(&request)?;
        let answer = self
            .services
            .resolve_subscribers(&caller, &query(request.get_ref()), EncodedResolve::new)
            .await
            .map_err(status)?;
        Ok(Response::new(answer))
    }

    async fn batch_resolve_subscribers(
        &self,
        request: Request<proto::BatchResolveSubscribersRequest>,
    ) -> Result<Response<EncodedBatchResolve>, Status> {
        let caller = caller(&request)?;
        let queries: Vec<ResolveQuery> = request.get_ref().queries.iter().map(query).collect();
        let mut batch = EncodedBatchResolve::default();
        let revision = self
            .services
            .batch_resolve_subscribers(&caller, &queries, |page, revision, token| {
                batch.push(page, revision, token)
            })
            .await
            .map_err(status)?;
        Ok(Response::new(batch.finish(revision)))
    }

    type WatchSubscriptionsStream = WatchStream;

    async fn watch_subscriptions(
        &self,
        request: Request<proto::WatchSubscriptionsRequest>,
    ) -> Result<Response<Self::WatchSubscriptionsStream>, Status> {
        let caller = caller(&request)?;
        let req = request.get_ref();
        let events = self
            .services
            .watch_subscriptions(
                &caller,
                &req.tenant_id,
                req.since_revision,
                req.progress_heartbeats,
            )
            .await
            .map_err(status)?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(events)
            .map(|event| event.map(convert::watch_event).map_err(status));
        Ok(Response::new(Box::pin(stream)))
    }
}

fn query(req: &proto::ResolveSubscribersRequest) -> ResolveQuery {
    ResolveQuery {
        tenant_id: req.tenant_id.clone(),
        event_type: req.event_type.clone(),
        page_size: req.page_size,
        page_token: req.page_token.clone(),
    }
}

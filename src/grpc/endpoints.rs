use tonic::{Request, Response, Status};

use super::{Api, caller, convert, idempotency, mask_paths, paging, status, touches, written};
use crate::error::Error;
use crate::proto::{self, server::endpoint_service_server::EndpointService};
use crate::service::{EndpointChanges, NewEndpoint};

pub type EndpointApi = Api;

const MUTABLE: &[&str] = &["url", "description", "enabled"];
const IMMUTABLE: &[&str] = &[
    "tenant_id",
    "endpoint_id",
    "secret",
    "signing_secrets",
    "create_time",
    "update_time",
    "etag",
];

fn new_endpoint(e: proto::Endpoint) -> NewEndpoint {
    NewEndpoint {
        tenant_id: e.tenant_id,
        endpoint_id: e.endpoint_id,
        url: e.url,
        description: e.description,
        enabled: e.enabled,
        secret: e.secret,
    }
}

#[tonic::async_trait]
impl EndpointService for Api {
    async fn create_endpoint(
        &self,
        request: Request<proto::CreateEndpointRequest>,
    ) -> Result<Response<proto::Endpoint>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let idem = idempotency(&req.request_id, &req);
        let new = new_endpoint(req.endpoint.unwrap_or_default());
        let w = self
            .write_result(
                &caller,
                self.services.create_endpoint(&caller, new, idem).await,
            )
            .await?;
        // Create is one of the two responses that show the secret.
        Ok(written(w, |e| convert::endpoint(e, true)))
    }

    async fn get_endpoint(
        &self,
        request: Request<proto::GetEndpointRequest>,
    ) -> Result<Response<proto::Endpoint>, Status> {
        let caller = caller(&request)?;
        let req = request.get_ref();
        let e = self
            .services
            .get_endpoint(&caller, &req.tenant_id, &req.endpoint_id)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::endpoint(e, false)))
    }

    async fn list_endpoints(
        &self,
        request: Request<proto::ListEndpointsRequest>,
    ) -> Result<Response<proto::ListEndpointsResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.get_ref();
        let paging = paging(req.page_size, &req.page_token, req.skip).map_err(status)?;
        let listed = self
            .services
            .list_endpoints(&caller, &req.tenant_id, &paging)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::ListEndpointsResponse {
            endpoints: listed
                .items
                .into_iter()
                .map(|e| convert::endpoint(e, false))
                .collect(),
            next_page_token: listed.next_page_token,
            total_size: listed.total_size,
        }))
    }

    async fn update_endpoint(
        &self,
        request: Request<proto::UpdateEndpointRequest>,
    ) -> Result<Response<proto::Endpoint>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let paths = mask_paths(req.update_mask.as_ref(), MUTABLE, IMMUTABLE).map_err(status)?;
        let e = req.endpoint.unwrap_or_default();
        if paths.is_none() && !e.secret.is_empty() {
            return Err(status(Error::invalid(
                "endpoint.secret",
                "cannot be changed by Update; use RotateEndpointSecret",
            )));
        }
        let changes = EndpointChanges {
            etag: e.etag.clone(),
            url: touches(&paths, "url", !e.url.is_empty()).then(|| e.url.clone()),
            description: touches(&paths, "description", !e.description.is_empty())
                .then(|| e.description.clone()),
            enabled: if touches(&paths, "enabled", e.enabled.is_some()) {
                Some(e.enabled.unwrap_or(false))
            } else {
                None
            },
        };
        let (tenant_id, endpoint_id) = (e.tenant_id.clone(), e.endpoint_id.clone());
        let created_secret_visible = req.allow_missing;
        let upsert = req.allow_missing.then(|| new_endpoint(e));
        let w = self
            .write_result(
                &caller,
                self.services
                    .update_endpoint(&caller, &tenant_id, &endpoint_id, changes, upsert)
                    .await,
            )
            .await?;
        // An upsert that created the endpoint shows its new secret once;
        // an update of an existing one never does (its secret is unchanged).
        let show = created_secret_visible && w.value.create_time == w.value.update_time;
        Ok(written(w, |e| convert::endpoint(e, show)))
    }

    async fn delete_endpoint(
        &self,
        request: Request<proto::DeleteEndpointRequest>,
    ) -> Result<Response<proto::Endpoint>, Status> {
        let caller = caller(&request)?;
        let req = request.get_ref();
        let w = self
            .write_result(
                &caller,
                self.services
                    .delete_endpoint(
                        &caller,
                        &req.tenant_id,
                        &req.endpoint_id,
                        &req.etag,
                        req.force,
                    )
                    .await,
            )
            .await?;
        Ok(written(w, |e| convert::endpoint(e, false)))
    }

    async fn rotate_endpoint_secret(
        &self,
        request: Request<proto::RotateEndpointSecretRequest>,
    ) -> Result<Response<proto::Endpoint>, Status> {
        let caller = caller(&request)?;
        let req = request.get_ref();
        let w = self
            .write_result(
                &caller,
                self.services
                    .rotate_endpoint_secret(
                        &caller,
                        &req.tenant_id,
                        &req.endpoint_id,
                        &req.secret,
                        req.grace_period_seconds,
                    )
                    .await,
            )
            .await?;
        Ok(written(w, |e| convert::endpoint(e, true)))
    }

    async fn ping_endpoint(
        &self,
        request: Request<proto::PingEndpointRequest>,
    ) -> Result<Response<proto::PingEndpointResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.get_ref();
        let result = self
            .write_result(
                &caller,
                self.services
                    .ping_endpoint(&caller, &req.tenant_id, &req.endpoint_id)
                    .await,
            )
            .await?;
        Ok(Response::new(proto::PingEndpointResponse {
            status_code: i32::from(result.status_code),
            latency: prost_types::Duration::try_from(result.latency).ok(),
            error: result.error,
        }))
    }
}

use tonic::{Request, Response, Status};

use super::{Api, caller, convert, idempotency, mask_paths, paging, status, touches, written};
use crate::proto::{self, server::tenant_service_server::TenantService};
use crate::service::{NewTenant, TenantChanges};

pub type TenantApi = Api;

const MUTABLE: &[&str] = &[
    "display_name",
    "state",
    "settings",
    "settings.require_verification",
    "settings.https_only",
    "settings.default_ttl_seconds",
    "settings.max_ttl_seconds",
];
const IMMUTABLE: &[&str] = &["tenant_id", "create_time", "update_time", "etag"];

#[tonic::async_trait]
impl TenantService for Api {
    async fn create_tenant(
        &self,
        request: Request<proto::CreateTenantRequest>,
    ) -> Result<Response<proto::Tenant>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let idem = idempotency(&req.request_id, &req);
        let t = req.tenant.unwrap_or_default();
        let new = NewTenant {
            state: convert::tenant_state("tenant.state", t.state).map_err(status)?,
            tenant_id: t.tenant_id,
            display_name: t.display_name,
            settings: convert::tenant_settings(t.settings),
        };
        let w = self
            .write_result(
                &caller,
                self.services.create_tenant(&caller, new, idem).await,
            )
            .await?;
        Ok(written(w, convert::tenant))
    }

    async fn get_tenant(
        &self,
        request: Request<proto::GetTenantRequest>,
    ) -> Result<Response<proto::Tenant>, Status> {
        let caller = caller(&request)?;
        let t = self
            .services
            .get_tenant(&caller, &request.get_ref().tenant_id)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::tenant(t)))
    }

    async fn list_tenants(
        &self,
        request: Request<proto::ListTenantsRequest>,
    ) -> Result<Response<proto::ListTenantsResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.get_ref();
        let paging = paging(req.page_size, &req.page_token, req.skip).map_err(status)?;
        let listed = self
            .services
            .list_tenants(&caller, &paging)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::ListTenantsResponse {
            tenants: listed.items.into_iter().map(convert::tenant).collect(),
            next_page_token: listed.next_page_token,
            total_size: listed.total_size,
        }))
    }

    async fn update_tenant(
        &self,
        request: Request<proto::UpdateTenantRequest>,
    ) -> Result<Response<proto::Tenant>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let paths = mask_paths(req.update_mask.as_ref(), MUTABLE, IMMUTABLE).map_err(status)?;
        let t = req.tenant.unwrap_or_default();
        let s = t.settings.unwrap_or_default();
        let has_settings = paths.is_none() && s != proto::tenant::Settings::default();
        let changes = TenantChanges {
            etag: t.etag.clone(),
            display_name: touches(&paths, "display_name", !t.display_name.is_empty())
                .then(|| t.display_name.clone()),
            state: if touches(&paths, "state", t.state != 0) {
                Some(
                    convert::tenant_state("tenant.state", t.state)
                        .map_err(status)?
                        .ok_or_else(|| {
                            status(crate::error::Error::invalid(
                                "tenant.state",
                                "must be ACTIVE or SUSPENDED",
                            ))
                        })?,
                )
            } else {
                None
            },
            require_verification: (has_settings
                || touches(&paths, "settings.require_verification", false))
            .then_some(s.require_verification),
            https_only: (has_settings || touches(&paths, "settings.https_only", false))
                .then_some(s.https_only),
            default_ttl_seconds: (has_settings
                || touches(&paths, "settings.default_ttl_seconds", false))
            .then_some(s.default_ttl_seconds),
            max_ttl_seconds: (has_settings || touches(&paths, "settings.max_ttl_seconds", false))
                .then_some(s.max_ttl_seconds),
        };
        let w = self
            .write_result(
                &caller,
                self.services
                    .update_tenant(&caller, &t.tenant_id, changes)
                    .await,
            )
            .await?;
        Ok(written(w, convert::tenant))
    }

    async fn delete_tenant(
        &self,
        request: Request<proto::DeleteTenantRequest>,
    ) -> Result<Response<proto::Tenant>, Status> {
        let caller = caller(&request)?;
        let req = request.get_ref();
        let w = self
            .write_result(
                &caller,
                self.services
                    .delete_tenant(&caller, &req.tenant_id, &req.etag, req.force)
                    .await,
            )
            .await?;
        Ok(written(w, convert::tenant))
    }
}

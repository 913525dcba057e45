use tonic::{Request, Response, Status};

use super::{Api, caller, convert, idempotency, paging, status, written};
use crate::proto::{self, server::credential_service_server::CredentialService};
use crate::service::NewCredential;

pub type CredentialApi = Api;

#[tonic::async_trait]
impl CredentialService for Api {
    async fn create_credential(
        &self,
        request: Request<proto::CreateCredentialRequest>,
    ) -> Result<Response<proto::Credential>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let idem = idempotency(&req.request_id, &req);
        let c = req.credential.unwrap_or_default();
        let new = NewCredential {
            role: convert::role("credential.role", c.role).map_err(status)?,
            tenant_id: c.tenant_id,
            description: c.description,
        };
        let w = self
            .write_result(
                &caller,
                self.services.create_credential(&caller, new, idem).await,
            )
            .await?;
        // The only response that carries the credential's secret.
        Ok(written(w, |c| convert::credential(c, true)))
    }

    async fn list_credentials(
        &self,
        request: Request<proto::ListCredentialsRequest>,
    ) -> Result<Response<proto::ListCredentialsResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.get_ref();
        let paging = paging(req.page_size, &req.page_token, req.skip).map_err(status)?;
        let listed = self
            .services
            .list_credentials(&caller, &req.tenant_id, req.show_revoked, &paging)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::ListCredentialsResponse {
            credentials: listed
                .items
                .into_iter()
                .map(|c| convert::credential(c, false))
                .collect(),
            next_page_token: listed.next_page_token,
            total_size: listed.total_size,
        }))
    }

    async fn revoke_credential(
        &self,
        request: Request<proto::RevokeCredentialRequest>,
    ) -> Result<Response<proto::Credential>, Status> {
        let caller = caller(&request)?;
        let w = self
            .write_result(
                &caller,
                self.services
                    .revoke_credential(&caller, &request.get_ref().api_id)
                    .await,
            )
            .await?;
        Ok(written(w, |c| convert::credential(c, false)))
    }
}

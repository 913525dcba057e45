//! API credentials: create (never wider than the creator), list, revoke.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{
    Idempotency, Listed, Paging, Services, Written, attach_response, check_text, fenced_tenant,
    parsed_tenant,
};
use crate::auth::Caller;
use crate::crypto::random_bytes;
use crate::domain::TenantId;
use crate::domain::{Permission, Role};
use crate::error::{Error, Result};
use crate::model::{Credential, new_etag, now_micros};
use crate::repository::CredentialFilter;

pub struct NewCredential {
    pub tenant_id: String,
    pub role: Option<Role>,
    pub description: String,
}

/// A new api id: `hp_` and 24 hex characters.
pub fn generate_api_id() -> String {
    format!("hp_{}", hex::encode(random_bytes::<12>()))
}

/// A new credential secret: `hpsk_` and base64url of 32 random bytes.
pub fn generate_credential_secret() -> String {
    format!("hpsk_{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()))
}

impl Services {
    pub async fn create_credential(
        &self,
        caller: &Caller,
        new: NewCredential,
        idempotency: Option<Idempotency>,
    ) -> Result<Written<Credential>> {
        self.require(caller, Permission::CredentialsWrite)?;
        // A tenant-scoped creator that leaves tenant_id empty means its own.
        let tenant_id = fenced_tenant(caller, &new.tenant_id)?;
        let role = new
            .role
            .ok_or_else(|| Error::invalid("credential.role", "must be set"))?;
        let tenant_id = parsed_tenant(tenant_id, "credential.tenant_id")?;
        let tenant = tenant_id.as_ref().map(TenantId::as_str);
        // Permission before validation: asking for more than one has is
        // PERMISSION_DENIED whatever the shape of the request.
        if !caller.can_create(role, tenant) {
            return Err(Error::PermissionDenied(
                "a credential cannot create one with more permissions or a wider scope than its own"
                    .into(),
            ));
        }
        if !role.scope_rule().allows(tenant) {
            let why = match tenant {
                Some(_) => format!("role {} cannot be scoped to a tenant", role.as_str()),
                None => format!("role {} needs a tenant_id", role.as_str()),
            };
            return Err(Error::invalid("credential.tenant_id", why));
        }
        check_text("credential.description", &new.description, 1024)?;
        let written = self
            .idempotent(
                caller,
                "CreateCredential",
                idempotency,
                |mut meta| async move {
                    let credential = Credential {
                        api_id: generate_api_id(),
                        tenant_id: tenant_id.map(TenantId::into_string),
                        role,
                        description: new.description,
                        secret: generate_credential_secret(),
                        create_time: meta.now,
                        update_time: meta.now,
                        revoke_time: None,
                        etag: new_etag(),
                    };
                    attach_response(&mut meta, &credential)?;
                    let revision = self.repo.create_credential(&credential, &meta).await?;
                    Ok((credential, revision))
                },
            )
            .await?;
        self.cache_credential(&written.value);
        Ok(written)
    }

    pub async fn list_credentials(
        &self,
        caller: &Caller,
        tenant_id: &str,
        show_revoked: bool,
        paging: &Paging,
    ) -> Result<Listed<Credential>> {
        let tenant = self.tenant_scope_or_all(caller, Permission::CredentialsWrite, tenant_id)?;
        let scope = format!(
            "credentials/{}/{show_revoked}",
            tenant.as_ref().map_or("", TenantId::as_str)
        );
        let request = self.page_request(&scope, paging)?;
        if let Some(t) = &tenant {
            self.live_tenant(t.as_str()).await?;
        }
        let filter = CredentialFilter {
            tenant_id: tenant.map(TenantId::into_string),
            show_revoked,
        };
        let page = self.repo.list_credentials(&filter, &request).await?;
        Ok(self.listed(&scope, page, |c| (c.create_time, c.api_id.clone())))
    }

    pub async fn revoke_credential(
        &self,
        caller: &Caller,
        api_id: &str,
    ) -> Result<Written<Credential>> {
        self.require(caller, Permission::CredentialsWrite)?;
        if api_id.is_empty() || api_id.len() > 128 {
            return Err(Error::invalid("api_id", "must be 1..128 characters"));
        }
        let not_found = || Error::NotFound(format!("credential {api_id} not found"));
        let current = self
            .repo
            .get_credential(api_id)
            .await?
            .ok_or_else(not_found)?;
        // A tenant-scoped caller sees only its tenant's credentials, and may
        // revoke only those it could have created.
        if let Some(own) = &caller.tenant_id
            && current.tenant_id.as_deref() != Some(own.as_str())
        {
            return Err(not_found());
        }
        if !caller.can_create(current.role, current.tenant_id.as_deref()) {
            return Err(Error::PermissionDenied(
                "a credential cannot revoke one with more permissions than its own".into(),
            ));
        }
        let meta = self.write_meta(caller, now_micros());
        let (credential, revision) = self.repo.revoke_credential(api_id, &meta).await?;
        self.cache_credential(&credential);
        Ok(self.done(credential, revision).await)
    }
}

//! Tenants: create, read, list, update (including suspension), delete.

use super::{
    Idempotency, Listed, Paging, Services, Written, attach_response, check_text, other_tenant,
};
use crate::auth::Caller;
use crate::domain::Permission;
use crate::domain::{TenantId, validate_tenant_ttls};
use crate::error::{Error, FieldExt, Result};
use crate::model::{Tenant, TenantSettings, TenantState, new_etag, now_micros};

pub struct NewTenant {
    pub tenant_id: String,
    pub display_name: String,
    pub state: Option<TenantState>,
    pub settings: TenantSettings,
}

/// Fields an update may change; `None` leaves a field alone.
#[derive(Default, Clone)]
pub struct TenantChanges {
    pub etag: String,
    pub display_name: Option<String>,
    pub state: Option<TenantState>,
    pub require_verification: Option<bool>,
    pub https_only: Option<bool>,
    pub default_ttl_seconds: Option<i64>,
    pub max_ttl_seconds: Option<i64>,
}

const DISPLAY_NAME_MAX: usize = 200;

fn check_settings(settings: &TenantSettings) -> Result<()> {
    validate_tenant_ttls(settings.default_ttl_seconds, settings.max_ttl_seconds)
        .map_err(|(field, e)| Error::invalid(format!("tenant.settings.{field}"), e.0))
}

impl Services {
    pub async fn create_tenant(
        &self,
        caller: &Caller,
        new: NewTenant,
        idempotency: Option<Idempotency>,
    ) -> Result<Written<Tenant>> {
        self.require(caller, Permission::TenantsWrite)?;
        let tenant_id = TenantId::parse(&new.tenant_id).field("tenant.tenant_id")?;
        check_text("tenant.display_name", &new.display_name, DISPLAY_NAME_MAX)?;
        check_settings(&new.settings)?;
        self.idempotent(caller, "CreateTenant", idempotency, |mut meta| async move {
            let tenant = Tenant {
                tenant_id: tenant_id.into_string(),
                display_name: new.display_name,
                state: new.state.unwrap_or(TenantState::Active),
                settings: new.settings,
                create_time: meta.now,
                update_time: meta.now,
                delete_time: None,
                etag: new_etag(),
            };
            attach_response(&mut meta, &tenant)?;
            let revision = self.repo.create_tenant(&tenant, &meta).await?;
            Ok((tenant, revision))
        })
        .await
    }

    /// A live tenant the caller may see.
    pub async fn get_tenant(&self, caller: &Caller, tenant_id: &str) -> Result<Tenant> {
        let tenant_id = self.tenant_scope(caller, Permission::TenantsRead, tenant_id)?;
        self.live_tenant(tenant_id.as_str()).await
    }

    pub(crate) async fn live_tenant(&self, tenant_id: &str) -> Result<Tenant> {
        self.repo
            .get_tenant(tenant_id)
            .await?
            .filter(|t| t.delete_time.is_none())
            .ok_or_else(|| Error::NotFound(format!("tenant {tenant_id} not found")))
    }

    pub async fn list_tenants(&self, caller: &Caller, paging: &Paging) -> Result<Listed<Tenant>> {
        self.require(caller, Permission::TenantsRead)?;
        if let Some(own) = &caller.tenant_id {
            // A tenant-scoped credential sees its own tenant only.
            let tenant = self.live_tenant(own).await?;
            return Ok(Listed {
                items: vec![tenant],
                next_page_token: String::new(),
                total_size: 1,
            });
        }
        let scope = "tenants";
        let request = self.page_request(scope, paging)?;
        let page = self.repo.list_tenants(&request).await?;
        Ok(self.listed(scope, page, |t| (t.create_time, t.tenant_id.clone())))
    }

    /// Updates; when the caller sent no etag, a concurrent change is not
    /// its conflict, so the update is re-read and retried a few times.
    pub async fn update_tenant(
        &self,
        caller: &Caller,
        tenant_id: &str,
        changes: TenantChanges,
    ) -> Result<Written<Tenant>> {
        let mut attempt = 0;
        loop {
            match self
                .update_tenant_once(caller, tenant_id, changes.clone())
                .await
            {
                Err(Error::Aborted(_)) if changes.etag.is_empty() && attempt < 5 => attempt += 1,
                other => return other,
            }
        }
    }

    async fn update_tenant_once(
        &self,
        caller: &Caller,
        tenant_id: &str,
        changes: TenantChanges,
    ) -> Result<Written<Tenant>> {
        self.require(caller, Permission::TenantsWrite)?;
        let tenant_id = TenantId::parse(tenant_id).field("tenant.tenant_id")?;
        if !caller.may_access_tenant(tenant_id.as_str()) {
            return Err(other_tenant());
        }
        if let Some(name) = &changes.display_name {
            check_text("tenant.display_name", name, DISPLAY_NAME_MAX)?;
        }
        let current = self.live_tenant(tenant_id.as_str()).await?;
        if !changes.etag.is_empty() && changes.etag != current.etag {
            return Err(Error::Aborted(
                "etag does not match the tenant's current etag".into(),
            ));
        }
        let mut next = current.clone();
        if let Some(v) = changes.display_name {
            next.display_name = v;
        }
        if let Some(v) = changes.state {
            next.state = v;
        }
        if let Some(v) = changes.require_verification {
            next.settings.require_verification = v;
        }
        if let Some(v) = changes.https_only {
            next.settings.https_only = v;
        }
        if let Some(v) = changes.default_ttl_seconds {
            next.settings.default_ttl_seconds = v;
        }
        if let Some(v) = changes.max_ttl_seconds {
            next.settings.max_ttl_seconds = v;
        }
        check_settings(&next.settings)?;
        let meta = self.write_meta(caller, now_micros());
        next.update_time = meta.now;
        next.etag = new_etag();
        let revision = self.repo.update_tenant(&next, &current.etag, &meta).await?;
        Ok(self.done(next, revision).await)
    }

    pub async fn delete_tenant(
        &self,
        caller: &Caller,
        tenant_id: &str,
        etag: &str,
        force: bool,
    ) -> Result<Written<Tenant>> {
        self.require(caller, Permission::TenantsWrite)?;
        let tenant_id = TenantId::parse(tenant_id).field("tenant_id")?;
        if !caller.may_access_tenant(tenant_id.as_str()) {
            return Err(other_tenant());
        }
        let current = self.live_tenant(tenant_id.as_str()).await?;
        if !etag.is_empty() && etag != current.etag {
            return Err(Error::Aborted(
                "etag does not match the tenant's current etag".into(),
            ));
        }
        let meta = self.write_meta(caller, now_micros());
        let (tenant, revision) = self
            .repo
            .delete_tenant(tenant_id.as_str(), &current.etag, force, &meta)
            .await?;
        Ok(self.done(tenant, revision).await)
    }

    /// The tenant must exist and accept writes.
    pub(crate) async fn writable_tenant(&self, tenant_id: &str) -> Result<Tenant> {
        let tenant = self.live_tenant(tenant_id).await?;
        match tenant.state.refuses_writes(tenant_id) {
            Some(why) => Err(Error::FailedPrecondition(why)),
            None => Ok(tenant),
        }
    }
}

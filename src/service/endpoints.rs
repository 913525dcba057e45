//! Callback endpoints: URL rules, signing secrets (encrypted at rest, shown
//! only on creation and rotation), soft delete.

use super::{Idempotency, Listed, Paging, Services, Written, attach_response, check_text};
use crate::auth::Caller;
use crate::domain::Permission;
use crate::domain::{CallbackUrl, EndpointId, SigningSecret, UrlPolicy};
use crate::error::{Error, FieldExt, Result};
use crate::model::{Endpoint, PreviousSecret, Tenant, new_etag, now_micros};

#[derive(Clone)]
pub struct NewEndpoint {
    pub tenant_id: String,
    pub endpoint_id: String,
    pub url: String,
    pub description: String,
    pub enabled: Option<bool>,
    pub secret: String,
}

#[derive(Default, Clone)]
pub struct EndpointChanges {
    pub etag: String,
    pub url: Option<String>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

const DESCRIPTION_MAX: usize = 1024;
pub const DEFAULT_GRACE_SECONDS: i64 = 86_400;
pub const MAX_GRACE_SECONDS: i64 = 604_800;

impl Services {
    fn url_policy(&self, tenant: &Tenant) -> UrlPolicy {
        UrlPolicy {
            https_only: tenant.settings.https_only,
            allow_private: self.settings.allow_private_networks,
        }
    }

    pub async fn create_endpoint(
        &self,
        caller: &Caller,
        new: NewEndpoint,
        idempotency: Option<Idempotency>,
    ) -> Result<Written<Endpoint>> {
        let tenant_id = self.tenant_scope_at(
            caller,
            Permission::EndpointsWrite,
            &new.tenant_id,
            "endpoint.tenant_id",
        )?;
        let endpoint_id = if new.endpoint_id.is_empty() {
            EndpointId::generate()
        } else {
            EndpointId::parse(&new.endpoint_id).field("endpoint.endpoint_id")?
        };
        check_text("endpoint.description", &new.description, DESCRIPTION_MAX)?;
        let secret = if new.secret.is_empty() {
            SigningSecret::generate()
        } else {
            SigningSecret::parse(&new.secret).field("endpoint.secret")?
        };
        if new.url.is_empty() {
            return Err(Error::invalid("endpoint.url", "must be set"));
        }
        let tenant = self.writable_tenant(tenant_id.as_str()).await?;
        let url = CallbackUrl::parse(&new.url, self.url_policy(&tenant)).field("endpoint.url")?;
        self.idempotent(
            caller,
            "CreateEndpoint",
            idempotency,
            |mut meta| async move {
                let endpoint = Endpoint {
                    tenant_id: tenant_id.into_string(),
                    endpoint_id: endpoint_id.into_string(),
                    url: url.as_str().to_owned(),
                    description: new.description,
                    enabled: new.enabled.unwrap_or(true),
                    secret: secret.expose().to_owned(),
                    previous_secret: None,
                    create_time: meta.now,
                    update_time: meta.now,
                    delete_time: None,
                    etag: new_etag(),
                };
                attach_response(&mut meta, &endpoint)?;
                let revision = self.repo.create_endpoint(&endpoint, &meta).await?;
                Ok((endpoint, revision))
            },
        )
        .await
    }

    pub(crate) async fn live_endpoint(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
    ) -> Result<Endpoint> {
        self.repo
            .get_endpoint(tenant_id, endpoint_id)
            .await?
            .filter(|e| e.delete_time.is_none())
            .ok_or_else(|| Error::NotFound(format!("endpoint {endpoint_id} not found")))
    }

    pub async fn get_endpoint(
        &self,
        caller: &Caller,
        tenant_id: &str,
        endpoint_id: &str,
    ) -> Result<Endpoint> {
        let tenant_id = self.tenant_scope(caller, Permission::EndpointsRead, tenant_id)?;
        let endpoint_id = EndpointId::parse(endpoint_id).field("endpoint_id")?;
        self.live_endpoint(tenant_id.as_str(), endpoint_id.as_str())
            .await
    }

    pub async fn list_endpoints(
        &self,
        caller: &Caller,
        tenant_id: &str,
        paging: &Paging,
    ) -> Result<Listed<Endpoint>> {
        let tenant_id = self.tenant_scope(caller, Permission::EndpointsRead, tenant_id)?;
        let scope = format!("endpoints/{tenant_id}");
        let request = self.page_request(&scope, paging)?;
        self.live_tenant(tenant_id.as_str()).await?;
        let page = self
            .repo
            .list_endpoints(tenant_id.as_str(), &request)
            .await?;
        Ok(self.listed(&scope, page, |e| (e.create_time, e.endpoint_id.clone())))
    }

    /// Update; with `allow_missing` a missing endpoint is created from
    /// `upsert` (an AIP-134 upsert).
    /// Updates; when the caller sent no etag, a concurrent change is not
    /// its conflict, so the update is re-read and retried a few times.
    pub async fn update_endpoint(
        &self,
        caller: &Caller,
        tenant_id: &str,
        endpoint_id: &str,
        changes: EndpointChanges,
        upsert: Option<NewEndpoint>,
    ) -> Result<Written<Endpoint>> {
        let mut attempt = 0;
        loop {
            match self
                .update_endpoint_once(
                    caller,
                    tenant_id,
                    endpoint_id,
                    changes.clone(),
                    upsert.clone(),
                )
                .await
            {
                Err(Error::Aborted(_)) if changes.etag.is_empty() && attempt < 5 => attempt += 1,
                other => return other,
            }
        }
    }

    async fn update_endpoint_once(
        &self,
        caller: &Caller,
        tenant_id: &str,
        endpoint_id: &str,
        changes: EndpointChanges,
        upsert: Option<NewEndpoint>,
    ) -> Result<Written<Endpoint>> {
        let tenant_id = self.tenant_scope_at(
            caller,
            Permission::EndpointsWrite,
            tenant_id,
            "endpoint.tenant_id",
        )?;
        let endpoint_id = EndpointId::parse(endpoint_id).field("endpoint.endpoint_id")?;
        if let Some(d) = &changes.description {
            check_text("endpoint.description", d, DESCRIPTION_MAX)?;
        }
        let tenant = self.writable_tenant(tenant_id.as_str()).await?;
        let require_verification = tenant.settings.require_verification;
        let url = match &changes.url {
            Some(u) => Some(CallbackUrl::parse(u, self.url_policy(&tenant)).field("endpoint.url")?),
            None => None,
        };
        let current = match (
            self.repo
                .get_endpoint(tenant_id.as_str(), endpoint_id.as_str())
                .await?,
            upsert,
        ) {
            (Some(e), _) if e.delete_time.is_none() => e,
            (None, Some(new)) => {
                return self
                    .create_endpoint(
                        caller,
                        NewEndpoint {
                            tenant_id: tenant_id.into_string(),
                            endpoint_id: endpoint_id.into_string(),
                            ..new
                        },
                        None,
                    )
                    .await;
            }
            _ => return Err(Error::NotFound(format!("endpoint {endpoint_id} not found"))),
        };
        if !changes.etag.is_empty() && changes.etag != current.etag {
            return Err(Error::Aborted(
                "etag does not match the endpoint's current etag".into(),
            ));
        }
        let mut next = current.clone();
        if let Some(u) = url {
            next.url = u.as_str().to_owned();
        }
        if let Some(d) = changes.description {
            next.description = d;
        }
        if let Some(e) = changes.enabled {
            next.enabled = e;
        }
        let meta = self.write_meta(caller, now_micros());
        next.update_time = meta.now;
        next.etag = new_etag();
        // A new URL on a verifying tenant must prove itself again.
        let mut verifications = Vec::new();
        if require_verification && next.url != current.url {
            let filter = crate::repository::SubscriptionFilter {
                tenant_id: tenant_id.as_str().to_owned(),
                endpoint_id: Some(next.endpoint_id.clone()),
                status: None,
                show_deleted: false,
            };
            // EXPIRED included: renewed, it would be ACTIVE for a URL
            // that never confirmed it.
            for s in self.repo.all_subscriptions(&filter).await? {
                verifications.push(self.new_verification(&s, meta.now)?);
            }
        }
        let revision = self
            .repo
            .update_endpoint(&next, &current.etag, &verifications, &meta)
            .await?;
        Ok(self.done(next, revision).await)
    }

    pub async fn delete_endpoint(
        &self,
        caller: &Caller,
        tenant_id: &str,
        endpoint_id: &str,
        etag: &str,
        force: bool,
    ) -> Result<Written<Endpoint>> {
        let tenant_id = self.tenant_scope(caller, Permission::EndpointsWrite, tenant_id)?;
        let endpoint_id = EndpointId::parse(endpoint_id).field("endpoint_id")?;
        self.writable_tenant(tenant_id.as_str()).await?;
        let current = self
            .live_endpoint(tenant_id.as_str(), endpoint_id.as_str())
            .await?;
        if !etag.is_empty() && etag != current.etag {
            return Err(Error::Aborted(
                "etag does not match the endpoint's current etag".into(),
            ));
        }
        let meta = self.write_meta(caller, now_micros());
        let (endpoint, revision) = self
            .repo
            .delete_endpoint(
                tenant_id.as_str(),
                endpoint_id.as_str(),
                &current.etag,
                force,
                &meta,
            )
            .await?;
        Ok(self.done(endpoint, revision).await)
    }

    /// Issues a new signing secret; the previous one stays valid for the
    /// grace period.
    pub async fn rotate_endpoint_secret(
        &self,
        caller: &Caller,
        tenant_id: &str,
        endpoint_id: &str,
        secret: &str,
        grace_period_seconds: i64,
    ) -> Result<Written<Endpoint>> {
        let tenant_id = self.tenant_scope(caller, Permission::EndpointsWrite, tenant_id)?;
        let endpoint_id = EndpointId::parse(endpoint_id).field("endpoint_id")?;
        let secret = if secret.is_empty() {
            SigningSecret::generate()
        } else {
            SigningSecret::parse(secret).field("secret")?
        };
        let grace = match grace_period_seconds {
            0 => DEFAULT_GRACE_SECONDS,
            g if (1..=MAX_GRACE_SECONDS).contains(&g) => g,
            _ => {
                return Err(Error::invalid(
                    "grace_period_seconds",
                    format!(
                        "must be between 0 and {MAX_GRACE_SECONDS} (0 means {DEFAULT_GRACE_SECONDS})"
                    ),
                ));
            }
        };
        self.writable_tenant(tenant_id.as_str()).await?;
        let current = self
            .live_endpoint(tenant_id.as_str(), endpoint_id.as_str())
            .await?;
        if !current.enabled {
            return Err(Error::FailedPrecondition(format!(
                "endpoint {endpoint_id} is disabled; enable it before rotating its secret"
            )));
        }
        if secret.expose() == current.secret {
            return Err(Error::invalid(
                "secret",
                "must differ from the current secret",
            ));
        }
        let meta = self.write_meta(caller, now_micros());
        let mut next = current.clone();
        next.previous_secret = Some(PreviousSecret {
            secret: current.secret.clone(),
            expire_time: meta.now + grace * 1_000_000,
        });
        next.secret = secret.expose().to_owned();
        next.update_time = meta.now;
        next.etag = new_etag();
        let revision = self
            .repo
            .update_endpoint(&next, &current.etag, &[], &meta)
            .await?;
        Ok(self.done(next, revision).await)
    }
}

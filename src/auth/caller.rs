//! The authenticated caller, as seen by handlers, and its scope checks.

use crate::domain::{Permission, Role};

/// The identity behind an authenticated request, put into the request
/// extensions by the [`Authenticator`](crate::auth::Authenticator).
#[derive(Clone, Debug)]
pub struct Caller {
    pub api_id: String,
    /// `None` for a platform-wide credential.
    pub tenant_id: Option<String>,
    pub role: Role,
    pub request_id: String,
    pub nonce: String,
    /// The signed request timestamp, Unix seconds.
    pub timestamp: i64,
}

/// The request id of every call, authenticated or not, in the request
/// extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum ScopeError {
    #[error("a tenant id is required for a platform-wide credential")]
    TenantRequired,
    #[error("the credential is not allowed to access another tenant")]
    OtherTenant,
}

impl Caller {
    pub fn has(&self, permission: Permission) -> bool {
        self.role.permissions().contains(permission)
    }

    /// Whether this caller may create a credential with `role` for
    /// `tenant_id` (`None` = platform-wide): no more permissions and no wider
    /// scope than its own. Whether `role` may have that scope at all is
    /// [`ScopeRule::allows`](crate::domain::ScopeRule::allows), checked separately.
    pub fn can_create(&self, role: Role, tenant_id: Option<&str>) -> bool {
        let scope_ok = match (self.tenant_id.as_deref(), tenant_id) {
            (None, _) => true,
            (Some(own), Some(requested)) => own == requested,
            (Some(_), None) => false,
        };
        scope_ok && role.permissions().is_subset_of(self.role.permissions())
    }

    /// The tenant a request acts on: the requested one, or the caller's own
    /// when the request leaves it empty.
    pub fn effective_tenant<'a>(&'a self, requested: &'a str) -> Result<&'a str, ScopeError> {
        match self.tenant_id.as_deref() {
            None if requested.is_empty() => Err(ScopeError::TenantRequired),
            None => Ok(requested),
            Some(own) if requested.is_empty() => Ok(own),
            Some(own) if own == requested => Ok(requested),
            Some(_) => Err(ScopeError::OtherTenant),
        }
    }

    pub fn may_access_tenant(&self, tenant: &str) -> bool {
        self.tenant_id.as_deref().is_none_or(|own| own == tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role, tenant_id: Option<&str>) -> Caller {
        Caller {
            api_id: "ak_test".into(),
            tenant_id: tenant_id.map(str::to_owned),
            role,
            request_id: "req-1".into(),
            nonce: "abcdefghijklmnop".into(),
            timestamp: 1_700_000_000,
        }
    }

    #[test]
    fn permissions_follow_the_role() {
        let reader = caller(Role::Reader, Some("acme"));
        assert!(reader.has(Permission::EndpointsRead));
        assert!(!reader.has(Permission::EndpointsWrite));
        assert!(caller(Role::Dispatcher, None).has(Permission::SecretsRead));
    }

    #[test]
    fn platform_admin_may_create_anything_anywhere() {
        let admin = caller(Role::PlatformAdmin, None);
        for role in Role::ALL {
            assert!(admin.can_create(role, None));
            assert!(admin.can_create(role, Some("acme")));
        }
    }

    #[test]
    fn tenant_admin_may_create_only_weaker_roles_in_its_own_tenant() {
        let admin = caller(Role::TenantAdmin, Some("acme"));
        assert!(admin.can_create(Role::TenantAdmin, Some("acme")));
        assert!(admin.can_create(Role::Reader, Some("acme")));
        assert!(!admin.can_create(Role::Reader, Some("globex")));
        assert!(!admin.can_create(Role::Reader, None));
        assert!(!admin.can_create(Role::Dispatcher, Some("acme")));
        assert!(!admin.can_create(Role::PlatformAdmin, None));
    }

    #[test]
    fn platform_wide_dispatcher_may_create_dispatchers_but_not_more() {
        let dispatcher = caller(Role::Dispatcher, None);
        assert!(dispatcher.can_create(Role::Dispatcher, None));
        assert!(dispatcher.can_create(Role::Dispatcher, Some("acme")));
        assert!(!dispatcher.can_create(Role::Reader, Some("acme")));
    }

    #[test]
    fn effective_tenant_for_a_tenant_scoped_caller() {
        let reader = caller(Role::Reader, Some("acme"));
        assert_eq!(reader.effective_tenant(""), Ok("acme"));
        assert_eq!(reader.effective_tenant("acme"), Ok("acme"));
        assert_eq!(
            reader.effective_tenant("globex"),
            Err(ScopeError::OtherTenant)
        );
        assert!(reader.may_access_tenant("acme"));
        assert!(!reader.may_access_tenant("globex"));
    }

    #[test]
    fn effective_tenant_for_a_platform_wide_caller() {
        let admin = caller(Role::PlatformAdmin, None);
        assert_eq!(admin.effective_tenant(""), Err(ScopeError::TenantRequired));
        assert_eq!(admin.effective_tenant("globex"), Ok("globex"));
        assert!(admin.may_access_tenant("globex"));
    }
}

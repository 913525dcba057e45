//! Roles, the permissions each grants, and where each may be scoped. A
//! domain rule rather than part of `auth/`: the repository stores roles and
//! the service checks permissions, and neither should depend on the
//! interceptor's module for it.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Role {
    PlatformAdmin,
    TenantAdmin,
    Dispatcher,
    Reader,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::PlatformAdmin,
        Role::TenantAdmin,
        Role::Dispatcher,
        Role::Reader,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::PlatformAdmin => "PLATFORM_ADMIN",
            Role::TenantAdmin => "TENANT_ADMIN",
            Role::Dispatcher => "DISPATCHER",
            Role::Reader => "READER",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == s)
    }

    pub fn permissions(self) -> PermissionSet {
        use Permission::*;
        match self {
            Role::PlatformAdmin => PermissionSet::ALL,
            Role::TenantAdmin => PermissionSet::of(&[
                TenantsRead,
                EndpointsRead,
                EndpointsWrite,
                SubscriptionsRead,
                SubscriptionsWrite,
                CredentialsWrite,
            ]),
            Role::Dispatcher => PermissionSet::of(&[SubscribersResolve, SecretsRead]),
            Role::Reader => PermissionSet::of(&[TenantsRead, EndpointsRead, SubscriptionsRead]),
        }
    }

    pub fn scope_rule(self) -> ScopeRule {
        match self {
            Role::PlatformAdmin => ScopeRule::PlatformOnly,
            Role::TenantAdmin | Role::Reader => ScopeRule::TenantOnly,
            Role::Dispatcher => ScopeRule::Either,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a credential of a role is bound to one tenant, to none, or either.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeRule {
    /// Platform-wide only: no tenant.
    PlatformOnly,
    /// Exactly one tenant.
    TenantOnly,
    /// One tenant or platform-wide.
    Either,
}

impl ScopeRule {
    /// Whether a credential with this rule may have `tenant_id`
    /// (`None` meaning platform-wide).
    pub fn allows(self, tenant_id: Option<&str>) -> bool {
        match self {
            ScopeRule::PlatformOnly => tenant_id.is_none(),
            ScopeRule::TenantOnly => tenant_id.is_some(),
            ScopeRule::Either => true,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    TenantsRead,
    TenantsWrite,
    CredentialsWrite,
    EventTypesWrite,
    EndpointsRead,
    EndpointsWrite,
    SubscriptionsRead,
    SubscriptionsWrite,
    SubscribersResolve,
    SecretsRead,
}

impl Permission {
    pub const ALL: [Permission; 10] = [
        Permission::TenantsRead,
        Permission::TenantsWrite,
        Permission::CredentialsWrite,
        Permission::EventTypesWrite,
        Permission::EndpointsRead,
        Permission::EndpointsWrite,
        Permission::SubscriptionsRead,
        Permission::SubscriptionsWrite,
        Permission::SubscribersResolve,
        Permission::SecretsRead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::TenantsRead => "tenants.read",
            Permission::TenantsWrite => "tenants.write",
            Permission::CredentialsWrite => "credentials.write",
            Permission::EventTypesWrite => "event_types.write",
            Permission::EndpointsRead => "endpoints.read",
            Permission::EndpointsWrite => "endpoints.write",
            Permission::SubscriptionsRead => "subscriptions.read",
            Permission::SubscriptionsWrite => "subscriptions.write",
            Permission::SubscribersResolve => "subscribers.resolve",
            Permission::SecretsRead => "secrets.read",
        }
    }

    const fn bit(self) -> u16 {
        1 << self as u16
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of permissions, one bit each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PermissionSet(u16);

impl PermissionSet {
    pub const EMPTY: PermissionSet = PermissionSet(0);
    pub const ALL: PermissionSet = PermissionSet::of(&Permission::ALL);

    pub const fn of(permissions: &[Permission]) -> PermissionSet {
        let mut bits = 0;
        let mut i = 0;
        while i < permissions.len() {
            bits |= permissions[i].bit();
            i += 1;
        }
        PermissionSet(bits)
    }

    pub fn contains(self, permission: Permission) -> bool {
        self.0 & permission.bit() != 0
    }

    pub fn is_subset_of(self, other: PermissionSet) -> bool {
        self.0 & !other.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_their_names() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("TENANT_ADMIN"), Some(Role::TenantAdmin));
        assert_eq!(Role::parse("tenant_admin"), None);
        assert_eq!(Role::parse(""), None);
    }

    #[test]
    fn platform_admin_has_every_permission() {
        for p in Permission::ALL {
            assert!(Role::PlatformAdmin.permissions().contains(p), "{p}");
        }
    }

    #[test]
    fn role_permissions_match_the_spec() {
        let names = |role: Role| {
            role.permissions()
                .iter()
                .map(Permission::as_str)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(Role::TenantAdmin),
            [
                "tenants.read",
                "credentials.write",
                "endpoints.read",
                "endpoints.write",
                "subscriptions.read",
                "subscriptions.write"
            ]
        );
        assert_eq!(
            names(Role::Dispatcher),
            ["subscribers.resolve", "secrets.read"]
        );
        assert_eq!(
            names(Role::Reader),
            ["tenants.read", "endpoints.read", "subscriptions.read"]
        );
    }

    #[test]
    fn subset_ordering_between_roles() {
        let perms = Role::permissions;
        for role in Role::ALL {
            assert!(perms(role).is_subset_of(perms(Role::PlatformAdmin)));
            assert!(perms(role).is_subset_of(perms(role)));
        }
        assert!(perms(Role::Reader).is_subset_of(perms(Role::TenantAdmin)));
        assert!(!perms(Role::Dispatcher).is_subset_of(perms(Role::TenantAdmin)));
        assert!(!perms(Role::TenantAdmin).is_subset_of(perms(Role::Reader)));
        assert!(PermissionSet::EMPTY.is_subset_of(perms(Role::Reader)));
    }

    #[test]
    fn scope_rules() {
        assert!(Role::PlatformAdmin.scope_rule().allows(None));
        assert!(!Role::PlatformAdmin.scope_rule().allows(Some("acme")));
        assert!(!Role::TenantAdmin.scope_rule().allows(None));
        assert!(Role::Reader.scope_rule().allows(Some("acme")));
        assert!(Role::Dispatcher.scope_rule().allows(None));
        assert!(Role::Dispatcher.scope_rule().allows(Some("acme")));
    }
}

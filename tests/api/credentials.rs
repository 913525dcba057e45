//! CredentialService: secrets shown once, revocation, no wider credentials.

use hookplane::proto::credential::Role;
use hookplane::proto::{
    CreateCredentialRequest, Credential, GetTenantRequest, ListCredentialsRequest,
    RevokeCredentialRequest,
};
use tonic::Code;

use crate::harness::*;

fn create_request(tenant_id: &str, role: Role) -> CreateCredentialRequest {
    CreateCredentialRequest {
        credential: Some(Credential {
            tenant_id: tenant_id.to_owned(),
            role: role as i32,
            description: "ci".to_owned(),
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

fn list_request(tenant_id: &str, show_revoked: bool) -> ListCredentialsRequest {
    ListCredentialsRequest {
        tenant_id: tenant_id.to_owned(),
        show_revoked,
        ..Default::default()
    }
}

async fn get_tenant(clients: &Clients, tenant_id: &str) -> Result<(), tonic::Status> {
    clients
        .tenants()
        .get_tenant(GetTenantRequest {
            tenant_id: tenant_id.to_owned(),
        })
        .await
        .map(drop)
}

async fn secret_is_returned_only_by_create(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    create_tenant(&admin, "acme").await;
    let created = ok(admin
        .credentials()
        .create_credential(create_request("acme", Role::TenantAdmin))
        .await);
    assert!(!created.api_id.is_empty());
    assert!(
        created.secret.len() >= 16,
        "a usable secret: {:?}",
        created.secret
    );
    assert_eq!(created.tenant_id, "acme");
    assert_eq!(created.role, Role::TenantAdmin as i32);
    assert_eq!(created.description, "ci");
    assert!(created.revoke_time.is_none());

    let listed = ok(admin
        .credentials()
        .list_credentials(list_request("acme", false))
        .await);
    assert_eq!(listed.credentials.len(), 1);
    let shown = &listed.credentials[0];
    assert_eq!(shown.api_id, created.api_id);
    assert!(shown.secret.is_empty(), "List never shows the secret");

    // The bootstrap admin is listed among platform-wide credentials, secretless.
    let platform = ok(admin
        .credentials()
        .list_credentials(list_request("", false))
        .await);
    let bootstrap = platform
        .credentials
        .iter()
        .find(|c| c.api_id == ADMIN_API_ID)
        .expect("bootstrap credential listed");
    assert_eq!(bootstrap.role, Role::PlatformAdmin as i32);
    assert!(bootstrap.secret.is_empty());
    assert!(
        platform.credentials.iter().all(|c| c.tenant_id.is_empty()),
        "only platform-wide credentials"
    );

    // The new credential signs calls for its tenant.
    let cred = Cred {
        api_id: created.api_id,
        secret: created.secret,
    };
    get_tenant(&server.clients(&cred), "acme")
        .await
        .expect("new credential works");
    server.stop().await;
}

async fn revoked_credential_is_refused_like_an_unknown_one(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    create_tenant(&admin, "acme").await;
    let cred = create_credential(&admin, "acme", Role::Reader).await;
    let user = server.clients(&cred);
    get_tenant(&user, "acme")
        .await
        .expect("works before revocation");

    let revoked = ok(admin
        .credentials()
        .revoke_credential(RevokeCredentialRequest {
            api_id: cred.api_id.clone(),
        })
        .await);
    assert!(revoked.revoke_time.is_some());
    assert!(revoked.secret.is_empty());

    let refused = expect_code(get_tenant(&user, "acme").await, Code::Unauthenticated);
    let unknown = Cred {
        api_id: "no-such-credential".to_owned(),
        secret: cred.secret.clone(),
    };
    let unknown_status = expect_code(
        get_tenant(&server.clients(&unknown), "acme").await,
        Code::Unauthenticated,
    );
    assert_eq!(refused.message(), unknown_status.message());

    let live = ok(admin
        .credentials()
        .list_credentials(list_request("acme", false))
        .await);
    assert!(live.credentials.is_empty(), "revoked hidden by default");
    let all = ok(admin
        .credentials()
        .list_credentials(list_request("acme", true))
        .await);
    assert_eq!(all.credentials.len(), 1);
    assert!(all.credentials[0].revoke_time.is_some());

    expect_code(
        admin
            .credentials()
            .revoke_credential(RevokeCredentialRequest {
                api_id: "no-such-credential".to_owned(),
            })
            .await,
        Code::NotFound,
    );
    server.stop().await;
}

async fn tenant_admin_cannot_mint_wider_credentials(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    create_tenant(&admin, "acme").await;
    create_tenant(&admin, "other").await;
    let tenant_admin = create_credential(&admin, "acme", Role::TenantAdmin).await;
    let mut credentials = server.clients(&tenant_admin).credentials();

    for (tenant, role) in [
        ("acme", Role::Dispatcher),
        ("", Role::Dispatcher),
        ("", Role::PlatformAdmin),
        ("other", Role::TenantAdmin),
        ("other", Role::Reader),
    ] {
        let status = expect_code(
            credentials
                .create_credential(create_request(tenant, role))
                .await,
            Code::PermissionDenied,
        );
        assert!(!status.message().is_empty(), "{tenant:?} {role:?}");
    }

    // Same or narrower, on its own tenant (empty tenant_id means its own).
    let reader = ok(credentials
        .create_credential(create_request("", Role::Reader))
        .await);
    assert_eq!(reader.tenant_id, "acme");
    assert_eq!(reader.role, Role::Reader as i32);
    let peer = ok(credentials
        .create_credential(create_request("acme", Role::TenantAdmin))
        .await);
    assert_eq!(peer.tenant_id, "acme");

    // Only these two were created for acme (plus the tenant admin itself).
    let listed = ok(admin
        .credentials()
        .list_credentials(list_request("acme", false))
        .await);
    assert_eq!(listed.credentials.len(), 3);
    let other = ok(admin
        .credentials()
        .list_credentials(list_request("other", false))
        .await);
    assert!(other.credentials.is_empty());
    server.stop().await;
}

async fn credential_validation(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    create_tenant(&admin, "acme").await;
    let mut credentials = admin.credentials();
    expect_invalid(
        credentials
            .create_credential(create_request("acme", Role::Unspecified))
            .await,
        "credential.role",
    );
    expect_invalid(
        credentials
            .create_credential(CreateCredentialRequest {
                credential: Some(Credential {
                    tenant_id: "acme".to_owned(),
                    role: 42,
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await,
        "credential.role",
    );
    // A platform admin is never bound to a tenant; tenant roles always are.
    expect_invalid(
        credentials
            .create_credential(create_request("acme", Role::PlatformAdmin))
            .await,
        "credential.tenant_id",
    );
    expect_invalid(
        credentials
            .create_credential(create_request("", Role::TenantAdmin))
            .await,
        "credential.tenant_id",
    );
    expect_invalid(
        credentials
            .create_credential(create_request("Not Valid", Role::Reader))
            .await,
        "credential.tenant_id",
    );
    expect_code(
        credentials
            .create_credential(create_request("ghost", Role::Reader))
            .await,
        Code::NotFound,
    );
    expect_invalid(
        credentials
            .list_credentials(ListCredentialsRequest {
                page_size: -3,
                ..Default::default()
            })
            .await,
        "page_size",
    );
    expect_invalid(
        credentials
            .revoke_credential(RevokeCredentialRequest {
                api_id: String::new(),
            })
            .await,
        "api_id",
    );
    let listed = ok(credentials
        .list_credentials(list_request("acme", true))
        .await);
    assert!(listed.credentials.is_empty(), "nothing half-written");
    server.stop().await;
}

async fn readers_and_dispatchers_cannot_manage_credentials(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    create_tenant(&admin, "acme").await;
    let reader = create_credential(&admin, "acme", Role::Reader).await;
    let dispatcher = create_credential(&admin, "", Role::Dispatcher).await;
    for cred in [&reader, &dispatcher] {
        let mut credentials = server.clients(cred).credentials();
        expect_code(
            credentials
                .create_credential(create_request("acme", Role::Reader))
                .await,
            Code::PermissionDenied,
        );
        expect_code(
            credentials
                .list_credentials(list_request("acme", false))
                .await,
            Code::PermissionDenied,
        );
        expect_code(
            credentials
                .revoke_credential(RevokeCredentialRequest {
                    api_id: reader.api_id.clone(),
                })
                .await,
            Code::PermissionDenied,
        );
    }
    get_tenant(&server.clients(&reader), "acme")
        .await
        .expect("the reader was not revoked");
    server.stop().await;
}

async fn tenant_admin_manages_only_its_own_credentials(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    create_tenant(&admin, "acme").await;
    create_tenant(&admin, "other").await;
    let acme_admin = create_credential(&admin, "acme", Role::TenantAdmin).await;
    let acme_reader = create_credential(&admin, "acme", Role::Reader).await;
    let other_reader = create_credential(&admin, "other", Role::Reader).await;
    let mut credentials = server.clients(&acme_admin).credentials();

    let own = ok(credentials.list_credentials(list_request("", false)).await);
    let mut ids: Vec<_> = own.credentials.iter().map(|c| c.api_id.clone()).collect();
    ids.sort();
    let mut expected = vec![acme_admin.api_id.clone(), acme_reader.api_id.clone()];
    expected.sort();
    assert_eq!(ids, expected, "empty tenant_id lists its own tenant");
    assert!(own.credentials.iter().all(|c| c.secret.is_empty()));

    expect_code(
        credentials
            .list_credentials(list_request("other", false))
            .await,
        Code::PermissionDenied,
    );

    // Another tenant's credential and the platform admin stay untouched,
    // whether the refusal says "not yours" or "not found".
    for api_id in [&other_reader.api_id, &ADMIN_API_ID.to_owned()] {
        let status = credentials
            .revoke_credential(RevokeCredentialRequest {
                api_id: api_id.clone(),
            })
            .await
            .expect_err("must not revoke outside its tenant");
        assert!(
            matches!(status.code(), Code::PermissionDenied | Code::NotFound),
            "{status:?}"
        );
    }
    get_tenant(&server.clients(&other_reader), "other")
        .await
        .expect("other tenant's reader still works");
    get_tenant(&admin, "acme").await.expect("admin still works");

    let revoked = ok(credentials
        .revoke_credential(RevokeCredentialRequest {
            api_id: acme_reader.api_id.clone(),
        })
        .await);
    assert!(revoked.revoke_time.is_some());
    server.stop().await;
}

async fn create_credential_request_id_returns_the_same_secret(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    create_tenant(&admin, "acme").await;
    let mut credentials = admin.credentials();
    let request = CreateCredentialRequest {
        request_id: "cred-req-0001".to_owned(),
        ..create_request("acme", Role::Reader)
    };
    let first = ok(credentials.create_credential(request.clone()).await);
    let retry = ok(credentials.create_credential(request.clone()).await);
    assert_eq!(retry.api_id, first.api_id);
    assert_eq!(
        retry.secret, first.secret,
        "the stored response holds the secret"
    );
    assert!(!retry.secret.is_empty());

    expect_invalid(
        credentials
            .create_credential(CreateCredentialRequest {
                request_id: "cred-req-0001".to_owned(),
                ..create_request("acme", Role::TenantAdmin)
            })
            .await,
        "request_id",
    );
    let listed = ok(credentials
        .list_credentials(list_request("acme", false))
        .await);
    assert_eq!(
        listed.credentials.len(),
        1,
        "one credential despite the retry"
    );
    server.stop().await;
}

backend_tests!(
    secret_is_returned_only_by_create,
    revoked_credential_is_refused_like_an_unknown_one,
    tenant_admin_cannot_mint_wider_credentials,
    credential_validation,
    readers_and_dispatchers_cannot_manage_credentials,
    tenant_admin_manages_only_its_own_credentials,
    create_credential_request_id_returns_the_same_secret,
);

//! Everything a caller stored is still there after a restart on the same
//! data directory or database.

use hookplane::proto::credential::Role;
use hookplane::proto::get_event_type_request::Key as TypeKey;
use hookplane::proto::subscription::Status as SubStatus;
use hookplane::proto::{
    CreateEndpointRequest, DeleteSubscriptionRequest, GetEndpointRequest, GetEventTypeRequest,
    GetSubscriptionRequest, GetTenantRequest, ListCredentialsRequest, ListSubscriptionsRequest,
    RevokeCredentialRequest, Subscription,
};
use tonic::Code;

use crate::harness::*;

async fn data_survives_a_restart(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let live = create_subscription(
        &admin,
        Subscription {
            name: "live".to_owned(),
            ..subscription(TENANT, ENDPOINT, &["command.*"])
        },
    )
    .await;
    let doomed = create_subscription(&admin, subscription(TENANT, ENDPOINT, &["*"])).await;
    ok(admin
        .subscriptions()
        .delete_subscription(DeleteSubscriptionRequest {
            tenant_id: TENANT.to_owned(),
            subscription_id: doomed.subscription_id.clone(),
            etag: String::new(),
        })
        .await);
    let keeper = create_credential(&admin, TENANT, Role::TenantAdmin).await;
    let revoked = create_credential(&admin, TENANT, Role::Reader).await;
    ok(admin
        .credentials()
        .revoke_credential(RevokeCredentialRequest {
            api_id: revoked.api_id.clone(),
        })
        .await);
    let endpoint_request = CreateEndpointRequest {
        endpoint: Some(endpoint(TENANT, "", URL)),
        request_id: "restart-endpoint-1".to_owned(),
    };
    let with_secret = ok(admin
        .endpoints()
        .create_endpoint(endpoint_request.clone())
        .await);

    let tenant_before = ok(admin
        .tenants()
        .get_tenant(GetTenantRequest {
            tenant_id: TENANT.to_owned(),
        })
        .await);
    let type_before = ok(admin
        .event_types()
        .get_event_type(GetEventTypeRequest {
            key: Some(TypeKey::LegacyCode(1002)),
        })
        .await);
    let endpoint_before = ok(admin
        .endpoints()
        .get_endpoint(GetEndpointRequest {
            tenant_id: TENANT.to_owned(),
            endpoint_id: ENDPOINT.to_owned(),
        })
        .await);

    let server = server.restart().await;
    let admin = server.admin();

    assert_eq!(
        ok(admin
            .tenants()
            .get_tenant(GetTenantRequest {
                tenant_id: TENANT.to_owned(),
            })
            .await),
        tenant_before
    );
    assert_eq!(
        ok(admin
            .event_types()
            .get_event_type(GetEventTypeRequest {
                key: Some(TypeKey::LegacyCode(1002)),
            })
            .await),
        type_before
    );
    assert_eq!(
        ok(admin
            .endpoints()
            .get_endpoint(GetEndpointRequest {
                tenant_id: TENANT.to_owned(),
                endpoint_id: ENDPOINT.to_owned(),
            })
            .await),
        endpoint_before
    );
    let get = |id: &str| GetSubscriptionRequest {
        tenant_id: TENANT.to_owned(),
        subscription_id: id.to_owned(),
    };
    assert_eq!(
        ok(admin
            .subscriptions()
            .get_subscription(get(&live.subscription_id))
            .await),
        live
    );
    let gone = ok(admin
        .subscriptions()
        .get_subscription(get(&doomed.subscription_id))
        .await);
    assert_eq!(status_of(&gone), SubStatus::Deleted);
    let listed = ok(admin
        .subscriptions()
        .list_subscriptions(ListSubscriptionsRequest {
            tenant_id: TENANT.to_owned(),
            ..Default::default()
        })
        .await);
    assert_eq!(listed.subscriptions, std::slice::from_ref(&live));
    // The name is still taken.
    expect_code(
        admin
            .subscriptions()
            .create_subscription(create_subscription_request(Subscription {
                name: "live".to_owned(),
                ..subscription(TENANT, ENDPOINT, &["*"])
            }))
            .await,
        Code::AlreadyExists,
    );

    // Credentials: the kept one signs (its secret was stored encrypted and
    // reloaded), the revoked one stays revoked.
    let keeper_clients = server.clients(&keeper);
    ok(keeper_clients
        .tenants()
        .get_tenant(GetTenantRequest {
            tenant_id: TENANT.to_owned(),
        })
        .await);
    expect_code(
        server
            .clients(&revoked)
            .tenants()
            .get_tenant(GetTenantRequest {
                tenant_id: TENANT.to_owned(),
            })
            .await,
        Code::Unauthenticated,
    );
    let creds = ok(admin
        .credentials()
        .list_credentials(ListCredentialsRequest {
            tenant_id: TENANT.to_owned(),
            show_revoked: true,
            ..Default::default()
        })
        .await);
    assert_eq!(creds.credentials.len(), 2);

    // An idempotent retry still returns the first response, secret included.
    let retried = ok(admin.endpoints().create_endpoint(endpoint_request).await);
    assert_eq!(retried, with_secret);

    // And the server keeps taking writes.
    create_subscription(&admin, subscription(TENANT, ENDPOINT, &["alarm-raised"])).await;
    server.stop().await;
}

async fn bootstrap_credential_is_kept_not_duplicated(backend: Backend) {
    let server = backend.start().await;
    let server = server.restart().await;
    let server = server.restart().await;
    let platform = ok(server
        .admin()
        .credentials()
        .list_credentials(ListCredentialsRequest::default())
        .await);
    let bootstraps = platform
        .credentials
        .iter()
        .filter(|c| c.api_id == ADMIN_API_ID)
        .count();
    assert_eq!(bootstraps, 1, "one bootstrap credential after three starts");
    server.stop().await;
}

backend_tests!(
    data_survives_a_restart,
    bootstrap_credential_is_kept_not_duplicated
);

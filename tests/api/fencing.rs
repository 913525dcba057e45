//! Tenant fencing and roles on every service, and the order of checks
//! (authentication, permission, validation, existence, etag).

use hookplane::proto::credential::Role;
use hookplane::proto::{
    CreateCredentialRequest, CreateEndpointRequest, CreateEventTypeRequest, CreateTenantRequest,
    Credential, DeleteEndpointRequest, DeleteSubscriptionRequest, DeleteTenantRequest, Endpoint,
    GetEndpointRequest, GetEventTypeRequest, GetSubscriptionRequest, GetTenantRequest,
    ListCredentialsRequest, ListEndpointsRequest, ListEventTypesRequest, ListSubscriptionsRequest,
    ListTenantsRequest, RenewSubscriptionRequest, Subscription, Tenant, UpdateEndpointRequest,
    UpdateEventTypeRequest, UpdateSubscriptionRequest, UpdateTenantRequest,
    ValidateEventPayloadRequest, get_event_type_request, validate_event_payload_request,
};
use tonic::{Code, Status};

use crate::harness::*;

const OTHER: &str = "other";
const OTHER_SUB: &str = "other-sub";

/// Tenant [`OTHER`] with an endpoint and a subscription, beside the fixture.
async fn two_tenants(backend: &Backend) -> (TestServer, Clients) {
    let (server, admin) = fixture(backend).await;
    create_tenant(&admin, OTHER).await;
    create_endpoint(&admin, OTHER, ENDPOINT, URL).await;
    create_subscription(
        &admin,
        Subscription {
            subscription_id: OTHER_SUB.to_owned(),
            ..subscription(OTHER, ENDPOINT, &["command.completed"])
        },
    )
    .await;
    (server, admin)
}

/// Every write a tenant-scoped caller could aim at `tenant`, each reduced to
/// its outcome.
async fn tenant_writes(c: &Clients, tenant: &str) -> Vec<(&'static str, Result<(), Status>)> {
    let t = tenant.to_owned();
    let e = ENDPOINT.to_owned();
    vec![
        (
            "UpdateTenant",
            c.tenants()
                .update_tenant(UpdateTenantRequest {
                    tenant: Some(Tenant {
                        tenant_id: t.clone(),
                        display_name: "pwned".to_owned(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["display_name"]),
                })
                .await
                .map(drop),
        ),
        (
            "DeleteTenant",
            c.tenants()
                .delete_tenant(DeleteTenantRequest {
                    tenant_id: t.clone(),
                    etag: String::new(),
                    force: true,
                })
                .await
                .map(drop),
        ),
        (
            "CreateEndpoint",
            c.endpoints()
                .create_endpoint(CreateEndpointRequest {
                    endpoint: Some(endpoint(&t, "intruder", URL)),
                    request_id: String::new(),
                })
                .await
                .map(drop),
        ),
        (
            "UpdateEndpoint",
            c.endpoints()
                .update_endpoint(UpdateEndpointRequest {
                    endpoint: Some(Endpoint {
                        url: "https://evil.example.com/".to_owned(),
                        ..endpoint(&t, &e, URL)
                    }),
                    update_mask: mask(&["url"]),
                    allow_missing: false,
                })
                .await
                .map(drop),
        ),
        (
            "DeleteEndpoint",
            c.endpoints()
                .delete_endpoint(DeleteEndpointRequest {
                    tenant_id: t.clone(),
                    endpoint_id: e.clone(),
                    etag: String::new(),
                    force: true,
                })
                .await
                .map(drop),
        ),
        (
            "CreateSubscription",
            c.subscriptions()
                .create_subscription(create_subscription_request(subscription(
                    &t,
                    &e,
                    &["command.accepted"],
                )))
                .await
                .map(drop),
        ),
        (
            "UpdateSubscription",
            c.subscriptions()
                .update_subscription(UpdateSubscriptionRequest {
                    subscription: Some(Subscription {
                        subscription_id: OTHER_SUB.to_owned(),
                        ..subscription(&t, &e, &["*"])
                    }),
                    update_mask: mask(&["event_types"]),
                    allow_missing: false,
                })
                .await
                .map(drop),
        ),
        (
            "DeleteSubscription",
            c.subscriptions()
                .delete_subscription(DeleteSubscriptionRequest {
                    tenant_id: t.clone(),
                    subscription_id: OTHER_SUB.to_owned(),
                    etag: String::new(),
                })
                .await
                .map(drop),
        ),
        (
            "RenewSubscription",
            c.subscriptions()
                .renew_subscription(RenewSubscriptionRequest {
                    tenant_id: t.clone(),
                    subscription_id: OTHER_SUB.to_owned(),
                    ttl_seconds: 60,
                })
                .await
                .map(drop),
        ),
    ]
}

/// Every read of `tenant`'s resources.
async fn tenant_reads(c: &Clients, tenant: &str) -> Vec<(&'static str, Result<(), Status>)> {
    vec![
        (
            "GetTenant",
            c.tenants()
                .get_tenant(GetTenantRequest {
                    tenant_id: tenant.to_owned(),
                })
                .await
                .map(drop),
        ),
        (
            "GetEndpoint",
            c.endpoints()
                .get_endpoint(GetEndpointRequest {
                    tenant_id: tenant.to_owned(),
                    endpoint_id: ENDPOINT.to_owned(),
                })
                .await
                .map(drop),
        ),
        (
            "ListEndpoints",
            c.endpoints()
                .list_endpoints(ListEndpointsRequest {
                    tenant_id: tenant.to_owned(),
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "ListSubscriptions",
            c.subscriptions()
                .list_subscriptions(ListSubscriptionsRequest {
                    tenant_id: tenant.to_owned(),
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
    ]
}

/// Platform-only writes: tenants and the catalog.
async fn platform_writes(c: &Clients) -> Vec<(&'static str, Result<(), Status>)> {
    vec![
        (
            "CreateTenant",
            c.tenants()
                .create_tenant(CreateTenantRequest {
                    tenant: Some(Tenant {
                        tenant_id: "newco".to_owned(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                })
                .await
                .map(drop),
        ),
        (
            "CreateEventType",
            c.event_types()
                .create_event_type(CreateEventTypeRequest {
                    event_type: Some(event_type("sneaky.event")),
                    request_id: String::new(),
                })
                .await
                .map(drop),
        ),
        (
            "UpdateEventType",
            c.event_types()
                .update_event_type(UpdateEventTypeRequest {
                    event_type: Some(hookplane::proto::EventType {
                        deprecated: true,
                        ..event_type("command.completed")
                    }),
                    update_mask: mask(&["deprecated"]),
                })
                .await
                .map(drop),
        ),
    ]
}

#[track_caller]
fn all_denied(calls: Vec<(&'static str, Result<(), Status>)>) {
    for (name, result) in calls {
        match result {
            Err(status) if status.code() == Code::PermissionDenied => {}
            other => panic!("{name}: expected PERMISSION_DENIED, got {other:?}"),
        }
    }
}

#[track_caller]
fn all_ok(calls: Vec<(&'static str, Result<(), Status>)>) {
    for (name, result) in calls {
        if let Err(status) = result {
            panic!(
                "{name}: expected OK, got {:?}: {}",
                status.code(),
                status.message()
            );
        }
    }
}

/// What the admin sees of OTHER, to prove nothing changed.
async fn snapshot(admin: &Clients) -> (Tenant, Endpoint, Subscription, usize) {
    let tenant = ok(admin
        .tenants()
        .get_tenant(GetTenantRequest {
            tenant_id: OTHER.to_owned(),
        })
        .await);
    let endpoint = ok(admin
        .endpoints()
        .get_endpoint(GetEndpointRequest {
            tenant_id: OTHER.to_owned(),
            endpoint_id: ENDPOINT.to_owned(),
        })
        .await);
    let sub = ok(admin
        .subscriptions()
        .get_subscription(GetSubscriptionRequest {
            tenant_id: OTHER.to_owned(),
            subscription_id: OTHER_SUB.to_owned(),
        })
        .await);
    let count = ok(admin
        .subscriptions()
        .list_subscriptions(ListSubscriptionsRequest {
            tenant_id: OTHER.to_owned(),
            show_deleted: true,
            ..Default::default()
        })
        .await)
    .subscriptions
    .len();
    (tenant, endpoint, sub, count)
}

async fn tenant_admin_is_fenced_to_its_tenant(backend: Backend) {
    let (server, admin) = two_tenants(&backend).await;
    let before = snapshot(&admin).await;
    let cred = create_credential(&admin, TENANT, Role::TenantAdmin).await;
    let c = server.clients(&cred);

    all_denied(tenant_writes(&c, OTHER).await);
    all_denied(tenant_reads(&c, OTHER).await);
    all_denied(platform_writes(&c).await);
    all_denied(vec![
        (
            "GetSubscription",
            c.subscriptions()
                .get_subscription(GetSubscriptionRequest {
                    tenant_id: OTHER.to_owned(),
                    subscription_id: OTHER_SUB.to_owned(),
                })
                .await
                .map(drop),
        ),
        (
            "CreateCredential",
            c.credentials()
                .create_credential(CreateCredentialRequest {
                    credential: Some(Credential {
                        tenant_id: OTHER.to_owned(),
                        role: Role::Reader as i32,
                        ..Default::default()
                    }),
                    request_id: String::new(),
                })
                .await
                .map(drop),
        ),
        (
            "ListCredentials",
            c.credentials()
                .list_credentials(ListCredentialsRequest {
                    tenant_id: OTHER.to_owned(),
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
    ]);
    // A denied call on a key that does not exist says the same: no probing.
    expect_code(
        c.endpoints()
            .get_endpoint(GetEndpointRequest {
                tenant_id: "no-such-tenant".to_owned(),
                endpoint_id: ENDPOINT.to_owned(),
            })
            .await,
        Code::PermissionDenied,
    );

    // Its own tenant and the catalog are fine.
    all_ok(tenant_reads(&c, TENANT).await);
    all_ok(vec![
        (
            "ListEventTypes",
            c.event_types()
                .list_event_types(ListEventTypesRequest::default())
                .await
                .map(drop),
        ),
        (
            "GetEventType",
            c.event_types()
                .get_event_type(GetEventTypeRequest {
                    key: Some(get_event_type_request::Key::Name(
                        "command.completed".to_owned(),
                    )),
                })
                .await
                .map(drop),
        ),
    ]);
    // ListTenants never reveals another tenant.
    if let Ok(list) = c
        .tenants()
        .list_tenants(ListTenantsRequest::default())
        .await
    {
        let ids: Vec<_> = list
            .get_ref()
            .tenants
            .iter()
            .map(|t| t.tenant_id.as_str())
            .collect();
        assert_eq!(ids, [TENANT], "a tenant admin lists only its own tenant");
    }
    assert_eq!(
        snapshot(&admin).await,
        before,
        "the other tenant is untouched"
    );
    server.stop().await;
}

async fn reader_cannot_write(backend: Backend) {
    let (server, admin) = two_tenants(&backend).await;
    let cred = create_credential(&admin, TENANT, Role::Reader).await;
    let c = server.clients(&cred);
    // Give the reader's own tenant the same shape as OTHER, so a write that
    // slipped through would succeed rather than fail for another reason.
    create_subscription(
        &admin,
        Subscription {
            subscription_id: OTHER_SUB.to_owned(),
            ..subscription(TENANT, ENDPOINT, &["command.completed"])
        },
    )
    .await;
    all_denied(tenant_writes(&c, TENANT).await);
    all_denied(platform_writes(&c).await);
    all_denied(tenant_reads(&c, OTHER).await);
    all_ok(tenant_reads(&c, TENANT).await);
    all_ok(vec![
        (
            "GetSubscription",
            c.subscriptions()
                .get_subscription(GetSubscriptionRequest {
                    tenant_id: TENANT.to_owned(),
                    subscription_id: OTHER_SUB.to_owned(),
                })
                .await
                .map(drop),
        ),
        (
            "ValidateEventPayload",
            c.event_types()
                .validate_event_payload(ValidateEventPayloadRequest {
                    key: Some(validate_event_payload_request::Key::EventType(
                        "command.completed".to_owned(),
                    )),
                    payload_json: "{}".to_owned(),
                })
                .await
                .map(drop),
        ),
    ]);
    let sub = ok(admin
        .subscriptions()
        .get_subscription(GetSubscriptionRequest {
            tenant_id: TENANT.to_owned(),
            subscription_id: OTHER_SUB.to_owned(),
        })
        .await);
    assert_eq!(sub.event_types, ["command.completed"], "unchanged");
    server.stop().await;
}

async fn dispatcher_cannot_manage_resources(backend: Backend) {
    let (server, admin) = two_tenants(&backend).await;
    let cred = create_credential(&admin, "", Role::Dispatcher).await;
    let c = server.clients(&cred);
    all_denied(tenant_writes(&c, OTHER).await);
    all_denied(platform_writes(&c).await);
    server.stop().await;
}

async fn empty_tenant_id_means_the_callers_own_tenant(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let cred = create_credential(&admin, TENANT, Role::TenantAdmin).await;
    let c = server.clients(&cred);
    let ep = ok(c
        .endpoints()
        .create_endpoint(CreateEndpointRequest {
            endpoint: Some(endpoint("", "ep-own", URL)),
            request_id: String::new(),
        })
        .await);
    assert_eq!(ep.tenant_id, TENANT);
    let sub = ok(c
        .subscriptions()
        .create_subscription(create_subscription_request(subscription(
            "",
            "ep-own",
            &["command.completed"],
        )))
        .await);
    assert_eq!(sub.tenant_id, TENANT);
    let got = ok(c
        .subscriptions()
        .get_subscription(GetSubscriptionRequest {
            tenant_id: String::new(),
            subscription_id: sub.subscription_id.clone(),
        })
        .await);
    assert_eq!(got, sub);
    let listed = ok(c
        .endpoints()
        .list_endpoints(ListEndpointsRequest::default())
        .await);
    let ids: Vec<_> = listed
        .endpoints
        .iter()
        .map(|e| e.endpoint_id.as_str())
        .collect();
    assert_eq!(ids, [ENDPOINT, "ep-own"]);
    let tenant = ok(c.tenants().get_tenant(GetTenantRequest::default()).await);
    assert_eq!(tenant.tenant_id, TENANT);

    // A platform admin has no tenant of its own: the field is required.
    expect_invalid(
        admin
            .endpoints()
            .create_endpoint(CreateEndpointRequest {
                endpoint: Some(endpoint("", "ep-x", URL)),
                request_id: String::new(),
            })
            .await,
        "endpoint.tenant_id",
    );
    expect_invalid(
        admin
            .subscriptions()
            .list_subscriptions(ListSubscriptionsRequest::default())
            .await,
        "tenant_id",
    );
    server.stop().await;
}

async fn permission_is_checked_before_validation(backend: Backend) {
    let (server, admin) = two_tenants(&backend).await;
    let reader = create_credential(&admin, TENANT, Role::Reader).await;
    let tenant_admin = create_credential(&admin, TENANT, Role::TenantAdmin).await;
    let bad_endpoint = || CreateEndpointRequest {
        endpoint: Some(endpoint(TENANT, "NOT VALID", "ftp://user:pw@10.0.0.1/#x")),
        request_id: String::new(),
    };
    // A reader may not write at all, so the bad body is never looked at.
    expect_code(
        server
            .clients(&reader)
            .endpoints()
            .create_endpoint(bad_endpoint())
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        server
            .clients(&reader)
            .subscriptions()
            .create_subscription(create_subscription_request(subscription(
                TENANT,
                ENDPOINT,
                &[],
            )))
            .await,
        Code::PermissionDenied,
    );
    // Another tenant's key with a bad body: still the permission problem.
    expect_code(
        server
            .clients(&tenant_admin)
            .endpoints()
            .create_endpoint(CreateEndpointRequest {
                endpoint: Some(endpoint(OTHER, "NOT VALID", "ftp://x")),
                request_id: String::new(),
            })
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        server
            .clients(&tenant_admin)
            .event_types()
            .create_event_type(CreateEventTypeRequest {
                event_type: Some(event_type("x")),
                request_id: String::new(),
            })
            .await,
        Code::PermissionDenied,
    );
    // The same bad body from an allowed caller is a validation error.
    expect_code(
        server
            .clients(&tenant_admin)
            .endpoints()
            .create_endpoint(bad_endpoint())
            .await,
        Code::InvalidArgument,
    );
    server.stop().await;
}

async fn validation_before_existence_before_etag(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let mut subs = admin.subscriptions();
    // Bad key on a missing tenant: validation wins.
    expect_invalid(
        subs.get_subscription(GetSubscriptionRequest {
            tenant_id: "ghost".to_owned(),
            subscription_id: "Not Valid!".to_owned(),
        })
        .await,
        "subscription_id",
    );
    expect_invalid(
        admin
            .endpoints()
            .get_endpoint(GetEndpointRequest {
                tenant_id: "Ghost Tenant".to_owned(),
                endpoint_id: ENDPOINT.to_owned(),
            })
            .await,
        "tenant_id",
    );
    // Missing resource with a stale etag: existence wins.
    expect_code(
        subs.delete_subscription(DeleteSubscriptionRequest {
            tenant_id: TENANT.to_owned(),
            subscription_id: "missing".to_owned(),
            etag: "stale".to_owned(),
        })
        .await,
        Code::NotFound,
    );
    expect_code(
        admin
            .endpoints()
            .delete_endpoint(DeleteEndpointRequest {
                tenant_id: TENANT.to_owned(),
                endpoint_id: "missing".to_owned(),
                etag: "stale".to_owned(),
                force: false,
            })
            .await,
        Code::NotFound,
    );
    // Invalid body on a missing subscription: validation wins.
    expect_invalid(
        subs.update_subscription(UpdateSubscriptionRequest {
            subscription: Some(Subscription {
                subscription_id: "missing".to_owned(),
                ..subscription(TENANT, ENDPOINT, &["agent*"])
            }),
            update_mask: mask(&["event_types"]),
            allow_missing: false,
        })
        .await,
        "subscription.event_types[0]",
    );
    server.stop().await;
}

backend_tests!(
    tenant_admin_is_fenced_to_its_tenant,
    reader_cannot_write,
    dispatcher_cannot_manage_resources,
    empty_tenant_id_means_the_callers_own_tenant,
    permission_is_checked_before_validation,
    validation_before_existence_before_etag,
);

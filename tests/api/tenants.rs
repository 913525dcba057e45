//! TenantService: keys, standard methods, paging, etags, suspension, delete.

use hookplane::proto::tenant::{Settings, State};
use hookplane::proto::{
    CreateTenantRequest, DeleteTenantRequest, GetSubscriptionRequest, GetTenantRequest,
    ListCredentialsRequest, ListEndpointsRequest, ListSubscriptionsRequest, ListTenantsRequest,
    ResolveSubscribersRequest, Tenant, UpdateTenantRequest,
};
use tonic::Code;

use crate::harness::*;

fn create_request(tenant_id: &str) -> CreateTenantRequest {
    CreateTenantRequest {
        tenant: Some(Tenant {
            tenant_id: tenant_id.to_owned(),
            display_name: "Acme Corp".to_owned(),
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

async fn list_all(admin: &Clients) -> Vec<String> {
    ok(admin
        .tenants()
        .list_tenants(ListTenantsRequest::default())
        .await)
    .tenants
    .into_iter()
    .map(|t| t.tenant_id)
    .collect()
}

async fn create_get_list_round_trip(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    let settings = Settings {
        require_verification: true,
        https_only: true,
        default_ttl_seconds: 3600,
        max_ttl_seconds: 7200,
    };
    let response = admin
        .tenants()
        .create_tenant(CreateTenantRequest {
            tenant: Some(Tenant {
                tenant_id: "acme".to_owned(),
                display_name: "Acme Corp".to_owned(),
                settings: Some(settings),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .expect("create tenant");
    assert!(
        revision(response.metadata()) > 0,
        "a write reports its revision"
    );
    let created = response.into_inner();
    assert_eq!(created.tenant_id, "acme");
    assert_eq!(created.display_name, "Acme Corp");
    assert_eq!(
        created.state,
        State::Active as i32,
        "new tenants are ACTIVE"
    );
    assert_eq!(created.settings, Some(settings));
    assert!(created.create_time.is_some() && created.update_time.is_some());
    assert!(!created.etag.is_empty());

    let got = ok(admin
        .tenants()
        .get_tenant(GetTenantRequest {
            tenant_id: "acme".to_owned(),
        })
        .await);
    assert_eq!(got, created, "Get shows what Create returned");
    assert_eq!(list_all(&admin).await, ["acme"]);
    server.stop().await;
}

async fn tenant_id_rules(backend: Backend) {
    let server = backend.start().await;
    let mut tenants = server.admin().tenants();
    let too_long = "a".repeat(64);
    for bad in [
        "",
        "a",
        "Acme",
        "-acme",
        "_acme",
        "acme!",
        "ac me",
        "acme.corp",
        &too_long,
    ] {
        let status = expect_invalid(
            tenants.create_tenant(create_request(bad)).await,
            "tenant.tenant_id",
        );
        assert!(!status.message().is_empty(), "{bad:?}: one clear sentence");
    }
    let longest = format!("a{}", "b".repeat(62));
    for good in ["a1", "0-_x", "acme-corp_2", longest.as_str()] {
        let created = ok(tenants.create_tenant(create_request(good)).await);
        assert_eq!(created.tenant_id, good);
    }
    let got = ok(tenants
        .get_tenant(GetTenantRequest {
            tenant_id: longest.clone(),
        })
        .await);
    assert_eq!(got.tenant_id, longest);
    server.stop().await;
}

async fn tenant_bad_enum_and_settings(backend: Backend) {
    let server = backend.start().await;
    let mut tenants = server.admin().tenants();
    let with = |tenant: Tenant| CreateTenantRequest {
        tenant: Some(Tenant {
            tenant_id: "acme".to_owned(),
            ..tenant
        }),
        request_id: String::new(),
    };
    expect_invalid(
        tenants
            .create_tenant(with(Tenant {
                state: 99,
                ..Default::default()
            }))
            .await,
        "tenant.state",
    );
    expect_invalid(
        tenants
            .create_tenant(with(Tenant {
                settings: Some(Settings {
                    default_ttl_seconds: -1,
                    ..Default::default()
                }),
                ..Default::default()
            }))
            .await,
        "tenant.settings.default_ttl_seconds",
    );
    expect_invalid(
        tenants
            .create_tenant(with(Tenant {
                settings: Some(Settings {
                    max_ttl_seconds: -5,
                    ..Default::default()
                }),
                ..Default::default()
            }))
            .await,
        "tenant.settings.max_ttl_seconds",
    );
    // A default above the maximum could never be used.
    let status = expect_code(
        tenants
            .create_tenant(with(Tenant {
                settings: Some(Settings {
                    default_ttl_seconds: 7200,
                    max_ttl_seconds: 3600,
                    ..Default::default()
                }),
                ..Default::default()
            }))
            .await,
        Code::InvalidArgument,
    );
    let fields = violation_fields(&status);
    assert!(
        fields.iter().any(|f| f.starts_with("tenant.settings.")),
        "names a settings field: {fields:?}"
    );
    // Nothing was half-written by the refused creates.
    expect_code(
        tenants
            .get_tenant(GetTenantRequest {
                tenant_id: "acme".to_owned(),
            })
            .await,
        Code::NotFound,
    );
    server.stop().await;
}

async fn duplicate_tenant_is_already_exists(backend: Backend) {
    let server = backend.start().await;
    let mut tenants = server.admin().tenants();
    let first = ok(tenants.create_tenant(create_request("acme")).await);
    expect_code(
        tenants.create_tenant(create_request("acme")).await,
        Code::AlreadyExists,
    );
    let got = ok(tenants
        .get_tenant(GetTenantRequest {
            tenant_id: "acme".to_owned(),
        })
        .await);
    assert_eq!(got.etag, first.etag, "the refused create changed nothing");
    server.stop().await;
}

async fn get_tenant_validation_before_existence(backend: Backend) {
    let server = backend.start().await;
    let mut tenants = server.admin().tenants();
    expect_code(
        tenants
            .get_tenant(GetTenantRequest {
                tenant_id: "ghost".to_owned(),
            })
            .await,
        Code::NotFound,
    );
    expect_invalid(
        tenants
            .get_tenant(GetTenantRequest {
                tenant_id: "NOT VALID".to_owned(),
            })
            .await,
        "tenant_id",
    );
    expect_invalid(
        tenants
            .get_tenant(GetTenantRequest {
                tenant_id: String::new(),
            })
            .await,
        "tenant_id",
    );
    server.stop().await;
}

async fn update_tenant_with_mask_and_etag(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    let mut tenants = admin.tenants();
    let created = create_tenant(&admin, "acme").await;

    // Only masked fields change: the settings sent alongside are ignored.
    let response = tenants
        .update_tenant(UpdateTenantRequest {
            tenant: Some(Tenant {
                tenant_id: "acme".to_owned(),
                display_name: "Renamed".to_owned(),
                settings: Some(Settings {
                    https_only: true,
                    ..Default::default()
                }),
                etag: created.etag.clone(),
                ..Default::default()
            }),
            update_mask: mask(&["display_name"]),
        })
        .await
        .expect("update tenant");
    assert!(revision(response.metadata()) > 0);
    let updated = response.into_inner();
    assert_eq!(updated.display_name, "Renamed");
    assert_eq!(updated.settings, created.settings);
    assert_ne!(updated.etag, created.etag, "etag changes on every write");
    assert_eq!(updated.create_time, created.create_time);

    // The old etag is stale now.
    expect_code(
        tenants
            .update_tenant(UpdateTenantRequest {
                tenant: Some(Tenant {
                    tenant_id: "acme".to_owned(),
                    display_name: "Lost update".to_owned(),
                    etag: created.etag.clone(),
                    ..Default::default()
                }),
                update_mask: mask(&["display_name"]),
            })
            .await,
        Code::Aborted,
    );

    // Nested settings path.
    let updated = ok(tenants
        .update_tenant(UpdateTenantRequest {
            tenant: Some(Tenant {
                tenant_id: "acme".to_owned(),
                settings: Some(Settings {
                    https_only: true,
                    default_ttl_seconds: 999,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            update_mask: mask(&["settings.https_only"]),
        })
        .await);
    let settings = updated.settings.expect("settings");
    assert!(settings.https_only);
    assert_eq!(settings.default_ttl_seconds, 0, "unmasked setting kept");

    let got = ok(tenants
        .get_tenant(GetTenantRequest {
            tenant_id: "acme".to_owned(),
        })
        .await);
    assert_eq!(
        got.display_name, "Renamed",
        "the stale update was not applied"
    );
    assert_eq!(got.etag, updated.etag);
    server.stop().await;
}

async fn update_tenant_refuses_bad_masks(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    let mut tenants = admin.tenants();
    let created = create_tenant(&admin, "acme").await;
    let masks: [&[&str]; 4] = [
        &["no_such_field"],
        &["create_time"],
        &["update_time"],
        &["display_name", "create_time"],
    ];
    for paths in masks {
        expect_invalid(
            tenants
                .update_tenant(UpdateTenantRequest {
                    tenant: Some(Tenant {
                        tenant_id: "acme".to_owned(),
                        display_name: "x".to_owned(),
                        ..Default::default()
                    }),
                    update_mask: mask(paths),
                })
                .await,
            "update_mask",
        );
    }
    let got = ok(tenants
        .get_tenant(GetTenantRequest {
            tenant_id: "acme".to_owned(),
        })
        .await);
    assert_eq!(got.etag, created.etag, "refused updates changed nothing");

    expect_code(
        tenants
            .update_tenant(UpdateTenantRequest {
                tenant: Some(Tenant {
                    tenant_id: "ghost".to_owned(),
                    display_name: "x".to_owned(),
                    ..Default::default()
                }),
                update_mask: mask(&["display_name"]),
            })
            .await,
        Code::NotFound,
    );
    server.stop().await;
}

async fn list_tenants_pages_in_creation_order(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    // Not alphabetical, so creation order and key order differ.
    let ids = [
        "zulu", "alpha", "mike", "bravo", "yankee", "charlie", "xray",
    ];
    for id in ids {
        create_tenant(&admin, id).await;
    }
    let mut tenants = admin.tenants();

    let mut seen = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let page = ok(tenants
            .list_tenants(ListTenantsRequest {
                page_size: 3,
                page_token: page_token.clone(),
                skip: 0,
            })
            .await);
        pages += 1;
        assert!(page.tenants.len() <= 3);
        assert_eq!(page.total_size, 7, "total_size on every page");
        seen.extend(page.tenants.into_iter().map(|t| t.tenant_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids, "each tenant exactly once, in creation order");

    let skipped = ok(tenants
        .list_tenants(ListTenantsRequest {
            page_size: 3,
            page_token: String::new(),
            skip: 2,
        })
        .await);
    let names: Vec<_> = skipped
        .tenants
        .iter()
        .map(|t| t.tenant_id.as_str())
        .collect();
    assert_eq!(names, ["mike", "bravo", "yankee"]);
    assert_eq!(skipped.total_size, 7);

    let past_end = ok(tenants
        .list_tenants(ListTenantsRequest {
            page_size: 3,
            page_token: String::new(),
            skip: 50,
        })
        .await);
    assert!(past_end.tenants.is_empty());
    assert!(past_end.next_page_token.is_empty());

    // 0 means the default (50) and more than 1000 is capped, not refused.
    for page_size in [0, 5000] {
        let all = ok(tenants
            .list_tenants(ListTenantsRequest {
                page_size,
                ..Default::default()
            })
            .await);
        assert_eq!(all.tenants.len(), 7, "page_size {page_size}");
        assert!(all.next_page_token.is_empty());
    }
    server.stop().await;
}

async fn list_tenants_bad_paging_input(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    for id in ["t1", "t2", "t3"] {
        create_tenant(&admin, id).await;
    }
    let mut tenants = admin.tenants();
    expect_invalid(
        tenants
            .list_tenants(ListTenantsRequest {
                page_size: -1,
                ..Default::default()
            })
            .await,
        "page_size",
    );
    expect_invalid(
        tenants
            .list_tenants(ListTenantsRequest {
                skip: -1,
                ..Default::default()
            })
            .await,
        "skip",
    );
    let first = ok(tenants
        .list_tenants(ListTenantsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await);
    assert!(!first.next_page_token.is_empty());
    let token = first.next_page_token;
    let truncated = token[..token.len() / 2].to_owned();
    for bad in [
        tamper(&token),
        format!("{token}x"),
        truncated,
        "not-a-page-token".to_owned(),
    ] {
        expect_invalid(
            tenants
                .list_tenants(ListTenantsRequest {
                    page_size: 1,
                    page_token: bad.clone(),
                    skip: 0,
                })
                .await,
            "page_token",
        );
    }
    // The genuine token still works.
    let second = ok(tenants
        .list_tenants(ListTenantsRequest {
            page_size: 1,
            page_token: token,
            skip: 0,
        })
        .await);
    assert_eq!(second.tenants[0].tenant_id, "t2");
    server.stop().await;
}

async fn create_tenant_request_id_is_idempotent(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    let mut tenants = admin.tenants();
    let request = CreateTenantRequest {
        request_id: "8a5e3a6c-5d0e-4b0c-9f5e-0d6c1f1e2a3b".to_owned(),
        ..create_request("acme")
    };
    let first = ok(tenants.create_tenant(request.clone()).await);
    let retry = ok(tenants.create_tenant(request.clone()).await);
    assert_eq!(retry, first, "a retry returns the first response");

    let different = CreateTenantRequest {
        request_id: request.request_id.clone(),
        ..create_request("other")
    };
    expect_invalid(tenants.create_tenant(different).await, "request_id");
    assert_eq!(list_all(&admin).await, ["acme"], "nothing else was created");

    // Request ids belong to the credential that sent them.
    let other_admin = create_credential(
        &admin,
        "",
        hookplane::proto::credential::Role::PlatformAdmin,
    )
    .await;
    let created = ok(server
        .clients(&other_admin)
        .tenants()
        .create_tenant(CreateTenantRequest {
            request_id: request.request_id.clone(),
            ..create_request("beta")
        })
        .await);
    assert_eq!(created.tenant_id, "beta");
    server.stop().await;
}

async fn suspended_tenant_refuses_writes_but_serves_reads(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let sub = create_subscription(
        &admin,
        subscription(TENANT, ENDPOINT, &["command.completed"]),
    )
    .await;
    let suspended = ok(admin
        .tenants()
        .update_tenant(UpdateTenantRequest {
            tenant: Some(Tenant {
                tenant_id: TENANT.to_owned(),
                state: State::Suspended as i32,
                ..Default::default()
            }),
            update_mask: mask(&["state"]),
        })
        .await);
    assert_eq!(suspended.state, State::Suspended as i32);

    let mut endpoints = admin.endpoints();
    let mut subscriptions = admin.subscriptions();
    expect_code(
        endpoints
            .create_endpoint(hookplane::proto::CreateEndpointRequest {
                endpoint: Some(endpoint(TENANT, "ep2", URL)),
                request_id: String::new(),
            })
            .await,
        Code::FailedPrecondition,
    );
    expect_code(
        subscriptions
            .create_subscription(create_subscription_request(subscription(
                TENANT,
                ENDPOINT,
                &["command.accepted"],
            )))
            .await,
        Code::FailedPrecondition,
    );
    expect_code(
        subscriptions
            .update_subscription(hookplane::proto::UpdateSubscriptionRequest {
                subscription: Some(hookplane::proto::Subscription {
                    event_types: vec!["command.accepted".to_owned()],
                    ..sub.clone()
                }),
                update_mask: mask(&["event_types"]),
                allow_missing: false,
            })
            .await,
        Code::FailedPrecondition,
    );
    expect_code(
        subscriptions
            .delete_subscription(hookplane::proto::DeleteSubscriptionRequest {
                tenant_id: TENANT.to_owned(),
                subscription_id: sub.subscription_id.clone(),
                etag: String::new(),
            })
            .await,
        Code::FailedPrecondition,
    );

    // Reads work, and show nothing changed.
    let got = ok(subscriptions
        .get_subscription(GetSubscriptionRequest {
            tenant_id: TENANT.to_owned(),
            subscription_id: sub.subscription_id.clone(),
        })
        .await);
    assert_eq!(got, sub);
    let listed = ok(endpoints
        .list_endpoints(hookplane::proto::ListEndpointsRequest {
            tenant_id: TENANT.to_owned(),
            ..Default::default()
        })
        .await);
    assert_eq!(listed.endpoints.len(), 1);

    // Reactivated, writes work again.
    ok(admin
        .tenants()
        .update_tenant(UpdateTenantRequest {
            tenant: Some(Tenant {
                tenant_id: TENANT.to_owned(),
                state: State::Active as i32,
                ..Default::default()
            }),
            update_mask: mask(&["state"]),
        })
        .await);
    create_endpoint(&admin, TENANT, "ep2", URL).await;
    server.stop().await;
}

/// Every write under a suspended tenant is FAILED_PRECONDITION saying so,
/// writes nothing (the revision stands still, nothing is sent), and leaves
/// the tenant's resources as they were: the endpoint writes, the
/// subscription writes, both upserts, ResendConfirmation, and a
/// confirmation by RPC or by link (whose token still works afterwards).
async fn suspended_tenant_refuses_every_write_under_it(backend: Backend) {
    use crate::lifecycle::{
        get_subscription, http_get, receiving_fixture, resolve_answer, verifying,
    };
    use hookplane::proto::subscription::Status as SubStatus;
    use hookplane::proto::{
        ConfirmSubscriptionRequest, CreateEndpointRequest, DeleteEndpointRequest,
        DeleteSubscriptionRequest, Endpoint, GetEndpointRequest, RenewSubscriptionRequest,
        ResendConfirmationRequest, RotateEndpointSecretRequest, Subscription,
        UpdateEndpointRequest, UpdateSubscriptionRequest,
    };

    let (server, admin, receiver, _) = receiving_fixture(&backend, verifying(), &[]).await;
    let pending = create_subscription(&admin, subscription(TENANT, ENDPOINT, &["*"])).await;
    assert_eq!(status_of(&pending), SubStatus::PendingVerification);
    let id = pending.subscription_id.clone();
    let confirmation = receiver.confirmation(&id, 1).await;
    let get_endpoint = || {
        let admin = admin.clone();
        async move {
            ok(admin
                .endpoints()
                .get_endpoint(GetEndpointRequest {
                    tenant_id: TENANT.to_owned(),
                    endpoint_id: ENDPOINT.to_owned(),
                })
                .await)
        }
    };
    let endpoint_before = get_endpoint().await;
    let suspend = |state: State| Tenant {
        tenant_id: TENANT.to_owned(),
        state: state as i32,
        ..Default::default()
    };
    ok(admin
        .tenants()
        .update_tenant(UpdateTenantRequest {
            tenant: Some(suspend(State::Suspended)),
            update_mask: mask(&["state"]),
        })
        .await);
    let revision_before = resolve_answer(&admin, TENANT, "command.completed")
        .await
        .revision;

    #[track_caller]
    fn refused<T: std::fmt::Debug>(rpc: &str, result: Result<T, tonic::Status>) {
        let status = expect_code(result, Code::FailedPrecondition);
        assert!(
            status.message().contains("suspended"),
            "{rpc}: the refusal says why: {}",
            status.message()
        );
    }
    let (mut endpoints, mut subscriptions) = (admin.endpoints(), admin.subscriptions());
    refused(
        "CreateEndpoint",
        endpoints
            .create_endpoint(CreateEndpointRequest {
                endpoint: Some(endpoint(TENANT, "ep2", URL)),
                request_id: String::new(),
            })
            .await,
    );
    refused(
        "UpdateEndpoint",
        endpoints
            .update_endpoint(UpdateEndpointRequest {
                endpoint: Some(Endpoint {
                    description: "changed".to_owned(),
                    ..endpoint(TENANT, ENDPOINT, "")
                }),
                update_mask: mask(&["description"]),
                allow_missing: false,
            })
            .await,
    );
    refused(
        "UpdateEndpoint (upsert)",
        endpoints
            .update_endpoint(UpdateEndpointRequest {
                endpoint: Some(endpoint(TENANT, "upserted", URL)),
                update_mask: mask(&["url"]),
                allow_missing: true,
            })
            .await,
    );
    refused(
        "RotateEndpointSecret",
        endpoints
            .rotate_endpoint_secret(RotateEndpointSecretRequest {
                tenant_id: TENANT.to_owned(),
                endpoint_id: ENDPOINT.to_owned(),
                secret: String::new(),
                grace_period_seconds: 0,
            })
            .await,
    );
    refused(
        "DeleteEndpoint",
        endpoints
            .delete_endpoint(DeleteEndpointRequest {
                tenant_id: TENANT.to_owned(),
                endpoint_id: ENDPOINT.to_owned(),
                etag: String::new(),
                force: true,
            })
            .await,
    );
    refused(
        "CreateSubscription",
        subscriptions
            .create_subscription(create_subscription_request(subscription(
                TENANT,
                ENDPOINT,
                &["command.accepted"],
            )))
            .await,
    );
    refused(
        "UpdateSubscription",
        subscriptions
            .update_subscription(UpdateSubscriptionRequest {
                subscription: Some(Subscription {
                    event_types: vec!["command.accepted".to_owned()],
                    ..pending.clone()
                }),
                update_mask: mask(&["event_types"]),
                allow_missing: false,
            })
            .await,
    );
    refused(
        "UpdateSubscription (upsert)",
        subscriptions
            .update_subscription(UpdateSubscriptionRequest {
                subscription: Some(Subscription {
                    subscription_id: "upserted".to_owned(),
                    ..subscription(TENANT, ENDPOINT, &["command.accepted"])
                }),
                update_mask: mask(&["endpoint_id", "event_types"]),
                allow_missing: true,
            })
            .await,
    );
    refused(
        "RenewSubscription",
        subscriptions
            .renew_subscription(RenewSubscriptionRequest {
                tenant_id: TENANT.to_owned(),
                subscription_id: id.clone(),
                ttl_seconds: 3600,
            })
            .await,
    );
    refused(
        "ResendConfirmation",
        subscriptions
            .resend_confirmation(ResendConfirmationRequest {
                tenant_id: TENANT.to_owned(),
                subscription_id: id.clone(),
            })
            .await,
    );
    refused(
        "ConfirmSubscription",
        subscriptions
            .confirm_subscription(ConfirmSubscriptionRequest {
                token: confirmation.token.clone(),
            })
            .await,
    );
    refused(
        "DeleteSubscription",
        subscriptions
            .delete_subscription(DeleteSubscriptionRequest {
                tenant_id: TENANT.to_owned(),
                subscription_id: id.clone(),
                etag: String::new(),
            })
            .await,
    );
    assert_eq!(
        http_get(&confirmation.url).await,
        410,
        "the confirmation link is refused too"
    );

    // Nothing was written, nothing sent, nothing changed.
    assert_eq!(
        resolve_answer(&admin, TENANT, "command.completed")
            .await
            .revision,
        revision_before,
        "no refused call committed a change"
    );
    assert_eq!(get_subscription(&admin, &id).await, pending);
    assert_eq!(get_endpoint().await, endpoint_before);
    for missing in ["ep2", "upserted"] {
        expect_code(
            endpoints
                .get_endpoint(GetEndpointRequest {
                    tenant_id: TENANT.to_owned(),
                    endpoint_id: missing.to_owned(),
                })
                .await,
            Code::NotFound,
        );
    }
    expect_code(
        subscriptions
            .get_subscription(GetSubscriptionRequest {
                tenant_id: TENANT.to_owned(),
                subscription_id: "upserted".to_owned(),
            })
            .await,
        Code::NotFound,
    );
    assert_eq!(
        receiver.confirmations_for(&id).len(),
        1,
        "no confirmation resent"
    );

    // Reactivated: the refused confirmations did not use the token up.
    ok(admin
        .tenants()
        .update_tenant(UpdateTenantRequest {
            tenant: Some(suspend(State::Active)),
            update_mask: mask(&["state"]),
        })
        .await);
    assert_eq!(http_get(&confirmation.url).await, 200);
    assert_eq!(
        status_of(&get_subscription(&admin, &id).await),
        SubStatus::Active
    );
    server.stop().await;
}

async fn delete_tenant_with_live_subscriptions_needs_force(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let sub = create_subscription(
        &admin,
        subscription(TENANT, ENDPOINT, &["command.completed"]),
    )
    .await;
    let mut tenants = admin.tenants();
    let delete = |force: bool, etag: &str| DeleteTenantRequest {
        tenant_id: TENANT.to_owned(),
        etag: etag.to_owned(),
        force,
    };
    expect_code(
        tenants.delete_tenant(delete(false, "")).await,
        Code::FailedPrecondition,
    );
    let still = ok(admin
        .subscriptions()
        .get_subscription(GetSubscriptionRequest {
            tenant_id: TENANT.to_owned(),
            subscription_id: sub.subscription_id.clone(),
        })
        .await);
    assert_eq!(
        still.status, sub.status,
        "the refused delete changed nothing"
    );

    expect_code(
        tenants.delete_tenant(delete(true, "stale-etag")).await,
        Code::Aborted,
    );
    ok(tenants.delete_tenant(delete(true, "")).await);
    expect_code(
        tenants
            .get_tenant(GetTenantRequest {
                tenant_id: TENANT.to_owned(),
            })
            .await,
        Code::NotFound,
    );
    assert!(list_all(&admin).await.is_empty());
    match admin
        .subscriptions()
        .get_subscription(GetSubscriptionRequest {
            tenant_id: TENANT.to_owned(),
            subscription_id: sub.subscription_id.clone(),
        })
        .await
    {
        Ok(gone) => assert_eq!(
            status_of(gone.get_ref()),
            hookplane::proto::subscription::Status::Deleted
        ),
        Err(status) => assert_eq!(status.code(), Code::NotFound, "{status:?}"),
    }
    expect_code(
        tenants.delete_tenant(delete(false, "")).await,
        Code::NotFound,
    );
    server.stop().await;
}

async fn delete_tenant_without_subscriptions_needs_no_force(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    let created = create_tenant(&admin, "acme").await;
    create_endpoint(&admin, "acme", "ep1", URL).await;
    let deleted = ok(admin
        .tenants()
        .delete_tenant(DeleteTenantRequest {
            tenant_id: "acme".to_owned(),
            etag: created.etag,
            force: false,
        })
        .await);
    assert_eq!(deleted.tenant_id, "acme");
    expect_code(
        admin
            .tenants()
            .get_tenant(GetTenantRequest {
                tenant_id: "acme".to_owned(),
            })
            .await,
        Code::NotFound,
    );
    server.stop().await;
}

/// Every tenant-scoped read of `tenant_id` must answer NOT_FOUND.
async fn expect_tenant_not_found(admin: &Clients, tenant_id: &str) {
    let t = || tenant_id.to_owned();
    let codes = [
        admin
            .endpoints()
            .list_endpoints(ListEndpointsRequest {
                tenant_id: t(),
                ..Default::default()
            })
            .await
            .map(drop),
        admin
            .subscriptions()
            .list_subscriptions(ListSubscriptionsRequest {
                tenant_id: t(),
                show_deleted: true,
                ..Default::default()
            })
            .await
            .map(drop),
        admin
            .credentials()
            .list_credentials(ListCredentialsRequest {
                tenant_id: t(),
                ..Default::default()
            })
            .await
            .map(drop),
        admin
            .subscriptions()
            .resolve_subscribers(ResolveSubscribersRequest {
                tenant_id: t(),
                event_type: "command.accepted".to_owned(),
                ..Default::default()
            })
            .await
            .map(drop),
        Err(crate::lifecycle::watch_error(admin, tenant_id, 0).await),
    ];
    for (call, result) in [
        "ListEndpoints",
        "ListSubscriptions",
        "ListCredentials",
        "ResolveSubscribers",
        "WatchSubscriptions",
    ]
    .iter()
    .zip(codes)
    {
        let status = result.expect_err(call);
        assert_eq!(
            status.code(),
            Code::NotFound,
            "{call} on {tenant_id}: {}",
            status.message()
        );
    }
}

async fn reads_of_a_missing_or_deleted_tenant_are_not_found(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    expect_tenant_not_found(&admin, "ghost").await;
    ok(admin
        .tenants()
        .delete_tenant(DeleteTenantRequest {
            tenant_id: TENANT.to_owned(),
            etag: String::new(),
            force: true,
        })
        .await);
    expect_tenant_not_found(&admin, TENANT).await;
    server.stop().await;
}

backend_tests!(
    reads_of_a_missing_or_deleted_tenant_are_not_found,
    create_get_list_round_trip,
    tenant_id_rules,
    tenant_bad_enum_and_settings,
    duplicate_tenant_is_already_exists,
    get_tenant_validation_before_existence,
    update_tenant_with_mask_and_etag,
    update_tenant_refuses_bad_masks,
    list_tenants_pages_in_creation_order,
    list_tenants_bad_paging_input,
    create_tenant_request_id_is_idempotent,
    suspended_tenant_refuses_writes_but_serves_reads,
    suspended_tenant_refuses_every_write_under_it,
    delete_tenant_with_live_subscriptions_needs_force,
    delete_tenant_without_subscriptions_needs_no_force,
);

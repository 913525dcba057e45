//! The HMAC interceptor as a caller meets it: headers, window, one message
//! for every bad credential, replays, unauthenticated health and reflection,
//! request ids and revisions.

use hookplane::proto::credential::Role;
use hookplane::proto::credential_service_client::CredentialServiceClient;
use hookplane::proto::endpoint_service_client::EndpointServiceClient;
use hookplane::proto::event_type_service_client::EventTypeServiceClient;
use hookplane::proto::subscription_service_client::SubscriptionServiceClient;
use hookplane::proto::tenant_service_client::TenantServiceClient;
use hookplane::proto::{
    CreateSubscriptionRequest, CreateTenantRequest, GetSubscriptionRequest, GetTenantRequest,
    ListCredentialsRequest, ListEndpointsRequest, ListEventTypesRequest, ListSubscriptionsRequest,
    ListTenantsRequest, RevokeCredentialRequest, Subscription, Tenant,
};
use tokio_stream::StreamExt as _;
use tonic::{Code, Request};

use crate::harness::*;

const GET_TENANT: &str = "/hookplane.v1.TenantService/GetTenant";
const CREATE_TENANT: &str = "/hookplane.v1.TenantService/CreateTenant";
const CREATE_SUBSCRIPTION: &str = "/hookplane.v1.SubscriptionService/CreateSubscription";

fn get_acme() -> GetTenantRequest {
    GetTenantRequest {
        tenant_id: "acme".to_owned(),
    }
}

async fn missing_headers_are_named(backend: Backend) {
    let server = backend.start().await;
    create_tenant(&server.admin(), "acme").await;
    let mut tenants = TenantServiceClient::new(server.channel());
    for header in [
        "x-api-id",
        "x-api-timestamp",
        "x-api-nonce",
        "x-api-signature",
    ] {
        let mut req = signed_request(
            get_acme(),
            &Cred::admin(),
            GET_TENANT,
            unix_now(),
            &fresh_nonce(),
        );
        req.metadata_mut().remove(header);
        let status = expect_code(tenants.get_tenant(req).await, Code::Unauthenticated);
        assert!(
            status.message().contains(header),
            "names {header}: {}",
            status.message()
        );
    }
    let status = expect_code(tenants.get_tenant(get_acme()).await, Code::Unauthenticated);
    assert!(status.message().contains("x-api-"), "{}", status.message());
    server.stop().await;
}

async fn malformed_headers_are_named(backend: Backend) {
    let server = backend.start().await;
    let mut tenants = TenantServiceClient::new(server.channel());
    let long_nonce = "n".repeat(129);
    let cases = [
        ("x-api-timestamp", "yesterday"),
        ("x-api-timestamp", "1700000000.5"),
        ("x-api-nonce", "short"),
        ("x-api-nonce", "has.a.dot-0123456789"),
        ("x-api-nonce", long_nonce.as_str()),
        ("x-api-signature", "ABCDEF"),
        ("x-api-signature", "not hex at all"),
    ];
    for (header, value) in cases {
        let mut req = signed_request(
            get_acme(),
            &Cred::admin(),
            GET_TENANT,
            unix_now(),
            &fresh_nonce(),
        );
        req.metadata_mut().insert(header, ascii(value));
        let status = expect_code(tenants.get_tenant(req).await, Code::Unauthenticated);
        assert!(
            status.message().contains(header),
            "{header}={value:?}: {}",
            status.message()
        );
    }
    server.stop().await;
}

/// The window as a flag sets it (the default is checked in defaults.rs).
async fn timestamp_outside_the_window_is_refused(backend: Backend) {
    let server = backend.start_with(&["--timestamp-window-secs", "60"]).await;
    create_tenant(&server.admin(), "acme").await;
    let mut tenants = TenantServiceClient::new(server.channel());
    for skew in [-90, 90, -900, 900] {
        let req = signed_request(
            get_acme(),
            &Cred::admin(),
            GET_TENANT,
            unix_now() + skew,
            &fresh_nonce(),
        );
        let status = expect_code(tenants.get_tenant(req).await, Code::Unauthenticated);
        assert!(
            status.message().contains("x-api-timestamp"),
            "skew {skew}: {}",
            status.message()
        );
    }
    // Inside the window both ways.
    for skew in [-40, 40] {
        let req = signed_request(
            get_acme(),
            &Cred::admin(),
            GET_TENANT,
            unix_now() + skew,
            &fresh_nonce(),
        );
        ok(tenants.get_tenant(req).await);
    }
    server.stop().await;
}

async fn bad_signature_unknown_id_and_revoked_share_one_message(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    create_tenant(&admin, "acme").await;
    let revoked = create_credential(&admin, "acme", Role::Reader).await;
    ok(admin
        .credentials()
        .revoke_credential(RevokeCredentialRequest {
            api_id: revoked.api_id.clone(),
        })
        .await);
    let mut tenants = TenantServiceClient::new(server.channel());

    let wrong_secret = Cred {
        api_id: ADMIN_API_ID.to_owned(),
        secret: "not-the-admin-secret-at-all".to_owned(),
    };
    let unknown = Cred {
        api_id: "nobody".to_owned(),
        secret: ADMIN_SECRET.to_owned(),
    };
    let mut messages = Vec::new();
    for cred in [&wrong_secret, &unknown, &revoked] {
        let req = signed_request(get_acme(), cred, GET_TENANT, unix_now(), &fresh_nonce());
        let status = expect_code(tenants.get_tenant(req).await, Code::Unauthenticated);
        assert!(!status.message().contains(ADMIN_SECRET));
        messages.push(status.message().to_owned());
    }
    assert_eq!(
        messages[0], messages[1],
        "unknown id looks like a bad signature"
    );
    assert_eq!(
        messages[0], messages[2],
        "revoked looks like a bad signature"
    );

    // A signature made for another method does not verify either.
    let req = signed_request(
        ListTenantsRequest::default(),
        &Cred::admin(),
        GET_TENANT,
        unix_now(),
        &fresh_nonce(),
    );
    let status = expect_code(tenants.list_tenants(req).await, Code::Unauthenticated);
    assert_eq!(status.message(), messages[0]);
    server.stop().await;
}

async fn replayed_read_is_refused(backend: Backend) {
    let server = backend.start().await;
    create_tenant(&server.admin(), "acme").await;
    let mut tenants = TenantServiceClient::new(server.channel());
    let now = unix_now();
    let nonce = fresh_nonce();
    ok(tenants
        .get_tenant(signed_request(
            get_acme(),
            &Cred::admin(),
            GET_TENANT,
            now,
            &nonce,
        ))
        .await);
    expect_code(
        tenants
            .get_tenant(signed_request(
                get_acme(),
                &Cred::admin(),
                GET_TENANT,
                now,
                &nonce,
            ))
            .await,
        Code::Unauthenticated,
    );
    // The nonce belongs to the credential: the same nonce under another
    // credential is a different pair.
    let reader = create_credential(&server.admin(), "acme", Role::Reader).await;
    ok(tenants
        .get_tenant(signed_request(get_acme(), &reader, GET_TENANT, now, &nonce))
        .await);
    server.stop().await;
}

async fn replayed_write_is_refused_after_restart(backend: Backend) {
    let server = backend.start().await;
    let now = unix_now();
    let nonce = fresh_nonce();
    let create = |tenant_id: &str| CreateTenantRequest {
        tenant: Some(Tenant {
            tenant_id: tenant_id.to_owned(),
            ..Default::default()
        }),
        request_id: String::new(),
    };
    let mut tenants = TenantServiceClient::new(server.channel());
    ok(tenants
        .create_tenant(signed_request(
            create("acme"),
            &Cred::admin(),
            CREATE_TENANT,
            now,
            &nonce,
        ))
        .await);

    let server = server.restart().await;
    let mut tenants = TenantServiceClient::new(server.channel());
    // Same signed headers, still inside the window, new body.
    expect_code(
        tenants
            .create_tenant(signed_request(
                create("beta"),
                &Cred::admin(),
                CREATE_TENANT,
                now,
                &nonce,
            ))
            .await,
        Code::Unauthenticated,
    );
    expect_code(
        server
            .admin()
            .tenants()
            .get_tenant(GetTenantRequest {
                tenant_id: "beta".to_owned(),
            })
            .await,
        Code::NotFound,
    );
    ok(server
        .admin()
        .tenants()
        .get_tenant(GetTenantRequest {
            tenant_id: "acme".to_owned(),
        })
        .await);
    server.stop().await;
}

/// CreateSubscription records its nonce with the row (on PostgreSQL in the
/// same single statement): a replay after a restart, when only the database
/// remembers the nonce, is refused and writes nothing. A refused create
/// records nothing either, so its replay is refused for the same reason.
async fn replayed_subscription_create_is_refused_after_restart(backend: Backend) {
    let (server, _) = fixture(&backend).await;
    let now = unix_now();
    let create = |subscription_id: &str, endpoint_id: &str| {
        create_subscription_request(Subscription {
            subscription_id: subscription_id.to_owned(),
            ..subscription(TENANT, endpoint_id, &["command.accepted"])
        })
    };
    let signed = |request: CreateSubscriptionRequest, nonce: &str| {
        signed_request(request, &Cred::admin(), CREATE_SUBSCRIPTION, now, nonce)
    };
    let written = fresh_nonce();
    let refused = fresh_nonce();
    let mut subscriptions = SubscriptionServiceClient::new(server.channel());
    ok(subscriptions
        .create_subscription(signed(create("first", ENDPOINT), &written))
        .await);
    let missing_endpoint = create("second", "no-such-endpoint");
    expect_code(
        subscriptions
            .create_subscription(signed(missing_endpoint.clone(), &refused))
            .await,
        Code::NotFound,
    );

    let server = server.restart().await;
    let mut subscriptions = SubscriptionServiceClient::new(server.channel());
    expect_code(
        subscriptions
            .create_subscription(signed(create("third", ENDPOINT), &written))
            .await,
        Code::Unauthenticated,
    );
    expect_code(
        subscriptions
            .create_subscription(signed(missing_endpoint, &refused))
            .await,
        Code::NotFound,
    );
    let get = |subscription_id: &str| GetSubscriptionRequest {
        tenant_id: TENANT.to_owned(),
        subscription_id: subscription_id.to_owned(),
    };
    let admin = server.admin();
    ok(admin.subscriptions().get_subscription(get("first")).await);
    for absent in ["second", "third"] {
        expect_code(
            admin.subscriptions().get_subscription(get(absent)).await,
            Code::NotFound,
        );
    }
    server.stop().await;
}

async fn health_and_reflection_need_no_credentials(backend: Backend) {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let server = backend.start().await;
    let mut health = HealthClient::new(server.channel());
    let overall = ok(health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await);
    assert_eq!(overall.status, ServingStatus::Serving as i32);

    {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let mut reflection = ServerReflectionClient::new(server.channel());
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = ok(reflection
            .server_reflection_info(tokio_stream::iter([request]))
            .await);
        let reply = stream
            .next()
            .await
            .expect("one reply")
            .expect("reflection v1 answers");
        let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
            panic!("unexpected reflection reply {reply:?}");
        };
        let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
        for service in [
            "hookplane.v1.TenantService",
            "hookplane.v1.CredentialService",
            "hookplane.v1.EventTypeService",
            "hookplane.v1.EndpointService",
            "hookplane.v1.SubscriptionService",
            "grpc.health.v1.Health",
        ] {
            assert!(
                names.iter().any(|n| n == service),
                "v1 lists {service}: {names:?}"
            );
        }
    }
    {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let mut reflection = ServerReflectionClient::new(server.channel());
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "hookplane.v1.SubscriptionService".to_owned(),
            )),
        };
        let mut stream = ok(reflection
            .server_reflection_info(tokio_stream::iter([request]))
            .await);
        let reply = stream
            .next()
            .await
            .expect("one reply")
            .expect("reflection v1alpha answers");
        let Some(MessageResponse::FileDescriptorResponse(files)) = reply.message_response else {
            panic!("unexpected reflection reply {reply:?}");
        };
        assert!(
            !files.file_descriptor_proto.is_empty(),
            "grpcurl can describe the service"
        );
    }

    // The plain HTTP listener answers /healthz.
    {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut conn = tokio::net::TcpStream::connect(server.http_addr)
            .await
            .expect("connect to --http-addr");
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .expect("send request");
        let mut reply = String::new();
        conn.read_to_string(&mut reply).await.expect("read reply");
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }
    server.stop().await;
}

async fn every_hookplane_service_needs_credentials(backend: Backend) {
    let server = backend.start().await;
    let channel = server.channel();
    let codes = [
        TenantServiceClient::new(channel.clone())
            .list_tenants(ListTenantsRequest::default())
            .await
            .map(drop),
        CredentialServiceClient::new(channel.clone())
            .list_credentials(ListCredentialsRequest::default())
            .await
            .map(drop),
        EventTypeServiceClient::new(channel.clone())
            .list_event_types(ListEventTypesRequest::default())
            .await
            .map(drop),
        EndpointServiceClient::new(channel.clone())
            .list_endpoints(ListEndpointsRequest {
                tenant_id: "acme".to_owned(),
                ..Default::default()
            })
            .await
            .map(drop),
        SubscriptionServiceClient::new(channel.clone())
            .list_subscriptions(ListSubscriptionsRequest {
                tenant_id: "acme".to_owned(),
                ..Default::default()
            })
            .await
            .map(drop),
    ];
    for result in codes {
        expect_code(result, Code::Unauthenticated);
    }
    server.stop().await;
}

async fn request_id_is_echoed_or_generated(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    create_tenant(&admin, "acme").await;
    let mut tenants = admin.tenants();

    let mut req = Request::new(get_acme());
    req.metadata_mut()
        .insert("x-request-id", ascii("req-echo-42"));
    let response = tenants.get_tenant(req).await.expect("get tenant");
    assert_eq!(
        response
            .metadata()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap()),
        Some("req-echo-42")
    );

    let response = tenants.get_tenant(get_acme()).await.expect("get tenant");
    let generated = response
        .metadata()
        .get("x-request-id")
        .expect("generated x-request-id")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!generated.is_empty());
    let again = tenants.get_tenant(get_acme()).await.expect("get tenant");
    assert_ne!(
        again
            .metadata()
            .get("x-request-id")
            .unwrap()
            .to_str()
            .unwrap(),
        generated,
        "a fresh id per call"
    );

    // Errors carry it too, including authentication failures.
    let mut req = Request::new(GetTenantRequest {
        tenant_id: "ghost".to_owned(),
    });
    req.metadata_mut()
        .insert("x-request-id", ascii("req-missing-1"));
    let status = expect_code(tenants.get_tenant(req).await, Code::NotFound);
    assert_eq!(
        status
            .metadata()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap()),
        Some("req-missing-1")
    );
    let mut req = Request::new(get_acme());
    req.metadata_mut()
        .insert("x-request-id", ascii("req-unauth-1"));
    let status = expect_code(
        TenantServiceClient::new(server.channel())
            .get_tenant(req)
            .await,
        Code::Unauthenticated,
    );
    assert_eq!(
        status
            .metadata()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap()),
        Some("req-unauth-1")
    );
    server.stop().await;
}

async fn writes_report_increasing_revisions(backend: Backend) {
    let server = backend.start().await;
    let mut tenants = server.admin().tenants();
    let mut last = 0;
    for id in ["t1", "t2", "t3"] {
        let response = tenants
            .create_tenant(CreateTenantRequest {
                tenant: Some(Tenant {
                    tenant_id: id.to_owned(),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await
            .expect("create tenant");
        let rev = revision(response.metadata());
        assert!(rev > last, "revision {rev} after {last}");
        last = rev;
    }
    server.stop().await;
}

backend_tests!(
    missing_headers_are_named,
    malformed_headers_are_named,
    timestamp_outside_the_window_is_refused,
    bad_signature_unknown_id_and_revoked_share_one_message,
    replayed_read_is_refused,
    replayed_write_is_refused_after_restart,
    replayed_subscription_create_is_refused_after_restart,
    health_and_reflection_need_no_credentials,
    every_hookplane_service_needs_credentials,
    request_id_is_echoed_or_generated,
    writes_report_increasing_revisions,
);

//! The spec's seed table: each vendor operation the foundation covers, done
//! the hookplane way. Test names carry the seed number.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hookplane::proto::credential::Role;
use hookplane::proto::get_event_type_request::Key as TypeKey;
use hookplane::proto::subscription::Status as SubStatus;
use hookplane::proto::tenant::Settings;
use hookplane::proto::tenant_service_client::TenantServiceClient;
use hookplane::proto::validate_event_payload_request::Key as PayloadKey;
use hookplane::proto::{
    CreateEndpointRequest, CreateSubscriptionRequest, DeleteSubscriptionRequest, Endpoint,
    EventType, GetEndpointRequest, GetEventTypeRequest, GetSubscriptionRequest, GetTenantRequest,
    ListEndpointsRequest, ListEventTypesRequest, ListSubscriptionsRequest,
    RenewSubscriptionRequest, Subscription, UpdateEndpointRequest, UpdateSubscriptionRequest,
    ValidateEventPayloadRequest,
};
use tonic::Code;

use crate::harness::*;

const WEEK: i64 = 604_800;

// --- 000: tenant callback subscriptions -----------------------------------

async fn seed_000_create_subscription_status_deleted_is_invalid(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let mut subs = admin.subscriptions();
    // POST tenants/{t}/callbacks/endpoints/{e}/subscriptions {event_type, status}
    let post = |event_type: &str, status: SubStatus| {
        create_subscription_request(Subscription {
            status: status as i32,
            ..subscription(TENANT, ENDPOINT, &[event_type])
        })
    };
    let active = ok(subs
        .create_subscription(post("command.completed", SubStatus::Active))
        .await);
    assert_eq!(active.tenant_id, TENANT);
    assert_eq!(active.endpoint_id, ENDPOINT);
    assert_eq!(active.event_types, ["command.completed"]);
    assert_eq!(status_of(&active), SubStatus::Active);
    assert!(!active.subscription_id.is_empty());
    let disabled = ok(subs
        .create_subscription(post("command.accepted", SubStatus::Disabled))
        .await);
    assert_eq!(status_of(&disabled), SubStatus::Disabled);

    expect_invalid(
        subs.create_subscription(post("command.completed", SubStatus::Deleted))
            .await,
        "subscription.status",
    );
    // The vendor's event_type enum refuses unknown types; so does the catalog.
    expect_invalid(
        subs.create_subscription(post("command.succeeded", SubStatus::Active))
            .await,
        "subscription.event_types[0]",
    );
    let listed = ok(subs
        .list_subscriptions(ListSubscriptionsRequest {
            tenant_id: TENANT.to_owned(),
            ..Default::default()
        })
        .await);
    assert_eq!(listed.subscriptions.len(), 2);
    server.stop().await;
}

async fn seed_000_signed_headers_and_request_id_echoed(backend: Backend) {
    let server = backend.start().await;
    create_tenant(&server.admin(), "tenant_001").await;
    let method = "/hookplane.v1.TenantService/GetTenant";
    let mut req = signed_request(
        GetTenantRequest {
            tenant_id: "tenant_001".to_owned(),
        },
        &Cred::admin(),
        method,
        unix_now(),
        &fresh_nonce(),
    );
    req.metadata_mut().insert("x-request-id", ascii("req-001"));
    let response = TenantServiceClient::new(server.channel())
        .get_tenant(req)
        .await
        .expect("signed call");
    assert_eq!(
        response
            .metadata()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap()),
        Some("req-001")
    );
    assert_eq!(response.get_ref().tenant_id, "tenant_001");
    server.stop().await;
}

async fn seed_000_command_catalog_and_status_lifecycle(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let listed = ok(admin
        .event_types()
        .list_event_types(ListEventTypesRequest::default())
        .await);
    let names: Vec<_> = listed.event_types.iter().map(|t| t.name.as_str()).collect();
    assert!(names.contains(&"command.accepted") && names.contains(&"command.completed"));

    let mut subs = admin.subscriptions();
    let sub = create_subscription(
        &admin,
        subscription(TENANT, ENDPOINT, &["command.completed"]),
    )
    .await;
    assert_eq!(status_of(&sub), SubStatus::Active);
    let disabled = ok(subs
        .update_subscription(UpdateSubscriptionRequest {
            subscription: Some(Subscription {
                status: SubStatus::Disabled as i32,
                ..sub.clone()
            }),
            update_mask: mask(&["status"]),
            allow_missing: false,
        })
        .await);
    assert_eq!(status_of(&disabled), SubStatus::Disabled);
    let deleted = ok(subs
        .delete_subscription(DeleteSubscriptionRequest {
            tenant_id: TENANT.to_owned(),
            subscription_id: sub.subscription_id.clone(),
            etag: disabled.etag.clone(),
        })
        .await);
    assert_eq!(status_of(&deleted), SubStatus::Deleted);
    server.stop().await;
}

// --- 001: webhook_subscribe -------------------------------------------------

/// A tenant set up like the vendor: TTL default and maximum of a week.
async fn weekly_tenant(backend: &Backend) -> (TestServer, Clients) {
    let server = backend.start().await;
    let admin = server.admin();
    create_tenant_with(
        &admin,
        TENANT,
        Settings {
            default_ttl_seconds: WEEK,
            max_ttl_seconds: WEEK,
            ..Default::default()
        },
    )
    .await;
    create_event_type(&admin, event_type("chat-message-created")).await;
    (server, admin)
}

async fn seed_001_webhook_subscribe_maps_to_endpoint_and_subscription_with_ttl(backend: Backend) {
    let (server, admin) = weekly_tenant(&backend).await;
    // {callback_url, topic, client_secret, expires}
    let client_secret = "Zm9vYmFyYmF6cXV4MTIz";
    let endpoint = ok(admin
        .endpoints()
        .create_endpoint(CreateEndpointRequest {
            endpoint: Some(Endpoint {
                secret: client_secret.to_owned(),
                ..endpoint(TENANT, "", "https://client.example.com/notify")
            }),
            request_id: String::new(),
        })
        .await);
    assert_eq!(
        endpoint.secret, client_secret,
        "the client secret is the key"
    );

    let mut subs = admin.subscriptions();
    let subscribe = |expires: i64| CreateSubscriptionRequest {
        ttl_seconds: expires,
        ..create_subscription_request(subscription(
            TENANT,
            &endpoint.endpoint_id,
            &["chat-message-created"],
        ))
    };
    let hour = ok(subs.create_subscription(subscribe(3600)).await);
    assert_about(secs(&hour.expire_time), unix_now() + 3600);
    assert_eq!(hour.event_types, ["chat-message-created"]);
    let default = ok(subs.create_subscription(subscribe(0)).await);
    assert_about(secs(&default.expire_time), unix_now() + WEEK);
    let max = ok(subs.create_subscription(subscribe(WEEK)).await);
    assert_about(secs(&max.expire_time), unix_now() + WEEK);
    expect_invalid(
        subs.create_subscription(subscribe(WEEK + 1)).await,
        "ttl_seconds",
    );
    server.stop().await;
}

async fn seed_001_server_secret_generated_when_no_client_secret(backend: Backend) {
    let (server, admin) = weekly_tenant(&backend).await;
    let created = create_endpoint(&admin, TENANT, "cb", "https://client.example.com/n").await;
    let key = created
        .secret
        .strip_prefix("whsec_")
        .expect("generated whsec_ secret");
    assert_eq!(STANDARD.decode(key).expect("base64").len(), 32);
    let got = ok(admin
        .endpoints()
        .get_endpoint(GetEndpointRequest {
            tenant_id: TENANT.to_owned(),
            endpoint_id: "cb".to_owned(),
        })
        .await);
    assert!(got.secret.is_empty(), "shown once, at creation");
    server.stop().await;
}

async fn seed_001_refresh_is_renew_subscription(backend: Backend) {
    let (server, admin) = weekly_tenant(&backend).await;
    create_endpoint(&admin, TENANT, "cb", "https://client.example.com/n").await;
    let sub = ok(admin
        .subscriptions()
        .create_subscription(CreateSubscriptionRequest {
            ttl_seconds: 60,
            ..create_subscription_request(subscription(TENANT, "cb", &["chat-message-created"]))
        })
        .await);
    assert_about(secs(&sub.expire_time), unix_now() + 60);
    let renewed = ok(admin
        .subscriptions()
        .renew_subscription(RenewSubscriptionRequest {
            tenant_id: TENANT.to_owned(),
            subscription_id: sub.subscription_id.clone(),
            ttl_seconds: 0,
        })
        .await);
    assert_about(secs(&renewed.expire_time), unix_now() + WEEK);
    assert_eq!(
        renewed.subscription_id, sub.subscription_id,
        "same subscription"
    );
    server.stop().await;
}

async fn seed_001_topics_are_event_type_names_and_roles_gate_subscribe(backend: Backend) {
    let (server, admin) = weekly_tenant(&backend).await;
    // Every topic matching ^[0-9A-Za-z\-]{3,48}$ is an event type name.
    let longest = format!("T{}", "-0aZ".repeat(11)) + "xyz";
    assert_eq!(longest.len(), 48);
    for topic in ["abc", "0-9", "Chat-Message-Created", longest.as_str()] {
        let created = create_event_type(&admin, event_type(topic)).await;
        assert_eq!(created.name, topic);
    }
    create_endpoint(&admin, TENANT, "cb", "https://client.example.com/n").await;
    // The "webhook_subscribe" permission is subscriptions.write, which a
    // reader lacks and a tenant admin has.
    let reader = create_credential(&admin, TENANT, Role::Reader).await;
    let tenant_admin = create_credential(&admin, TENANT, Role::TenantAdmin).await;
    let request =
        || create_subscription_request(subscription(TENANT, "cb", &["Chat-Message-Created"]));
    expect_code(
        server
            .clients(&reader)
            .subscriptions()
            .create_subscription(request())
            .await,
        Code::PermissionDenied,
    );
    ok(server
        .clients(&tenant_admin)
        .subscriptions()
        .create_subscription(request())
        .await);
    server.stop().await;
}

// --- 002/004: named subscriptions with wildcards -----------------------------

async fn seed_002_004_create_with_wildcards_enabled_secret_idempotent(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    create_tenant(&admin, TENANT).await;
    for name in [
        "agent.presencechanged.v1",
        "agent.presencechanged.v0v1",
        "agent.statechanged.v1",
    ] {
        create_event_type(&admin, event_type(name)).await;
    }
    let secret =
        "OFd4WHqXISxMAgoYneiFhgdGrOgYeToYPN3HjIO4xAxDvWd/oIKTW1P4A6GLXN0McDGlLtnTn1KCGCa+W5Gu=";
    let endpoint_request = CreateEndpointRequest {
        endpoint: Some(Endpoint {
            secret: secret.to_owned(),
            ..endpoint(TENANT, "", "https://your-application.com/abc/123")
        }),
        request_id: "webhooktest1-endpoint".to_owned(),
    };
    let mut endpoints = admin.endpoints();
    let ep = ok(endpoints.create_endpoint(endpoint_request.clone()).await);
    assert_eq!(ep.secret, secret);
    assert_eq!(
        ok(endpoints.create_endpoint(endpoint_request).await),
        ep,
        "retry is safe"
    );

    // "enabled": false maps to status DISABLED.
    let subscription_request = CreateSubscriptionRequest {
        request_id: "webhooktest1-subscription".to_owned(),
        ..create_subscription_request(Subscription {
            name: "WebhookTest1".to_owned(),
            status: SubStatus::Disabled as i32,
            ..subscription(
                TENANT,
                &ep.endpoint_id,
                &["agent.presencechanged.*", "agent.*.v1"],
            )
        })
    };
    let mut subs = admin.subscriptions();
    let sub = ok(subs.create_subscription(subscription_request.clone()).await);
    assert_eq!(sub.name, "WebhookTest1");
    assert_eq!(status_of(&sub), SubStatus::Disabled);
    assert_eq!(sub.event_types, ["agent.presencechanged.*", "agent.*.v1"]);
    assert_eq!(
        ok(subs.create_subscription(subscription_request).await),
        sub
    );

    // The name is unique.
    expect_code(
        subs.create_subscription(create_subscription_request(Subscription {
            name: "WebhookTest1".to_owned(),
            ..subscription(TENANT, &ep.endpoint_id, &["agent.statechanged.v1"])
        }))
        .await,
        Code::AlreadyExists,
    );
    // Enabled when not specified.
    let enabled = create_subscription(
        &admin,
        Subscription {
            name: "WebhookTest2".to_owned(),
            ..subscription(TENANT, &ep.endpoint_id, &["agent.presencechanged.v1"])
        },
    )
    .await;
    assert_eq!(status_of(&enabled), SubStatus::Active);
    let endpoints_listed = ok(endpoints
        .list_endpoints(ListEndpointsRequest {
            tenant_id: TENANT.to_owned(),
            ..Default::default()
        })
        .await);
    assert_eq!(endpoints_listed.endpoints.len(), 1);
    server.stop().await;
}

async fn seed_002_004_generated_secret_shown_only_at_creation_and_event_types_listed(
    backend: Backend,
) {
    let (server, admin) = fixture(&backend).await;
    let created = create_endpoint(
        &admin,
        TENANT,
        "wh",
        "https://your-application.com/webhooks",
    )
    .await;
    assert!(created.secret.starts_with("whsec_"));
    let listed = ok(admin
        .endpoints()
        .list_endpoints(ListEndpointsRequest {
            tenant_id: TENANT.to_owned(),
            ..Default::default()
        })
        .await);
    assert!(listed.endpoints.iter().all(|e| e.secret.is_empty()));
    let updated = ok(admin
        .endpoints()
        .update_endpoint(UpdateEndpointRequest {
            endpoint: Some(Endpoint {
                description: "renamed".to_owned(),
                ..endpoint(TENANT, "wh", "")
            }),
            update_mask: mask(&["description"]),
            allow_missing: false,
        })
        .await);
    assert!(updated.secret.is_empty(), "not returned except at creation");
    let types = ok(admin
        .event_types()
        .list_event_types(ListEventTypesRequest::default())
        .await);
    let names: Vec<_> = types.event_types.iter().map(|t| t.name.as_str()).collect();
    let expected: Vec<_> = CATALOG.iter().map(|(name, _, _)| *name).collect();
    assert_eq!(names, expected, "event types to discover names from");
    server.stop().await;
}

// --- 003: partner callbacks by notification type -----------------------------

const ECHO_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["state"],
  "properties": {
    "processUniqueId": {"type": "string"},
    "simulationUniqueId": {"type": "string"},
    "state": {"type": "string"}
  },
  "oneOf": [
    {"required": ["processUniqueId"]},
    {"required": ["simulationUniqueId"]}
  ]
}"#;

const PARTNER: &str = "partner-42";

/// The partner as a tenant, and notification types 1..=3 as legacy codes.
async fn partner(backend: &Backend) -> (TestServer, Clients) {
    let server = backend.start().await;
    let admin = server.admin();
    create_tenant(&admin, PARTNER).await;
    for (code, name) in [(1, "WorkflowStateChange"), (2, "Notes"), (3, "Document")] {
        create_event_type(
            &admin,
            EventType {
                legacy_code: code,
                schema_json: ECHO_SCHEMA.to_owned(),
                ..event_type(name)
            },
        )
        .await;
    }
    (server, admin)
}

/// "Callback update": upsert the endpoint and the subscription of one
/// notification type, found by its legacy code.
async fn callback_update(
    admin: &Clients,
    partner: &str,
    notification_type: i32,
    url: &str,
) -> Result<Subscription, tonic::Status> {
    let event_type = admin
        .event_types()
        .get_event_type(GetEventTypeRequest {
            key: Some(TypeKey::LegacyCode(notification_type)),
        })
        .await?
        .into_inner();
    let id = format!("cb-{notification_type}");
    admin
        .endpoints()
        .update_endpoint(UpdateEndpointRequest {
            endpoint: Some(endpoint(partner, &id, url)),
            update_mask: mask(&["url"]),
            allow_missing: true,
        })
        .await?;
    let sub = admin
        .subscriptions()
        .update_subscription(UpdateSubscriptionRequest {
            subscription: Some(Subscription {
                subscription_id: id.clone(),
                ..subscription(partner, &id, &[&event_type.name])
            }),
            update_mask: mask(&["event_types", "endpoint_id"]),
            allow_missing: true,
        })
        .await?
        .into_inner();
    Ok(sub)
}

async fn seed_003_callback_update_upsert_by_legacy_code(backend: Backend) {
    let (server, admin) = partner(&backend).await;
    let created = callback_update(&admin, PARTNER, 1, "https://partner.example.com/v1")
        .await
        .expect("first callback update creates");
    assert_eq!(created.event_types, ["WorkflowStateChange"]);
    assert_eq!(status_of(&created), SubStatus::Active);

    let updated = callback_update(&admin, PARTNER, 1, "https://partner.example.com/v2")
        .await
        .expect("second callback update updates");
    assert_eq!(updated.subscription_id, created.subscription_id);
    assert_eq!(updated.create_time, created.create_time);
    let ep = ok(admin
        .endpoints()
        .get_endpoint(GetEndpointRequest {
            tenant_id: PARTNER.to_owned(),
            endpoint_id: "cb-1".to_owned(),
        })
        .await);
    assert_eq!(ep.url, "https://partner.example.com/v2");

    let by_code = ok(admin
        .subscriptions()
        .list_subscriptions(ListSubscriptionsRequest {
            tenant_id: PARTNER.to_owned(),
            legacy_code: 1,
            ..Default::default()
        })
        .await);
    assert_eq!(by_code.subscriptions.len(), 1, "one callback per type");
    assert_eq!(by_code.subscriptions[0].subscription_id, "cb-1");

    // Unsupported notification type, unknown partner.
    let status = callback_update(&admin, PARTNER, 99, "https://partner.example.com/x")
        .await
        .expect_err("unknown notification type");
    assert_eq!(status.code(), Code::NotFound);
    let status = callback_update(
        &admin,
        "no-such-partner",
        1,
        "https://partner.example.com/x",
    )
    .await
    .expect_err("unknown partner");
    assert_eq!(status.code(), Code::NotFound);
    server.stop().await;
}

async fn seed_003_callback_delete_missing_is_not_found(backend: Backend) {
    let (server, admin) = partner(&backend).await;
    callback_update(&admin, PARTNER, 2, "https://partner.example.com/notes")
        .await
        .expect("callback update");
    let delete = || DeleteSubscriptionRequest {
        tenant_id: PARTNER.to_owned(),
        subscription_id: "cb-2".to_owned(),
        etag: String::new(),
    };
    let mut subs = admin.subscriptions();
    let deleted = ok(subs.delete_subscription(delete()).await);
    assert_eq!(status_of(&deleted), SubStatus::Deleted);
    expect_code(subs.delete_subscription(delete()).await, Code::NotFound);
    expect_code(
        subs.delete_subscription(DeleteSubscriptionRequest {
            subscription_id: "cb-3".to_owned(),
            ..delete()
        })
        .await,
        Code::NotFound,
    );
    let got = ok(subs
        .get_subscription(GetSubscriptionRequest {
            tenant_id: PARTNER.to_owned(),
            subscription_id: "cb-2".to_owned(),
        })
        .await);
    assert_eq!(status_of(&got), SubStatus::Deleted);
    server.stop().await;
}

async fn seed_003_list_with_offset_and_limit(backend: Backend) {
    let (server, admin) = partner(&backend).await;
    for code in [1, 2, 3] {
        callback_update(&admin, PARTNER, code, "https://partner.example.com/cb")
            .await
            .expect("callback update");
    }
    let mut subs = admin.subscriptions();
    let list = |skip: i32, limit: i32, legacy_code: i32| ListSubscriptionsRequest {
        tenant_id: PARTNER.to_owned(),
        skip,
        page_size: limit,
        legacy_code,
        ..Default::default()
    };
    let ids = |s: &[Subscription]| {
        s.iter()
            .map(|s| s.subscription_id.clone())
            .collect::<Vec<_>>()
    };
    let page = ok(subs.list_subscriptions(list(1, 1, 0)).await);
    assert_eq!(ids(&page.subscriptions), ["cb-2"]);
    assert_eq!(page.total_size, 3);
    let page = ok(subs.list_subscriptions(list(1, 5, 0)).await);
    assert_eq!(ids(&page.subscriptions), ["cb-2", "cb-3"]);
    let page = ok(subs.list_subscriptions(list(0, 5, 3)).await);
    assert_eq!(ids(&page.subscriptions), ["cb-3"]);
    assert_eq!(page.total_size, 1);
    let page = ok(subs.list_subscriptions(list(1, 5, 3)).await);
    assert!(page.subscriptions.is_empty());
    server.stop().await;
}

async fn seed_003_echo_validate_payload_by_legacy_code(backend: Backend) {
    let (server, admin) = partner(&backend).await;
    let mut types = admin.event_types();
    let echo = |key: PayloadKey, body: &str| ValidateEventPayloadRequest {
        key: Some(key),
        payload_json: body.to_owned(),
    };
    let process = r#"{"processUniqueId": "p-1", "state": "Done"}"#;
    let simulation = r#"{"simulationUniqueId": "s-1", "state": "Done"}"#;
    let both = r#"{"processUniqueId": "p-1", "simulationUniqueId": "s-1", "state": "Done"}"#;
    let neither = r#"{"state": "Done"}"#;
    for code in [1, 2, 3] {
        for body in [process, simulation] {
            let answer = ok(types
                .validate_event_payload(echo(PayloadKey::LegacyCode(code), body))
                .await);
            assert!(answer.valid, "type {code}: {body} {answer:?}");
        }
        for body in [both, neither] {
            let answer = ok(types
                .validate_event_payload(echo(PayloadKey::LegacyCode(code), body))
                .await);
            assert!(!answer.valid, "type {code}: {body}");
            assert!(!answer.violations.is_empty());
        }
    }
    let by_name = ok(types
        .validate_event_payload(echo(PayloadKey::EventType("Notes".to_owned()), both))
        .await);
    assert!(!by_name.valid, "by name, the same rules");
    let wrong_type = ok(types
        .validate_event_payload(echo(
            PayloadKey::LegacyCode(1),
            r#"{"processUniqueId": 7, "state": "Done"}"#,
        ))
        .await);
    assert!(!wrong_type.valid);
    assert!(
        wrong_type
            .violations
            .iter()
            .any(|v| v.path == "/processUniqueId"),
        "{wrong_type:?}"
    );
    expect_code(
        types
            .validate_event_payload(echo(PayloadKey::LegacyCode(42), process))
            .await,
        Code::NotFound,
    );
    server.stop().await;
}

backend_tests!(
    seed_000_create_subscription_status_deleted_is_invalid,
    seed_000_signed_headers_and_request_id_echoed,
    seed_000_command_catalog_and_status_lifecycle,
    seed_001_webhook_subscribe_maps_to_endpoint_and_subscription_with_ttl,
    seed_001_server_secret_generated_when_no_client_secret,
    seed_001_refresh_is_renew_subscription,
    seed_001_topics_are_event_type_names_and_roles_gate_subscribe,
    seed_002_004_create_with_wildcards_enabled_secret_idempotent,
    seed_002_004_generated_secret_shown_only_at_creation_and_event_types_listed,
    seed_003_callback_update_upsert_by_legacy_code,
    seed_003_callback_delete_missing_is_not_found,
    seed_003_list_with_offset_and_limit,
    seed_003_echo_validate_payload_by_legacy_code,
);

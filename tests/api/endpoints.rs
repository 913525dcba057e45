//! EndpointService: URL rules, signing secrets, updates, delete with
//! subscriptions, paging, idempotency.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hookplane::proto::subscription::Status as SubStatus;
use hookplane::proto::tenant::Settings;
use hookplane::proto::{
    CreateEndpointRequest, DeleteEndpointRequest, DeleteSubscriptionRequest, Endpoint,
    GetEndpointRequest, GetSubscriptionRequest, ListEndpointsRequest, UpdateEndpointRequest,
};
use tonic::Code;

use crate::harness::*;

/// Literal addresses that must not be callback targets by default.
const PRIVATE_URLS: &[&str] = &[
    "https://10.0.0.1/hook",
    "http://127.0.0.1:8080/hook",
    "http://localhost/hook",
    "http://169.254.169.254/latest/meta-data",
    "http://192.168.1.10/",
    "http://[::1]/hook",
    "http://[::127.0.0.1]/hook",
    "http://[::a9fe:a9fe]/latest/meta-data",
];

fn create(endpoint: Endpoint) -> CreateEndpointRequest {
    CreateEndpointRequest {
        endpoint: Some(endpoint),
        request_id: String::new(),
    }
}

fn get(endpoint_id: &str) -> GetEndpointRequest {
    GetEndpointRequest {
        tenant_id: TENANT.to_owned(),
        endpoint_id: endpoint_id.to_owned(),
    }
}

fn list() -> ListEndpointsRequest {
    ListEndpointsRequest {
        tenant_id: TENANT.to_owned(),
        ..Default::default()
    }
}

async fn create_returns_a_generated_secret_that_reads_never_show(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    create_tenant(&admin, TENANT).await;
    let mut endpoints = admin.endpoints();
    let response = endpoints
        .create_endpoint(create(Endpoint {
            description: "main hook".to_owned(),
            ..endpoint(TENANT, "", URL)
        }))
        .await
        .expect("create endpoint");
    assert!(revision(response.metadata()) > 0);
    let created = response.into_inner();
    assert!(!created.endpoint_id.is_empty(), "endpoint_id generated");
    assert_eq!(created.tenant_id, TENANT);
    assert_eq!(created.url, URL);
    assert_eq!(created.description, "main hook");
    assert_eq!(created.enabled, Some(true), "enabled by default");
    let key = created
        .secret
        .strip_prefix("whsec_")
        .unwrap_or_else(|| panic!("Standard Webhooks form: {:?}", created.secret));
    assert_eq!(STANDARD.decode(key).expect("base64").len(), 32);

    let got = ok(endpoints.get_endpoint(get(&created.endpoint_id)).await);
    assert!(got.secret.is_empty(), "Get never returns the secret");
    assert!(got.signing_secrets.is_empty());
    assert_eq!(got.url, URL);
    assert_eq!(got.etag, created.etag);
    let listed = ok(endpoints.list_endpoints(list()).await);
    assert_eq!(listed.endpoints.len(), 1);
    assert!(
        listed.endpoints[0].secret.is_empty(),
        "List never returns it"
    );
    assert!(listed.endpoints[0].signing_secrets.is_empty());

    let disabled = ok(endpoints
        .create_endpoint(create(Endpoint {
            enabled: Some(false),
            ..endpoint(TENANT, "ep-off", URL)
        }))
        .await);
    assert_eq!(disabled.enabled, Some(false));
    assert_ne!(disabled.secret, created.secret, "a fresh secret each");
    server.stop().await;
}

async fn caller_supplied_secrets(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    create_tenant(&admin, TENANT).await;
    let mut endpoints = admin.endpoints();
    let with_secret = |id: &str, secret: &str| {
        create(Endpoint {
            secret: secret.to_owned(),
            ..endpoint(TENANT, id, URL)
        })
    };
    let too_long = "x".repeat(129);
    let bad = [
        "whsec_!!!not-base64!!!".to_owned(),
        format!("whsec_{}", STANDARD.encode([1u8; 10])),
        format!("whsec_{}", STANDARD.encode([1u8; 65])),
        "short-secret".to_owned(),
        too_long,
        "has spaces in the secret".to_owned(),
        "tab\tseparated-secret".to_owned(),
    ];
    for (i, secret) in bad.iter().enumerate() {
        expect_invalid(
            endpoints
                .create_endpoint(with_secret(&format!("bad-{i}"), secret))
                .await,
            "endpoint.secret",
        );
    }
    let whsec = format!("whsec_{}", STANDARD.encode([7u8; 32]));
    let seed_secret =
        "OFd4WHqXISxMAgoYneiFhgdGrOgYeToYPN3HjIO4xAxDvWd/oIKTW1P4A6GLXN0McDGlLtnTn1KCGCa+W5Gu=";
    let sixteen = "abcdefghijklmnop";
    for (i, secret) in [whsec.as_str(), seed_secret, sixteen]
        .into_iter()
        .enumerate()
    {
        let created = ok(endpoints
            .create_endpoint(with_secret(&format!("good-{i}"), secret))
            .await);
        assert_eq!(created.secret, secret, "returned as given");
    }
    let listed = ok(endpoints.list_endpoints(list()).await);
    let ids: Vec<_> = listed
        .endpoints
        .iter()
        .map(|e| e.endpoint_id.as_str())
        .collect();
    assert_eq!(
        ids,
        ["good-0", "good-1", "good-2"],
        "refused ones were not stored"
    );
    server.stop().await;
}

async fn endpoint_url_rules(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    create_tenant(&admin, TENANT).await;
    create_tenant_with(
        &admin,
        "secure",
        Settings {
            https_only: true,
            ..Default::default()
        },
    )
    .await;
    let mut endpoints = admin.endpoints();
    let too_long = format!("https://example.com/{}", "a".repeat(493));
    assert_eq!(too_long.len(), 513);
    let mut bad: Vec<&str> = vec![
        "",
        "ftp://example.com/x",
        "javascript:alert(1)",
        "mailto:ops@example.com",
        "example.com/hook",
        "/relative/path",
        "https://",
        "https://user:pw@example.com/",
        "https://user@example.com/",
        "https://example.com/hook#fragment",
        &too_long,
    ];
    bad.extend(PRIVATE_URLS);
    for (i, url) in bad.iter().enumerate() {
        let status = expect_invalid(
            endpoints
                .create_endpoint(create(endpoint(TENANT, &format!("bad-{i}"), url)))
                .await,
            "endpoint.url",
        );
        assert!(!status.message().is_empty(), "{url}");
    }
    let longest = format!("https://example.com/{}", "a".repeat(492));
    assert_eq!(longest.len(), 512);
    for (i, url) in [
        "https://example.com/",
        "http://example.com/hooks?x=1",
        &longest,
    ]
    .into_iter()
    .enumerate()
    {
        let created = ok(endpoints
            .create_endpoint(create(endpoint(TENANT, &format!("good-{i}"), url)))
            .await);
        assert_eq!(created.url, url);
    }

    // An https_only tenant refuses plain http.
    expect_invalid(
        endpoints
            .create_endpoint(create(endpoint("secure", "plain", "http://example.com/")))
            .await,
        "endpoint.url",
    );
    ok(endpoints
        .create_endpoint(create(endpoint("secure", "tls", "https://example.com/")))
        .await);

    // An update is held to the same rules.
    expect_invalid(
        endpoints
            .update_endpoint(UpdateEndpointRequest {
                endpoint: Some(endpoint(TENANT, "good-0", "http://10.0.0.1/")),
                update_mask: mask(&["url"]),
                allow_missing: false,
            })
            .await,
        "endpoint.url",
    );
    assert_eq!(
        ok(endpoints.get_endpoint(get("good-0")).await).url,
        "https://example.com/"
    );
    server.stop().await;
}

async fn private_networks_are_allowed_with_the_flag(backend: Backend) {
    let server = backend.start_with(&["--allow-private-networks"]).await;
    let admin = server.admin();
    create_tenant(&admin, TENANT).await;
    let mut endpoints = admin.endpoints();
    for (i, url) in PRIVATE_URLS.iter().enumerate() {
        let created = ok(endpoints
            .create_endpoint(create(endpoint(TENANT, &format!("local-{i}"), url)))
            .await);
        assert!(!created.url.is_empty());
    }
    // The other URL rules still hold.
    expect_invalid(
        endpoints
            .create_endpoint(create(endpoint(TENANT, "frag", "http://127.0.0.1/#x")))
            .await,
        "endpoint.url",
    );
    server.stop().await;
}

async fn endpoint_keys(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    create_tenant(&admin, TENANT).await;
    let mut endpoints = admin.endpoints();
    for bad in ["EP", "e", "ep 1", "-ep"] {
        expect_invalid(
            endpoints
                .create_endpoint(create(endpoint(TENANT, bad, URL)))
                .await,
            "endpoint.endpoint_id",
        );
    }
    let created = ok(endpoints
        .create_endpoint(create(endpoint(TENANT, "ep-1", URL)))
        .await);
    assert_eq!(created.endpoint_id, "ep-1");
    expect_code(
        endpoints
            .create_endpoint(create(endpoint(TENANT, "ep-1", URL)))
            .await,
        Code::AlreadyExists,
    );
    expect_code(
        endpoints
            .create_endpoint(create(endpoint("ghost", "ep-1", URL)))
            .await,
        Code::NotFound,
    );
    expect_code(endpoints.get_endpoint(get("missing")).await, Code::NotFound);
    expect_invalid(endpoints.get_endpoint(get("Bad Id")).await, "endpoint_id");
    // The same id in another tenant is another endpoint.
    create_tenant(&admin, "other").await;
    ok(endpoints
        .create_endpoint(create(endpoint("other", "ep-1", URL)))
        .await);
    server.stop().await;
}

async fn update_endpoint(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let mut endpoints = admin.endpoints();
    let before = ok(endpoints.get_endpoint(get(ENDPOINT)).await);
    let response = endpoints
        .update_endpoint(UpdateEndpointRequest {
            endpoint: Some(Endpoint {
                url: "https://new.example.com/hook".to_owned(),
                description: "not masked".to_owned(),
                etag: before.etag.clone(),
                ..endpoint(TENANT, ENDPOINT, "")
            }),
            update_mask: mask(&["url"]),
            allow_missing: false,
        })
        .await
        .expect("update endpoint");
    assert!(revision(response.metadata()) > 0);
    let updated = response.into_inner();
    assert_eq!(updated.url, "https://new.example.com/hook");
    assert_eq!(updated.description, before.description);
    assert!(updated.secret.is_empty(), "Update never returns the secret");
    assert_ne!(updated.etag, before.etag);

    let disabled = ok(endpoints
        .update_endpoint(UpdateEndpointRequest {
            endpoint: Some(Endpoint {
                enabled: Some(false),
                ..endpoint(TENANT, ENDPOINT, "")
            }),
            update_mask: mask(&["enabled"]),
            allow_missing: false,
        })
        .await);
    assert_eq!(disabled.enabled, Some(false));
    assert_eq!(disabled.url, "https://new.example.com/hook");

    expect_code(
        endpoints
            .update_endpoint(UpdateEndpointRequest {
                endpoint: Some(Endpoint {
                    description: "stale".to_owned(),
                    etag: before.etag.clone(),
                    ..endpoint(TENANT, ENDPOINT, "")
                }),
                update_mask: mask(&["description"]),
                allow_missing: false,
            })
            .await,
        Code::Aborted,
    );
    for path in ["create_time", "bogus_field"] {
        expect_invalid(
            endpoints
                .update_endpoint(UpdateEndpointRequest {
                    endpoint: Some(endpoint(TENANT, ENDPOINT, URL)),
                    update_mask: mask(&[path]),
                    allow_missing: false,
                })
                .await,
            "update_mask",
        );
    }
    expect_code(
        endpoints
            .update_endpoint(UpdateEndpointRequest {
                endpoint: Some(endpoint(TENANT, "missing", URL)),
                update_mask: mask(&["url"]),
                allow_missing: false,
            })
            .await,
        Code::NotFound,
    );
    assert_eq!(ok(endpoints.get_endpoint(get(ENDPOINT)).await), disabled);

    // allow_missing creates, then updates.
    let upserted = ok(endpoints
        .update_endpoint(UpdateEndpointRequest {
            endpoint: Some(endpoint(TENANT, "ep-upsert", URL)),
            update_mask: mask(&["url"]),
            allow_missing: true,
        })
        .await);
    assert_eq!(upserted.endpoint_id, "ep-upsert");
    assert_eq!(upserted.enabled, Some(true));
    let again = ok(endpoints
        .update_endpoint(UpdateEndpointRequest {
            endpoint: Some(endpoint(TENANT, "ep-upsert", "https://other.example.com/")),
            update_mask: mask(&["url"]),
            allow_missing: true,
        })
        .await);
    assert_eq!(again.url, "https://other.example.com/");
    assert_eq!(
        again.create_time, upserted.create_time,
        "updated, not recreated"
    );
    let listed = ok(endpoints.list_endpoints(list()).await);
    assert_eq!(listed.endpoints.len(), 2);
    server.stop().await;
}

async fn delete_endpoint_with_live_subscriptions_needs_force(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let live = create_subscription(
        &admin,
        subscription(TENANT, ENDPOINT, &["command.completed"]),
    )
    .await;
    let mut endpoints = admin.endpoints();
    let delete = |id: &str, force: bool, etag: &str| DeleteEndpointRequest {
        tenant_id: TENANT.to_owned(),
        endpoint_id: id.to_owned(),
        etag: etag.to_owned(),
        force,
    };
    expect_code(
        endpoints.delete_endpoint(delete(ENDPOINT, false, "")).await,
        Code::FailedPrecondition,
    );
    let get_sub = |id: String| GetSubscriptionRequest {
        tenant_id: TENANT.to_owned(),
        subscription_id: id,
    };
    let still = ok(admin
        .subscriptions()
        .get_subscription(get_sub(live.subscription_id.clone()))
        .await);
    assert_eq!(status_of(&still), SubStatus::Active);
    expect_code(
        endpoints
            .delete_endpoint(delete(ENDPOINT, true, "stale"))
            .await,
        Code::Aborted,
    );
    let deleted = ok(endpoints.delete_endpoint(delete(ENDPOINT, true, "")).await);
    assert_eq!(deleted.endpoint_id, ENDPOINT);
    let gone = ok(admin
        .subscriptions()
        .get_subscription(get_sub(live.subscription_id.clone()))
        .await);
    assert_eq!(
        status_of(&gone),
        SubStatus::Deleted,
        "force deletes the subscriptions"
    );
    expect_code(endpoints.get_endpoint(get(ENDPOINT)).await, Code::NotFound);
    assert!(
        ok(endpoints.list_endpoints(list()).await)
            .endpoints
            .is_empty()
    );
    expect_code(
        endpoints.delete_endpoint(delete(ENDPOINT, false, "")).await,
        Code::NotFound,
    );

    // Only deleted subscriptions left: no force needed.
    let ep2 = create_endpoint(&admin, TENANT, "ep2", URL).await;
    let sub = create_subscription(&admin, subscription(TENANT, "ep2", &["command.accepted"])).await;
    ok(admin
        .subscriptions()
        .delete_subscription(DeleteSubscriptionRequest {
            tenant_id: TENANT.to_owned(),
            subscription_id: sub.subscription_id,
            etag: String::new(),
        })
        .await);
    ok(endpoints
        .delete_endpoint(delete("ep2", false, &ep2.etag))
        .await);
    server.stop().await;
}

async fn list_endpoints_pages_and_skips(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    create_tenant(&admin, TENANT).await;
    let ids = ["ep-e", "ep-a", "ep-d", "ep-b", "ep-c"];
    for id in ids {
        create_endpoint(&admin, TENANT, id, URL).await;
    }
    let mut endpoints = admin.endpoints();
    let mut seen = Vec::new();
    let mut token = String::new();
    for _ in 0..3 {
        let page = ok(endpoints
            .list_endpoints(ListEndpointsRequest {
                page_size: 2,
                page_token: token.clone(),
                ..list()
            })
            .await);
        assert_eq!(page.total_size, 5);
        seen.extend(page.endpoints.into_iter().map(|e| e.endpoint_id));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert!(token.is_empty(), "three pages hold five endpoints");
    assert_eq!(seen, ids);
    let skipped = ok(endpoints
        .list_endpoints(ListEndpointsRequest { skip: 3, ..list() })
        .await);
    let rest: Vec<_> = skipped
        .endpoints
        .iter()
        .map(|e| e.endpoint_id.as_str())
        .collect();
    assert_eq!(rest, ["ep-b", "ep-c"]);
    assert_eq!(skipped.total_size, 5);
    expect_invalid(
        endpoints
            .list_endpoints(ListEndpointsRequest {
                page_size: -1,
                ..list()
            })
            .await,
        "page_size",
    );
    expect_invalid(
        endpoints
            .list_endpoints(ListEndpointsRequest {
                page_token: "garbage".to_owned(),
                ..list()
            })
            .await,
        "page_token",
    );
    server.stop().await;
}

async fn create_endpoint_request_id_returns_the_same_secret(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    create_tenant(&admin, TENANT).await;
    let mut endpoints = admin.endpoints();
    let request = CreateEndpointRequest {
        endpoint: Some(endpoint(TENANT, "", URL)),
        request_id: "ep-req-0001".to_owned(),
    };
    let first = ok(endpoints.create_endpoint(request.clone()).await);
    let retry = ok(endpoints.create_endpoint(request.clone()).await);
    assert_eq!(retry, first, "same generated id, same secret");
    assert!(first.secret.starts_with("whsec_"));
    expect_invalid(
        endpoints
            .create_endpoint(CreateEndpointRequest {
                endpoint: Some(endpoint(TENANT, "", "https://other.example.com/")),
                request_id: "ep-req-0001".to_owned(),
            })
            .await,
        "request_id",
    );
    assert_eq!(
        ok(endpoints.list_endpoints(list()).await).endpoints.len(),
        1
    );
    server.stop().await;
}

backend_tests!(
    create_returns_a_generated_secret_that_reads_never_show,
    caller_supplied_secrets,
    endpoint_url_rules,
    private_networks_are_allowed_with_the_flag,
    endpoint_keys,
    update_endpoint,
    delete_endpoint_with_live_subscriptions_needs_force,
    list_endpoints_pages_and_skips,
    create_endpoint_request_id_returns_the_same_secret,
);

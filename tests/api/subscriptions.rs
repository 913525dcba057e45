//! SubscriptionService standard methods: patterns, statuses, names, soft
//! delete, TTLs and renewal, filters, paging, upserts, idempotency.

use hookplane::proto::subscription::Status as SubStatus;
use hookplane::proto::tenant::Settings;
use hookplane::proto::{
    CreateSubscriptionRequest, DeleteSubscriptionRequest, GetSubscriptionRequest,
    ListSubscriptionsRequest, RenewSubscriptionRequest, Subscription, UpdateSubscriptionRequest,
};
use tonic::Code;

use crate::harness::*;

fn get(subscription_id: &str) -> GetSubscriptionRequest {
    GetSubscriptionRequest {
        tenant_id: TENANT.to_owned(),
        subscription_id: subscription_id.to_owned(),
    }
}

fn delete(subscription_id: &str) -> DeleteSubscriptionRequest {
    DeleteSubscriptionRequest {
        tenant_id: TENANT.to_owned(),
        subscription_id: subscription_id.to_owned(),
        etag: String::new(),
    }
}

fn list() -> ListSubscriptionsRequest {
    ListSubscriptionsRequest {
        tenant_id: TENANT.to_owned(),
        ..Default::default()
    }
}

fn named(id: &str, name: &str, patterns: &[&str]) -> Subscription {
    Subscription {
        subscription_id: id.to_owned(),
        name: name.to_owned(),
        ..subscription(TENANT, ENDPOINT, patterns)
    }
}

fn update(subscription: Subscription, paths: &[&str]) -> UpdateSubscriptionRequest {
    UpdateSubscriptionRequest {
        subscription: Some(subscription),
        update_mask: mask(paths),
        allow_missing: false,
    }
}

fn renew(subscription_id: &str, ttl_seconds: i64) -> RenewSubscriptionRequest {
    RenewSubscriptionRequest {
        tenant_id: TENANT.to_owned(),
        subscription_id: subscription_id.to_owned(),
        ttl_seconds,
    }
}

fn ids(subscriptions: &[Subscription]) -> Vec<&str> {
    subscriptions
        .iter()
        .map(|s| s.subscription_id.as_str())
        .collect()
}

async fn create_subscription_defaults(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let mut subs = admin.subscriptions();
    let response = subs
        .create_subscription(create_subscription_request(Subscription {
            name: "orders".to_owned(),
            ..subscription(TENANT, ENDPOINT, &["command.completed", "agent.*"])
        }))
        .await
        .expect("create subscription");
    assert!(revision(response.metadata()) > 0);
    let created = response.into_inner();
    assert!(!created.subscription_id.is_empty(), "id generated");
    assert_eq!(created.tenant_id, TENANT);
    assert_eq!(created.endpoint_id, ENDPOINT);
    assert_eq!(created.name, "orders");
    assert_eq!(
        created.event_types,
        ["command.completed", "agent.*"],
        "order kept"
    );
    assert_eq!(status_of(&created), SubStatus::Active, "ACTIVE by default");
    assert!(
        created.expire_time.is_none(),
        "no TTL on this tenant: never expires"
    );
    assert!(created.create_time.is_some() && !created.etag.is_empty());
    assert_eq!(
        ok(subs.get_subscription(get(&created.subscription_id)).await),
        created
    );

    // Generated ids sort in creation order.
    let mut generated = vec![created.subscription_id.clone()];
    for _ in 0..4 {
        let s = create_subscription(&admin, subscription(TENANT, ENDPOINT, &["*"])).await;
        generated.push(s.subscription_id);
    }
    let mut sorted = generated.clone();
    sorted.sort();
    assert_eq!(sorted, generated, "time-sortable ids");
    let listed = ok(subs.list_subscriptions(list()).await);
    assert_eq!(ids(&listed.subscriptions), generated);
    server.stop().await;
}

async fn subscription_keys_and_references(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let mut subs = admin.subscriptions();
    for bad in ["Sub", "s", "sub 1", "-sub"] {
        expect_invalid(
            subs.create_subscription(create_subscription_request(named(bad, "", &["*"])))
                .await,
            "subscription.subscription_id",
        );
    }
    let created = create_subscription(&admin, named("sub-1", "", &["*"])).await;
    assert_eq!(created.subscription_id, "sub-1");
    expect_code(
        subs.create_subscription(create_subscription_request(named("sub-1", "", &["*"])))
            .await,
        Code::AlreadyExists,
    );
    expect_code(
        subs.create_subscription(create_subscription_request(subscription(
            TENANT,
            "no-such-endpoint",
            &["*"],
        )))
        .await,
        Code::NotFound,
    );
    expect_code(
        subs.create_subscription(create_subscription_request(subscription(
            "ghost",
            ENDPOINT,
            &["*"],
        )))
        .await,
        Code::NotFound,
    );
    expect_invalid(
        subs.create_subscription(create_subscription_request(subscription(
            TENANT,
            "",
            &["*"],
        )))
        .await,
        "subscription.endpoint_id",
    );
    expect_code(subs.get_subscription(get("missing")).await, Code::NotFound);
    expect_invalid(
        subs.get_subscription(get("Not Valid")).await,
        "subscription_id",
    );
    assert_eq!(
        ids(&ok(subs.list_subscriptions(list()).await).subscriptions),
        ["sub-1"]
    );
    server.stop().await;
}

async fn pattern_rules(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let mut subs = admin.subscriptions();
    let cases: [(&[&str], &str); 11] = [
        (&["command.unknown"], "subscription.event_types[0]"),
        (&["old.thing"], "subscription.event_types[0]"),
        (&["agent*"], "subscription.event_types[0]"),
        (
            &["command.completed", "agent*"],
            "subscription.event_types[1]",
        ),
        (
            &["command.completed", "*", "nomatch.*"],
            "subscription.event_types[2]",
        ),
        (&["*.nothing"], "subscription.event_types[0]"),
        (&[""], "subscription.event_types[0]"),
        (&["command..completed"], "subscription.event_types[0]"),
        (&["COMMAND.COMPLETED"], "subscription.event_types[0]"),
        (&["command.completed.*"], "subscription.event_types[0]"),
        (&[], "subscription.event_types"),
    ];
    for (patterns, field) in cases {
        expect_invalid(
            subs.create_subscription(create_subscription_request(subscription(
                TENANT, ENDPOINT, patterns,
            )))
            .await,
            field,
        );
    }
    for patterns in [
        &["*"][..],
        &["command.*"],
        &["*.completed"],
        &["agent.*.changed"],
        &["agent.*"],
        &["agent.*", "alarm-raised", "command.accepted"],
    ] {
        let created = create_subscription(&admin, subscription(TENANT, ENDPOINT, patterns)).await;
        assert_eq!(created.event_types, patterns);
    }
    let listed = ok(subs.list_subscriptions(list()).await);
    assert_eq!(
        listed.subscriptions.len(),
        6,
        "only the valid ones were stored"
    );
    server.stop().await;
}

async fn between_one_and_sixty_four_patterns(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let names: Vec<String> = (0..64).map(|i| format!("bulk.t{i:02}")).collect();
    for name in &names {
        create_event_type(&admin, event_type(name)).await;
    }
    let sixty_four: Vec<&str> = names.iter().map(String::as_str).collect();
    let created = create_subscription(&admin, subscription(TENANT, ENDPOINT, &sixty_four)).await;
    assert_eq!(created.event_types.len(), 64);
    let mut sixty_five = sixty_four.clone();
    sixty_five.push("*");
    expect_invalid(
        admin
            .subscriptions()
            .create_subscription(create_subscription_request(subscription(
                TENANT,
                ENDPOINT,
                &sixty_five,
            )))
            .await,
        "subscription.event_types",
    );
    server.stop().await;
}

async fn create_status_rules(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let mut subs = admin.subscriptions();
    for status in [
        SubStatus::Deleted as i32,
        SubStatus::Expired as i32,
        SubStatus::PendingVerification as i32,
        77,
    ] {
        expect_invalid(
            subs.create_subscription(create_subscription_request(Subscription {
                status,
                ..subscription(TENANT, ENDPOINT, &["*"])
            }))
            .await,
            "subscription.status",
        );
    }
    let disabled = create_subscription(
        &admin,
        Subscription {
            status: SubStatus::Disabled as i32,
            ..subscription(TENANT, ENDPOINT, &["*"])
        },
    )
    .await;
    assert_eq!(status_of(&disabled), SubStatus::Disabled);
    let active = create_subscription(
        &admin,
        Subscription {
            status: SubStatus::Active as i32,
            ..subscription(TENANT, ENDPOINT, &["*"])
        },
    )
    .await;
    assert_eq!(status_of(&active), SubStatus::Active);
    assert_eq!(
        ok(subs.list_subscriptions(list()).await)
            .subscriptions
            .len(),
        2
    );
    server.stop().await;
}

async fn names_are_unique_among_live_subscriptions(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let mut subs = admin.subscriptions();
    let first = create_subscription(&admin, named("", "orders", &["*"])).await;
    expect_code(
        subs.create_subscription(create_subscription_request(named(
            "",
            "orders",
            &["command.*"],
        )))
        .await,
        Code::AlreadyExists,
    );
    // Unnamed subscriptions never clash.
    create_subscription(&admin, named("", "", &["*"])).await;
    create_subscription(&admin, named("", "", &["*"])).await;
    // Renaming onto a taken name clashes too.
    let other = create_subscription(&admin, named("", "billing", &["*"])).await;
    expect_code(
        subs.update_subscription(update(
            Subscription {
                name: "orders".to_owned(),
                ..other.clone()
            },
            &["name"],
        ))
        .await,
        Code::AlreadyExists,
    );
    // Another tenant may use the same name.
    create_tenant(&admin, "other").await;
    create_endpoint(&admin, "other", ENDPOINT, URL).await;
    create_subscription(
        &admin,
        Subscription {
            name: "orders".to_owned(),
            ..subscription("other", ENDPOINT, &["*"])
        },
    )
    .await;
    // Deleting frees the name.
    ok(subs
        .delete_subscription(delete(&first.subscription_id))
        .await);
    let reused = create_subscription(&admin, named("", "orders", &["command.*"])).await;
    assert_ne!(reused.subscription_id, first.subscription_id);
    server.stop().await;
}

async fn update_subscription_rules(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let mut subs = admin.subscriptions();
    let created = create_subscription(&admin, named("sub-1", "n", &["command.completed"])).await;
    let status = |s: SubStatus| Subscription {
        status: s as i32,
        ..named("sub-1", "", &[])
    };

    let disabled = ok(subs
        .update_subscription(update(status(SubStatus::Disabled), &["status"]))
        .await);
    assert_eq!(status_of(&disabled), SubStatus::Disabled);
    assert_eq!(
        disabled.event_types,
        ["command.completed"],
        "unmasked fields kept"
    );
    assert_eq!(disabled.name, "n");
    let active = ok(subs
        .update_subscription(update(status(SubStatus::Active), &["status"]))
        .await);
    assert_eq!(status_of(&active), SubStatus::Active);
    for bad in [
        SubStatus::Deleted,
        SubStatus::Expired,
        SubStatus::PendingVerification,
        SubStatus::Unspecified,
    ] {
        expect_invalid(
            subs.update_subscription(update(status(bad), &["status"]))
                .await,
            "subscription.status",
        );
    }

    let patterns = ok(subs
        .update_subscription(update(
            Subscription {
                etag: active.etag.clone(),
                ..named("sub-1", "", &["command.*", "alarm-raised"])
            },
            &["event_types"],
        ))
        .await);
    assert_eq!(patterns.event_types, ["command.*", "alarm-raised"]);
    assert_ne!(patterns.etag, active.etag);
    expect_code(
        subs.update_subscription(update(
            Subscription {
                etag: active.etag.clone(),
                ..named("sub-1", "", &["*"])
            },
            &["event_types"],
        ))
        .await,
        Code::Aborted,
    );
    expect_invalid(
        subs.update_subscription(update(
            named("sub-1", "", &["*", "agent*"]),
            &["event_types"],
        ))
        .await,
        "subscription.event_types[1]",
    );
    expect_invalid(
        subs.update_subscription(update(named("sub-1", "", &[]), &["event_types"]))
            .await,
        "subscription.event_types",
    );
    for path in ["create_time", "expire_time", "etag_typo"] {
        expect_invalid(
            subs.update_subscription(update(named("sub-1", "", &["*"]), &[path]))
                .await,
            "update_mask",
        );
    }
    expect_code(
        subs.update_subscription(update(
            Subscription {
                endpoint_id: "no-such-endpoint".to_owned(),
                ..named("sub-1", "", &[])
            },
            &["endpoint_id"],
        ))
        .await,
        Code::NotFound,
    );
    expect_code(
        subs.update_subscription(update(named("missing", "", &["*"]), &["event_types"]))
            .await,
        Code::NotFound,
    );
    let got = ok(subs.get_subscription(get("sub-1")).await);
    assert_eq!(got, patterns, "refused updates changed nothing");

    // Moving to another endpoint of the tenant works.
    create_endpoint(&admin, TENANT, "ep2", URL).await;
    let moved = ok(subs
        .update_subscription(update(
            Subscription {
                endpoint_id: "ep2".to_owned(),
                ..named("sub-1", "", &[])
            },
            &["endpoint_id"],
        ))
        .await);
    assert_eq!(moved.endpoint_id, "ep2");

    ok(subs.delete_subscription(delete("sub-1")).await);
    expect_code(
        subs.update_subscription(update(status(SubStatus::Disabled), &["status"]))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(created.subscription_id, "sub-1");
    server.stop().await;
}

async fn delete_is_soft(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let mut subs = admin.subscriptions();
    let keep = create_subscription(&admin, named("keep", "", &["*"])).await;
    let doomed = create_subscription(&admin, named("doomed", "orders", &["*"])).await;
    expect_code(
        subs.delete_subscription(DeleteSubscriptionRequest {
            etag: "stale".to_owned(),
            ..delete("doomed")
        })
        .await,
        Code::Aborted,
    );
    let response = subs
        .delete_subscription(DeleteSubscriptionRequest {
            etag: doomed.etag.clone(),
            ..delete("doomed")
        })
        .await
        .expect("delete subscription");
    assert!(revision(response.metadata()) > 0);
    let deleted = response.into_inner();
    assert_eq!(status_of(&deleted), SubStatus::Deleted);

    let got = ok(subs.get_subscription(get("doomed")).await);
    assert_eq!(status_of(&got), SubStatus::Deleted, "Get still shows it");
    assert_eq!(got.name, "orders");
    let listed = ok(subs.list_subscriptions(list()).await);
    assert_eq!(ids(&listed.subscriptions), ["keep"], "List hides it");
    assert_eq!(listed.total_size, 1);
    let all = ok(subs
        .list_subscriptions(ListSubscriptionsRequest {
            show_deleted: true,
            ..list()
        })
        .await);
    assert_eq!(ids(&all.subscriptions), ["keep", "doomed"]);

    expect_code(
        subs.delete_subscription(delete("doomed")).await,
        Code::NotFound,
    );
    // The id is never reused; the name is free.
    expect_code(
        subs.create_subscription(create_subscription_request(named("doomed", "", &["*"])))
            .await,
        Code::AlreadyExists,
    );
    create_subscription(&admin, named("", "orders", &["*"])).await;
    assert_eq!(status_of(&keep), SubStatus::Active);
    server.stop().await;
}

async fn ttl_defaults_and_maxima(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    create_tenant_with(
        &admin,
        TENANT,
        Settings {
            default_ttl_seconds: 3600,
            max_ttl_seconds: 7200,
            ..Default::default()
        },
    )
    .await;
    create_catalog(&admin).await;
    create_endpoint(&admin, TENANT, ENDPOINT, URL).await;
    let mut subs = admin.subscriptions();
    let with_ttl = |ttl_seconds: i64| CreateSubscriptionRequest {
        ttl_seconds,
        ..create_subscription_request(subscription(TENANT, ENDPOINT, &["*"]))
    };

    let default = ok(subs.create_subscription(with_ttl(0)).await);
    assert_about(secs(&default.expire_time), unix_now() + 3600);
    let short = ok(subs.create_subscription(with_ttl(600)).await);
    assert_about(secs(&short.expire_time), unix_now() + 600);
    let max = ok(subs.create_subscription(with_ttl(7200)).await);
    assert_about(secs(&max.expire_time), unix_now() + 7200);
    expect_invalid(
        subs.create_subscription(with_ttl(7201)).await,
        "ttl_seconds",
    );
    expect_invalid(subs.create_subscription(with_ttl(-1)).await, "ttl_seconds");
    assert_eq!(
        ok(subs.list_subscriptions(list()).await)
            .subscriptions
            .len(),
        3
    );

    // Renewal counts from the renewing call.
    let renewed = ok(subs
        .renew_subscription(renew(&short.subscription_id, 7000))
        .await);
    assert_about(secs(&renewed.expire_time), unix_now() + 7000);
    assert_ne!(renewed.etag, short.etag);
    let got = ok(subs.get_subscription(get(&short.subscription_id)).await);
    assert_eq!(got.expire_time, renewed.expire_time);
    let back_to_default = ok(subs
        .renew_subscription(renew(&short.subscription_id, 0))
        .await);
    assert_about(secs(&back_to_default.expire_time), unix_now() + 3600);
    expect_invalid(
        subs.renew_subscription(renew(&short.subscription_id, 7201))
            .await,
        "ttl_seconds",
    );
    expect_invalid(
        subs.renew_subscription(renew(&short.subscription_id, -5))
            .await,
        "ttl_seconds",
    );
    expect_code(
        subs.renew_subscription(renew("missing", 60)).await,
        Code::NotFound,
    );
    ok(subs.delete_subscription(delete(&max.subscription_id)).await);
    expect_code(
        subs.renew_subscription(renew(&max.subscription_id, 60))
            .await,
        Code::FailedPrecondition,
    );
    server.stop().await;
}

async fn ttl_without_tenant_default_never_expires(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let mut subs = admin.subscriptions();
    let forever = create_subscription(&admin, subscription(TENANT, ENDPOINT, &["*"])).await;
    assert!(forever.expire_time.is_none());
    let timed = ok(subs
        .create_subscription(CreateSubscriptionRequest {
            ttl_seconds: 86_400 * 365,
            ..create_subscription_request(subscription(TENANT, ENDPOINT, &["*"]))
        })
        .await);
    assert_about(secs(&timed.expire_time), unix_now() + 86_400 * 365);
    let renewed = ok(subs
        .renew_subscription(renew(&forever.subscription_id, 120))
        .await);
    assert_about(secs(&renewed.expire_time), unix_now() + 120);
    server.stop().await;
}

async fn list_filters(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    create_endpoint(&admin, TENANT, "ep2", URL).await;
    let on = |id: &str, endpoint: &str, patterns: &[&str]| Subscription {
        subscription_id: id.to_owned(),
        ..subscription(TENANT, endpoint, patterns)
    };
    create_subscription(&admin, on("s1", ENDPOINT, &["command.completed"])).await;
    create_subscription(&admin, on("s2", "ep2", &["command.*"])).await;
    create_subscription(
        &admin,
        Subscription {
            status: SubStatus::Disabled as i32,
            ..on("s3", ENDPOINT, &["agent.*"])
        },
    )
    .await;
    create_subscription(&admin, on("s4", "ep2", &["*"])).await;
    create_subscription(&admin, on("s5", ENDPOINT, &["command.completed"])).await;
    create_subscription(&admin, on("s6", ENDPOINT, &["agent.*.changed"])).await;
    let mut subs = admin.subscriptions();
    ok(subs.delete_subscription(delete("s5")).await);

    let cases: Vec<(ListSubscriptionsRequest, Vec<&str>)> = vec![
        (
            ListSubscriptionsRequest {
                endpoint_id: ENDPOINT.to_owned(),
                ..list()
            },
            vec!["s1", "s3", "s6"],
        ),
        (
            ListSubscriptionsRequest {
                status: SubStatus::Disabled as i32,
                ..list()
            },
            vec!["s3"],
        ),
        (
            ListSubscriptionsRequest {
                status: SubStatus::Active as i32,
                ..list()
            },
            vec!["s1", "s2", "s4", "s6"],
        ),
        (
            ListSubscriptionsRequest {
                event_type: "command.completed".to_owned(),
                ..list()
            },
            vec!["s1", "s2", "s4"],
        ),
        (
            ListSubscriptionsRequest {
                event_type: "command.completed".to_owned(),
                show_deleted: true,
                ..list()
            },
            vec!["s1", "s2", "s4", "s5"],
        ),
        (
            ListSubscriptionsRequest {
                legacy_code: 1002,
                ..list()
            },
            vec!["s1", "s2", "s4"],
        ),
        (
            ListSubscriptionsRequest {
                event_type: "agent.presence.changed".to_owned(),
                ..list()
            },
            vec!["s3", "s4", "s6"],
        ),
        (
            ListSubscriptionsRequest {
                legacy_code: 2002,
                ..list()
            },
            vec!["s3", "s4"],
        ),
        (
            ListSubscriptionsRequest {
                endpoint_id: "ep2".to_owned(),
                event_type: "command.accepted".to_owned(),
                ..list()
            },
            vec!["s2", "s4"],
        ),
        (
            ListSubscriptionsRequest {
                event_type: "alarm-raised".to_owned(),
                page_size: 10,
                ..list()
            },
            vec!["s4"],
        ),
    ];
    for (request, expected) in cases {
        let described = format!("{request:?}");
        let listed = ok(subs.list_subscriptions(request).await);
        assert_eq!(ids(&listed.subscriptions), expected, "{described}");
        assert_eq!(listed.total_size as usize, expected.len(), "{described}");
    }
    // Filtered paging keeps the filter across pages.
    let first = ok(subs
        .list_subscriptions(ListSubscriptionsRequest {
            event_type: "command.completed".to_owned(),
            page_size: 2,
            ..list()
        })
        .await);
    assert_eq!(ids(&first.subscriptions), ["s1", "s2"]);
    let second = ok(subs
        .list_subscriptions(ListSubscriptionsRequest {
            event_type: "command.completed".to_owned(),
            page_size: 2,
            page_token: first.next_page_token.clone(),
            ..list()
        })
        .await);
    assert_eq!(ids(&second.subscriptions), ["s4"]);
    assert!(second.next_page_token.is_empty());
    expect_invalid(
        subs.list_subscriptions(ListSubscriptionsRequest {
            status: 42,
            ..list()
        })
        .await,
        "status",
    );
    server.stop().await;
}

async fn list_pages_through_everything_once(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let mut created = Vec::new();
    for i in 0..12 {
        let id = format!("sub-{}", 12 - i);
        create_subscription(&admin, named(&id, "", &["*"])).await;
        created.push(id);
    }
    let mut subs = admin.subscriptions();
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = ok(subs
            .list_subscriptions(ListSubscriptionsRequest {
                page_size: 5,
                page_token: token,
                ..list()
            })
            .await);
        pages += 1;
        assert_eq!(page.total_size, 12);
        seen.extend(page.subscriptions.into_iter().map(|s| s.subscription_id));
        token = page.next_page_token;
        if token.is_empty() || pages > 5 {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created, "every subscription once, in creation order");

    let tail = ok(subs
        .list_subscriptions(ListSubscriptionsRequest {
            page_size: 5,
            skip: 10,
            ..list()
        })
        .await);
    assert_eq!(ids(&tail.subscriptions), ["sub-2", "sub-1"]);
    assert!(tail.next_page_token.is_empty());
    let first = ok(subs
        .list_subscriptions(ListSubscriptionsRequest {
            page_size: 5,
            ..list()
        })
        .await);
    expect_invalid(
        subs.list_subscriptions(ListSubscriptionsRequest {
            page_size: 5,
            page_token: tamper(&first.next_page_token),
            ..list()
        })
        .await,
        "page_token",
    );
    expect_invalid(
        subs.list_subscriptions(ListSubscriptionsRequest {
            page_size: -5,
            ..list()
        })
        .await,
        "page_size",
    );
    expect_invalid(
        subs.list_subscriptions(ListSubscriptionsRequest { skip: -5, ..list() })
            .await,
        "skip",
    );
    server.stop().await;
}

async fn update_with_allow_missing_upserts(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let mut subs = admin.subscriptions();
    let upsert = |patterns: &[&str]| UpdateSubscriptionRequest {
        allow_missing: true,
        ..update(named("partner-cb", "partner", patterns), &["event_types"])
    };
    expect_code(
        subs.update_subscription(UpdateSubscriptionRequest {
            allow_missing: false,
            ..upsert(&["command.completed"])
        })
        .await,
        Code::NotFound,
    );
    let created = ok(subs
        .update_subscription(upsert(&["command.completed"]))
        .await);
    assert_eq!(created.subscription_id, "partner-cb");
    assert_eq!(created.name, "partner");
    assert_eq!(status_of(&created), SubStatus::Active);
    assert_eq!(ok(subs.get_subscription(get("partner-cb")).await), created);

    let updated = ok(subs.update_subscription(upsert(&["command.*"])).await);
    assert_eq!(updated.event_types, ["command.*"]);
    assert_eq!(updated.create_time, created.create_time, "updated in place");
    assert_ne!(updated.etag, created.etag);
    let listed = ok(subs.list_subscriptions(list()).await);
    assert_eq!(ids(&listed.subscriptions), ["partner-cb"]);

    // An upsert is validated like a create.
    expect_invalid(
        subs.update_subscription(UpdateSubscriptionRequest {
            allow_missing: true,
            ..update(named("fresh", "", &["agent*"]), &["event_types"])
        })
        .await,
        "subscription.event_types[0]",
    );
    expect_code(
        subs.update_subscription(UpdateSubscriptionRequest {
            allow_missing: true,
            ..update(
                Subscription {
                    endpoint_id: "no-such-endpoint".to_owned(),
                    ..named("fresh", "", &["*"])
                },
                &["event_types"],
            )
        })
        .await,
        Code::NotFound,
    );
    expect_code(subs.get_subscription(get("fresh")).await, Code::NotFound);
    server.stop().await;
}

async fn require_verification_starts_pending(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    create_tenant_with(
        &admin,
        TENANT,
        Settings {
            require_verification: true,
            ..Default::default()
        },
    )
    .await;
    create_catalog(&admin).await;
    create_endpoint(&admin, TENANT, ENDPOINT, URL).await;
    for asked in [
        SubStatus::Unspecified,
        SubStatus::Active,
        SubStatus::Disabled,
    ] {
        let created = create_subscription(
            &admin,
            Subscription {
                status: asked as i32,
                ..subscription(TENANT, ENDPOINT, &["*"])
            },
        )
        .await;
        assert_eq!(
            status_of(&created),
            SubStatus::PendingVerification,
            "asked {asked:?}"
        );
        let got = ok(admin
            .subscriptions()
            .get_subscription(get(&created.subscription_id))
            .await);
        assert_eq!(status_of(&got), SubStatus::PendingVerification);
    }
    server.stop().await;
}

async fn create_subscription_request_id_is_idempotent(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let mut subs = admin.subscriptions();
    let request = CreateSubscriptionRequest {
        request_id: "sub-req-0001".to_owned(),
        ..create_subscription_request(named("", "orders", &["command.*"]))
    };
    let first = ok(subs.create_subscription(request.clone()).await);
    let retry = ok(subs.create_subscription(request.clone()).await);
    assert_eq!(retry, first, "same generated id and etag");
    expect_invalid(
        subs.create_subscription(CreateSubscriptionRequest {
            request_id: "sub-req-0001".to_owned(),
            ..create_subscription_request(named("", "billing", &["command.*"]))
        })
        .await,
        "request_id",
    );
    // A fresh request id with the same name is a real clash.
    expect_code(
        subs.create_subscription(CreateSubscriptionRequest {
            request_id: "sub-req-0002".to_owned(),
            ..create_subscription_request(named("", "orders", &["command.*"]))
        })
        .await,
        Code::AlreadyExists,
    );
    assert_eq!(
        ids(&ok(subs.list_subscriptions(list()).await).subscriptions),
        [first.subscription_id.as_str()]
    );
    server.stop().await;
}

/// A create starts from the tenant as this replica last saw it; when the
/// tenant has changed since (here behind the server's back, with no change
/// record, as if another replica's change had not arrived yet), the create
/// must follow the tenant as it is now.
async fn create_follows_a_tenant_changed_elsewhere(backend: Backend) {
    use sea_orm::ConnectionTrait;
    let (server, admin) = fixture(&backend).await;
    let db = backend.database().await;
    let before = create_subscription(&admin, subscription(TENANT, ENDPOINT, &["*"])).await;
    assert_eq!(status_of(&before), SubStatus::Active);
    assert_eq!(before.expire_time, None);

    db.execute_unprepared(&format!(
        "UPDATE tenants SET require_verification = true, default_ttl_seconds = 600, \
         etag = 'changed-elsewhere' WHERE tenant_id = '{TENANT}'"
    ))
    .await
    .expect("change the tenant");
    let created = create_subscription(&admin, subscription(TENANT, ENDPOINT, &["*"])).await;
    assert_eq!(status_of(&created), SubStatus::PendingVerification);
    assert_about(secs(&created.expire_time), unix_now() + 600);
    let stored = ok(admin
        .subscriptions()
        .get_subscription(get(&created.subscription_id))
        .await);
    assert_eq!(status_of(&stored), SubStatus::PendingVerification);

    db.execute_unprepared(&format!(
        "UPDATE tenants SET state = 'SUSPENDED', etag = 'suspended-elsewhere' \
         WHERE tenant_id = '{TENANT}'"
    ))
    .await
    .expect("suspend the tenant");
    let refused = admin
        .subscriptions()
        .create_subscription(create_subscription_request(named(
            "sub_after_suspend",
            "",
            &["*"],
        )))
        .await;
    expect_code(refused, Code::FailedPrecondition);
    expect_code(
        admin
            .subscriptions()
            .get_subscription(get("sub_after_suspend"))
            .await,
        Code::NotFound,
    );
    db.close().await.expect("close");
    server.stop().await;
}

backend_tests!(
    create_follows_a_tenant_changed_elsewhere,
    create_subscription_defaults,
    subscription_keys_and_references,
    pattern_rules,
    between_one_and_sixty_four_patterns,
    create_status_rules,
    names_are_unique_among_live_subscriptions,
    update_subscription_rules,
    delete_is_soft,
    ttl_defaults_and_maxima,
    ttl_without_tenant_default_never_expires,
    list_filters,
    list_pages_through_everything_once,
    update_with_allow_missing_upserts,
    require_verification_starts_pending,
    create_subscription_request_id_is_idempotent,
);

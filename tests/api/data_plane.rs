//! The data plane as a dispatcher sees it: ResolveSubscribers (pattern
//! matching, what never resolves, who may call it and who gets secrets),
//! seeds 002/004 "changes take effect", and WatchSubscriptions (snapshot,
//! heartbeat, changes, resume without gap or duplicate, bad revisions, and
//! revisions in commit order under concurrent writers).

use std::collections::BTreeMap;
use std::time::Duration;

use hookplane::proto::credential::Role;
use hookplane::proto::resolve_subscribers_response::Target;
use hookplane::proto::subscription::Status as SubStatus;
use hookplane::proto::tenant::State as TenantState;
use hookplane::proto::watch_subscriptions_response::{Kind, Resource};
use hookplane::proto::{
    CreateEndpointRequest, DeleteEndpointRequest, DeleteSubscriptionRequest, Endpoint,
    GetEndpointRequest, ResolveSubscribersRequest, RevokeCredentialRequest,
    RotateEndpointSecretRequest, Subscription, Tenant, UpdateSubscriptionRequest,
    UpdateTenantRequest,
};
use tokio::task::JoinSet;
use tonic::Code;
use tonic::transport::Channel;

use crate::harness::*;
use crate::lifecycle::{
    DEADLINE, Watch, endpoint_of, kind_of, resolve, set_subscription_status, subscription_of,
    target_ids, update_endpoint, watch_error,
};

/// `{subscription_id: matched_pattern}` of `targets`; fails on a subscription
/// listed twice.
fn matches(targets: &[Target]) -> BTreeMap<String, String> {
    let map: BTreeMap<String, String> = targets
        .iter()
        .map(|t| (t.subscription_id.clone(), t.matched_pattern.clone()))
        .collect();
    assert_eq!(map.len(), targets.len(), "one target per subscription");
    map
}

fn expected(pairs: &[(&Subscription, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(s, p)| (s.subscription_id.clone(), p.to_string()))
        .collect()
}

pub(crate) async fn delete_subscription(clients: &Clients, subscription_id: &str) -> i64 {
    let response = clients
        .subscriptions()
        .delete_subscription(DeleteSubscriptionRequest {
            tenant_id: TENANT.to_owned(),
            subscription_id: subscription_id.to_owned(),
            etag: String::new(),
        })
        .await
        .expect("delete subscription");
    revision(response.metadata())
}

/// Creates a subscription and returns it with its `x-revision`.
pub(crate) async fn create_with_revision(
    clients: &Clients,
    s: Subscription,
) -> (Subscription, i64) {
    let response = clients
        .subscriptions()
        .create_subscription(create_subscription_request(s))
        .await
        .expect("create subscription");
    let rev = revision(response.metadata());
    (response.into_inner(), rev)
}

async fn set_tenant_state(admin: &Clients, tenant_id: &str, state: TenantState) {
    ok(admin
        .tenants()
        .update_tenant(UpdateTenantRequest {
            tenant: Some(Tenant {
                tenant_id: tenant_id.to_owned(),
                state: state as i32,
                ..Default::default()
            }),
            update_mask: mask(&["state"]),
        })
        .await);
}

// ---------------------------------------------------------------------------
// Resolve
// ---------------------------------------------------------------------------

async fn resolve_matches_exact_prefix_middle_and_star_patterns(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let named = |name: &str, patterns: &[&str]| Subscription {
        name: name.to_owned(),
        ..subscription(TENANT, ENDPOINT, patterns)
    };
    let exact = create_subscription(&admin, named("exact", &["command.completed"])).await;
    let prefix = create_subscription(&admin, named("prefix", &["command.*"])).await;
    let middle = create_subscription(&admin, named("middle", &["agent.*.changed"])).await;
    let tail = create_subscription(&admin, named("tail", &["agent.*"])).await;
    let all = create_subscription(&admin, named("all", &["*"])).await;
    let several = create_subscription(
        &admin,
        named(
            "several",
            &["alarm-raised", "agent.presence.*", "command.*", "*"],
        ),
    )
    .await;
    // Another tenant's subscriptions never show up.
    create_tenant(&admin, "other").await;
    create_endpoint(&admin, "other", "ep", "https://hooks.example.com/other").await;
    let foreign = create_subscription(&admin, subscription("other", "ep", &["*"])).await;

    let cases: [(&str, Vec<(&Subscription, &str)>); 5] = [
        (
            "command.completed",
            vec![
                (&exact, "command.completed"),
                (&prefix, "command.*"),
                (&all, "*"),
                (&several, "command.*"),
            ],
        ),
        (
            "command.accepted",
            vec![(&prefix, "command.*"), (&all, "*"), (&several, "command.*")],
        ),
        (
            "agent.presence.changed",
            vec![
                (&middle, "agent.*.changed"),
                (&tail, "agent.*"),
                (&all, "*"),
                (&several, "agent.presence.*"),
            ],
        ),
        (
            // A middle `*` is one segment; a final `*` one or more.
            "agent.state.changed.v1",
            vec![(&tail, "agent.*"), (&all, "*"), (&several, "*")],
        ),
        (
            "alarm-raised",
            vec![(&all, "*"), (&several, "alarm-raised")],
        ),
    ];
    for (event_type, want) in &cases {
        assert_eq!(
            matches(&resolve(&admin, TENANT, event_type).await),
            expected(want),
            "targets of {event_type}: subscription id -> first matching pattern"
        );
    }

    let targets = resolve(&admin, TENANT, "command.completed").await;
    let target = targets
        .iter()
        .find(|t| t.subscription_id == exact.subscription_id)
        .expect("the exact subscription");
    assert_eq!(target.endpoint_id, ENDPOINT);
    assert_eq!(target.name, "exact");
    assert_eq!(target.url, URL);
    assert_eq!(
        target_ids(&resolve(&admin, "other", "command.completed").await),
        [foreign.subscription_id.as_str()]
    );

    // Unknown to the catalog (matching is case-sensitive): nothing, not an error.
    for unknown in ["Command.completed", "no.such.type"] {
        assert!(
            resolve(&admin, TENANT, unknown).await.is_empty(),
            "{unknown} resolves to nothing"
        );
    }
    expect_invalid(
        admin
            .subscriptions()
            .resolve_subscribers(ResolveSubscribersRequest {
                tenant_id: TENANT.to_owned(),
                event_type: "command..completed".to_owned(),
                ..Default::default()
            })
            .await,
        "event_type",
    );
    server.stop().await;
}

async fn seed_002_004_changes_take_effect_at_once(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    create_endpoint(&admin, TENANT, "ep2", "https://hooks.example.com/second").await;
    let resolved = |event_type: &'static str| {
        let admin = admin.clone();
        async move {
            target_ids(&resolve(&admin, TENANT, event_type).await)
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<String>>()
        }
    };

    // Every assertion below runs right after the write returned: no waiting.
    let orders = create_subscription(
        &admin,
        Subscription {
            name: "orders".to_owned(),
            ..subscription(TENANT, ENDPOINT, &["command.*"])
        },
    )
    .await;
    let o = orders.subscription_id.clone();
    assert_eq!(resolved("command.completed").await, [o.as_str()]);
    let paused = create_subscription(
        &admin,
        Subscription {
            status: SubStatus::Disabled as i32,
            ..subscription(TENANT, "ep2", &["command.completed"])
        },
    )
    .await;
    let p = paused.subscription_id.clone();
    assert_eq!(
        resolved("command.completed").await,
        [o.as_str()],
        "DISABLED"
    );

    ok(admin
        .subscriptions()
        .update_subscription(UpdateSubscriptionRequest {
            subscription: Some(Subscription {
                tenant_id: TENANT.to_owned(),
                subscription_id: o.clone(),
                event_types: vec!["alarm-raised".to_owned()],
                ..Default::default()
            }),
            update_mask: mask(&["event_types"]),
            allow_missing: false,
        })
        .await);
    assert!(
        resolved("command.completed").await.is_empty(),
        "old patterns"
    );
    assert_eq!(resolved("alarm-raised").await, [o.as_str()], "new patterns");

    set_subscription_status(&admin, &p, SubStatus::Active).await;
    assert_eq!(resolved("command.completed").await, [p.as_str()], "enabled");
    set_subscription_status(&admin, &p, SubStatus::Disabled).await;
    assert!(resolved("command.completed").await.is_empty(), "disabled");
    set_subscription_status(&admin, &p, SubStatus::Active).await;

    let disable = |enabled: bool| Endpoint {
        enabled: Some(enabled),
        ..endpoint(TENANT, "ep2", "")
    };
    update_endpoint(&admin, disable(false), &["enabled"]).await;
    assert!(
        resolved("command.completed").await.is_empty(),
        "a disabled endpoint resolves nothing"
    );
    update_endpoint(&admin, disable(true), &["enabled"]).await;
    assert_eq!(resolved("command.completed").await, [p.as_str()]);

    let moved = "https://moved.example.com/hooks";
    update_endpoint(&admin, endpoint(TENANT, "ep2", moved), &["url"]).await;
    let targets = resolve(&admin, TENANT, "command.completed").await;
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].url, moved, "a new URL is used at once");

    set_tenant_state(&admin, TENANT, TenantState::Suspended).await;
    assert!(resolved("command.completed").await.is_empty(), "suspended");
    assert!(resolved("alarm-raised").await.is_empty(), "suspended");
    set_tenant_state(&admin, TENANT, TenantState::Active).await;
    assert_eq!(resolved("command.completed").await, [p.as_str()]);
    assert_eq!(resolved("alarm-raised").await, [o.as_str()]);

    delete_subscription(&admin, &o).await;
    assert!(resolved("alarm-raised").await.is_empty(), "deleted");
    ok(admin
        .endpoints()
        .delete_endpoint(DeleteEndpointRequest {
            tenant_id: TENANT.to_owned(),
            endpoint_id: "ep2".to_owned(),
            etag: String::new(),
            force: true,
        })
        .await);
    assert!(
        resolved("command.completed").await.is_empty(),
        "a force-deleted endpoint takes its subscriptions along"
    );
    server.stop().await;
}

/// A force-deleted tenant resolves to nothing (NOT_FOUND, or an empty
/// answer), and an open watch of it sees every subscription and endpoint go
/// as a DELETE carrying the final resource; nothing of it comes back after a
/// restart either.
async fn force_deleted_tenant_resolves_nothing_and_its_watch_sees_the_deletes(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    create_endpoint(&admin, TENANT, "ep2", "https://hooks.example.com/second").await;
    let first = create_subscription(&admin, subscription(TENANT, ENDPOINT, &["command.*"])).await;
    let second = create_subscription(&admin, subscription(TENANT, "ep2", &["*"])).await;
    create_tenant(&admin, "other").await;
    create_endpoint(&admin, "other", "ep", "https://hooks.example.com/other").await;
    let foreign = create_subscription(&admin, subscription("other", "ep", &["*"])).await;
    let dispatcher = server.clients(&create_credential(&admin, "", Role::Dispatcher).await);
    let mut both = vec![
        first.subscription_id.clone(),
        second.subscription_id.clone(),
    ];
    both.sort();
    assert_eq!(
        target_ids(&resolve(&dispatcher, TENANT, "command.completed").await),
        both,
        "both resolve before the delete"
    );

    let mut watch = Watch::open(&dispatcher, TENANT, 0).await;
    let (_, before) = watch.snapshot().await;
    let response = admin
        .tenants()
        .delete_tenant(hookplane::proto::DeleteTenantRequest {
            tenant_id: TENANT.to_owned(),
            etag: String::new(),
            force: true,
        })
        .await
        .expect("force delete");
    let deleted_at = revision(response.metadata());

    // At once, on the replica that deleted it.
    assert_resolves_nothing(&dispatcher, TENANT, "at once").await;

    // The open watch: one DELETE per subscription and endpoint, each with
    // its final resource, at revisions the delete produced.
    let mut gone_subscriptions = Vec::new();
    let mut gone_endpoints = Vec::new();
    let mut gone_tenant = false;
    while gone_subscriptions.len() < 2 || gone_endpoints.len() < 2 || !gone_tenant {
        let m = watch.next_change().await;
        assert_eq!(kind_of(&m), Kind::Delete, "only deletes: {m:?}");
        assert!(
            before < m.revision && m.revision <= deleted_at,
            "revision {} is the delete's ({before}, {deleted_at}]",
            m.revision
        );
        match &m.resource {
            Some(Resource::Subscription(s)) => {
                assert_eq!(s.tenant_id, TENANT);
                assert_eq!(status_of(s), SubStatus::Deleted, "the final resource");
                gone_subscriptions.push(s.subscription_id.clone());
            }
            Some(Resource::Endpoint(e)) => {
                assert_eq!(e.tenant_id, TENANT);
                gone_endpoints.push(e.endpoint_id.clone());
            }
            Some(Resource::Tenant(t)) => {
                assert_eq!(t.tenant_id, TENANT);
                assert!(!gone_tenant, "the tenant's DELETE once");
                gone_tenant = true;
            }
            other => panic!("a DELETE of what? {other:?}"),
        }
    }
    gone_subscriptions.sort();
    gone_endpoints.sort();
    assert_eq!(gone_subscriptions, both, "every subscription once");
    assert_eq!(gone_endpoints, [ENDPOINT, "ep2"], "every endpoint once");
    // Nothing of the tenant comes back on the stream: heartbeats only, or
    // the stream ends (NOT_FOUND, as for a missing tenant).
    match watch.try_next_within(Duration::from_secs(1)).await {
        None | Some(Ok(None)) => {}
        Some(Ok(Some(m))) => assert_eq!(kind_of(&m), Kind::Heartbeat, "after the deletes: {m:?}"),
        Some(Err(status)) => assert_eq!(status.code(), Code::NotFound, "{status:?}"),
    }

    // A new watch of the deleted tenant: NOT_FOUND, or a snapshot with
    // nothing in it.
    match dispatcher
        .subscriptions()
        .watch_subscriptions(hookplane::proto::WatchSubscriptionsRequest {
            tenant_id: TENANT.to_owned(),
            since_revision: 0,
            progress_heartbeats: false,
        })
        .await
    {
        Err(status) => assert_eq!(status.code(), Code::NotFound, "{status:?}"),
        Ok(response) => {
            let mut fresh = Watch::from_stream(response.into_inner());
            match fresh.try_next_within(DEADLINE).await {
                Some(Err(status)) => assert_eq!(status.code(), Code::NotFound, "{status:?}"),
                Some(Ok(Some(first))) => assert_eq!(
                    kind_of(&first),
                    Kind::Heartbeat,
                    "a deleted tenant has nothing to snapshot: {first:?}"
                ),
                other => panic!("a watch of a deleted tenant: {other:?}"),
            }
        }
    }
    // The other tenant is untouched.
    assert_eq!(
        target_ids(&resolve(&dispatcher, "other", "command.completed").await),
        [foreign.subscription_id.as_str()]
    );

    // A restarted server builds its index from the database: still nothing.
    let server = server.restart().await;
    let dispatcher =
        server.clients(&create_credential(&server.admin(), "", Role::Dispatcher).await);
    assert_resolves_nothing(&dispatcher, TENANT, "after a restart").await;
    assert_eq!(
        target_ids(&resolve(&dispatcher, "other", "command.completed").await),
        [foreign.subscription_id.as_str()]
    );
    server.stop().await;
}

/// ResolveSubscribers on a missing tenant: NOT_FOUND, or OK with no target,
/// for every event type of the catalog.
async fn assert_resolves_nothing(clients: &Clients, tenant_id: &str, when: &str) {
    for &(event_type, _, _) in CATALOG {
        let result = clients
            .subscriptions()
            .resolve_subscribers(ResolveSubscribersRequest {
                tenant_id: tenant_id.to_owned(),
                event_type: event_type.to_owned(),
                ..Default::default()
            })
            .await;
        match result {
            Ok(answer) => assert!(
                answer.get_ref().targets.is_empty(),
                "{when}: {event_type} of deleted tenant {tenant_id} resolved to {:?}",
                answer.get_ref().targets
            ),
            Err(status) => assert_eq!(
                status.code(),
                Code::NotFound,
                "{when}: {event_type}: {status:?}"
            ),
        }
    }
}

async fn resolve_needs_permission_and_secrets_go_to_secret_readers(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let secret = "keys-endpoint-secret-0123456789";
    ok(admin
        .endpoints()
        .create_endpoint(CreateEndpointRequest {
            endpoint: Some(Endpoint {
                secret: secret.to_owned(),
                ..endpoint(TENANT, "keys", "https://hooks.example.com/keys")
            }),
            request_id: String::new(),
        })
        .await);
    let sub = create_subscription(&admin, subscription(TENANT, "keys", &["*"])).await;
    create_tenant(&admin, "other").await;

    for (role, tenant) in [
        (Role::TenantAdmin, TENANT),
        (Role::Reader, TENANT),
        (Role::Dispatcher, "other"),
    ] {
        let caller = server.clients(&create_credential(&admin, tenant, role).await);
        let result = caller
            .subscriptions()
            .resolve_subscribers(ResolveSubscribersRequest {
                tenant_id: TENANT.to_owned(),
                event_type: "command.completed".to_owned(),
                ..Default::default()
            })
            .await;
        expect_code(result, Code::PermissionDenied);
        assert_eq!(
            watch_error(&caller, TENANT, 0).await.code(),
            Code::PermissionDenied,
            "{role:?} of {tenant} may not watch {TENANT}"
        );
    }

    let dispatcher = server.clients(&create_credential(&admin, TENANT, Role::Dispatcher).await);
    let platform_dispatcher =
        server.clients(&create_credential(&admin, "", Role::Dispatcher).await);
    for (who, caller) in [
        ("tenant dispatcher", &dispatcher),
        ("platform dispatcher", &platform_dispatcher),
        ("platform admin", &admin),
    ] {
        let targets = resolve(caller, TENANT, "command.completed").await;
        assert_eq!(
            target_ids(&targets),
            [sub.subscription_id.as_str()],
            "{who}"
        );
        assert_eq!(targets[0].signing_secrets, [secret], "{who} reads secrets");
    }
    // A tenant dispatcher may leave tenant_id empty: its own tenant.
    assert_eq!(resolve(&dispatcher, "", "alarm-raised").await.len(), 1);

    let got = ok(admin
        .endpoints()
        .get_endpoint(GetEndpointRequest {
            tenant_id: TENANT.to_owned(),
            endpoint_id: "keys".to_owned(),
        })
        .await);
    assert!(got.secret.is_empty() && got.signing_secrets.is_empty());
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Watch
// ---------------------------------------------------------------------------

async fn watch_streams_snapshot_heartbeat_then_changes(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let dispatcher = server.clients(&create_credential(&admin, TENANT, Role::Dispatcher).await);
    let secret = "second-endpoint-secret-0123456789";
    ok(admin
        .endpoints()
        .create_endpoint(CreateEndpointRequest {
            endpoint: Some(Endpoint {
                secret: secret.to_owned(),
                ..endpoint(TENANT, "ep2", "https://hooks.example.com/second")
            }),
            request_id: String::new(),
        })
        .await);
    let live = create_subscription(&admin, subscription(TENANT, ENDPOINT, &["command.*"])).await;
    let paused = create_subscription(
        &admin,
        Subscription {
            status: SubStatus::Disabled as i32,
            ..subscription(TENANT, "ep2", &["alarm-raised"])
        },
    )
    .await;
    let gone = create_subscription(&admin, subscription(TENANT, ENDPOINT, &["*"])).await;
    create_tenant(&admin, "other").await;
    create_endpoint(&admin, "other", "ep", "https://hooks.example.com/other").await;
    create_subscription(&admin, subscription("other", "ep", &["*"])).await;
    let current = delete_subscription(&admin, &gone.subscription_id).await;

    let mut watch = Watch::open(&dispatcher, TENANT, 0).await;
    let (snapshot, snapshot_revision) = watch.snapshot().await;
    if backend.is_postgres() {
        // Revisions are sparse there: the snapshot's revision is the
        // readers' horizon, at or after the last write.
        assert!(
            snapshot_revision >= current,
            "the snapshot covers the last write: {snapshot_revision} < {current}"
        );
    } else {
        assert_eq!(
            snapshot_revision, current,
            "the heartbeat carries the snapshot's revision"
        );
    }
    assert!(snapshot.iter().all(|m| m.revision == snapshot_revision));
    // First the watched tenant, then the whole catalog: what a client
    // needs to resolve by itself.
    match &snapshot[0].resource {
        Some(Resource::Tenant(t)) => assert_eq!(t.tenant_id, TENANT, "only the watched tenant"),
        other => panic!("the tenant first, got {other:?}"),
    }
    let catalog_end = snapshot[1..]
        .iter()
        .position(|m| !matches!(m.resource, Some(Resource::EventType(_))))
        .map_or(snapshot.len(), |i| i + 1);
    let mut catalog: Vec<&str> = snapshot[1..catalog_end]
        .iter()
        .map(|m| match &m.resource {
            Some(Resource::EventType(e)) => e.name.as_str(),
            _ => unreachable!(),
        })
        .collect();
    catalog.sort_unstable();
    let mut want_catalog: Vec<&str> = CATALOG.iter().map(|(name, ..)| *name).collect();
    want_catalog.sort_unstable();
    assert_eq!(catalog, want_catalog, "then the whole catalog");
    let snapshot = &snapshot[catalog_end..];
    let first_subscription = snapshot
        .iter()
        .position(|m| matches!(m.resource, Some(Resource::Subscription(_))))
        .unwrap_or(snapshot.len());
    let (endpoints, subscriptions) = snapshot.split_at(first_subscription);
    let mut endpoint_ids: Vec<&str> = endpoints
        .iter()
        .map(|m| endpoint_of(m).endpoint_id.as_str())
        .collect();
    endpoint_ids.sort_unstable();
    assert_eq!(endpoint_ids, [ENDPOINT, "ep2"], "endpoints first");
    let ep2 = endpoints
        .iter()
        .map(endpoint_of)
        .find(|e| e.endpoint_id == "ep2")
        .expect("ep2");
    assert_eq!(ep2.signing_secrets, [secret], "secrets for secrets.read");
    assert_eq!(ep2.url, "https://hooks.example.com/second");
    let mut snapshot_subscriptions: Vec<(String, SubStatus)> = subscriptions
        .iter()
        .map(|m| {
            let s = subscription_of(m);
            assert_eq!(s.tenant_id, TENANT, "only the watched tenant");
            (s.subscription_id.clone(), status_of(s))
        })
        .collect();
    snapshot_subscriptions.sort();
    let mut want = vec![
        (live.subscription_id.clone(), SubStatus::Active),
        (paused.subscription_id.clone(), SubStatus::Disabled),
    ];
    want.sort();
    assert_eq!(
        snapshot_subscriptions, want,
        "then every live subscription, deleted ones left out"
    );

    // Changes, each with the revision its write returned; the other
    // tenant's write in between never shows up.
    let (added, added_revision) = create_with_revision(
        &admin,
        Subscription {
            name: "added".to_owned(),
            ..subscription(TENANT, ENDPOINT, &["alarm-raised"])
        },
    )
    .await;
    create_subscription(&admin, subscription("other", "ep", &["command.*"])).await;
    let m = watch.next_change().await;
    assert_eq!((kind_of(&m), m.revision), (Kind::Upsert, added_revision));
    assert_eq!(subscription_of(&m).subscription_id, added.subscription_id);
    assert_eq!(status_of(subscription_of(&m)), SubStatus::Active);

    let response = admin
        .endpoints()
        .update_endpoint(hookplane::proto::UpdateEndpointRequest {
            endpoint: Some(Endpoint {
                description: "changed".to_owned(),
                ..endpoint(TENANT, "ep2", "")
            }),
            update_mask: mask(&["description"]),
            allow_missing: false,
        })
        .await
        .expect("update endpoint");
    let m = watch.next_change().await;
    assert_eq!(
        (kind_of(&m), m.revision),
        (Kind::Upsert, revision(response.metadata()))
    );
    assert_eq!(endpoint_of(&m).description, "changed");

    let deleted_revision = delete_subscription(&admin, &added.subscription_id).await;
    let m = watch.next_change().await;
    assert_eq!(
        (kind_of(&m), m.revision),
        (Kind::Delete, deleted_revision),
        "a soft delete is DELETE"
    );
    let last = subscription_of(&m);
    assert_eq!(last.subscription_id, added.subscription_id);
    assert_eq!(status_of(last), SubStatus::Deleted, "the final resource");
    assert_eq!(last.name, "added");
    assert_eq!(last.event_types, ["alarm-raised"]);

    let response = admin
        .endpoints()
        .rotate_endpoint_secret(RotateEndpointSecretRequest {
            tenant_id: TENANT.to_owned(),
            endpoint_id: "ep2".to_owned(),
            secret: String::new(),
            grace_period_seconds: 0,
        })
        .await
        .expect("rotate");
    let rotated_revision = revision(response.metadata());
    let rotated = response.into_inner();
    let m = watch.next_change().await;
    assert_eq!(
        (kind_of(&m), m.revision),
        (Kind::Upsert, rotated_revision),
        "a rotation is UPSERT"
    );
    assert_eq!(
        endpoint_of(&m).signing_secrets,
        [rotated.secret.as_str(), secret],
        "newest first"
    );

    // With nothing else happening, the next message is a heartbeat with the
    // current revision.
    let m = watch.next().await;
    assert_eq!(
        (kind_of(&m), m.revision),
        (Kind::Heartbeat, rotated_revision)
    );
    server.stop().await;
}

async fn watch_resumes_after_a_reconnect_without_gap_or_duplicate(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let dispatcher = server.clients(&create_credential(&admin, TENANT, Role::Dispatcher).await);
    let mut watch = Watch::open(&dispatcher, TENANT, 0).await;
    let (_, snapshot_revision) = watch.snapshot().await;

    // One change-log row per write: creates, status flips and deletes.
    let write = |i: usize| {
        let admin = admin.clone();
        async move {
            let (s, rev) =
                create_with_revision(&admin, subscription(TENANT, ENDPOINT, &["command.*"])).await;
            let mut revisions = vec![rev];
            if i.is_multiple_of(2) {
                let response = admin
                    .subscriptions()
                    .update_subscription(UpdateSubscriptionRequest {
                        subscription: Some(Subscription {
                            tenant_id: TENANT.to_owned(),
                            subscription_id: s.subscription_id.clone(),
                            status: SubStatus::Disabled as i32,
                            ..Default::default()
                        }),
                        update_mask: mask(&["status"]),
                        allow_missing: false,
                    })
                    .await
                    .expect("disable");
                revisions.push(revision(response.metadata()));
            } else {
                revisions.push(delete_subscription(&admin, &s.subscription_id).await);
            }
            revisions
        }
    };
    let mut written = Vec::new();
    for i in 0..3 {
        written.extend(write(i).await);
    }
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(watch.next_change().await.revision);
    }
    assert_eq!(seen, written[..4], "changes in order");
    drop(watch);

    // Writes while the dispatcher is away.
    for i in 3..6 {
        written.extend(write(i).await);
    }
    let resume_from = *seen.last().expect("seen some");
    let mut watch = Watch::open(&dispatcher, TENANT, resume_from).await;
    let mut resumed = Vec::new();
    while resumed.len() < written.len() - seen.len() {
        let m = watch.next_change().await;
        resumed.push(m.revision);
    }
    assert_eq!(
        resumed,
        written[seen.len()..],
        "resuming from {resume_from} yields every later change once, in order"
    );

    // Resuming from the snapshot's revision replays everything, no snapshot.
    let mut watch = Watch::open(&dispatcher, TENANT, snapshot_revision).await;
    let mut replayed = Vec::new();
    while replayed.len() < written.len() {
        replayed.push(watch.next_change().await.revision);
    }
    assert_eq!(replayed, written);

    // Resuming from the current revision: the next change is the next write.
    let current = *written.last().expect("written");
    let mut watch = Watch::open(&dispatcher, TENANT, current).await;
    let (_, rev) = create_with_revision(&admin, subscription(TENANT, ENDPOINT, &["*"])).await;
    assert_eq!(watch.next_change().await.revision, rev);
    server.stop().await;
}

async fn watch_refuses_revisions_outside_the_log(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let (_, current) =
        create_with_revision(&admin, subscription(TENANT, ENDPOINT, &["command.*"])).await;
    // Far ahead: PostgreSQL revisions are sparse, so current + 1 may lie
    // below the horizon.
    let future = watch_error(&admin, TENANT, current + (1 << 40)).await;
    assert_eq!(
        future.code(),
        Code::OutOfRange,
        "a future revision: {}",
        future.message()
    );
    let far = watch_error(&admin, TENANT, i64::MAX).await;
    assert_eq!(far.code(), Code::OutOfRange, "{}", far.message());
    let negative = watch_error(&admin, TENANT, -1).await;
    assert_eq!(
        negative.code(),
        Code::InvalidArgument,
        "{}",
        negative.message()
    );
    assert!(
        violation_fields(&negative)
            .iter()
            .any(|f| f == "since_revision"),
        "names since_revision: {:?}",
        violation_fields(&negative)
    );
    // The current revision itself is fine.
    let mut watch = Watch::open(&admin, TENANT, current).await;
    let (_, next) = create_with_revision(&admin, subscription(TENANT, ENDPOINT, &["*"])).await;
    assert_eq!(watch.next_change().await.revision, next);
    server.stop().await;
}

/// A watch resumed below the retained change log is OUT_OF_RANGE (the
/// client resyncs from 0); from the oldest retained revision on, it
/// resumes. The log is pruned behind the server's back, as another
/// replica's sweeper would prune it: rows deleted and the mark moved in one
/// transaction.
async fn watch_below_the_retained_log_is_out_of_range(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let (_, oldest) =
        create_with_revision(&admin, subscription(TENANT, ENDPOINT, &["command.*"])).await;
    let (_, pruned) =
        create_with_revision(&admin, subscription(TENANT, ENDPOINT, &["alarm-raised"])).await;
    let (kept, kept_revision) =
        create_with_revision(&admin, subscription(TENANT, ENDPOINT, &["*"])).await;
    // Before the prune, every revision resumes.
    let mut before = Watch::open(&admin, TENANT, oldest).await;
    assert_eq!(before.next_change().await.revision, pruned);
    drop(before);

    prune_change_log_through(&backend, pruned).await;

    for since in [1, oldest, pruned - 1] {
        let status = watch_error(&admin, TENANT, since).await;
        assert_eq!(
            status.code(),
            Code::OutOfRange,
            "resuming from {since}, below the retained log (pruned through {pruned}): {}",
            status.message()
        );
    }
    // From the pruning mark on, every later change is there.
    let mut resumed = Watch::open(&admin, TENANT, pruned).await;
    let m = resumed.next_change().await;
    assert_eq!(m.revision, kept_revision);
    assert_eq!(subscription_of(&m).subscription_id, kept.subscription_id);
    // And a resync from 0 works: a snapshot of every live subscription.
    let mut resync = Watch::open(&admin, TENANT, 0).await;
    let (snapshot, _) = resync.snapshot().await;
    let subscriptions = snapshot
        .iter()
        .filter(|m| matches!(m.resource, Some(Resource::Subscription(_))))
        .count();
    assert_eq!(subscriptions, 3, "the snapshot has every live subscription");
    server.stop().await;
}

/// Deletes the change-log rows up to `through` and records the mark, as the
/// server's own pruning does.
async fn prune_change_log_through(backend: &Backend, through: i64) {
    use sea_orm::{ConnectionTrait as _, TransactionTrait as _};
    let db = backend.database().await;
    let txn = db.begin().await.expect("begin");
    let deleted = txn
        .execute_unprepared(&format!("DELETE FROM changes WHERE revision <= {through}"))
        .await
        .expect("delete old changes")
        .rows_affected();
    assert!(deleted > 0, "there were changes to prune");
    let marked = txn
        .execute_unprepared(&format!(
            "UPDATE revision_counter SET pruned_through = {through} WHERE id = 1"
        ))
        .await
        .expect("move the pruning mark")
        .rows_affected();
    assert_eq!(marked, 1, "the revision counter row");
    txn.commit().await.expect("commit the prune");
    db.close().await.expect("close");
}

// ---------------------------------------------------------------------------
// Revisions in commit order
// ---------------------------------------------------------------------------

pub const WRITERS: usize = 8;
const WRITES_PER_WRITER: usize = 24;

/// Every writer writes `WRITES_PER_WRITER` times (create, disable, delete,
/// ...) at the same time as the others; returns every write's `x-revision`.
pub async fn concurrent_writes(
    writers: Vec<Clients>,
    tenant_id: &str,
    endpoint_id: &str,
) -> Vec<i64> {
    let mut tasks = JoinSet::new();
    for clients in writers {
        let (tenant_id, endpoint_id) = (tenant_id.to_owned(), endpoint_id.to_owned());
        tasks.spawn(async move {
            let mut revisions = Vec::new();
            let mut last: Option<String> = None;
            for i in 0..WRITES_PER_WRITER {
                let response = match (&last, i % 3) {
                    (Some(id), 1) => clients
                        .subscriptions()
                        .update_subscription(UpdateSubscriptionRequest {
                            subscription: Some(Subscription {
                                tenant_id: tenant_id.clone(),
                                subscription_id: id.clone(),
                                status: SubStatus::Disabled as i32,
                                ..Default::default()
                            }),
                            update_mask: mask(&["status"]),
                            allow_missing: false,
                        })
                        .await
                        .expect("concurrent update"),
                    (Some(id), 2) => clients
                        .subscriptions()
                        .delete_subscription(DeleteSubscriptionRequest {
                            tenant_id: tenant_id.clone(),
                            subscription_id: id.clone(),
                            etag: String::new(),
                        })
                        .await
                        .expect("concurrent delete"),
                    _ => clients
                        .subscriptions()
                        .create_subscription(create_subscription_request(subscription(
                            &tenant_id,
                            &endpoint_id,
                            &["command.*"],
                        )))
                        .await
                        .expect("concurrent create"),
                };
                revisions.push(revision(response.metadata()));
                last = Some(response.into_inner().subscription_id);
            }
            revisions
        });
    }
    let mut all = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        all.extend(joined.expect("writer task"));
    }
    all
}

/// Reads changes until one at or after `last`; returns the revisions of
/// every UPSERT and DELETE in the order they came.
pub async fn watched_until(watch: &mut Watch, last: i64, who: &str) -> Vec<i64> {
    let mut seen: Vec<i64> = Vec::new();
    while seen.last().is_none_or(|r| *r < last) {
        match watch.next_change_within(DEADLINE).await {
            Some(m) => seen.push(m.revision),
            None => panic!(
                "{who}: revision {last} never came; after {} changes the last was {:?}",
                seen.len(),
                seen.last()
            ),
        }
    }
    seen
}

/// Every write's revision appears exactly once, and the stream is strictly
/// increasing.
#[track_caller]
pub fn assert_commit_order(watched: &[i64], written: &[i64], who: &str) {
    assert!(
        watched.windows(2).all(|w| w[0] < w[1]),
        "{who}: revisions not strictly increasing: {watched:?}"
    );
    let mut sorted = written.to_vec();
    sorted.sort_unstable();
    assert!(
        sorted.windows(2).all(|w| w[0] < w[1]),
        "two writes returned the same x-revision: {sorted:?}"
    );
    assert_eq!(
        watched, sorted,
        "{who}: the watch must show every write's revision exactly once, in order"
    );
}

async fn revisions_follow_commit_order_under_concurrent_writers(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let mut watch = Watch::open(&admin, TENANT, 0).await;
    let (_, snapshot_revision) = watch.snapshot().await;
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        // Each writer has its own credential and connection.
        let channel = Channel::from_shared(format!("http://{}", server.grpc_addr))
            .expect("endpoint URI")
            .connect_lazy();
        let cred = create_credential(&admin, TENANT, Role::TenantAdmin).await;
        writers.push(Clients::on(channel, &cred));
    }
    let written = concurrent_writes(writers, TENANT, ENDPOINT).await;
    assert_eq!(written.len(), WRITERS * WRITES_PER_WRITER);
    assert!(written.iter().all(|r| *r > snapshot_revision));
    let last = *written.iter().max().expect("writes");
    let watched = watched_until(&mut watch, last, "live watch").await;
    assert_commit_order(&watched, &written, "live watch");

    // A watch resumed from the snapshot's revision reads the same history.
    let mut replay = Watch::open(&admin, TENANT, snapshot_revision).await;
    let replayed = watched_until(&mut replay, last, "replayed watch").await;
    assert_commit_order(&replayed, &written, "replayed watch");
    server.stop().await;
}

/// Revoking a credential ends its open watch with UNAUTHENTICATED within a
/// second, and nothing committed after the revocation (here, the endpoint's
/// new signing secret) reaches it.
async fn revocation_ends_the_credentials_watch(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let dispatcher = create_credential(&admin, TENANT, Role::Dispatcher).await;
    let mut watch = Watch::open(&server.clients(&dispatcher), TENANT, 0).await;
    watch.snapshot().await;
    let (created, _) = create_with_revision(&admin, subscription(TENANT, ENDPOINT, &["*"])).await;
    let seen = watch.next_change().await;
    assert_eq!(
        subscription_of(&seen).subscription_id,
        created.subscription_id
    );
    // Another credential's watch is not affected.
    let mut other = Watch::open(&admin, TENANT, 0).await;
    other.snapshot().await;

    let response = admin
        .credentials()
        .revoke_credential(RevokeCredentialRequest {
            api_id: dispatcher.api_id.clone(),
        })
        .await
        .expect("revoke");
    let revoked_at = std::time::Instant::now();
    let revoked_revision = revision(response.metadata());
    let rotated = ok(admin
        .endpoints()
        .rotate_endpoint_secret(RotateEndpointSecretRequest {
            tenant_id: TENANT.to_owned(),
            endpoint_id: ENDPOINT.to_owned(),
            ..Default::default()
        })
        .await);

    let (after, status) = watch.failure_within(Duration::from_secs(1)).await;
    println!(
        "the watch ended {:?} after the revocation",
        revoked_at.elapsed()
    );
    assert_eq!(status.code(), Code::Unauthenticated, "{}", status.message());
    for m in &after {
        assert!(
            m.revision < revoked_revision,
            "sent after the revocation: {m:?}"
        );
        if let Some(Resource::Endpoint(e)) = &m.resource {
            assert!(!e.signing_secrets.contains(&rotated.secret), "{m:?}");
        }
    }
    let change = other.next_change().await;
    assert_eq!(endpoint_of(&change).endpoint_id, ENDPOINT);

    // And a new watch with the revoked credential is refused.
    let refused = watch_error(&server.clients(&dispatcher), TENANT, 0).await;
    assert_eq!(refused.code(), Code::Unauthenticated);
    server.stop().await;
}

backend_tests!(
    revocation_ends_the_credentials_watch,
    resolve_matches_exact_prefix_middle_and_star_patterns,
    seed_002_004_changes_take_effect_at_once,
    resolve_needs_permission_and_secrets_go_to_secret_readers,
    force_deleted_tenant_resolves_nothing_and_its_watch_sees_the_deletes,
    watch_streams_snapshot_heartbeat_then_changes,
    watch_resumes_after_a_reconnect_without_gap_or_duplicate,
    watch_refuses_revisions_outside_the_log,
    watch_below_the_retained_log_is_out_of_range,
    revisions_follow_commit_order_under_concurrent_writers,
);

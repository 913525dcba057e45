//! A Watch event carries its resource as the change at its revision left
//! it, not as the resource stands when the event is read: two updates of one
//! resource that the follower reads together, an update right before a
//! delete, and a stream that resumes from before them all (below the feed,
//! so it reads the change log itself, after every write) each show every
//! revision's own state.

use std::collections::BTreeMap;
use std::future::Future;

use hookplane::proto::watch_subscriptions_response::Resource;
use hookplane::proto::{
    DeleteSubscriptionRequest, Endpoint, EventType, RotateEndpointSecretRequest, Subscription,
    Tenant, UpdateEndpointRequest, UpdateEventTypeRequest, UpdateSubscriptionRequest,
    UpdateTenantRequest, WatchSubscriptionsResponse,
};
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, TransactionTrait};

use crate::harness::*;
use crate::lifecycle::{Watch, kind_of};

/// One event as the test compares them: what changed, how, and the state
/// it carries.
fn describe(m: &WatchSubscriptionsResponse) -> String {
    let kind = kind_of(m);
    match &m.resource {
        Some(Resource::Subscription(s)) => format!(
            "{kind:?} subscription {} {} {:?}",
            s.subscription_id,
            s.name,
            status_of(s)
        ),
        Some(Resource::Endpoint(e)) => format!(
            "{kind:?} endpoint {} {} {:?}",
            e.endpoint_id, e.description, e.signing_secrets
        ),
        Some(Resource::Tenant(t)) => format!("{kind:?} tenant {} {}", t.tenant_id, t.display_name),
        Some(Resource::EventType(e)) => {
            format!("{kind:?} event type {} {}", e.name, e.description)
        }
        None => panic!("a change without a resource: {m:?}"),
    }
}

/// The next `n` changes on `watch`, by revision.
async fn changes(watch: &mut Watch, n: usize) -> BTreeMap<i64, String> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let m = watch.next_change().await;
        let earlier = seen.insert(m.revision, describe(&m));
        assert!(earlier.is_none(), "revision {} twice", m.revision);
    }
    seen
}

/// Two updates of one resource at once (`first` and `second`), as
/// (revision, value) in revision order.
async fn twice<F, Fut>(update: F) -> [(i64, &'static str); 2]
where
    F: Fn(&'static str) -> Fut,
    Fut: Future<Output = i64>,
{
    let (a, b) = tokio::join!(update("first"), update("second"));
    let mut both = [(a, "first"), (b, "second")];
    both.sort();
    both
}

/// On PostgreSQL, an open transaction that holds a transaction id: readers
/// of the change log stay below it (see the revision rule), so the writes
/// committed meanwhile reach the follower in one read once it ends. (On
/// SQLite, writes at once share a group commit.)
async fn hold_followers(backend: &Backend) -> Option<(DatabaseConnection, DatabaseTransaction)> {
    if !backend.is_postgres() {
        return None;
    }
    let db = backend.database().await;
    let txn = db.begin().await.expect("begin");
    txn.execute_unprepared("SELECT pg_current_xact_id()")
        .await
        .expect("take a transaction id");
    Some((db, txn))
}

async fn every_event_carries_the_state_of_its_revision(backend: Backend) {
    // The feed holds 4 events, so a stream resuming from before the writes
    // reads the change log.
    let server = backend.start_with(&["--watch-feed-events", "4"]).await;
    let admin = server.admin();
    create_tenant(&admin, TENANT).await;
    create_catalog(&admin).await;
    let original = create_endpoint(&admin, TENANT, ENDPOINT, URL).await.secret;
    let sub = create_subscription(
        &admin,
        Subscription {
            name: "created".to_owned(),
            ..subscription(TENANT, ENDPOINT, &["command.*"])
        },
    )
    .await
    .subscription_id;
    let event_type_name = CATALOG[0].0;

    let mut live = Watch::open(&admin, TENANT, 0).await;
    let (_, start) = live.snapshot().await;

    let update_subscription = |name: &'static str| {
        let (admin, id) = (admin.clone(), sub.clone());
        async move {
            let response = admin
                .subscriptions()
                .update_subscription(UpdateSubscriptionRequest {
                    subscription: Some(Subscription {
                        tenant_id: TENANT.to_owned(),
                        subscription_id: id,
                        name: name.to_owned(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["name"]),
                    allow_missing: false,
                })
                .await
                .expect("update subscription");
            revision(response.metadata())
        }
    };
    let update_endpoint = |description: &'static str| {
        let admin = admin.clone();
        async move {
            let response = admin
                .endpoints()
                .update_endpoint(UpdateEndpointRequest {
                    endpoint: Some(Endpoint {
                        description: description.to_owned(),
                        ..endpoint(TENANT, ENDPOINT, "")
                    }),
                    update_mask: mask(&["description"]),
                    allow_missing: false,
                })
                .await
                .expect("update endpoint");
            revision(response.metadata())
        }
    };
    let update_tenant = |display_name: &'static str| {
        let admin = admin.clone();
        async move {
            let response = admin
                .tenants()
                .update_tenant(UpdateTenantRequest {
                    tenant: Some(Tenant {
                        tenant_id: TENANT.to_owned(),
                        display_name: display_name.to_owned(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["display_name"]),
                })
                .await
                .expect("update tenant");
            revision(response.metadata())
        }
    };
    let update_event_type = |description: &'static str| {
        let admin = admin.clone();
        async move {
            let response = admin
                .event_types()
                .update_event_type(UpdateEventTypeRequest {
                    event_type: Some(EventType {
                        name: event_type_name.to_owned(),
                        description: description.to_owned(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["description"]),
                })
                .await
                .expect("update event type");
            revision(response.metadata())
        }
    };

    // Every resource updated twice at once, before the follower reads any
    // of it.
    let hold = hold_followers(&backend).await;
    let (subscriptions, endpoints, tenants, event_types) = tokio::join!(
        twice(update_subscription),
        twice(update_endpoint),
        twice(update_tenant),
        twice(update_event_type),
    );
    if let Some((_db, txn)) = hold {
        txn.rollback().await.expect("let the followers read");
    }
    let mut expected = BTreeMap::new();
    for (revision, name) in subscriptions {
        expected.insert(revision, format!("Upsert subscription {sub} {name} Active"));
    }
    for (revision, description) in endpoints {
        expected.insert(
            revision,
            format!("Upsert endpoint {ENDPOINT} {description} [{original:?}]"),
        );
    }
    for (revision, display_name) in tenants {
        expected.insert(revision, format!("Upsert tenant {TENANT} {display_name}"));
    }
    for (revision, description) in event_types {
        expected.insert(
            revision,
            format!("Upsert event type {event_type_name} {description}"),
        );
    }

    // An update, then the delete: each event as its write left the row.
    expected.insert(
        update_subscription("last").await,
        format!("Upsert subscription {sub} last Active"),
    );
    let response = admin
        .subscriptions()
        .delete_subscription(DeleteSubscriptionRequest {
            tenant_id: TENANT.to_owned(),
            subscription_id: sub.clone(),
            etag: String::new(),
        })
        .await
        .expect("delete subscription");
    expected.insert(
        revision(response.metadata()),
        format!("Delete subscription {sub} last Deleted"),
    );

    // Two rotations: each event with the secrets its rotation left live.
    let description = endpoints[1].1;
    let mut previous = original;
    for _ in 0..2 {
        let response = admin
            .endpoints()
            .rotate_endpoint_secret(RotateEndpointSecretRequest {
                tenant_id: TENANT.to_owned(),
                endpoint_id: ENDPOINT.to_owned(),
                secret: String::new(),
                grace_period_seconds: 0,
            })
            .await
            .expect("rotate");
        let revision = revision(response.metadata());
        let secret = response.into_inner().secret;
        expected.insert(
            revision,
            format!("Upsert endpoint {ENDPOINT} {description} [{secret:?}, {previous:?}]"),
        );
        previous = secret;
    }

    assert_eq!(
        changes(&mut live, expected.len()).await,
        expected,
        "a stream open through the writes"
    );
    let mut resumed = Watch::open(&admin, TENANT, start).await;
    assert_eq!(
        changes(&mut resumed, expected.len()).await,
        expected,
        "a stream resumed from {start}, below the feed"
    );
    drop((live, resumed));
    server.stop().await;
}

backend_tests!(every_event_carries_the_state_of_its_revision);

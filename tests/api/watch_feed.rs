//! Watch served from the replica's change feed: many streams each see every
//! change once and in order, and a stream below what the feed holds (a
//! resume from an older revision, a reader that fell behind) reads the
//! change log and then rejoins the feed without a gap or a duplicate.

use hookplane::proto::WatchSubscriptionsResponse;
use hookplane::proto::watch_subscriptions_response::Kind;
use tokio::task::JoinSet;

use crate::data_plane::{create_with_revision, delete_subscription};
use crate::harness::*;
use crate::lifecycle::{Watch, kind_of, subscription_of};

/// Writes `n` changes to [`TENANT`]'s subscriptions (creates, and a delete
/// of every third one created); returns each change's revision and
/// subscription id, in order.
async fn write_changes(admin: &Clients, n: usize) -> Vec<(i64, String)> {
    let mut written = Vec::new();
    while written.len() < n {
        let (s, revision) =
            create_with_revision(admin, subscription(TENANT, ENDPOINT, &["command.*"])).await;
        written.push((revision, s.subscription_id.clone()));
        if written.len() % 3 == 2 && written.len() < n {
            written.push((
                delete_subscription(admin, &s.subscription_id).await,
                s.subscription_id,
            ));
        }
    }
    written
}

/// The next `n` changes on `watch`, as (revision, subscription id).
async fn changes(watch: &mut Watch, n: usize) -> Vec<(i64, String)> {
    let mut seen = Vec::new();
    while seen.len() < n {
        let m: WatchSubscriptionsResponse = watch.next_change().await;
        assert!(matches!(kind_of(&m), Kind::Upsert | Kind::Delete));
        seen.push((m.revision, subscription_of(&m).subscription_id.clone()));
    }
    seen
}

async fn many_streams_each_see_every_change_once_in_order(backend: Backend) {
    const STREAMS: usize = 500;
    const CHANGES: usize = 12;
    let server = backend
        .start_with(&["--max-watch-streams-per-credential", "1000"])
        .await;
    let admin = server.admin();
    create_tenant(&admin, TENANT).await;
    create_catalog(&admin).await;
    create_endpoint(&admin, TENANT, ENDPOINT, URL).await;

    let mut opening = JoinSet::new();
    for _ in 0..STREAMS {
        let admin = admin.clone();
        opening.spawn(async move {
            let mut watch = Watch::open(&admin, TENANT, 0).await;
            watch.snapshot().await;
            watch
        });
    }
    let mut streams = opening.join_all().await;
    let written = write_changes(&admin, CHANGES).await;
    let revisions: Vec<i64> = written.iter().map(|(r, _)| *r).collect();
    assert!(revisions.is_sorted(), "{revisions:?}");
    for (i, watch) in streams.iter_mut().enumerate() {
        assert_eq!(
            changes(watch, written.len()).await,
            written,
            "stream {i}: every change once, in revision order"
        );
        assert!(
            watch
                .next_change_within(std::time::Duration::from_millis(20))
                .await
                .is_none(),
            "stream {i}: nothing after the last change"
        );
    }
    drop(streams);
    server.stop().await;
}

/// The feed holds 4 changes. A stream resuming from before 20 changes, and
/// a stream that read nothing while 400 changes happened (more than its
/// queue and its HTTP/2 window hold, so its task stalled and the feed moved
/// on), both read the change log and rejoin the feed: every change once, in
/// order, and then live changes from the feed.
async fn streams_below_the_feed_read_the_log_and_rejoin(backend: Backend) {
    let server = backend.start_with(&["--watch-feed-events", "4"]).await;
    let admin = server.admin();
    create_tenant(&admin, TENANT).await;
    create_catalog(&admin).await;
    create_endpoint(&admin, TENANT, ENDPOINT, URL).await;

    let mut early = Watch::open(&admin, TENANT, 0).await;
    let (_, start) = early.snapshot().await;
    let before = write_changes(&admin, 20).await;
    let mut resumed = Watch::open(&admin, TENANT, start).await;
    assert_eq!(
        changes(&mut resumed, before.len()).await,
        before,
        "resumed from {start}"
    );

    // `early` read nothing while these happened.
    let more = write_changes(&admin, 400).await;
    let everything: Vec<_> = before.iter().chain(&more).cloned().collect();
    assert_eq!(
        changes(&mut early, everything.len()).await,
        everything,
        "slow reader"
    );
    assert_eq!(
        changes(&mut resumed, more.len()).await,
        more,
        "resumed stream, live"
    );

    let live = write_changes(&admin, 3).await;
    assert_eq!(changes(&mut early, live.len()).await, live);
    assert_eq!(changes(&mut resumed, live.len()).await, live);
    drop((early, resumed));
    server.stop().await;
}

/// Watch carries what a client needs to resolve by itself: tenants and the
/// event-type catalog, in the snapshot and as they change. A tenant-scoped
/// stream sees its own tenant and the whole catalog; a platform-wide one,
/// every tenant.
async fn watch_carries_tenants_and_the_catalog(backend: Backend) {
    use hookplane::proto::watch_subscriptions_response::Resource;
    use hookplane::proto::{Tenant, UpdateTenantRequest};
    let (server, admin) = fixture(&backend).await;
    create_tenant(&admin, "other").await;
    let mut scoped = Watch::open(&admin, TENANT, 0).await;
    let (snapshot, _) = scoped.snapshot().await;
    let tenants = |messages: &[WatchSubscriptionsResponse]| -> Vec<String> {
        messages
            .iter()
            .filter_map(|m| match &m.resource {
                Some(Resource::Tenant(t)) => Some(t.tenant_id.clone()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(tenants(&snapshot), [TENANT]);
    let mut everything = Watch::open(&admin, "", 0).await;
    let (snapshot, _) = everything.snapshot().await;
    let mut all = tenants(&snapshot);
    all.sort();
    assert_eq!(all, [TENANT, "other"]);

    // A tenant's change reaches its own stream and the platform-wide one.
    for tenant_id in ["other", TENANT] {
        ok(admin
            .tenants()
            .update_tenant(UpdateTenantRequest {
                tenant: Some(Tenant {
                    tenant_id: tenant_id.to_owned(),
                    display_name: format!("{tenant_id} renamed"),
                    ..Default::default()
                }),
                update_mask: mask(&["display_name"]),
            })
            .await);
    }
    let created = create_event_type(&admin, event_type("billing.paid")).await;
    for (watch, want) in [
        (&mut scoped, vec![TENANT.to_owned()]),
        (&mut everything, vec!["other".to_owned(), TENANT.to_owned()]),
    ] {
        let mut renamed = Vec::new();
        let catalog = loop {
            let m = watch.next_change().await;
            assert_eq!(kind_of(&m), Kind::Upsert);
            match m.resource {
                Some(Resource::Tenant(t)) => {
                    assert_eq!(t.display_name, format!("{} renamed", t.tenant_id));
                    renamed.push(t.tenant_id);
                }
                Some(Resource::EventType(e)) => break e,
                other => panic!("a tenant or event type, got {other:?}"),
            }
        };
        assert_eq!(renamed, want, "tenants in scope, in order");
        assert_eq!(
            catalog.name, created.name,
            "the catalog reaches every stream"
        );
    }
    drop((scoped, everything));
    server.stop().await;
}

/// Streams of several tenants opening at once each get exactly their own
/// tenant's state.
async fn streams_opening_together_each_get_their_own_snapshot(backend: Backend) {
    use hookplane::proto::watch_subscriptions_response::Resource;
    let server = backend
        .start_with(&["--max-watch-streams-per-credential", "1000"])
        .await;
    let admin = server.admin();
    create_catalog(&admin).await;
    let mut want = std::collections::BTreeMap::new();
    for t in 0..5 {
        let tenant = format!("tenant-{t}");
        create_tenant(&admin, &tenant).await;
        create_endpoint(&admin, &tenant, ENDPOINT, URL).await;
        let mut ids = Vec::new();
        for _ in 0..=t {
            let s =
                create_subscription(&admin, subscription(&tenant, ENDPOINT, &["command.*"])).await;
            ids.push(s.subscription_id);
        }
        ids.sort();
        want.insert(tenant, ids);
    }
    let mut opening = JoinSet::new();
    for i in 0..100 {
        let (admin, tenant) = (admin.clone(), format!("tenant-{}", i % 5));
        opening.spawn(async move {
            let mut watch = Watch::open(&admin, &tenant, 0).await;
            let (snapshot, _) = watch.snapshot().await;
            (tenant, snapshot)
        });
    }
    for (tenant, snapshot) in opening.join_all().await {
        let mut tenants = Vec::new();
        let mut subscriptions = Vec::new();
        for m in &snapshot {
            match &m.resource {
                Some(Resource::Tenant(t)) => tenants.push(t.tenant_id.clone()),
                Some(Resource::Subscription(s)) => subscriptions.push(s.subscription_id.clone()),
                Some(Resource::Endpoint(e)) => assert_eq!(e.tenant_id, tenant),
                _ => {}
            }
        }
        subscriptions.sort();
        assert_eq!(
            tenants,
            std::slice::from_ref(&tenant),
            "its own tenant only"
        );
        assert_eq!(subscriptions, want[&tenant], "{tenant}'s subscriptions");
    }
    server.stop().await;
}

backend_tests!(
    streams_opening_together_each_get_their_own_snapshot,
    many_streams_each_see_every_change_once_in_order,
    streams_below_the_feed_read_the_log_and_rejoin,
    watch_carries_tenants_and_the_catalog,
);

//! Parallel creates with one key: the database decides, exactly one wins.
//! Writes racing a parent's delete never leave a live child behind.

use hookplane::proto::{
    CreateTenantRequest, DeleteEndpointRequest, ListSubscriptionsRequest,
    ListSubscriptionsResponse, ListTenantsRequest, Subscription, Tenant,
};
use tokio::task::JoinSet;
use tonic::Code;

use crate::harness::*;

const PARALLEL: usize = 32;

/// Counts OK and ALREADY_EXISTS; any other outcome fails the test.
async fn tally(mut calls: JoinSet<Result<(), tonic::Status>>) -> (usize, usize) {
    let (mut created, mut exists) = (0, 0);
    while let Some(joined) = calls.join_next().await {
        match joined.expect("call task") {
            Ok(()) => created += 1,
            Err(status) if status.code() == Code::AlreadyExists => exists += 1,
            Err(status) => panic!(
                "unexpected {:?}: {} (a parallel create must not fail otherwise)",
                status.code(),
                status.message()
            ),
        }
    }
    (created, exists)
}

/// The tenant's subscriptions, deleted ones included.
async fn every_subscription(admin: &Clients) -> ListSubscriptionsResponse {
    ok(admin
        .subscriptions()
        .list_subscriptions(ListSubscriptionsRequest {
            tenant_id: TENANT.to_owned(),
            show_deleted: true,
            ..Default::default()
        })
        .await)
}

async fn parallel_subscriptions_with_one_name(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let mut calls = JoinSet::new();
    for i in 0..PARALLEL {
        let admin = admin.clone();
        calls.spawn(async move {
            let patterns: &[&str] = if i % 2 == 0 { &["*"] } else { &["command.*"] };
            admin
                .subscriptions()
                .create_subscription(create_subscription_request(Subscription {
                    name: "the-one".to_owned(),
                    ..subscription(TENANT, ENDPOINT, patterns)
                }))
                .await
                .map(drop)
        });
    }
    assert_eq!(tally(calls).await, (1, PARALLEL - 1));
    let listed = every_subscription(&admin).await;
    assert_eq!(listed.subscriptions.len(), 1, "no half-written losers");
    assert_eq!(listed.subscriptions[0].name, "the-one");
    server.stop().await;
}

async fn parallel_tenants_with_one_id(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    let mut calls = JoinSet::new();
    for i in 0..PARALLEL {
        let admin = admin.clone();
        calls.spawn(async move {
            admin
                .tenants()
                .create_tenant(CreateTenantRequest {
                    tenant: Some(Tenant {
                        tenant_id: "contested".to_owned(),
                        display_name: format!("attempt {i}"),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                })
                .await
                .map(drop)
        });
    }
    assert_eq!(tally(calls).await, (1, PARALLEL - 1));
    let listed = ok(admin
        .tenants()
        .list_tenants(ListTenantsRequest::default())
        .await);
    assert_eq!(listed.tenants.len(), 1);
    server.stop().await;
}

async fn parallel_distinct_creates_all_succeed(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let mut calls = JoinSet::new();
    for i in 0..PARALLEL {
        let admin = admin.clone();
        calls.spawn(async move {
            admin
                .subscriptions()
                .create_subscription(create_subscription_request(Subscription {
                    name: format!("sub-{i}"),
                    ..subscription(TENANT, ENDPOINT, &["*"])
                }))
                .await
                .map(drop)
        });
    }
    assert_eq!(
        tally(calls).await,
        (PARALLEL, 0),
        "no writer sees a lock error"
    );
    let listed = ok(admin
        .subscriptions()
        .list_subscriptions(ListSubscriptionsRequest {
            tenant_id: TENANT.to_owned(),
            ..Default::default()
        })
        .await);
    assert_eq!(listed.total_size as usize, PARALLEL);
    server.stop().await;
}

/// Concurrent creates that may share a statement (PostgreSQL writes plain
/// creates arriving together in one) still get each their own answer: a
/// taken name or a missing endpoint fails only the create that has it,
/// and every create that succeeds has a revision of its own.
async fn parallel_mixed_creates_each_get_their_own_answer(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let mut calls = JoinSet::new();
    for i in 0..PARALLEL {
        let admin = admin.clone();
        calls.spawn(async move {
            let (name, endpoint) = match i % 4 {
                0 => ("contested".to_owned(), ENDPOINT),
                1 => (format!("orphan-{i}"), "ep_missing"),
                _ => (format!("distinct-{i}"), ENDPOINT),
            };
            let answer = admin
                .subscriptions()
                .create_subscription(create_subscription_request(Subscription {
                    name: name.clone(),
                    ..subscription(TENANT, endpoint, &["*"])
                }))
                .await;
            (i, name, answer.map(|r| revision(r.metadata())))
        });
    }
    let (mut contested_won, mut revisions) = (0, std::collections::HashSet::new());
    while let Some(joined) = calls.join_next().await {
        let (i, name, answer) = joined.expect("call task");
        match i % 4 {
            0 => match answer {
                Ok(r) => {
                    contested_won += 1;
                    assert!(revisions.insert(r), "revision {r} given twice");
                }
                Err(status) => assert_eq!(status.code(), Code::AlreadyExists, "{name}: {status:?}"),
            },
            1 => assert_eq!(
                answer.expect_err("no such endpoint").code(),
                Code::NotFound,
                "{name}"
            ),
            _ => {
                let r = answer.unwrap_or_else(|s| panic!("{name}: {s:?}"));
                assert!(revisions.insert(r), "revision {r} given twice");
            }
        }
    }
    assert_eq!(contested_won, 1);
    let listed = every_subscription(&admin).await;
    let mut names: Vec<&str> = listed
        .subscriptions
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    names.sort_unstable();
    let mut expected: Vec<String> = (0..PARALLEL)
        .filter(|i| i % 4 >= 2)
        .map(|i| format!("distinct-{i}"))
        .chain(["contested".to_owned()])
        .collect();
    expected.sort_unstable();
    assert_eq!(
        names, expected,
        "exactly the creates that succeeded are stored"
    );
    server.stop().await;
}

/// On PostgreSQL concurrent creates share a statement; a write that holds
/// one tenant's row locked must not hold up another tenant's creates. The
/// test holds tenant A's row in a transaction of its own, starts a create
/// on A (which waits for the lock, as it should), then creates on B: that
/// one must finish while A's row is still locked.
async fn a_locked_tenant_holds_up_only_its_own_creates(backend: Backend) {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let (server, admin) = fixture(&backend).await;
    create_tenant(&admin, "other").await;
    create_endpoint(&admin, "other", ENDPOINT, URL).await;
    let db = backend.database().await;
    let lock = db.begin().await.expect("begin");
    lock.execute_unprepared(&format!(
        "SELECT 1 FROM tenants WHERE tenant_id = '{TENANT}' FOR UPDATE"
    ))
    .await
    .expect("lock the tenant row");

    let waiting = {
        let admin = admin.clone();
        tokio::spawn(async move {
            create_subscription(&admin, subscription(TENANT, ENDPOINT, &["*"])).await
        })
    };
    // The create on A is queued behind the lock before B's starts.
    crate::lifecycle::eventually(
        "the create on the locked tenant to wait for its lock",
        crate::lifecycle::DEADLINE,
        || sessions_waiting_for_a_lock(&db),
    )
    .await;
    let other = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        create_subscription(&admin, subscription("other", ENDPOINT, &["*"])),
    )
    .await
    .expect("a create on another tenant finishes while the first tenant is locked");
    assert_eq!(other.tenant_id, "other");
    assert!(
        !waiting.is_finished(),
        "the create on the locked tenant waits for the lock"
    );

    lock.rollback().await.expect("release the lock");
    let created = waiting.await.expect("create task");
    assert_eq!(created.tenant_id, TENANT);
    db.close().await.expect("close");
    server.stop().await;
}

/// `Some` once a session of this database waits for a lock (PostgreSQL).
async fn sessions_waiting_for_a_lock(db: &sea_orm::DatabaseConnection) -> Option<i64> {
    use sea_orm::{ConnectionTrait as _, Statement};
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT count(*) AS waiting FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        ))
        .await
        .expect("read pg_stat_activity")?;
    let waiting: i64 = row.try_get("", "waiting").expect("a count");
    (waiting > 0).then_some(waiting)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_locked_tenant_holds_up_only_its_own_creates() {
    run_postgres(a_locked_tenant_holds_up_only_its_own_creates).await;
}

/// Creates on an endpoint race a forced delete of it. Each create either
/// lands before the delete (and the delete takes it along) or fails with
/// NOT_FOUND; none may survive live on the deleted endpoint. On PostgreSQL,
/// where writers run concurrently, this is what the row locks guarantee.
async fn creates_racing_an_endpoint_delete_leave_no_live_orphan(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let mut calls = JoinSet::new();
    for i in 0..PARALLEL {
        let admin = admin.clone();
        calls.spawn(async move {
            if i == PARALLEL / 2 {
                return admin
                    .endpoints()
                    .delete_endpoint(DeleteEndpointRequest {
                        tenant_id: TENANT.to_owned(),
                        endpoint_id: ENDPOINT.to_owned(),
                        etag: String::new(),
                        force: true,
                    })
                    .await
                    .map(|_| "deleted");
            }
            admin
                .subscriptions()
                .create_subscription(create_subscription_request(Subscription {
                    name: format!("racer-{i}"),
                    ..subscription(TENANT, ENDPOINT, &["*"])
                }))
                .await
                .map(|_| "created")
        });
    }
    let (mut created, mut refused) = (0, 0);
    while let Some(joined) = calls.join_next().await {
        match joined.expect("call task") {
            Ok("created") => created += 1,
            Ok(_) => {}
            Err(status) if status.code() == Code::NotFound => refused += 1,
            Err(status) => panic!("unexpected {:?}: {}", status.code(), status.message()),
        }
    }
    assert_eq!(created + refused, PARALLEL - 1, "every create answered");
    let listed = every_subscription(&admin).await;
    assert_eq!(
        listed.subscriptions.len(),
        created,
        "every acknowledged create is stored"
    );
    let live: Vec<_> = listed
        .subscriptions
        .iter()
        .filter(|s| status_of(s) != hookplane::proto::subscription::Status::Deleted)
        .map(|s| s.name.clone())
        .collect();
    assert!(live.is_empty(), "live on a deleted endpoint: {live:?}");
    server.stop().await;
}

backend_tests!(
    creates_racing_an_endpoint_delete_leave_no_live_orphan,
    parallel_mixed_creates_each_get_their_own_answer,
    parallel_subscriptions_with_one_name,
    parallel_tenants_with_one_id,
    parallel_distinct_creates_all_succeed,
);

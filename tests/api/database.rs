//! The database failing under a running server, short of stopping a
//! database server (the fault suite does that): PostgreSQL ending the
//! server's sessions (SQLSTATE 57P01, what every restart sends), the
//! server's database dropped under it, shutdown with a Watch open, and the
//! change-log follower's plan as a table grows.

use std::time::{Duration, Instant};

use hookplane::proto::{
    GetTenantRequest, ListSubscriptionsRequest, Tenant, UpdateTenantRequest,
    WatchSubscriptionsRequest,
};
use sea_orm::{ConnectionTrait as _, Statement};
use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::harness::*;
use crate::lifecycle::{DEADLINE, eventually, http_get, resolve, target_ids};

/// The health entry of the database.
const DATABASE_HEALTH: &str = "hookplane.database";

/// The kinds of call that reach the database by different paths: a read by
/// key (on a held connection), a create (batched on a held connection), an
/// update (a transaction from the pool), a listing (pool reads).
#[derive(Debug, Clone, Copy)]
enum Call {
    Get,
    Create,
    Update,
    List,
}

const CALLS: [Call; 4] = [Call::Get, Call::Create, Call::Update, Call::List];

async fn call(admin: &Clients, kind: Call, n: usize) -> Result<(), Status> {
    match kind {
        Call::Get => admin
            .tenants()
            .get_tenant(GetTenantRequest {
                tenant_id: TENANT.to_owned(),
            })
            .await
            .map(drop),
        Call::Create => admin
            .subscriptions()
            .create_subscription(create_subscription_request(subscription(
                TENANT,
                ENDPOINT,
                &["command.*"],
            )))
            .await
            .map(drop),
        Call::Update => admin
            .tenants()
            .update_tenant(UpdateTenantRequest {
                tenant: Some(Tenant {
                    tenant_id: TENANT.to_owned(),
                    display_name: format!("Acme {n}"),
                    ..Default::default()
                }),
                update_mask: mask(&["display_name"]),
            })
            .await
            .map(drop),
        Call::List => admin
            .subscriptions()
            .list_subscriptions(ListSubscriptionsRequest {
                tenant_id: TENANT.to_owned(),
                ..Default::default()
            })
            .await
            .map(drop),
    }
}

/// Ends every session of the server's database but the caller's, as a
/// PostgreSQL restart does; returns how many it ended.
async fn end_sessions(db: &sea_orm::DatabaseConnection) -> i64 {
    db.query_one_raw(Statement::from_string(
        db.get_database_backend(),
        "SELECT count(pg_terminate_backend(pid)) AS ended FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    ))
    .await
    .expect("terminate the server's sessions")
    .expect("a row")
    .try_get::<i64>("", "ended")
    .expect("a count")
}

async fn health(server: &TestServer, service: &str) -> ServingStatus {
    let status = ok(HealthClient::new(server.channel())
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await);
    ServingStatus::try_from(status.status).expect("known status")
}

/// Every connection the server holds dies at once (the administrator ends
/// them, as a restart would). Calls answer UNAVAILABLE, never INTERNAL; at
/// most the call that found a dead connection fails, and the connections
/// are replaced without a restart of hookplane.
async fn ended_sessions_answer_unavailable_and_are_replaced(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let db = backend.database().await;
    for round in 0..3 {
        // Every path holds a live connection before the sessions end.
        for (n, kind) in CALLS.into_iter().enumerate() {
            call(&admin, kind, n)
                .await
                .unwrap_or_else(|s| panic!("round {round}: {kind:?} before: {s:?}"));
        }
        assert!(end_sessions(&db).await > 0, "the server had sessions");
        let mut failed = Vec::new();
        for n in 0..12 {
            let kind = CALLS[(n + round) % CALLS.len()];
            if let Err(status) = call(&admin, kind, n).await {
                failed.push((kind, status.code(), status.message().to_owned()));
            }
        }
        assert!(
            failed.iter().all(|(_, code, _)| *code == Code::Unavailable),
            "round {round}: a call failed other than UNAVAILABLE: {failed:?}"
        );
        assert!(
            failed.len() <= 1,
            "round {round}: more than the call that found a dead connection failed: {failed:?}"
        );
    }
    db.close().await.expect("close");
    server.stop().await;
}

/// The server's database is dropped under it: calls that need it answer
/// UNAVAILABLE at once, the database's health entry turns NOT_SERVING
/// within about a second while the overall status stays SERVING,
/// `/healthz` answers 503 at once, ResolveSubscribers answers from memory,
/// and shutdown finishes within its grace period.
async fn a_dropped_database_is_unavailable_at_once(backend: Backend) {
    let server = backend.start_with(&["--shutdown-grace-secs", "3"]).await;
    let admin = server.admin();
    create_tenant(&admin, TENANT).await;
    create_catalog(&admin).await;
    create_endpoint(&admin, TENANT, ENDPOINT, URL).await;
    let subscribed = create_subscription(&admin, subscription(TENANT, ENDPOINT, &["command.*"]))
        .await
        .subscription_id;
    assert_eq!(
        health(&server, DATABASE_HEALTH).await,
        ServingStatus::Serving
    );
    let healthz = format!("http://{}/healthz", server.http_addr);
    assert_eq!(http_get(&healthz).await, 200);

    backend.drop_database().await;
    let dropped = Instant::now();
    eventually(
        "the database's health entry NOT_SERVING",
        DEADLINE,
        || async {
            (health(&server, DATABASE_HEALTH).await == ServingStatus::NotServing).then_some(())
        },
    )
    .await;
    let noticed = dropped.elapsed();
    assert!(
        noticed < Duration::from_millis(1500),
        "NOT_SERVING only after {noticed:?}"
    );
    assert_eq!(
        health(&server, "").await,
        ServingStatus::Serving,
        "the overall status stays SERVING while resolve answers from memory"
    );

    for (n, kind) in CALLS.into_iter().enumerate() {
        let started = Instant::now();
        let status = expect_code(call(&admin, kind, n).await, Code::Unavailable);
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{kind:?} took {:?} to fail: {}",
            started.elapsed(),
            status.message()
        );
    }
    let started = Instant::now();
    assert_eq!(http_get(&healthz).await, 503);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "/healthz waited"
    );
    assert_eq!(
        target_ids(&resolve(&admin, TENANT, "command.accepted").await),
        [subscribed.as_str()],
        "resolve answers from memory"
    );

    let started = Instant::now();
    server.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown took {:?} with the database gone",
        started.elapsed()
    );
}

/// Shutdown ends an open Watch stream with UNAVAILABLE at once, instead of
/// waiting out the grace period for it.
async fn shutdown_ends_watch_streams_at_once(backend: Backend) {
    let server = backend.start_with(&["--shutdown-grace-secs", "20"]).await;
    let admin = server.admin();
    create_tenant(&admin, TENANT).await;
    let mut stream = ok(admin
        .subscriptions()
        .watch_subscriptions(WatchSubscriptionsRequest {
            tenant_id: TENANT.to_owned(),
            since_revision: 0,
            progress_heartbeats: false,
        })
        .await);
    // The snapshot's heartbeat: the stream is running.
    let first = tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("a first message")
        .expect("the stream runs");
    assert!(first.is_some(), "the stream runs");

    let started = Instant::now();
    let stopping = tokio::spawn(server.stop());
    let ended = loop {
        match tokio::time::timeout(DEADLINE, stream.message()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => panic!("the stream ended without a status"),
            Ok(Err(status)) => break status,
            Err(_) => panic!("the stream was still open {DEADLINE:?} after shutdown began"),
        }
    };
    assert_eq!(ended.code(), Code::Unavailable, "{}", ended.message());
    stopping.await.expect("shutdown task");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?} with a Watch open",
        started.elapsed()
    );
}

/// Rows the database read from `subscriptions` other than by its key: through
/// the other indexes that lead with `tenant_id`, or by scanning the table.
async fn rows_read_not_by_key(db: &sea_orm::DatabaseConnection) -> (i64, i64) {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT \
               (SELECT coalesce(sum(idx_tup_read), 0) FROM pg_stat_user_indexes \
                WHERE relname = 'subscriptions' \
                AND indexrelname IN ('subscriptions_by_endpoint', 'subscriptions_by_creation'))::bigint \
                 AS by_other_index, \
               (SELECT coalesce(sum(idx_scan), 0) FROM pg_stat_user_indexes \
                WHERE indexrelname = 'subscriptions_pkey')::bigint AS key_lookups",
        ))
        .await
        .expect("read the statistics")
        .expect("a row");
    (
        row.try_get("", "by_other_index").expect("rows"),
        row.try_get("", "key_lookups").expect("lookups"),
    )
}

/// The follower's change-log statement is planned while the tables are
/// empty (a new database; autovacuum is off on these machines). Then one
/// tenant grows to 30,000 subscriptions. A subscription change must still be
/// applied by a key lookup, not by reading the tenant's subscriptions
/// through another index, as the plan made on empty tables did.
async fn the_followers_plan_follows_a_growing_table(backend: Backend) {
    const ROWS: i64 = 30_000;
    let (server, admin) = fixture(&backend).await;
    let watched = create_subscription(&admin, subscription(TENANT, ENDPOINT, &["command.*"]))
        .await
        .subscription_id;
    let db = backend.database().await;
    db.execute_unprepared(&format!(
        "INSERT INTO subscriptions (tenant_id, subscription_id, endpoint_id, name, event_types, \
         status, expire_time, create_time, update_time, etag) \
         SELECT '{TENANT}', 'bulk-' || i, '{ENDPOINT}', NULL, '[\"alarm-raised\"]', 'ACTIVE', \
         NULL, i, i, 'e' || i FROM generate_series(1, {ROWS}) AS i"
    ))
    .await
    .expect("load the tenant");

    // Changes one at a time, as another replica would write them, until one
    // is applied by key lookup. A plan made before the load may serve the
    // first change; it must not serve them all.
    let started = Instant::now();
    let mut changes = Vec::new();
    for n in 0.. {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no change was applied by key lookup; rows read per change (other index, key lookups): {changes:?}"
        );
        let (other_before, keys_before) = rows_read_not_by_key(&db).await;
        let event_type = if n % 2 == 0 {
            "command.accepted"
        } else {
            "command.completed"
        };
        // The change on a connection of its own, closed after: the
        // statistics of a session that ended are all counted.
        let writer = backend.database().await;
        writer
            .execute_unprepared(&format!(
                "BEGIN; \
                 UPDATE subscriptions SET event_types = '[\"{event_type}\"]', etag = 'n{n}' \
                 WHERE tenant_id = '{TENANT}' AND subscription_id = '{watched}'; \
                 INSERT INTO changes (revision, tenant_id, resource_type, resource_key, kind, change_time) \
                 VALUES (pg_current_xact_id()::text::bigint << 20, '{TENANT}', 'subscription', '{watched}', 'UPSERT', 0); \
                 COMMIT"
            ))
            .await
            .expect("change the subscription");
        writer.close().await.expect("close");
        eventually("the follower to apply the change", DEADLINE, || async {
            let ids = target_ids(&resolve(&admin, TENANT, event_type).await)
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>();
            (ids == [watched.clone()]).then_some(())
        })
        .await;
        // Statistics reach the views a second or so after the statement:
        // wait until the follower's read of the change is counted, either
        // as the key lookup (the writer's own counts once) or as a scan.
        let (other, keys) = eventually("the follower's read counted", DEADLINE, || async {
            let (other, keys) = rows_read_not_by_key(&db).await;
            let (other, keys) = (other - other_before, keys - keys_before);
            (keys >= 2 || other >= ROWS).then_some((other, keys))
        })
        .await;
        changes.push((other, keys));
        if other < 100 {
            break;
        }
    }
    db.close().await.expect("close");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_ended_sessions_answer_unavailable_and_are_replaced() {
    run_postgres(ended_sessions_answer_unavailable_and_are_replaced).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_dropped_database_is_unavailable_at_once() {
    run_postgres(a_dropped_database_is_unavailable_at_once).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_the_followers_plan_follows_a_growing_table() {
    run_postgres(the_followers_plan_follows_a_growing_table).await;
}

backend_tests!(shutdown_ends_watch_streams_at_once);

//! Limits as a caller meets them: messages over --max-message-bytes are
//! refused by the transport; per-tenant quotas are refused at their bound,
//! exactly under concurrency, and freed by deletes; Watch streams, streams
//! per connection, the rate limit and the nonce store each refuse at their
//! bound with RESOURCE_EXHAUSTED naming the flag.

use std::fmt::Debug;
use std::time::Duration;

use hookplane::proto::credential::Role;
use hookplane::proto::tenant::Settings;
use hookplane::proto::{
    CreateEndpointRequest, CreateTenantRequest, DeleteEndpointRequest, DeleteSubscriptionRequest,
    GetTenantRequest, ListEndpointsRequest, ListSubscriptionsRequest, Subscription, Tenant,
    UpdateSubscriptionRequest, WatchSubscriptionsRequest,
};
use sea_orm::ConnectionTrait as _;
use tokio::task::JoinSet;
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

use crate::harness::*;
use crate::lifecycle::eventually;

fn tenant_with_description(tenant_id: &str, bytes: usize) -> CreateTenantRequest {
    CreateTenantRequest {
        tenant: Some(Tenant {
            tenant_id: tenant_id.to_owned(),
            display_name: "x".repeat(bytes),
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

#[track_caller]
fn expect_too_large<T: std::fmt::Debug>(result: Result<T, tonic::Status>) {
    let status = result.expect_err("an oversized message is refused");
    assert!(
        matches!(status.code(), Code::ResourceExhausted | Code::OutOfRange),
        "refused by the size limit, got {:?}: {}",
        status.code(),
        status.message()
    );
}

async fn oversized_message_is_refused_by_default(backend: Backend) {
    let server = backend.start().await;
    let mut tenants = server.admin().tenants();
    // Over the 1 MiB default, under tonic's own 4 MiB.
    expect_too_large(
        tenants
            .create_tenant(tenant_with_description("big", 2 * 1024 * 1024))
            .await,
    );
    expect_code(
        tenants
            .get_tenant(GetTenantRequest {
                tenant_id: "big".to_owned(),
            })
            .await,
        Code::NotFound,
    );
    let small = ok(tenants
        .create_tenant(tenant_with_description("small", 100))
        .await);
    assert_eq!(small.tenant_id, "small");
    server.stop().await;
}

async fn max_message_bytes_flag_is_honoured(backend: Backend) {
    let server = backend.start_with(&["--max-message-bytes", "4096"]).await;
    let mut tenants = server.admin().tenants();
    expect_too_large(
        tenants
            .create_tenant(tenant_with_description("big", 8 * 1024))
            .await,
    );
    ok(tenants
        .create_tenant(tenant_with_description("fits", 100))
        .await);
    server.stop().await;
}

/// `result` must be RESOURCE_EXHAUSTED with a message naming `flag`.
#[track_caller]
fn expect_exhausted<T: Debug>(result: Result<T, Status>, flag: &str) -> Status {
    let status = expect_code(result, Code::ResourceExhausted);
    assert!(
        status.message().contains(flag),
        "the refusal names {flag}: {}",
        status.message()
    );
    status
}

async fn create_subscription_on(
    clients: &Clients,
    tenant_id: &str,
    endpoint_id: &str,
) -> Result<(), Status> {
    clients
        .subscriptions()
        .create_subscription(create_subscription_request(subscription(
            tenant_id,
            endpoint_id,
            &["command.accepted"],
        )))
        .await
        .map(drop)
}

async fn create_endpoint_on(
    clients: &Clients,
    tenant_id: &str,
    endpoint_id: &str,
) -> Result<(), Status> {
    clients
        .endpoints()
        .create_endpoint(CreateEndpointRequest {
            endpoint: Some(endpoint(tenant_id, endpoint_id, URL)),
            request_id: String::new(),
        })
        .await
        .map(drop)
}

async fn live_subscriptions(clients: &Clients, tenant_id: &str) -> i32 {
    ok(clients
        .subscriptions()
        .list_subscriptions(ListSubscriptionsRequest {
            tenant_id: tenant_id.to_owned(),
            ..Default::default()
        })
        .await)
    .total_size
}

const SUBSCRIPTIONS_FLAG: &str = "--max-subscriptions-per-tenant";
const ENDPOINTS_FLAG: &str = "--max-endpoints-per-tenant";

async fn tenant_quotas_refuse_at_their_bound_and_deletes_free_them(backend: Backend) {
    let server = backend
        .start_with(&[ENDPOINTS_FLAG, "2", SUBSCRIPTIONS_FLAG, "3"])
        .await;
    let admin = server.admin();
    create_tenant(&admin, TENANT).await;
    create_catalog(&admin).await;
    create_endpoint_on(&admin, TENANT, "ep1").await.unwrap();
    create_endpoint_on(&admin, TENANT, "ep2").await.unwrap();
    expect_exhausted(
        create_endpoint_on(&admin, TENANT, "ep3").await,
        ENDPOINTS_FLAG,
    );

    let mut first = Vec::new();
    for _ in 0..3 {
        first.push(
            create_subscription(&admin, subscription(TENANT, "ep1", &["command.accepted"])).await,
        );
    }
    // Every way of creating one is refused: plain, with a request id, and
    // as an upsert.
    expect_exhausted(
        create_subscription_on(&admin, TENANT, "ep2").await,
        SUBSCRIPTIONS_FLAG,
    );
    let mut with_id =
        create_subscription_request(subscription(TENANT, "ep2", &["command.accepted"]));
    with_id.request_id = "quota-retry-1".to_owned();
    expect_exhausted(
        admin.subscriptions().create_subscription(with_id).await,
        SUBSCRIPTIONS_FLAG,
    );
    expect_exhausted(
        admin
            .subscriptions()
            .update_subscription(UpdateSubscriptionRequest {
                subscription: Some(Subscription {
                    subscription_id: "upserted".to_owned(),
                    ..subscription(TENANT, "ep2", &["command.accepted"])
                }),
                update_mask: None,
                allow_missing: true,
            })
            .await,
        SUBSCRIPTIONS_FLAG,
    );
    assert_eq!(live_subscriptions(&admin, TENANT).await, 3);

    // The quotas are per tenant.
    create_tenant(&admin, "other").await;
    create_endpoint_on(&admin, "other", "ep1").await.unwrap();
    create_subscription_on(&admin, "other", "ep1")
        .await
        .unwrap();

    // A delete frees its place, and the count outlives a restart.
    ok(admin
        .subscriptions()
        .delete_subscription(DeleteSubscriptionRequest {
            tenant_id: TENANT.to_owned(),
            subscription_id: first[0].subscription_id.clone(),
            etag: String::new(),
        })
        .await);
    create_subscription_on(&admin, TENANT, "ep2").await.unwrap();
    let server = server.restart().await;
    let admin = server.admin();
    expect_exhausted(
        create_subscription_on(&admin, TENANT, "ep2").await,
        SUBSCRIPTIONS_FLAG,
    );

    // Deleting an endpoint with force frees it and its subscriptions.
    ok(admin
        .endpoints()
        .delete_endpoint(DeleteEndpointRequest {
            tenant_id: TENANT.to_owned(),
            endpoint_id: "ep1".to_owned(),
            etag: String::new(),
            force: true,
        })
        .await);
    assert_eq!(live_subscriptions(&admin, TENANT).await, 1);
    create_endpoint_on(&admin, TENANT, "ep3").await.unwrap();
    create_subscription_on(&admin, TENANT, "ep3").await.unwrap();
    create_subscription_on(&admin, TENANT, "ep3").await.unwrap();
    expect_exhausted(
        create_subscription_on(&admin, TENANT, "ep3").await,
        SUBSCRIPTIONS_FLAG,
    );

    // A tenant without a count (as an older version left it) is counted
    // on its next create.
    backend
        .database()
        .await
        .execute_unprepared("DELETE FROM tenant_usage WHERE tenant_id = 'other'")
        .await
        .expect("drop the other tenant's count");
    create_subscription_on(&admin, "other", "ep1")
        .await
        .unwrap();
    create_subscription_on(&admin, "other", "ep1")
        .await
        .unwrap();
    expect_exhausted(
        create_subscription_on(&admin, "other", "ep1").await,
        SUBSCRIPTIONS_FLAG,
    );

    // A tenant that verifies subscriptions counts them the same way.
    create_tenant_with(
        &admin,
        "verifying",
        Settings {
            require_verification: true,
            ..Default::default()
        },
    )
    .await;
    create_endpoint_on(&admin, "verifying", "ep1")
        .await
        .unwrap();
    for _ in 0..3 {
        create_subscription_on(&admin, "verifying", "ep1")
            .await
            .unwrap();
    }
    expect_exhausted(
        create_subscription_on(&admin, "verifying", "ep1").await,
        SUBSCRIPTIONS_FLAG,
    );
    server.stop().await;
}

async fn tenant_quotas_are_exact_under_concurrent_creates(backend: Backend) {
    const LIMIT: usize = 10;
    const ATTEMPTS: usize = 30;
    let server = backend
        .start_with(&[ENDPOINTS_FLAG, "4", SUBSCRIPTIONS_FLAG, &LIMIT.to_string()])
        .await;
    let admin = server.admin();
    create_catalog(&admin).await;
    let tenants = ["t1", "t2"];
    for t in tenants {
        create_tenant(&admin, t).await;
    }

    // Endpoints: 12 at once on one tenant, 4 fit.
    let mut creates = JoinSet::new();
    for i in 0..12 {
        let admin = admin.clone();
        creates.spawn(async move { create_endpoint_on(&admin, "t1", &format!("ep{i}")).await });
    }
    let outcomes = creates.join_all().await;
    let created = outcomes.iter().filter(|r| r.is_ok()).count();
    for refused in outcomes.into_iter().filter_map(Result::err) {
        expect_exhausted(Err::<(), _>(refused), ENDPOINTS_FLAG);
    }
    assert_eq!(created, 4, "exactly the limit of endpoints is created");
    let listed = ok(admin
        .endpoints()
        .list_endpoints(ListEndpointsRequest {
            tenant_id: "t1".to_owned(),
            ..Default::default()
        })
        .await);
    assert_eq!(listed.total_size, 4);
    create_endpoint_on(&admin, "t2", "ep0").await.unwrap();
    let t1_endpoint = listed.endpoints[0].endpoint_id.clone();

    // Subscriptions: 30 at once on each of two tenants, some with a request
    // id (they take the transactional path), the rest plain (batched).
    let mut creates = JoinSet::new();
    for i in 0..ATTEMPTS {
        for t in tenants {
            let admin = admin.clone();
            let endpoint_id = if t == "t1" {
                t1_endpoint.clone()
            } else {
                "ep0".to_owned()
            };
            creates.spawn(async move {
                let mut request = create_subscription_request(subscription(
                    t,
                    &endpoint_id,
                    &["command.accepted"],
                ));
                if i.is_multiple_of(3) {
                    request.request_id = format!("{t}-{i}");
                }
                let result = admin.subscriptions().create_subscription(request).await;
                (t, result.map(drop))
            });
        }
    }
    let outcomes = creates.join_all().await;
    for t in tenants {
        let created = outcomes
            .iter()
            .filter(|(of, r)| *of == t && r.is_ok())
            .count();
        assert_eq!(created, LIMIT, "exactly the limit of subscriptions on {t}");
        assert_eq!(live_subscriptions(&admin, t).await, LIMIT as i32);
    }
    for (_, refused) in outcomes.into_iter().filter(|(_, r)| r.is_err()) {
        expect_exhausted(refused, SUBSCRIPTIONS_FLAG);
    }
    server.stop().await;
}

const WATCH_FLAG: &str = "--max-watch-streams";
const WATCH_PER_CREDENTIAL_FLAG: &str = "--max-watch-streams-per-credential";

async fn open_watch(
    clients: &Clients,
) -> Result<tonic::Streaming<hookplane::proto::WatchSubscriptionsResponse>, Status> {
    clients
        .subscriptions()
        .watch_subscriptions(WatchSubscriptionsRequest {
            tenant_id: TENANT.to_owned(),
            since_revision: 0,
            progress_heartbeats: false,
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn watch_streams_are_bounded_in_all_and_per_credential(backend: Backend) {
    let server = backend
        .start_with(&[WATCH_FLAG, "3", WATCH_PER_CREDENTIAL_FLAG, "2"])
        .await;
    let admin = server.admin();
    create_tenant(&admin, TENANT).await;
    let dispatcher = server.clients(&create_credential(&admin, TENANT, Role::Dispatcher).await);
    let other = server.clients(&create_credential(&admin, TENANT, Role::Dispatcher).await);

    let first = open_watch(&dispatcher).await.expect("first stream");
    let _second = open_watch(&dispatcher).await.expect("second stream");
    expect_exhausted(open_watch(&dispatcher).await, WATCH_PER_CREDENTIAL_FLAG);
    let _third = open_watch(&other)
        .await
        .expect("another credential's stream");
    expect_exhausted(open_watch(&other).await, &format!("{WATCH_FLAG})"));

    // A stream the client closes gives its place back.
    drop(first);
    let _again = eventually(
        "the closed stream's place to be free",
        Duration::from_secs(5),
        || {
            let other = other.clone();
            async move { open_watch(&other).await.ok() }
        },
    )
    .await;
    server.stop().await;
}

async fn streams_per_connection_are_bounded(backend: Backend) {
    let server = backend.start_with(&["--max-concurrent-streams", "2"]).await;
    let admin = server.admin();
    create_tenant(&admin, TENANT).await;
    // Two open streams use the connection's two.
    let first = open_watch(&admin).await.expect("first stream");
    let _second = open_watch(&admin).await.expect("second stream");
    // A third call on the same connection waits for one to end ...
    let mut tenants = admin.tenants();
    let third = tokio::spawn(async move {
        tenants
            .get_tenant(GetTenantRequest {
                tenant_id: TENANT.to_owned(),
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!third.is_finished(), "the third stream waits");
    // ... while another connection is served.
    let elsewhere = tonic::transport::Channel::from_shared(format!("http://{}", server.grpc_addr))
        .expect("endpoint URI")
        .connect_lazy();
    ok(Clients::on(elsewhere, &Cred::admin())
        .tenants()
        .get_tenant(GetTenantRequest {
            tenant_id: TENANT.to_owned(),
        })
        .await);
    drop(first);
    let answered = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("the third call runs once a stream ended")
        .expect("the call's task");
    ok(answered);
    server.stop().await;
}

async fn over_the_rate_limit_is_refused_with_retry_info(backend: Backend) {
    let server = backend
        .start_with(&["--rate-limit", "1", "--rate-limit-burst", "3"])
        .await;
    let admin = server.admin();
    let get = || GetTenantRequest {
        tenant_id: "ghost".to_owned(),
    };
    let mut tenants = admin.tenants();
    for _ in 0..3 {
        expect_code(tenants.get_tenant(get()).await, Code::NotFound);
    }
    let status = expect_exhausted(tenants.get_tenant(get()).await, "--rate-limit");
    let retry = status
        .get_details_retry_info()
        .expect("google.rpc.RetryInfo");
    let delay = retry.retry_delay.expect("a retry delay");
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_secs(1),
        "{delay:?}"
    );
    // Once that delay has passed, the credential may call again.
    tokio::time::sleep(delay).await;
    expect_code(tenants.get_tenant(get()).await, Code::NotFound);
    server.stop().await;
}

async fn a_full_nonce_store_refuses_new_calls(backend: Backend) {
    let server = backend.start_with(&["--max-nonces", "3"]).await;
    let mut tenants = server.admin().tenants();
    let get = || GetTenantRequest {
        tenant_id: "ghost".to_owned(),
    };
    for _ in 0..3 {
        expect_code(tenants.get_tenant(get()).await, Code::NotFound);
    }
    expect_exhausted(tenants.get_tenant(get()).await, "--max-nonces");
    server.stop().await;
}

/// Transactions committed in the server's PostgreSQL database so far.
async fn commits(db: &sea_orm::DatabaseConnection) -> i64 {
    db.execute_unprepared("SELECT pg_stat_clear_snapshot()")
        .await
        .expect("fresh statistics");
    db.query_one_raw(sea_orm::Statement::from_string(
        sea_orm::DatabaseBackend::Postgres,
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    ))
    .await
    .expect("read pg_stat_database")
    .expect("a row for the database")
    .try_get::<i64>("", "xact_commit")
    .expect("xact_commit")
}

/// Transactions the server commits in `window` (PostgreSQL publishes its
/// counts within about a second, so the window is long).
async fn commits_during(db: &sea_orm::DatabaseConnection, window: Duration) -> i64 {
    let before = commits(db).await;
    tokio::time::sleep(window).await;
    commits(db).await - before
}

/// Idle Watch streams used to read the change log four times a second
/// each; now they read it only when the replica has applied a change.
async fn idle_watch_streams_do_not_read_the_database(backend: Backend) {
    const STREAMS: usize = 50;
    const WINDOW: Duration = Duration::from_secs(4);
    let (server, admin) = fixture(&backend).await;
    let db = backend.database().await;
    let without = commits_during(&db, WINDOW).await;
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        let mut watch = crate::lifecycle::Watch::open(&admin, TENANT, 0).await;
        watch.snapshot().await;
        streams.push(watch);
    }
    // Opening the streams read the database; let those counts arrive.
    commits_during(&db, Duration::from_secs(2)).await;
    let with = commits_during(&db, WINDOW).await;
    println!("{with} transactions in {WINDOW:?} with {STREAMS} idle streams, {without} without");
    // Polling, 50 streams made some 800.
    assert!(
        with - without < 50,
        "{with} transactions with {STREAMS} idle streams, {without} without"
    );
    // A change still reaches every stream.
    create_subscription(
        &admin,
        subscription(TENANT, ENDPOINT, &["command.accepted"]),
    )
    .await;
    for watch in &mut streams {
        watch.next_change().await;
    }
    drop(streams);
    server.stop().await;
}

/// PostgreSQL counts the transactions; SQLite has no such count.
mod postgres_only {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_watch_streams_do_not_read_the_database() {
        crate::harness::run_postgres(super::idle_watch_streams_do_not_read_the_database).await;
    }
}

backend_tests!(
    oversized_message_is_refused_by_default,
    max_message_bytes_flag_is_honoured,
    tenant_quotas_refuse_at_their_bound_and_deletes_free_them,
    tenant_quotas_are_exact_under_concurrent_creates,
    watch_streams_are_bounded_in_all_and_per_credential,
    streams_per_connection_are_bounded,
    over_the_rate_limit_is_refused_with_retry_info,
    a_full_nonce_store_refuses_new_calls,
);

//! The parent rule on every CreateSubscription path. A create must find its
//! tenant live, ACTIVE and at the etag it was built from, and its endpoint
//! live. Plain creates go through the batch (and, refused there on
//! PostgreSQL, the one-statement create), creates with a request id start
//! at the one-statement create (PostgreSQL) or the transaction (SQLite),
//! and creates that need a verification run the transaction; each path
//! refused falls back to the next, down to the transaction.
//!
//! The parents are broken behind the server's back, as another replica's
//! change not yet seen would be, and keep their etag (except where the
//! etag is the point): the server's cached tenant still looks writable, so
//! only the database's check can refuse. A path that skipped any part of
//! the rule would write the subscription.

use hookplane::proto::tenant::Settings;
use hookplane::proto::{CreateSubscriptionRequest, Subscription};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use tokio::task::JoinSet;
use tonic::Code;

use crate::harness::*;

/// How a create is sent, which decides the path it starts on.
#[derive(Clone, Copy, Debug)]
enum Path {
    /// No request id, no verification: the batch.
    Plain,
    /// With a request id: the one-statement create (PostgreSQL), else the
    /// transaction.
    RequestId,
    /// On a tenant that requires verification: the transaction.
    Verified,
}

const PATHS: [Path; 3] = [Path::Plain, Path::RequestId, Path::Verified];

/// A tenant of its own for one path, with endpoint [`ENDPOINT`].
async fn tenant_for(admin: &Clients, case: &str, path: Path) -> String {
    let tenant_id = format!("{case}-{}", format!("{path:?}").to_lowercase());
    let settings = Settings {
        require_verification: matches!(path, Path::Verified),
        ..Default::default()
    };
    create_tenant_with(admin, &tenant_id, settings).await;
    create_endpoint(admin, &tenant_id, ENDPOINT, URL).await;
    tenant_id
}

async fn create_on(
    admin: &Clients,
    path: Path,
    tenant_id: &str,
    n: usize,
) -> Result<Subscription, tonic::Status> {
    let request_id = match path {
        Path::RequestId => format!("create-req-{n:04}"),
        _ => String::new(),
    };
    admin
        .subscriptions()
        .create_subscription(CreateSubscriptionRequest {
            request_id,
            ..create_subscription_request(subscription(tenant_id, ENDPOINT, &["*"]))
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn execute(db: &DatabaseConnection, sql: String) {
    db.execute_unprepared(&sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn count(db: &DatabaseConnection, sql: String) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect("count")
        .expect("a row");
    row.try_get_by_index::<i64>(0).expect("a count")
}

/// What the tenant holds in the database: subscriptions, change-log rows
/// about them, and the quota's count of live ones.
async fn written(db: &DatabaseConnection, tenant_id: &str) -> (i64, i64, i64) {
    (
        count(
            db,
            format!("SELECT count(*) FROM subscriptions WHERE tenant_id = '{tenant_id}'"),
        )
        .await,
        count(
            db,
            format!(
                "SELECT count(*) FROM changes WHERE tenant_id = '{tenant_id}' \
                 AND resource_type = 'subscription'"
            ),
        )
        .await,
        count(
            db,
            format!("SELECT live_subscriptions FROM tenant_usage WHERE tenant_id = '{tenant_id}'"),
        )
        .await,
    )
}

/// For each path: a tenant whose parent `break_it` breaks refuses the
/// create with `code` and holds nothing afterwards.
async fn refused_on_every_path(backend: Backend, case: &str, break_sql: &str, code: Code) {
    let server = backend.start().await;
    let admin = server.admin();
    create_catalog(&admin).await;
    let db = backend.database().await;
    for (n, path) in PATHS.into_iter().enumerate() {
        let tenant_id = tenant_for(&admin, case, path).await;
        // The server's cached tenant is fresh and writable.
        create_on(&admin, path, &tenant_id, 100 + n)
            .await
            .unwrap_or_else(|s| panic!("{path:?}: the healthy create: {s:?}"));
        let before = written(&db, &tenant_id).await;
        execute(&db, break_sql.replace("{tenant}", &tenant_id)).await;
        let status = create_on(&admin, path, &tenant_id, n)
            .await
            .expect_err(&format!("{case} on the {path:?} path must refuse"));
        assert_eq!(
            status.code(),
            code,
            "{case} on the {path:?} path: {status:?}"
        );
        assert_eq!(
            written(&db, &tenant_id).await,
            before,
            "{case} on the {path:?} path: nothing written, the quota untouched"
        );
    }
    db.close().await.expect("close");
    server.stop().await;
}

async fn a_deleted_tenant_refuses_every_path(backend: Backend) {
    refused_on_every_path(
        backend,
        "gone",
        "UPDATE tenants SET delete_time = 1 WHERE tenant_id = '{tenant}'",
        Code::NotFound,
    )
    .await;
}

async fn a_suspended_tenant_refuses_every_path(backend: Backend) {
    refused_on_every_path(
        backend,
        "held",
        "UPDATE tenants SET state = 'SUSPENDED' WHERE tenant_id = '{tenant}'",
        Code::FailedPrecondition,
    )
    .await;
}

async fn a_deleted_endpoint_refuses_every_path(backend: Backend) {
    refused_on_every_path(
        backend,
        "unhooked",
        &format!(
            "UPDATE endpoints SET delete_time = 1 \
             WHERE tenant_id = '{{tenant}}' AND endpoint_id = '{ENDPOINT}'"
        ),
        Code::NotFound,
    )
    .await;
}

/// A tenant changed since the server cached it: every path must refuse
/// the create built from the old tenant, so that it is built again from
/// the new one (here: a default TTL the old one did not have). The plain
/// path's case is `create_follows_a_tenant_changed_elsewhere`.
async fn a_changed_tenant_is_followed_on_every_path(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    create_catalog(&admin).await;
    let db = backend.database().await;
    for (n, path) in [Path::RequestId, Path::Verified].into_iter().enumerate() {
        let tenant_id = tenant_for(&admin, "moved", path).await;
        let first = create_on(&admin, path, &tenant_id, 200 + n).await.unwrap();
        assert_eq!(first.expire_time, None, "{path:?}");
        execute(
            &db,
            format!(
                "UPDATE tenants SET default_ttl_seconds = 600, etag = 'changed-elsewhere' \
                 WHERE tenant_id = '{tenant_id}'"
            ),
        )
        .await;
        let created = create_on(&admin, path, &tenant_id, n)
            .await
            .unwrap_or_else(|s| panic!("{path:?}: {s:?}"));
        assert_about(secs(&created.expire_time), unix_now() + 600);
    }
    db.close().await.expect("close");
    server.stop().await;
}

/// Concurrent plain creates share batches: on SQLite each create of a
/// batch is checked on its own, on PostgreSQL a batch with one refused
/// create sends all its creates on alone. Either way the creates under a
/// suspended tenant are refused and every other one is written.
async fn a_broken_parent_in_a_batch_fails_only_its_own_creates(backend: Backend) {
    const PARALLEL: usize = 32;
    let server = backend.start().await;
    let admin = server.admin();
    create_catalog(&admin).await;
    let db = backend.database().await;
    let good = tenant_for(&admin, "busy", Path::Plain).await;
    let held = tenant_for(&admin, "held", Path::Plain).await;
    create_on(&admin, Path::Plain, &held, 0).await.unwrap();
    execute(
        &db,
        format!("UPDATE tenants SET state = 'SUSPENDED' WHERE tenant_id = '{held}'"),
    )
    .await;
    let mut calls = JoinSet::new();
    for i in 0..PARALLEL {
        let admin = admin.clone();
        let tenant_id = if i % 2 == 0 {
            good.clone()
        } else {
            held.clone()
        };
        calls.spawn(async move {
            let answer = create_on(&admin, Path::Plain, &tenant_id, i).await;
            (tenant_id, answer)
        });
    }
    while let Some(joined) = calls.join_next().await {
        let (tenant_id, answer) = joined.expect("call task");
        if tenant_id == good {
            answer.unwrap_or_else(|s| panic!("a create on a live tenant: {s:?}"));
        } else {
            assert_eq!(
                answer.expect_err("a create on a suspended tenant").code(),
                Code::FailedPrecondition
            );
        }
    }
    let half = (PARALLEL / 2) as i64;
    assert_eq!(written(&db, &good).await, (half, half, half));
    assert_eq!(
        written(&db, &held).await,
        (1, 1, 1),
        "only the first create"
    );
    db.close().await.expect("close");
    server.stop().await;
}

backend_tests!(
    a_deleted_tenant_refuses_every_path,
    a_suspended_tenant_refuses_every_path,
    a_deleted_endpoint_refuses_every_path,
    a_changed_tenant_is_followed_on_every_path,
    a_broken_parent_in_a_batch_fails_only_its_own_creates,
);

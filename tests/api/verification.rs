//! A confirmation is bound to the endpoint (and URL) it was sent to: moving
//! a subscription to another endpoint on a verifying tenant sends it through
//! verification again, whatever its status, and a token sent before the
//! move confirms nothing.

use hookplane::proto::subscription::Status as SubStatus;
use hookplane::proto::{
    ConfirmSubscriptionRequest, CreateSubscriptionRequest, RenewSubscriptionRequest, Subscription,
    Tenant, UpdateSubscriptionRequest, UpdateTenantRequest,
};
use tonic::Code;

use crate::harness::*;
use crate::lifecycle::{
    DEADLINE, Receiver, eventually, get_subscription, http_get, receiving_fixture, resolve,
    set_subscription_status, target_ids, verifying,
};

const OTHER: &str = "ep2";

/// UpdateSubscription of `endpoint_id` alone, as an update or as an upsert.
fn move_to(subscription_id: &str, endpoint_id: &str, upsert: bool) -> UpdateSubscriptionRequest {
    UpdateSubscriptionRequest {
        subscription: Some(Subscription {
            subscription_id: subscription_id.to_owned(),
            ..subscription(TENANT, endpoint_id, &["command.completed"])
        }),
        update_mask: mask(&["endpoint_id"]),
        allow_missing: upsert,
    }
}

/// The status column of a subscription, read from the database.
async fn stored_status(backend: &Backend, subscription_id: &str) -> String {
    use sea_orm::ConnectionTrait as _;
    let db = backend.database().await;
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            format!("SELECT status FROM subscriptions WHERE subscription_id = '{subscription_id}'"),
        ))
        .await
        .expect("read the subscription row")
        .expect("the subscription row exists");
    let status = row.try_get::<String>("", "status").expect("a status");
    let _ = db.close().await;
    status
}

/// Waits until the sweeper has recorded the subscription as EXPIRED.
async fn swept(backend: &Backend, subscription_id: &str) {
    eventually("the sweeper to record EXPIRED", DEADLINE, || async {
        (stored_status(backend, subscription_id).await == "EXPIRED").then_some(())
    })
    .await;
}

fn confirm(token: &str) -> ConfirmSubscriptionRequest {
    ConfirmSubscriptionRequest {
        token: token.to_owned(),
    }
}

/// A confirmed subscription moved to another endpoint, from each live
/// status (ACTIVE by update, DISABLED by upsert, EXPIRED), is pending again,
/// resolves nowhere, and is confirmed by a message to the new endpoint only.
async fn a_move_is_confirmed_anew_from_every_live_status(backend: Backend) {
    let (server, admin, first, _) = receiving_fixture(&backend, verifying(), &[]).await;
    let second = Receiver::start().await;
    create_endpoint(&admin, TENANT, OTHER, &second.url("/other")).await;

    let start = |ttl_seconds: i64| {
        let admin = admin.clone();
        let first = &first;
        async move {
            let s = ok(admin
                .subscriptions()
                .create_subscription(CreateSubscriptionRequest {
                    ttl_seconds,
                    ..create_subscription_request(subscription(
                        TENANT,
                        ENDPOINT,
                        &["command.completed"],
                    ))
                })
                .await);
            let c = first.confirmation(&s.subscription_id, 1).await;
            assert_eq!(http_get(&c.url).await, 200);
            s
        }
    };
    let active = start(0).await;
    let disabled = start(0).await;
    set_subscription_status(&admin, &disabled.subscription_id, SubStatus::Disabled).await;
    let expired = start(1).await;
    swept(&backend, &expired.subscription_id).await;

    let mut subs = admin.subscriptions();
    let moved = ok(subs
        .update_subscription(move_to(&active.subscription_id, OTHER, false))
        .await);
    assert_eq!(moved.endpoint_id, OTHER);
    assert_eq!(status_of(&moved), SubStatus::PendingVerification);
    let moved = ok(subs
        .update_subscription(move_to(&disabled.subscription_id, OTHER, true))
        .await);
    assert_eq!(status_of(&moved), SubStatus::PendingVerification);
    // Expiring after the move: once the sweeper records it, the sweeper has
    // had a turn since the EXPIRED subscription was moved.
    let later = start(2).await;
    ok(subs
        .update_subscription(move_to(&expired.subscription_id, OTHER, false))
        .await);
    assert!(
        resolve(&admin, TENANT, "command.completed")
            .await
            .iter()
            .all(|t| t.subscription_id == later.subscription_id),
        "nothing resolves to a URL that has not confirmed"
    );
    swept(&backend, &later.subscription_id).await;
    assert_eq!(
        stored_status(&backend, &expired.subscription_id).await,
        "PENDING_VERIFICATION",
        "the sweeper leaves an unconfirmed subscription pending"
    );

    // Renewed, the moved EXPIRED subscription is not ACTIVE but pending.
    let renewed = ok(subs
        .renew_subscription(RenewSubscriptionRequest {
            tenant_id: TENANT.to_owned(),
            subscription_id: expired.subscription_id.clone(),
            ttl_seconds: 3600,
        })
        .await);
    assert_eq!(status_of(&renewed), SubStatus::PendingVerification);
    assert!(
        resolve(&admin, TENANT, "command.completed")
            .await
            .is_empty()
    );

    for s in [&active, &disabled, &expired] {
        let id = &s.subscription_id;
        let c = second.confirmation(id, 1).await;
        assert_eq!(c.delivery.path, "/other", "sent to the new endpoint");
        assert_eq!(
            first.confirmations_for(id).len(),
            1,
            "the old endpoint got only the first confirmation of {id}"
        );
        assert_eq!(http_get(&c.url).await, 200);
        assert_eq!(
            status_of(&get_subscription(&admin, id).await),
            SubStatus::Active
        );
    }
    let targets = resolve(&admin, TENANT, "command.completed").await;
    let mut ids = vec![
        active.subscription_id.as_str(),
        disabled.subscription_id.as_str(),
        expired.subscription_id.as_str(),
    ];
    ids.sort_unstable();
    assert_eq!(target_ids(&targets), ids);
    assert!(targets.iter().all(|t| t.url == second.url("/other")));

    // Without verification a move keeps the status.
    ok(admin
        .tenants()
        .update_tenant(UpdateTenantRequest {
            tenant: Some(Tenant {
                tenant_id: TENANT.to_owned(),
                settings: Some(Default::default()),
                ..Default::default()
            }),
            update_mask: mask(&["settings.require_verification"]),
        })
        .await);
    let back = ok(subs
        .update_subscription(move_to(&active.subscription_id, ENDPOINT, false))
        .await);
    assert_eq!(status_of(&back), SubStatus::Active);
    server.stop().await;
}

/// A PENDING subscription moved to another endpoint cannot be confirmed
/// with the token sent to the first one: by RPC or link it answers as an
/// unknown token, and the subscription stays pending.
async fn a_token_sent_before_a_move_is_unknown(backend: Backend) {
    let (server, admin, first, _) = receiving_fixture(&backend, verifying(), &[]).await;
    let second = Receiver::start().await;
    create_endpoint(&admin, TENANT, OTHER, &second.url("/other")).await;
    let created = create_subscription(
        &admin,
        subscription(TENANT, ENDPOINT, &["command.completed"]),
    )
    .await;
    let id = created.subscription_id.clone();
    let before = first.confirmation(&id, 1).await;

    let mut subs = admin.subscriptions();
    let moved = ok(subs.update_subscription(move_to(&id, OTHER, false)).await);
    assert_eq!(status_of(&moved), SubStatus::PendingVerification);

    let unknown = expect_code(
        subs.confirm_subscription(confirm(&before.token)).await,
        Code::NotFound,
    );
    let tampered = expect_code(
        subs.confirm_subscription(confirm(&tamper(&before.token)))
            .await,
        Code::NotFound,
    );
    assert_eq!(unknown.message(), tampered.message());
    assert_eq!(http_get(&before.url).await, 404, "the old link is unknown");
    assert_eq!(
        status_of(&get_subscription(&admin, &id).await),
        SubStatus::PendingVerification
    );
    assert!(
        resolve(&admin, TENANT, "command.completed")
            .await
            .is_empty()
    );

    let after = second.confirmation(&id, 1).await;
    ok(subs.confirm_subscription(confirm(&after.token)).await);
    let targets = resolve(&admin, TENANT, "command.completed").await;
    assert_eq!(target_ids(&targets), [id.as_str()]);
    assert_eq!(targets[0].url, second.url("/other"));
    server.stop().await;
}

/// The revision of a write of no consequence.
async fn write_revision(admin: &Clients) -> i64 {
    let response = admin
        .subscriptions()
        .create_subscription(create_subscription_request(subscription(
            TENANT,
            ENDPOINT,
            &["command.completed"],
        )))
        .await
        .expect("create a subscription");
    revision(response.metadata())
}

/// The next transaction id PostgreSQL will hand out (the test's own read;
/// it takes none).
async fn next_transaction_id(db: &sea_orm::DatabaseConnection) -> i64 {
    use sea_orm::ConnectionTrait as _;
    db.query_one_raw(sea_orm::Statement::from_string(
        db.get_database_backend(),
        "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS next",
    ))
    .await
    .expect("read the next transaction id")
    .expect("a row")
    .try_get::<i64>("", "next")
    .expect("a number")
}

/// Unknown confirmation tokens, by link or by RPC, are answered from a
/// read and commit nothing: on SQLite the revisions of the writes around a
/// flood of them stay consecutive. On PostgreSQL, whose transaction ids are
/// shared with every other test running on the server, a round of links
/// must take far fewer ids than it has links, in the quietest of a few
/// rounds.
async fn unknown_confirmation_tokens_write_nothing(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    const ROUNDS: usize = 6;
    const LINKS: usize = 50;
    let random_token = || {
        format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        )
    };
    let link = |token: &str| format!("http://{}/v1/confirm?token={token}", server.http_addr);
    let client = reqwest::Client::new();
    let db = backend.database().await;
    let before = write_revision(&admin).await;
    let mut quietest = i64::MAX;
    for _ in 0..ROUNDS {
        let first = if backend.is_postgres() {
            next_transaction_id(&db).await
        } else {
            0
        };
        for _ in 0..LINKS {
            let answer = client
                .get(link(&random_token()))
                .send()
                .await
                .expect("GET a confirmation link");
            assert_eq!(answer.status().as_u16(), 404);
        }
        if backend.is_postgres() {
            quietest = quietest.min(next_transaction_id(&db).await - first);
        }
    }
    let mut subs = admin.subscriptions();
    for _ in 0..20 {
        let status = expect_code(
            subs.confirm_subscription(confirm(&random_token())).await,
            Code::NotFound,
        );
        assert_eq!(status.message(), "unknown confirmation token");
    }
    let after = write_revision(&admin).await;
    let _ = db.close().await;
    if backend.is_postgres() {
        println!("the quietest round of {LINKS} links saw {quietest} transaction ids go by");
        assert!(
            quietest < (LINKS / 2) as i64,
            "{quietest} transaction ids went by for {LINKS} unknown links"
        );
    } else {
        assert_eq!(after, before + 1, "no revision between the two writes");
    }
    server.stop().await;
}

backend_tests!(
    a_move_is_confirmed_anew_from_every_live_status,
    a_token_sent_before_a_move_is_unknown,
    unknown_confirmation_tokens_write_nothing,
);

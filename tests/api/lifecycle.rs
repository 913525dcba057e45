//! The subscription lifecycle as a receiver sees it: the signed confirmation
//! message and its link, ConfirmSubscription, ResendConfirmation, URL changes,
//! retries across failures and a restart, expiry and renewal, secret rotation
//! and PingEndpoint.
//!
//! The helpers at the end (a recording HTTP receiver that checks Standard
//! Webhooks signatures, polling with a deadline, Resolve and Watch
//! shorthands) are shared with `data_plane.rs` and `replicas.rs`.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use hookplane::proto::credential::Role;
use hookplane::proto::resolve_subscribers_response::Target;
use hookplane::proto::subscription::Status as SubStatus;
use hookplane::proto::tenant::Settings;
use hookplane::proto::watch_subscriptions_response::{Kind, Resource};
use hookplane::proto::{
    ConfirmSubscriptionRequest, CreateSubscriptionRequest, DeleteSubscriptionRequest, Endpoint,
    GetEndpointRequest, GetSubscriptionRequest, ListSubscriptionsRequest, PingEndpointRequest,
    PingEndpointResponse, RenewSubscriptionRequest, ResendConfirmationRequest,
    ResolveSubscribersRequest, ResolveSubscribersResponse, RotateEndpointSecretRequest,
    Subscription, UpdateEndpointRequest, UpdateSubscriptionRequest, WatchSubscriptionsRequest,
    WatchSubscriptionsResponse,
};
use http::{HeaderMap, Method, StatusCode, Uri};
use sha2::Sha256;
use tonic::{Code, Status};

use crate::harness::*;

const MAX_GRACE: i64 = 604_800;

pub fn verifying() -> Settings {
    Settings {
        require_verification: true,
        ..Default::default()
    }
}

/// A server allowed to deliver to loopback, tenant [`TENANT`] with
/// `settings`, the [`CATALOG`], and endpoint [`ENDPOINT`] at a recording
/// receiver. Returns the endpoint's signing secret too.
pub async fn receiving_fixture(
    backend: &Backend,
    settings: Settings,
    extra: &[&str],
) -> (TestServer, Clients, Receiver, String) {
    let mut flags = vec!["--allow-private-networks"];
    flags.extend_from_slice(extra);
    let server = backend.start_with(&flags).await;
    let admin = server.admin();
    create_tenant_with(&admin, TENANT, settings).await;
    create_catalog(&admin).await;
    let receiver = Receiver::start().await;
    let created = create_endpoint(&admin, TENANT, ENDPOINT, &receiver.url("/hooks/acme")).await;
    assert!(!created.secret.is_empty(), "create returns the secret");
    (server, admin, receiver, created.secret)
}

// ---------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------

async fn seed_001_confirmation_message_is_signed_and_its_link_activates(backend: Backend) {
    let (server, admin, receiver, secret) = receiving_fixture(&backend, verifying(), &[]).await;
    let created = ok(admin
        .subscriptions()
        .create_subscription(CreateSubscriptionRequest {
            ttl_seconds: 3600,
            ..create_subscription_request(subscription(
                TENANT,
                ENDPOINT,
                &["command.completed", "command.*"],
            ))
        })
        .await);
    assert_eq!(status_of(&created), SubStatus::PendingVerification);
    let id = created.subscription_id.clone();

    let c = receiver.confirmation(&id, 1).await;
    let d = &c.delivery;
    assert_eq!(d.method, "POST");
    assert_eq!(d.path, "/hooks/acme");
    assert!(
        d.header("content-type").starts_with("application/json"),
        "content-type {:?}",
        d.header("content-type")
    );
    d.assert_signed_with(&[&secret]);
    let body = &c.body;
    assert_eq!(body["type"], "Confirmation", "{body}");
    let message = body["message"].as_str().expect("message is a string");
    uuid::Uuid::parse_str(message).expect("message is a UUID");
    let sent = body["sent_ts"].as_f64().expect("sent_ts is a number");
    assert!(
        (sent - unix_now() as f64).abs() < 60.0,
        "sent_ts {sent} is about now"
    );
    let link_base = format!("http://{}/v1/confirm?token=", server.http_addr);
    assert!(
        c.url.starts_with(&link_base),
        "confirmation_url {} is served by the HTTP listener",
        c.url
    );
    let s = &body["subscription"];
    assert_eq!(s["subscription_id"], id.as_str());
    assert_eq!(s["account"], TENANT);
    assert_eq!(
        s["topic"], "command.completed",
        "topic is the first pattern"
    );
    assert_eq!(
        s["event_types"],
        serde_json::json!(["command.completed", "command.*"])
    );
    let validity = s["validity_ts"].as_f64().expect("validity_ts is set");
    let expire = created.expire_time.as_ref().expect("ttl sets expire_time");
    let expected = expire.seconds as f64 + f64::from(expire.nanos) / 1e9;
    assert!(
        (validity - expected).abs() < 0.002,
        "validity_ts {validity} is expire_time {expected}"
    );

    assert!(
        resolve(&admin, TENANT, "command.completed")
            .await
            .is_empty(),
        "a pending subscription never resolves"
    );
    assert_eq!(http_get(&c.url).await, 200, "GET on the link confirms");
    assert_eq!(
        status_of(&get_subscription(&admin, &id).await),
        SubStatus::Active
    );
    let targets = resolve(&admin, TENANT, "command.completed").await;
    assert_eq!(target_ids(&targets), [id.as_str()], "resolves at once");
    assert_eq!(targets[0].matched_pattern, "command.completed");

    assert_eq!(http_get(&c.url).await, 410, "a used link is gone");
    assert_eq!(
        status_of(&get_subscription(&admin, &id).await),
        SubStatus::Active
    );
    let unknown = format!("{link_base}{}", tamper(&c.token));
    assert_eq!(http_get(&unknown).await, 404, "unknown token");
    assert_eq!(http_get(&link_base).await, 400, "empty token");
    assert_eq!(
        http_get(&format!("http://{}/v1/confirm", server.http_addr)).await,
        400,
        "no token"
    );
    assert_eq!(
        http_get(&format!("{link_base}not%20a%20token")).await,
        400,
        "malformed token"
    );
    server.stop().await;
}

async fn confirm_subscription_rpc_takes_the_token(backend: Backend) {
    let (server, admin, receiver, _) = receiving_fixture(&backend, verifying(), &[]).await;
    let created = create_subscription(&admin, subscription(TENANT, ENDPOINT, &["*"])).await;
    assert_eq!(status_of(&created), SubStatus::PendingVerification);
    let id = created.subscription_id.clone();
    let c = receiver.confirmation(&id, 1).await;
    assert!(
        c.body["subscription"]["validity_ts"].is_null(),
        "a subscription that never expires has validity_ts null: {}",
        c.body
    );
    let confirm = |token: &str| ConfirmSubscriptionRequest {
        token: token.to_owned(),
    };

    create_tenant(&admin, "other").await;
    let stranger = server.clients(&create_credential(&admin, "other", Role::TenantAdmin).await);
    expect_code(
        stranger
            .subscriptions()
            .confirm_subscription(confirm(&c.token))
            .await,
        Code::PermissionDenied,
    );
    let reader = server.clients(&create_credential(&admin, TENANT, Role::Reader).await);
    expect_code(
        reader
            .subscriptions()
            .confirm_subscription(confirm(&c.token))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(
        status_of(&get_subscription(&admin, &id).await),
        SubStatus::PendingVerification,
        "refused calls change nothing"
    );

    let owner = server.clients(&create_credential(&admin, TENANT, Role::TenantAdmin).await);
    let response = owner
        .subscriptions()
        .confirm_subscription(confirm(&c.token))
        .await
        .expect("confirm with the token");
    assert!(revision(response.metadata()) > 0);
    let confirmed = response.into_inner();
    assert_eq!(confirmed.subscription_id, id);
    assert_eq!(status_of(&confirmed), SubStatus::Active);
    assert_eq!(
        target_ids(&resolve(&admin, TENANT, "alarm-raised").await),
        [id.as_str()]
    );

    let mut subs = owner.subscriptions();
    expect_code(
        subs.confirm_subscription(confirm(&c.token)).await,
        Code::FailedPrecondition,
    );
    assert_eq!(http_get(&c.url).await, 410, "the link is used up too");
    expect_code(
        subs.confirm_subscription(confirm(&tamper(&c.token))).await,
        Code::NotFound,
    );
    expect_invalid(
        subs.confirm_subscription(confirm("not a token!")).await,
        "token",
    );
    expect_invalid(subs.confirm_subscription(confirm("")).await, "token");
    server.stop().await;
}

async fn resend_confirmation_kills_the_old_token(backend: Backend) {
    let (server, admin, receiver, secret) = receiving_fixture(&backend, verifying(), &[]).await;
    let created = create_subscription(
        &admin,
        subscription(TENANT, ENDPOINT, &["command.accepted"]),
    )
    .await;
    let id = created.subscription_id.clone();
    let first = receiver.confirmation(&id, 1).await;
    let resend = || ResendConfirmationRequest {
        tenant_id: TENANT.to_owned(),
        subscription_id: id.clone(),
    };

    let resent = ok(admin.subscriptions().resend_confirmation(resend()).await);
    assert_eq!(resent.subscription_id, id);
    assert_eq!(status_of(&resent), SubStatus::PendingVerification);
    let second = receiver.confirmation(&id, 2).await;
    second.delivery.assert_signed_with(&[&secret]);
    assert_ne!(second.token, first.token, "a resend issues a new token");
    assert_ne!(second.body["message"], first.body["message"]);

    assert_eq!(http_get(&first.url).await, 410, "the old link is dead");
    expect_code(
        admin
            .subscriptions()
            .confirm_subscription(ConfirmSubscriptionRequest {
                token: first.token.clone(),
            })
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(
        status_of(&get_subscription(&admin, &id).await),
        SubStatus::PendingVerification
    );
    assert_eq!(http_get(&second.url).await, 200, "the new link works");
    assert_eq!(
        status_of(&get_subscription(&admin, &id).await),
        SubStatus::Active
    );

    let mut subs = admin.subscriptions();
    expect_code(
        subs.resend_confirmation(resend()).await,
        Code::FailedPrecondition,
    );
    expect_code(
        subs.resend_confirmation(ResendConfirmationRequest {
            tenant_id: TENANT.to_owned(),
            subscription_id: "no-such-subscription".to_owned(),
        })
        .await,
        Code::NotFound,
    );
    server.stop().await;
}

async fn endpoint_url_change_sends_live_subscriptions_through_verification(backend: Backend) {
    let (server, admin, first, secret) = receiving_fixture(&backend, verifying(), &[]).await;
    let mut confirmed = Vec::new();
    let patterns: [&[&str]; 3] = [&["command.*"], &["alarm-raised"], &["*"]];
    for patterns in patterns {
        let s = create_subscription(&admin, subscription(TENANT, ENDPOINT, patterns)).await;
        let c = first.confirmation(&s.subscription_id, 1).await;
        assert_eq!(http_get(&c.url).await, 200);
        confirmed.push(s.subscription_id);
    }
    let [active, disabled, deleted] = <[String; 3]>::try_from(confirmed).expect("three");
    set_subscription_status(&admin, &disabled, SubStatus::Disabled).await;
    ok(admin
        .subscriptions()
        .delete_subscription(DeleteSubscriptionRequest {
            tenant_id: TENANT.to_owned(),
            subscription_id: deleted.clone(),
            etag: String::new(),
        })
        .await);

    // Only a new URL needs proof.
    update_endpoint(
        &admin,
        Endpoint {
            description: "renamed".to_owned(),
            ..endpoint(TENANT, ENDPOINT, "")
        },
        &["description"],
    )
    .await;
    assert_eq!(
        status_of(&get_subscription(&admin, &active).await),
        SubStatus::Active
    );

    let second = Receiver::start().await;
    let moved = second.url("/moved");
    let updated = update_endpoint(&admin, endpoint(TENANT, ENDPOINT, &moved), &["url"]).await;
    assert_eq!(updated.url, moved);
    for id in [&active, &disabled] {
        assert_eq!(
            status_of(&get_subscription(&admin, id).await),
            SubStatus::PendingVerification,
            "live subscription {id} is verified again"
        );
    }
    assert_eq!(
        status_of(&get_subscription(&admin, &deleted).await),
        SubStatus::Deleted
    );
    assert!(
        resolve(&admin, TENANT, "command.completed")
            .await
            .is_empty(),
        "nothing resolves until the new URL is confirmed"
    );

    let again = second.confirmation(&active, 1).await;
    assert_eq!(again.delivery.path, "/moved");
    again.delivery.assert_signed_with(&[&secret]);
    second.confirmation(&disabled, 1).await;
    assert_eq!(http_get(&again.url).await, 200);
    assert_eq!(
        status_of(&get_subscription(&admin, &active).await),
        SubStatus::Active
    );
    let targets = resolve(&admin, TENANT, "command.completed").await;
    assert_eq!(target_ids(&targets), [active.as_str()]);
    assert_eq!(targets[0].url, moved);

    assert!(
        second.confirmations_for(&deleted).is_empty(),
        "a deleted subscription is not verified again"
    );
    for id in [&active, &disabled, &deleted] {
        assert_eq!(
            first.confirmations_for(id).len(),
            1,
            "the old URL got only the original confirmation of {id}"
        );
    }
    server.stop().await;
}

async fn confirmation_is_retried_until_the_receiver_recovers(backend: Backend) {
    let (server, admin, receiver, secret) = receiving_fixture(&backend, verifying(), &[]).await;
    receiver.reply_next([Reply::Status(500), Reply::Status(503)]);
    let created = create_subscription(
        &admin,
        subscription(TENANT, ENDPOINT, &["command.completed"]),
    )
    .await;
    let id = created.subscription_id.clone();

    let last = receiver.confirmation(&id, 3).await;
    let attempts = receiver.confirmations_for(&id);
    let answered: Vec<u16> = attempts.iter().map(|c| c.delivery.answered).collect();
    assert_eq!(answered[..3], [500, 503, 200], "retried until delivered");
    for attempt in &attempts {
        attempt.delivery.assert_signed_with(&[&secret]);
        assert_eq!(
            attempt.token, last.token,
            "every attempt is the same message"
        );
        assert_eq!(attempt.body["message"], last.body["message"]);
        assert_eq!(
            attempt.delivery.header("webhook-id"),
            last.delivery.header("webhook-id"),
            "a retry keeps its webhook-id"
        );
    }
    assert_eq!(http_get(&last.url).await, 200);
    assert_eq!(
        status_of(&get_subscription(&admin, &id).await),
        SubStatus::Active
    );
    server.stop().await;
}

async fn confirmation_survives_a_restart_between_failed_send_and_retry(backend: Backend) {
    let (server, admin, receiver, secret) = receiving_fixture(&backend, verifying(), &[]).await;
    receiver.set_default(Reply::Status(500));
    let created = create_subscription(
        &admin,
        subscription(TENANT, ENDPOINT, &["command.completed"]),
    )
    .await;
    let id = created.subscription_id.clone();
    let failed = receiver.confirmation(&id, 1).await;
    assert_eq!(failed.delivery.answered, 500);
    // The server records the failed attempt (and its backoff) before it
    // stops, so the retry after the restart is the queued one.
    eventually("the failed attempt to be recorded", DEADLINE, || {
        recorded_attempts(&backend, &id)
    })
    .await;
    server.stop().await;

    receiver.set_default(Reply::Status(200));
    let server = backend.start_with(&["--allow-private-networks"]).await;
    let admin = server.admin();
    let delivered = receiver
        .wait_for_confirmation(&id, "a delivered confirmation after the restart", |c| {
            c.delivery.answered == 200
        })
        .await;
    delivered.delivery.assert_signed_with(&[&secret]);
    assert_eq!(
        delivered.token, failed.token,
        "the queued message, not a new one"
    );
    assert_eq!(delivered.body["message"], failed.body["message"]);

    // The link names the old listener; its token works on the new one.
    let link = format!(
        "http://{}/v1/confirm?token={}",
        server.http_addr, delivered.token
    );
    assert_eq!(http_get(&link).await, 200);
    assert_eq!(
        status_of(&get_subscription(&admin, &id).await),
        SubStatus::Active
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Expiry and renewal
// ---------------------------------------------------------------------------

async fn seed_001_refresh_revives_an_expired_subscription(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let response = admin
        .subscriptions()
        .create_subscription(CreateSubscriptionRequest {
            ttl_seconds: 2,
            ..create_subscription_request(subscription(TENANT, ENDPOINT, &["command.completed"]))
        })
        .await
        .expect("create with a two-second TTL");
    let created_revision = revision(response.metadata());
    let created = response.into_inner();
    let id = created.subscription_id.clone();
    assert_eq!(status_of(&created), SubStatus::Active);
    assert_eq!(
        target_ids(&resolve(&admin, TENANT, "command.completed").await),
        [id.as_str()]
    );

    sleep_past(created.expire_time.as_ref().expect("expire_time")).await;
    assert!(
        resolve(&admin, TENANT, "command.completed")
            .await
            .is_empty(),
        "an expired subscription never resolves, sweeper or not"
    );
    assert_eq!(
        status_of(&get_subscription(&admin, &id).await),
        SubStatus::Expired
    );
    let listed = ok(admin
        .subscriptions()
        .list_subscriptions(ListSubscriptionsRequest {
            tenant_id: TENANT.to_owned(),
            ..Default::default()
        })
        .await);
    assert_eq!(listed.subscriptions.len(), 1);
    assert_eq!(status_of(&listed.subscriptions[0]), SubStatus::Expired);

    // The sweeper records the expiry as a change.
    let mut watch = Watch::open(&admin, TENANT, created_revision).await;
    let expired = watch.next_change().await;
    assert_eq!(kind_of(&expired), Kind::Upsert);
    let s = subscription_of(&expired);
    assert_eq!(s.subscription_id, id);
    assert_eq!(status_of(s), SubStatus::Expired);

    let response = admin
        .subscriptions()
        .renew_subscription(RenewSubscriptionRequest {
            tenant_id: TENANT.to_owned(),
            subscription_id: id.clone(),
            ttl_seconds: 3600,
        })
        .await
        .expect("renew an expired subscription");
    let renewed_revision = revision(response.metadata());
    let renewed = response.into_inner();
    assert_eq!(status_of(&renewed), SubStatus::Active, "renew revives it");
    assert_about(secs(&renewed.expire_time), unix_now() + 3600);
    assert_eq!(
        target_ids(&resolve(&admin, TENANT, "command.completed").await),
        [id.as_str()],
        "resolves again at once"
    );
    let revived = watch.next_change().await;
    assert_eq!(revived.revision, renewed_revision);
    assert_eq!(status_of(subscription_of(&revived)), SubStatus::Active);

    let mut subs = admin.subscriptions();
    let renew = |ttl_seconds: i64, subscription_id: &str| RenewSubscriptionRequest {
        tenant_id: TENANT.to_owned(),
        subscription_id: subscription_id.to_owned(),
        ttl_seconds,
    };
    expect_invalid(subs.renew_subscription(renew(-1, &id)).await, "ttl_seconds");
    expect_code(
        subs.renew_subscription(renew(60, "no-such-subscription"))
            .await,
        Code::NotFound,
    );
    ok(subs
        .delete_subscription(DeleteSubscriptionRequest {
            tenant_id: TENANT.to_owned(),
            subscription_id: id.clone(),
            etag: String::new(),
        })
        .await);
    expect_code(
        subs.renew_subscription(renew(60, &id)).await,
        Code::FailedPrecondition,
    );
    assert_eq!(
        status_of(&get_subscription(&admin, &id).await),
        SubStatus::Deleted
    );
    assert!(
        resolve(&admin, TENANT, "command.completed")
            .await
            .is_empty()
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Rotation
// ---------------------------------------------------------------------------

async fn rotation_keeps_the_old_secret_for_the_grace_period(backend: Backend) {
    let (server, admin, receiver, first_secret) =
        receiving_fixture(&backend, Settings::default(), &[]).await;
    let ep2 = create_endpoint(&admin, TENANT, "ep2", &receiver.url("/ep2")).await;
    for endpoint_id in [ENDPOINT, "ep2"] {
        create_subscription(
            &admin,
            subscription(TENANT, endpoint_id, &["command.completed"]),
        )
        .await;
    }
    let dispatcher = server.clients(&create_credential(&admin, TENANT, Role::Dispatcher).await);
    assert_eq!(
        secrets_of(&dispatcher, ENDPOINT).await,
        [first_secret.as_str()]
    );

    let response = admin
        .endpoints()
        .rotate_endpoint_secret(rotate(ENDPOINT, "", 0))
        .await
        .expect("rotate with the default grace");
    assert!(revision(response.metadata()) > 0);
    let rotated = response.into_inner();
    assert!(
        rotated.secret.starts_with("whsec_"),
        "generated secret {:?}",
        rotated.secret
    );
    assert_ne!(rotated.secret, first_secret);
    assert_eq!(
        secrets_of(&dispatcher, ENDPOINT).await,
        [rotated.secret.as_str(), first_secret.as_str()],
        "newest first, the old one during the grace period"
    );
    let pinged = ping(&admin, ENDPOINT).await;
    assert_eq!(pinged.status_code, 200);
    let delivery = receiver.last_delivery_to("/hooks/acme");
    delivery.assert_signed_with(&[&rotated.secret, &first_secret]);

    let mine = "rotated-by-hand-0123456789";
    let response = admin
        .endpoints()
        .rotate_endpoint_secret(rotate("ep2", mine, 1))
        .await
        .expect("rotate with a one-second grace");
    let rotated_revision = revision(response.metadata());
    let rotated2 = response.into_inner();
    assert_eq!(rotated2.secret, mine, "a caller-chosen secret is used");
    assert_eq!(
        secrets_of(&dispatcher, "ep2").await,
        [mine, ep2.secret.as_str()]
    );

    let grace_end = prost_types::Timestamp {
        seconds: secs(&rotated2.update_time) + 1,
        nanos: rotated2.update_time.as_ref().expect("update_time").nanos,
    };
    sleep_past(&grace_end).await;
    assert_eq!(
        secrets_of(&dispatcher, "ep2").await,
        [mine],
        "the old secret is gone once the grace period ends"
    );
    assert_eq!(ping(&admin, "ep2").await.status_code, 200);
    receiver
        .last_delivery_to("/ep2")
        .assert_signed_with(&[mine]);
    // It leaves storage too: the change is streamed with the one secret left.
    let mut watch = Watch::open(&dispatcher, TENANT, rotated_revision).await;
    let swept = watch
        .change_where("an endpoint change with only the new secret", |m| {
            matches!(&m.resource, Some(Resource::Endpoint(e))
                if e.endpoint_id == "ep2" && e.signing_secrets == [mine])
        })
        .await;
    assert_eq!(kind_of(&swept), Kind::Upsert);

    let got = ok(admin
        .endpoints()
        .get_endpoint(GetEndpointRequest {
            tenant_id: TENANT.to_owned(),
            endpoint_id: ENDPOINT.to_owned(),
        })
        .await);
    assert!(got.secret.is_empty(), "Get never shows a secret");
    assert!(got.signing_secrets.is_empty(), "Get never shows secrets");
    server.stop().await;
}

async fn rotation_bad_input(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    create_subscription(
        &admin,
        subscription(TENANT, ENDPOINT, &["command.completed"]),
    )
    .await;
    let before = secrets_of(&admin, ENDPOINT).await;
    assert_eq!(before.len(), 1);
    let mut endpoints = admin.endpoints();
    expect_invalid(
        endpoints
            .rotate_endpoint_secret(rotate(ENDPOINT, "", MAX_GRACE + 1))
            .await,
        "grace_period_seconds",
    );
    expect_invalid(
        endpoints
            .rotate_endpoint_secret(rotate(ENDPOINT, "", -1))
            .await,
        "grace_period_seconds",
    );
    expect_invalid(
        endpoints
            .rotate_endpoint_secret(rotate(ENDPOINT, "short", 0))
            .await,
        "secret",
    );
    expect_code(
        endpoints
            .rotate_endpoint_secret(rotate("no-such-endpoint", "", 0))
            .await,
        Code::NotFound,
    );
    let reader = server.clients(&create_credential(&admin, TENANT, Role::Reader).await);
    expect_code(
        reader
            .endpoints()
            .rotate_endpoint_secret(rotate(ENDPOINT, "", 0))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(
        secrets_of(&admin, ENDPOINT).await,
        before,
        "refused rotations change nothing"
    );

    let longest = ok(endpoints
        .rotate_endpoint_secret(rotate(ENDPOINT, "", MAX_GRACE))
        .await);
    assert_eq!(
        secrets_of(&admin, ENDPOINT).await,
        [longest.secret.as_str(), before[0].as_str()],
        "seven days is the longest grace"
    );

    create_endpoint(&admin, TENANT, "off", "https://hooks.example.com/off").await;
    update_endpoint(
        &admin,
        Endpoint {
            enabled: Some(false),
            ..endpoint(TENANT, "off", "")
        },
        &["enabled"],
    )
    .await;
    expect_code(
        endpoints.rotate_endpoint_secret(rotate("off", "", 0)).await,
        Code::FailedPrecondition,
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Ping
// ---------------------------------------------------------------------------

async fn ping_reports_status_and_latency(backend: Backend) {
    let (server, admin, receiver, secret) =
        receiving_fixture(&backend, Settings::default(), &[]).await;
    let response = ping(&admin, ENDPOINT).await;
    assert_eq!(response.status_code, 200, "{response:?}");
    assert!(response.error.is_empty(), "{response:?}");
    let latency = response.latency.expect("latency is set");
    assert!(
        latency.seconds >= 0 && latency.nanos >= 0 && (latency.seconds > 0 || latency.nanos > 0),
        "latency {latency:?}"
    );
    let d = receiver.last_delivery_to("/hooks/acme");
    assert_eq!(d.method, "POST");
    d.assert_signed_with(&[&secret]);
    assert_eq!(d.json()["type"], "webhook.ping", "{}", d.json());
    expect_code(
        admin
            .endpoints()
            .ping_endpoint(PingEndpointRequest {
                tenant_id: TENANT.to_owned(),
                endpoint_id: "no-such-endpoint".to_owned(),
            })
            .await,
        Code::NotFound,
    );
    server.stop().await;
}

async fn ping_failures_are_data_not_errors(backend: Backend) {
    let (server, admin, receiver, _) = receiving_fixture(
        &backend,
        Settings::default(),
        &["--delivery-timeout-secs", "2"],
    )
    .await;
    let ping_at = |endpoint_id: &'static str, url: String| {
        let admin = admin.clone();
        async move {
            create_endpoint(&admin, TENANT, endpoint_id, &url).await;
            ping(&admin, endpoint_id).await
        }
    };

    let unavailable = Receiver::start().await;
    unavailable.set_default(Reply::Status(503));
    let response = ping_at("unavailable", unavailable.url("/")).await;
    assert_eq!(response.status_code, 503, "{response:?}");
    assert!(response.error.is_empty(), "a response is not an error");
    assert_eq!(unavailable.deliveries().len(), 1);

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let response = ping_at("closed", format!("http://{closed}/hook")).await;
    assert_eq!(response.status_code, 0, "{response:?}");
    assert!(!response.error.is_empty(), "a connection error is reported");

    let target = Receiver::start().await;
    let redirect = Receiver::start().await;
    redirect.set_default(Reply::Redirect(target.url("/stolen")));
    let response = ping_at("redirect", redirect.url("/")).await;
    assert_eq!(response.status_code, 302, "{response:?}");
    assert!(
        target.deliveries().is_empty(),
        "a redirect to a private address is not followed"
    );

    let hang = Receiver::start().await;
    hang.set_default(Reply::Hang);
    let response = ping_at("hang", hang.url("/")).await;
    assert_eq!(response.status_code, 0, "{response:?}");
    assert!(!response.error.is_empty(), "a timeout is reported");

    let huge = Receiver::start().await;
    huge.set_default(Reply::EndlessBody);
    let response = ping_at("huge", huge.url("/")).await;
    assert_eq!(response.status_code, 200, "{response:?}");

    // The receiver of the fixture endpoint still works after all that.
    assert_eq!(ping(&admin, ENDPOINT).await.status_code, 200);
    assert!(!receiver.deliveries().is_empty());
    server.stop().await;
}

async fn ping_to_a_host_name_resolving_to_loopback_is_refused(backend: Backend) {
    let Some(host) = loopback_host_name().await else {
        println!("skipped: no host name here resolves only to loopback");
        return;
    };
    let server = backend.start().await;
    let admin = server.admin();
    create_tenant(&admin, TENANT).await;
    let receiver = Receiver::start().await;
    let port = receiver.addr.port();
    expect_invalid(
        admin
            .endpoints()
            .create_endpoint(hookplane::proto::CreateEndpointRequest {
                endpoint: Some(endpoint(TENANT, "literal", &receiver.url("/"))),
                request_id: String::new(),
            })
            .await,
        "endpoint.url",
    );
    // A host name passes registration; the address it resolves to is
    // checked when the server connects.
    create_endpoint(&admin, TENANT, "named", &format!("http://{host}:{port}/")).await;
    let response = ping(&admin, "named").await;
    assert_eq!(response.status_code, 0, "{host}: {response:?}");
    assert!(!response.error.is_empty(), "{response:?}");
    assert!(
        receiver.deliveries().is_empty(),
        "nothing reached the loopback receiver through {host}"
    );
    server.stop().await;
}

/// A host name (other than `localhost`, which registration refuses by name)
/// that resolves to loopback addresses only.
async fn loopback_host_name() -> Option<String> {
    let mut candidates = vec!["localhost.localdomain".to_owned()];
    for file in ["/proc/sys/kernel/hostname", "/etc/hostname"] {
        if let Ok(name) = std::fs::read_to_string(file) {
            candidates.push(name.trim().to_owned());
        }
    }
    for name in candidates {
        let lower = name.to_ascii_lowercase();
        if name.is_empty() || lower == "localhost" || lower.ends_with(".localhost") {
            continue;
        }
        let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((name.as_str(), 80)).await {
            Ok(addrs) => addrs.collect(),
            Err(_) => continue,
        };
        if !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()) {
            return Some(name);
        }
    }
    None
}

backend_tests!(
    seed_001_confirmation_message_is_signed_and_its_link_activates,
    confirm_subscription_rpc_takes_the_token,
    resend_confirmation_kills_the_old_token,
    endpoint_url_change_sends_live_subscriptions_through_verification,
    confirmation_is_retried_until_the_receiver_recovers,
    confirmation_survives_a_restart_between_failed_send_and_retry,
    seed_001_refresh_revives_an_expired_subscription,
    rotation_keeps_the_old_secret_for_the_grace_period,
    rotation_bad_input,
    ping_reports_status_and_latency,
    ping_failures_are_data_not_errors,
    ping_to_a_host_name_resolving_to_loopback_is_refused,
);

// ---------------------------------------------------------------------------
// Shared helpers: RPC shorthands
// ---------------------------------------------------------------------------

/// How long a test waits for something asynchronous (a delivery, a change
/// reaching another replica) before failing.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Polls `probe` every 50 ms until it returns `Some`, failing after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            started.elapsed() < deadline,
            "gave up after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sleeps until the wall clock is a little past `t`.
pub async fn sleep_past(t: &prost_types::Timestamp) {
    let target = UNIX_EPOCH
        + Duration::new(
            u64::try_from(t.seconds).expect("timestamp after 1970"),
            u32::try_from(t.nanos).expect("nanos"),
        )
        + Duration::from_millis(20);
    if let Ok(wait) = target.duration_since(SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }
}

pub async fn resolve(clients: &Clients, tenant_id: &str, event_type: &str) -> Vec<Target> {
    resolve_answer(clients, tenant_id, event_type).await.targets
}

/// The whole ResolveSubscribers answer: the targets and the revision the
/// replica's index was at.
pub async fn resolve_answer(
    clients: &Clients,
    tenant_id: &str,
    event_type: &str,
) -> ResolveSubscribersResponse {
    ok(clients
        .subscriptions()
        .resolve_subscribers(ResolveSubscribersRequest {
            tenant_id: tenant_id.to_owned(),
            event_type: event_type.to_owned(),
            ..Default::default()
        })
        .await)
}

/// The subscription ids of `targets`, sorted.
pub fn target_ids(targets: &[Target]) -> Vec<&str> {
    let mut ids: Vec<&str> = targets.iter().map(|t| t.subscription_id.as_str()).collect();
    ids.sort_unstable();
    ids
}

/// The signing secrets Resolve gives for the endpoint's first target on
/// `command.completed`.
async fn secrets_of(clients: &Clients, endpoint_id: &str) -> Vec<String> {
    resolve(clients, TENANT, "command.completed")
        .await
        .into_iter()
        .find(|t| t.endpoint_id == endpoint_id)
        .unwrap_or_else(|| panic!("a target on {endpoint_id}"))
        .signing_secrets
}

pub async fn get_subscription(clients: &Clients, subscription_id: &str) -> Subscription {
    ok(clients
        .subscriptions()
        .get_subscription(GetSubscriptionRequest {
            tenant_id: TENANT.to_owned(),
            subscription_id: subscription_id.to_owned(),
        })
        .await)
}

pub async fn set_subscription_status(
    clients: &Clients,
    subscription_id: &str,
    status: SubStatus,
) -> Subscription {
    ok(clients
        .subscriptions()
        .update_subscription(UpdateSubscriptionRequest {
            subscription: Some(Subscription {
                tenant_id: TENANT.to_owned(),
                subscription_id: subscription_id.to_owned(),
                status: status as i32,
                ..Default::default()
            }),
            update_mask: mask(&["status"]),
            allow_missing: false,
        })
        .await)
}

pub async fn update_endpoint(clients: &Clients, endpoint: Endpoint, paths: &[&str]) -> Endpoint {
    ok(clients
        .endpoints()
        .update_endpoint(UpdateEndpointRequest {
            endpoint: Some(endpoint),
            update_mask: mask(paths),
            allow_missing: false,
        })
        .await)
}

fn rotate(
    endpoint_id: &str,
    secret: &str,
    grace_period_seconds: i64,
) -> RotateEndpointSecretRequest {
    RotateEndpointSecretRequest {
        tenant_id: TENANT.to_owned(),
        endpoint_id: endpoint_id.to_owned(),
        secret: secret.to_owned(),
        grace_period_seconds,
    }
}

async fn ping(clients: &Clients, endpoint_id: &str) -> PingEndpointResponse {
    ok(clients
        .endpoints()
        .ping_endpoint(PingEndpointRequest {
            tenant_id: TENANT.to_owned(),
            endpoint_id: endpoint_id.to_owned(),
        })
        .await)
}

/// The attempts recorded on a subscription's queued confirmation, once
/// there is at least one; read from the outbox behind the server's back.
async fn recorded_attempts(backend: &Backend, subscription_id: &str) -> Option<i64> {
    use sea_orm::{ConnectionTrait as _, Statement};
    let db = backend.database().await;
    let query = format!(
        "SELECT CAST(MAX(attempts) AS BIGINT) AS attempts FROM outbox WHERE subscription_id = '{subscription_id}'"
    );
    let attempts = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), query))
        .await
        .expect("read the outbox")
        .and_then(|row| row.try_get::<Option<i64>>("", "attempts").ok().flatten());
    let _ = db.close().await;
    attempts.filter(|n| *n >= 1)
}

/// GET `url` without following redirects; returns the status code.
pub async fn http_get(url: &str) -> u16 {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(DEADLINE)
        .build()
        .expect("HTTP client");
    client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .status()
        .as_u16()
}

// ---------------------------------------------------------------------------
// Shared helpers: Watch
// ---------------------------------------------------------------------------

pub fn kind_of(m: &WatchSubscriptionsResponse) -> Kind {
    Kind::try_from(m.kind).expect("known kind")
}

#[track_caller]
pub fn subscription_of(m: &WatchSubscriptionsResponse) -> &Subscription {
    match &m.resource {
        Some(Resource::Subscription(s)) => s,
        other => panic!("expected a subscription, got {other:?}"),
    }
}

#[track_caller]
pub fn endpoint_of(m: &WatchSubscriptionsResponse) -> &Endpoint {
    match &m.resource {
        Some(Resource::Endpoint(e)) => e,
        other => panic!("expected an endpoint, got {other:?}"),
    }
}

/// An open WatchSubscriptions stream.
pub struct Watch {
    stream: tonic::Streaming<WatchSubscriptionsResponse>,
}

impl Watch {
    pub async fn open(clients: &Clients, tenant_id: &str, since_revision: i64) -> Watch {
        let stream = ok(clients
            .subscriptions()
            .watch_subscriptions(WatchSubscriptionsRequest {
                tenant_id: tenant_id.to_owned(),
                since_revision,
                progress_heartbeats: false,
            })
            .await);
        Watch { stream }
    }

    /// A watch on a stream the caller opened itself.
    pub fn from_stream(stream: tonic::Streaming<WatchSubscriptionsResponse>) -> Watch {
        Watch { stream }
    }

    /// Whatever the stream yields within `wait` (a message, its end as
    /// `Ok(None)`, or its error); `None` when nothing came.
    pub async fn try_next_within(
        &mut self,
        wait: Duration,
    ) -> Option<Result<Option<WatchSubscriptionsResponse>, Status>> {
        tokio::time::timeout(wait, self.stream.message()).await.ok()
    }

    /// The next message; heartbeats come every 10 s, so waiting a little
    /// longer than that always yields one.
    pub async fn next(&mut self) -> WatchSubscriptionsResponse {
        match tokio::time::timeout(Duration::from_secs(15), self.stream.message()).await {
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None)) => panic!("the watch stream ended"),
            Ok(Err(status)) => panic!(
                "the watch stream failed: {:?} {}",
                status.code(),
                status.message()
            ),
            Err(_) => panic!("no watch message within 15 s"),
        }
    }

    /// Reads a snapshot: the SNAPSHOT messages and the revision of the
    /// HEARTBEAT that ends it.
    pub async fn snapshot(&mut self) -> (Vec<WatchSubscriptionsResponse>, i64) {
        let mut items = Vec::new();
        loop {
            let m = self.next().await;
            match kind_of(&m) {
                Kind::Snapshot => items.push(m),
                Kind::Heartbeat => return (items, m.revision),
                other => panic!("expected SNAPSHOT or HEARTBEAT, got {other:?}: {m:?}"),
            }
        }
    }

    /// The next UPSERT or DELETE, skipping heartbeats.
    pub async fn next_change(&mut self) -> WatchSubscriptionsResponse {
        self.next_change_within(DEADLINE)
            .await
            .unwrap_or_else(|| panic!("no change on the watch within {DEADLINE:?}"))
    }

    /// The next UPSERT or DELETE within `wait`, skipping heartbeats; `None`
    /// when none came.
    pub async fn next_change_within(
        &mut self,
        wait: Duration,
    ) -> Option<WatchSubscriptionsResponse> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let m = match tokio::time::timeout_at(deadline, self.stream.message()).await {
                Err(_) => return None,
                Ok(Ok(Some(m))) => m,
                Ok(Ok(None)) => panic!("the watch stream ended"),
                Ok(Err(status)) => panic!(
                    "the watch stream failed: {:?} {}",
                    status.code(),
                    status.message()
                ),
            };
            match kind_of(&m) {
                Kind::Heartbeat => {}
                Kind::Upsert | Kind::Delete => return Some(m),
                other => panic!("expected a change, got {other:?}: {m:?}"),
            }
        }
    }

    /// Reads until the stream fails, which it must within `wait`: the
    /// messages that came first and the status it ended with.
    pub async fn failure_within(
        &mut self,
        wait: Duration,
    ) -> (Vec<WatchSubscriptionsResponse>, Status) {
        let deadline = tokio::time::Instant::now() + wait;
        let mut messages = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.stream.message()).await {
                Err(_) => panic!("the watch did not end within {wait:?}; got {messages:?}"),
                Ok(Ok(Some(m))) => messages.push(m),
                Ok(Ok(None)) => panic!("the watch ended without a status; got {messages:?}"),
                Ok(Err(status)) => return (messages, status),
            }
        }
    }

    /// The first change that satisfies `pred`, skipping others.
    pub async fn change_where(
        &mut self,
        what: &str,
        pred: impl Fn(&WatchSubscriptionsResponse) -> bool,
    ) -> WatchSubscriptionsResponse {
        let started = Instant::now();
        loop {
            assert!(started.elapsed() < DEADLINE, "no {what} on the watch");
            let m = self.next_change().await;
            if pred(&m) {
                return m;
            }
        }
    }
}

/// The error of a watch, whether the call or its first message carries it.
pub async fn watch_error(clients: &Clients, tenant_id: &str, since_revision: i64) -> Status {
    let response = clients
        .subscriptions()
        .watch_subscriptions(WatchSubscriptionsRequest {
            tenant_id: tenant_id.to_owned(),
            since_revision,
            progress_heartbeats: false,
        })
        .await;
    match response {
        Err(status) => status,
        Ok(response) => {
            let mut stream = response.into_inner();
            match tokio::time::timeout(DEADLINE, stream.message()).await {
                Ok(Err(status)) => status,
                other => panic!("expected the watch to fail, got {other:?}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Shared helpers: a recording webhook receiver
// ---------------------------------------------------------------------------

/// What the receiver answers a request with.
#[derive(Clone, Debug)]
pub enum Reply {
    Status(u16),
    /// 302 to this location.
    Redirect(String),
    /// Never answers.
    Hang,
    /// 200 with a body that never ends.
    EndlessBody,
}

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The status it was answered with (0: never answered).
    pub answered: u16,
}

impl Delivery {
    #[track_caller]
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
            .to_str()
            .expect("visible ASCII header")
    }

    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// What a Standard Webhooks receiver checks: a fresh `webhook-timestamp`
    /// and, in `webhook-signature`, exactly one valid `v1,` entry per
    /// secret (in any order) over `id.timestamp.body`.
    #[track_caller]
    pub fn assert_signed_with(&self, secrets: &[&str]) {
        let id = self.header("webhook-id");
        assert!(!id.is_empty(), "webhook-id is set");
        let timestamp = self.header("webhook-timestamp");
        let seconds: i64 = timestamp.parse().expect("numeric webhook-timestamp");
        assert!(
            (seconds - unix_now()).abs() <= 300,
            "webhook-timestamp {seconds} is fresh"
        );
        let mut entries: Vec<String> = self
            .header("webhook-signature")
            .split(' ')
            .map(str::to_owned)
            .collect();
        let mut expected: Vec<String> = secrets
            .iter()
            .map(|s| webhook_signature(s, id, timestamp, &self.body))
            .collect();
        entries.sort();
        expected.sort();
        assert_eq!(
            entries,
            expected,
            "webhook-signature must carry one valid v1 entry per live secret ({} secrets)",
            secrets.len()
        );
    }
}

/// The HMAC key of an endpoint secret: the bytes after `whsec_`, else the
/// UTF-8 bytes.
fn webhook_key(secret: &str) -> Vec<u8> {
    match secret.strip_prefix("whsec_") {
        Some(encoded) => STANDARD.decode(encoded).expect("whsec_ secrets are base64"),
        None => secret.as_bytes().to_vec(),
    }
}

fn webhook_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(&webhook_key(secret)).expect("any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// A confirmation message as received.
#[derive(Clone, Debug)]
pub struct Confirmation {
    pub delivery: Delivery,
    pub body: serde_json::Value,
    pub url: String,
    pub token: String,
}

impl Confirmation {
    fn parse(delivery: &Delivery) -> Option<Confirmation> {
        let body: serde_json::Value = serde_json::from_slice(&delivery.body).ok()?;
        if body["type"] != "Confirmation" {
            return None;
        }
        let url = body["confirmation_url"].as_str()?.to_owned();
        let token = url::Url::parse(&url)
            .expect("confirmation_url is a URL")
            .query_pairs()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
            .expect("confirmation_url carries a token");
        Some(Confirmation {
            delivery: delivery.clone(),
            body,
            url,
            token,
        })
    }

    fn subscription_id(&self) -> &str {
        self.body["subscription"]["subscription_id"]
            .as_str()
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct Script {
    next: VecDeque<Reply>,
    default: Option<Reply>,
}

#[derive(Default)]
struct ReceiverState {
    deliveries: Mutex<Vec<Delivery>>,
    script: Mutex<Script>,
}

/// An HTTP server on 127.0.0.1 that records every request and answers as
/// told (200 unless told otherwise).
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = {
        let mut script = state.script.lock().expect("receiver script");
        script
            .next
            .pop_front()
            .or_else(|| script.default.clone())
            .unwrap_or(Reply::Status(200))
    };
    let answered = match &reply {
        Reply::Status(code) => *code,
        Reply::Redirect(_) => 302,
        Reply::Hang => 0,
        Reply::EndlessBody => 200,
    };
    state
        .deliveries
        .lock()
        .expect("receiver deliveries")
        .push(Delivery {
            method: method.to_string(),
            path: uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default(),
            headers,
            body,
            answered,
        });
    match reply {
        Reply::Status(code) => StatusCode::from_u16(code)
            .expect("a valid status code")
            .into_response(),
        Reply::Redirect(location) => {
            (StatusCode::FOUND, [(http::header::LOCATION, location)]).into_response()
        }
        Reply::Hang => std::future::pending().await,
        Reply::EndlessBody => {
            let chunks = std::iter::repeat_with(|| Ok::<_, std::io::Error>(vec![b'x'; 64 * 1024]));
            Response::new(Body::from_stream(tokio_stream::iter(chunks)))
        }
    }
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("receiver address");
        let state = Arc::new(ReceiverState::default());
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, state, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers the next requests with `replies`, in order.
    pub fn reply_next(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state
            .script
            .lock()
            .expect("receiver script")
            .next
            .extend(replies);
    }

    /// Answers with `reply` once the scripted replies are used up.
    pub fn set_default(&self, reply: Reply) {
        self.state.script.lock().expect("receiver script").default = Some(reply);
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state
            .deliveries
            .lock()
            .expect("receiver deliveries")
            .clone()
    }

    #[track_caller]
    pub fn last_delivery_to(&self, path: &str) -> Delivery {
        self.deliveries()
            .into_iter()
            .rev()
            .find(|d| d.path == path)
            .unwrap_or_else(|| panic!("no request to {path}"))
    }

    /// Every confirmation message received for a subscription, in order.
    pub fn confirmations_for(&self, subscription_id: &str) -> Vec<Confirmation> {
        self.deliveries()
            .iter()
            .filter_map(Confirmation::parse)
            .filter(|c| c.subscription_id() == subscription_id)
            .collect()
    }

    /// Waits for the `nth` (1-based) confirmation message of a subscription.
    pub async fn confirmation(&self, subscription_id: &str, nth: usize) -> Confirmation {
        let what = format!("confirmation #{nth} of {subscription_id} at {}", self.addr);
        eventually(&what, DEADLINE, move || async move {
            self.confirmations_for(subscription_id)
                .into_iter()
                .nth(nth - 1)
        })
        .await
    }

    /// Waits for a confirmation message of a subscription that satisfies `pred`.
    pub async fn wait_for_confirmation(
        &self,
        subscription_id: &str,
        what: &str,
        pred: impl Fn(&Confirmation) -> bool,
    ) -> Confirmation {
        let pred = &pred;
        eventually(what, DEADLINE, move || async move {
            self.confirmations_for(subscription_id)
                .into_iter()
                .find(|c| pred(c))
        })
        .await
    }
}

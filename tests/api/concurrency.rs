//! Parallel creates with one key: the database decides, exactly one wins.

use hookplane::proto::{
    CreateTenantRequest, ListSubscriptionsRequest, ListTenantsRequest, Subscription, Tenant,
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
    let listed = ok(admin
        .subscriptions()
        .list_subscriptions(ListSubscriptionsRequest {
            tenant_id: TENANT.to_owned(),
            show_deleted: true,
            ..Default::default()
        })
        .await);
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

backend_tests!(
    parallel_subscriptions_with_one_name,
    parallel_tenants_with_one_id,
    parallel_distinct_creates_all_succeed,
);

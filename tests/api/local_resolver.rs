//! The client library's LocalResolver against the server's
//! ResolveSubscribers: on random write sequences (subscriptions created,
//! disabled, re-enabled and deleted; endpoints disabled and rotated;
//! tenants suspended; event types added), both answer the same targets at
//! the same revision. Plus expiry, and a resolver that loses its connection
//! and resumes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookplane::proto::credential::Role;
use hookplane::proto::subscription::Status as SubStatus;
use hookplane::proto::tenant::State as TenantState;
use hookplane::proto::{
    CreateEventTypeRequest, CreateSubscriptionRequest, DeleteSubscriptionRequest, Endpoint,
    ResolveSubscribersRequest, RotateEndpointSecretRequest, Subscription, Tenant,
    UpdateEndpointRequest, UpdateSubscriptionRequest, UpdateTenantRequest,
};
use hookplane_client::{Client, Credential, LocalResolver};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::harness::*;

/// Event types every comparison resolves: the catalog's, ones added during
/// the run, and one that is not in the catalog.
const NAMES: &[&str] = &[
    "command.accepted",
    "command.completed",
    "command.failed",
    "order.created",
    "order.paid",
    "not.in.catalog",
];

/// What subscriptions are made of; `order.paid` joins the catalog midway.
const PATTERNS: &[&str] = &[
    "command.accepted",
    "command.*",
    "*.completed",
    "order.*",
    "order.created",
    "*.*",
];

const ENDPOINTS: &[&str] = &[ENDPOINT, "ep2", "ep3"];

/// A resolver of the client library over its own connection to `address`.
async fn local(address: std::net::SocketAddr, cred: &Cred, tenant_id: &str) -> LocalResolver {
    let client = Client::connect(
        format!("http://{address}"),
        Credential::new(&cred.api_id, &cred.secret),
    )
    .await
    .expect("connect the client library");
    let resolver = LocalResolver::start(client.subscriptions(), tenant_id);
    tokio::time::timeout(Duration::from_secs(10), resolver.ready())
        .await
        .expect("the first snapshot within 10 s");
    resolver
}

/// Asserts that `resolver` answers every name as the server does, at the
/// same revision, once the server's follower has reached `written` (the
/// last write's `x-revision`): before, the server's answer may already hold
/// its own writes while naming an older revision.
async fn agree(
    server: &Clients,
    resolver: &LocalResolver,
    tenant_id: &str,
    written: i64,
    step: &str,
) -> usize {
    let mut compared = 0;
    for name in NAMES {
        let started = std::time::Instant::now();
        let answer = loop {
            let answer = ok(server
                .subscriptions()
                .resolve_subscribers(ResolveSubscribersRequest {
                    tenant_id: tenant_id.to_owned(),
                    event_type: (*name).to_owned(),
                    page_size: 1000,
                    page_token: String::new(),
                })
                .await);
            if answer.revision >= written {
                break answer;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{step}: the server's follower reaches {written}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        tokio::time::timeout(Duration::from_secs(5), resolver.wait_for(answer.revision))
            .await
            .unwrap_or_else(|_| {
                panic!("{step}: the resolver reaches revision {}", answer.revision)
            });
        let local = resolver
            .resolve(tenant_id, name)
            .unwrap_or_else(|| panic!("{step}: {tenant_id} is known locally"));
        assert_eq!(local.revision, answer.revision, "{step}: the same revision");
        let expected: Vec<_> = answer
            .targets
            .iter()
            .map(|t| {
                (
                    t.subscription_id.clone(),
                    t.endpoint_id.clone(),
                    t.name.clone(),
                    t.url.clone(),
                    t.matched_pattern.clone(),
                    t.signing_secrets.clone(),
                )
            })
            .collect();
        let found: Vec<_> = local
            .targets
            .into_iter()
            .map(|t| {
                (
                    t.subscription_id,
                    t.endpoint_id,
                    t.name,
                    t.url,
                    t.matched_pattern,
                    t.signing_secrets,
                )
            })
            .collect();
        assert_eq!(found, expected, "{step}: targets of {name}");
        compared += found.len();
    }
    compared
}

type WriteResult = Result<tonic::Response<()>, tonic::Status>;

/// A write's outcome without its message.
fn dropped<T>(result: Result<tonic::Response<T>, tonic::Status>) -> WriteResult {
    result.map(|r| {
        let (metadata, _, extensions) = r.into_parts();
        tonic::Response::from_parts(metadata, (), extensions)
    })
}

/// The `x-revision` of a write that must succeed.
fn written<T>(result: Result<tonic::Response<T>, tonic::Status>) -> i64 {
    match result {
        Ok(response) => revision(response.metadata()),
        Err(status) => panic!("expected OK, got {status:?}"),
    }
}

/// The `x-revision` of a random write, or `None` when the server's rules
/// refuse it (a write in a suspended tenant, a rotation of a disabled
/// endpoint).
fn attempt<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Option<i64> {
    match result {
        Ok(response) => Some(revision(response.metadata())),
        Err(status) if status.code() == tonic::Code::FailedPrecondition => None,
        Err(status) => panic!("expected OK, got {status:?}"),
    }
}

async fn set_subscription_status(admin: &Clients, id: &str, status: SubStatus) -> WriteResult {
    dropped(
        admin
            .subscriptions()
            .update_subscription(UpdateSubscriptionRequest {
                subscription: Some(Subscription {
                    tenant_id: TENANT.to_owned(),
                    subscription_id: id.to_owned(),
                    status: status as i32,
                    ..Default::default()
                }),
                update_mask: mask(&["status"]),
                ..Default::default()
            })
            .await,
    )
}

async fn set_endpoint_enabled(admin: &Clients, id: &str, enabled: bool) -> WriteResult {
    dropped(
        admin
            .endpoints()
            .update_endpoint(UpdateEndpointRequest {
                endpoint: Some(Endpoint {
                    tenant_id: TENANT.to_owned(),
                    endpoint_id: id.to_owned(),
                    enabled: Some(enabled),
                    ..Default::default()
                }),
                update_mask: mask(&["enabled"]),
                ..Default::default()
            })
            .await,
    )
}

async fn set_tenant_state(admin: &Clients, state: TenantState) -> WriteResult {
    dropped(
        admin
            .tenants()
            .update_tenant(UpdateTenantRequest {
                tenant: Some(Tenant {
                    tenant_id: TENANT.to_owned(),
                    state: state as i32,
                    ..Default::default()
                }),
                update_mask: mask(&["state"]),
            })
            .await,
    )
}

async fn local_resolver_agrees_with_the_server_on_random_writes(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    for ep in &ENDPOINTS[1..] {
        create_endpoint(
            &admin,
            TENANT,
            ep,
            &format!("https://hooks.example.com/{ep}"),
        )
        .await;
    }
    create_event_type(&admin, event_type("order.created")).await;
    let dispatcher = create_credential(&admin, TENANT, Role::Dispatcher).await;
    // A tenant-scoped resolver of a dispatcher, and a platform-wide one.
    let scoped = local(server.grpc_addr, &dispatcher, TENANT).await;
    let everyone = local(server.grpc_addr, &Cred::admin(), "").await;
    let as_dispatcher = server.clients(&dispatcher);

    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut live: Vec<String> = Vec::new();
    let mut catalog_changed = false;
    let mut last = 0;
    let mut compared = 0;
    for step in 0..60 {
        let what = rng.usize(0..100);
        let label = format!("seed {seed}, step {step} ({what})");
        let outcome = match what {
            0..=39 => {
                let n = rng.usize(1..=2);
                let mut patterns: Vec<&str> = (0..n)
                    .map(|_| PATTERNS[rng.usize(..PATTERNS.len())])
                    .collect();
                patterns.dedup();
                let mut s =
                    subscription(TENANT, ENDPOINTS[rng.usize(..ENDPOINTS.len())], &patterns);
                if rng.bool() {
                    s.name = format!("named-{step}");
                }
                let created = admin
                    .subscriptions()
                    .create_subscription(CreateSubscriptionRequest {
                        subscription: Some(s),
                        ..Default::default()
                    })
                    .await;
                if let Ok(response) = &created {
                    live.push(response.get_ref().subscription_id.clone());
                }
                attempt(created)
            }
            40..=54 if !live.is_empty() => {
                let id = live[rng.usize(..live.len())].clone();
                let status = if rng.bool() {
                    SubStatus::Disabled
                } else {
                    SubStatus::Active
                };
                attempt(set_subscription_status(&admin, &id, status).await)
            }
            55..=62 if !live.is_empty() => {
                let id = live.swap_remove(rng.usize(..live.len()));
                attempt(
                    admin
                        .subscriptions()
                        .delete_subscription(DeleteSubscriptionRequest {
                            tenant_id: TENANT.to_owned(),
                            subscription_id: id,
                            ..Default::default()
                        })
                        .await,
                )
            }
            63..=74 => {
                let ep = ENDPOINTS[rng.usize(..ENDPOINTS.len())];
                attempt(set_endpoint_enabled(&admin, ep, rng.bool()).await)
            }
            75..=84 => {
                let ep = ENDPOINTS[rng.usize(..ENDPOINTS.len())];
                attempt(
                    admin
                        .endpoints()
                        .rotate_endpoint_secret(RotateEndpointSecretRequest {
                            tenant_id: TENANT.to_owned(),
                            endpoint_id: ep.to_owned(),
                            secret: String::new(),
                            grace_period_seconds: 3600,
                        })
                        .await,
                )
            }
            85..=92 => {
                let state = if rng.bool() {
                    TenantState::Suspended
                } else {
                    TenantState::Active
                };
                attempt(set_tenant_state(&admin, state).await)
            }
            _ if !catalog_changed => {
                // A catalog change: a name `order.*` and `*.*` already match.
                catalog_changed = true;
                attempt(
                    admin
                        .event_types()
                        .create_event_type(CreateEventTypeRequest {
                            event_type: Some(event_type("order.paid")),
                            ..Default::default()
                        })
                        .await,
                )
            }
            _ => continue,
        };
        let Some(revision) = outcome else { continue };
        last = revision;
        if step % 3 == 0 {
            compared += agree(&as_dispatcher, &scoped, TENANT, last, &label).await;
            compared += agree(&admin, &everyone, TENANT, last, &label).await;
        }
    }
    let end = format!("seed {seed}, end");
    last = last.max(written(set_tenant_state(&admin, TenantState::Active).await));
    agree(&as_dispatcher, &scoped, TENANT, last, &end).await;
    agree(&admin, &everyone, TENANT, last, &end).await;
    assert!(compared > 0, "seed {seed}: some answers had targets");
    server.stop().await;
}

async fn local_resolver_drops_expired_subscriptions_and_rotated_secrets_on_time(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let resolver = local(server.grpc_addr, &Cred::admin(), TENANT).await;
    let lasting = create_subscription(&admin, subscription(TENANT, ENDPOINT, &["command.*"])).await;
    let brief = ok(admin
        .subscriptions()
        .create_subscription(CreateSubscriptionRequest {
            subscription: Some(subscription(TENANT, ENDPOINT, &["command.accepted"])),
            ttl_seconds: 2,
            ..Default::default()
        })
        .await);
    let rotated = written(
        admin
            .endpoints()
            .rotate_endpoint_secret(RotateEndpointSecretRequest {
                tenant_id: TENANT.to_owned(),
                endpoint_id: ENDPOINT.to_owned(),
                secret: String::new(),
                grace_period_seconds: 2,
            })
            .await,
    );
    agree(&admin, &resolver, TENANT, rotated, "before expiry").await;
    let before = resolver.resolve(TENANT, "command.accepted").expect("known");
    let ids: Vec<_> = before
        .targets
        .iter()
        .map(|t| t.subscription_id.as_str())
        .collect();
    assert!(ids.contains(&brief.subscription_id.as_str()));
    assert!(ids.contains(&lasting.subscription_id.as_str()));
    assert_eq!(
        before.targets[0].signing_secrets.len(),
        2,
        "both secrets during the grace period"
    );

    tokio::time::sleep(Duration::from_millis(2500)).await;
    agree(&admin, &resolver, TENANT, rotated, "after expiry").await;
    let after = resolver.resolve(TENANT, "command.accepted").expect("known");
    let ids: Vec<_> = after
        .targets
        .iter()
        .map(|t| t.subscription_id.as_str())
        .collect();
    assert_eq!(
        ids,
        [lasting.subscription_id.as_str()],
        "the expired one is gone"
    );
    assert_eq!(
        after.targets[0].signing_secrets.len(),
        1,
        "the old secret is gone"
    );
    server.stop().await;
}

/// A TCP proxy whose connections can be cut, to drop a client's streams
/// without stopping the server.
struct Proxy {
    address: std::net::SocketAddr,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn to(upstream: std::net::SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let address = listener.local_addr().expect("proxy address");
        let connections = Arc::new(Mutex::new(Vec::new()));
        let held = connections.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                held.lock().expect("connections").push(task);
            }
        });
        Proxy {
            address,
            connections,
            accept,
        }
    }

    fn cut(&self) {
        for task in self.connections.lock().expect("connections").drain(..) {
            task.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

async fn local_resolver_resumes_after_losing_its_connection(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let proxy = Proxy::to(server.grpc_addr).await;
    let resolver = local(proxy.address, &Cred::admin(), TENANT).await;
    let response = admin
        .subscriptions()
        .create_subscription(create_subscription_request(subscription(
            TENANT,
            ENDPOINT,
            &["command.*"],
        )))
        .await
        .expect("create");
    let first = response.get_ref().subscription_id.clone();
    agree(
        &admin,
        &resolver,
        TENANT,
        revision(response.metadata()),
        "before the cut",
    )
    .await;

    proxy.cut();
    // Written while the resolver is cut off: it must catch up on resume.
    let second = create_subscription(
        &admin,
        subscription(TENANT, ENDPOINT, &["command.accepted"]),
    )
    .await;
    let last = written(set_subscription_status(&admin, &first, SubStatus::Disabled).await);
    agree(&admin, &resolver, TENANT, last, "after resuming").await;
    let ids: Vec<_> = resolver
        .resolve(TENANT, "command.accepted")
        .expect("known")
        .targets
        .into_iter()
        .map(|t| t.subscription_id)
        .collect();
    assert_eq!(ids, [second.subscription_id]);
    server.stop().await;
}

backend_tests!(
    local_resolver_agrees_with_the_server_on_random_writes,
    local_resolver_drops_expired_subscriptions_and_rotated_secrets_on_time,
    local_resolver_resumes_after_losing_its_connection,
);

//! What the server sends out (confirmations, pings): never through a proxy
//! from the environment; each delivery leased for as long as it may take;
//! and an endpoint that holds its connections open (a tarpit) delays only
//! its own deliveries.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hookplane::proto::{PingEndpointRequest, Subscription};
use sea_orm::ConnectionTrait as _;
use tokio::net::TcpListener;

use crate::harness::*;
use crate::lifecycle::{DEADLINE, Receiver, eventually, receiving_fixture, verifying};
use crate::replicas::{BOOTSTRAP, spawn_serve};

/// A TCP server that accepts connections and never answers; dropping it
/// closes them.
struct Tarpit {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Tarpit {
    async fn start() -> Tarpit {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("tarpit address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        Tarpit {
            addr,
            accepted,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    async fn first_connection(&self) {
        eventually("a delivery to the tarpit", DEADLINE, || async {
            (self.accepted() > 0).then_some(())
        })
        .await;
    }
}

impl Drop for Tarpit {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Confirmations queued for a tarpit endpoint (each would hold a sender
/// for 30 s) do not hold up another endpoint's, and the tarpit gets one
/// delivery at a time.
async fn a_tarpit_endpoint_delays_only_its_own_deliveries(backend: Backend) {
    let (server, admin, receiver, _) =
        receiving_fixture(&backend, verifying(), &["--delivery-timeout-secs", "30"]).await;
    let tarpit = Tarpit::start().await;
    create_endpoint(&admin, TENANT, "tarpit", &tarpit.url("/hooks")).await;
    for _ in 0..12 {
        create_subscription(
            &admin,
            subscription(TENANT, "tarpit", &["command.completed"]),
        )
        .await;
    }
    tarpit.first_connection().await;

    let started = Instant::now();
    let other = create_subscription(
        &admin,
        subscription(TENANT, ENDPOINT, &["command.completed"]),
    )
    .await;
    receiver.confirmation(&other.subscription_id, 1).await;
    let elapsed = started.elapsed();
    println!("another endpoint's confirmation arrived after {elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(3),
        "held up by the tarpit for {elapsed:?}"
    );
    assert_eq!(tarpit.accepted(), 1, "one delivery to the tarpit at a time");
    drop(tarpit);
    server.stop().await;
}

/// A delivery in flight stays leased until its timeout (120 s here) has
/// passed, so no other worker sends it meanwhile.
async fn a_delivery_is_leased_for_as_long_as_it_may_take(backend: Backend) {
    let (server, admin, _receiver, _) =
        receiving_fixture(&backend, verifying(), &["--delivery-timeout-secs", "120"]).await;
    let tarpit = Tarpit::start().await;
    create_endpoint(&admin, TENANT, "tarpit", &tarpit.url("/hooks")).await;
    let created = create_subscription(
        &admin,
        Subscription {
            subscription_id: "leased".to_owned(),
            ..subscription(TENANT, "tarpit", &["command.completed"])
        },
    )
    .await;
    tarpit.first_connection().await;
    let now_micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as i64;

    let db = backend.database().await;
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            format!(
                "SELECT next_attempt_time FROM outbox WHERE subscription_id = '{}'",
                created.subscription_id
            ),
        ))
        .await
        .expect("read the outbox")
        .expect("the confirmation's outbox row");
    let lease_until = row.try_get::<i64>("", "next_attempt_time").expect("a time");
    let _ = db.close().await;
    let leased_for = Duration::from_micros(u64::try_from(lease_until - now_micros).unwrap_or(0));
    println!("the delivery in flight is leased for another {leased_for:?}");
    assert!(
        leased_for >= Duration::from_secs(119),
        "leased for {leased_for:?} of a delivery that may take 120 s"
    );
    drop(tarpit);
    server.stop().await;
}

/// With HTTP_PROXY, HTTPS_PROXY and ALL_PROXY pointing at a listener of the
/// test's, a ping still goes straight to the endpoint.
async fn outbound_requests_ignore_proxies_from_the_environment(backend: Backend) {
    let proxy = Tarpit::start().await;
    let proxy_url = proxy.url("");
    let env: Vec<(&str, &str)> = [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ]
    .into_iter()
    .map(|key| (key, proxy_url.as_str()))
    .chain([("NO_PROXY", ""), ("no_proxy", "")])
    .collect();
    let mut args: Vec<String> = BOOTSTRAP.iter().map(|s| s.to_string()).collect();
    args.extend(backend.database_flags());
    args.extend([
        "--allow-private-networks".to_owned(),
        "--delivery-timeout-secs".to_owned(),
        "3".to_owned(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = spawn_serve("proxied", &args, &env).ready().await;
    let admin = server.admin();
    create_tenant(&admin, TENANT).await;
    let receiver = Receiver::start().await;
    create_endpoint(&admin, TENANT, ENDPOINT, &receiver.url("/ping")).await;

    let pinged = ok(admin
        .endpoints()
        .ping_endpoint(PingEndpointRequest {
            tenant_id: TENANT.to_owned(),
            endpoint_id: ENDPOINT.to_owned(),
        })
        .await);
    assert_eq!(pinged.status_code, 200, "{pinged:?}");
    assert_eq!(
        receiver.deliveries().len(),
        1,
        "the ping reached the endpoint"
    );
    assert_eq!(proxy.accepted(), 0, "nothing went through the proxy");
    server.stop().await;
}

backend_tests!(
    a_tarpit_endpoint_delays_only_its_own_deliveries,
    a_delivery_is_leased_for_as_long_as_it_may_take,
    outbound_requests_ignore_proxies_from_the_environment,
);

//! The HTTP listener bounds what a client can hold: a connection that does
//! not send its request headers in time (slowloris) or stays idle is closed,
//! and no more than --http-max-connections are open at once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::harness::*;
use crate::lifecycle::http_get;

const HALF_A_REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: hookplane\r\n";
const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: hookplane\r\n\r\n";

/// A connection that has sent `bytes` and nothing more.
async fn sent(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    stream
}

/// Reads until the server closes the connection, which it must within
/// `wait`; returns what it sent.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Err(_) => panic!("the connection is still open after {wait:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return received,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one response head: the status line and headers.
async fn response_head(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.expect("read a response");
        assert!(n > 0, "closed before answering: {received:?}");
        received.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&received).into_owned()
}

async fn grpc_serving(server: &TestServer) {
    let answer = HealthClient::new(server.channel())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("gRPC health answers")
        .into_inner();
    assert_eq!(answer.status(), ServingStatus::Serving);
}

/// Connections that send half a request, nothing at all, or go idle after
/// a request are closed once the header-read timeout passes (1 s here).
async fn slow_and_idle_connections_are_closed(backend: Backend) {
    let server = backend
        .start_with(&["--http-header-timeout-secs", "1"])
        .await;
    let addr = server.http_addr;
    let mut idle = sent(addr, HEALTHZ).await;
    assert!(response_head(&mut idle).await.starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..20 {
        slow.push(sent(addr, HALF_A_REQUEST).await);
    }
    slow.push(sent(addr, b"").await);

    for stream in &mut slow {
        closed_within(stream, Duration::from_secs(5)).await;
    }
    closed_within(&mut idle, Duration::from_secs(5)).await;
    let elapsed = started.elapsed();
    println!("slow and idle connections closed after {elapsed:?}");
    assert!(
        elapsed >= Duration::from_millis(900),
        "closed by the timeout, not at once ({elapsed:?})"
    );
    assert_eq!(http_get(&format!("http://{addr}/healthz")).await, 200);
    server.stop().await;
}

/// Many half-open sockets (fewer than the limit) leave /healthz and gRPC
/// answering at once.
async fn healthz_answers_while_half_open_sockets_are_held(backend: Backend) {
    let server = backend.start().await;
    let mut held = Vec::new();
    for _ in 0..500 {
        held.push(sent(server.http_addr, HALF_A_REQUEST).await);
    }
    let started = Instant::now();
    assert_eq!(
        http_get(&format!("http://{}/healthz", server.http_addr)).await,
        200
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(1),
        "/healthz took {elapsed:?}"
    );
    grpc_serving(&server).await;
    drop(held);
    server.stop().await;
}

/// With --http-max-connections 4, four half-open sockets fill the listener:
/// a fifth connection is answered only once the timeout has closed one of
/// them, while gRPC keeps answering.
async fn the_listener_holds_at_most_its_connection_limit(backend: Backend) {
    let server = backend
        .start_with(&[
            "--http-max-connections",
            "4",
            "--http-header-timeout-secs",
            "2",
        ])
        .await;
    let addr = server.http_addr;
    let mut full = Vec::new();
    for _ in 0..4 {
        full.push(sent(addr, HALF_A_REQUEST).await);
    }
    let started = Instant::now();
    let mut waiting = sent(addr, HEALTHZ).await;
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_secs(1), waiting.read(&mut buf))
            .await
            .is_err(),
        "a fifth connection is not served while four are open"
    );
    grpc_serving(&server).await;
    assert!(
        response_head(&mut waiting)
            .await
            .starts_with("HTTP/1.1 200")
    );
    let elapsed = started.elapsed();
    println!("the fifth connection was answered after {elapsed:?}");
    assert!(
        elapsed >= Duration::from_millis(1500),
        "answered once a slot freed ({elapsed:?})"
    );
    server.stop().await;
}

backend_tests!(
    slow_and_idle_connections_are_closed,
    healthz_answers_while_half_open_sockets_are_held,
    the_listener_holds_at_most_its_connection_limit,
);

//! gRPC connections are served on one lane (thread) per core by default,
//! each connection kept on its lane, or on the shared runtime with
//! `--grpc-threads 0`. Either way every connection is served and the server
//! stops cleanly.

use hookplane::proto::GetTenantRequest;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::harness::*;

/// A connection of its own (a tonic `Channel` is one HTTP/2 connection).
async fn connect(server: &TestServer) -> Channel {
    Channel::from_shared(format!("http://{}", server.grpc_addr))
        .expect("endpoint URI")
        .connect()
        .await
        .expect("connects")
}

/// Signed reads and a health check on `connections` fresh connections at
/// once, several calls in flight on each.
async fn read_on_connections(server: &TestServer, connections: usize, tenant_id: &str) {
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let channel = connect(server).await;
        for _ in 0..4 {
            let clients = Clients::on(channel.clone(), &Cred::admin());
            let mut health = HealthClient::new(channel.clone());
            let tenant_id = tenant_id.to_owned();
            calls.spawn(async move {
                let tenant = ok(clients
                    .tenants()
                    .get_tenant(GetTenantRequest {
                        tenant_id: tenant_id.clone(),
                    })
                    .await);
                assert_eq!(tenant.tenant_id, tenant_id);
                let status = ok(health
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await);
                assert_eq!(status.status, ServingStatus::Serving as i32);
            });
        }
    }
    // A connection no lane serves would leave its calls hanging.
    let all = async {
        let mut done = 0;
        while let Some(call) = calls.join_next().await {
            call.expect("call task");
            done += 1;
        }
        done
    };
    let done = tokio::time::timeout(std::time::Duration::from_secs(30), all)
        .await
        .expect("every call answered within 30 s");
    assert_eq!(done, connections * 4);
}

async fn every_connection_is_served_on_lanes(backend: Backend) {
    let server = backend.start_with(&["--grpc-threads", "2"]).await;
    create_tenant(&server.admin(), "lanes").await;
    // More connections than lanes; all of them closed again after.
    read_on_connections(&server, 5, "lanes").await;
    // Lanes whose connections closed take new ones.
    read_on_connections(&server, 3, "lanes").await;
    // Writes made through the lanes survive a restart (a clean stop).
    let server = server.restart().await;
    read_on_connections(&server, 2, "lanes").await;
    server.stop().await;
}

async fn shared_runtime_mode_serves_and_stops(backend: Backend) {
    let server = backend.start_with(&["--grpc-threads", "0"]).await;
    create_tenant(&server.admin(), "shared").await;
    read_on_connections(&server, 3, "shared").await;
    let server = server.restart().await;
    read_on_connections(&server, 1, "shared").await;
    server.stop().await;
}

backend_tests!(
    every_connection_is_served_on_lanes,
    shared_runtime_mode_serves_and_stops
);

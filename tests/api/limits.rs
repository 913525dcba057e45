//! Messages over --max-message-bytes are refused by the transport, and the
//! server keeps serving.

use hookplane::proto::{CreateTenantRequest, GetTenantRequest, Tenant};
use tonic::Code;

use crate::harness::*;

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

backend_tests!(
    oversized_message_is_refused_by_default,
    max_message_bytes_flag_is_honoured,
);

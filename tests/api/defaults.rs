//! The documented defaults, on a server started without the flags that
//! change them: the 300 s signature window, the 86400 s rotation grace and
//! the 72 h confirmation-token lifetime. The last two are read from the
//! database, where the server keeps them.

use hookplane::proto::tenant_service_client::TenantServiceClient;
use hookplane::proto::{GetTenantRequest, RotateEndpointSecretRequest};
use sea_orm::{ConnectionTrait as _, Statement};
use tonic::Code;

use crate::harness::*;
use crate::lifecycle::{receiving_fixture, verifying};

const GET_TENANT: &str = "/hookplane.v1.TenantService/GetTenant";
const DEFAULT_WINDOW: i64 = 300;
const DEFAULT_GRACE: i64 = 86_400;
const DEFAULT_TOKEN_LIFETIME: i64 = 72 * 3600;

/// The one `i64` column `column` of the row `query` selects.
async fn stored_i64(backend: &Backend, query: String, column: &str) -> i64 {
    let db = backend.database().await;
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            query.clone(),
        ))
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .unwrap_or_else(|| panic!("no row for {query}"));
    let value = row
        .try_get::<Option<i64>>("", column)
        .expect("an integer column")
        .unwrap_or_else(|| panic!("{column} is NULL for {query}"));
    let _ = db.close().await;
    value
}

/// Stored times are microseconds since the epoch.
fn stored_secs(micros: i64) -> i64 {
    micros / 1_000_000
}

async fn the_signature_window_is_300_seconds_by_default(backend: Backend) {
    let server = backend.start().await;
    create_tenant(&server.admin(), "acme").await;
    let mut tenants = TenantServiceClient::new(server.channel());
    let get = |skew: i64| {
        signed_request(
            GetTenantRequest {
                tenant_id: "acme".to_owned(),
            },
            &Cred::admin(),
            GET_TENANT,
            unix_now() + skew,
            &fresh_nonce(),
        )
    };
    for skew in [-(DEFAULT_WINDOW - 10), DEFAULT_WINDOW - 10] {
        ok(tenants.get_tenant(get(skew)).await);
    }
    for skew in [-(DEFAULT_WINDOW + 10), DEFAULT_WINDOW + 10] {
        let status = expect_code(tenants.get_tenant(get(skew)).await, Code::Unauthenticated);
        assert!(
            status.message().contains("x-api-timestamp"),
            "skew {skew}: {}",
            status.message()
        );
    }
    server.stop().await;
}

async fn rotation_keeps_the_previous_secret_86400_seconds_by_default(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    create_endpoint(&admin, TENANT, "ep2", "https://hooks.example.com/second").await;
    let rotate = |endpoint_id: &str, grace_period_seconds: i64| RotateEndpointSecretRequest {
        tenant_id: TENANT.to_owned(),
        endpoint_id: endpoint_id.to_owned(),
        secret: String::new(),
        grace_period_seconds,
    };
    // Unset (0) means the default; a given grace is used as given.
    let defaulted = ok(admin
        .endpoints()
        .rotate_endpoint_secret(rotate(ENDPOINT, 0))
        .await);
    let given = ok(admin
        .endpoints()
        .rotate_endpoint_secret(rotate("ep2", 3600))
        .await);
    let expiry = |endpoint_id: &str| {
        stored_i64(
            &backend,
            format!(
                "SELECT previous_secret_expire_time AS v FROM endpoints \
                 WHERE tenant_id = '{TENANT}' AND endpoint_id = '{endpoint_id}'"
            ),
            "v",
        )
    };
    assert_about(
        stored_secs(expiry(ENDPOINT).await),
        secs(&defaulted.update_time) + DEFAULT_GRACE,
    );
    assert_about(
        stored_secs(expiry("ep2").await),
        secs(&given.update_time) + 3600,
    );
    server.stop().await;
}

async fn confirmation_tokens_live_72_hours_by_default(backend: Backend) {
    let (server, admin, receiver, _) = receiving_fixture(&backend, verifying(), &[]).await;
    let pending = create_subscription(&admin, subscription(TENANT, ENDPOINT, &["*"])).await;
    // The token is stored when the confirmation is queued; waiting for the
    // message makes sure it is there.
    receiver.confirmation(&pending.subscription_id, 1).await;
    let expire = stored_i64(
        &backend,
        format!(
            "SELECT expire_time AS v FROM confirmation_tokens \
             WHERE subscription_id = '{}'",
            pending.subscription_id
        ),
        "v",
    )
    .await;
    assert_about(
        stored_secs(expire),
        secs(&pending.create_time) + DEFAULT_TOKEN_LIFETIME,
    );
    server.stop().await;
}

backend_tests!(
    the_signature_window_is_300_seconds_by_default,
    rotation_keeps_the_previous_secret_86400_seconds_by_default,
    confirmation_tokens_live_72_hours_by_default,
);

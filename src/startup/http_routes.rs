//! The plain HTTP routes: `/healthz` and the confirmation link
//! `/v1/confirm`.

use std::sync::Arc;

use tokio::sync::watch;

use crate::service::Services;

/// The HTTP listener's routes.
pub(super) fn router(database_up: watch::Receiver<bool>, services: Arc<Services>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", axum::routing::get(healthz))
        .with_state(database_up)
        .merge(
            axum::Router::new()
                .route("/v1/confirm", axum::routing::get(confirm))
                .with_state(services),
        )
}

/// GET /healthz: 200 while the database answers, 503 while it does not,
/// from the state the probe keeps; it never waits for the database.
async fn healthz(
    axum::extract::State(up): axum::extract::State<watch::Receiver<bool>>,
) -> (http::StatusCode, &'static str) {
    if *up.borrow() {
        (http::StatusCode::OK, "ok\n")
    } else {
        (
            http::StatusCode::SERVICE_UNAVAILABLE,
            "database unreachable\n",
        )
    }
}

#[derive(serde::Deserialize)]
struct ConfirmQuery {
    #[serde(default)]
    token: String,
}

/// GET /v1/confirm?token=...: the link in a confirmation message.
async fn confirm(
    axum::extract::State(services): axum::extract::State<Arc<Services>>,
    axum::extract::Query(query): axum::extract::Query<ConfirmQuery>,
) -> (http::StatusCode, axum::Json<serde_json::Value>) {
    match services.confirm_by_link(&query.token).await {
        Ok(w) => (
            http::StatusCode::OK,
            axum::Json(serde_json::json!({
                "status": "confirmed",
                "tenant_id": w.value.tenant_id,
                "subscription_id": w.value.subscription_id,
            })),
        ),
        Err(e) => {
            let (code, message) = e.into_http();
            (code, axum::Json(serde_json::json!({ "error": message })))
        }
    }
}

//! The gRPC health service's entries: every service's, and the database's,
//! which follows the availability probe.

use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

const SERVICE_NAMES: [&str; 5] = [
    "hookplane.v1.TenantService",
    "hookplane.v1.CredentialService",
    "hookplane.v1.EventTypeService",
    "hookplane.v1.EndpointService",
    "hookplane.v1.SubscriptionService",
];

pub(super) async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in SERVICE_NAMES.into_iter().chain([DATABASE_HEALTH]) {
        reporter.set_service_status(name, status).await;
    }
}

/// The health entry of the database itself: NOT_SERVING while it does not
/// answer. The overall status stays SERVING meanwhile: ResolveSubscribers
/// still answers from memory, and a load balancer must not take every
/// replica out during a database outage.
pub const DATABASE_HEALTH: &str = "hookplane.database";

/// Publishes the database's availability (see `SeaRepository::database_up`)
/// as the health of [`DATABASE_HEALTH`], until `stop` turns true.
pub(super) async fn report_database(
    mut up: watch::Receiver<bool>,
    reporter: HealthReporter,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let status = if *up.borrow_and_update() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        reporter.set_service_status(DATABASE_HEALTH, status).await;
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            changed = up.changed() => if changed.is_err() { return },
        }
    }
}

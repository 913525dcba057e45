//! Periodic housekeeping, on a task of its own so a long sweep never holds
//! back the follower (and with it every write waiting to settle): expires
//! subscriptions past their expiry and drops rotated-out secrets past their
//! grace, every second; purges expired nonces and request ids and prunes the
//! change log, every minute. Its writes reach the index through the change
//! log like any other.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::error::chain;
use crate::model::{IDEMPOTENCY_RETENTION_MICROS, now_micros};
use crate::repository::Repository;

const SWEEP_EVERY: Duration = Duration::from_secs(1);
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// Runs until `stop` turns true.
pub async fn run_sweeper(
    repo: Arc<dyn Repository>,
    change_retention: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut purge = tokio::time::interval(PURGE_EVERY);
    purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Both fire at once first; the first purge waits a full period.
    purge.tick().await;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = sweep.tick() => match repo.sweep_expired(now_micros()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    changed = n,
                    "expired subscriptions and rotated-out secrets swept"
                ),
                Err(e) => tracing::warn!(error = %chain(&e), "expiry sweep failed"),
            },
            _ = purge.tick() => {
                let now = now_micros();
                let retention = i64::try_from(change_retention.as_micros()).unwrap_or(i64::MAX);
                if let Err(e) = repo
                    .purge_expired(now, now - IDEMPOTENCY_RETENTION_MICROS)
                    .await
                {
                    tracing::warn!(error = %chain(&e), "cannot purge expired nonces and request ids");
                }
                if let Err(e) = repo.prune_changes(now.saturating_sub(retention)).await {
                    tracing::warn!(error = %chain(&e), "cannot prune the change log");
                }
            }
        }
        if *stop.borrow() {
            return;
        }
    }
}

//! Drains the outbox: every due row is claimed (compare-and-set, so one
//! replica sends it), delivered, and marked done or rescheduled with
//! exponential backoff. Rows survive restarts, so nothing queued is lost.
//!
//! A row is claimed only when a sending slot is free, and leased from that
//! moment for as long as its delivery may take, so no other worker takes it
//! while it is in flight. Each endpoint has at most one delivery in flight:
//! one that holds its connections open (a tarpit) occupies one slot and
//! delays only its own deliveries.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{Id, JoinSet};

use super::Sender;
use crate::error::chain;
use crate::model::{Micros, now_micros};
use crate::repository::{DeliveryOutcome, OutboxItem, Repository};

/// Attempts before a delivery is given up (the last waits about an hour).
const MAX_ATTEMPTS: i32 = 16;
/// A lease covers the delivery's timeout plus this, for reading the
/// endpoint before and recording the outcome after.
const LEASE_MARGIN: Duration = Duration::from_secs(10);
/// Deliveries in flight at once, so one slow receiver does not hold up others.
const PARALLEL: usize = 8;
/// How often the outbox is read without a local wake-up: rows queued on
/// other replicas, and retries falling due.
const POLL: Duration = Duration::from_millis(500);

/// The endpoint a delivery goes to: (tenant id, endpoint id).
type EndpointKey = (String, String);

pub struct Worker {
    repo: Arc<dyn Repository>,
    sender: Arc<Sender>,
    lease: Duration,
}

/// Delay before attempt `n + 1`: 1 s, 2 s, 4 s ... capped at one hour.
pub fn backoff(attempts: i32) -> Duration {
    Duration::from_secs(1u64 << attempts.clamp(0, 12)).min(Duration::from_secs(3600))
}

async fn deliver(
    repo: &Arc<dyn Repository>,
    sender: &Sender,
    item: &OutboxItem,
    now: Micros,
) -> DeliveryOutcome {
    let endpoint = match repo.get_endpoint(&item.tenant_id, &item.endpoint_id).await {
        Ok(Some(e)) if e.delete_time.is_none() => e,
        Ok(_) => {
            return DeliveryOutcome::GiveUp {
                error: "endpoint deleted".into(),
            };
        }
        Err(e) => {
            return DeliveryOutcome::Retry {
                next_attempt_time: now + 5_000_000,
                error: format!("storage: {e}"),
            };
        }
    };
    let mut body: serde_json::Value = match serde_json::from_slice(&item.payload) {
        Ok(v) => v,
        Err(e) => {
            return DeliveryOutcome::GiveUp {
                error: format!("unreadable payload: {e}"),
            };
        }
    };
    let msg_id = body
        .get("message")
        .and_then(|m| m.as_str())
        .unwrap_or(&item.id)
        .to_owned();
    if let Some(obj) = body.as_object_mut() {
        obj.insert(
            "sent_ts".into(),
            serde_json::json!((now as f64 / 1000.0).round() / 1000.0),
        );
    }
    let bytes = body.to_string().into_bytes();
    let secrets = endpoint.live_secrets(now);
    let result = sender.post(&endpoint.url, &secrets, &msg_id, &bytes).await;
    if result.is_success() {
        return DeliveryOutcome::Delivered;
    }
    let error = if result.error.is_empty() {
        format!("HTTP {}", result.status_code)
    } else {
        result.error
    };
    if item.attempts + 1 >= MAX_ATTEMPTS {
        return DeliveryOutcome::GiveUp { error };
    }
    let delay = i64::try_from(backoff(item.attempts).as_micros()).unwrap_or(i64::MAX);
    DeliveryOutcome::Retry {
        next_attempt_time: now + delay,
        error,
    }
}

/// Sends one claimed item and records the outcome.
async fn send_and_record(repo: Arc<dyn Repository>, sender: Arc<Sender>, item: OutboxItem) {
    let outcome = deliver(&repo, &sender, &item, now_micros()).await;
    match &outcome {
        DeliveryOutcome::Delivered => {
            tracing::info!(subscription_id = %item.subscription_id, kind = %item.kind, "delivered")
        }
        DeliveryOutcome::Retry { error, .. } => tracing::warn!(
            subscription_id = %item.subscription_id,
            attempt = item.attempts + 1,
            error = %error,
            "delivery failed; will retry"
        ),
        DeliveryOutcome::GiveUp { error } => tracing::error!(
            subscription_id = %item.subscription_id,
            error = %error,
            "delivery failed; giving up"
        ),
    }
    if let Err(e) = repo.finish_delivery(&item, &outcome, now_micros()).await {
        // The lease expires and the row is sent again: at least once.
        tracing::warn!(error = %chain(&e), "cannot record a delivery outcome");
    }
}

impl Worker {
    /// A worker whose deliveries each take at most `delivery_timeout`.
    pub fn new(repo: Arc<dyn Repository>, sender: Arc<Sender>, delivery_timeout: Duration) -> Self {
        Worker {
            repo,
            sender,
            lease: delivery_timeout + LEASE_MARGIN,
        }
    }

    /// Claims and starts due deliveries while slots are free, one per
    /// endpoint at a time. `busy` holds the endpoint of each delivery in
    /// flight, by task.
    async fn start_due(&self, running: &mut JoinSet<()>, busy: &mut HashMap<Id, EndpointKey>) {
        if running.len() >= PARALLEL {
            return;
        }
        let excluded: Vec<EndpointKey> = busy.values().cloned().collect();
        let items = match self.repo.due_deliveries(now_micros(), 100, &excluded).await {
            Ok(items) => items,
            Err(e) => {
                tracing::warn!(error = %chain(&e), "cannot read the outbox");
                return;
            }
        };
        for item in items {
            if running.len() >= PARALLEL {
                return;
            }
            let key = (item.tenant_id.clone(), item.endpoint_id.clone());
            if busy.values().any(|k| *k == key) {
                continue;
            }
            let lease_until =
                now_micros() + i64::try_from(self.lease.as_micros()).unwrap_or(i64::MAX);
            match self.repo.claim_delivery(&item, lease_until).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %chain(&e), "cannot claim a delivery");
                    continue;
                }
            }
            let task = running.spawn(send_and_record(
                self.repo.clone(),
                self.sender.clone(),
                item,
            ));
            busy.insert(task.id(), key);
        }
    }

    /// Runs until `stop` turns true; deliveries in flight then finish
    /// first, so none is left holding its lease at shutdown.
    ///
    /// `queued` changes when this process commits outbox rows; rows queued
    /// by other replicas (whose own workers are woken) and retries fall due
    /// by the poll.
    pub async fn run(self, mut queued: watch::Receiver<u64>, mut stop: watch::Receiver<bool>) {
        let mut running = JoinSet::new();
        let mut busy = HashMap::new();
        loop {
            self.start_due(&mut running, &mut busy).await;
            if *stop.borrow() {
                break;
            }
            tokio::select! {
                _ = stop.changed() => break,
                _ = queued.changed() => {}
                _ = tokio::time::sleep(POLL) => {}
                Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                    let id = match done {
                        Ok((id, ())) => id,
                        Err(e) => e.id(),
                    };
                    busy.remove(&id);
                }
            }
        }
        while running.join_next().await.is_some() {}
    }
}

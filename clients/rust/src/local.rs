//! A local resolver: a copy of whom each event reaches, kept current by
//! WatchSubscriptions and answered in-process with hookplane-core's
//! matching, the code the server resolves with.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hookplane_core::subscribers::FastMap;
use hookplane_core::{
    EndpointState, Match, Micros, Patterns, Resolvable, SubscriptionState, Target,
    TenantSubscribers,
};
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::proto::subscription::Status;
use crate::proto::subscription_service_client::SubscriptionServiceClient;
use crate::proto::tenant::State as TenantState;
use crate::proto::watch_subscriptions_response::{Kind, Resource};
use crate::proto::{WatchSubscriptionsRequest, WatchSubscriptionsResponse};
use crate::signing::Signed;

/// The first wait after a stream ends, doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// An answer: the targets an event reaches, by subscription id, and the
/// revision the copy was at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub targets: Vec<Target>,
    pub revision: i64,
}

/// What a resolve reads: every watched tenant's subscribers and the catalog.
#[derive(Default)]
struct State {
    patterns: Patterns,
    tenants: FastMap<Box<str>, TenantSubscribers>,
    catalog: FastMap<Box<str>, Resolvable>,
    /// Every change up to here is applied.
    revision: i64,
}

fn micros(t: Option<&prost_types::Timestamp>) -> Option<Micros> {
    t.map(|t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1000)
}

/// The tenant's subscribers, made (inactive) if its tenant event has not
/// come yet: it comes first, and until it does nothing resolves.
fn tenant_in<'a>(
    tenants: &'a mut FastMap<Box<str>, TenantSubscribers>,
    tenant_id: &str,
) -> &'a mut TenantSubscribers {
    if !tenants.contains_key(tenant_id) {
        tenants.insert(tenant_id.into(), TenantSubscribers::new(false));
    }
    tenants
        .get_mut(tenant_id)
        .unwrap_or_else(|| unreachable!("inserted above"))
}

impl State {
    /// Applies one message's resource: as it now is, or gone.
    fn apply(&mut self, resource: &Resource, gone: bool) {
        match resource {
            Resource::Tenant(t) if gone => {
                self.tenants.remove(t.tenant_id.as_str());
            }
            Resource::Tenant(t) => {
                let active = t.state == TenantState::Active as i32;
                tenant_in(&mut self.tenants, &t.tenant_id).set_active(active);
            }
            Resource::EventType(e) if gone => {
                self.catalog.remove(e.name.as_str());
            }
            Resource::EventType(e) => {
                let ids = self.patterns.resolvable(&e.name);
                self.catalog.insert(e.name.as_str().into(), ids);
            }
            Resource::Endpoint(e) if gone => {
                tenant_in(&mut self.tenants, &e.tenant_id).remove_endpoint(&e.endpoint_id);
            }
            Resource::Endpoint(e) => {
                let previous_secret = match (
                    e.signing_secrets.get(1),
                    micros(e.previous_secret_expire_time.as_ref()),
                ) {
                    (Some(secret), Some(until)) => Some((secret.as_str(), until)),
                    _ => None,
                };
                let state = EndpointState {
                    endpoint_id: &e.endpoint_id,
                    url: &e.url,
                    secret: e.signing_secrets.first().map_or("", String::as_str),
                    previous_secret,
                    live: e.enabled.unwrap_or(true),
                };
                tenant_in(&mut self.tenants, &e.tenant_id).upsert_endpoint(state);
            }
            Resource::Subscription(s) => {
                let state = SubscriptionState {
                    subscription_id: &s.subscription_id,
                    endpoint_id: &s.endpoint_id,
                    name: &s.name,
                    event_types: &s.event_types,
                    expire_time: micros(s.expire_time.as_ref()),
                    active: !gone && s.status == Status::Active as i32,
                };
                tenant_in(&mut self.tenants, &s.tenant_id)
                    .upsert_subscription(state, &self.patterns);
            }
        }
    }
}

struct Shared {
    state: RwLock<State>,
    /// The revision applied, 0 until the first snapshot is complete.
    revision: watch::Sender<i64>,
}

impl Shared {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, revision: i64) {
        self.revision.send_if_modified(|r| {
            let moved = revision > *r;
            *r = (*r).max(revision);
            moved
        });
    }
}

/// A copy of whom each event reaches, for one tenant or every tenant,
/// followed from WatchSubscriptions: a snapshot, then every change; after
/// a disconnect it resumes where it was (with backoff), and starts over
/// from a fresh snapshot when the server no longer holds that revision.
/// Resolves answer from memory, exactly as the server's
/// ResolveSubscribers does at the same revision.
///
/// Stops following when dropped.
pub struct LocalResolver {
    shared: Arc<Shared>,
    follower: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for LocalResolver {
    fn drop(&mut self) {
        if let Some(follower) = &self.follower {
            follower.abort();
        }
    }
}

impl LocalResolver {
    /// Starts following `tenant_id`'s subscriptions (every tenant's when
    /// empty; the credential must be allowed to resolve them, and needs
    /// secrets.read for targets to carry signing secrets). Must be called
    /// within a tokio runtime.
    pub fn start(client: SubscriptionServiceClient<Signed<Channel>>, tenant_id: &str) -> Self {
        let mut resolver = LocalResolver::detached();
        let shared = resolver.shared.clone();
        let tenant_id = tenant_id.to_owned();
        resolver.follower = Some(tokio::spawn(follow(client, tenant_id, shared)));
        resolver
    }

    /// A resolver fed by the caller through [`LocalResolver::apply`] (from a
    /// recorded stream, or in a test), not by a stream of its own.
    pub fn detached() -> Self {
        LocalResolver {
            shared: Arc::new(Shared {
                state: RwLock::default(),
                revision: watch::channel(0).0,
            }),
            follower: None,
        }
    }

    /// Applies one WatchSubscriptions message to a detached resolver; its
    /// revision becomes the message's.
    pub fn apply(&self, message: &WatchSubscriptionsResponse) {
        let mut state = self.shared.write();
        apply_message(&mut state, message);
        let revision = state.revision;
        drop(state);
        self.shared.publish(revision);
    }

    /// The revision this copy reflects: every change up to it is applied. 0
    /// until the first snapshot is complete.
    pub fn revision(&self) -> i64 {
        *self.shared.revision.borrow()
    }

    /// Waits until the first snapshot is complete.
    pub async fn ready(&self) {
        self.wait_for(1).await;
    }

    /// Waits until this copy reflects `revision` (say, a write's
    /// `x-revision`).
    pub async fn wait_for(&self, revision: i64) {
        let mut seen = self.shared.revision.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = seen.wait_for(|r| *r >= revision).await;
    }

    /// The targets an event of `event_type` reaches in `tenant_id` now;
    /// `None` when the tenant is not (yet) known here. Targets carry signing
    /// secrets when the stream did (secrets.read).
    pub fn resolve(&self, tenant_id: &str, event_type: &str) -> Option<Resolved> {
        self.resolve_with(tenant_id, event_type, |matches, revision| Resolved {
            targets: matches.iter().map(Match::to_target).collect(),
            revision,
        })
    }

    /// What `render` makes of the matches, read in place without copying
    /// (the fastest way to resolve); it runs under a read lock, so keep it
    /// short.
    pub fn resolve_with<R>(
        &self,
        tenant_id: &str,
        event_type: &str,
        render: impl FnOnce(&[Match<'_>], i64) -> R,
    ) -> Option<R> {
        let state = self.shared.read();
        let tenant = state.tenants.get(tenant_id)?;
        let Some(ids) = state.catalog.get(event_type) else {
            return Some(render(&[], state.revision));
        };
        let matches = tenant.matches(event_type, ids, now(), true);
        Some(render(&matches, state.revision))
    }
}

fn now() -> Micros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as Micros)
}

/// One message into `state`. A snapshot's heartbeat carries the revision
/// the snapshot reflects, and every change its own.
fn apply_message(state: &mut State, message: &WatchSubscriptionsResponse) {
    let gone = match message.kind() {
        Kind::Snapshot | Kind::Upsert => false,
        Kind::Delete => true,
        Kind::Heartbeat | Kind::Unspecified => {
            if state.revision == 0 {
                // The snapshot is complete: give back what growing the
                // tenants' indexes one message at a time left spare.
                for tenant in state.tenants.values_mut() {
                    tenant.shrink_to_fit();
                }
            }
            state.revision = state.revision.max(message.revision);
            return;
        }
    };
    if let Some(resource) = &message.resource {
        state.apply(resource, gone);
    }
    if message.kind() != Kind::Snapshot {
        state.revision = state.revision.max(message.revision);
    }
}

/// Follows the stream for as long as the resolver lives.
async fn follow(
    mut client: SubscriptionServiceClient<Signed<Channel>>,
    tenant_id: String,
    shared: Arc<Shared>,
) {
    let mut since = 0;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let request = WatchSubscriptionsRequest {
            tenant_id: tenant_id.clone(),
            since_revision: since,
            // So `revision()` keeps up when this tenant is quiet.
            progress_heartbeats: true,
        };
        let ended = match client.watch_subscriptions(request).await {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                // From 0, the snapshot is built aside and replaces the copy
                // whole once complete, so a resolve never sees half of one.
                let mut building = (since == 0).then(State::default);
                loop {
                    match stream.message().await {
                        Ok(Some(message)) => {
                            backoff = FIRST_BACKOFF;
                            match building.as_mut() {
                                Some(next) => {
                                    apply_message(next, &message);
                                    if message.kind() == Kind::Heartbeat {
                                        since = next.revision;
                                        if let Some(next) = building.take() {
                                            *shared.write() = next;
                                        }
                                        shared.publish(since);
                                    }
                                }
                                None => {
                                    let mut state = shared.write();
                                    apply_message(&mut state, &message);
                                    since = state.revision;
                                    drop(state);
                                    shared.publish(since);
                                }
                            }
                        }
                        Ok(None) => break None,
                        Err(status) => break Some(status),
                    }
                }
            }
            Err(status) => Some(status),
        };
        match ended {
            Some(status) if status.code() == tonic::Code::OutOfRange => {
                tracing::info!(
                    since,
                    "the server no longer holds this revision; resyncing from 0"
                );
                since = 0;
            }
            Some(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "watch ended; resuming");
            }
            None => tracing::info!("watch ended by the server; resuming"),
        }
        tokio::time::sleep(jittered(backoff)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// `base` plus up to half again, so resolvers cut off together do not
/// reconnect in step.
fn jittered(base: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let spread = if getrandom::fill(&mut byte).is_ok() {
        u32::from(byte[0])
    } else {
        128
    };
    base + base * spread / 512
}

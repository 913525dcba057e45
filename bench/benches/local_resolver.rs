//! The client library's LocalResolver at the size: 1M subscriptions
//! over 10,000 tenants, answers of about ten targets. Criterion times one
//! resolve on one core; before it, the live heap of the resolver and of the
//! server's index, built from the same data, is printed (a counting
//! allocator: each is measured as the bytes it keeps after its inputs are
//! dropped).
//!
//! `cargo bench -p hookplane-bench --bench local_resolver`

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};

use hookplane::model::{
    Endpoint, Subscription, SubscriptionStatus, Tenant, TenantSettings, TenantState,
};
use hookplane::repository::Snapshot;
use hookplane::resolve::ResolveIndex;
use hookplane_client::LocalResolver;
use hookplane_client::proto::watch_subscriptions_response::{Kind, Resource};
use hookplane_client::proto::{self, WatchSubscriptionsResponse};

/// Counts the bytes allocated and not yet freed.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; the
// counter is only arithmetic beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const TENANTS: usize = 10_000;
const PER_TENANT: usize = 100;
const SERVICES: usize = 30;
/// Event names per service: a tenant subscribes to its service's.
const EVENTS: usize = 10;
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn tenant_id(t: usize) -> String {
    format!("t{t:05}")
}

fn event_name(service: usize, event: usize) -> String {
    format!("svc{service}.evt{event}")
}

/// Subscription `i` of tenant `t`: a few watch the whole service, the rest
/// one of its events.
fn pattern(t: usize, i: usize) -> String {
    let service = t % SERVICES;
    if i.is_multiple_of(25) {
        format!("svc{service}.*")
    } else {
        event_name(service, i % EVENTS)
    }
}

fn subscription_id(t: usize, i: usize) -> String {
    format!("sub_{t:05}{i:027}")
}

fn catalog() -> Vec<String> {
    (0..SERVICES)
        .flat_map(|s| (0..EVENTS).map(move |e| event_name(s, e)))
        .collect()
}

fn live_bytes() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// The data as a Watch snapshot, applied message by message.
fn local_resolver() -> LocalResolver {
    let resolver = LocalResolver::detached();
    let snapshot = |resource| WatchSubscriptionsResponse {
        revision: 1,
        kind: Kind::Snapshot as i32,
        resource: Some(resource),
    };
    for name in catalog() {
        resolver.apply(&snapshot(Resource::EventType(proto::EventType {
            name,
            ..Default::default()
        })));
    }
    for t in 0..TENANTS {
        let tenant = tenant_id(t);
        resolver.apply(&snapshot(Resource::Tenant(proto::Tenant {
            tenant_id: tenant.clone(),
            state: proto::tenant::State::Active as i32,
            ..Default::default()
        })));
        for e in 0..2 {
            resolver.apply(&snapshot(Resource::Endpoint(proto::Endpoint {
                tenant_id: tenant.clone(),
                endpoint_id: format!("e{e}"),
                url: format!("https://hooks.example.com/{tenant}/{e}"),
                enabled: Some(true),
                signing_secrets: vec![SECRET.to_owned()],
                ..Default::default()
            })));
        }
        for i in 0..PER_TENANT {
            resolver.apply(&snapshot(Resource::Subscription(proto::Subscription {
                tenant_id: tenant.clone(),
                subscription_id: subscription_id(t, i),
                endpoint_id: format!("e{}", i % 2),
                name: format!("sub-{i}"),
                event_types: vec![pattern(t, i)],
                status: proto::subscription::Status::Active as i32,
                ..Default::default()
            })));
        }
    }
    resolver.apply(&WatchSubscriptionsResponse {
        revision: 1,
        kind: Kind::Heartbeat as i32,
        resource: None,
    });
    resolver
}

/// The same data as the server's index, loaded tenant by tenant.
fn server_index() -> ResolveIndex {
    let index = ResolveIndex::default();
    index.set_catalog(catalog().into_iter().map(|n| (n, false)).collect());
    for t in 0..TENANTS {
        let tenant = tenant_id(t);
        let endpoints = (0..2)
            .map(|e| Endpoint {
                tenant_id: tenant.clone(),
                endpoint_id: format!("e{e}"),
                url: format!("https://hooks.example.com/{tenant}/{e}"),
                description: String::new(),
                enabled: true,
                secret: SECRET.into(),
                previous_secret: None,
                create_time: 0,
                update_time: 0,
                delete_time: None,
                etag: String::new(),
            })
            .collect();
        let subscriptions = (0..PER_TENANT)
            .map(|i| Subscription {
                tenant_id: tenant.clone(),
                subscription_id: subscription_id(t, i),
                endpoint_id: format!("e{}", i % 2),
                name: Some(format!("sub-{i}")),
                event_types: vec![pattern(t, i)],
                status: SubscriptionStatus::Active,
                expire_time: None,
                create_time: 0,
                update_time: 0,
                etag: String::new(),
            })
            .collect();
        let record = Tenant {
            tenant_id: tenant.clone(),
            display_name: String::new(),
            state: TenantState::Active,
            settings: TenantSettings::default(),
            create_time: 0,
            update_time: 0,
            delete_time: None,
            etag: String::new(),
        };
        index.load_tenant(
            &tenant,
            Snapshot {
                tenants: vec![record],
                endpoints,
                subscriptions,
            },
            1,
        );
    }
    index
}

fn local_resolve(c: &mut Criterion) {
    let before = live_bytes();
    let index = server_index();
    let server_bytes = live_bytes() - before;
    let before = live_bytes();
    let resolver = local_resolver();
    let local_bytes = live_bytes() - before;
    let mib = |b: isize| b as f64 / (1024.0 * 1024.0);
    println!(
        "memory, {} subscriptions over {TENANTS} tenants: LocalResolver {:.1} MiB, the server's index {:.1} MiB ({:.2}x)",
        TENANTS * PER_TENANT,
        mib(local_bytes),
        mib(server_bytes),
        local_bytes as f64 / server_bytes as f64,
    );
    drop(index);

    let queries: Vec<(String, String)> = (0..4096)
        .map(|q| {
            let t = (q * 7919) % TENANTS;
            (tenant_id(t), event_name(t % SERVICES, q % EVENTS))
        })
        .collect();
    let targets: usize = queries
        .iter()
        .map(|(t, e)| resolver.resolve(t, e).map_or(0, |r| r.targets.len()))
        .sum();
    println!(
        "answers hold {:.1} targets on average",
        targets as f64 / queries.len() as f64
    );
    let mut q = 0;
    c.bench_function("LocalResolver resolve, 1M subscriptions (in place)", |b| {
        b.iter(|| {
            q = (q + 1) % queries.len();
            let (tenant, event) = &queries[q];
            black_box(resolver.resolve_with(tenant, event, |matches, revision| {
                let bytes: usize = matches.iter().map(|m| m.url().len()).sum();
                (bytes, revision)
            }))
        })
    });
    c.bench_function(
        "LocalResolver resolve, 1M subscriptions (owned targets)",
        |b| {
            b.iter(|| {
                q = (q + 1) % queries.len();
                let (tenant, event) = &queries[q];
                black_box(resolver.resolve(tenant, event))
            })
        },
    );
}

criterion_group!(benches, local_resolve);
criterion_main!(benches);

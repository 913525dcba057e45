//! Micro-benchmarks of the hot paths: request signature verification with
//! the nonce check, pattern matching, the page-token codec, and one
//! tenant's resolve from the in-memory index.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

use hookplane::auth::signature::{sign, verify};
use hookplane::auth::{NonceCheck, NonceStore};
use hookplane::domain::EventPattern;
use hookplane::grpc::wire::EncodedResolve;
use hookplane::model::{
    Endpoint, Subscription, SubscriptionStatus, Tenant, TenantSettings, TenantState,
};
use hookplane::proto::ResolveSubscribersResponse;
use hookplane::repository::Snapshot;
use hookplane::resolve::ResolveIndex;
use hookplane::service::PageTokens;
use prost::Message;

fn hmac_verify_and_nonce(c: &mut Criterion) {
    let key = b"hpsk_0123456789abcdef0123456789abcdef";
    let method = "/hookplane.v1.SubscriptionService/ResolveSubscribers";
    let ts = "1795376651";
    let nonces = NonceStore::new(300, usize::MAX);
    let mut n: u64 = 0;
    c.bench_function("hmac verify + nonce check", |b| {
        // Signing is the client's cost: each call's nonce and signature are
        // made outside the timed part, which is what the server does.
        b.iter_batched(
            || {
                n += 1;
                let nonce = format!("nonce-{n:016x}");
                let sig = sign(key, "hp_bench", ts, &nonce, method);
                (nonce, sig)
            },
            |(nonce, sig)| {
                let ok = verify(key, "hp_bench", ts, &nonce, method, &sig)
                    && nonces.check_and_insert("hp_bench", &nonce, 1_795_376_651, 1_795_376_651)
                        == NonceCheck::Fresh;
                black_box(ok)
            },
            BatchSize::SmallInput,
        )
    });
    let nonce = "nonce-fixed-000000";
    let sig = sign(key, "hp_bench", ts, nonce, method);
    c.bench_function("hmac verify only", |b| {
        b.iter(|| black_box(verify(key, "hp_bench", ts, nonce, method, black_box(&sig))))
    });
}

fn pattern_matching(c: &mut Criterion) {
    let exact = EventPattern::parse("agent.presencechanged.v1").unwrap();
    let prefix = EventPattern::parse("agent.*").unwrap();
    let middle = EventPattern::parse("agent.*.v1").unwrap();
    c.bench_function("pattern match (exact, prefix.*, middle *)", |b| {
        b.iter(|| {
            let e = black_box("agent.presencechanged.v1");
            black_box(exact.matches(e) && prefix.matches(e) && middle.matches(e))
        })
    });
}

fn page_tokens(c: &mut Criterion) {
    let tokens = PageTokens::new(b"0123456789abcdef0123456789abcdef");
    let position = (
        1_795_376_651_000_000i64,
        "sub_01a204ccf86671d6912b87c2b389b4fc".to_owned(),
    );
    let token = tokens.encode("subscriptions/acme", &position);
    c.bench_function("page token encode", |b| {
        b.iter(|| black_box(tokens.encode("subscriptions/acme", black_box(&position))))
    });
    c.bench_function("page token decode", |b| {
        b.iter(|| {
            black_box(
                tokens
                    .decode("subscriptions/acme", black_box(&token))
                    .is_ok(),
            )
        })
    });
}

/// A tenant shaped like the benchmark data set: 100 subscriptions over two
/// endpoints, patterns 70 % exact, 20 % `dN.*`, 5 % `dN.*.aM`, 5 % `*`, over
/// a catalog of 300 names `d{0..9}.e{0..5}.a{0..4}`.
fn resolve_one_tenant(c: &mut Criterion) {
    let names: Vec<String> = (0..300)
        .map(|i| format!("d{}.e{}.a{}", i / 30, (i / 5) % 6, i % 5))
        .collect();
    let mut seed: u64 = 42;
    let mut below = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let tenant = "bt00001";
    let endpoints = (0..2)
        .map(|e| Endpoint {
            tenant_id: tenant.into(),
            endpoint_id: format!("e{e}"),
            url: format!("https://hooks.example.com/{tenant}/{e}"),
            description: String::new(),
            enabled: true,
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            previous_secret: None,
            create_time: 0,
            update_time: 0,
            delete_time: None,
            etag: String::new(),
        })
        .collect();
    let subscriptions = (0..100)
        .map(|s| {
            let name = &names[below(300) as usize];
            let d = &name[..2];
            let pattern = match below(100) {
                0..70 => name.clone(),
                70..90 => format!("{d}.*"),
                90..95 => format!("{d}.*.a{}", below(5)),
                _ => "*".to_owned(),
            };
            Subscription {
                tenant_id: tenant.into(),
                subscription_id: format!("sub_{s:032x}"),
                endpoint_id: format!("e{}", s % 2),
                name: Some(format!("sub-{s}")),
                event_types: vec![pattern],
                status: SubscriptionStatus::Active,
                expire_time: None,
                create_time: s,
                update_time: 0,
                etag: String::new(),
            }
        })
        .collect();
    let index = ResolveIndex::default();
    index.set_catalog(names.iter().map(|n| (n.clone(), false)).collect());
    index.load_tenant(
        tenant,
        Snapshot {
            tenants: vec![Tenant {
                tenant_id: tenant.into(),
                display_name: String::new(),
                state: TenantState::Active,
                settings: TenantSettings::default(),
                create_time: 0,
                update_time: 0,
                delete_time: None,
                etag: String::new(),
            }],
            endpoints,
            subscriptions,
        },
        0,
    );
    let mut i = 0;
    c.bench_function("resolve (100 subscriptions, with secrets)", |b| {
        b.iter(|| {
            i = (i + 7) % names.len();
            black_box(index.resolve(tenant, black_box(&names[i]), 1, true))
        })
    });
    // The answer's bytes as the server sends them, two ways: owned targets
    // turned into the generated message and encoded by prost (the server
    // before the seventh session's follow-up), and encoded in place.
    c.bench_function("resolve to the wire via owned targets and prost", |b| {
        b.iter(|| {
            i = (i + 7) % names.len();
            let (targets, revision) = index
                .resolve(tenant, black_box(&names[i]), 1, true)
                .expect("the tenant is loaded");
            let targets = targets.into_iter().map(Into::into).collect();
            black_box(
                ResolveSubscribersResponse {
                    targets,
                    revision,
                    next_page_token: String::new(),
                }
                .encode_to_vec(),
            )
        })
    });
    c.bench_function("resolve to the wire in place", |b| {
        b.iter(|| {
            i = (i + 7) % names.len();
            let name = black_box(&names[i]);
            black_box(
                index.resolve_with(tenant, name, 1, true, |m, r| EncodedResolve::new(m, r, "")),
            )
        })
    });
}

/// The paged-resolve row: one event type reaching 100,000
/// subscriptions of a tenant, answered whole (what one unpaged call cost
/// the server) against a walk over its 100 pages of 1,000, each encoded as
/// the server sends it. The walk's time over the whole call's is the ratio
/// the target bounds at 2x.
fn paged_walk(c: &mut Criterion) {
    const MATCHES: usize = 100_000;
    const PAGE: usize = 1000;
    let tenant = "bt00001";
    let event = "order.created";
    let endpoints = (0..10)
        .map(|e| Endpoint {
            tenant_id: tenant.into(),
            endpoint_id: format!("e{e}"),
            url: format!("https://hooks.example.com/{tenant}/{e}"),
            description: String::new(),
            enabled: true,
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            previous_secret: None,
            create_time: 0,
            update_time: 0,
            delete_time: None,
            etag: String::new(),
        })
        .collect();
    let subscriptions = (0..MATCHES)
        .map(|s| Subscription {
            tenant_id: tenant.into(),
            // Ids not in insertion order, as generated ids of a busy tenant.
            subscription_id: format!(
                "sub_{:032x}",
                (s as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ),
            endpoint_id: format!("e{}", s % 10),
            name: None,
            event_types: vec![if s % 4 == 0 {
                "order.*".into()
            } else {
                event.into()
            }],
            status: SubscriptionStatus::Active,
            expire_time: None,
            create_time: s as i64,
            update_time: 0,
            etag: String::new(),
        })
        .collect();
    let index = ResolveIndex::default();
    index.set_catalog([(event.to_owned(), false)].into_iter().collect());
    index.load_tenant(
        tenant,
        Snapshot {
            tenants: vec![Tenant {
                tenant_id: tenant.into(),
                display_name: String::new(),
                state: TenantState::Active,
                settings: TenantSettings::default(),
                create_time: 0,
                update_time: 0,
                delete_time: None,
                etag: String::new(),
            }],
            endpoints,
            subscriptions,
        },
        0,
    );
    let mut group = c.benchmark_group("resolve 100,000 matches");
    group.sample_size(10);
    group.bench_function("whole, in one answer", |b| {
        b.iter(|| {
            black_box(
                index.resolve_with(tenant, event, 1, true, |m, r| EncodedResolve::new(m, r, "")),
            )
        })
    });
    group.bench_function("walked in pages of 1000", |b| {
        b.iter(|| {
            let mut after: Option<String> = None;
            let mut pages = 0;
            loop {
                let (last, more) = index
                    .resolve_page_with(tenant, event, 1, true, after.as_deref(), PAGE, |page, r| {
                        black_box(EncodedResolve::new(&page.matches, r, ""));
                        let last = page.matches.last().map(|m| m.subscription_id().to_owned());
                        (last, page.more)
                    })
                    .expect("the tenant is loaded");
                after = last;
                pages += 1;
                if !more {
                    break;
                }
            }
            assert_eq!(pages, MATCHES / PAGE);
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    hmac_verify_and_nonce,
    pattern_matching,
    page_tokens,
    resolve_one_tenant,
    paged_walk
);
criterion_main!(benches);

//! Micro-benchmarks of the hot paths: request signature verification with
//! the nonce check, pattern matching, and the page-token codec.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

use hookplane::auth::NonceStore;
use hookplane::auth::signature::{sign, verify};
use hookplane::domain::EventPattern;
use hookplane::service::PageTokens;

fn hmac_verify_and_nonce(c: &mut Criterion) {
    let key = b"hpsk_0123456789abcdef0123456789abcdef";
    let method = "/hookplane.v1.SubscriptionService/ResolveSubscribers";
    let ts = "1795376651";
    let nonces = NonceStore::new(300);
    let mut n: u64 = 0;
    c.bench_function("hmac verify + nonce check", |b| {
        b.iter(|| {
            n += 1;
            let nonce = format!("nonce-{n:016x}");
            let sig = sign(key, "hp_bench", ts, &nonce, method);
            // Signing is the client's cost; time verification like the server does.
            let ok = verify(key, "hp_bench", ts, &nonce, method, &sig)
                && nonces.check_and_insert("hp_bench", &nonce, 1_795_376_651, 1_795_376_651);
            black_box(ok)
        })
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

criterion_group!(
    benches,
    hmac_verify_and_nonce,
    pattern_matching,
    page_tokens
);
criterion_main!(benches);

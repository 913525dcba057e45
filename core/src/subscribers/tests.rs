use super::packed::Packed;
use super::*;

#[test]
fn packed_strings_come_back_whole_including_empty_ones() {
    let p = Packed::new(["sub_1", "", "ep_é"]);
    assert_eq!([p.get(0), p.get(1), p.get(2)], ["sub_1", "", "ep_é"]);
    let p = Packed::new(["", "x"]);
    assert_eq!([p.get(0), p.get(1)], ["", "x"]);
}

fn endpoint<'a>(
    id: &'a str,
    url: &'a str,
    secrets: &'a [String; 2],
    live: bool,
) -> EndpointState<'a> {
    EndpointState {
        endpoint_id: id,
        url,
        secret: &secrets[0],
        previous_secret: Some((&secrets[1], 2_000)),
        live,
    }
}

fn secrets(id: &str) -> [String; 2] {
    [format!("secret-of-{id}"), format!("old-secret-of-{id}")]
}

fn subscription<'a>(
    id: &'a str,
    endpoint_id: &'a str,
    name: &'a str,
    event_types: &'a [String],
    expire_time: Option<i64>,
) -> SubscriptionState<'a> {
    SubscriptionState {
        subscription_id: id,
        endpoint_id,
        name,
        event_types,
        expire_time,
        active: true,
    }
}

fn targets(
    index: &TenantSubscribers,
    patterns: &Patterns,
    now: i64,
    with_secrets: bool,
) -> Vec<Target> {
    let ids = patterns.resolvable("order.created");
    let matches = index.matches("order.created", &ids, now, with_secrets);
    matches.iter().map(Match::to_target).collect()
}

fn ids(index: &TenantSubscribers, patterns: &Patterns, now: i64) -> Vec<String> {
    targets(index, patterns, now, false)
        .into_iter()
        .map(|t| t.subscription_id)
        .collect()
}

#[test]
fn targets_carry_every_field_and_follow_their_endpoint_by_slot() {
    let patterns = Patterns::default();
    let order_any = ["order.*".to_owned()];
    let (secrets_a, secrets_b) = (secrets("ep_a"), secrets("ep_b"));
    let mut index = TenantSubscribers::new(true);
    index.upsert_endpoint(endpoint("ep_a", "https://a.example/hook", &secrets_a, true));
    // The subscription arrives before its endpoint, as a change can.
    index.upsert_subscription(
        subscription("sub_2", "ep_b", "", &order_any, None),
        &patterns,
    );
    index.upsert_subscription(
        subscription("sub_1", "ep_a", "first", &order_any, None),
        &patterns,
    );
    assert_eq!(
        ids(&index, &patterns, 1_000),
        ["sub_1"],
        "ep_b is not known yet"
    );

    index.upsert_endpoint(endpoint("ep_b", "https://b.example/hook", &secrets_b, true));
    let found = targets(&index, &patterns, 1_000, true);
    assert_eq!(
        found[0],
        Target {
            subscription_id: "sub_1".into(),
            endpoint_id: "ep_a".into(),
            name: "first".into(),
            url: "https://a.example/hook".into(),
            matched_pattern: "order.*".into(),
            signing_secrets: secrets_a.to_vec(),
        }
    );
    assert_eq!(found[1].subscription_id, "sub_2");
    assert_eq!(found[1].name, "");
    assert_eq!(found[1].url, "https://b.example/hook");

    index.upsert_endpoint(endpoint(
        "ep_a",
        "https://a.example/hook",
        &secrets_a,
        false,
    ));
    assert_eq!(
        ids(&index, &patterns, 1_000),
        ["sub_2"],
        "a disabled endpoint drops out"
    );
    index.upsert_endpoint(endpoint(
        "ep_a",
        "https://a2.example/hook",
        &secrets_a,
        true,
    ));
    let found = targets(&index, &patterns, 3_000, true);
    assert_eq!(
        found[0].url, "https://a2.example/hook",
        "back, with its new URL"
    );
    assert_eq!(
        found[0].signing_secrets,
        [secrets_a[0].clone()],
        "the previous secret is past its expiry"
    );
    assert!(
        targets(&index, &patterns, 1_000, false)[0]
            .signing_secrets
            .is_empty()
    );
    index.remove_endpoint("ep_b");
    assert_eq!(
        ids(&index, &patterns, 1_000),
        ["sub_1"],
        "a deleted endpoint drops out"
    );
}

#[test]
fn expired_inactive_and_suspended_subscriptions_do_not_resolve() {
    let patterns = Patterns::default();
    let exact = ["order.created".to_owned()];
    let s = secrets("ep");
    let mut index = TenantSubscribers::new(true);
    index.upsert_endpoint(endpoint("ep", "https://a.example/hook", &s, true));
    index.upsert_subscription(
        subscription("sub_1", "ep", "", &exact, Some(500)),
        &patterns,
    );
    index.upsert_subscription(subscription("sub_2", "ep", "", &exact, None), &patterns);
    assert_eq!(ids(&index, &patterns, 499), ["sub_1", "sub_2"]);
    assert_eq!(
        ids(&index, &patterns, 500),
        ["sub_2"],
        "expired at its instant"
    );

    let mut disabled = subscription("sub_2", "ep", "", &exact, None);
    disabled.active = false;
    index.upsert_subscription(disabled, &patterns);
    assert!(ids(&index, &patterns, 0) == ["sub_1"] && index.len() == 1);

    index.set_active(false);
    assert!(
        ids(&index, &patterns, 0).is_empty(),
        "a suspended tenant reaches no one"
    );
    index.set_active(true);
    index.remove_subscription("sub_1", &patterns);
    assert!(ids(&index, &patterns, 0).is_empty() && index.is_empty());
}

/// Every page after the one before, from the first, as ids.
fn walk(
    index: &TenantSubscribers,
    patterns: &Patterns,
    limit: usize,
    now: i64,
) -> Vec<Vec<String>> {
    let ids = patterns.resolvable("order.created");
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = index.matches_page("order.created", &ids, now, false, after.as_deref(), limit);
        let page_ids: Vec<String> = page
            .matches
            .iter()
            .map(|m| m.subscription_id().to_owned())
            .collect();
        assert!(page_ids.len() <= limit);
        after = page_ids.last().cloned();
        pages.push(page_ids);
        if !page.more {
            return pages;
        }
    }
}

#[test]
fn a_walk_over_pages_returns_every_match_once_in_order() {
    let patterns = Patterns::default();
    let (exact, wild) = (["order.created".to_owned()], ["order.*".to_owned()]);
    let s = secrets("ep");
    let mut index = TenantSubscribers::new(true);
    index.upsert_endpoint(endpoint("ep", "https://a.example/hook", &s, true));
    let ids: Vec<String> = (0..257)
        .map(|i| format!("sub_{:04}", (i * 7919) % 1000))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let types = if i % 3 == 0 { &wild } else { &exact };
        let expire = (i % 10 == 0).then_some(500);
        index.upsert_subscription(subscription(id, "ep", "", types, expire), &patterns);
    }
    let all = ids_of(&index, &patterns, 1_000);
    assert_eq!(all.len(), 257 - 26, "the expired ones are left out");
    for limit in [1, 10, 100, 231, 1000] {
        let pages = walk(&index, &patterns, limit, 1_000);
        assert_eq!(pages.concat(), all, "pages of {limit}");
        assert!(pages.iter().rev().skip(1).all(|p| p.len() == limit));
    }

    // A write between pages: the walk goes on from where it was, and sees
    // what was written after its position.
    let ids_page = patterns.resolvable("order.created");
    let first = index.matches_page("order.created", &ids_page, 1_000, false, None, 100);
    let after = first.matches.last().map(|m| m.subscription_id().to_owned());
    drop(first);
    index.upsert_subscription(subscription("sub_9999", "ep", "", &exact, None), &patterns);
    index.remove_subscription(&all[150], &patterns);
    let mut rest = Vec::new();
    let mut after = after;
    loop {
        let page = index.matches_page(
            "order.created",
            &ids_page,
            1_000,
            false,
            after.as_deref(),
            100,
        );
        rest.extend(page.matches.iter().map(|m| m.subscription_id().to_owned()));
        after = rest.last().cloned();
        if !page.more {
            break;
        }
    }
    let mut expected: Vec<String> = all[100..]
        .iter()
        .filter(|id| **id != all[150])
        .cloned()
        .collect();
    expected.push("sub_9999".into());
    assert_eq!(rest, expected);
}

fn ids_of(index: &TenantSubscribers, patterns: &Patterns, now: i64) -> Vec<String> {
    ids(index, patterns, now)
}

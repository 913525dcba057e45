//! The page-size rules on more rows than one capped page holds: 0 means
//! 50, more than 1000 is treated as 1000 (not refused), and paging through
//! everything yields every row once, in creation order.

use std::future::Future;

use hookplane::proto::{ListSubscriptionsRequest, ListTenantsRequest};
use tokio::task::JoinSet;

use crate::harness::*;

/// More rows than the largest page.
const ROWS: usize = 1005;
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 1000;
/// Creates at once while filling a table.
const PARALLEL: usize = 16;

/// One page of any List: the keys and creation times of its items, the
/// next token and the total.
struct Page {
    items: Vec<(String, (i64, i32))>,
    next_page_token: String,
    total_size: i32,
}

/// Runs `create(i)` for every `i` in `0..ROWS`, `PARALLEL` at a time.
async fn fill<F, Fut>(create: F)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    for i in 0..ROWS {
        if tasks.len() >= PARALLEL {
            tasks.join_next().await.expect("a task").expect("create");
        }
        tasks.spawn(create(i));
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("create");
    }
}

/// Checks the default and the cap of page_size, and that paging by the
/// default walks every row once in creation order; `list(page_size,
/// page_token)` is one List call.
async fn check_page_sizes<F, Fut>(what: &str, rows: usize, list: F)
where
    F: Fn(i32, String) -> Fut,
    Fut: Future<Output = Page>,
{
    assert!(rows > MAX_PAGE, "{what}: more rows than a capped page");
    let first = list(0, String::new()).await;
    assert_eq!(
        first.items.len(),
        DEFAULT_PAGE,
        "{what}: page_size 0 is the default"
    );
    assert!(!first.next_page_token.is_empty(), "{what}: more to come");
    assert_eq!(first.total_size as usize, rows, "{what}: total_size");

    let full = list(MAX_PAGE as i32, String::new()).await;
    assert_eq!(full.items.len(), MAX_PAGE, "{what}: page_size 1000");
    assert!(!full.next_page_token.is_empty(), "{what}: after 1000");
    for page_size in [MAX_PAGE as i32 + 1, 5000, i32::MAX] {
        let capped = list(page_size, String::new()).await;
        assert_eq!(
            capped.items.len(),
            MAX_PAGE,
            "{what}: page_size {page_size} is treated as 1000"
        );
        assert_eq!(
            capped.items, full.items,
            "{what}: page_size {page_size} gives the 1000-row page"
        );
        let rest = list(page_size, capped.next_page_token).await;
        assert_eq!(
            rest.items.len(),
            rows - MAX_PAGE,
            "{what}: the rest after a capped page of {page_size}"
        );
        assert!(rest.next_page_token.is_empty(), "{what}: then the end");
    }

    // Every row once, in creation order, by pages of the default size.
    let mut seen: Vec<(String, (i64, i32))> = first.items;
    let mut token = first.next_page_token;
    let mut pages = 1;
    while !token.is_empty() {
        let page = list(0, token).await;
        assert!(page.items.len() <= DEFAULT_PAGE);
        assert_eq!(
            page.total_size as usize, rows,
            "{what}: total on every page"
        );
        seen.extend(page.items);
        token = page.next_page_token;
        pages += 1;
        assert!(pages <= rows, "{what}: paging does not end");
    }
    assert_eq!(pages, rows.div_ceil(DEFAULT_PAGE), "{what}: pages of 50");
    assert!(
        seen.windows(2)
            .all(|w| (w[0].1, &w[0].0) < (w[1].1, &w[1].0)),
        "{what}: creation order (ties by key)"
    );
    let mut keys: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), rows, "{what}: every row exactly once");
}

fn created(ts: &Option<prost_types::Timestamp>) -> (i64, i32) {
    let ts = ts.as_ref().expect("create_time");
    (ts.seconds, ts.nanos)
}

async fn list_subscriptions_default_and_cap_on_more_than_a_page(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    fill(|i| {
        let admin = admin.clone();
        async move {
            create_subscription(
                &admin,
                hookplane::proto::Subscription {
                    subscription_id: format!("s-{i:04}"),
                    ..subscription(TENANT, ENDPOINT, &["*"])
                },
            )
            .await;
        }
    })
    .await;
    check_page_sizes("ListSubscriptions", ROWS, |page_size, page_token| {
        let admin = admin.clone();
        async move {
            let page = ok(admin
                .subscriptions()
                .list_subscriptions(ListSubscriptionsRequest {
                    tenant_id: TENANT.to_owned(),
                    page_size,
                    page_token,
                    ..Default::default()
                })
                .await);
            Page {
                items: page
                    .subscriptions
                    .iter()
                    .map(|s| (s.subscription_id.clone(), created(&s.create_time)))
                    .collect(),
                next_page_token: page.next_page_token,
                total_size: page.total_size,
            }
        }
    })
    .await;
    server.stop().await;
}

async fn list_tenants_default_and_cap_on_more_than_a_page(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    fill(|i| {
        let admin = admin.clone();
        async move {
            create_tenant(&admin, &format!("t-{i:04}")).await;
        }
    })
    .await;
    check_page_sizes("ListTenants", ROWS, |page_size, page_token| {
        let admin = admin.clone();
        async move {
            let page = ok(admin
                .tenants()
                .list_tenants(ListTenantsRequest {
                    page_size,
                    page_token,
                    skip: 0,
                })
                .await);
            Page {
                items: page
                    .tenants
                    .iter()
                    .map(|t| (t.tenant_id.clone(), created(&t.create_time)))
                    .collect(),
                next_page_token: page.next_page_token,
                total_size: page.total_size,
            }
        }
    })
    .await;
    server.stop().await;
}

backend_tests!(
    list_subscriptions_default_and_cap_on_more_than_a_page,
    list_tenants_default_and_cap_on_more_than_a_page,
);

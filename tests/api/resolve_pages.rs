//! ResolveSubscribers in pages ordered by subscription id, and
//! BatchResolveSubscribers: many queries in one call, at one revision.

use hookplane::proto::credential::Role;
use hookplane::proto::{
    BatchResolveSubscribersRequest, ResolveSubscribersRequest, ResolveSubscribersResponse,
};
use tokio::task::JoinSet;
use tonic::Code;

use crate::harness::*;

const EVENT: &str = "command.accepted";

fn query(
    tenant_id: &str,
    event_type: &str,
    page_size: i32,
    page_token: &str,
) -> ResolveSubscribersRequest {
    ResolveSubscribersRequest {
        tenant_id: tenant_id.to_owned(),
        event_type: event_type.to_owned(),
        page_size,
        page_token: page_token.to_owned(),
    }
}

async fn page(clients: &Clients, q: ResolveSubscribersRequest) -> ResolveSubscribersResponse {
    ok(clients.subscriptions().resolve_subscribers(q).await)
}

/// Creates `n` subscriptions of [`TENANT`] on [`EVENT`], 16 at a time;
/// returns their ids, sorted.
async fn create_matching(admin: &Clients, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut running = JoinSet::new();
    for i in 0..n {
        let admin = admin.clone();
        running.spawn(async move {
            create_subscription(&admin, subscription(TENANT, ENDPOINT, &[EVENT]))
                .await
                .subscription_id
        });
        if running.len() == 16 || i + 1 == n {
            while let Some(id) = running.join_next().await {
                ids.push(id.expect("create task"));
            }
        }
    }
    ids.sort();
    ids
}

/// Every target of every page, following next_page_token from the first.
async fn walk(clients: &Clients, page_size: i32) -> (Vec<String>, Vec<usize>) {
    let (mut ids, mut sizes, mut token) = (Vec::new(), Vec::new(), String::new());
    loop {
        let answer = page(clients, query(TENANT, EVENT, page_size, &token)).await;
        assert!(answer.revision > 0);
        sizes.push(answer.targets.len());
        ids.extend(answer.targets.into_iter().map(|t| t.subscription_id));
        if answer.next_page_token.is_empty() {
            return (ids, sizes);
        }
        token = answer.next_page_token;
    }
}

async fn pages_follow_subscription_ids(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let created = create_matching(&admin, 25).await;
    // Not on the event type: never in a page.
    create_subscription(
        &admin,
        subscription(TENANT, ENDPOINT, &["command.completed"]),
    )
    .await;

    let (ids, sizes) = walk(&admin, 10).await;
    assert_eq!(sizes, [10, 10, 5]);
    assert_eq!(ids, created, "each target once, ordered by subscription id");
    let (ids, sizes) = walk(&admin, 0).await;
    assert_eq!((ids, sizes), (created.clone(), vec![25]), "0: up to 1000");

    // A token is bound to its tenant and event type.
    let first = page(&admin, query(TENANT, EVENT, 10, "")).await;
    for q in [
        query(TENANT, "command.completed", 10, &first.next_page_token),
        query(TENANT, EVENT, 10, "not-a-token"),
    ] {
        let status = admin
            .subscriptions()
            .resolve_subscribers(q)
            .await
            .expect_err("foreign token");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(violation_fields(&status), ["page_token"]);
    }
    let status = admin
        .subscriptions()
        .resolve_subscribers(query(TENANT, EVENT, -1, ""))
        .await
        .expect_err("negative page size");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violation_fields(&status), ["page_size"]);
    server.stop().await;
}

/// However many subscriptions match, a page holds at most 1000 targets.
async fn a_page_holds_at_most_1000_targets(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let created = create_matching(&admin, 1_005).await;
    for page_size in [0, 1_000, 5_000] {
        let (ids, sizes) = walk(&admin, page_size).await;
        assert_eq!(sizes, [1_000, 5], "page_size {page_size}");
        assert_eq!(ids, created);
    }
    server.stop().await;
}

async fn batch_answers_every_query_in_order_at_one_revision(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    create_tenant(&admin, "other").await;
    create_endpoint(&admin, "other", ENDPOINT, URL).await;
    let mine = create_matching(&admin, 3).await;
    let theirs = create_subscription(&admin, subscription("other", ENDPOINT, &["command.*"]))
        .await
        .subscription_id;

    let queries = vec![
        query(TENANT, EVENT, 0, ""),
        query("other", EVENT, 0, ""),
        query(TENANT, "command.completed", 0, ""),
        query(TENANT, EVENT, 2, ""),
    ];
    let answer = ok(admin
        .subscriptions()
        .batch_resolve_subscribers(BatchResolveSubscribersRequest { queries })
        .await);
    assert!(answer.revision > 0);
    let ids: Vec<Vec<String>> = answer
        .answers
        .iter()
        .map(|a| {
            a.targets
                .iter()
                .map(|t| t.subscription_id.clone())
                .collect()
        })
        .collect();
    assert_eq!(
        ids,
        [mine.clone(), vec![theirs], vec![], mine[..2].to_vec()]
    );
    assert!(answer.answers.iter().all(|a| a.revision == answer.revision));
    assert!(
        answer.answers[..3]
            .iter()
            .all(|a| a.next_page_token.is_empty())
    );
    // The cut answer's token continues in a single resolve.
    let rest = page(
        &admin,
        query(TENANT, EVENT, 0, &answer.answers[3].next_page_token),
    )
    .await;
    let rest: Vec<String> = rest
        .targets
        .into_iter()
        .map(|t| t.subscription_id)
        .collect();
    assert_eq!(rest, mine[2..]);

    // Bad input names the query and its field; no query, or too many, is refused.
    let refused = |queries: Vec<ResolveSubscribersRequest>, clients: Clients| async move {
        clients
            .subscriptions()
            .batch_resolve_subscribers(BatchResolveSubscribersRequest { queries })
            .await
            .expect_err("refused")
    };
    let status = refused(
        vec![
            query(TENANT, EVENT, 0, ""),
            query(TENANT, "Not An Event", 0, ""),
        ],
        admin.clone(),
    )
    .await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violation_fields(&status), ["queries[1].event_type"]);
    for n in [0, 1_001] {
        let status = refused(vec![query(TENANT, EVENT, 0, ""); n], admin.clone()).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{n} queries");
        assert_eq!(violation_fields(&status), ["queries"]);
    }
    // A tenant's dispatcher may not see another tenant: the whole call fails.
    let dispatcher = server.clients(&create_credential(&admin, TENANT, Role::Dispatcher).await);
    let status = refused(
        vec![query(TENANT, EVENT, 0, ""), query("other", EVENT, 0, "")],
        dispatcher.clone(),
    )
    .await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let own = ok(dispatcher
        .subscriptions()
        .batch_resolve_subscribers(BatchResolveSubscribersRequest {
            queries: vec![query(TENANT, EVENT, 0, "")],
        })
        .await);
    assert_eq!(own.answers.len(), 1);
    assert_eq!(own.answers[0].targets.len(), 3);
    assert!(
        own.answers[0]
            .targets
            .iter()
            .all(|t| !t.signing_secrets.is_empty()),
        "a dispatcher reads secrets"
    );
    server.stop().await;
}

backend_tests!(
    pages_follow_subscription_ids,
    a_page_holds_at_most_1000_targets,
    batch_answers_every_query_in_order_at_one_revision,
);

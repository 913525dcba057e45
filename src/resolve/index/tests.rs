use super::*;
use crate::model::{
    Endpoint, Micros, PreviousSecret, Subscription, SubscriptionStatus, TenantState,
};
use crate::repository::Snapshot;

pub(crate) fn tenant() -> Tenant {
    Tenant {
        tenant_id: "acme".into(),
        display_name: "Acme".into(),
        state: TenantState::Active,
        settings: crate::model::TenantSettings {
            require_verification: false,
            https_only: false,
            default_ttl_seconds: 0,
            max_ttl_seconds: 0,
        },
        create_time: 1,
        update_time: 1,
        delete_time: None,
        etag: "e1".into(),
    }
}

pub(crate) fn endpoint(id: &str, url: &str, enabled: bool) -> Endpoint {
    Endpoint {
        tenant_id: "acme".into(),
        endpoint_id: id.into(),
        url: url.into(),
        description: String::new(),
        enabled,
        secret: format!("secret-of-{id}"),
        previous_secret: Some(PreviousSecret {
            secret: format!("old-secret-of-{id}"),
            expire_time: 2_000,
        }),
        create_time: 1,
        update_time: 1,
        delete_time: None,
        etag: "e".into(),
    }
}

pub(crate) fn subscription(
    id: &str,
    endpoint_id: &str,
    name: Option<&str>,
    created: Micros,
) -> Subscription {
    Subscription {
        tenant_id: "acme".into(),
        subscription_id: id.into(),
        endpoint_id: endpoint_id.into(),
        name: name.map(Into::into),
        event_types: vec!["order.*".into()],
        status: SubscriptionStatus::Active,
        expire_time: None,
        create_time: created,
        update_time: created,
        etag: "e".into(),
    }
}

pub(crate) fn acme(subscriptions: Vec<Subscription>) -> Snapshot {
    Snapshot {
        tenants: vec![tenant()],
        endpoints: vec![endpoint("ep_a", "https://a.example/hook", true)],
        subscriptions,
    }
}

pub(crate) fn index_of(subscriptions: Vec<Subscription>, followed: Revision) -> ResolveIndex {
    let index = ResolveIndex::default();
    index.set_catalog([("order.created".to_owned(), false)].into_iter().collect());
    index.load_tenant("acme", acme(subscriptions), followed);
    index
}

#[test]
fn the_matched_pattern_is_the_first_that_matches_also_past_the_tagged_ones() {
    // Past the 255th pattern the slot lists no longer say which one
    // filed the entry, and the patterns from there on are tested.
    let mut many: Vec<String> = (0..300).map(|i| format!("other.e{i}")).collect();
    many[280] = "order.*".into();
    many[290] = "order.created".into();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let index = index_of(
        vec![
            with_patterns("sub_1", &["order.*", "order.created", "*"]),
            with_patterns("sub_2", &["shipment.sent", "*", "order.created"]),
            with_patterns("sub_3", &["shipment.*", "order.created", "order.*"]),
            with_patterns("sub_4", &many),
        ],
        0,
    );
    index.set_catalog(
        [("order.created", false), ("shipment.sent", false)]
            .map(|(n, d)| (n.to_owned(), d))
            .into_iter()
            .collect(),
    );
    let matched = |event_type: &str| -> Vec<(String, String)> {
        let (targets, _) = index.resolve("acme", event_type, 1_000, false).unwrap();
        targets
            .into_iter()
            .map(|t| (t.subscription_id, t.matched_pattern))
            .collect()
    };
    let pairs = |expected: &[(&str, &str)]| -> Vec<(String, String)> {
        expected
            .iter()
            .map(|(s, p)| ((*s).to_owned(), (*p).to_owned()))
            .collect()
    };
    assert_eq!(
        matched("order.created"),
        pairs(&[
            ("sub_1", "order.*"),
            ("sub_2", "*"),
            ("sub_3", "order.created"),
            ("sub_4", "order.*"),
        ])
    );
    assert_eq!(
        matched("shipment.sent"),
        pairs(&[
            ("sub_1", "*"),
            ("sub_2", "shipment.sent"),
            ("sub_3", "shipment.*"),
        ])
    );
}

fn resolved(index: &ResolveIndex) -> Vec<String> {
    let (targets, _) = index
        .resolve("acme", "order.created", 1_000, false)
        .unwrap();
    targets.into_iter().map(|t| t.subscription_id).collect()
}

#[test]
fn a_written_subscription_resolves_before_the_follower_reads_it() {
    let index = index_of(Vec::new(), 10);
    index.apply_written(&subscription("sub_1", "ep_a", None, 5), 11);
    assert_eq!(resolved(&index), ["sub_1"]);

    // The follower then reads that change with the row as it is now
    // (deleted since, by another replica): the log wins.
    index.apply_subscription("acme", "sub_1", None, 12, 12);
    assert!(resolved(&index).is_empty());
}

#[test]
fn the_follower_leaves_a_write_of_this_process_as_it_applied_it() {
    let index = index_of(Vec::new(), 10);
    index.apply_written(&with_patterns("sub_1", &["order.created"]), 11);
    // The same change read back: the entry is not rebuilt from the
    // read (a read that differs shows whether it was), and the write
    // is forgotten once followed.
    read_back(&index, "sub_1", &["invoice.paid"], 11, 11);
    assert_eq!(resolved(&index), ["sub_1"]);
    let tenant = index.tenant("acme").unwrap();
    assert!(read(&tenant).written.is_empty());

    // A later change to it (another replica's) is applied as read.
    read_back(&index, "sub_1", &["invoice.paid"], 12, 12);
    assert!(resolved(&index).is_empty());
}

#[test]
fn a_written_subscription_never_undoes_what_the_follower_applied_after_it() {
    let index = index_of(Vec::new(), 10);
    // The follower got there first: it read the create (11) and a later
    // delete (12) before the writer came to apply its own create.
    index.apply_subscription("acme", "sub_1", None, 12, 12);
    index.apply_written(&subscription("sub_1", "ep_a", None, 5), 11);
    assert!(resolved(&index).is_empty(), "the older write is skipped");

    // A reload counts as followed up to its revision too.
    let index = index_of(Vec::new(), 20);
    index.apply_written(&subscription("sub_2", "ep_a", None, 5), 19);
    assert!(resolved(&index).is_empty());
    index.apply_written(&subscription("sub_2", "ep_a", None, 5), 21);
    assert_eq!(resolved(&index), ["sub_2"]);
    let mut deleted = subscription("sub_2", "ep_a", None, 5);
    deleted.status = SubscriptionStatus::Deleted;
    index.apply_written(&deleted, 22);
    assert!(
        resolved(&index).is_empty(),
        "a written delete leaves at once"
    );
}

fn with_patterns(id: &str, patterns: &[&str]) -> Subscription {
    let mut s = subscription(id, "ep_a", None, 5);
    s.event_types = patterns.iter().map(|p| (*p).to_owned()).collect();
    s
}

/// The follower applying its read of `id` with `patterns`, last changed
/// at `changed`, with the log followed up to `followed`.
fn read_back(
    index: &ResolveIndex,
    id: &str,
    patterns: &[&str],
    changed: Revision,
    followed: Revision,
) {
    let current = Some(with_patterns(id, patterns));
    index.apply_subscription("acme", id, current, changed, followed);
}

#[test]
fn a_follower_read_from_before_a_write_does_not_undo_it() {
    let index = index_of(vec![with_patterns("sub_1", &["order.*"])], 10);
    // The follower reads the log up to 12, where sub_1 last changed at
    // 11, still matching; meanwhile this process updates sub_1 (13) and
    // applies that first.
    index.apply_written(&with_patterns("sub_1", &["invoice.paid"]), 13);
    assert!(resolved(&index).is_empty());
    read_back(&index, "sub_1", &["order.*"], 11, 12);
    assert!(resolved(&index).is_empty(), "the older read is skipped");

    // A direct delete is not undone by an older read either.
    index.apply_written(&with_patterns("sub_2", &["order.created"]), 14);
    let mut deleted = with_patterns("sub_2", &["order.created"]);
    deleted.status = SubscriptionStatus::Deleted;
    index.apply_written(&deleted, 15);
    read_back(&index, "sub_2", &["order.created"], 14, 14);
    assert!(resolved(&index).is_empty(), "still deleted");

    // Once the follower reads the writes themselves, it applies them
    // (here: changed again since, by another replica) and forgets them.
    read_back(&index, "sub_1", &["order.created"], 16, 16);
    assert_eq!(resolved(&index), ["sub_1"]);
    index.apply_subscription("acme", "sub_2", None, 15, 16);
    let tenant = index.tenant("acme").unwrap();
    assert!(read(&tenant).written.is_empty());
}

#[test]
fn an_older_direct_write_finishing_late_is_skipped() {
    let index = index_of(Vec::new(), 10);
    index.apply_written(&with_patterns("sub_1", &["order.created"]), 12);
    index.apply_written(&with_patterns("sub_1", &["invoice.paid"]), 11);
    assert_eq!(resolved(&index), ["sub_1"]);
}

#[test]
fn a_tenant_reload_from_before_a_write_keeps_the_write() {
    let index = index_of(Vec::new(), 10);
    index.apply_written(&with_patterns("sub_1", &["order.*"]), 12);
    // A reload built from a snapshot taken at 11, before the write.
    index.load_tenant("acme", acme(Vec::new()), 11);
    assert_eq!(resolved(&index), ["sub_1"], "kept over the reload");
    // A reload that has read the write no longer needs to keep it.
    index.load_tenant("acme", acme(Vec::new()), 12);
    assert!(resolved(&index).is_empty(), "deleted since, as read at 12");
}

#[tokio::test]
async fn a_waiting_caller_wakes_the_follower_and_returns_once_applied() {
    let index = Arc::new(ResolveIndex::default());
    index.mark_applied(3);
    // Already applied: no wait, no wake-up.
    index
        .wait_applied(3, std::time::Duration::from_secs(5))
        .await;
    assert!(!index.is_awaited());

    let waiter = tokio::spawn({
        let index = index.clone();
        async move {
            index
                .wait_applied(7, std::time::Duration::from_secs(5))
                .await
        }
    });
    // The follower's side: woken, it sees a caller waiting, applies.
    tokio::time::timeout(std::time::Duration::from_secs(5), index.awaited())
        .await
        .expect("the waiting caller wakes the follower");
    assert!(index.is_awaited());
    index.mark_applied(7);
    tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
        .await
        .expect("the caller returns once its revision is applied")
        .unwrap();
    assert!(!index.is_awaited());
}

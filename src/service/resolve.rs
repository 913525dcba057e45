//! ResolveSubscribers and BatchResolveSubscribers, answered from the
//! replica's in-memory index, a page at a time.

use super::Services;
use crate::auth::Caller;
use crate::domain::{EventTypeName, Permission, TenantId};
use crate::error::{Error, FieldExt, Result};
use crate::model::now_micros;
use crate::repository::Revision;
use crate::resolve::Match;
use hookplane_core::subscribers::Page;

/// Targets per page when the caller asks for none, and at most.
pub const MAX_RESOLVE_PAGE: usize = 1000;

/// Queries in one BatchResolveSubscribers call, at most.
pub const MAX_BATCH_QUERIES: usize = 1000;

/// The encoded size one batch answer stays under, so that it fits a
/// client's default 4 MiB message limit however many targets match; the
/// answers past it are cut short with a next page.
const BATCH_BYTES: usize = 3 << 20;

/// One resolve as the caller asked it.
#[derive(Debug, Clone, Default)]
pub struct ResolveQuery {
    pub tenant_id: String,
    pub event_type: String,
    pub page_size: i32,
    pub page_token: String,
}

impl Services {
    /// One page of the subscriptions `query.event_type` reaches: `render`
    /// makes the answer of the page's matches, the revision the answer
    /// reflects and the next page's token (empty: none). It runs with the
    /// tenant's index read-locked (see
    /// [`crate::resolve::ResolveIndex::resolve_with`]).
    pub async fn resolve_subscribers<R>(
        &self,
        caller: &Caller,
        query: &ResolveQuery,
        render: impl FnOnce(&[Match<'_>], Revision, &str) -> R,
    ) -> Result<R> {
        let checked = self.check_query(caller, query, "")?;
        let with_secrets = caller.has(Permission::SecretsRead);
        let tenant = checked.tenant.as_str();
        self.index
            .resolve_page_with(
                tenant,
                &query.event_type,
                now_micros(),
                with_secrets,
                checked.after.as_deref(),
                checked.limit,
                |page, revision| {
                    let mut unbounded = usize::MAX;
                    let (page, next) = checked.cut(&page, &mut unbounded);
                    let token = next.map(|after| self.next_page_token(&checked, after));
                    render(page, revision, token.as_deref().unwrap_or(""))
                },
            )
            .ok_or_else(|| Error::NotFound(format!("tenant {tenant} not found")))
    }

    /// Several resolves, each one page, all answered from the index as of
    /// one revision, which it returns: every answer reflects at least it,
    /// as a single resolve's does. `answer` is given each query's page in
    /// order, with that revision and the next page's token (empty: none),
    /// while the tenant's index is read-locked. A query for a tenant the
    /// caller may not see fails the whole call. The answers together stay
    /// under [`BATCH_BYTES`]: those past it are cut short, with a next page.
    pub async fn batch_resolve_subscribers(
        &self,
        caller: &Caller,
        queries: &[ResolveQuery],
        mut answer: impl FnMut(&[Match<'_>], Revision, &str),
    ) -> Result<Revision> {
        if queries.is_empty() || queries.len() > MAX_BATCH_QUERIES {
            return Err(Error::invalid(
                "queries",
                format!("must hold 1 to {MAX_BATCH_QUERIES} queries"),
            ));
        }
        let checked = queries
            .iter()
            .enumerate()
            .map(|(i, q)| self.check_query(caller, q, &format!("queries[{i}].")))
            .collect::<Result<Vec<_>>>()?;
        let with_secrets = caller.has(Permission::SecretsRead);
        let revision = self.index.applied();
        let now = now_micros();
        let mut budget = BATCH_BYTES;
        for (i, checked) in checked.iter().enumerate() {
            let tenant = checked.tenant.as_str();
            self.index
                .resolve_page_with(
                    tenant,
                    checked.event_type,
                    now,
                    with_secrets,
                    checked.after.as_deref(),
                    checked.limit,
                    |page, _| {
                        let (page, next) = checked.cut(&page, &mut budget);
                        let token = next.map(|after| self.next_page_token(checked, after));
                        answer(page, revision, token.as_deref().unwrap_or(""));
                    },
                )
                .ok_or_else(|| {
                    Error::NotFound(format!("queries[{i}]: tenant {tenant} not found"))
                })?;
        }
        Ok(revision)
    }

    /// Checks one query; `at` prefixes the fields its violations name.
    /// Allocates nothing for a plain first page: resolve is the hottest
    /// call.
    fn check_query<'q>(
        &self,
        caller: &Caller,
        query: &'q ResolveQuery,
        at: &str,
    ) -> Result<CheckedQuery<'q>> {
        let tenant = self.tenant_scope_at(
            caller,
            Permission::SubscribersResolve,
            &query.tenant_id,
            &field(at, "tenant_id"),
        )?;
        if let Err(e) = EventTypeName::parse(&query.event_type) {
            return Err(e).field(&field(at, "event_type"));
        }
        let limit = match query.page_size {
            n if n < 0 => {
                return Err(Error::invalid(
                    field(at, "page_size"),
                    "must not be negative",
                ));
            }
            0 => MAX_RESOLVE_PAGE,
            n => usize::try_from(n).map_or(MAX_RESOLVE_PAGE, |n| n.min(MAX_RESOLVE_PAGE)),
        };
        let mut checked = CheckedQuery {
            tenant,
            event_type: &query.event_type,
            after: None,
            limit,
        };
        if !query.page_token.is_empty() {
            let (_, after) = self
                .tokens
                .decode(&checked.scope(), &query.page_token)
                .map_err(|_| {
                    Error::invalid(
                        field(at, "page_token"),
                        "is not a next_page_token of this tenant and event type",
                    )
                })?;
            checked.after = Some(after);
        }
        Ok(checked)
    }

    /// The token of the page after `after` of `query`.
    fn next_page_token(&self, query: &CheckedQuery<'_>, after: String) -> String {
        self.tokens.encode(&query.scope(), &(0, after))
    }
}

/// `name` under the prefix `at` (e.g. `queries[3].`).
fn field<'a>(at: &str, name: &'a str) -> std::borrow::Cow<'a, str> {
    if at.is_empty() {
        name.into()
    } else {
        format!("{at}{name}").into()
    }
}

/// A query that passed its checks.
struct CheckedQuery<'q> {
    tenant: TenantId,
    event_type: &'q str,
    /// The last subscription id of the page before.
    after: Option<String>,
    limit: usize,
}

impl CheckedQuery<'_> {
    /// What its page tokens are bound to: a token is good for the same
    /// tenant and event type only.
    fn scope(&self) -> String {
        format!(
            "ResolveSubscribers\0{}\0{}",
            self.tenant.as_str(),
            self.event_type
        )
    }

    /// The part of `page` (the matches after the page before, at most
    /// `limit`) that fits while `budget` bytes last (it is spent). Returns
    /// it, and the position to resume after when more matches follow.
    fn cut<'m, 'a>(
        &self,
        page: &'m Page<'a>,
        budget: &mut usize,
    ) -> (&'m [Match<'a>], Option<String>) {
        let matches = &page.matches;
        let mut end: usize = 0;
        while end < matches.len() {
            let size = encoded_size(&matches[end]);
            if size > *budget {
                break;
            }
            *budget -= size;
            end += 1;
        }
        let next = (end < matches.len() || page.more).then(|| match end.checked_sub(1) {
            Some(last) => matches[last].subscription_id().to_owned(),
            // Nothing fitted: the next page starts where this one did.
            None => self.after.clone().unwrap_or_default(),
        });
        (&matches[..end], next)
    }
}

/// About what a target takes in an answer: its strings and their framing.
fn encoded_size(m: &Match<'_>) -> usize {
    const FRAMING: usize = 3 * 7;
    m.subscription_id().len()
        + m.endpoint_id().len()
        + m.name().len()
        + m.url().len()
        + m.matched_pattern().len()
        + m.signing_secrets().map(|s| s.len() + 3).sum::<usize>()
        + FRAMING
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::Snapshot;
    use crate::resolve::ResolveIndex;
    use crate::resolve::fixtures::{endpoint, subscription, tenant};

    /// "acme" with five subscriptions to order.created, sub_1 to sub_5.
    fn index() -> ResolveIndex {
        let index = ResolveIndex::default();
        index.set_catalog([("order.created".to_owned(), false)].into_iter().collect());
        let snapshot = Snapshot {
            tenants: vec![tenant()],
            endpoints: vec![endpoint("ep_a", "https://a.example/hook", true)],
            // Created in reverse order: pages follow ids, not creation.
            subscriptions: (1..=5)
                .map(|i| subscription(&format!("sub_{i}"), "ep_a", None, 100 - i))
                .collect(),
        };
        index.load_tenant("acme", snapshot, 0);
        index
    }

    fn query(after: Option<&str>, limit: usize) -> CheckedQuery<'static> {
        CheckedQuery {
            tenant: TenantId::parse("acme").unwrap(),
            event_type: "order.created",
            after: after.map(str::to_owned),
            limit,
        }
    }

    /// The ids of the page `query` cuts with `budget`, and where the next
    /// page starts.
    fn cut(query: &CheckedQuery<'_>, budget: &mut usize) -> (Vec<String>, Option<String>) {
        let after = query.after.as_deref();
        index()
            .resolve_page_with(
                "acme",
                "order.created",
                0,
                false,
                after,
                query.limit,
                |page, _| {
                    let (page, next) = query.cut(&page, budget);
                    let ids = page
                        .iter()
                        .map(|m| m.subscription_id().to_owned())
                        .collect();
                    (ids, next)
                },
            )
            .unwrap()
    }

    #[test]
    fn pages_follow_ids_after_the_last_one_returned() {
        let mut budget = usize::MAX;
        let unbounded = &mut budget;
        assert_eq!(
            cut(&query(None, 2), unbounded),
            (vec!["sub_1".into(), "sub_2".into()], Some("sub_2".into()))
        );
        assert_eq!(
            cut(&query(Some("sub_2"), 2), unbounded),
            (vec!["sub_3".into(), "sub_4".into()], Some("sub_4".into()))
        );
        assert_eq!(
            cut(&query(Some("sub_4"), 2), unbounded),
            (vec!["sub_5".into()], None)
        );
        assert_eq!(cut(&query(None, 5), unbounded).1, None, "exactly the rest");
    }

    #[test]
    fn the_byte_budget_cuts_a_page_and_is_spent() {
        let one = {
            let mut probe = usize::MAX;
            cut(&query(None, 1), &mut probe);
            usize::MAX - probe
        };
        // Room for two targets and a bit: two, and the rest on the next page.
        let mut budget = 2 * one + one / 2;
        assert_eq!(
            cut(&query(None, 5), &mut budget),
            (vec!["sub_1".into(), "sub_2".into()], Some("sub_2".into()))
        );
        assert_eq!(budget, one / 2);
        // No room at all: an empty page that starts again where it was.
        assert_eq!(
            cut(&query(Some("sub_2"), 5), &mut budget),
            (vec![], Some("sub_2".into()))
        );
        assert_eq!(cut(&query(None, 5), &mut 0), (vec![], Some(String::new())));
    }
}

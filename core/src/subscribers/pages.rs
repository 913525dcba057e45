//! Answers in pages: the page of matches after a subscription id. A walk
//! over an event type that reaches many subscriptions sorts its matches
//! once and keeps that order while the tenant's subscriptions stay as they
//! are, so each later page seeks to its start instead of resolving every
//! match again.

use std::sync::{Arc, Mutex};

use super::matching::Match;
use super::patterns::Resolvable;
use super::tenant::{Tagged, TenantSubscribers};
use crate::Micros;

/// Walks kept at once per tenant: a few dispatchers paging different event
/// types of one tenant at the same time each keep theirs.
const KEPT: usize = 4;

/// An event type's matches in answer order, as of one version of the
/// tenant's subscriptions. Expiry and endpoints are checked per page, as
/// they change without a new version.
struct Order {
    version: u64,
    name: u32,
    tags: Box<[Tagged]>,
}

/// The orders a tenant keeps, newest first.
#[derive(Default)]
pub(crate) struct Orders(Mutex<Vec<Arc<Order>>>);

impl Orders {
    fn find(&self, version: u64, name: u32) -> Option<Arc<Order>> {
        let orders = self.0.lock().unwrap_or_else(|e| e.into_inner());
        orders
            .iter()
            .find(|o| o.version == version && o.name == name)
            .cloned()
    }

    fn keep(&self, order: Arc<Order>) {
        let mut orders = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Stale ones go first: they can never be used again.
        orders.retain(|o| o.version == order.version && o.name != order.name);
        orders.insert(0, order);
        orders.truncate(KEPT);
    }
}

/// One page of an answer.
pub struct Page<'a> {
    /// At most the limit asked for, in answer order.
    pub matches: Vec<Match<'a>>,
    /// More matches follow the last of these.
    pub more: bool,
}

impl TenantSubscribers {
    /// The live matches of `event_type` after subscription id `after` (from
    /// the first when `None`), at most `limit`, in the order of
    /// [`matches`](Self::matches), which a walk over every page returns
    /// whole. A walk of N matches in pages of L costs about one resolve of
    /// N, not N / L of them.
    pub fn matches_page(
        &self,
        event_type: &str,
        ids: &Resolvable,
        now: Micros,
        with_secrets: bool,
        after: Option<&str>,
        limit: usize,
    ) -> Page<'_> {
        if !self.active || limit == 0 {
            return Page {
                matches: Vec::new(),
                more: false,
            };
        }
        let order = match after.and_then(|_| self.orders.find(self.version, ids.name)) {
            Some(order) => order,
            None => {
                let tags = self.tags(ids);
                if after.is_none() && tags.len() <= limit {
                    // One page holds everything: the ordinary resolve.
                    return Page {
                        matches: self.matches(event_type, ids, now, with_secrets),
                        more: false,
                    };
                }
                self.order(ids.name, tags)
            }
        };
        let start = after.map_or(0, |after| {
            order
                .tags
                .partition_point(|t| self.entry(*t).is_some_and(|e| e.subscription_id() <= after))
        });
        let mut live = order.tags[start..]
            .iter()
            .filter_map(|t| self.live_match(*t, event_type, now, with_secrets));
        let matches: Vec<Match<'_>> = live.by_ref().take(limit).collect();
        let more = live.next().is_some();
        Page { matches, more }
    }

    /// `tags` in answer order, kept for the pages after this one.
    fn order(&self, name: u32, mut tags: Vec<Tagged>) -> Arc<Order> {
        tags.retain(|t| self.entry(*t).is_some());
        tags.sort_unstable_by(|a, b| {
            let id = |t: &Tagged| self.entry(*t).map_or("", |e| e.subscription_id());
            id(a).cmp(id(b))
        });
        let order = Arc::new(Order {
            version: self.version,
            name,
            tags: tags.into_boxed_slice(),
        });
        self.orders.keep(order.clone());
        order
    }
}

//! Paging: caller paging into a repository page, a page into a listing with
//! its next-page token, and the same keyset page cut from items in memory.

use super::Services;
use crate::error::Result;
use crate::model::Micros;
use crate::repository::{Page, PageRequest};

pub const DEFAULT_PAGE_SIZE: u64 = 50;
pub const MAX_PAGE_SIZE: u64 = 1000;

/// Paging input as the caller gave it, already range-checked.
#[derive(Debug, Clone, Default)]
pub struct Paging {
    pub page_size: u64,
    pub page_token: String,
    pub skip: u64,
}

#[derive(Debug, Clone)]
pub struct Listed<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
    pub total_size: i32,
}

impl Services {
    /// Turns caller paging into a repository page for a listing identified
    /// by `scope` (the list method and its filters).
    pub(super) fn page_request(&self, scope: &str, paging: &Paging) -> Result<PageRequest> {
        let after = if paging.page_token.is_empty() {
            None
        } else {
            Some(self.tokens.decode(scope, &paging.page_token)?)
        };
        Ok(PageRequest {
            after,
            skip: paging.skip,
            limit: if paging.page_size == 0 {
                DEFAULT_PAGE_SIZE
            } else {
                paging.page_size.min(MAX_PAGE_SIZE)
            },
        })
    }

    pub(super) fn listed<T>(
        &self,
        scope: &str,
        page: Page<T>,
        position: impl Fn(&T) -> (Micros, String),
    ) -> Listed<T> {
        let next_page_token = match (page.has_more, page.items.last()) {
            (true, Some(last)) => self.tokens.encode(scope, &position(last)),
            _ => String::new(),
        };
        Listed {
            items: page.items,
            next_page_token,
            total_size: i32::try_from(page.total).unwrap_or(i32::MAX),
        }
    }
}

/// The page `request` selects from `items`, which are in listing order
/// (creation time, then key): the same page the repository's keyset read
/// returns, for a listing filtered in memory.
pub(super) fn page_in_memory<T>(
    items: Vec<T>,
    request: &PageRequest,
    position: impl Fn(&T) -> (Micros, &str),
) -> Page<T> {
    let total = items.len() as u64;
    let mut rest: Vec<T> = items
        .into_iter()
        .filter(|item| match &request.after {
            None => true,
            Some((t, k)) => position(item) > (*t, k.as_str()),
        })
        .skip(usize::try_from(request.skip).unwrap_or(usize::MAX))
        .collect();
    let has_more = rest.len() as u64 > request.limit;
    rest.truncate(usize::try_from(request.limit).unwrap_or(usize::MAX));
    Page {
        items: rest,
        has_more,
        total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items() -> Vec<(Micros, String)> {
        // Two share a creation time, so the key breaks the tie.
        vec![
            (1, "a".into()),
            (2, "a".into()),
            (2, "b".into()),
            (3, "a".into()),
            (4, "a".into()),
        ]
    }

    fn page(after: Option<(Micros, &str)>, skip: u64, limit: u64) -> Page<(Micros, String)> {
        let request = PageRequest {
            after: after.map(|(t, k)| (t, k.to_owned())),
            skip,
            limit,
        };
        page_in_memory(items(), &request, |(t, k)| (*t, k.as_str()))
    }

    #[test]
    fn first_page_says_more_follow() {
        let p = page(None, 0, 2);
        assert_eq!(p.items, vec![(1, "a".into()), (2, "a".into())]);
        assert!(p.has_more);
        assert_eq!(p.total, 5);
    }

    #[test]
    fn after_is_strictly_after_by_time_then_key() {
        let p = page(Some((2, "a")), 0, 10);
        assert_eq!(
            p.items,
            vec![(2, "b".into()), (3, "a".into()), (4, "a".into())]
        );
        assert!(!p.has_more);
        assert_eq!(p.total, 5, "the total ignores paging");
    }

    #[test]
    fn skip_applies_after_the_position() {
        let p = page(Some((1, "a")), 2, 1);
        assert_eq!(p.items, vec![(3, "a".into())]);
        assert!(p.has_more);
    }

    #[test]
    fn a_page_that_ends_exactly_at_the_last_item_has_no_more() {
        let p = page(Some((2, "b")), 0, 2);
        assert_eq!(p.items, vec![(3, "a".into()), (4, "a".into())]);
        assert!(!p.has_more);
    }
}

//! Resolve over the index: the tenant's subscribers, read in place while
//! they are locked (the matching itself is hookplane-core's, shared with
//! the client library's local resolver).

use crate::model::Micros;
use crate::repository::Revision;

use hookplane_core::subscribers::Page;

use super::{Match, ResolveIndex, Target, read};

impl ResolveIndex {
    /// Targets for an event, and the revision the answer reflects; `None`
    /// when the tenant does not exist (as far as this replica knows).
    pub fn resolve(
        &self,
        tenant_id: &str,
        event_type: &str,
        now: Micros,
        with_secrets: bool,
    ) -> Option<(Vec<Target>, Revision)> {
        self.resolve_with(
            tenant_id,
            event_type,
            now,
            with_secrets,
            |matches, revision| (matches.iter().map(Match::to_target).collect(), revision),
        )
    }

    /// What `render` makes of the subscriptions an event reaches and the
    /// revision that answer reflects; `None` when the tenant does not exist
    /// (as far as this replica knows). `render` runs while the tenant's
    /// index is read-locked, so it should be quick.
    pub fn resolve_with<R>(
        &self,
        tenant_id: &str,
        event_type: &str,
        now: Micros,
        with_secrets: bool,
        render: impl FnOnce(&[Match<'_>], Revision) -> R,
    ) -> Option<R> {
        let revision = self.applied();
        let index = self.tenant(tenant_id)?;
        let resolvable = read(&self.resolvable);
        let Some(ids) = resolvable.get(event_type) else {
            return Some(render(&[], revision));
        };
        let index = read(&index);
        Some(render(
            &index
                .subscribers
                .matches(event_type, ids, now, with_secrets),
            revision,
        ))
    }

    /// What `render` makes of one page of the answer (the matches after
    /// subscription id `after`, at most `limit`, and whether more follow)
    /// and the revision it reflects; `None` when the tenant does not exist
    /// (as far as this replica knows). Later pages of a walk seek to their
    /// start (see hookplane-core's `pages.rs`). `render` runs while the
    /// tenant's index is read-locked.
    #[allow(clippy::too_many_arguments)]
    pub fn resolve_page_with<R>(
        &self,
        tenant_id: &str,
        event_type: &str,
        now: Micros,
        with_secrets: bool,
        after: Option<&str>,
        limit: usize,
        render: impl FnOnce(Page<'_>, Revision) -> R,
    ) -> Option<R> {
        let revision = self.applied();
        let index = self.tenant(tenant_id)?;
        let resolvable = read(&self.resolvable);
        let Some(ids) = resolvable.get(event_type) else {
            let none = Page {
                matches: Vec::new(),
                more: false,
            };
            return Some(render(none, revision));
        };
        let index = read(&index);
        let page = index
            .subscribers
            .matches_page(event_type, ids, now, with_secrets, after, limit);
        Some(render(page, revision))
    }
}

//! Applying one changed subscription or endpoint: as the follower read it,
//! or as this process has just written it.

use crate::model::{Endpoint, Subscription};
use crate::repository::Revision;

use super::{ResolveIndex, read, write};

impl ResolveIndex {
    /// Applies one subscription's state as its last change, at `changed`,
    /// left it (None: it is gone), read with the change log up to
    /// `followed`. A direct write newer than `changed` stays:
    /// the read was taken before it. So does one at `changed` itself: that
    /// change is this process's own write, already applied as written, and
    /// rebuilding it from the read was the follower's main cost under
    /// creates.
    pub fn apply_subscription(
        &self,
        tenant_id: &str,
        subscription_id: &str,
        current: Option<Subscription>,
        changed: Revision,
        followed: Revision,
    ) {
        let Some(index) = self.tenant(tenant_id) else {
            return;
        };
        let mut index = write(&index);
        let written = index
            .written
            .get(subscription_id)
            .is_some_and(|(revision, _)| *revision >= changed);
        index.follow(followed);
        if written {
            return;
        }
        match current {
            Some(s) => index.upsert_subscription(&s, &self.patterns),
            None => index.remove_subscription(subscription_id, &self.patterns),
        }
    }

    /// Applies a subscription this process has just written at `revision`,
    /// so the writer's caller can resolve it at once, without waiting for
    /// the follower. Skipped when the follower has already applied the
    /// tenant's changes up to `revision`: its state is then as new or newer.
    /// Otherwise the follower still applies this change later, with the
    /// state it reads then, so the index ends up where the log says.
    ///
    /// Until the follower reaches `revision`, the write is also kept aside,
    /// so that neither an older read the follower applies nor a tenant
    /// reload built from one undoes it; an older direct write of the same
    /// subscription that finishes later is skipped too.
    pub fn apply_written(&self, s: &Subscription, revision: Revision) {
        // The tenant map stays read-locked, so a reload cannot swap the
        // tenant's index out between this write and the reload's carrying
        // over of kept writes.
        let tenants = read(&self.tenants);
        let Some(index) = tenants.get(&s.tenant_id) else {
            // Not loaded yet: the follower loads the tenant whole.
            return;
        };
        let mut index = write(index);
        let newer_written = index
            .written
            .get(s.subscription_id.as_str())
            .is_some_and(|(written, _)| *written > revision);
        if index.followed < revision && !newer_written {
            index.upsert_subscription(s, &self.patterns);
            index
                .written
                .insert(s.subscription_id.as_str().into(), (revision, s.clone()));
        }
    }

    /// Applies one endpoint's current state (None: it is gone), read with
    /// the change log up to `followed`.
    pub fn apply_endpoint(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
        current: Option<Endpoint>,
        followed: Revision,
    ) {
        let Some(index) = self.tenant(tenant_id) else {
            return;
        };
        let mut index = write(&index);
        index.follow(followed);
        match current {
            Some(e) => index.upsert_endpoint(&e),
            None => index.remove_endpoint(endpoint_id),
        }
    }
}

//! Per-tenant subscriber indexes: exact event names in a hash map, wildcard
//! patterns in a segment trie. The change-log follower applies each changed
//! subscription or endpoint incrementally; a tenant-level change (state,
//! bulk import) reloads that tenant whole.

use std::collections::HashMap;

/// The index's hot maps hash with foldhash (randomly seeded per process, so
/// still resistant to chosen collisions): SipHash showed up in resolve
/// profiles.
pub(super) type FastMap<K, V> = foldhash::HashMap<K, V>;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use super::trie::PatternTrie;
use crate::domain::EventPattern;
use crate::model::{Endpoint, Micros, Subscription, SubscriptionStatus, Tenant, TenantState};
use crate::repository::{Revision, Snapshot};

/// One subscription to deliver an event to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub subscription_id: String,
    pub endpoint_id: String,
    pub name: String,
    pub url: String,
    pub matched_pattern: String,
    /// Newest first.
    pub signing_secrets: Vec<String>,
}

/// Strings laid end to end in one allocation: a resolve reads all of them,
/// and in an index too big for the CPU cache each allocation it touches is
/// a cache miss (profiles of resolve over 1M subscriptions were dominated
/// by them).
struct Packed<const N: usize> {
    text: Box<str>,
    /// Where each string ends.
    ends: [u32; N],
}

impl<const N: usize> Packed<N> {
    fn new(parts: [&str; N]) -> Self {
        let mut ends = [0; N];
        let mut end = 0;
        for (i, part) in parts.iter().enumerate() {
            end += part.len();
            // Ids, names, URLs and secrets are bounded far below 4 GiB.
            ends[i] = end as u32;
        }
        Packed {
            text: parts.concat().into(),
            ends,
        }
    }

    fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }
}

/// An enabled, live endpoint.
struct IndexedEndpoint {
    /// URL, signing secret.
    text: Packed<2>,
    previous: Option<(Box<str>, Micros)>,
}

/// Kept small: a million of these live in memory.
struct Entry {
    /// Subscription id, name, endpoint id.
    text: Packed<3>,
    /// The endpoint's slot in the tenant's `endpoints`.
    endpoint: u32,
    /// Shared across subscriptions through the index's pattern interner.
    /// The first is held here, the rest behind a pointer: most
    /// subscriptions have one, and a resolve then reads no other memory to
    /// name the matched pattern.
    pattern: Arc<EventPattern>,
    more_patterns: Box<[Arc<EventPattern>]>,
    expire_time: Option<Micros>,
    /// Creation time; with the id, the stable order of answers.
    create_time: Micros,
}

impl Entry {
    fn subscription_id(&self) -> &str {
        self.text.get(0)
    }

    fn patterns(&self) -> impl Iterator<Item = &Arc<EventPattern>> {
        std::iter::once(&self.pattern).chain(self.more_patterns.iter())
    }
}

/// One parsed pattern per distinct pattern text, shared by every
/// subscription that uses it; and one id per distinct event type name and
/// name segment, which the index compares instead of strings.
#[derive(Default)]
pub(crate) struct Patterns {
    parsed: std::sync::Mutex<HashMap<Box<str>, Arc<EventPattern>>>,
    ids: std::sync::Mutex<FastMap<Box<str>, u32>>,
}

impl Patterns {
    /// The id of a segment or a whole name, the same for the process's
    /// lifetime (ids are never given back: there is one per distinct
    /// string ever seen).
    fn id(&self, text: &str) -> u32 {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = ids.get(text) {
            return *id;
        }
        let id = ids.len() as u32;
        ids.insert(text.into(), id);
        id
    }

    /// The ids of an event type's name and segments.
    fn resolvable(&self, event_type: &str) -> Resolvable {
        Resolvable {
            name: self.id(event_type),
            segments: event_type.split('.').map(|s| self.id(s)).collect(),
        }
    }

    fn get(&self, raw: &str) -> Option<Arc<EventPattern>> {
        let mut map = self.parsed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = map.get(raw) {
            return Some(p.clone());
        }
        let parsed = Arc::new(EventPattern::parse(raw).ok()?);
        map.insert(raw.into(), parsed.clone());
        Some(parsed)
    }
}

#[derive(Default)]
struct TenantIndex {
    /// The tenant row as of this index's revision: writes start from it and
    /// the database checks its etag, instead of reading it first.
    record: Option<Arc<Tenant>>,
    /// Whether `record` is an ACTIVE tenant, kept here so a resolve need
    /// not read the record.
    active: bool,
    /// Every change to this tenant up to this revision has been applied
    /// from the change log (a write applied here directly is newer only if
    /// its revision is above it).
    followed: Revision,
    /// Subscriptions this process wrote and applied here directly, by id,
    /// with the write's revision and the state written; kept until
    /// `followed` reaches that revision. Until then the follower may still
    /// hold a read from before the write, which must not undo it.
    written: FastMap<Box<str>, (Revision, Subscription)>,
    /// By slot; `None` while the endpoint is disabled, deleted or not yet
    /// seen. A slot stays with its endpoint id for the index's lifetime, so
    /// subscriptions refer to endpoints by slot.
    endpoints: Vec<Option<IndexedEndpoint>>,
    endpoint_slots: FastMap<Box<str>, u32>,
    entries: Vec<Option<Entry>>,
    free: Vec<u32>,
    slots: FastMap<Box<str>, u32>,
    /// By the interned id of the event type name (see [`Patterns::id`]).
    exact: FastMap<u32, Vec<Tagged>>,
    wildcards: PatternTrie,
}

impl TenantIndex {
    fn build(
        tenant: Tenant,
        endpoints: Vec<Endpoint>,
        subscriptions: Vec<Subscription>,
        patterns: &Patterns,
        followed: Revision,
    ) -> Self {
        let mut index = TenantIndex {
            active: tenant.state == TenantState::Active,
            record: Some(Arc::new(tenant)),
            followed,
            ..Default::default()
        };
        for e in endpoints {
            index.upsert_endpoint(e);
        }
        for s in subscriptions {
            index.upsert_subscription(&s, patterns);
        }
        index.entries.shrink_to_fit();
        index.slots.shrink_to_fit();
        index
    }

    /// Records that the follower has applied this tenant's changes up to
    /// `followed`, and forgets direct writes it has thereby caught up with.
    fn follow(&mut self, followed: Revision) {
        self.followed = self.followed.max(followed);
        let followed = self.followed;
        if !self.written.is_empty() {
            self.written.retain(|_, (revision, _)| *revision > followed);
        }
    }

    /// Applies the direct writes of `older` (the index this one replaces)
    /// that are newer than what this one was built from.
    fn keep_written(&mut self, older: &mut TenantIndex, patterns: &Patterns) {
        for (id, (revision, s)) in std::mem::take(&mut older.written) {
            if revision > self.followed {
                self.upsert_subscription(&s, patterns);
                self.written.insert(id, (revision, s));
            }
        }
    }

    fn endpoint_slot(&mut self, endpoint_id: &str) -> u32 {
        if let Some(slot) = self.endpoint_slots.get(endpoint_id) {
            return *slot;
        }
        let slot = self.endpoints.len() as u32;
        self.endpoints.push(None);
        self.endpoint_slots.insert(endpoint_id.into(), slot);
        slot
    }

    fn upsert_endpoint(&mut self, e: Endpoint) {
        let slot = self.endpoint_slot(&e.endpoint_id) as usize;
        self.endpoints[slot] = (e.enabled && e.delete_time.is_none()).then(|| IndexedEndpoint {
            text: Packed::new([&e.url, &e.secret]),
            previous: e.previous_secret.map(|p| (p.secret.into(), p.expire_time)),
        });
    }

    fn remove_endpoint(&mut self, endpoint_id: &str) {
        if let Some(slot) = self.endpoint_slots.get(endpoint_id) {
            self.endpoints[*slot as usize] = None;
        }
    }

    fn remove_subscription(&mut self, subscription_id: &str, interner: &Patterns) {
        let Some(slot) = self.slots.remove(subscription_id) else {
            return;
        };
        if let Some(entry) = self.entries[slot as usize].take() {
            for (i, p) in entry.patterns().enumerate() {
                if p.is_wildcard() {
                    self.wildcards
                        .remove(p.as_str(), tagged(slot, i), |s| interner.id(s));
                } else {
                    let name = interner.id(p.as_str());
                    if let Some(list) = self.exact.get_mut(&name) {
                        list.retain(|t| slot_of(*t) != slot);
                        if list.is_empty() {
                            self.exact.remove(&name);
                        }
                    }
                }
            }
        }
        self.free.push(slot);
    }

    /// Indexes an ACTIVE subscription; anything else leaves the index.
    fn upsert_subscription(&mut self, s: &Subscription, interner: &Patterns) {
        self.remove_subscription(&s.subscription_id, interner);
        if s.status != SubscriptionStatus::Active {
            return;
        }
        let mut patterns = s.event_types.iter().filter_map(|p| interner.get(p));
        let Some(pattern) = patterns.next() else {
            // Nothing it could match (every pattern was checked on the way in).
            return;
        };
        let more_patterns: Box<[Arc<EventPattern>]> = patterns.collect();
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.entries.push(None);
                (self.entries.len() - 1) as u32
            }
        };
        for (i, p) in std::iter::once(&pattern)
            .chain(more_patterns.iter())
            .enumerate()
        {
            if p.is_wildcard() {
                self.wildcards
                    .insert(p.as_str(), tagged(slot, i), |s| interner.id(s));
            } else {
                let name = interner.id(p.as_str());
                self.exact.entry(name).or_default().push(tagged(slot, i));
            }
        }
        self.slots.insert(s.subscription_id.as_str().into(), slot);
        let endpoint = self.endpoint_slot(&s.endpoint_id);
        let name = s.name.as_deref().unwrap_or_default();
        self.entries[slot as usize] = Some(Entry {
            create_time: s.create_time,
            text: Packed::new([&s.subscription_id, name, &s.endpoint_id]),
            endpoint,
            pattern,
            more_patterns,
            expire_time: s.expire_time,
        });
    }

    /// The live subscriptions `event_type` reaches, in the stable order of
    /// answers: creation time, then id. `ids` are the interned ids of its
    /// name and segments.
    fn matches(
        &self,
        event_type: &str,
        ids: &Resolvable,
        now: Micros,
        with_secrets: bool,
    ) -> Vec<Match<'_>> {
        if !self.active {
            return Vec::new();
        }
        let exact = self.exact.get(&ids.name).map_or(&[][..], Vec::as_slice);
        let mut tags: Vec<Tagged> = Vec::with_capacity(exact.len() + 16);
        tags.extend_from_slice(exact);
        self.wildcards.collect(&ids.segments, &mut tags);
        tags.sort_unstable();
        // A slot's lowest tag names the first of its patterns that matched.
        tags.dedup_by_key(|t| slot_of(*t));
        // In an index larger than the CPU's caches, each entry reached and
        // each string it points to is a likely miss. Asking for all the
        // entries first, then for all their strings, lets those misses
        // overlap instead of queueing one behind the other (profiles of
        // resolve over 1M subscriptions were dominated by them).
        for &tag in &tags {
            if let Some(entry) = self.entries.get(slot_of(tag) as usize) {
                prefetch(entry);
            }
        }
        let mut live: Vec<(&Entry, &IndexedEndpoint, Tagged)> = Vec::with_capacity(tags.len());
        live.extend(tags.into_iter().filter_map(|tag| {
            let entry = self.entries.get(slot_of(tag) as usize)?.as_ref()?;
            if entry.expire_time.is_some_and(|t| t <= now) {
                return None;
            }
            let endpoint = self.endpoints.get(entry.endpoint as usize)?.as_ref()?;
            prefetch(entry.text.text.as_ptr());
            prefetch(endpoint.text.text.as_ptr());
            Some((entry, endpoint, tag))
        }));
        let mut found: Vec<Match<'_>> = Vec::with_capacity(live.len());
        found.extend(live.into_iter().filter_map(|(entry, endpoint, tag)| {
            let pattern = match pattern_of(tag) {
                0 => &entry.pattern,
                n if n < LAST_PATTERN => entry.more_patterns.get(n - 1)?,
                // Past the tags' range: test those patterns.
                _ => entry
                    .patterns()
                    .skip(LAST_PATTERN)
                    .find(|p| p.matches(event_type))?,
            };
            let secrets = if with_secrets {
                let previous = endpoint
                    .previous
                    .as_ref()
                    .filter(|(_, until)| *until > now)
                    .map(|(previous, _)| &**previous);
                [Some(endpoint.text.get(1)), previous]
            } else {
                [None, None]
            };
            Some(Match {
                entry,
                endpoint,
                pattern,
                secrets,
            })
        }));
        found.sort_by(|a, b| {
            (a.entry.create_time, a.entry.subscription_id())
                .cmp(&(b.entry.create_time, b.entry.subscription_id()))
        });
        found
    }
}

/// An entry in a slot list: the entry's slot and the index of the pattern
/// that filed it there (capped at [`LAST_PATTERN`]), so that a resolve names
/// the matched pattern without testing patterns again.
type Tagged = u64;

const PATTERN_BITS: u32 = 8;
const LAST_PATTERN: usize = (1 << PATTERN_BITS) - 1;

fn tagged(slot: u32, pattern: usize) -> Tagged {
    (u64::from(slot) << PATTERN_BITS) | pattern.min(LAST_PATTERN) as u64
}

fn slot_of(tag: Tagged) -> u32 {
    (tag >> PATTERN_BITS) as u32
}

fn pattern_of(tag: Tagged) -> usize {
    (tag & LAST_PATTERN as u64) as usize
}

/// What a resolve needs of a catalog entry: the interned ids of its name
/// and of its segments.
struct Resolvable {
    name: u32,
    segments: Box<[u32]>,
}

/// Asks the CPU to start loading the memory `value` starts at (its first
/// and last cache lines), without waiting for it. A hint only: it reads
/// nothing the program sees and never faults.
#[inline(always)]
fn prefetch<T>(value: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let first = value.cast::<i8>();
        // SAFETY: a prefetch never faults, whatever the address, and
        // changes nothing but the cache.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(first) };
        // For a single byte (the start of a string) there is no last line
        // to ask for; the size is known when compiling, so this costs
        // nothing on the request path.
        if std::mem::size_of::<T>() > 1 {
            let last = first.wrapping_add(std::mem::size_of::<T>() - 1);
            // SAFETY: as above.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(last) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// One subscription an event reaches, read in place from a tenant's index
/// while it is locked: answers are written from these without copying the
/// strings first.
pub struct Match<'a> {
    entry: &'a Entry,
    endpoint: &'a IndexedEndpoint,
    pattern: &'a EventPattern,
    /// The endpoint's live secrets, newest first, when asked for.
    secrets: [Option<&'a str>; 2],
}

impl<'a> Match<'a> {
    pub fn subscription_id(&self) -> &'a str {
        self.entry.text.get(0)
    }

    pub fn endpoint_id(&self) -> &'a str {
        self.entry.text.get(2)
    }

    /// Empty when the subscription has none.
    pub fn name(&self) -> &'a str {
        self.entry.text.get(1)
    }

    pub fn url(&self) -> &'a str {
        self.endpoint.text.get(0)
    }

    /// The subscription's first pattern that matches the event type.
    pub fn matched_pattern(&self) -> &'a str {
        self.pattern.as_str()
    }

    /// Newest first; none unless the caller asked for secrets.
    pub fn signing_secrets(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        self.secrets.into_iter().flatten()
    }

    pub fn to_target(&self) -> Target {
        // String::from, not to_string(): the latter goes through the
        // formatter and grows the buffer as it writes.
        Target {
            subscription_id: String::from(self.subscription_id()),
            endpoint_id: String::from(self.endpoint_id()),
            name: String::from(self.name()),
            url: String::from(self.url()),
            matched_pattern: String::from(self.matched_pattern()),
            signing_secrets: self.signing_secrets().map(String::from).collect(),
        }
    }
}

/// The catalog as pattern checks need it: name to deprecated.
pub type Catalog = FastMap<String, bool>;

/// Every tenant's index plus the catalog, and the revision applied.
pub struct ResolveIndex {
    tenants: RwLock<FastMap<String, Arc<RwLock<TenantIndex>>>>,
    catalog: RwLock<Arc<Catalog>>,
    /// The catalog's names with the ids of their segments: what a resolve
    /// looks the event type up in.
    resolvable: RwLock<FastMap<Box<str>, Resolvable>>,
    patterns: Patterns,
    applied: watch::Sender<Revision>,
    /// The same revision, for readers that only look: every resolve reads
    /// it, and a load does not write to a line both cores share, as taking
    /// the watch's lock does.
    applied_now: AtomicI64,
    /// Woken when a caller waits for the follower to reach a revision.
    awaited: tokio::sync::Notify,
    /// Callers waiting for the follower right now.
    waiting: AtomicUsize,
}

impl Default for ResolveIndex {
    fn default() -> Self {
        ResolveIndex {
            tenants: RwLock::default(),
            catalog: RwLock::default(),
            resolvable: RwLock::default(),
            patterns: Patterns::default(),
            applied: watch::channel(0).0,
            applied_now: AtomicI64::new(0),
            awaited: tokio::sync::Notify::new(),
            waiting: AtomicUsize::new(0),
        }
    }
}

fn group(
    snapshot: Snapshot,
    patterns: &Patterns,
    followed: Revision,
) -> HashMap<String, TenantIndex> {
    let mut endpoints: HashMap<String, Vec<Endpoint>> = HashMap::new();
    for e in snapshot.endpoints {
        endpoints.entry(e.tenant_id.clone()).or_default().push(e);
    }
    let mut subscriptions: HashMap<String, Vec<Subscription>> = HashMap::new();
    for s in snapshot.subscriptions {
        subscriptions
            .entry(s.tenant_id.clone())
            .or_default()
            .push(s);
    }
    snapshot
        .tenants
        .into_iter()
        .map(|t| {
            let tenant_id = t.tenant_id.clone();
            let index = TenantIndex::build(
                t,
                endpoints.remove(&tenant_id).unwrap_or_default(),
                subscriptions.remove(&tenant_id).unwrap_or_default(),
                patterns,
                followed,
            );
            (tenant_id, index)
        })
        .collect()
}

/// Counts a waiting caller for as long as it waits (also when its future
/// is dropped).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn start(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

impl ResolveIndex {
    /// Replaces everything (start-up, or after falling behind the log)
    /// with the tenants `batches` yields, built one batch at a time so the
    /// rows of only one batch are in memory at once. The batches must be
    /// read after `followed`, the revision the follower goes on from.
    pub async fn load_all<F, Fut>(
        &self,
        mut batches: F,
        catalog: Catalog,
        followed: Revision,
    ) -> crate::repository::RepoResult<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = crate::repository::RepoResult<Option<Snapshot>>>
            + Send
            + 'static,
    {
        let joined = |r: Result<_, tokio::task::JoinError>| {
            r.map_err(|e| crate::repository::RepoError::Internal(Box::new(e)))
        };
        let mut tenants = FastMap::default();
        // Pipelined: the next batch is read while this one is indexed.
        let mut next = tokio::spawn(batches());
        while let Some(snapshot) = joined(next.await)?? {
            next = tokio::spawn(batches());
            for (k, v) in group(snapshot, &self.patterns, followed) {
                tenants.insert(k, Arc::new(RwLock::new(v)));
            }
        }
        let mut current = write(&self.tenants);
        for (tenant_id, index) in &tenants {
            if let Some(older) = current.get(tenant_id) {
                write(index).keep_written(&mut write(older), &self.patterns);
            }
        }
        *current = tenants;
        drop(current);
        self.set_catalog(catalog);
        Ok(())
    }

    /// Replaces one tenant's index from its snapshot (gone if deleted),
    /// read after the follower read its changes up to `followed`.
    pub fn load_tenant(&self, tenant_id: &str, snapshot: Snapshot, followed: Revision) {
        let index = group(snapshot, &self.patterns, followed).remove(tenant_id);
        let mut tenants = write(&self.tenants);
        match index {
            Some(mut index) => {
                if let Some(older) = tenants.get(tenant_id) {
                    index.keep_written(&mut write(older), &self.patterns);
                }
                tenants.insert(tenant_id.to_owned(), Arc::new(RwLock::new(index)));
            }
            None => {
                tenants.remove(tenant_id);
            }
        }
    }

    fn tenant(&self, tenant_id: &str) -> Option<Arc<RwLock<TenantIndex>>> {
        read(&self.tenants).get(tenant_id).cloned()
    }

    pub fn has_tenant(&self, tenant_id: &str) -> bool {
        read(&self.tenants).contains_key(tenant_id)
    }

    /// The live tenant's row as this replica last applied it; it may lag the
    /// database, so a write that starts from it must check its etag.
    pub fn tenant_record(&self, tenant_id: &str) -> Option<Arc<Tenant>> {
        read(&*self.tenant(tenant_id)?).record.clone()
    }

    /// Applies one subscription's current state (None: it is gone), read
    /// with the change log up to `followed`, where the subscription's last
    /// change was at `changed`. A direct write newer than `changed` stays:
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
            Some(e) => index.upsert_endpoint(e),
            None => index.remove_endpoint(endpoint_id),
        }
    }

    pub fn set_catalog(&self, catalog: Catalog) {
        let resolvable = catalog
            .keys()
            .map(|name| (name.as_str().into(), self.patterns.resolvable(name)))
            .collect();
        *write(&self.resolvable) = resolvable;
        *write(&self.catalog) = Arc::new(catalog);
    }

    /// The catalog as this replica last saw it.
    pub fn catalog(&self) -> Arc<Catalog> {
        read(&self.catalog).clone()
    }

    pub fn mark_applied(&self, revision: Revision) {
        self.applied_now.fetch_max(revision, Ordering::Release);
        self.applied.send_if_modified(|current| {
            let newer = revision > *current;
            if newer {
                *current = revision;
            }
            newer
        });
    }

    pub fn applied(&self) -> Revision {
        self.applied_now.load(Ordering::Acquire)
    }

    pub fn subscribe_applied(&self) -> watch::Receiver<Revision> {
        self.applied.subscribe()
    }

    /// Waits (at most `limit`) until the follower has applied `revision`,
    /// asking it to read the change log now rather than at its leisure.
    pub async fn wait_applied(&self, revision: Revision, limit: std::time::Duration) {
        let mut applied = self.applied.subscribe();
        if *applied.borrow_and_update() >= revision {
            return;
        }
        let _waiting = Waiting::start(&self.waiting);
        self.awaited.notify_one();
        let _ = tokio::time::timeout(limit, applied.wait_for(|a| *a >= revision)).await;
    }

    /// Whether a caller is waiting for the follower.
    pub fn is_awaited(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }

    /// Completes when a caller waits for the follower (see
    /// [`Self::wait_applied`]).
    pub async fn awaited(&self) {
        self.awaited.notified().await;
    }

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
            &index.matches(event_type, ids, now, with_secrets),
            revision,
        ))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::PreviousSecret;

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

    #[test]
    fn packed_strings_come_back_whole_including_empty_ones() {
        let p = Packed::new(["sub_1", "", "ep_é"]);
        assert_eq!([p.get(0), p.get(1), p.get(2)], ["sub_1", "", "ep_é"]);
        let p = Packed::new(["", "x"]);
        assert_eq!([p.get(0), p.get(1)], ["", "x"]);
    }

    fn targets_of(
        index: &TenantIndex,
        patterns: &Patterns,
        now: Micros,
        with_secrets: bool,
    ) -> Vec<Target> {
        let ids = patterns.resolvable("order.created");
        let matches = index.matches("order.created", &ids, now, with_secrets);
        matches.iter().map(Match::to_target).collect()
    }

    #[test]
    fn targets_carry_every_field_and_follow_their_endpoint_by_slot() {
        let patterns = Patterns::default();
        // The subscription arrives before its endpoint, as a change can.
        let mut index = TenantIndex::build(
            tenant(),
            vec![endpoint("ep_a", "https://a.example/hook", true)],
            vec![
                subscription("sub_2", "ep_b", None, 20),
                subscription("sub_1", "ep_a", Some("first"), 10),
            ],
            &patterns,
            0,
        );
        let order_created = patterns.resolvable("order.created");
        let ids = |index: &TenantIndex| -> Vec<String> {
            index
                .matches("order.created", &order_created, 1_000, true)
                .iter()
                .map(|m| m.subscription_id().to_owned())
                .collect()
        };
        assert_eq!(ids(&index), ["sub_1"], "ep_b is not known yet");

        index.upsert_endpoint(endpoint("ep_b", "https://b.example/hook", true));
        let targets = targets_of(&index, &patterns, 1_000, true);
        assert_eq!(
            targets[0],
            Target {
                subscription_id: "sub_1".into(),
                endpoint_id: "ep_a".into(),
                name: "first".into(),
                url: "https://a.example/hook".into(),
                matched_pattern: "order.*".into(),
                signing_secrets: vec!["secret-of-ep_a".into(), "old-secret-of-ep_a".into()],
            }
        );
        assert_eq!(targets[1].subscription_id, "sub_2");
        assert_eq!(targets[1].name, "");
        assert_eq!(targets[1].url, "https://b.example/hook");

        index.upsert_endpoint(endpoint("ep_a", "https://a.example/hook", false));
        assert_eq!(ids(&index), ["sub_2"], "a disabled endpoint drops out");
        index.upsert_endpoint(endpoint("ep_a", "https://a2.example/hook", true));
        let targets = targets_of(&index, &patterns, 3_000, false);
        assert_eq!(
            targets[0].url, "https://a2.example/hook",
            "back, with its new URL"
        );
        assert!(
            targets[0].signing_secrets.is_empty(),
            "no secrets asked for"
        );
        index.remove_endpoint("ep_b");
        assert_eq!(ids(&index), ["sub_1"], "a deleted endpoint drops out");
    }

    /// The tenant "acme" with endpoint ep_a and `subscriptions`.
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
}

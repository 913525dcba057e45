//! Replay protection for accepted (api_id, nonce) pairs, in bounded memory.
//!
//! Each accepted pair is remembered as a 64-bit SipHash under a per-process
//! random key (8 bytes per entry instead of the strings), filed in a bucket
//! chosen by the request's signed timestamp. A replay carries the same signed
//! timestamp, so only that one bucket has to be consulted. Buckets whose
//! timestamps fall more than twice the window behind the clock are dropped:
//! such requests are refused by the time-window check before they get here.
//!
//! The store holds at most `max_entries` (`--max-nonces`). At that bound a
//! new call is refused ([`NonceCheck::Full`]) rather than a remembered nonce
//! forgotten early: forgetting one inside its window would let a captured
//! request be replayed. Room returns as old buckets expire.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Width of one time bucket, in seconds.
const BUCKET_SECS: i64 = 10;
/// Independent locks, so concurrent requests rarely wait on each other.
const SHARDS: usize = 8;

type Buckets = BTreeMap<i64, HashSet<u64, BuildHasherDefault<IdentityHasher>>>;

/// What the store made of a call's nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Not seen before; now remembered.
    Fresh,
    /// Seen before (or too old to vouch for): a replay.
    Replay,
    /// The store is at its bound; nothing was remembered.
    Full,
}

pub struct NonceStore {
    window_secs: i64,
    max_entries: usize,
    /// Entries in every shard.
    entries: AtomicUsize,
    hasher: RandomState,
    shards: [Mutex<Buckets>; SHARDS],
    /// Buckets below this index have been dropped from every shard.
    swept_below: AtomicI64,
}

impl NonceStore {
    /// A store for requests whose timestamps may be up to `window_secs` away
    /// from the server clock, holding at most `max_entries` nonces.
    pub fn new(window_secs: i64, max_entries: usize) -> Self {
        Self {
            window_secs: window_secs.max(0),
            max_entries,
            entries: AtomicUsize::new(0),
            hasher: RandomState::new(),
            shards: std::array::from_fn(|_| Mutex::new(Buckets::new())),
            swept_below: AtomicI64::new(i64::MIN),
        }
    }

    /// Records the pair if it has not been seen before and there is room.
    ///
    /// A `request_ts` older than the retention horizon is a replay too: the
    /// store can no longer vouch for such a request.
    pub fn check_and_insert(
        &self,
        api_id: &str,
        nonce: &str,
        request_ts: i64,
        now: i64,
    ) -> NonceCheck {
        let oldest_kept = self.oldest_kept_bucket(now);
        self.evict_before(oldest_kept);

        let bucket = request_ts.div_euclid(BUCKET_SECS);
        if bucket < oldest_kept {
            return NonceCheck::Replay;
        }
        let hash = self.hasher.hash_one((api_id, nonce));
        // The hash picks the shard, so a replay always lands in the same one.
        let shard = (hash % SHARDS as u64) as usize;
        let mut buckets = lock(&self.shards[shard]);
        let set = buckets.entry(bucket).or_default();
        if set.contains(&hash) {
            return NonceCheck::Replay;
        }
        if self.entries.fetch_add(1, Ordering::Relaxed) >= self.max_entries {
            self.entries.fetch_sub(1, Ordering::Relaxed);
            return NonceCheck::Full;
        }
        set.insert(hash);
        NonceCheck::Fresh
    }

    /// Number of remembered nonces, for metrics.
    pub fn len(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    /// The most nonces the store holds.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn oldest_kept_bucket(&self, now: i64) -> i64 {
        now.saturating_sub(self.window_secs.saturating_mul(2))
            .div_euclid(BUCKET_SECS)
    }

    /// Drops expired buckets from every shard, at most once per bucket width:
    /// the first caller to see the horizon move does the sweep.
    fn evict_before(&self, oldest_kept: i64) {
        let swept = self.swept_below.load(Ordering::Relaxed);
        if oldest_kept <= swept
            || self
                .swept_below
                .compare_exchange(swept, oldest_kept, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        for shard in &self.shards {
            let mut buckets = lock(shard);
            while buckets
                .first_key_value()
                .is_some_and(|(&bucket, _)| bucket < oldest_kept)
            {
                if let Some((_, dropped)) = buckets.pop_first() {
                    self.entries.fetch_sub(dropped.len(), Ordering::Relaxed);
                }
            }
        }
    }
}

impl std::fmt::Debug for NonceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceStore")
            .field("window_secs", &self.window_secs)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

/// A panic elsewhere cannot leave a set of hashes inconsistent, so a poisoned
/// lock is still safe to use.
fn lock(shard: &Mutex<Buckets>) -> MutexGuard<'_, Buckets> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The stored values are already keyed SipHash outputs; hashing them again
/// would only cost time.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::NonceCheck::{Fresh, Full, Replay};
    use super::*;

    const NOW: i64 = 1_700_000_000;
    const NONCE: &str = "abcdefghijklmnop";

    #[test]
    fn replay_is_refused() {
        let store = NonceStore::new(300, 1000);
        assert_eq!(store.check_and_insert("ak_1", NONCE, NOW, NOW), Fresh);
        assert_eq!(store.check_and_insert("ak_1", NONCE, NOW, NOW + 5), Replay);
        assert_eq!(
            store.check_and_insert("ak_1", NONCE, NOW, NOW + 599),
            Replay
        );
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn same_nonce_for_another_api_id_is_fresh() {
        let store = NonceStore::new(300, 1000);
        assert_eq!(store.check_and_insert("ak_1", NONCE, NOW, NOW), Fresh);
        assert_eq!(store.check_and_insert("ak_2", NONCE, NOW, NOW), Fresh);
        assert_eq!(
            store.check_and_insert("ak_1", "abcdefghijklmnoq", NOW, NOW),
            Fresh
        );
        assert_eq!(store.len(), 3);
    }

    #[test]
    fn buckets_older_than_twice_the_window_are_evicted() {
        let store = NonceStore::new(300, 1000);
        for i in 0..50 {
            assert_eq!(
                store.check_and_insert("ak_1", &format!("{NONCE}{i}"), NOW, NOW),
                Fresh
            );
        }
        assert_eq!(store.len(), 50);

        // Still inside twice the window: kept.
        assert_eq!(
            store.check_and_insert("ak_1", "fresh-nonce-00001", NOW + 590, NOW + 590),
            Fresh
        );
        assert_eq!(store.len(), 51);

        // Past it: every shard forgets the old bucket, the new entry stays.
        assert_eq!(
            store.check_and_insert("ak_1", "fresh-nonce-00002", NOW + 620, NOW + 620),
            Fresh
        );
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn timestamps_past_the_retention_horizon_are_not_fresh() {
        let store = NonceStore::new(300, 1000);
        assert_eq!(
            store.check_and_insert("ak_1", NONCE, NOW - 700, NOW),
            Replay
        );
        assert!(store.is_empty());
    }

    #[test]
    fn a_full_store_refuses_new_nonces_and_keeps_the_old_ones() {
        let store = NonceStore::new(300, 3);
        for i in 0..3 {
            assert_eq!(
                store.check_and_insert("ak_1", &format!("{NONCE}{i}"), NOW, NOW),
                Fresh
            );
        }
        assert_eq!(
            store.check_and_insert("ak_1", "another-nonce-0001", NOW, NOW),
            Full
        );
        // What it holds is still refused as a replay, not forgotten.
        assert_eq!(
            store.check_and_insert("ak_1", &format!("{NONCE}0"), NOW, NOW + 1),
            Replay
        );
        assert_eq!(store.len(), 3);
        // Once the old entries leave their window, there is room again.
        assert_eq!(
            store.check_and_insert("ak_1", "another-nonce-0001", NOW + 620, NOW + 620),
            Fresh
        );
        assert_eq!(store.len(), 1);
    }
}

//! Replay protection for accepted (api_id, nonce) pairs, in bounded memory.
//!
//! Each accepted pair is remembered as a 64-bit SipHash under a per-process
//! random key (8 bytes per entry instead of the strings), filed in a bucket
//! chosen by the request's signed timestamp. A replay carries the same signed
//! timestamp, so only that one bucket has to be consulted. Buckets whose
//! timestamps fall more than twice the window behind the clock are dropped:
//! such requests are refused by the time-window check before they get here.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Width of one time bucket, in seconds.
const BUCKET_SECS: i64 = 10;
/// Independent locks, so concurrent requests rarely wait on each other.
const SHARDS: usize = 8;

type Buckets = BTreeMap<i64, HashSet<u64, BuildHasherDefault<IdentityHasher>>>;

pub struct NonceStore {
    window_secs: i64,
    hasher: RandomState,
    shards: [Mutex<Buckets>; SHARDS],
    /// Buckets below this index have been dropped from every shard.
    swept_below: AtomicI64,
}

impl NonceStore {
    /// A store for requests whose timestamps may be up to `window_secs` away
    /// from the server clock.
    pub fn new(window_secs: i64) -> Self {
        Self {
            window_secs: window_secs.max(0),
            hasher: RandomState::new(),
            shards: std::array::from_fn(|_| Mutex::new(Buckets::new())),
            swept_below: AtomicI64::new(i64::MIN),
        }
    }

    /// Records the pair and returns `true` if it has not been seen before;
    /// returns `false` for a replay.
    ///
    /// A `request_ts` older than the retention horizon also yields `false`:
    /// the store can no longer vouch for such a request.
    pub fn check_and_insert(&self, api_id: &str, nonce: &str, request_ts: i64, now: i64) -> bool {
        let oldest_kept = self.oldest_kept_bucket(now);
        self.evict_before(oldest_kept);

        let bucket = request_ts.div_euclid(BUCKET_SECS);
        if bucket < oldest_kept {
            return false;
        }
        let hash = self.hasher.hash_one((api_id, nonce));
        // The hash picks the shard, so a replay always lands in the same one.
        let shard = (hash % SHARDS as u64) as usize;
        lock(&self.shards[shard])
            .entry(bucket)
            .or_default()
            .insert(hash)
    }

    /// Number of remembered nonces, for metrics.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| lock(shard).values().map(HashSet::len).sum::<usize>())
            .sum()
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
                buckets.pop_first();
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
    use super::*;

    const NOW: i64 = 1_700_000_000;
    const NONCE: &str = "abcdefghijklmnop";

    #[test]
    fn replay_is_refused() {
        let store = NonceStore::new(300);
        assert!(store.check_and_insert("ak_1", NONCE, NOW, NOW));
        assert!(!store.check_and_insert("ak_1", NONCE, NOW, NOW + 5));
        assert!(!store.check_and_insert("ak_1", NONCE, NOW, NOW + 599));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn same_nonce_for_another_api_id_is_fresh() {
        let store = NonceStore::new(300);
        assert!(store.check_and_insert("ak_1", NONCE, NOW, NOW));
        assert!(store.check_and_insert("ak_2", NONCE, NOW, NOW));
        assert!(store.check_and_insert("ak_1", "abcdefghijklmnoq", NOW, NOW));
        assert_eq!(store.len(), 3);
    }

    #[test]
    fn buckets_older_than_twice_the_window_are_evicted() {
        let store = NonceStore::new(300);
        for i in 0..50 {
            assert!(store.check_and_insert("ak_1", &format!("{NONCE}{i}"), NOW, NOW));
        }
        assert_eq!(store.len(), 50);

        // Still inside twice the window: kept.
        assert!(store.check_and_insert("ak_1", "fresh-nonce-00001", NOW + 590, NOW + 590));
        assert_eq!(store.len(), 51);

        // Past it: every shard forgets the old bucket, the new entry stays.
        assert!(store.check_and_insert("ak_1", "fresh-nonce-00002", NOW + 620, NOW + 620));
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn timestamps_past_the_retention_horizon_are_not_fresh() {
        let store = NonceStore::new(300);
        assert!(!store.check_and_insert("ak_1", NONCE, NOW - 700, NOW));
        assert!(store.is_empty());
    }
}

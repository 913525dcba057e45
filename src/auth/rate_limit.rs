//! `--rate-limit`: calls per second per credential on this replica.
//!
//! A token bucket per api id (GCRA, from `governor`): a credential may make
//! `burst` calls at once, then one every `1/rate` seconds. Only calls whose
//! signature verified are counted, so nobody can spend another credential's
//! budget; the state per credential is a few bytes, and the credentials
//! that called bound how many there are.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

pub struct RateLimit {
    limiter: RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>,
    rate: NonZeroU32,
    burst: NonZeroU32,
}

impl RateLimit {
    /// `per_second` calls per second per credential, `burst` at once
    /// (default: twice the rate); `None` when `per_second` is 0 (off).
    pub fn new(per_second: u32, burst: Option<u32>) -> Option<RateLimit> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(burst.unwrap_or(per_second.saturating_mul(2)))
            .unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(rate).allow_burst(burst);
        let clock = DefaultClock::default();
        Some(RateLimit {
            limiter: RateLimiter::new(quota, DefaultKeyedStateStore::default(), clock),
            rate,
            burst,
        })
    }

    /// Counts a call of `api_id`: `Err` with the wait until its next one
    /// would be allowed when its bucket is empty.
    pub fn check(&self, api_id: &String) -> Result<(), Duration> {
        self.limiter
            .check_key(api_id)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    pub fn rate(&self) -> u32 {
        self.rate.get()
    }

    pub fn burst(&self) -> u32 {
        self.burst.get()
    }
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("rate", &self.rate)
            .field("burst", &self.burst)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_off() {
        assert!(RateLimit::new(0, Some(5)).is_none());
    }

    #[test]
    fn burst_defaults_to_twice_the_rate() {
        let limit = RateLimit::new(5, None).unwrap();
        assert_eq!(limit.burst(), 10);
        let key = "hp_1".to_owned();
        for _ in 0..10 {
            assert!(limit.check(&key).is_ok());
        }
        let wait = limit.check(&key).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(200),
            "{wait:?}"
        );
    }

    #[test]
    fn each_credential_has_its_own_bucket() {
        let limit = RateLimit::new(1, Some(1)).unwrap();
        assert!(limit.check(&"a".to_owned()).is_ok());
        assert!(limit.check(&"a".to_owned()).is_err());
        assert!(limit.check(&"b".to_owned()).is_ok());
    }
}

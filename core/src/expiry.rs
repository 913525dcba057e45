//! When something with an expiry time stops counting: a subscription past
//! its `expire_time` no longer resolves (and reads as EXPIRED before the
//! sweeper records it), and a rotated-out signing secret stops being sent
//! once its grace period ends. One rule, so the boundary instant is treated
//! the same everywhere.

/// Microseconds since the Unix epoch, the unit of every stored time.
pub type Micros = i64;

/// Whether something that expires at `expire_time` has expired at `now`.
/// The expiry instant itself already counts as expired.
#[inline]
pub fn has_expired(expire_time: Micros, now: Micros) -> bool {
    expire_time <= now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expiry_instant_is_already_expired() {
        assert!(!has_expired(100, 99));
        assert!(has_expired(100, 100));
        assert!(has_expired(100, 101));
    }
}

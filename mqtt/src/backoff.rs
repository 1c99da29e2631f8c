//! One retry policy for every reconnect: doubling from a minimum, capped,
//! with ±25 % jitter so that a plant's clients do not reconnect in
//! lockstep after a broker restart. Reads no clock: the jitter comes from a
//! per-process random hash (std's `RandomState`), drawn per attempt.

use std::hash::BuildHasher;
use std::time::Duration;

/// Retry delays: `min`, `2 × min`, … up to `max`, each ±25 %.
///
/// ```
/// use std::time::Duration;
/// use shopfloor_mqtt::Backoff;
///
/// let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
/// let first = b.next_delay(); // 75–125 ms
/// assert!(first >= Duration::from_millis(75) && first <= Duration::from_millis(125));
/// b.reset(); // connected: the next failure starts from `min` again
/// ```
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
    draws: u64,
    random: std::collections::hash_map::RandomState,
}

impl Backoff {
    /// Delays from `min` doubling up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            failures: 0,
            draws: 0,
            random: std::collections::hash_map::RandomState::new(),
        }
    }

    /// The delay before the next attempt; each call counts one failure.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.min.saturating_mul(1_u32 << self.failures.min(20)).min(self.max);
        self.failures = self.failures.saturating_add(1);
        self.draws += 1;
        let r = self.random.hash_one(self.draws);
        // 0.75 + [0, 0.5) from the hash's top 53 bits.
        base.mul_f64(0.75 + (r >> 11) as f64 / (1_u64 << 53) as f64 * 0.5)
    }

    /// A success: the next failure waits `min` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures counted since the last [`reset`](Self::reset).
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_resets_within_the_jitter() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let mut b = Backoff::new(min, max);
        for base in [100, 200, 400, 800, 1600, 2000, 2000] {
            let d = b.next_delay().as_secs_f64() * 1000.0;
            assert!(d >= 0.75 * f64::from(base) && d < 1.25 * f64::from(base), "{d} ms for {base}");
        }
        b.reset();
        assert!(b.next_delay() < Duration::from_millis(125));
    }

    /// The bug this replaces: jitter from `subsec_nanos() % 1000` is always
    /// 0 on a clock that counts microseconds, so every client waited the
    /// same. Here two clients, and one client's attempts, spread out.
    #[test]
    fn the_jitter_spreads() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(1));
        let mut a = Backoff::new(min, max);
        let draws: Vec<Duration> = (0..200).map(|_| a.next_delay()).collect();
        let (lo, hi) = (draws.iter().min().unwrap(), draws.iter().max().unwrap());
        assert!(*hi - *lo > Duration::from_millis(300), "{lo:?}..{hi:?}");
        let mut b = Backoff::new(min, max);
        let other: Vec<Duration> = (0..20).map(|_| b.next_delay()).collect();
        assert_ne!(&draws[..20], &other[..], "two clients in lockstep");
    }
}

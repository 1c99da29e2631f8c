//! The one clock type the sans-IO cores take.

use std::ops::{Add, AddAssign};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::Timestamp;

/// The current time, read once per loop turn by a driver and passed to
/// every sans-IO core (Sparkplug's edge node and host, the Modbus session,
/// ingest's gate, the alarm engine): a monotonic instant for deadlines and
/// wall-clock UTC ms for payloads and records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time.
    pub instant: Instant,
    /// UTC ms since the Unix epoch.
    pub unix_ms: u64,
}

impl Now {
    /// The clocks now. Only drivers call this.
    #[allow(clippy::self_named_constructors, reason = "reads as the driver loop: Now::now()")]
    pub fn now() -> Self {
        Self { instant: Instant::now(), unix_ms: Timestamp::now().unix_ms() }
    }

    /// Both clocks at `unix_ms`, for tests and simulations that invent the
    /// time: the instant is one fixed origin (taken once per process) plus
    /// `unix_ms`, so two such values are as far apart on the monotonic clock
    /// as on the wall clock.
    pub fn at_unix_ms(unix_ms: u64) -> Self {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        let origin = *ORIGIN.get_or_init(Instant::now);
        // Far past any real time, yet representable on every platform std
        // supports; the origin alone rather than a panic if it is not.
        let instant = origin.checked_add(Duration::from_millis(unix_ms)).unwrap_or(origin);
        Self { instant, unix_ms }
    }
}

/// Both clocks `d` later, as a test moves invented time on. Panics, as
/// `Instant + Duration` does, past the monotonic clock's range.
impl Add<Duration> for Now {
    type Output = Self;

    fn add(self, d: Duration) -> Self {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self { instant: self.instant + d, unix_ms: self.unix_ms.saturating_add(ms) }
    }
}

impl AddAssign<Duration> for Now {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn now_reads_both_clocks() {
        let (before, wall) = (Instant::now(), Timestamp::now().unix_ms());
        let now = Now::now();
        assert!(now.instant >= before);
        assert!(now.unix_ms >= wall);
    }

    proptest! {
        /// Invented times keep the two clocks in step: as far apart on the
        /// monotonic clock as on the wall clock, in the same order.
        #[test]
        fn invented_times_keep_the_clocks_in_step(a in 0..u64::MAX / 2, b in 0..u64::MAX / 2) {
            let (x, y) = (Now::at_unix_ms(a), Now::at_unix_ms(b));
            prop_assert_eq!((x.unix_ms, y.unix_ms), (a, b));
            prop_assert_eq!(x.instant.cmp(&y.instant), a.cmp(&b));
            let apart = if a >= b { x.instant - y.instant } else { y.instant - x.instant };
            prop_assert_eq!(apart, Duration::from_millis(a.abs_diff(b)));
        }

        /// Moving a time on moves both clocks alike.
        #[test]
        fn adding_moves_both_clocks(a in 0..u64::MAX / 4, d in 0..u64::MAX / 4) {
            let mut x = Now::at_unix_ms(a);
            x += Duration::from_millis(d);
            prop_assert_eq!(x, Now::at_unix_ms(a + d));
        }
    }
}

//! On-delay and off-delay (ISA-18.2 "alarm delays"): a condition must hold
//! for the on-delay before the alarm becomes active, and be gone for the
//! off-delay before it returns to normal. Sans-IO: raw conditions and the
//! time in, the delayed condition out, and the time it next needs a look.
//!
//! The delays guard the edges between normal and abnormal. Once active, a
//! change between abnormal states (H to HH, say) passes at once: the
//! process is already known to be out of its band, and an operator must not
//! learn late that it got worse. While an activation waits, a change of
//! level keeps the wait (the process has been abnormal since it started)
//! and the alarm activates in the latest level.

use std::time::Duration;

use crate::limit::LevelKind;

/// A condition a delay can filter: one value is "normal".
pub trait Condition: Copy + Eq + std::fmt::Debug {
    /// Whether this is the normal (inactive) state.
    fn is_normal(&self) -> bool;
}

impl Condition for bool {
    /// `false` is normal.
    fn is_normal(&self) -> bool {
        !*self
    }
}

impl Condition for Option<LevelKind> {
    /// `None` is normal.
    fn is_normal(&self) -> bool {
        self.is_none()
    }
}

/// An on/off-delay filter over a condition `C`. Times are milliseconds on
/// any clock that does not go back (the engine uses event time for
/// readings and the caller's clock for timeouts).
#[derive(Clone, Debug)]
pub struct Delay<C> {
    on_ms: u64,
    off_ms: u64,
    output: C,
    /// A change waiting for its delay: the state to take, and when.
    pending: Option<(C, u64)>,
}

impl<C: Condition> Delay<C> {
    /// A filter whose output starts at `initial`.
    pub fn new(on: Duration, off: Duration, initial: C) -> Self {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self { on_ms: ms(on), off_ms: ms(off), output: initial, pending: None }
    }

    /// The delayed condition.
    pub fn output(&self) -> C {
        self.output
    }

    /// The raw condition is `raw` from `now` on. Returns the new output if
    /// it changes now.
    pub fn update(&mut self, raw: C, now: u64) -> Option<C> {
        if raw == self.output {
            self.pending = None;
            return None;
        }
        if raw.is_normal() == self.output.is_normal() {
            // Abnormal to another abnormal state: at once.
            self.pending = None;
            self.output = raw;
            return Some(raw);
        }
        let delay = if raw.is_normal() { self.off_ms } else { self.on_ms };
        match &mut self.pending {
            // Still waiting for the same edge: keep the time, take the state.
            Some((target, _)) if target.is_normal() == raw.is_normal() => *target = raw,
            _ => self.pending = Some((raw, now.saturating_add(delay))),
        }
        self.poll(now)
    }

    /// The output after time has passed to `now`; `Some` if it changed.
    pub fn poll(&mut self, now: u64) -> Option<C> {
        match self.pending {
            Some((target, due)) if due <= now => {
                self.pending = None;
                self.output = target;
                Some(target)
            }
            _ => None,
        }
    }

    /// When the output may next change with no new input.
    pub fn next_timeout(&self) -> Option<u64> {
        self.pending.map(|(_, due)| due)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use LevelKind::{High as H, HighHigh as HH};

    const S: u64 = 1000;

    fn delay(on: u64, off: u64) -> Delay<Option<LevelKind>> {
        Delay::new(Duration::from_millis(on), Duration::from_millis(off), None)
    }

    #[test]
    fn no_delay_passes_everything_at_once() {
        let mut d = delay(0, 0);
        assert_eq!(d.update(Some(H), 0), Some(Some(H)));
        assert_eq!(d.update(None, 1), Some(None));
        assert_eq!(d.next_timeout(), None);
    }

    #[test]
    fn activation_waits_for_the_on_delay_and_a_blip_does_not_activate() {
        let mut d = delay(5 * S, 0);
        assert_eq!(d.update(Some(H), 0), None);
        assert_eq!(d.next_timeout(), Some(5 * S));
        assert_eq!(d.poll(4 * S), None);
        // Gone before the delay: nothing, and nothing pending.
        assert_eq!(d.update(None, 4 * S), None);
        assert_eq!(d.next_timeout(), None);
        assert_eq!(d.poll(10 * S), None);
        // Held for the whole delay: active, at the due time.
        assert_eq!(d.update(Some(H), 20 * S), None);
        assert_eq!(d.poll(25 * S), Some(Some(H)));
        assert_eq!(d.output(), Some(H));
    }

    #[test]
    fn a_level_change_while_waiting_keeps_the_wait_and_activates_in_the_latest_level() {
        let mut d = delay(5 * S, 0);
        d.update(Some(H), 0);
        assert_eq!(d.update(Some(HH), 3 * S), None);
        assert_eq!(d.next_timeout(), Some(5 * S), "abnormal since 0");
        assert_eq!(d.poll(5 * S), Some(Some(HH)));
    }

    #[test]
    fn once_active_a_change_of_level_passes_at_once_and_return_waits_for_the_off_delay() {
        let mut d = delay(0, 10 * S);
        assert_eq!(d.update(Some(H), 0), Some(Some(H)));
        assert_eq!(d.update(Some(HH), 1), Some(Some(HH)), "worse: no wait");
        assert_eq!(d.update(None, 2 * S), None);
        assert_eq!(d.update(Some(H), 3 * S), Some(Some(H)), "back before the off-delay: H at once");
        assert_eq!(d.next_timeout(), None);
        assert_eq!(d.update(None, 4 * S), None);
        assert_eq!(d.poll(13 * S), None);
        assert_eq!(d.poll(14 * S), Some(None));
    }

    #[test]
    fn discrete_conditions() {
        let mut d = Delay::new(Duration::from_secs(1), Duration::ZERO, false);
        assert_eq!(d.update(true, 0), None);
        assert_eq!(d.poll(999), None);
        assert_eq!(d.poll(1000), Some(true));
        assert_eq!(d.update(false, 1001), Some(false));
    }

    proptest! {
        /// Against a brute-force model: the output is abnormal at t iff the
        /// raw condition has been abnormal for the whole on-delay (or the
        /// output was already abnormal and the raw has not been normal for
        /// the off-delay); and when abnormal, it is the latest raw
        /// abnormal level.
        #[test]
        fn matches_a_brute_force_model(
            on in 0_u64..5, off in 0_u64..5,
            steps in proptest::collection::vec((1_u64..4, 0_u8..3), 1..60),
        ) {
            let level = |c: u8| match c { 0 => None, 1 => Some(H), _ => Some(HH) };
            let mut d = delay(on, off);
            // raw[t] for every ms, from the steps.
            let mut raw = Vec::new();
            let mut t = 0;
            let mut events = Vec::new();
            for (gap, c) in steps {
                t += gap;
                events.push((t, level(c)));
            }
            let end = t + 10;
            let mut cur = None;
            let mut ev = events.iter().peekable();
            let mut model_out: Option<LevelKind> = None;
            for now in 0..=end {
                while let Some(&&(at, c)) = ev.peek() {
                    if at != now { break }
                    cur = c;
                    d.update(c, now);
                    ev.next();
                }
                d.poll(now);
                raw.push(cur);
                // The model.
                let run = |normal: bool| raw.iter().rev().take_while(|r: &&Option<LevelKind>| r.is_none() == normal).count() as u64;
                if model_out.is_none() {
                    if cur.is_some() && run(false) > on { model_out = cur; }
                } else if cur.is_none() {
                    if run(true) > off { model_out = None; }
                } else {
                    model_out = cur;
                }
                prop_assert_eq!(d.output(), model_out, "at {} raw {:?}", now, &raw[raw.len().saturating_sub(8)..]);
            }
        }
    }
}

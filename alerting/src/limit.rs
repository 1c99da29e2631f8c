//! Limit alarms with exclusive levels (HH, H, L, LL in one alarm), each
//! with its own deadband: which level a value is in, given the level it was
//! in. Sans-IO and pure.
//!
//! - **Entering** a high level takes a value strictly above its limit (a
//!   low level: strictly below).
//! - **Leaving** takes the value back past the limit by more than the
//!   level's deadband: a high level holds while `value > limit − deadband`.
//!   A deadband stops a value that hovers at a limit from chattering.
//! - **Exclusive**: one level at a time, the most severe one the value
//!   enters or holds. From HH the alarm steps down to H (not to normal) when
//!   the value drops below HH's deadband but stays above H.

use std::fmt;

/// One of the four levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LevelKind {
    /// Low-low: the most severe low.
    LowLow,
    /// Low.
    Low,
    /// High.
    High,
    /// High-high: the most severe high.
    HighHigh,
}

impl LevelKind {
    /// Above (`true`) or below the normal band.
    pub const fn is_high(self) -> bool {
        matches!(self, Self::High | Self::HighHigh)
    }

    /// 2 for HH and LL, 1 for H and L.
    pub const fn severity(self) -> u8 {
        match self {
            Self::LowLow | Self::HighHigh => 2,
            Self::Low | Self::High => 1,
        }
    }

    /// `HH`, `H`, `L`, `LL`.
    pub const fn code(self) -> &'static str {
        match self {
            Self::LowLow => "LL",
            Self::Low => "L",
            Self::High => "H",
            Self::HighHigh => "HH",
        }
    }
}

impl fmt::Display for LevelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// One limit.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Level {
    /// Which level.
    pub kind: LevelKind,
    /// The limit, in the signal's unit.
    pub limit: f64,
    /// How far back past the limit the value must go to leave the level
    /// (≥ 0).
    pub deadband: f64,
    /// The alarm's priority while in this level (larger is more urgent).
    pub priority: u16,
}

impl Level {
    /// Level `kind` at `limit`, left `deadband` back past it, at `priority`.
    pub fn new(kind: LevelKind, limit: f64, deadband: f64, priority: u16) -> Self {
        Self { kind, limit, deadband, priority }
    }
}

/// Why a set of levels is refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitsError {
    /// No level at all.
    #[error("a limit alarm needs at least one of hh, h, l, ll")]
    Empty,
    /// A level given twice.
    #[error("{0} is given twice")]
    Duplicate(LevelKind),
    /// A limit or deadband that is not a finite number, or a negative
    /// deadband.
    #[error("{kind}: {what} must be a finite number{}", if *.what == "deadband" { " ≥ 0" } else { "" })]
    NotFinite {
        /// The level.
        kind: LevelKind,
        /// `limit` or `deadband`.
        what: &'static str,
    },
    /// Levels out of order (HH > H > L > LL is required).
    #[error("{upper} ({upper_limit}) must be above {lower} ({lower_limit})")]
    Order {
        /// The level that must be higher.
        upper: LevelKind,
        /// Its limit.
        upper_limit: f64,
        /// The level that must be lower.
        lower: LevelKind,
        /// Its limit.
        lower_limit: f64,
    },
    /// A deadband that reaches past the opposite side's limit: a value
    /// could hold a high level while already in a low one.
    #[error("{kind}'s deadband ({deadband}) reaches past {other} ({other_limit}): make it smaller")]
    DeadbandTooWide {
        /// The level.
        kind: LevelKind,
        /// Its deadband.
        deadband: f64,
        /// The opposite level it overlaps.
        other: LevelKind,
        /// That level's limit.
        other_limit: f64,
    },
}

/// The levels of one limit alarm, checked.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Limits {
    /// Sorted LL, L, H, HH (those present).
    levels: Vec<Level>,
}

impl Limits {
    /// Checks and keeps the levels: each at most once, finite limits,
    /// deadbands ≥ 0, HH > H > L > LL, and no high deadband reaching below
    /// the highest low limit (or the reverse).
    pub fn new(mut levels: Vec<Level>) -> Result<Self, LimitsError> {
        if levels.is_empty() {
            return Err(LimitsError::Empty);
        }
        levels.sort_by_key(|l| l.kind);
        for w in levels.windows(2) {
            if w[0].kind == w[1].kind {
                return Err(LimitsError::Duplicate(w[0].kind));
            }
        }
        for l in &levels {
            if !l.limit.is_finite() {
                return Err(LimitsError::NotFinite { kind: l.kind, what: "limit" });
            }
            if !l.deadband.is_finite() || l.deadband < 0.0 {
                return Err(LimitsError::NotFinite { kind: l.kind, what: "deadband" });
            }
        }
        for w in levels.windows(2) {
            if w[1].limit <= w[0].limit {
                return Err(LimitsError::Order {
                    upper: w[1].kind,
                    upper_limit: w[1].limit,
                    lower: w[0].kind,
                    lower_limit: w[0].limit,
                });
            }
        }
        let highest_low = levels.iter().rfind(|l| !l.kind.is_high());
        let lowest_high = levels.iter().find(|l| l.kind.is_high());
        if let (Some(lo), Some(hi)) = (highest_low, lowest_high) {
            for l in levels.iter().filter(|l| l.kind.is_high()) {
                if l.limit - l.deadband <= lo.limit {
                    return Err(LimitsError::DeadbandTooWide {
                        kind: l.kind,
                        deadband: l.deadband,
                        other: lo.kind,
                        other_limit: lo.limit,
                    });
                }
            }
            for l in levels.iter().filter(|l| !l.kind.is_high()) {
                if l.limit + l.deadband >= hi.limit {
                    return Err(LimitsError::DeadbandTooWide {
                        kind: l.kind,
                        deadband: l.deadband,
                        other: hi.kind,
                        other_limit: hi.limit,
                    });
                }
            }
        }
        Ok(Self { levels })
    }

    /// The levels, LL to HH.
    pub fn levels(&self) -> &[Level] {
        &self.levels
    }

    /// The level of `kind`, if configured.
    pub fn level(&self, kind: LevelKind) -> Option<&Level> {
        self.levels.iter().find(|l| l.kind == kind)
    }

    /// The level `value` is in, given the level it was in (`None`: normal).
    /// `value` must be a number (NaN is bad input, for the caller to handle;
    /// here it is treated as normal-entering and holds nothing).
    pub fn evaluate(&self, current: Option<LevelKind>, value: f64) -> Option<LevelKind> {
        // The most severe level the value enters.
        let entered = self
            .levels
            .iter()
            .filter(|l| if l.kind.is_high() { value > l.limit } else { value < l.limit })
            .max_by_key(|l| l.kind.severity())
            .map(|l| l.kind);
        // The level held, if the value has not gone back past its deadband;
        // and from a level left, the less severe level on the same side it
        // may still hold.
        let held = current.and_then(|c| {
            self.levels
                .iter()
                .filter(|l| l.kind.is_high() == c.is_high() && l.kind.severity() <= c.severity())
                .filter(|l| {
                    if l.kind.is_high() {
                        value > l.limit - l.deadband
                    } else {
                        value < l.limit + l.deadband
                    }
                })
                .max_by_key(|l| l.kind.severity())
                .map(|l| l.kind)
        });
        match (entered, held) {
            (Some(e), Some(h)) => Some(if h.severity() > e.severity() { h } else { e }),
            (e, h) => e.or(h),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use LevelKind::{High as H, HighHigh as HH, Low as L, LowLow as LL};

    fn level(kind: LevelKind, limit: f64, deadband: f64) -> Level {
        Level { kind, limit, deadband, priority: kind.severity().into() }
    }

    /// A pressure loop: LL 20, L 40, H 160, HH 180, deadband 2 each.
    fn pressure() -> Limits {
        Limits::new(vec![
            level(HH, 180.0, 2.0),
            level(H, 160.0, 2.0),
            level(L, 40.0, 2.0),
            level(LL, 20.0, 2.0),
        ])
        .unwrap()
    }

    /// Runs values through, returning the level after each.
    fn run(limits: &Limits, values: &[f64]) -> Vec<Option<LevelKind>> {
        let mut at = None;
        values
            .iter()
            .map(|&v| {
                at = limits.evaluate(at, v);
                at
            })
            .collect()
    }

    #[test]
    fn levels_are_entered_above_the_limit_and_left_past_the_deadband() {
        let p = pressure();
        assert_eq!(
            run(&p, &[100.0, 160.0, 160.5, 159.0, 158.5, 158.0, 157.9]),
            [None, None, Some(H), Some(H), Some(H), None, None],
            "160 is not above 160; H holds down to 158 exclusive"
        );
        assert_eq!(run(&p, &[100.0, 40.0, 39.9, 41.9, 42.0]), [None, None, Some(L), Some(L), None]);
    }

    #[test]
    fn levels_are_exclusive_and_step_down_through_the_less_severe() {
        let p = pressure();
        assert_eq!(
            run(&p, &[185.0, 179.0, 177.0, 161.0, 159.0, 157.0]),
            [Some(HH), Some(HH), Some(H), Some(H), Some(H), None],
            "straight into HH (not H first); HH holds to 178; H to 158"
        );
        // Across the band in one sample: the old side is let go.
        assert_eq!(run(&p, &[185.0, 10.0, 100.0]), [Some(HH), Some(LL), None]);
        assert_eq!(
            run(&p, &[15.0, 21.0, 23.0, 39.0, 43.0]),
            [Some(LL), Some(LL), Some(L), Some(L), None]
        );
    }

    #[test]
    fn one_sided_alarms() {
        let hi = Limits::new(vec![level(H, 80.0, 0.0)]).unwrap();
        assert_eq!(run(&hi, &[-1e9, 80.0, 80.1, 80.0, 1e9]), [None, None, Some(H), None, Some(H)]);
    }

    #[test]
    fn bad_level_sets_are_refused_with_the_reason() {
        assert_eq!(Limits::new(vec![]), Err(LimitsError::Empty));
        assert_eq!(
            Limits::new(vec![level(H, 1.0, 0.0), level(H, 2.0, 0.0)]),
            Err(LimitsError::Duplicate(H))
        );
        assert!(matches!(
            Limits::new(vec![level(H, 10.0, 0.0), level(HH, 5.0, 0.0)]),
            Err(LimitsError::Order { upper: HH, lower: H, .. })
        ));
        assert!(matches!(
            Limits::new(vec![level(L, 10.0, 0.0), level(H, 10.0, 0.0)]),
            Err(LimitsError::Order { upper: H, lower: L, .. })
        ));
        assert_eq!(
            Limits::new(vec![level(H, f64::NAN, 0.0)]),
            Err(LimitsError::NotFinite { kind: H, what: "limit" })
        );
        assert_eq!(
            Limits::new(vec![level(H, 1.0, -1.0)]),
            Err(LimitsError::NotFinite { kind: H, what: "deadband" })
        );
        let e = Limits::new(vec![level(H, 50.0, 20.0), level(L, 40.0, 0.0)]).unwrap_err();
        assert_eq!(e.to_string(), "H's deadband (20) reaches past L (40): make it smaller");
    }

    fn limits() -> impl Strategy<Value = Limits> {
        // Four increasing limits and small deadbands, any subset present.
        (
            -1000.0_f64..1000.0,
            proptest::collection::vec(1.0_f64..100.0, 3),
            proptest::collection::vec(0.0_f64..0.45, 4),
            proptest::sample::subsequence(vec![LL, L, H, HH], 1..=4),
        )
            .prop_map(|(base, gaps, dbs, kinds)| {
                let mut limit = base;
                let mut all = Vec::new();
                for (i, kind) in [LL, L, H, HH].into_iter().enumerate() {
                    if i > 0 {
                        limit += gaps[i - 1];
                    }
                    // Deadbands under half the smallest gap: always valid.
                    all.push(level(
                        kind,
                        limit,
                        dbs[i] * gaps.iter().cloned().fold(f64::MAX, f64::min),
                    ));
                }
                Limits::new(all.into_iter().filter(|l| kinds.contains(&l.kind)).collect()).unwrap()
            })
    }

    proptest! {
        #[test]
        fn a_value_outside_every_deadband_has_one_answer_whatever_came_before(
            limits in limits(), before in proptest::collection::vec(-2000.0_f64..2000.0, 0..20), x in -2000.0_f64..2000.0
        ) {
            let near = limits.levels().iter().any(|l| (x - l.limit).abs() <= l.deadband + 1e-9);
            prop_assume!(!near);
            let fresh = limits.evaluate(None, x);
            let mut at = None;
            for v in before {
                at = limits.evaluate(at, v);
            }
            prop_assert_eq!(limits.evaluate(at, x), fresh);
        }

        #[test]
        fn the_level_is_always_one_the_value_is_beyond_or_within_the_deadband_of(
            limits in limits(), values in proptest::collection::vec(-2000.0_f64..2000.0, 1..40)
        ) {
            let mut at = None;
            for v in values {
                at = limits.evaluate(at, v);
                if let Some(k) = at {
                    let l = limits.level(k).unwrap();
                    if k.is_high() {
                        prop_assert!(v > l.limit - l.deadband, "{k} at {v}");
                    } else {
                        prop_assert!(v < l.limit + l.deadband, "{k} at {v}");
                    }
                    // Exclusive: no more severe level on that side is entered.
                    for other in limits.levels() {
                        if other.kind.is_high() == k.is_high() && other.kind.severity() > k.severity() {
                            let entered = if k.is_high() { v > other.limit } else { v < other.limit };
                            prop_assert!(!entered, "{k} while {} is entered at {v}", other.kind);
                        }
                    }
                } else {
                    // Normal: no limit is crossed.
                    for l in limits.levels() {
                        let entered = if l.kind.is_high() { v > l.limit } else { v < l.limit };
                        prop_assert!(!entered, "normal while {} is entered at {v}", l.kind);
                    }
                }
            }
        }
    }
}

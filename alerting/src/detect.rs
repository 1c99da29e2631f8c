//! Detectors that need a signal's history, in event time (the readings'
//! own timestamps, which may be irregular): rate of change, deviation from
//! a time-decayed baseline, and flatline. Sans-IO: each takes (time, value)
//! and says whether its condition holds. A sample older than the newest
//! seen is ignored (late data must not rewrite a signal's history).

use std::collections::VecDeque;
use std::time::Duration;

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Rate of change over a window: the slope from the oldest sample within
/// `window` of the newest to the newest, in units per second; the
/// condition holds while its magnitude exceeds `limit`.
#[derive(Clone, Debug)]
pub struct RateOfChange {
    limit: f64,
    window: u64,
    samples: VecDeque<(u64, f64)>,
}

impl RateOfChange {
    /// `limit` in units per second (> 0), over `window`.
    pub fn new(limit: f64, window: Duration) -> Self {
        Self { limit, window: ms(window).max(1), samples: VecDeque::with_capacity(64) }
    }

    /// The rate now, units per second, if two samples span some time.
    pub fn rate(&self) -> Option<f64> {
        let (&(t0, x0), &(t1, x1)) = (self.samples.front()?, self.samples.back()?);
        (t1 > t0).then(|| (x1 - x0) / ((t1 - t0) as f64 / 1000.0))
    }

    /// A sample; whether the condition holds.
    pub fn update(&mut self, t: u64, x: f64) -> bool {
        if self.samples.back().is_some_and(|&(last, _)| t <= last) {
            return self.holds();
        }
        self.samples.push_back((t, x));
        while self.samples.front().is_some_and(|&(t0, _)| t - t0 > self.window) {
            self.samples.pop_front();
        }
        self.holds()
    }

    fn holds(&self) -> bool {
        self.rate().is_some_and(|r| r.abs() > self.limit)
    }
}

/// Deviation from a baseline: an exponentially weighted moving average in
/// event time (a sample `dt` after the last weighs `1 − 2^(−dt/half_life)`),
/// frozen while the alarm is active so a slow excursion cannot drag the
/// baseline along and clear itself. Holds while `|x − baseline| > limit`,
/// after `warmup` samples.
#[derive(Clone, Debug)]
pub struct Deviation {
    limit: f64,
    half_life: f64,
    warmup: u32,
    baseline: Option<(u64, f64)>,
    seen: u32,
}

impl Deviation {
    /// Deviation above `limit` from a baseline with this half-life.
    pub fn new(limit: f64, half_life: Duration, warmup: u32) -> Self {
        Self {
            limit,
            half_life: half_life.as_secs_f64().max(1e-3),
            warmup,
            baseline: None,
            seen: 0,
        }
    }

    /// The baseline, once there is one.
    pub fn baseline(&self) -> Option<f64> {
        self.baseline.map(|b| b.1)
    }

    /// A sample; `active` says whether the alarm is active now (then the
    /// baseline is frozen). Whether the condition holds.
    pub fn update(&mut self, t: u64, x: f64, active: bool) -> bool {
        let Some((t0, b)) = self.baseline else {
            self.baseline = Some((t, x));
            self.seen = 1;
            return false;
        };
        if t < t0 {
            return self.seen >= self.warmup && (x - b).abs() > self.limit;
        }
        let holds = self.seen >= self.warmup && (x - b).abs() > self.limit;
        if !active && !holds {
            let dt = (t - t0) as f64 / 1000.0;
            let w = 1.0 - (-dt / self.half_life).exp2();
            self.baseline = Some((t, b + w * (x - b)));
            self.seen = self.seen.saturating_add(1);
        }
        holds
    }
}

/// Flatline: over `window`, at least `min_samples` samples whose spread
/// (max − min) is at most `tolerance`: a stuck sensor still reporting.
#[derive(Clone, Debug)]
pub struct Flatline {
    window: u64,
    tolerance: f64,
    min_samples: usize,
    samples: VecDeque<(u64, f64)>,
}

impl Flatline {
    /// A flatline detector.
    pub fn new(window: Duration, tolerance: f64, min_samples: u32) -> Self {
        Self {
            window: ms(window).max(1),
            tolerance,
            min_samples: min_samples.max(2) as usize,
            samples: VecDeque::with_capacity(64),
        }
    }

    /// A sample; whether the condition holds.
    pub fn update(&mut self, t: u64, x: f64) -> bool {
        if self.samples.back().is_none_or(|&(last, _)| t > last) {
            self.samples.push_back((t, x));
            while self.samples.front().is_some_and(|&(t0, _)| t - t0 > self.window) {
                self.samples.pop_front();
            }
        }
        if self.samples.len() < self.min_samples {
            return false;
        }
        let (lo, hi) = self
            .samples
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &(_, v)| (lo.min(v), hi.max(v)));
        hi - lo <= self.tolerance
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn rate_of_change_over_irregular_samples() {
        let mut r = RateOfChange::new(5.0, Duration::from_secs(10));
        assert!(!r.update(0, 100.0), "one sample: no rate");
        assert!(!r.update(3_000, 110.0), "10 in 3 s is 3.3/s");
        assert!(r.update(4_000, 125.0), "25 in 4 s is 6.25/s");
        assert_eq!(r.rate(), Some(6.25));
        // The window slides: by 14.5 s everything older than 4.5 s is out,
        // which leaves one sample and no rate.
        assert!(!r.update(14_500, 130.0));
        assert_eq!(r.rate(), None);
        assert!(r.update(15_000, 60.0), "falling fast counts too");
        assert_eq!(r.rate(), Some(-140.0));
        // Late samples change nothing.
        assert!(r.update(1_000, 0.0));
        assert_eq!(r.rate(), Some(-140.0));
    }

    #[test]
    fn deviation_follows_a_slow_drift_but_not_an_excursion_while_active() {
        let mut d = Deviation::new(10.0, Duration::from_secs(60), 3);
        for i in 0..20 {
            assert!(!d.update(i * 1000, 50.0, false));
        }
        assert_eq!(d.baseline(), Some(50.0));
        // A step of 20: deviates; while the alarm is active the baseline
        // stays, so the alarm holds as long as the excursion does.
        assert!(d.update(20_000, 70.0, false));
        for i in 21..200 {
            assert!(d.update(i * 1000, 70.0, true), "at {i} s");
        }
        assert_eq!(d.baseline(), Some(50.0));
        // A drift slower than the baseline follows is never an alarm.
        let mut d = Deviation::new(10.0, Duration::from_secs(60), 3);
        for i in 0..3000_u64 {
            assert!(!d.update(i * 1000, 50.0 + i as f64 * 0.01, false), "at {i} s");
        }
    }

    #[test]
    fn deviation_waits_for_its_warmup() {
        let mut d = Deviation::new(1.0, Duration::from_secs(60), 5);
        assert!(!d.update(0, 0.0, false));
        assert!(!d.update(1000, 100.0, false), "1 sample seen: warming up");
    }

    #[test]
    fn flatline_needs_the_samples_and_the_flatness() {
        let mut f = Flatline::new(Duration::from_secs(10), 0.01, 5);
        for i in 0..4 {
            assert!(!f.update(i * 1000, 20.0), "{} samples", i + 1);
        }
        assert!(f.update(4000, 20.005));
        assert!(!f.update(5000, 20.5), "moved");
        // The moving sample leaves the window after 10 s.
        for i in 6..16 {
            f.update(i * 1000, 20.5);
        }
        assert!(f.update(16_000, 20.5));
    }

    proptest! {
        #[test]
        fn rate_matches_a_direct_computation(samples in proptest::collection::vec((1_u64..5000, -1e3_f64..1e3), 1..60)) {
            let mut r = RateOfChange::new(1.0, Duration::from_secs(10));
            let mut t = 0;
            let mut all = Vec::new();
            for (dt, x) in samples {
                t += dt;
                r.update(t, x);
                all.push((t, x));
                let inside: Vec<&(u64, f64)> = all.iter().filter(|(s, _)| t - s <= 10_000).collect();
                let want = (inside.len() >= 2).then(|| {
                    let (a, b) = (inside[0], inside[inside.len() - 1]);
                    (b.1 - a.1) / ((b.0 - a.0) as f64 / 1000.0)
                });
                prop_assert_eq!(r.rate(), want);
            }
        }

        #[test]
        fn flatline_matches_a_direct_computation(samples in proptest::collection::vec((1_u64..3000, 0_u8..3), 1..60)) {
            let mut f = Flatline::new(Duration::from_secs(10), 0.5, 4);
            let mut t = 0;
            let mut all = Vec::new();
            for (dt, v) in samples {
                t += dt;
                let x = f64::from(v);
                let got = f.update(t, x);
                all.push((t, x));
                let inside: Vec<f64> = all.iter().filter(|(s, _)| t - s <= 10_000).map(|p| p.1).collect();
                let spread = inside.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
                    - inside.iter().cloned().fold(f64::INFINITY, f64::min);
                prop_assert_eq!(got, inside.len() >= 4 && spread <= 0.5);
            }
        }

        #[test]
        fn the_baseline_stays_within_what_it_has_seen(xs in proptest::collection::vec((1_u64..100_000, -100.0_f64..100.0), 1..100)) {
            let mut d = Deviation::new(1e9, Duration::from_secs(30), 0);
            let (mut lo, mut hi, mut t) = (f64::INFINITY, f64::NEG_INFINITY, 0);
            for (dt, x) in xs {
                t += dt;
                d.update(t, x, false);
                lo = lo.min(x);
                hi = hi.max(x);
                let b = d.baseline().unwrap();
                prop_assert!(b >= lo - 1e-9 && b <= hi + 1e-9, "{b} outside [{lo}, {hi}]");
            }
        }
    }
}

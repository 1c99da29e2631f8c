//! What the database would refuse, caught before it reaches a writer.
//! Sans-IO: readings and the current time in, verdicts out.
//!
//! One message with a reading PostgreSQL cannot hold must not stall the
//! ingest (a batch retried forever) nor take its good neighbours with it:
//! the good readings go on, the message is dead-lettered with the reason.

use std::time::Duration;

use shopfloor_schemas::{Batch, Reading};

use crate::copy::{RowError, pg_micros, value_error};

/// The timestamps the ingest accepts, relative to the wall clock when a
/// message arrives. Readings outside go to the dead letters with the reason
/// (not into a partition for the year 294 277).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TimeWindow {
    /// At most this far ahead of the clock (a device whose clock runs a
    /// little fast is fine; one set to the wrong year is not).
    pub max_ahead: Duration,
    /// At most this old; `None`: any age. The ingest sets it to the samples'
    /// retention, so nothing is written that the retention would drop.
    pub max_age: Option<Duration>,
}

impl Default for TimeWindow {
    /// At most 1 day ahead; any age.
    fn default() -> Self {
        Self { max_ahead: Duration::from_secs(86_400), max_age: None }
    }
}

impl TimeWindow {
    /// A window `max_ahead` ahead and `max_age` back.
    pub fn new(max_ahead: Duration, max_age: Option<Duration>) -> Self {
        Self { max_ahead, max_age }
    }

    /// Whether `ms` (Unix ms) is inside the window at `now_ms`.
    pub fn check(&self, ms: u64, now_ms: u64) -> Result<(), RowError> {
        let ahead = now_ms.saturating_add(self.max_ahead.as_millis() as u64);
        if ms > ahead {
            return Err(RowError::Ahead { ms, limit: ahead });
        }
        if let Some(age) = self.max_age {
            let horizon = now_ms.saturating_sub(age.as_millis() as u64);
            if ms < horizon {
                return Err(RowError::Old { ms, horizon });
            }
        }
        Ok(())
    }
}

/// Why `reading` of `source` cannot be stored, if it cannot: a NUL in a
/// name or text, a value of a kind the table has no column for, a time
/// PostgreSQL cannot hold. Allocates nothing.
pub fn row_error(source: &str, reading: &Reading) -> Option<RowError> {
    name_error(source, reading)
        .or_else(|| value_error(&reading.value))
        .or_else(|| pg_micros(reading.timestamp.unix_ms()).err())
}

/// A NUL in the source or metric name, which PostgreSQL text cannot hold.
pub fn name_error(source: &str, reading: &Reading) -> Option<RowError> {
    if let Some(at) = memchr::memchr(0, source.as_bytes()) {
        return Some(RowError::NulInName { what: "source", at });
    }
    let at = memchr::memchr(0, reading.metric.as_bytes())?;
    Some(RowError::NulInName { what: "metric", at })
}

/// The readings of `batches` that can be stored, and for the dead letters
/// a description of those that cannot (`None` when all can): how many, and
/// the first one's source, metric and reason.
pub fn split(
    mut batches: Vec<Batch>,
    window: &TimeWindow,
    now_ms: u64,
) -> (Vec<Batch>, Option<String>) {
    let (mut refused, mut total) = (0_usize, 0_usize);
    let mut first = None;
    for b in &mut batches {
        total += b.readings.len();
        let source = b.source.clone();
        b.readings.retain(|r| {
            let error =
                row_error(&source, r).or_else(|| window.check(r.timestamp.unix_ms(), now_ms).err());
            let Some(e) = error else { return true };
            refused += 1;
            if first.is_none() {
                first = Some(format!("{source:?} {:?}: {e}", r.metric.as_str()));
            }
            false
        });
    }
    batches.retain(|b| !b.readings.is_empty());
    let why = first.map(|f| {
        if refused == 1 && total == 1 {
            f
        } else {
            format!("{refused} of {total} readings cannot be stored; the first: {f}")
        }
    });
    (batches, why)
}

#[cfg(test)]
mod tests {
    use shopfloor_schemas::{Quality, Timestamp, Value};

    use super::*;

    const NOW: u64 = 1_780_000_000_000;

    fn reading(metric: &str, ms: u64, value: Value) -> Reading {
        Reading {
            metric: metric.into(),
            timestamp: Timestamp::from_unix_ms(ms),
            value,
            quality: Quality::Good,
        }
    }

    #[test]
    fn the_window_takes_a_day_ahead_and_the_retention_back() {
        let w = TimeWindow::new(Duration::from_secs(86_400), Some(Duration::from_secs(3600)));
        assert!(w.check(NOW, NOW).is_ok());
        assert!(w.check(NOW + 86_400_000, NOW).is_ok());
        assert!(matches!(w.check(NOW + 86_400_001, NOW), Err(RowError::Ahead { .. })));
        assert!(w.check(NOW - 3_600_000, NOW).is_ok());
        assert!(matches!(w.check(NOW - 3_600_001, NOW), Err(RowError::Old { .. })));
        // The year 294 277 of the report.
        assert!(TimeWindow::default().check(9_224_318_100_000_000, NOW).is_err());
        assert!(TimeWindow::default().check(0, NOW).is_ok());
    }

    #[test]
    fn good_readings_stay_and_the_first_refusal_is_named() {
        let batches = vec![
            Batch {
                source: "g/e".into(),
                readings: vec![
                    reading("ok", NOW, Value::F64(1.0)),
                    reading("bad\0name", NOW, Value::F64(2.0)),
                    reading("text", NOW, Value::String("a\0b".into())),
                ],
            },
            Batch {
                source: "g/f".into(),
                readings: vec![reading("late", 9_224_318_100_000_000, Value::F64(3.0))],
            },
        ];
        let (kept, why) = split(batches, &TimeWindow::default(), NOW);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].readings.len(), 1);
        assert_eq!(kept[0].readings[0].metric, "ok");
        let why = why.expect("refused");
        assert!(why.starts_with("3 of 4 readings cannot be stored"), "{why}");
        assert!(why.contains("NUL"), "{why}");
    }

    #[test]
    fn a_source_with_nul_refuses_all_its_readings() {
        let batches = vec![Batch {
            source: "g\0e".into(),
            readings: vec![reading("x", NOW, Value::Bool(true))],
        }];
        let (kept, why) = split(batches, &TimeWindow::default(), NOW);
        assert!(kept.is_empty());
        assert!(why.expect("refused").contains("source"));
    }

    proptest::proptest! {
        #[test]
        fn split_keeps_exactly_what_has_no_row_error(
            names in proptest::collection::vec("[a\\x00b]{1,4}", 0..20),
            times in proptest::collection::vec(0_u64..u64::MAX, 20),
        ) {
            let readings: Vec<Reading> = names
                .iter()
                .zip(&times)
                .map(|(n, t)| reading(n, *t, Value::F64(1.0)))
                .collect();
            let window = TimeWindow::default();
            let good = readings
                .iter()
                .filter(|r| row_error("s", r).is_none() && window.check(r.timestamp.unix_ms(), NOW).is_ok())
                .count();
            let n = readings.len();
            let (kept, why) = split(vec![Batch { source: "s".into(), readings }], &window, NOW);
            let kept_n: usize = kept.iter().map(|b| b.readings.len()).sum();
            proptest::prop_assert_eq!(kept_n, good);
            proptest::prop_assert_eq!(why.is_some(), good < n);
        }
    }
}

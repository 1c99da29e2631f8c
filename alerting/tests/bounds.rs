//! Remote input cannot grow the engine without bound: signals no rule
//! selects are remembered only up to `EngineLimits::max_unselected`, and
//! signals past `max_alarms` are refused and counted. Measured with a
//! counting allocator: the live heap, beside the limit.

use shopfloor_alerting::{Engine, EngineLimits, RuleSet};
use shopfloor_schemas::{Batch, Now, Reading, Timestamp};

#[global_allocator]
static ALLOCATOR: shopfloor_testkit::Counting = shopfloor_testkit::Counting;

/// A pressure rule on `plant1/press/*`, as the driver tests run it.
const RULES: &str = include_str!("fixtures/press-pressure.toml");

fn reading(source: &str, metric: &str, v: f64) -> Batch {
    Batch::new(source).with(Reading::new(metric, Timestamp::from_unix_ms(1_000), v))
}

#[test]
fn unselected_signals_and_alarms_are_bounded() {
    let mut engine = Engine::new(RuleSet::from_toml(RULES, "rules.toml").unwrap());
    let mut limits = EngineLimits::default();
    limits.max_unselected = 10_000;
    limits.max_alarms = 1_000;
    engine.set_limits(limits);
    // Warm up, then measure: 200 000 distinct signals no rule selects.
    engine.handle_batch(&reading("hostile/x", "warm", 1.0), Now::at_unix_ms(1));
    let before = shopfloor_testkit::live_heap();
    for i in 0..200_000 {
        engine.handle_batch(
            &reading(&format!("hostile/{}", i % 977), &format!("m{i}"), 1.0),
            Now::at_unix_ms(2),
        );
    }
    let grown = shopfloor_testkit::live_heap() - before;
    let (held, unselected) = engine.signal_counts();
    println!(
        "200 000 unselected signals: heap +{:.2} MiB, {unselected} remembered now (limit {}), {held} held",
        grown as f64 / (1 << 20) as f64,
        limits.max_unselected
    );
    assert!(unselected <= limits.max_unselected);
    assert_eq!(held, 0, "no rule selects them");
    // 10 000 short names: well under 4 MiB; all 200 000 would be about 20.
    assert!(grown < 4 << 20, "the heap grew {grown} bytes");

    // Selected signals: alarms up to the limit, the rest refused.
    for i in 0..1_500 {
        engine.handle_batch(
            &reading(&format!("plant1/press/m{i}"), "pressure", 100.0),
            Now::at_unix_ms(3),
        );
    }
    // One of the 1 000 alarms is the area's flood meta-alarm.
    assert_eq!(engine.signal_counts().0, 999);
    assert_eq!(engine.refused_readings(), 501);
    // Known signals go on working.
    engine.handle_batch(&reading("plant1/press/m7", "pressure", 190.0), Now::at_unix_ms(4));
    assert!(engine.poll_event().is_some(), "a held signal still raises");
}

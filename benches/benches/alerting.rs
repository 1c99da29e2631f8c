//! The alarm engine's throughput (issue 7, benchmark "engine"): readings
//! per second on one core with 10 000 rules, and heap allocations per
//! reading in steady state, counted by a counting global allocator.
//!
//! 10 000 limit rules, each selecting one of 10 000 signals (100 sources
//! × 100 metrics) by name; batches of 100 readings, values moving inside
//! the normal band (steady state: no transitions), and a second run where
//! 1 % of readings cross a limit and come back (raise, return to normal).
//!
//! Run: `cargo bench -p shopfloor-benches --bench alerting` (a few
//! seconds). Under `cargo test` it runs a small version once.

use std::time::{Duration, Instant};

use shopfloor_alerting::{Engine, RuleSet};
use shopfloor_benches::is_measuring;
use shopfloor_schemas::{Batch, Now, Reading, Timestamp, Value};
use shopfloor_testkit::{Counting, allocations};

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    let measuring = is_measuring();
    let (sources, metrics, rounds) = if measuring { (100, 100, 200) } else { (10, 10, 5) };
    let mut text = String::new();
    for s in 0..sources {
        for m in 0..metrics {
            text.push_str(&format!(
                "[[rule]]\nname = \"r{s}-{m}\"\nsource = \"plant/line-{s}\"\nmetric = \"m{m}\"\n\
                 limit = {{ hh = {{ limit = 180.0, deadband = 2.0 }}, h = {{ limit = 160.0, deadband = 2.0 }}, l = {{ limit = 40.0 }} }}\n"
            ));
        }
    }
    let rules = RuleSet::from_toml(&text, "bench.toml").expect("the bench's rules");
    let n_rules = rules.rules.len();
    let mut batches: Vec<Batch> = (0..sources)
        .map(|s| {
            let mut b = Batch::new(format!("plant/line-{s}"));
            b.readings = (0..metrics)
                .map(|m| Reading::new(format!("m{m}"), Timestamp::from_unix_ms(0), 100.0))
                .collect();
            b
        })
        .collect();

    let run = |engine: &mut Engine, batches: &mut [Batch], rounds: u64, breach_every: u64| {
        let mut events = 0_u64;
        let mut n = 0_u64;
        for round in 0..rounds {
            for b in batches.iter_mut() {
                for r in b.readings.iter_mut() {
                    n += 1;
                    // A different 1 % each round: raises and returns every round.
                    let breach = breach_every > 0 && (n + round).is_multiple_of(breach_every);
                    r.value = Value::F64(if breach { 170.0 } else { 100.0 + (round % 7) as f64 });
                    r.timestamp = Timestamp::from_unix_ms(round * 1000);
                }
                engine.handle_batch(b, Now::at_unix_ms(round * 1000));
                while engine.poll_event().is_some() {
                    events += 1;
                }
            }
        }
        (n, events)
    };

    // A fresh engine sees every signal once first (that makes its alarms),
    // then runs `rounds` measured: readings, events, time, allocations.
    let mut measure = |rules: RuleSet, breach_every: u64| {
        let mut engine = Engine::new(rules);
        run(&mut engine, &mut batches, 2, 0);
        let before = allocations();
        let t = Instant::now();
        let (n, events) = run(&mut engine, &mut batches, rounds, breach_every);
        (n, events, t.elapsed(), allocations() - before)
    };
    // Steady state.
    let (n, events, steady, steady_allocs) = measure(rules.clone(), 0);
    assert_eq!(events, 0, "values in the normal band raise nothing");
    // 1 % of readings breach H and return.
    let (n2, events2, busy, busy_allocs) = measure(rules, 100);
    assert!(events2 > 0);

    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64();
    println!();
    println!(
        "alarm engine: {n_rules} limit rules, {} signals, batches of {metrics}, one thread",
        sources * metrics
    );
    println!(
        "  steady state (no transitions): {:>12.0} readings/s, {:.3} allocations/reading",
        rate(n, steady),
        steady_allocs as f64 / n as f64
    );
    println!(
        "  1 % breaching:                 {:>12.0} readings/s, {:.3} allocations/reading, {events2} events",
        rate(n2, busy),
        busy_allocs as f64 / n2 as f64
    );
    println!(
        "goals: >= 1 000 000 readings/s per core: {}; 0 allocations per reading in steady state: {}",
        if rate(n, steady) >= 1e6 { "met" } else { "NOT met" },
        if steady_allocs == 0 { "met" } else { "NOT met" }
    );
}

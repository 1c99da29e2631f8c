//! A steady driver for instruction counts: decodes the `sparkplug` bench's
//! 10-metric DDATA against its birth's table N times (default 100 000).
//!
//! ```text
//! cargo build --release -p shopfloor-benches --example profile_ddata
//! valgrind --tool=callgrind target/release/examples/profile_ddata 10000
//! ```
//!
//! Instruction counts do not wander with the machine's load as times do,
//! so they compare two versions of the decoder reliably.

use std::hint::black_box;

use shopfloor_sparkplug::{BirthTypes, EncodeOptions, Metric, MetricValue, Payload};

const T0: u64 = 1_700_000_000_000;

fn value(i: usize) -> MetricValue {
    shopfloor_benches::sparkplug_value(i)
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let mut birth = Vec::new();
    for i in 0..100 {
        let mut m =
            Metric::new(format!("Line 1/Press {:02}/Sensor {}", i / 8, i % 8), T0, value(i));
        m.alias = Some(i as u64 + 1);
        birth.push(m);
    }
    let birth = Payload { timestamp: Some(T0), seq: Some(0), metrics: birth, ..Payload::default() };
    let types = BirthTypes::from_birth(&birth);
    let metrics = (0..10)
        .map(|i| {
            let mut m = Metric::new("", T0 + 1000, value(i * 3));
            (m.name, m.alias) = (None, Some(i as u64 * 3 + 1));
            m
        })
        .collect();
    let data = Payload { timestamp: Some(T0 + 1000), seq: Some(1), metrics, ..Payload::default() };
    let bytes = data.encode(EncodeOptions::DEFAULT.with_datatypes(false));
    let mut metrics = 0;
    for _ in 0..n {
        metrics += Payload::decode(black_box(&bytes), &types).expect("decodes").metrics.len();
    }
    println!("{metrics} metrics decoded");
}

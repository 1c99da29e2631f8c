//! Codec speed: encode and decode ns per reading for each codec, for a
//! 1-reading and a 100-reading batch, beside two references measured in the
//! same run: `serde_json::from_slice::<serde_json::Value>` of the JSON payload
//! (generic JSON parsing) and a `memcpy` of each payload's bytes (the floor).
//!
//! Run: `cargo bench -p shopfloor-benches --bench codecs`. The summary table at
//! the end compares decode figures with the targets of the foundation issue:
//! JSON ≤ 300 ns/reading, Protobuf ≤ 100 ns/reading, on a 2-core machine.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use shopfloor_schemas::{Batch, Codec, Quality, Reading, Timestamp, Value};

const SIZES: [usize; 2] = [1, 100];

/// Readings shaped like the plant's: mostly floats, some counters and states,
/// names like `press-07/temperature-3`, one timestamp per second.
fn plant_batch(n: usize) -> Batch {
    let t0 = 1_700_000_000_000;
    let readings = (0..n)
        .map(|i| {
            let machine = i / 4;
            let (metric, value) = match i % 4 {
                0 => {
                    (format!("press-{machine:02}/temperature"), Value::F64(60.0 + i as f64 * 0.37))
                }
                1 => (format!("press-{machine:02}/pressure"), Value::F64(4.2 + i as f64 * 0.011)),
                2 => (format!("press-{machine:02}/cycles"), Value::I64(184_467 + i as i64)),
                _ => (format!("press-{machine:02}/running"), Value::Bool(i % 8 == 3)),
            };
            Reading {
                metric: metric.into(),
                timestamp: Timestamp::from_unix_ms(t0 + i as u64 * 1000),
                value,
                quality: if i % 17 == 0 { Quality::Uncertain } else { Quality::Good },
            }
        })
        .collect();
    Batch { source: "plant1/stamping".to_owned(), readings }
}

fn bench(c: &mut Criterion) {
    for n in SIZES {
        let batch = plant_batch(n);
        let mut g = c.benchmark_group(format!("codecs-{n}"));
        g.throughput(Throughput::Elements(n as u64));
        for codec in Codec::ALL {
            let payload = codec.encode_batch(&batch).unwrap();
            let mut buf = Vec::with_capacity(payload.len());
            g.bench_function(BenchmarkId::new("encode", codec), |b| {
                b.iter(|| {
                    buf.clear();
                    codec.encode_batch_into(black_box(&batch), &mut buf).unwrap();
                });
            });
            g.bench_function(BenchmarkId::new("decode", codec), |b| {
                b.iter(|| codec.decode_batch(black_box(&payload)).unwrap());
            });
            let mut dst = vec![0_u8; payload.len()];
            g.bench_function(BenchmarkId::new("memcpy", codec), |b| {
                b.iter(|| dst.copy_from_slice(black_box(&payload)));
            });
            if codec == Codec::Json {
                g.bench_function("serde_json_value", |b| {
                    b.iter(|| {
                        serde_json::from_slice::<serde_json::Value>(black_box(&payload)).unwrap()
                    });
                });
            }
        }
        g.finish();
    }
}

/// Criterion's mean estimate for one benchmark, in ns per iteration.
fn mean_ns(dir: &Path, group: &str, id: &str) -> Option<f64> {
    let path = dir.join(group).join(id).join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn summary(dir: &Path) {
    println!(
        "\n== codec summary: ns per reading (mean), decode targets from the foundation issue =="
    );
    println!(
        "{:<9} {:>4} {:>9} {:>9} {:>9} {:>12} {:>9}  verdict",
        "codec", "n", "encode", "decode", "memcpy", "json::Value", "target"
    );
    for n in SIZES {
        let group = format!("codecs-{n}");
        let per = |id: &str| mean_ns(dir, &group, id).map(|ns| ns / n as f64);
        let json_value = per("serde_json_value");
        for codec in Codec::ALL {
            let (Some(enc), Some(dec), Some(mem)) = (
                per(&format!("encode/{codec}")),
                per(&format!("decode/{codec}")),
                per(&format!("memcpy/{codec}")),
            ) else {
                println!("{codec:<9} {n:>4}  (no estimates: run `cargo bench`, not `cargo test`)");
                continue;
            };
            let target = match codec {
                Codec::Json => Some(300.0),
                Codec::Protobuf => Some(100.0),
                _ => None,
            };
            let verdict = match target {
                Some(t) if dec <= t => "meets target",
                Some(_) => "MISSES target",
                None => "no target",
            };
            let jv = if codec == Codec::Json {
                json_value.map_or_else(|| "?".into(), |v| format!("{v:.1}"))
            } else {
                "-".into()
            };
            println!(
                "{:<9} {:>4} {:>9.1} {:>9.1} {:>9.1} {:>12} {:>9}  {verdict}",
                codec.as_str(),
                n,
                enc,
                dec,
                mem,
                jv,
                target.map_or_else(|| "-".into(), |t| format!("≤ {t:.0}")),
            );
        }
    }
}

fn main() {
    let dir = PathBuf::from(
        std::env::var("CARGO_TARGET_DIR")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").to_owned()),
    )
    .join("criterion");
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    bench(&mut c);
    c.final_summary();
    if std::env::args().any(|a| a == "--bench") {
        summary(&dir);
    }
}

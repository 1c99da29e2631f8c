//! Codec speed: encode and decode ns per reading for each codec, for a
//! 1-reading and a 100-reading batch, beside two references measured in the
//! same run: `serde_json::from_slice::<serde_json::Value>` of the JSON payload
//! (generic JSON parsing) and a `memcpy` of each payload's bytes (the floor).
//!
//! Run: `cargo bench -p shopfloor-benches --bench codecs`. The summary table at
//! the end compares decode figures with the targets of the foundation issue:
//! JSON ≤ 300 ns/reading, Protobuf ≤ 100 ns/reading, on a 2-core machine.

use std::hint::black_box;
use std::path::Path;

use criterion::{BenchmarkId, Criterion, Throughput};
use shopfloor_benches::{criterion_dir, ns_per_iter, plant_batch, run_criterion};
use shopfloor_schemas::Codec;

const SIZES: [usize; 2] = [1, 100];

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

fn summary(dir: &Path) {
    println!(
        "\n== codec summary: ns per reading, median (best sample); decode targets from the foundation issue =="
    );
    println!(
        "{:<9} {:>4} {:>16} {:>16} {:>7} {:>12} {:>7}  verdict (median)",
        "codec", "n", "encode", "decode", "memcpy", "json::Value", "target"
    );
    let show = |(m, b): (f64, f64)| format!("{m:.1} ({b:.1})");
    for n in SIZES {
        let group = format!("codecs-{n}");
        let per =
            |id: &str| ns_per_iter(dir, &group, id).map(|(m, b)| (m / n as f64, b / n as f64));
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
                Some(t) if dec.0 <= t => "meets target",
                Some(_) => "MISSES target",
                None => "no target",
            };
            let json_value = match codec {
                Codec::Json => {
                    per("serde_json_value").map_or_else(|| "?".into(), |v| format!("{:.1}", v.0))
                }
                _ => "-".into(),
            };
            println!(
                "{:<9} {:>4} {:>16} {:>16} {:>7.1} {:>12} {:>7}  {verdict}",
                codec.as_str(),
                n,
                show(enc),
                show(dec),
                mem.0,
                json_value,
                target.map_or_else(|| "-".into(), |t| format!("≤ {t:.0}")),
            );
        }
    }
    println!(
        "(n = 1 includes the per-batch cost of the source and the readings vector; \
         n = 100 is the per-reading cost a subscriber pays at volume.)"
    );
}

fn main() {
    run_criterion(bench, || summary(&criterion_dir()));
}

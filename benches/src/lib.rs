//! Helpers shared by the benchmarks in `benches/`: running criterion, where
//! it keeps its results, and reading a figure back for the summary each
//! bench prints beside its target.

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::Criterion;

/// Runs a criterion bench as every one here does (0.5 s warm-up, 2 s of
/// measurement, the command line's options), then, under `cargo bench`,
/// `summary` (which reads the figures back from [`criterion_dir`]).
pub fn run_criterion(bench: impl FnOnce(&mut Criterion), summary: impl FnOnce()) {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    bench(&mut c);
    c.final_summary();
    if is_measuring() {
        summary();
    }
}

/// The tokio runtime the benches drive their clients and servers on: two
/// workers, one a core of the 2-core machine the targets are set for.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Criterion's output directory: `$CARGO_TARGET_DIR/criterion`, else the
/// workspace's `target/criterion`.
pub fn criterion_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"), PathBuf::from)
        .join("criterion")
}

/// Criterion's median estimate for one benchmark, in ns per iteration, and
/// the fastest sample. This machine's speed wanders by a third between and
/// within runs (a shared VM), so the summaries show both: the median is the
/// verdict, the best sample what the code does when the machine is quiet.
/// `None` when the benchmark has not run (`cargo test` runs benches without
/// measuring).
pub fn ns_per_iter(dir: &Path, group: &str, id: &str) -> Option<(f64, f64)> {
    let read = |file: &str| -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(dir.join(group).join(id).join("new").join(file)).ok()?;
        serde_json::from_str(&text).ok()
    };
    let median = read("estimates.json")?["median"]["point_estimate"].as_f64()?;
    let sample = read("sample.json")?;
    let (iters, times) = (sample["iters"].as_array()?, sample["times"].as_array()?);
    let best = iters
        .iter()
        .zip(times)
        .filter_map(|(n, t)| Some(t.as_f64()? / n.as_f64()?))
        .fold(f64::INFINITY, f64::min);
    Some((median, best))
}

/// Whether the bench binary was started by `cargo bench` (which passes
/// `--bench`) rather than by `cargo test`.
pub fn is_measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// The metric values the Sparkplug benches and the instruction-count driver
/// use: a mix of every common type, negative where signed.
pub fn sparkplug_value(i: usize) -> shopfloor_sparkplug::MetricValue {
    use shopfloor_sparkplug::MetricValue;
    match i % 8 {
        0 => MetricValue::Double(60.0 + i as f64 * 0.37),
        1 => MetricValue::Float(4.2 + i as f32 * 0.01),
        2 => MetricValue::Int32(184_467 + i as i32),
        3 => MetricValue::Int16(-(i as i16)),
        4 => MetricValue::Boolean(i % 16 == 4),
        5 => MetricValue::UInt32(3_000_000_000 + i as u32),
        6 => MetricValue::Int64(-9_000_000_000 - i as i64),
        _ => MetricValue::String(format!("BATCH-{i:04}")),
    }
}

/// CPU time of a process in clock ticks (USER_HZ, 100 a second), its
/// reaped children's included when `reaped`.
pub fn ticks(pid: u32, reaped: bool) -> u64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
    let Some(end) = s.rfind(')') else { return 0 };
    // Fields from the 3rd (state): utime is the 14th, stime 15th, cutime
    // 16th, cstime 17th.
    let f: Vec<u64> = s[end + 2..].split(' ').map(|x| x.parse().unwrap_or(0)).collect();
    f[11] + f[12] + if reaped { f[13] + f[14] } else { 0 }
}

/// CPU ticks of a postmaster and every live backend it forked.
pub fn pg_ticks(postmaster: u32) -> u64 {
    let mut total = ticks(postmaster, true);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(end) = s.rfind(')') else { continue };
        let ppid: u32 = s[end + 2..].split(' ').nth(1).and_then(|x| x.parse().ok()).unwrap_or(0);
        if ppid == postmaster {
            total += ticks(pid, false);
        }
    }
    total
}

/// Peak resident memory (VmHWM) of a process, MiB.
pub fn peak_mib(pid: u32) -> f64 {
    status_mib(pid, "VmHWM:")
}

/// Resident memory now (VmRSS) of a process, MiB.
pub fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS:")
}

/// A memory figure of `/proc/PID/status` (`field` with its colon), MiB; 0
/// when the process or the field is gone.
fn status_mib(pid: u32, field: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Readings shaped like the plant's: mostly floats, some counters and states,
/// names like `press-07/temperature-3`, one timestamp per second.
pub fn plant_batch(n: usize) -> shopfloor_schemas::Batch {
    use shopfloor_schemas::{Batch, Quality, Reading, Timestamp, Value};
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
    Batch { source: "plant1/stamping".into(), readings }
}

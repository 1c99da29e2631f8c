//! A 24-hour broker outage at the reference plant's rate, through an edge
//! node with an on-disk spool: 120 sensors (30 machines of 4) at 1 Hz is
//! 10.4 M readings. The bench stores them as the node does while offline,
//! reopens the spool as a restarted gateway would, then replays all of it
//! as historical DATA, confirming as a driver does, and prints the figures
//! beside the Sparkplug issue's reference: the day must fit the spool's
//! bound (1 GiB here) with nothing dropped, and replay must not take longer
//! than a fraction of the outage.
//!
//! Run: `cargo bench -p shopfloor-benches --bench outage` (about a minute;
//! the spool goes to a temporary directory). Under `cargo test` it runs one
//! simulated hour instead of a day.

use std::time::{Duration, Instant};

use shopfloor_benches::is_measuring;
use shopfloor_schemas::{Batch, Reading, Timestamp};
use shopfloor_sparkplug::edge::{MetricSpec, Now};
use shopfloor_sparkplug::spool::FileSpool;
use shopfloor_sparkplug::{DataType, EdgeNode, EdgeNodeConfig};

const MACHINES: usize = 30;
const SENSORS_PER_MACHINE: usize = 4;
const BOUND: u64 = 1 << 30;
/// Replayed messages between confirmations, as the MQTT driver does.
const BARRIER_EVERY: usize = 16;
const T0: u64 = 1_700_000_000_000;

const NAMES: [&str; SENSORS_PER_MACHINE] = ["pressure", "temperature", "vibration", "current"];

fn config() -> EdgeNodeConfig {
    let mut c = EdgeNodeConfig::new("Plant1", "Gateway-1");
    c.devices = (0..MACHINES)
        .map(|m| {
            let metrics = NAMES.iter().map(|n| MetricSpec::new(*n, DataType::Double)).collect();
            (format!("machine-{m:02}"), metrics)
        })
        .collect();
    c
}

fn now(ms: u64) -> Now {
    Now { instant: Instant::now(), unix_ms: ms }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

fn main() {
    let seconds: u64 = if is_measuring() { 24 * 3600 } else { 3600 };
    let readings = seconds * (MACHINES * SENSORS_PER_MACHINE) as u64;
    let dir = tempfile::tempdir().expect("a temporary directory");
    eprintln!(
        "outage: {} h of {} sensors at 1 Hz = {readings} readings into {}",
        seconds / 3600,
        MACHINES * SENSORS_PER_MACHINE,
        dir.path().display()
    );

    // 1. Offline: every reading goes to the spool.
    let (spool, _) = FileSpool::open(dir.path(), BOUND).expect("open the spool");
    let mut node = EdgeNode::with_spool(config(), Box::new(spool)).expect("valid config");
    let devices: Vec<String> = (0..MACHINES).map(|m| format!("machine-{m:02}")).collect();
    let started = Instant::now();
    for s in 0..seconds {
        let ts = Timestamp::from_unix_ms(T0 + s * 1000);
        for (m, device) in devices.iter().enumerate() {
            let mut b = Batch::new(device.as_str());
            for (i, name) in NAMES.iter().enumerate() {
                // A value that changes every second (no deadband saves us).
                let v = (s as f64 * 0.1 + (m * 4 + i) as f64).sin() * 100.0;
                b.readings.push(Reading::new(*name, ts, v));
            }
            node.publish(&b, now(T0 + s * 1000)).expect("stored");
        }
        if s % (seconds / 10) == 0 && s > 0 {
            eprintln!("  stored {} % …", s * 100 / seconds);
        }
    }
    node.sync_store().expect("sync");
    let store_time = started.elapsed();
    let (stored, bytes, dropped) = (node.stored(), node.stored_bytes(), node.dropped());
    drop(node);

    // 2. The gateway restarts: the spool is checked and reopened.
    let started = Instant::now();
    let (spool, report) = FileSpool::open(dir.path(), BOUND).expect("reopen the spool");
    let reopen_time = started.elapsed();
    assert_eq!(report.readings, stored, "the restart kept every stored reading");

    // 3. The broker is back: births, then the replay, confirmed in steps.
    let mut node = EdgeNode::with_spool(config(), Box::new(spool)).expect("valid config");
    let started = Instant::now();
    node.handle_connected(now(T0 + seconds * 1000));
    let (mut messages, mut payload_bytes, mut since_barrier) = (0_u64, 0_u64, 0);
    while node.poll_transmit().is_some() {}
    while let Some(p) = node.poll_replay(now(T0 + seconds * 1000)) {
        messages += 1;
        payload_bytes += p.payload.len() as u64;
        since_barrier += 1;
        // A mark covers whole chunks handed out; mid-chunk there may be none yet.
        if since_barrier >= BARRIER_EVERY
            && let Some(mark) = node.replay_mark()
        {
            node.commit_replay(mark);
            since_barrier = 0;
        }
    }
    if let Some(mark) = node.replay_mark() {
        node.commit_replay(mark);
    }
    let replay_time = started.elapsed();
    while let Some(e) = node.poll_event() {
        eprintln!("  event: {e:?}");
    }
    assert_eq!(node.stored(), 0, "everything replayed and confirmed");

    let rate = |n: u64, t: Duration| n as f64 / t.as_secs_f64();
    println!();
    println!("outage: {} h at 120 sensors x 1 Hz through a FileSpool", seconds / 3600);
    println!("  {:<34} {:>14} {:>28}", "", "measured", "reference");
    println!(
        "  {:<34} {:>14} {:>28}",
        "readings stored",
        format!("{stored}"),
        format!("{readings} (none dropped)")
    );
    println!("  {:<34} {:>14} {:>28}", "readings dropped", dropped, "0");
    println!(
        "  {:<34} {:>11.0} MiB {:>28}",
        "spool on disk",
        mib(bytes),
        format!("≤ {:.0} MiB bound", mib(BOUND))
    );
    println!("  {:<34} {:>12.1} B {:>28}", "per reading on disk", bytes as f64 / stored as f64, "");
    println!(
        "  {:<34} {:>11.1} s {:>28}",
        "time to store (offline)",
        store_time.as_secs_f64(),
        format!("{:.0} readings/s vs 120/s", rate(stored, store_time))
    );
    println!(
        "  {:<34} {:>11.1} s {:>28}",
        "restart: check and reopen",
        reopen_time.as_secs_f64(),
        ""
    );
    println!(
        "  {:<34} {:>11.1} s {:>28}",
        "replay (encode + confirm)",
        replay_time.as_secs_f64(),
        format!("< {} s of outage", seconds)
    );
    println!(
        "  {:<34} {:>14} {:>28}",
        "replay messages / payload",
        format!("{messages} / {:.0} MiB", mib(payload_bytes)),
        ""
    );
    println!(
        "  verdict: {}",
        if dropped == 0 && bytes <= BOUND && stored == readings { "met" } else { "NOT met" }
    );
}

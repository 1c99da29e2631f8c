//! The seed's plant through the whole reference deployment (issue 8):
//! `shopfloor-sim` (30 machines, 120 sensors at 1 Hz, its scripted faults)
//! → both gateways → Mosquitto (shipped TLS + ACL configuration) →
//! `shopfloor-ingestd` → PostgreSQL, and `shopfloor-alertd` → Alertmanager,
//! every part a release build in a process of its own
//! (`shopfloor_examples::plant`). Measures, over a window after a warm-up,
//! CPU % of one core and resident memory (now and peak) of each process,
//! and the message rate beside the seed's 2 M messages a day.
//!
//! Goal: each shopfloor daemon (gateways, ingestd, alertd) below 1 % of a
//! core and 64 MiB. The simulator stands in for the PLCs and is measured
//! for information.
//!
//! `cargo bench -p shopfloor-benches --bench plant` (builds the release
//! binaries first; about 2 minutes). `SHOPFLOOR_PLANT_SECS=300` lengthens
//! the window (default 60 s).

use std::time::{Duration, Instant};

use shopfloor_benches::{is_measuring, peak_mib, pg_ticks, rss_mib, ticks};
use shopfloor_examples::plant::{Options, Plant, metric};

const WARMUP: Duration = Duration::from_secs(15);

fn main() {
    let measuring = is_measuring();
    let window = Duration::from_secs(
        std::env::var("SHOPFLOOR_PLANT_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60),
    );
    // `cargo test` runs this once, briefly, in the debug build: it checks
    // the bench works, not the figures.
    let (warmup, window) =
        if measuring { (WARMUP, window) } else { (Duration::from_secs(2), Duration::from_secs(3)) };
    let exe = std::env::current_exe().expect("the bench's own path");
    // target/<profile>/deps/plant-… → target/<profile>
    let bins = exe.parent().and_then(|d| d.parent()).expect("a target folder").to_owned();
    let profile = if measuring { vec!["--release"] } else { vec![] };
    eprintln!("building the shopfloor binaries ({})", if measuring { "release" } else { "debug" });
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = std::process::Command::new(cargo)
        .args(["build", "-q", "-p", "shopfloor-examples", "--bins"])
        .args(&profile)
        .status()
        .expect("run cargo build");
    assert!(built.success(), "cargo build -p shopfloor-examples --bins failed");

    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let plant = Plant::start(&Options::new(dir.path(), bins), |step| {
        eprintln!("[{:>5.1} s] starting {step}", started.elapsed().as_secs_f64());
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!(
        "warming up {warmup:?} (births, the first scripted faults), then measuring {window:?}"
    );
    std::thread::sleep(warmup);

    let processes: Vec<(&str, u32, bool)> = vec![
        ("shopfloor-sim (stands in for 30 PLCs)", plant.sim.pid().unwrap(), false),
        ("shopfloor-modbus-gateway", plant.modbus_gw.pid().unwrap(), true),
        ("shopfloor-opcua-gateway", plant.opcua_gw.pid().unwrap(), true),
        ("shopfloor-ingestd", plant.ingestd.pid().unwrap(), true),
        ("shopfloor-alertd", plant.alertd.pid().unwrap(), true),
        ("mosquitto", plant.broker.pid().unwrap(), false),
    ];
    let postmaster = plant.postgres.pid();
    let rows =
        |p: &Plant| metric(&p.scrape("ingestd"), "shopfloor_ingest_rows_total").unwrap_or(0.0);
    let messages =
        |p: &Plant| metric(&p.scrape("ingestd"), "shopfloor_ingest_messages_total").unwrap_or(0.0);
    let before: Vec<u64> = processes.iter().map(|(_, pid, _)| ticks(*pid, false)).collect();
    let pg_before = postmaster.map(pg_ticks);
    let (rows0, msgs0) = (rows(&plant), messages(&plant));
    let t0 = Instant::now();
    std::thread::sleep(window);
    let secs = t0.elapsed().as_secs_f64();
    let after: Vec<u64> = processes.iter().map(|(_, pid, _)| ticks(*pid, false)).collect();
    let pg_after = postmaster.map(pg_ticks);
    let (rows1, msgs1) = (rows(&plant), messages(&plant));
    // USER_HZ is 100 on Linux.
    let pct = |d: u64| d as f64 / 100.0 / secs * 100.0;

    let msg_rate = (msgs1 - msgs0) / secs;
    let row_rate = (rows1 - rows0) / secs;
    println!(
        "\nThe seed's plant, {secs:.0} s window, release builds, every process on the same 2 cores\n"
    );
    println!("| process | CPU (% of one core) | RSS now / peak (MiB) | goal | verdict |");
    println!("|---|---|---|---|---|");
    for (((name, pid, ours), b), a) in processes.iter().zip(&before).zip(&after) {
        let cpu = pct(a.saturating_sub(*b));
        let (rss, peak) = (rss_mib(*pid), peak_mib(*pid));
        let (goal, verdict) = if *ours {
            ("< 1 %, < 64 MiB", if cpu < 1.0 && peak < 64.0 { "met" } else { "NOT met" })
        } else {
            ("— (not a shopfloor daemon)", "")
        };
        println!("| {name} | {cpu:.2} | {rss:.1} / {peak:.1} | {goal} | {verdict} |");
    }
    if let (Some(b), Some(a)) = (pg_before, pg_after) {
        println!(
            "| postgres (all backends) | {:.2} | — | — (the database) | |",
            pct(a.saturating_sub(b))
        );
    }
    println!(
        "\nMQTT messages into ingest: {msg_rate:.1}/s = {:.2} M/day (the seed's plant: 2 M/day); rows: {row_rate:.1}/s = {:.2} M/day",
        msg_rate * 86_400.0 / 1e6,
        row_rate * 86_400.0 / 1e6
    );
    drop(plant);
}

//! The live page's cost (issue 9): `shopfloor-live` (a release build in a
//! process of its own) on a broker fed by Sparkplug edge nodes at 1 Hz,
//! watched by a real headless Chromium, at the seed's plant (120 sensors)
//! and at car-plant scale (100 000 sensors, where the page shows one tile
//! per machine instead of every signal).
//!
//! Figures per scale, over the window, each beside its reference:
//! - updates drawn per second in the browser, beside the stream's 1/s;
//! - the browser's time to parse and draw one update (mean and max in the
//!   window), beside the 100 ms within which a person sees a response as
//!   immediate (RAIL), and the first draw's (every tile created);
//! - bytes per update, and one `GET /snapshot`'s time at the server;
//! - CPU % of one core and resident memory of `shopfloor-live`, and CPU %
//!   of Chromium with every process it forked.
//!
//! `cargo bench -p shopfloor-benches --bench live_page` (builds the release
//! binary first; about 2 minutes). `SHOPFLOOR_LIVE_SECS` (default 30) sets
//! the window; `SHOPFLOOR_CAR_SENSORS` (default 100000, a multiple of
//! 2000) the big plant.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use shopfloor_benches::{is_measuring, peak_mib, rss_mib, runtime, ticks};
use shopfloor_examples::plant::Daemon;
use shopfloor_mqtt::{Broker, DriverConfig, EdgeDriver};
use shopfloor_schemas::{Batch, Reading, Timestamp};
use shopfloor_sparkplug::edge::MetricSpec;
use shopfloor_sparkplug::{DataType, EdgeNode, EdgeNodeConfig};
use shopfloor_testkit::{Chromium, Mosquitto, free_port};

/// One plant: edge nodes × devices × metrics.
struct Scale {
    name: &'static str,
    nodes: usize,
    devices: usize,
    metrics: usize,
}

fn main() {
    let measuring = is_measuring();
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|s| s.parse().ok()).unwrap_or(d);
    // `cargo test` runs this once, small and short, in the debug build.
    let (car, window) = if measuring {
        (
            env("SHOPFLOOR_CAR_SENSORS", 100_000) as usize,
            Duration::from_secs(env("SHOPFLOOR_LIVE_SECS", 30)),
        )
    } else {
        (6_000, Duration::from_secs(3))
    };
    assert!(car % 2000 == 0 && car > 0, "SHOPFLOOR_CAR_SENSORS: a multiple of 2000");
    let scales = [
        Scale { name: "plant", nodes: 1, devices: 30, metrics: 4 },
        Scale { name: "car plant", nodes: car / 2000, devices: 20, metrics: 100 },
    ];

    let exe = std::env::current_exe().expect("the bench's own path");
    let bins = exe.parent().and_then(|d| d.parent()).expect("a target folder").to_owned();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = std::process::Command::new(cargo);
    build.args(["build", "-q", "-p", "shopfloor-examples", "--bin", "shopfloor-live"]);
    if measuring {
        build.arg("--release");
    }
    assert!(build.status().expect("run cargo build").success(), "building shopfloor-live failed");

    let mut rows = Vec::new();
    for scale in &scales {
        let broker = Mosquitto::builder()
            .message_size_limit(16 << 20)
            .start()
            .expect("start mosquitto (apt-get install -y mosquitto)");
        let rt = runtime();
        rows.push(run(&rt, &broker, &bins, scale, window));
    }
    println!("\nlive page, window {window:?} (references in brackets):");
    for r in rows {
        println!("{r}");
    }
}

fn snapshot(addr: SocketAddr) -> serde_json::Value {
    shopfloor_testkit::http_get(addr, "/snapshot")
        .ok()
        .and_then(|(_, b)| serde_json::from_str(&b).ok())
        .unwrap_or_default()
}

/// CPU ticks of `root` and every process below it.
fn tree_ticks(root: u32) -> u64 {
    let mut parent = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(end) = s.rfind(')') else { continue };
        let ppid: u32 = s[end + 2..].split(' ').nth(1).and_then(|x| x.parse().ok()).unwrap_or(0);
        parent.insert(pid, ppid);
    }
    let below = |mut pid: u32| {
        while pid > 1 {
            if pid == root {
                return true;
            }
            pid = parent.get(&pid).copied().unwrap_or(0);
        }
        false
    };
    parent.keys().filter(|&&p| below(p)).map(|&p| ticks(p, false)).sum()
}

fn run(
    rt: &tokio::runtime::Runtime,
    broker: &Mosquitto,
    bins: &std::path::Path,
    scale: &Scale,
    window: Duration,
) -> String {
    let sensors = scale.nodes * scale.devices * scale.metrics;
    eprintln!("{}: {sensors} sensors at 1 Hz", scale.name);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let config = dir.path().join("live.toml");
    std::fs::write(
        &config,
        format!(
            "[mqtt]\nhost = \"{}\"\nport = {}\n[live]\nlisten = \"127.0.0.1:{port}\"\n",
            broker.host(),
            broker.port()
        ),
    )
    .unwrap();
    let mut live = Daemon::spawn(
        "live",
        bins.join("shopfloor-live"),
        ["--config".to_owned(), config.display().to_string()],
        dir.path().join("live.log"),
    )
    .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    live.wait_until(Duration::from_secs(30), |_| {
        shopfloor_testkit::http_get(addr, "/").is_ok_and(|(s, _)| s == 200)
    })
    .unwrap_or_else(|e| panic!("{e:#}"));

    // The generator: every device one DDATA a second, spread over the second.
    let stop = Arc::new(AtomicBool::new(false));
    let names: Vec<String> = (0..scale.metrics).map(|m| format!("m{m:02}")).collect();
    let edges: Vec<Arc<EdgeDriver>> = rt.block_on(async {
        let mut edges = Vec::new();
        for n in 0..scale.nodes {
            let mut node = EdgeNodeConfig::new("Bench", format!("line-{n:02}"));
            node.devices = (0..scale.devices)
                .map(|d| {
                    let specs = names.iter().map(|m| MetricSpec::new(m.as_str(), DataType::Double));
                    (format!("machine-{d:02}"), specs.collect())
                })
                .collect();
            let mut c = DriverConfig::new(
                format!("bench-{n:02}"),
                Broker::new(broker.host(), broker.port()),
            );
            c.queue = 4 * scale.devices;
            edges.push(Arc::new(EdgeDriver::spawn(EdgeNode::new(node).unwrap(), c)));
        }
        edges
    });
    for (n, edge) in edges.iter().enumerate() {
        let (edge, stop, names, devices) =
            (edge.clone(), stop.clone(), names.clone(), scale.devices);
        rt.spawn(async move {
            let start = Instant::now();
            let mut second = 0u64;
            while !stop.load(Relaxed) {
                for d in 0..devices {
                    let due =
                        Duration::from_millis(second * 1000 + (d as u64 * 1000) / devices as u64);
                    tokio::time::sleep_until((start + due).into()).await;
                    let now = Timestamp::now();
                    let mut b = Batch::new(format!("machine-{d:02}"));
                    for (m, name) in names.iter().enumerate() {
                        let v = 50.0 + ((second + (m + d + n) as u64) % 7) as f64;
                        b.readings.push(Reading::new(name.as_str(), now, v));
                    }
                    if edge.publish(b).await.is_err() {
                        return;
                    }
                }
                second += 1;
            }
        });
    }
    // Every signal known to the page.
    let deadline = Instant::now() + Duration::from_secs(120);
    while snapshot(addr)["signals"].as_u64().unwrap_or(0) < sensors as u64 {
        assert!(
            Instant::now() < deadline,
            "{}: the page did not see {sensors} signals in 120 s: {}",
            scale.name,
            snapshot(addr)["signals"]
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let mut browser = Chromium::start().unwrap_or_else(|e| panic!("{e}"));
    browser.navigate(&format!("http://{addr}/")).unwrap();
    browser.wait_for("window.liveStats.events >= 2", Duration::from_secs(30)).unwrap();
    let detailed = browser.eval("document.querySelectorAll('svg.spark').length > 0").unwrap();
    let tiles = browser.eval("document.querySelectorAll('section.machine').length").unwrap();

    let (server, chrome) = (live.pid().unwrap(), browser.pid().unwrap());
    // The slowest draw so far is the first (every tile created); the
    // window's own slowest is measured from zero.
    let stats0 = browser
        .eval("(() => { const s = {...window.liveStats}; window.liveStats.maxDrawMs = 0; return s; })()")
        .unwrap();
    let (s0, c0, t0) = (ticks(server, false), tree_ticks(chrome), Instant::now());
    // The measured window: the browser and the server run undisturbed.
    std::thread::sleep(window);
    let stats1 = browser.eval("({...window.liveStats})").unwrap();
    let (s1, c1, secs) = (ticks(server, false), tree_ticks(chrome), t0.elapsed().as_secs_f64());
    let mut snap_ms: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let _ = shopfloor_testkit::http_get(addr, "/snapshot");
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    snap_ms.sort_by(f64::total_cmp);
    assert!(browser.exceptions().is_empty(), "the page threw: {:?}", browser.exceptions());
    stop.store(true, Relaxed);

    let d = |k: &str| stats1[k].as_f64().unwrap_or(0.0) - stats0[k].as_f64().unwrap_or(0.0);
    let events = d("events");
    assert!(events > 0.0, "{}: no update drawn in the window", scale.name);
    let row = format!(
        "{:>9} {sensors:>6} sensors, {tiles} tiles, {}: {:.2} updates/s [1/s]; draw {:.1} ms mean, {:.1} ms max [100 ms] (first draw {:.0} ms); \
         {:.0} kB/update; GET /snapshot {:.1} ms median; shopfloor-live {:.1} % CPU, {:.0} MiB (peak {:.0}); Chromium {:.1} % CPU",
        scale.name,
        if detailed == true { "every signal" } else { "aggregated per machine" },
        events / secs,
        d("drawMs") / events,
        stats1["maxDrawMs"].as_f64().unwrap_or(0.0),
        stats0["maxDrawMs"].as_f64().unwrap_or(0.0),
        d("bytes") / events / 1000.0,
        snap_ms[2],
        (s1 - s0) as f64 / secs,
        rss_mib(server),
        peak_mib(server),
        (c1 - c0) as f64 / secs,
    );
    eprintln!("{row}");
    drop(browser);
    live.terminate(Duration::from_secs(10));
    drop(edges);
    row
}

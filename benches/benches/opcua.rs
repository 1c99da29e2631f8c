//! OPC UA → MQTT throughput (issue 5, benchmark): an asyncua server with
//! N variables all changing every 100 ms, the Sparkplug gateway
//! subscribed to all of them, and an MQTT subscriber counting the metrics
//! of every DDATA. Prints values/s arriving at MQTT beside the value
//! notifications the server sent in the same run (the reference: the
//! bridge cannot pass on more than the server sends; a saturated asyncua
//! sends fewer than it changes, and says how many it changed), and the CPU
//! time of this process (the gateway and the counting subscriber) per value.
//!
//! Run: `cargo bench -p shopfloor-benches --bench opcua` (about 40 s;
//! `SHOPFLOOR_BENCH_ITEMS` sets N, default 10 000). Under `cargo test` it
//! runs a short version once (200 items, 3 s).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use prost::Message as _;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use shopfloor_benches::{is_measuring, runtime};
use shopfloor_bridge_opcua::BridgeConfig;
use shopfloor_bridge_opcua::client::ClientTuning;
use shopfloor_bridge_opcua::gateway::Gateway;
use shopfloor_mqtt::{Broker, DriverConfig};
use shopfloor_sparkplug::{EdgeNode, EdgeNodeConfig};
use shopfloor_testkit::{Mosquitto, PythonPeer, free_port, shared_script};

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we own.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// The server's counters: value changes made, value notifications sent.
fn published(server: &mut PythonPeer) -> (u64, u64) {
    server.send(r#"{"stats": true}"#).expect("the server's stdin");
    let line = server.line(Duration::from_secs(30)).expect("the server's stats");
    let v = serde_json::from_str::<serde_json::Value>(&line).unwrap_or_default();
    (v["published"].as_u64().unwrap_or(0), v["sent"].as_u64().unwrap_or(0))
}

fn main() {
    let measuring = is_measuring();
    let items: usize = if measuring {
        std::env::var("SHOPFLOOR_BENCH_ITEMS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000)
    } else {
        200
    };
    let secs = if measuring { 20 } else { 3 };
    let runtime = runtime();
    runtime.block_on(run(items, secs));
}

async fn run(items: usize, secs: u64) {
    let port = free_port().unwrap();
    let mut server = PythonPeer::spawn(
        shared_script("opcua_server.py"),
        &[&port.to_string(), "--items", &items.to_string(), "--interval", "0.1"],
    )
    .expect("start the asyncua server (scripts/test makes the .venv)");
    server.until(Duration::from_secs(120), |l| l == "ready").expect("asyncua ready");
    let broker = Mosquitto::start().expect("start mosquitto");

    // The counting subscriber.
    let values = Arc::new(AtomicU64::new(0));
    let mut options = MqttOptions::new("counter", broker.host(), broker.port());
    // A DDATA of a thousand metrics is far above rumqttc's 10 kB default.
    options.set_max_packet_size(Some(16 << 20));
    let (sub, mut events) = AsyncClient::new(options, 1000);
    sub.subscribe("spBv1.0/Plant1/DDATA/#", QoS::AtMostOnce).await.unwrap();
    let counted = Arc::clone(&values);
    let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sub_failed = Arc::clone(&failed);
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Ok(payload) = shopfloor_sparkplug::proto::Payload::decode(&p.payload[..])
                    {
                        counted.fetch_add(payload.metrics.len() as u64, Relaxed);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("opcua: the counting subscriber stopped: {e}");
                    sub_failed.store(true, Relaxed);
                    break;
                }
            }
        }
    });

    let pki = tempfile::tempdir().unwrap();
    let mut text = format!(
        "[[server]]\nname = \"bench\"\nendpoint = \"opc.tcp://localhost:{port}/\"\npki_dir = \"{}\"\n\
         publishing_interval_ms = 100\nsampling_interval_ms = 100\nqueue_size = 2\n",
        pki.path().display()
    );
    for i in 0..items {
        text.push_str(&format!(
            "[[server.node]]\nmetric = \"Item{i}\"\nnode_id = \"nsu=urn:shopfloor:test;s=Machine1.Item{i}\"\n"
        ));
    }
    let config = BridgeConfig::from_toml(&text).unwrap();
    let node = EdgeNode::new(EdgeNodeConfig::new("Plant1", "opcua-bench")).unwrap();
    let mut driver = DriverConfig::new("opcua-bench", Broker::new(broker.host(), broker.port()));
    driver.queue = 4096;
    let gateway = Gateway::spawn(&config, node, driver, ClientTuning::default());

    // Warm up: wait for data to flow.
    let start = Instant::now();
    while values.load(Relaxed) < items as u64 {
        assert!(start.elapsed() < Duration::from_secs(600), "no data through the gateway in 600 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "opcua: {items} items, data flowing after {:.1} s; measuring {secs} s",
        start.elapsed().as_secs_f64()
    );
    let (v0, p0, c0, t0) =
        (values.load(Relaxed), published(&mut server), cpu_seconds(), Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (v1, p1, c1, dt) =
        (values.load(Relaxed), published(&mut server), cpu_seconds(), t0.elapsed().as_secs_f64());
    assert!(!failed.load(Relaxed), "the counting subscriber stopped while measuring");
    let through = (v1 - v0) as f64 / dt;
    let (made, sent) = ((p1.0 - p0.0) as f64 / dt, (p1.1 - p0.1) as f64 / dt);
    let cpu_us = (c1 - c0) * 1e6 / (v1 - v0).max(1) as f64;
    println!(
        "opcua: values at MQTT {through:.0}/s; the server sent {sent:.0} notifications/s (reference), ratio {:.2}; it changed {made:.0} values/s",
        through / sent.max(1.0)
    );
    println!(
        "opcua: CPU of the gateway and the counting subscriber {cpu_us:.1} µs per value ({:.0} % of a core)",
        (c1 - c0) * 100.0 / dt
    );
    println!(
        "opcua: target {} items × 10/s = {} values/s; the reference is what the asyncua server achieves on this machine",
        items,
        items * 10
    );
    gateway.shutdown().await;
}

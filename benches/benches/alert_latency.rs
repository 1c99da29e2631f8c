//! Alarm latency under load (issue 7, benchmark "latency"): background
//! readings through Mosquitto to the alerting driver at a fixed rate, and
//! breaches injected at random times on their own signals. Per breach:
//! publish → alarm raised (the event's engine time) and publish → MQTT
//! event received, p50/p99/p99.9, beside the broker's own hop (publish →
//! a plain subscriber) measured on the same messages. The alerting driver
//! runs in a process of its own, as `shopfloor-alertd` would.
//!
//! The issue asks for 100 000 msg/s of background; Mosquitto on this
//! 2-core machine tops out at 40–60 k msg/s (see `ingest_e2e`), so the
//! background here is 20 000 msg/s, and the figure says so.
//!
//! Run: `cargo bench -p shopfloor-benches --bench alert_latency` (about
//! 40 s). Under `cargo test` it runs a short version once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use shopfloor_alerting::mqtt::{AlertConfig, AlertDriver, Input};
use shopfloor_alerting::{Engine, RuleSet};
use shopfloor_benches::{is_measuring, runtime};
use shopfloor_schemas::{Batch, Codec, Reading, Timestamp, TopicTemplate, topic};
use shopfloor_testkit::Mosquitto;

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn payload(metric: &str, value: f64) -> Vec<u8> {
    Codec::Json
        .encode_batch(&Batch::new("x").with(Reading::new(metric, Timestamp::now(), value)))
        .unwrap()
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    (at(0.5), at(0.99), at(0.999))
}

/// The environment variable that turns this binary into the alerting
/// daemon: `host port`. It runs in a process of its own, as in a
/// deployment, so the load generator does not share its runtime.
const ROLE: &str = "SHOPFLOOR_BENCH_ALERTD";

const RULES: &str = "[[rule]]\nname = \"pressure\"\nsource = \"plant/*\"\nmetric = \"pressure\"\n\
                     limit = { h = { limit = 160.0, deadband = 2.0 } }\n";

/// The daemon: runs until its stdin closes.
fn alertd(args: &str) {
    let (host, port) = args.split_once(' ').expect("host port");
    let runtime = runtime();
    runtime.block_on(async move {
        let mut config = AlertConfig::new(host, port.parse().expect("a port"), "alertd");
        config.inputs = vec![Input::Plain {
            template: TopicTemplate::parse(topic::defaults::READINGS).unwrap(),
            codec: Codec::Json,
        }];
        let rules = RuleSet::from_toml(RULES, "bench.toml").unwrap();
        let driver = AlertDriver::spawn(Engine::new(rules), config);
        let _ = tokio::task::spawn_blocking(|| {
            std::io::copy(&mut std::io::stdin(), &mut std::io::sink())
        })
        .await;
        driver.shutdown().await;
    });
}

fn main() {
    if let Ok(args) = std::env::var(ROLE) {
        return alertd(&args);
    }
    runtime().block_on(bench());
}

async fn bench() {
    let measuring = is_measuring();
    let (rate, seconds, breaches) =
        if measuring { (20_000.0, 30.0, 300) } else { (1_000.0, 3.0, 10) };
    // A deployment's queue limit: Mosquitto's default (1000 messages per
    // client) drops QoS 1 readings for a subscriber that falls behind in
    // a burst, and a dropped breach is a missed alarm.
    let broker = Mosquitto::builder()
        .max_queued_messages(1_000_000)
        .start()
        .expect("start mosquitto (apt-get install -y mosquitto)");
    // The daemon, in a process of its own; stopped when its stdin closes.
    let mut daemon = std::process::Command::new(std::env::current_exe().unwrap())
        .env(ROLE, format!("{} {}", broker.host(), broker.port()))
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("start the alerting daemon");

    // The watcher: alarm events, and the breach topics themselves (the
    // broker's own hop).
    let (watch, mut watch_events) =
        AsyncClient::new(MqttOptions::new("watcher", broker.host(), broker.port()), 1000);
    watch.subscribe("shopfloor/alarms/events", QoS::AtLeastOnce).await.unwrap();
    watch.subscribe("shopfloor/plant/breach/+/pressure", QoS::AtLeastOnce).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, u64, String, Vec<u8>)>();
    tokio::spawn(async move {
        loop {
            if let Ok(Event::Incoming(Packet::Publish(p))) = watch_events.poll().await {
                let topic = String::from_utf8_lossy(&p.topic).into_owned();
                let _ = tx.send((Instant::now(), unix_ms(), topic, p.payload.to_vec()));
            }
        }
    });

    // Background load: normal readings on 2000 machines, 4 connections.
    let stop = Arc::new(AtomicBool::new(false));
    let load_start = Instant::now();
    let mut load = Vec::new();
    for c in 0..4 {
        let (client, mut events) = AsyncClient::new(
            MqttOptions::new(format!("load-{c}"), broker.host(), broker.port()),
            10_000,
        );
        tokio::spawn(async move { while events.poll().await.is_ok() {} });
        let stop = Arc::clone(&stop);
        load.push(tokio::spawn(async move {
            let start = Instant::now();
            let mut k = 0_u64;
            while !stop.load(Relaxed) {
                let due = start + Duration::from_secs_f64(k as f64 * 4.0 / rate);
                if Instant::now() < due {
                    tokio::time::sleep_until(due.into()).await;
                }
                let topic = format!("shopfloor/plant/line/m{}/pressure", (k * 4 + c) % 2000);
                let _ = client
                    .publish(topic, QoS::AtLeastOnce, false, payload("pressure", 100.0))
                    .await;
                k += 1;
            }
            k
        }));
    }
    // The driver is ready when it answers a command (it subscribes to
    // commands after its inputs).
    let (probe, mut probe_events) =
        AsyncClient::new(MqttOptions::new("probe", broker.host(), broker.port()), 10);
    probe.subscribe("shopfloor/alarms/reply", QoS::AtMostOnce).await.unwrap();
    let ready = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let ping =
                r#"{"command":"unshelve","rule":"x","source":"x","metric":"x","user":"bench"}"#;
            probe.publish("shopfloor/alarms/command", QoS::AtLeastOnce, false, ping).await.unwrap();
            let answered = tokio::time::timeout(Duration::from_millis(300), async {
                loop {
                    if let Ok(Event::Incoming(Packet::Publish(_))) = probe_events.poll().await {
                        return;
                    }
                }
            })
            .await;
            if answered.is_ok() {
                return;
            }
        }
    })
    .await;
    assert!(ready.is_ok(), "the alerting driver did not answer within 20 s");

    let (breaker, mut breaker_events) =
        AsyncClient::new(MqttOptions::new("breaker", broker.host(), broker.port()), 100);
    tokio::spawn(async move { while breaker_events.poll().await.is_ok() {} });
    let mut sent: Vec<(String, Instant, u64)> = Vec::new();
    let gap = seconds / f64::from(breaches);
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for b in 0..breaches {
        // Random times: an exponential-ish spread around the mean gap.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let jitter = (seed % 1000) as f64 / 1000.0 * gap;
        tokio::time::sleep(Duration::from_secs_f64(jitter)).await;
        let source = format!("plant/breach/b{b}");
        let t = (Instant::now(), unix_ms());
        breaker
            .publish(
                format!("shopfloor/{source}/pressure"),
                QoS::AtLeastOnce,
                false,
                payload("pressure", 170.0),
            )
            .await
            .unwrap();
        sent.push((source, t.0, t.1));
        tokio::time::sleep(Duration::from_secs_f64(gap - jitter)).await;
    }
    // Collect until every breach is in (10 s at most).
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut raised, mut received, mut hop) = (Vec::new(), Vec::new(), Vec::new());
    let mut first_raise: Option<String> = None;
    let mut raised_sources: Vec<String> = Vec::new();
    while Instant::now() < deadline && (received.len() < sent.len() || hop.len() < sent.len()) {
        let Ok(Some((at, _, topic, body))) =
            tokio::time::timeout(Duration::from_millis(100), rx.recv()).await
        else {
            continue;
        };
        if topic == "shopfloor/alarms/events" {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            if v["event"] != "raised" {
                continue;
            }
            let source = v["source"].as_str().unwrap_or_default();
            first_raise.get_or_insert_with(|| source.to_owned());
            raised_sources.push(source.to_owned());
            if let Some((_, t0, t0_ms)) = sent.iter().find(|(s, ..)| s == source) {
                received.push(at.duration_since(*t0).as_secs_f64() * 1000.0);
                raised.push(v["time"].as_u64().unwrap_or(0).saturating_sub(*t0_ms) as f64);
            }
        } else if let Some((_, t0, _)) =
            sent.iter().find(|(s, ..)| topic == format!("shopfloor/{s}/pressure"))
        {
            hop.push(at.duration_since(*t0).as_secs_f64() * 1000.0);
        }
    }
    stop.store(true, Relaxed);
    let load_secs = load_start.elapsed().as_secs_f64();
    let mut background = 0;
    for l in load {
        background += l.await.unwrap();
    }
    drop(daemon.stdin.take());
    let _ = daemon.wait();
    assert_eq!(
        received.len(),
        breaches as usize,
        "every breach raised (broker hops seen: {}, first raise after {:?}, missing {:?})",
        hop.len(),
        first_raise,
        sent.iter()
            .filter(|(s, ..)| !raised_sources.contains(s))
            .map(|(s, ..)| s)
            .collect::<Vec<_>>()
    );

    let (h50, h99, h999) = percentiles(hop);
    let (r50, r99, r999) = percentiles(raised);
    let (n50, n99, n999) = percentiles(received);
    println!();
    println!(
        "alarm latency: {breaches} breaches at random times over {seconds:.0} s, background {:.0} msg/s of readings through the same broker and driver (the issue's 100 000 msg/s is beyond this machine's broker)",
        background as f64 / load_secs
    );
    println!("  {:<44} {:>8} {:>8} {:>8}", "", "p50 ms", "p99 ms", "p99.9 ms");
    println!(
        "  {:<44} {h50:>8.1} {h99:>8.1} {h999:>8.1}",
        "broker hop: publish → plain subscriber"
    );
    println!(
        "  {:<44} {r50:>8.0} {r99:>8.0} {r999:>8.0}",
        "publish → alarm raised (engine time, 1 ms)"
    );
    println!("  {:<44} {n50:>8.1} {n99:>8.1} {n999:>8.1}", "publish → alarm event received");
    println!(
        "goals: raised p99 <= 20 ms: {}; notified p99 <= 50 ms: {}",
        if r99 <= 20.0 { "met" } else { "NOT met" },
        if n99 <= 50.0 { "met" } else { "NOT met" }
    );
}

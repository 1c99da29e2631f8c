//! The reference deployment end to end, every part a real process on the
//! shipped TLS + ACL broker configuration (`shopfloor_examples::plant`):
//! the simulator's 30 machines read by both gateways, ingested into
//! PostgreSQL and watched by alerting, with Alertmanager behind it.
//!
//! - every simulated sensor reaches `shopfloor.readings` under the right
//!   source and metric;
//! - a scripted over-temperature reaches Alertmanager within 5 s of the
//!   fault's start (measured and printed), and the alarm event on MQTT
//!   matches the journal;
//! - a machine that goes offline shows `stale`, then `good` again;
//! - kill -9 of ingest and of Mosquitto leaves no gap in the table; kill -9
//!   of a gateway leaves a gap only while it was down.
//!
//! One test, in phases: two plants at once on two cores would measure the
//! machine, not shopfloor.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use rumqttc::{TlsConfiguration, Transport};
use shopfloor_examples::plant::{Options, Plant};
use shopfloor_examples::sim::model::{Fault, FaultKind};
use shopfloor_examples::sim::scenario::DEFAULT;
use tokio_postgres::NoTls;

/// Faults that repeat, so that the test can take the first occurrence
/// after the pipeline is up, however long that took.
const FAULTS: &str = r#"
[[fault]]
machine = "press-03"
kind = "over-temperature"
at_s = 10
duration_s = 12
every_s = 40

[[fault]]
machine = "cnc-02"
kind = "offline"
at_s = 30
duration_s = 6
every_s = 40
"#;

/// The seed's plant (the default scenario's machines, with seed 11) and
/// [`FAULTS`] instead of its own.
fn scenario_text() -> String {
    let (machines, _faults) = DEFAULT.split_once("\n[[fault]]").unwrap();
    assert!(machines.contains("\nseed = 7\n"), "{machines}");
    format!("{}{FAULTS}", machines.replace("\nseed = 7\n", "\nseed = 11\n"))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The start (Unix ms) of `fault`'s first occurrence at least `lead` ahead.
fn next_start_ms(plant: &Plant, fault: &Fault, lead: Duration) -> u64 {
    let t = (now_ms() + lead.as_millis() as u64).saturating_sub(plant.sim_start_ms) as f64 / 1000.0;
    let every = fault.every_s.expect("the test's faults repeat");
    let mut start = fault.start_at_or_after(t).unwrap();
    if start < t {
        start += every;
    }
    plant.sim_start_ms + (start * 1000.0) as u64
}

async fn sleep_until_ms(at: u64) {
    let now = now_ms();
    if at > now {
        tokio::time::sleep(Duration::from_millis(at - now)).await;
    }
}

/// Polls `check` every 100 ms until it gives a value, or fails after
/// `timeout` with `what`.
async fn within<T, F, Fut>(timeout: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    try_within(timeout, check).await.unwrap_or_else(|| panic!("{what}: not within {timeout:?}"))
}

/// Polls `check` every 100 ms until it gives a value; `None` after `timeout`.
async fn try_within<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

type Events = Arc<Mutex<Vec<(u64, serde_json::Value)>>>;

/// An operator on the people listener (TLS, password), reading alarm
/// events as they come, with the time each arrived.
async fn operator(plant: &Plant) -> Events {
    let tls = shopfloor_mqtt::tls_client_config(&plant.dir.join("pki/ca.crt"), None).unwrap();
    let mut o = MqttOptions::new("operator-test", "localhost", plant.people_port);
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    o.set_credentials("operator", plant.operator_password.clone());
    let (client, mut events) = AsyncClient::new(o, 100);
    client.subscribe("shopfloor/alarms/events", QoS::AtLeastOnce).await.unwrap();
    let got: Events = Arc::default();
    let sink = got.clone();
    let subscribed = Arc::new(tokio::sync::Notify::new());
    let ready = subscribed.clone();
    tokio::spawn(async move {
        let _keep = client;
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => ready.notify_one(),
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Ok(v) = serde_json::from_slice(&p.payload) {
                        sink.lock().unwrap().push((now_ms(), v));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("operator connection: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(20), subscribed.notified())
        .await
        .expect("the operator's subscription was not granted in 20 s");
    got
}

/// The largest hole between consecutive samples of each noisy analog
/// sensor (they change at every 1 s poll) in `[from, to]`, by source and
/// metric, largest first.
async fn gaps(pg: &tokio_postgres::Client, from_ms: u64, to_ms: u64) -> Vec<(String, String, f64)> {
    let rows = pg
        .query(
            "SELECT source, metric, max(gap) AS gap FROM (
                 SELECT source, metric,
                        extract(epoch FROM time - lag(time) OVER (PARTITION BY source, metric ORDER BY time))::float8 AS gap
                 FROM shopfloor.readings
                 WHERE metric IN ('Hydraulics/Pressure', 'Spindle/Vibration', 'Zone/Temperature')
                   AND time BETWEEN to_timestamp($1::float8 / 1000) AND to_timestamp($2::float8 / 1000)
             ) g WHERE gap IS NOT NULL GROUP BY source, metric ORDER BY gap DESC",
            &[&(from_ms as f64), &(to_ms as f64)],
        )
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()
}

#[test]
fn the_plant_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_owned();
    // SHOPFLOOR_KEEP=1 keeps the folder (configurations, logs) to look at.
    let _tmp = if std::env::var_os("SHOPFLOOR_KEEP").is_some() {
        eprintln!("keeping {}", tmp.keep().display());
        None
    } else {
        Some(tmp)
    };
    let scenario = root.join("scenario.toml");
    std::fs::write(&scenario, scenario_text()).unwrap();
    let bins =
        std::path::Path::new(env!("CARGO_BIN_EXE_shopfloor-sim")).parent().unwrap().to_owned();
    let started = Instant::now();
    let mut plant = Plant::start(
        &Options { scenario: Some(scenario), ..Options::new(root.join("plant"), bins) },
        |step| eprintln!("[{:>5.1} s] starting {step}", started.elapsed().as_secs_f64()),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("[{:>5.1} s] the plant runs", started.elapsed().as_secs_f64());
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(phases(&mut plant, started));
}

async fn phases(plant: &mut Plant, started: Instant) {
    let (pg, conn) =
        tokio_postgres::connect(&plant.postgres.connection_string(), NoTls).await.unwrap();
    tokio::spawn(conn);
    let events = operator(plant).await;
    let elapsed = || started.elapsed().as_secs_f64();

    // 1. Every sensor, under its source and metric.
    let expected: BTreeSet<(String, String)> = plant
        .scenario
        .plant
        .machines
        .iter()
        .flat_map(|m| {
            let source = plant.source(&m.name).unwrap();
            m.sensors().iter().map(move |s| (source.clone(), s.metric.to_string()))
        })
        .collect();
    assert_eq!(expected.len(), 120);
    let missing = Mutex::new(expected.clone());
    let all_in = tokio::time::timeout(
        Duration::from_secs(60),
        within(Duration::from_secs(3600), "every sensor in shopfloor.readings", || {
            let (pg, missing, expected) = (&pg, &missing, &expected);
            async move {
                let rows = pg
                    .query("SELECT DISTINCT source, metric FROM shopfloor.readings", &[])
                    .await
                    .ok()?;
                let seen: BTreeSet<(String, String)> =
                    rows.iter().map(|r| (r.get(0), r.get(1))).collect();
                let strangers: Vec<_> = seen.difference(expected).collect();
                assert!(strangers.is_empty(), "readings nobody simulated: {strangers:?}");
                let left: BTreeSet<_> = expected.difference(&seen).cloned().collect();
                let done = left.is_empty();
                *missing.lock().unwrap() = left;
                done.then_some(())
            }
        }),
    )
    .await;
    assert!(all_in.is_ok(), "not in shopfloor.readings after 60 s: {:?}", missing.lock().unwrap());
    eprintln!("[{:>5.1} s] all 120 sensors in shopfloor.readings", elapsed());

    // 2. Over-temperature → Alertmanager within 5 s; MQTT and journal agree.
    let faults = plant.scenario.plant.faults.clone();
    let overheat = faults.iter().find(|f| f.kind == FaultKind::OverTemperature).unwrap();
    let offline = faults.iter().find(|f| f.kind == FaultKind::Offline).unwrap();
    let fault_at = next_start_ms(plant, overheat, Duration::from_secs(2));
    let source = plant.source("press-03").unwrap();
    eprintln!("[{:>5.1} s] waiting for the over-temperature at {fault_at}", elapsed());
    sleep_until_ms(fault_at).await;
    let am = plant.alertmanager.url();
    let alert_after = try_within(Duration::from_secs(15), || {
            let (am, source) = (&am, &source);
            async move {
                let alerts = plant_alerts(am).await?;
                let hit = alerts.as_array()?.iter().any(|a| {
                    let l = &a["labels"];
                    l["source"] == source.as_str()
                        && l["metric"] == "Hydraulics/Temperature"
                        && a["status"]["state"] == "active"
                        && a["startsAt"]
                            .as_str()
                            .and_then(rfc3339_ms)
                            .is_some_and(|t| t + 1000 >= fault_at)
                });
                hit.then(|| now_ms().saturating_sub(fault_at))
            }
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "no over-temperature alert in Alertmanager 15 s after the fault started.\nalertd /metrics:\n{}\nevents on MQTT: {:?}",
                plant.scrape("alertd"),
                events.lock().unwrap()
            )
        });
    eprintln!(
        "fault start → alert in Alertmanager: {:.2} s (reference: ≤ 5 s; includes the 2 s ramp of the over-temperature past H and HH)",
        alert_after as f64 / 1000.0
    );
    assert!(alert_after <= 5000, "the alarm took {alert_after} ms to reach Alertmanager");
    let raised = within(Duration::from_secs(5), "the raised event on MQTT", || {
        let (events, source) = (&events, &source);
        async move {
            events.lock().unwrap().iter().find_map(|(at, e)| {
                (*at >= fault_at
                    && e["event"] == "raised"
                    && e["source"] == source.as_str()
                    && e["metric"] == "Hydraulics/Temperature")
                    .then(|| e.clone())
            })
        }
    })
    .await;
    let instance = raised["instance"].as_i64().unwrap();
    let journal = within(Duration::from_secs(10), "the raised event in the journal", || {
        let (pg, raised) = (&pg, &raised);
        async move {
            let row = pg
                .query_opt(
                    "SELECT condition, priority, value FROM shopfloor.alarm_journal
                     WHERE rule = $1 AND source = $2 AND metric = $3 AND instance = $4 AND event = 'raised'",
                    &[&raised["rule"].as_str().unwrap(), &raised["source"].as_str().unwrap(), &raised["metric"].as_str().unwrap(), &instance],
                )
                .await
                .ok()??;
            Some((row.get::<_, Option<String>>(0), row.get::<_, Option<i32>>(1), row.get::<_, Option<f64>>(2)))
        }
    })
    .await;
    assert_eq!(journal.0.as_deref(), raised["condition"].as_str(), "condition: journal vs MQTT");
    assert_eq!(journal.1.map(i64::from), raised["priority"].as_i64(), "priority: journal vs MQTT");
    assert_eq!(journal.2, raised["value"].as_f64(), "value: journal vs MQTT");
    eprintln!("[{:>5.1} s] MQTT and journal agree on {raised}", elapsed());

    // 3. Offline → stale → good.
    let down_at = next_start_ms(plant, offline, Duration::from_secs(1));
    let up_at = down_at + (offline.duration_s * 1000.0) as u64;
    let cnc = plant.source("cnc-02").unwrap();
    sleep_until_ms(down_at).await;
    let quality_since = |q: &'static str, since: u64| {
        let (pg, cnc) = (&pg, &cnc);
        move || async move {
            let n: i64 = pg
                .query_one(
                    "SELECT count(*) FROM shopfloor.readings WHERE source = $1 AND quality = $2
                     AND time >= to_timestamp($3::float8 / 1000)",
                    &[cnc, &q, &(since as f64)],
                )
                .await
                .ok()?
                .get(0);
            (n > 0).then_some(())
        }
    };
    within(
        Duration::from_secs(15),
        "cnc-02 stale while offline",
        quality_since("stale", down_at - 500),
    )
    .await;
    eprintln!("[{:>5.1} s] cnc-02 offline: stale", elapsed());
    sleep_until_ms(up_at).await;
    within(Duration::from_secs(20), "cnc-02 good again", quality_since("good", up_at)).await;
    eprintln!("[{:>5.1} s] cnc-02 back: good", elapsed());

    // 4. kill -9, one part at a time, then no gap beyond a gateway's own downtime.
    let baseline = gaps(&pg, now_ms() - 20_000, now_ms()).await;
    eprintln!(
        "holes in the 20 s before any kill, largest first: {:?}",
        &baseline[..baseline.len().min(5)]
    );
    for (name, down) in [("ingestd", 3), ("broker", 3), ("modbus-gw", 3)] {
        let before = now_ms();
        {
            let d = match name {
                "ingestd" => &mut plant.ingestd,
                "broker" => &mut plant.broker,
                _ => &mut plant.modbus_gw,
            };
            d.kill9();
        }
        eprintln!("[{:>5.1} s] kill -9 {name}", elapsed());
        tokio::time::sleep(Duration::from_secs(down)).await;
        let restarted = now_ms();
        match name {
            "ingestd" => plant.ingestd.start().unwrap(),
            "broker" => plant.broker.start().unwrap(),
            _ => plant.modbus_gw.start().unwrap(),
        }
        // Recovered: fresh samples of every Modbus press again.
        within(Duration::from_secs(30), &format!("data flowing again after kill -9 {name}"), || {
            let pg = &pg;
            async move {
                let n: i64 = pg
                    .query_one(
                        "SELECT count(DISTINCT source) FROM shopfloor.readings WHERE metric = 'Hydraulics/Pressure'
                         AND time >= to_timestamp($1::float8 / 1000)",
                        &[&((now_ms() - 1500) as f64)],
                    )
                    .await
                    .ok()?
                    .get(0);
                (n == 10).then_some(())
            }
        })
        .await;
        let after = now_ms();
        // The backlog landed: nothing left in the gateways' stores (the
        // spool a broker outage filled) nor held by ingest.
        within(Duration::from_secs(30), "the backlog committed", || {
            let plant = &*plant;
            async move {
                let held = |name: &str, key: &str| {
                    shopfloor_examples::plant::metric(&plant.scrape(name), key)
                };
                let empty = held("modbus-gw", "shopfloor_edge_stored_readings") == Some(0.0)
                    && held("opcua-gw", "shopfloor_edge_stored_readings") == Some(0.0)
                    && held("ingestd", "shopfloor_ingest_pending_messages") == Some(0.0);
                empty.then_some(())
            }
        })
        .await;
        let holes = gaps(&pg, before - 5000, after).await;
        let (worst_source, worst_metric, worst) = holes.first().cloned().unwrap();
        eprintln!(
            "kill -9 {name} ({down} s down, back {:.1} s after restart): largest hole between samples {worst:.2} s ({worst_source} {worst_metric})",
            (after - restarted) as f64 / 1000.0
        );
        match name {
            "modbus-gw" => {
                // Nothing read while the gateway was down: that hole, no more,
                // and only on its devices.
                let allowed = (now_ms() - before) as f64 / 1000.0;
                for (s, m, g) in &holes {
                    if s.contains("/modbus-gw/") {
                        assert!(
                            *g <= allowed,
                            "{s} {m}: hole of {g:.1} s, longer than the gateway was down"
                        );
                    } else {
                        assert!(
                            *g < 2.5,
                            "{s} {m}: hole of {g:.1} s, but its gateway kept running"
                        );
                    }
                }
            }
            "ingestd" => {
                // Sparkplug DATA is QoS 0: what ingestd had received and
                // not committed when it was killed is gone (at most a batch
                // age and a commit; the figure above). What was published
                // while it was away was queued for its session, and is
                // stored: every signal has samples from inside the
                // downtime.
                let signals_between = |from: u64, to: u64| {
                    let pg = &pg;
                    async move {
                        let rows = pg
                            .query(
                                "SELECT source || ' ' || metric FROM shopfloor.readings
                                 WHERE metric IN ('Hydraulics/Pressure', 'Spindle/Vibration', 'Zone/Temperature')
                                   AND time BETWEEN to_timestamp($1::float8 / 1000) AND to_timestamp($2::float8 / 1000)
                                 GROUP BY 1",
                                &[&(from as f64), &(to as f64)],
                            )
                            .await
                            .unwrap();
                        rows.iter().map(|r| r.get(0)).collect::<BTreeSet<String>>()
                    }
                };
                let signals = signals_between(before - 5000, after).await;
                let inside = signals_between(before + 1000, restarted - 500).await;
                let missing: Vec<&String> = signals.difference(&inside).collect();
                assert!(
                    missing.is_empty(),
                    "published while ingestd was away and never stored: {missing:?}\ningestd's log:\n{}",
                    plant.ingestd.log_tail(40)
                );
                assert_eq!(signals.len(), 30, "a press, CNC or oven signal per machine");
                eprintln!("{} signals, each stored from inside ingestd's downtime", signals.len());
            }
            _ => {
                for (s, m, g) in &holes {
                    assert!(*g < 2.5, "after kill -9 {name}: {s} {m} has a hole of {g:.1} s");
                }
            }
        }
    }

    // The operator saw events throughout: the alarm system's own view.
    assert!(!events.lock().unwrap().is_empty());
}

async fn plant_alerts(am: &str) -> Option<serde_json::Value> {
    let addr: std::net::SocketAddr = am.strip_prefix("http://")?.parse().ok()?;
    let (status, body) =
        tokio::task::spawn_blocking(move || shopfloor_testkit::http_get(addr, "/api/v2/alerts"))
            .await
            .ok()?
            .ok()?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

/// `2026-11-27T13:37:03.132Z` (or with an offset) → Unix ms.
fn rfc3339_ms(s: &str) -> Option<u64> {
    let out = std::process::Command::new("date").args(["-u", "-d", s, "+%s%3N"]).output().ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

//! Every consuming binary on an MQTT 3.1.1-only broker that is not
//! Mosquitto (amqtt, from PyPI), fed by an independent Sparkplug edge node
//! that speaks 3.1.1 too (Google's protobuf runtime and paho-mqtt, in
//! `testkit/python/sparkplug_rich.py`):
//! - on the default protocol (MQTT 5), each daemon (and a gateway) says
//!   once, in one log line, that the broker did not accept MQTT 5 and how
//!   to switch, and does not repeat it on every retry;
//! - with `protocol = "3.1.1"`, ingestd stores, alertd raises and the live
//!   page shows what the edge node sends, and plain readings without a
//!   content type are read with the configured codec.

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use shopfloor_examples::plant::Daemon;
use shopfloor_testkit::{Amqtt, Postgres, PythonPeer, shared_script};
use support::{Configs, Stack, addr, motor_rules, send, wait_text};
use tokio_postgres::NoTls;

mod support;

const T0: u64 = 1_796_600_000_000; // 2026-12-06 23:33 UTC

const REFUSED: &str = "did not accept MQTT 5";

fn amqtt() -> Amqtt {
    Amqtt::start().unwrap_or_else(|e| panic!("start amqtt (scripts/test installs it): {e}"))
}

/// The failure counter of a daemon's /metrics page.
fn failures(port: u16, name: &str) -> f64 {
    let page =
        shopfloor_testkit::http_get(addr(port), "/metrics").map(|(_, p)| p).unwrap_or_default();
    shopfloor_examples::plant::metric(&page, name).unwrap_or(0.0)
}

#[test]
fn a_refused_mqtt_5_is_one_line_that_says_how_to_switch() {
    let broker = amqtt();
    // ingestd reaches its database before the broker.
    let pg = Postgres::start().expect("start postgresql (apt-get install -y postgresql)");
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"r\"\nsource = \"*\"\nmetric = \"t\"\nlimit = { h = { limit = 1.0 } }\n",
    )
    .unwrap();
    let mqtt = format!("[mqtt]\nhost = \"{}\"\nport = {}\n", broker.host(), broker.port());
    let [ingest_port, alert_port, live_port] =
        std::array::from_fn(|_| shopfloor_testkit::free_port().unwrap());
    let daemons = [
        (
            "ingestd",
            env!("CARGO_BIN_EXE_shopfloor-ingestd"),
            format!(
                "{mqtt}client_id = \"i\"\n[postgres]\nconnection = \"{}\"\n\
                 [ingest]\nplain = true\n[metrics]\nlisten = \"127.0.0.1:{ingest_port}\"\n",
                pg.connection_string()
            ),
            Some((ingest_port, "shopfloor_ingest_connection_failures_total")),
        ),
        (
            "alertd",
            env!("CARGO_BIN_EXE_shopfloor-alertd"),
            format!(
                "{mqtt}[alerting]\nrules = \"rules.toml\"\nplain = true\n[metrics]\nlisten = \"127.0.0.1:{alert_port}\"\n"
            ),
            Some((alert_port, "shopfloor_alerting_connection_failures_total")),
        ),
        (
            "live",
            env!("CARGO_BIN_EXE_shopfloor-live"),
            format!("{mqtt}[live]\nlisten = \"127.0.0.1:{live_port}\"\n"),
            None,
        ),
        // A gateway said `connection lost` on every retry, though it had
        // never connected. (Its device is nowhere: the broker is the point.)
        (
            "modbus-gateway",
            env!("CARGO_BIN_EXE_shopfloor-modbus-gateway"),
            format!(
                "{mqtt}[sparkplug]\ngroup_id = \"G\"\nedge_node_id = \"gw\"\n\
                 [[modbus.device]]\nname = \"d1\"\nhost = \"127.0.0.1\"\nport = {}\n\
                 [[modbus.device.tag]]\nname = \"t\"\nregister = \"40001\"\ntype = \"u16\"\n",
                shopfloor_testkit::free_port().unwrap()
            ),
            None,
        ),
    ];
    for (name, bin, config, metric) in daemons {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, config).unwrap();
        let mut d = Daemon::spawn(
            name,
            bin,
            ["--config".to_owned(), path.display().to_string()],
            dir.path().join(format!("{name}.log")),
        )
        .unwrap();
        d.wait_until(Duration::from_secs(30), |d| d.log_text().contains(REFUSED))
            .unwrap_or_else(|e| panic!("{e:#}"));
        if let Some((port, counter)) = metric {
            // Three failed attempts, and still the one line.
            d.wait_until(Duration::from_secs(30), |_| failures(port, counter) >= 3.0)
                .unwrap_or_else(|e| panic!("{e:#}"));
        }
        let log = d.log_text();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(REFUSED)).collect();
        assert_eq!(lines.len(), 1, "{name}: one line, not one per retry:\n{log}");
        assert!(lines[0].contains("protocol = \"3.1.1\" in [mqtt]"), "{name}: {}", lines[0]);
        assert!(d.is_running(), "{name} keeps retrying:\n{log}");
        d.terminate(Duration::from_secs(10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingestd_alertd_and_the_live_page_work_on_a_3_1_1_broker() {
    let broker = amqtt();
    let pg = Postgres::start().expect("start postgresql (apt-get install -y postgresql)");
    let ingest = format!(
        "protocol = \"3.1.1\"\nclient_id = \"ingest-311\"\n[postgres]\nconnection = \"{}\"\n\
         [ingest]\nsparkplug = true\nplain = true\nbatch_ms = 50\n",
        pg.connection_string()
    );
    let mut stack = Stack::start_at(
        broker.host(),
        broker.port(),
        &Configs {
            ingest: &ingest,
            alertd: "protocol = \"3.1.1\"\n[alerting]\nrules = \"rules.toml\"\nsparkplug = true\n",
            rules: &motor_rules(),
            live: "protocol = \"3.1.1\"\nclient_id = \"live-311\"",
            // Plain topics, the Sparkplug namespace and STATE.
            ingest_subscriptions: 3,
        },
    );
    let (db, conn) = tokio_postgres::connect(&pg.connection_string(), NoTls).await.unwrap();
    tokio::spawn(conn);

    // A plain reading over 3.1.1: no content type, the codec of [ingest].
    let (watcher, mut events) =
        AsyncClient::new(MqttOptions::new("watcher-311", broker.host(), broker.port()), 100);
    let reading = shopfloor_schemas::Batch::new("x").with(shopfloor_schemas::Reading::new(
        "t",
        shopfloor_schemas::Timestamp::from_unix_ms(T0),
        21.5,
    ));
    let payload = shopfloor_schemas::Codec::Json.encode_batch(&reading).unwrap();
    watcher.publish("shopfloor/p1/hall/m1/t", QoS::AtLeastOnce, false, payload).await.unwrap();
    watcher.subscribe("shopfloor/alarms/events", QoS::AtLeastOnce).await.unwrap();
    let poll = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Ok(e) = events.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = e {
                seen.push(serde_json::from_slice::<serde_json::Value>(&p.payload).unwrap());
                if seen.iter().any(|e| e["event"] == "raised") {
                    return seen;
                }
            }
        }
        seen
    });
    wait_text(
        &db,
        "SELECT value::text FROM shopfloor.readings WHERE source = 'p1/hall/m1' AND metric = 't'",
        "21.5",
    )
    .await;

    // Sparkplug from an independent edge node on 3.1.1.
    let mut edge = PythonPeer::spawn(
        shared_script("sparkplug_rich.py"),
        &[broker.host(), &broker.port().to_string(), "Rich", "ign", &T0.to_string()],
    )
    .expect("start the Python edge node (scripts/test makes the .venv)");
    send(&mut edge, "birth");
    wait_text(
        &db,
        &format!(
            "SELECT value::text FROM shopfloor.readings WHERE source = 'Rich/ign' \
             AND metric = 'Motor1/Speed' AND time = to_timestamp({T0}::float8 / 1000)"
        ),
        "1500",
    )
    .await;

    // alertd raises on the breach (after a rebirth, whichever it saw first).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !poll.is_finished() {
        assert!(Instant::now() < deadline, "alertd raised nothing:\n{}", stack.alertd.log_tail(30));
        send(&mut edge, "birth");
        send(&mut edge, "speed 1800");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let seen = poll.await.unwrap();
    let raised = seen.iter().find(|e| e["event"] == "raised").unwrap();
    assert_eq!(raised["metric"], "Motor1/Speed", "{raised}");

    // The live page shows it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let snapshot = shopfloor_testkit::http_get(addr(stack.live_port), "/snapshot").unwrap().1;
        if snapshot.contains("Motor1/Speed") {
            break;
        }
        assert!(Instant::now() < deadline, "the live page shows no Motor1/Speed: {snapshot}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let dead: i64 =
        db.query_one("SELECT count(*) FROM shopfloor.dead_letters", &[]).await.unwrap().get(0);
    assert_eq!(dead, 0, "nothing is a dead letter");
    stack.assert_running();
    stack.stop();
}

//! What Ignition-class peers send, from an independent implementation
//! (Google's protobuf runtime and the official `sparkplug_b.proto`, in
//! `testkit/python/sparkplug_rich.py`), through Mosquitto into
//! `shopfloor-ingestd`, `shopfloor-alertd` and `shopfloor-live`: a template
//! (UDT) instance flattened into `Motor1/Speed`-style readings, a DataSet
//! and arrays as JSON text, an Int64 past 2^53 exact, and a compressed
//! payload unpacked. Nothing is dropped and nothing is a dead letter.

use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, MqttOptions};
use shopfloor_testkit::{Mosquitto, Postgres, PythonPeer, shared_script};
use support::{Configs, Stack, addr, motor_rules, send, wait_text};
use tokio_postgres::NoTls;

mod support;

const T0: u64 = 1_796_600_000_000; // 2026-12-06 23:33 UTC

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_datasets_arrays_big_integers_and_compression_from_a_peer() {
    let broker = Mosquitto::start().expect("start mosquitto (apt-get install -y mosquitto)");
    let pg = Postgres::start().expect("start postgresql (apt-get install -y postgresql)");
    let ingest = format!(
        "client_id = \"ingest-r\"\n[postgres]\nconnection = \"{}\"\n[ingest]\nsparkplug = true\nbatch_ms = 50\n",
        pg.connection_string()
    );
    let mut stack = Stack::start(
        &broker,
        &Configs {
            ingest: &ingest,
            alertd: "[alerting]\nrules = \"rules.toml\"\nsparkplug = true\n",
            rules: &motor_rules(),
            live: "client_id = \"live-r\"",
            // The Sparkplug namespace and STATE.
            ingest_subscriptions: 2,
        },
    );
    let mut edge = PythonPeer::spawn(
        shared_script("sparkplug_rich.py"),
        &[broker.host(), &broker.port().to_string(), "Rich", "ign", &T0.to_string()],
    )
    .expect("start the Python edge node (scripts/test makes the .venv)");
    let (db, conn) = tokio_postgres::connect(&pg.connection_string(), NoTls).await.unwrap();
    tokio::spawn(conn);
    let at = |metric: &str, ms: u64| {
        format!(
            "SELECT coalesce(value_text, value::text) FROM shopfloor.readings WHERE source = 'Rich/ign' \
             AND metric = '{metric}' AND time = to_timestamp({ms}::float8 / 1000)"
        )
    };
    send(&mut edge, "birth");
    // The template instance, member by member, named after the instance.
    wait_text(&db, &at("Motor1/Speed", T0), "1500").await;
    wait_text(&db, &at("Motor1/Running", T0), "1").await;
    // Arrays and the DataSet as JSON text a query can use.
    wait_text(&db, &at("Temps", T0), "[20.5,21.0,-3.25]").await;
    wait_text(&db, &at("Offsets", T0), "[-1,0,7]").await;
    wait_text(
        &db,
        "SELECT (value_text::jsonb -> 'rows' -> 1 ->> 1) FROM shopfloor.readings \
         WHERE source = 'Rich/ign' AND metric = 'Recipe'",
        "200.0",
    )
    .await;
    // 2^53 + 1, exact.
    wait_text(&db, &at("Big", T0), "9007199254740993").await;
    // The catalogue describes the members as the birth did.
    wait_text(
        &db,
        "SELECT datatype FROM shopfloor.metrics WHERE source = 'Rich/ign' AND name = 'Motor1/Speed'",
        "Float",
    )
    .await;

    // Compressed DATA: unpacked, the instance by alias, members typed from
    // the birth; 2^63 - 1 exact.
    send(&mut edge, "data");
    wait_text(&db, &at("Motor1/Speed", T0 + 1000), "1600").await;
    wait_text(&db, &at("Big", T0 + 1000), "9223372036854775807").await;
    let nothing: i64 = db
        .query_one(
            "SELECT (SELECT count(*) FROM shopfloor.dead_letters)
                  + (SELECT count(*) FROM shopfloor.readings WHERE metric IN ('algorithm', 'Motor', 'Motor1'))",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(nothing, 0, "no dead letter, no envelope metric, no definition stored");
    let page =
        shopfloor_testkit::scrape_until(addr(stack.ingest_port), Duration::from_secs(5), |p| {
            p.contains("shopfloor_ingest_skipped_metrics_total 0\n")
        });
    assert!(page.contains("shopfloor_ingest_dead_letters_total 0\n"), "{page}");

    // alertd raises on a template member; the live page shows it.
    let (c, mut ev) =
        AsyncClient::new(MqttOptions::new("watcher", broker.host(), broker.port()), 100);
    c.subscribe("shopfloor/alarms/events", QoS::AtLeastOnce).await.unwrap();
    let raised = support::event_after(
        &mut ev,
        (Duration::from_secs(30), Duration::from_millis(700)),
        // A rebirth, then the breach: whichever alertd saw first, it can
        // name the member now.
        async || {
            send(&mut edge, "birth");
            send(&mut edge, "speed 1800");
        },
        |_| true,
        || format!("alertd raised nothing:\n{}", stack.alertd.log_tail(30)),
    )
    .await;
    assert_eq!(raised["event"], "raised");
    assert_eq!(raised["metric"], "Motor1/Speed", "{raised}");
    let snapshot = shopfloor_testkit::http_get(addr(stack.live_port), "/snapshot").unwrap().1;
    assert!(snapshot.contains("Motor1/Speed"), "the live page shows the member: {snapshot}");
    stack.assert_running();
    stack.stop();
}

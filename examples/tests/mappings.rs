//! Devices' own payloads, from configuration alone: every shape of
//! `mapping/tests/fixtures/` (flat JSON, Kepware's IoT Gateway, UNS one
//! value per topic, a bare number, an array of readings, nested objects
//! with units, CBOR, Protobuf from a user's `.proto`, CSV lines) is sent
//! through Mosquitto to `shopfloor-ingestd`, which stores exactly the rows
//! `expected.toml` lists (units in the catalogue, no dead letter), and to
//! `shopfloor-alertd`, which raises an alarm on each breaching metric.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use shopfloor_testkit::{Mosquitto, Postgres};
use support::{Configs, Stack};
use tokio_postgres::NoTls;

mod support;

fn fixtures() -> PathBuf {
    shopfloor_testkit::mapping_fixtures()
}

/// The fixtures' mappings as a user writes them; the `.proto` named by
/// its place in the source tree (read, never written).
fn fixture_mappings() -> String {
    let proto = fixtures().join("telemetry.proto");
    std::fs::read_to_string(fixtures().join("mappings.toml"))
        .unwrap()
        .replace("\"telemetry.proto\"", &format!("{:?}", proto.display().to_string()))
}

/// Every reading above this raises the catch-all rule's alarm.
const LIMIT: f64 = 1.1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_payload_shape_is_stored_and_alarmed_on_from_configuration_alone() {
    let broker = Mosquitto::start().expect("start mosquitto (apt-get install -y mosquitto)");
    let pg = Postgres::start().expect("start postgresql (apt-get install -y postgresql)");
    let mappings = fixture_mappings();
    let shapes = shopfloor_testkit::mapping_shapes();
    let ingest = format!(
        "client_id = \"ingest-map\"\n[postgres]\nconnection = \"{}\"\n[ingest]\nbatch_ms = 50\n\n{mappings}",
        pg.connection_string()
    );
    let alertd = format!("[alerting]\nrules = \"rules.toml\"\n\n{mappings}");
    let rules = format!(
        "[[rule]]\nname = \"any-high\"\nsource = \"*\"\nmetric = \"*\"\nlimit = {{ h = {{ limit = {LIMIT} }} }}\n"
    );
    let mut stack = Stack::start(
        &broker,
        &Configs {
            ingest: &ingest,
            alertd: &alertd,
            rules: &rules,
            live: "client_id = \"live-map\"",
            ingest_subscriptions: u32::try_from(shapes.len()).unwrap(),
        },
    );
    let (db, conn) = tokio_postgres::connect(&pg.connection_string(), NoTls).await.unwrap();
    tokio::spawn(conn);

    let (client, mut events) =
        AsyncClient::new(MqttOptions::new("map-sender", broker.host(), broker.port()), 100);
    client.subscribe("shopfloor/alarms/events", QoS::AtLeastOnce).await.unwrap();
    let payloads: Vec<(String, Vec<u8>)> = shapes
        .iter()
        .map(|s| (s.topic.clone(), std::fs::read(fixtures().join(&s.payload)).unwrap()))
        .collect();
    let mut raised = BTreeSet::new();
    let sent_at = std::time::SystemTime::now();
    for (topic, payload) in &payloads {
        client.publish(topic, QoS::AtLeastOnce, false, payload.clone()).await.unwrap();
    }

    // PostgreSQL: exactly the expected rows (the bare number's at the time
    // it was received), and nothing else.
    let total: usize = shapes.iter().map(|s| s.readings.len()).sum();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (rows, dead) = counts(&db).await;
        assert_eq!(dead, 0, "dead letters: {:?}", dead_letters(&db).await);
        if rows == i64::try_from(total).unwrap() {
            break;
        }
        // alertd may raise already: its events are kept.
        take_raised(&mut events, Instant::now() + Duration::from_millis(100), &mut raised).await;
        assert!(
            Instant::now() < deadline,
            "{rows} rows of {total} within 30 s:\n{}",
            stack.ingestd.log_tail(30)
        );
    }
    for shape in &shapes {
        for r in &shape.readings {
            let at = if r.time == "received" {
                "time BETWEEN $3::text::timestamptz - interval '1 s' AND now()"
            } else {
                "time = $3::text::timestamptz"
            };
            let sql = format!(
                "SELECT value, quality FROM shopfloor.readings WHERE source = $1 AND metric = $2 AND {at}"
            );
            let time = if r.time == "received" {
                shopfloor_schemas::Timestamp::from(sent_at).to_rfc3339()
            } else {
                r.time.clone()
            };
            let rows = db.query(&sql, &[&r.source, &r.metric, &time]).await.unwrap();
            assert_eq!(rows.len(), 1, "{}: {} {} at {}", shape.mapping, r.source, r.metric, r.time);
            let (value, quality): (f64, String) = (rows[0].get(0), rows[0].get(1));
            assert_eq!(
                (value, quality.as_str()),
                (r.value, r.quality.as_str()),
                "{}",
                shape.mapping
            );
        }
        for [source, metric, unit] in &shape.units {
            let got: Option<String> = db
                .query_one(
                    "SELECT unit FROM shopfloor.metrics WHERE source = $1 AND name = $2",
                    &[source, metric],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(
                got.as_deref(),
                Some(unit.as_str()),
                "{}: the unit of {metric}",
                shape.mapping
            );
        }
    }

    // alertd: an alarm on every good reading above the limit. alertd's
    // subscriptions are not counted anywhere, so the payloads go again
    // until it has seen them (ingest's rows are checked already).
    let want: BTreeSet<(String, String)> = shapes
        .iter()
        .flat_map(|s| &s.readings)
        .filter(|r| r.value > LIMIT && r.quality == "good")
        .map(|r| (r.source.clone(), r.metric.clone()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !want.is_subset(&raised) {
        for (topic, payload) in &payloads {
            client.publish(topic, QoS::AtLeastOnce, false, payload.clone()).await.unwrap();
        }
        take_raised(&mut events, Instant::now() + Duration::from_millis(700), &mut raised).await;
        assert!(
            Instant::now() < deadline,
            "alertd raised {raised:?}, expected {want:?}:\n{}",
            stack.alertd.log_tail(30)
        );
    }
    // (alertd's own KPI signals match the catch-all rule too.)
    let fixtures: BTreeSet<(String, String)> = shapes
        .iter()
        .flat_map(|s| &s.readings)
        .map(|r| (r.source.clone(), r.metric.clone()))
        .collect();
    let on_fixtures: BTreeSet<_> = raised.intersection(&fixtures).cloned().collect();
    assert_eq!(on_fixtures, want, "no alarm on a reading at or below the limit, or not good");
    stack.assert_running();
    stack.stop();
}

/// Hostile payloads on every mapped format, between good ones: each bad
/// message is one dead letter naming the mapping and the path, the good
/// readings (and the good half of a half-bad message) are all stored, and
/// both daemons still run and raise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_payloads_on_mapped_topics_are_dead_letters_and_stall_nothing() {
    let broker = Mosquitto::start().expect("start mosquitto (apt-get install -y mosquitto)");
    let pg = Postgres::start().expect("start postgresql (apt-get install -y postgresql)");
    let mappings = fixture_mappings();
    let ingest = format!(
        "client_id = \"ingest-maph\"\n[postgres]\nconnection = \"{}\"\n[ingest]\nbatch_ms = 50\nmax_readings_per_message = 1000\n\n{mappings}",
        pg.connection_string()
    );
    let mut stack = Stack::start(
        &broker,
        &Configs {
            ingest: &ingest,
            alertd: &format!("[alerting]\nrules = \"rules.toml\"\n\n{mappings}"),
            rules: &format!(
                "[[rule]]\nname = \"hot\"\nsource = \"after\"\nmetric = \"temp\"\nlimit = {{ h = {{ limit = {LIMIT} }} }}\n"
            ),
            live: "client_id = \"live-maph\"",
            ingest_subscriptions: 9,
        },
    );
    let (db, conn) = tokio_postgres::connect(&pg.connection_string(), NoTls).await.unwrap();
    tokio::spawn(conn);
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let deep =
        |open: &str, close: &str| format!("{}{}", open.repeat(100_000), close.repeat(100_000));
    let many: String = (0..5_000)
        .map(|i| format!(r#"{{"name":"m{i}","value":{i},"time":{now}}}"#))
        .collect::<Vec<_>>()
        .join(",");
    // (topic, payload, what its dead letter says, good rows it also gives)
    let bad: Vec<(&str, Vec<u8>, &str, i64)> = vec![
        ("acme/flat/b1", b"{\"temp\": 1".to_vec(), "mapping \"flat\": payload: not JSON", 0),
        ("acme/flat/b2", deep("[", "]").into_bytes(), "recursion limit", 0),
        ("acme/flat/b3", br#"{"temp": "x\u0000y"}"#.to_vec(), "mapping \"flat\": /temp: the text contains NUL", 0),
        ("acme/flat/b4", format!(r#"{{"temp": 1, "ts": "{}"}}"#, "9".repeat(5000)).into_bytes(), "mapping \"flat\": /ts: timestamp", 0),
        ("iotgateway/b5", br#"{"values": {"id": 1}}"#.to_vec(), "mapping \"kepware\": /values: each: expected an array", 0),
        (
            "iotgateway/b6",
            format!(r#"{{"values": [{{"id": "ok", "v": 2, "t": {now}}}, {{"id": "no", "v": "n/a", "t": {now}}}]}}"#).into_bytes(),
            "mapping \"kepware\": /values/1/v: expected a number, found \"n/a\"",
            1,
        ),
        ("iotgateway/b7", br#"{"values": [{"id": "big", "v": 1, "t": 1e300}]}"#.to_vec(), "/values/0/t: timestamp: out of range", 0),
        ("iotgateway/b8", format!(r#"{{"values": [{{"id": "future", "v": 1, "t": {}}}]}}"#, now + 400 * 86_400_000).into_bytes(), "ahead", 0),
        ("acme/array/b9", format!("[{many}]").into_bytes(), "more than the 1000 allowed", 0),
        ("acme/cbor/b10", vec![0x9f; 100_000], "mapping \"cbor\": payload: not CBOR", 0),
        ("acme/cbor/b11", vec![0xa1, 0x80, 0x01], "a map key that is not text", 0),
        ("acme/pb/b12", vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f], "mapping \"protobuf\": payload: not a acme.v1.Telemetry message", 0),
        ("acme/csv/b13", vec![0xff, 0xfe, b';', b'1'], "mapping \"csv\": payload: not UTF-8", 0),
        ("acme/csv/b14", b"yesterday;1;2\n".to_vec(), "mapping \"csv\": /0/time: timestamp: does not match", 0),
        ("bare/b15/temperature", b"warm".to_vec(), "mapping \"bare\": $: expected a number, found \"warm\"", 0),
    ];
    let mut o = MqttOptions::new("map-hostile", broker.host(), broker.port());
    o.set_max_packet_size(Some(16 << 20));
    let (client, mut events) = AsyncClient::new(o, 100);
    client.subscribe("shopfloor/alarms/events", QoS::AtLeastOnce).await.unwrap();
    let mut good = 0_i64;
    for (i, (topic, payload, _, also)) in bad.iter().enumerate() {
        client.publish(*topic, QoS::AtLeastOnce, false, payload.clone()).await.unwrap();
        let ok = format!(r#"{{"temp": {i}.5, "ts": {}}}"#, now + i as u128);
        client.publish(format!("acme/flat/good{i}"), QoS::AtLeastOnce, false, ok).await.unwrap();
        good += 1 + also;
    }
    let mut raised = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let (rows, dead) = counts(&db).await;
        if rows == good && dead == i64::try_from(bad.len()).unwrap() {
            break dead_letters(&db).await;
        }
        take_raised(&mut events, Instant::now() + Duration::from_millis(100), &mut raised).await;
        assert!(
            Instant::now() < deadline,
            "{rows} of {good} rows, {dead} of {} dead letters: {:#?}\n{}",
            bad.len(),
            dead_letters(&db).await,
            stack.ingestd.log_tail(30)
        );
    };
    for (topic, _, says, _) in &bad {
        let letter = dead
            .iter()
            .find(|d| d.starts_with(&format!("{topic}: ")))
            .unwrap_or_else(|| panic!("no dead letter for {topic}: {dead:#?}"));
        assert!(letter.contains(says), "{topic}: {letter:?} should say {says:?}");
    }
    // Both daemons still there, and alertd still raises on a mapped topic.
    stack.assert_running();
    let breach = format!(r#"{{"temp": 99.5, "ts": {now}}}"#);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !raised.contains(&("after".to_owned(), "temp".to_owned())) {
        client.publish("acme/flat/after", QoS::AtLeastOnce, false, breach.clone()).await.unwrap();
        take_raised(&mut events, Instant::now() + Duration::from_millis(500), &mut raised).await;
        assert!(Instant::now() < deadline, "alertd raised nothing:\n{}", stack.alertd.log_tail(30));
    }
    stack.assert_running();
    stack.stop();
}

/// `mapping test` prints what a payload becomes and fails on what it
/// cannot read; `--check-config` refuses a bad mapping with its name and
/// what to change. No servers: the file alone.
#[test]
fn mapping_test_prints_readings_and_check_config_refuses_bad_mappings() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ingest.toml");
    let head = "[mqtt]\nclient_id = \"i\"\n[postgres]\nconnection = \"host=127.0.0.1\"\n\n";
    let mappings = std::fs::read_to_string(fixtures().join("mappings.toml")).unwrap();
    std::fs::write(&config, format!("{head}{mappings}")).unwrap();
    std::fs::copy(fixtures().join("telemetry.proto"), dir.path().join("telemetry.proto")).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_shopfloor-ingestd"))
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let cfg = config.to_str().unwrap();
    let mapping_test = |topic: &str, payload: &Path| {
        let payload = payload.to_str().unwrap();
        run(&["--config", cfg, "mapping", "test", "--topic", topic, "--payload", payload])
    };
    let (ok, text) = mapping_test("acme/pb/oven", &fixtures().join("telemetry.pb"));
    assert!(ok, "{text}");
    assert!(text.starts_with("mapping \"protobuf\": 2 readings"), "{text}");
    assert!(
        text.contains("acme/oven-2  temperature  2026-12-07T10:00:00.250Z  180.5 (f64)  good"),
        "{text}"
    );
    assert!(text.contains("unit: acme/oven-2 temperature = °C"), "{text}");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"values": [{"id": "x", "v": "n/a", "t": 1}]}"#).unwrap();
    // --config after the subcommand too.
    let (ok, text) = run(&[
        "mapping",
        "test",
        "--config",
        cfg,
        "--topic",
        "iotgateway/a",
        "--payload",
        bad.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        text.contains(
            "not read: mapping \"kepware\": /values/0/v: expected a number, found \"n/a\""
        ),
        "{text}"
    );
    let (ok, text) = mapping_test("nowhere", &bad);
    assert!(!ok && text.contains("no [[mapping]]") && text.contains("iotgateway/+"), "{text}");
    // Mappings alone are enough for ingestd (no [ingest] section).
    let (ok, text) = run(&["--config", cfg, "--check-config"]);
    assert!(ok && text.contains("valid: 9 inputs"), "{text}");
    std::fs::write(
        &config,
        format!(
            "{head}[[mapping]]\nname = \"m\"\ntopic = \"a/{{x}}\"\nvalue = \"v\"\nmetric = \"t\"\n"
        ),
    )
    .unwrap();
    let (ok, text) = run(&["--config", cfg, "--check-config"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("[[mapping]]: mapping \"m\": value: \"v\" is not a JSON Pointer"),
        "{text}"
    );
}

/// Reads alarm events until `until`, keeping what was raised.
async fn take_raised(
    events: &mut rumqttc::v5::EventLoop,
    until: Instant,
    raised: &mut BTreeSet<(String, String)>,
) {
    while let Ok(Ok(e)) = tokio::time::timeout_at(until.into(), events.poll()).await {
        if let Event::Incoming(Packet::Publish(p)) = e {
            let e: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
            if e["event"] == "raised" {
                let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
                raised.insert((s("source"), s("metric")));
            }
        }
    }
}

/// Rows in `shopfloor.readings` and dead letters (0, 0 while the schema
/// is not there yet).
async fn counts(db: &tokio_postgres::Client) -> (i64, i64) {
    db.query_one(
        "SELECT (SELECT count(*) FROM shopfloor.readings), (SELECT count(*) FROM shopfloor.dead_letters)",
        &[],
    )
    .await
    .map(|r| (r.get(0), r.get(1)))
    .unwrap_or((0, 0))
}

async fn dead_letters(db: &tokio_postgres::Client) -> Vec<String> {
    db.query("SELECT topic || ': ' || error FROM shopfloor.dead_letters", &[])
        .await
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default()
}

//! `shopfloor-alertd` as a process: its configuration checked with errors
//! naming the rule file, rule and key; a breach published to MQTT raised as
//! an event and journaled; SIGTERM stops it cleanly.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, MqttOptions};
use shopfloor_schemas::{Batch, Codec, Reading, Timestamp};
use shopfloor_testkit::{Mosquitto, Postgres};

const BIN: &str = env!("CARGO_BIN_EXE_shopfloor-alertd");

/// Where the tests publish press m1's pressure.
const TOPIC: &str = "shopfloor/plant1/press/m1/pressure";

mod support;

/// HH at 180 and H at 160 on `pressure` of the presses.
fn rules() -> String {
    support::limit_rule("press-pressure", "plant1/press/*", "pressure", (180.0, 160.0))
}

fn write(dir: &std::path::Path, config: &str, rules: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("rules.toml"), rules).unwrap();
    let path = dir.join("alertd.toml");
    std::fs::write(&path, config).unwrap();
    path
}

#[test]
fn check_config_names_the_rule_file_the_rule_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[mqtt]\nport = 1883\n[alerting]\nrules = \"rules.toml\"\nplain = true\n";
    let path = write(dir.path(), config, &rules());
    let out = Command::new(BIN).arg("--config").arg(&path).arg("--check-config").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid: 1 rules"));

    let broken = rules().replace("hh = { limit = 180.0 }", "hh = { limit = 150.0 }");
    let path = write(dir.path(), config, &broken);
    let out = Command::new(BIN).arg("--config").arg(&path).arg("--check-config").output().unwrap();
    assert_eq!(out.status.code(), Some(78), "a configuration error is EX_CONFIG");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rules.toml: rule \"press-pressure\": limit: HH (150) must be above H (160)"),
        "{err}"
    );
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--check-config"));
}

/// Every binary: `--version`, a usage error is exit 2 with clap's
/// message, a configuration file that is not there is exit 78 (sysexits'
/// EX_CONFIG, which a unit file keeps from restarting), and the shell
/// completions and man page come from the same definition.
#[test]
fn every_binary_has_version_usage_errors_config_errors_and_generated_docs() {
    let bins = [
        ("shopfloor-ingestd", env!("CARGO_BIN_EXE_shopfloor-ingestd")),
        ("shopfloor-alertd", env!("CARGO_BIN_EXE_shopfloor-alertd")),
        ("shopfloor-live", env!("CARGO_BIN_EXE_shopfloor-live")),
        ("shopfloor-modbus-gateway", env!("CARGO_BIN_EXE_shopfloor-modbus-gateway")),
        ("shopfloor-opcua-gateway", env!("CARGO_BIN_EXE_shopfloor-opcua-gateway")),
        ("shopfloor-sim", env!("CARGO_BIN_EXE_shopfloor-sim")),
        ("shopfloor-demo", env!("CARGO_BIN_EXE_shopfloor-demo")),
    ];
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    for (name, bin) in bins {
        let run = |args: &[&str]| {
            Command::new(bin).args(args).env_remove("SHOPFLOOR_CONFIG").output().unwrap()
        };
        let out = run(&["--version"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success()
                && text.starts_with(&format!("{name} {}", env!("CARGO_PKG_VERSION"))),
            "{name}: {text}"
        );
        let out = run(&["--no-such-flag"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains("unexpected argument '--no-such-flag'"), "{name}: {err}");
        let out = run(&["completions", "bash"]);
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("complete -F"),
            "{name}: {out:?}"
        );
        let out = run(&["man"]);
        let page = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success()
                && page.contains(".TH")
                && page.contains(&name.replace('-', "\\-")),
            "{name}: {page}"
        );
        if name != "shopfloor-demo" {
            let out = run(&["--config", missing.to_str().unwrap(), "--check-config"]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(78), "{name}: {err}");
            assert!(err.contains("missing.toml"), "{name}: {err}");
        }
    }
    // Without --config, the file in /etc/shopfloor/ (here: not there).
    let out = Command::new(BIN).arg("check").env_remove("SHOPFLOOR_CONFIG").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("/etc/shopfloor/alertd.toml"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breach_is_raised_journaled_and_sigterm_stops_cleanly() {
    let broker = Mosquitto::start().expect("start mosquitto (apt-get install -y mosquitto)");
    let pg = Postgres::start().expect("start postgresql (apt-get install -y postgresql)");
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = shopfloor_testkit::free_port().unwrap();
    let config = format!(
        "[mqtt]\nhost = \"{}\"\nport = {}\n[alerting]\nrules = \"rules.toml\"\nplain = true\n\
         [journal]\nconnection = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
        broker.host(),
        broker.port(),
        pg.connection_string()
    );
    let path = write(dir.path(), &config, &rules());
    let mut daemon = support::spawn_with_config(BIN, &path, Stdio::inherit());

    let (c, mut events) =
        AsyncClient::new(MqttOptions::new("watcher", broker.host(), broker.port()), 100);
    c.subscribe("shopfloor/alarms/events", QoS::AtLeastOnce).await.unwrap();
    let breach = Codec::Json
        .encode_batch(&Batch::new("x").with(Reading::new("pressure", Timestamp::now(), 185.0)))
        .unwrap();
    // Published until the daemon, once subscribed, raises it.
    let raised = support::event_after(
        &mut events,
        (Duration::from_secs(30), Duration::from_millis(300)),
        async || {
            c.publish(TOPIC, QoS::AtLeastOnce, false, breach.clone()).await.unwrap();
        },
        |_| true,
        || "no alarm event within 30 s".to_owned(),
    )
    .await;
    assert_eq!(
        (raised["event"].as_str(), raised["condition"].as_str()),
        (Some("raised"), Some("HH"))
    );
    // Its /metrics counts the event and the active alarm (updated right
    // after the events go out, so allow it a moment).
    let page = shopfloor_testkit::scrape_until(
        ([127, 0, 0, 1], metrics_port).into(),
        Duration::from_secs(5),
        |p| p.contains("shopfloor_alerting_active_alarms 1\n"),
    );
    assert!(!page.contains("shopfloor_alerting_events_total 0\n"), "{page}");
    // Labelled per input: the breach came on a plain topic.
    assert!(
        page.contains("# TYPE shopfloor_alerting_input_messages_total counter\n")
            && !page.contains("shopfloor_alerting_input_messages_total{input=\"plain\"} 0\n")
            && page.contains("shopfloor_alerting_input_messages_total{input=\"plain\"} "),
        "{page}"
    );

    // SIGTERM: a clean exit, with the journal written.
    stops_cleanly_on_sigterm(&mut daemon).await;
    let client = support::pg_client(&pg.connection_string()).await;
    let n: i64 = client
        .query_one("SELECT count(*) FROM shopfloor.alarm_journal WHERE event = 'raised'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

/// Publishes `value` as press m1's pressure until an alarm event named
/// `want` arrives (the daemon may not have subscribed yet); the event.
async fn publish_until_event(
    c: &AsyncClient,
    events: &mut rumqttc::v5::EventLoop,
    value: f64,
    want: &str,
) -> serde_json::Value {
    let payload = Codec::Json
        .encode_batch(&Batch::new("x").with(Reading::new("pressure", Timestamp::now(), value)))
        .unwrap();
    support::event_after(
        events,
        (Duration::from_secs(30), Duration::from_millis(300)),
        async || {
            c.publish(TOPIC, QoS::AtLeastOnce, false, payload.clone()).await.unwrap();
        },
        |ev| ev["event"] == want,
        || format!("no {want:?} event for {value} within 30 s"),
    )
    .await
}

/// Waits until the daemon's log holds `line`, at most 15 s.
async fn wait_for_log(log: &std::path::Path, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(line) {
            return;
        }
        assert!(Instant::now() < deadline, "{line:?} not logged within 15 s:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGHUP reloads the rules: a file that does not load is refused, logged,
/// and the rules in use stay; a good one replaces them, the active alarm
/// carried over and judged by the new limits at its next reading. Neither
/// stops the daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_rules_and_keeps_them_when_the_file_is_bad() {
    let broker = Mosquitto::start().expect("start mosquitto (apt-get install -y mosquitto)");
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[mqtt]\nhost = \"{}\"\nport = {}\n[alerting]\nrules = \"rules.toml\"\nplain = true\n",
        broker.host(),
        broker.port()
    );
    let path = write(dir.path(), &config, &rules());
    let log = dir.path().join("alertd.log");
    let mut daemon = support::spawn_with_config(BIN, &path, std::fs::File::create(&log).unwrap());
    let hangup = |daemon: &std::process::Child| {
        // SAFETY: a plain kill(2) on our own child.
        unsafe { libc::kill(daemon.id() as libc::pid_t, libc::SIGHUP) };
    };
    let (c, mut events) =
        AsyncClient::new(MqttOptions::new("watcher", broker.host(), broker.port()), 100);
    c.subscribe("shopfloor/alarms/events", QoS::AtLeastOnce).await.unwrap();
    let raised = publish_until_event(&c, &mut events, 170.0, "raised").await;
    assert_eq!(raised["condition"], "H");

    // A rule file that does not load: refused, the old rules go on (HH 180).
    std::fs::write(dir.path().join("rules.toml"), rules().replace("180.0", "\"high\"")).unwrap();
    hangup(&daemon);
    wait_for_log(&log, "the rules in use stay").await;
    let changed = publish_until_event(&c, &mut events, 185.0, "changed").await;
    assert_eq!(changed["condition"], "HH", "the old limits");

    // A good one: H 175, HH 190. 170 is back to normal, same alarm.
    let new = rules().replace("180.0", "190.0").replace("160.0", "175.0");
    std::fs::write(dir.path().join("rules.toml"), new).unwrap();
    hangup(&daemon);
    wait_for_log(&log, "rules reloaded").await;
    let back = publish_until_event(&c, &mut events, 170.0, "returned_to_normal").await;
    assert_eq!(back["instance"], raised["instance"], "the alarm was carried over");
    assert!(daemon.try_wait().unwrap().is_none(), "SIGHUP stopped the daemon");

    stops_cleanly_on_sigterm(&mut daemon).await;
}

/// SIGTERM: exit 0 within 15 s.
async fn stops_cleanly_on_sigterm(daemon: &mut std::process::Child) {
    let status = support::sigterm(daemon, Duration::from_secs(15)).await;
    assert!(status.success(), "{status}");
}

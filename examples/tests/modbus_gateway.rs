//! The `shopfloor-modbus-gateway` binary as a user runs it: `explain` and
//! `--check-config` on files, and a real run (pymodbus device, Mosquitto,
//! our Sparkplug host) stopped with SIGTERM.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shopfloor_mqtt::{Broker, DriverConfig, HostDriver};
use shopfloor_schemas::Value;
use shopfloor_sparkplug::{HostApplication, HostConfig, HostEvent};
use shopfloor_testkit::{Mosquitto, PythonPeer, free_port, shared_script};
use tokio::time::timeout;

mod support;

const BIN: &str = env!("CARGO_BIN_EXE_shopfloor-modbus-gateway");

fn file(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("plant.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Kills the gateway if the test ends before it stopped (a failed
/// assertion), so that it does not outlive the test.
struct Stop(std::process::Child);

impl Drop for Stop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The gateway on `path`, its log on this test's stderr.
fn run(path: &Path) -> Stop {
    Stop(support::spawn_with_config(BIN, path, Stdio::inherit()))
}

fn deployment(mqtt_port: u16, modbus_port: u16) -> String {
    format!(
        r#"
[mqtt]
host = "127.0.0.1"
port = {mqtt_port}

[sparkplug]
group_id = "Plant1"
edge_node_id = "modbus-gw"

[modbus.groups]
default = 100

[[modbus.device]]
name = "press-1"
host = "127.0.0.1"
port = {modbus_port}
timeout_ms = 500

[[modbus.device.tag]]
name = "Hydraulics/Pressure"
register = "40101"
type = "f32"
order = "CDAB"
unit = "bar"
"#
    )
}

#[test]
fn explain_prints_the_plan_without_touching_a_device() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(dir.path(), &deployment(1, 9));
    let out = Command::new(BIN).args(["explain", "--config"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("holding_register 100..=101 (2 read, 0 unused; Modicon 40101..=40102): Hydraulics/Pressure"),
        "{text}"
    );
    assert!(text.contains("total: 1 reads for 1 tags"), "{text}");
}

#[test]
fn check_config_names_the_file_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let good = file(dir.path(), &deployment(1883, 502));
    let out = Command::new(BIN).arg("--config").arg(&good).arg("--check-config").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("valid: 1 devices, 1 tags, edge node Plant1/modbus-gw")
    );

    for (broken, want) in [
        (
            deployment(1883, 502).replace("type = \"f32\"", "type = \"f33\""),
            "tag \"Hydraulics/Pressure\": type \"f33\"; use bool",
        ),
        (
            deployment(1883, 502).replace("edge_node_id = \"modbus-gw\"", "edge_node_id = \"a/b\""),
            "sparkplug: edge_node_id",
        ),
        (deployment(1883, 502).replace("[sparkplug]", "[sparkplugg]"), "no [sparkplug] section"),
        (
            format!("{}\n[plain]\nsite = \"s\"\narea = \"a\"\n", deployment(1883, 502)),
            "both [sparkplug] and [plain]",
        ),
        (
            deployment(1883, 502).replace(
                "[sparkplug]\ngroup_id = \"Plant1\"\nedge_node_id = \"modbus-gw\"",
                "[plain]\nsite = \"s\"\narea = \"a\"",
            ),
            "plain: device \"press-1\", tag \"Hydraulics/Pressure\"",
        ),
        (deployment(1883, 502).replace("port = 1883", "port = \"x\""), "line 4"),
    ] {
        let path = file(dir.path(), &broken);
        let out =
            Command::new(BIN).arg("--config").arg(&path).arg("--check-config").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{broken}");
        assert!(err.starts_with(&format!("error: {}", path.display())), "{err}");
        assert!(err.contains(want), "{err}\nshould contain {want:?}");
    }
    // Without --config: the file in /etc/shopfloor/, named when missing.
    let out = Command::new(BIN).env_remove("SHOPFLOOR_CONFIG").output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/etc/shopfloor/modbus-gateway.toml"));
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("EXAMPLES:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_runs_publishes_and_stops_on_sigterm() {
    let broker = Mosquitto::start().expect("start mosquitto");
    let modbus_port = free_port().unwrap();
    let mut device = PythonPeer::spawn(
        shared_script("modbus_device.py"),
        &["tcp", &modbus_port.to_string(), "1"],
    )
    .expect("start pymodbus");
    device.until(Duration::from_secs(20), |l| l == "ready").expect("pymodbus ready");
    device
        .send(r#"{"set": "h", "address": 100, "type": "f32", "order": "CDAB", "value": 87.5}"#)
        .unwrap();
    assert_eq!(device.line(Duration::from_secs(10)).as_deref(), Some("ok"));

    let mut host = HostDriver::spawn(
        HostApplication::new(HostConfig::new("scada")),
        DriverConfig::new("scada", Broker::new(broker.host(), broker.port())),
    );
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = free_port().unwrap();
    let path = file(
        dir.path(),
        &format!(
            "{}\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
            // A spool folder (relative to the file) keeps bdSeq too.
            deployment(broker.port(), modbus_port).replace(
                "edge_node_id = \"modbus-gw\"",
                "edge_node_id = \"modbus-gw\"\nspool_dir = \"spool\""
            )
        ),
    );
    let start = || run(&path);
    let mut gateway = start();
    let mut bd_seq = None;
    let seen = timeout(Duration::from_secs(20), async {
        loop {
            match host.next_event().await {
                Some(HostEvent::NodeOnline { edge_node, bd_seq: b, .. })
                    if edge_node == "modbus-gw" =>
                {
                    bd_seq = Some(b);
                }
                Some(HostEvent::Data(b))
                    if b.source == "Plant1/modbus-gw/press-1"
                        && b.readings.iter().any(|r| r.value == Value::F64(87.5)) =>
                {
                    return;
                }
                _ => {}
            }
        }
    })
    .await;
    assert!(seen.is_ok(), "no pressure reading from the gateway within 20 s");
    let bd_seq = bd_seq.expect("an NBIRTH before the data");
    // Its /metrics says it is online.
    let page = shopfloor_testkit::scrape_until(
        ([127, 0, 0, 1], metrics_port).into(),
        Duration::from_secs(5),
        |p| {
            p.contains("shopfloor_edge_online 1\n")
                && p.contains("shopfloor_edge_device_online{device=\"press-1\"} 1\n")
        },
    );
    assert!(page.contains("# TYPE shopfloor_edge_dropped_readings_total counter"), "{page}");
    assert!(page.contains("shopfloor_edge_device_online{device=\"press-1\"} 1\n"), "{page}");

    // SIGTERM: a clean stop (NDEATH, exit 0) within 10 s.
    let status = support::sigterm(&mut gateway.0, Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
    let offline = timeout(Duration::from_secs(20), async {
        loop {
            if let Some(HostEvent::NodeOffline { edge_node, .. }) = host.next_event().await
                && edge_node == "modbus-gw"
            {
                return;
            }
        }
    })
    .await;
    assert!(offline.is_ok(), "the host did not see the gateway's NDEATH");
    // Started again: its bdSeq continues (Sparkplug: one more per CONNECT).
    let mut again = start();
    let next = timeout(Duration::from_secs(20), async {
        loop {
            if let Some(HostEvent::NodeOnline { edge_node, bd_seq, .. }) = host.next_event().await
                && edge_node == "modbus-gw"
            {
                return bd_seq;
            }
        }
    })
    .await
    .expect("an NBIRTH after the restart");
    assert_eq!(next, (bd_seq + 1) % 256, "bdSeq after a restart");
    // SAFETY: the child is ours and not yet reaped.
    unsafe {
        libc::kill(again.0.id() as libc::pid_t, libc::SIGTERM);
    }
    let _ = again.0.wait();
    host.shutdown().await;
}

/// A plain-mode gateway serves `/metrics` too (it accepted `[metrics]
/// listen` and never served it): the build and the process's figures.
#[test]
fn a_plain_gateway_serves_its_metrics() {
    let broker = Mosquitto::start().expect("start mosquitto");
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = free_port().unwrap();
    let text = deployment(broker.port(), free_port().unwrap())
        .replace(
            "[sparkplug]\ngroup_id = \"Plant1\"\nedge_node_id = \"modbus-gw\"",
            "[plain]\nsite = \"s\"\narea = \"a\"",
        )
        // A plain topic level holds no '/'.
        .replace("Hydraulics/Pressure", "pressure");
    let path =
        file(dir.path(), &format!("{text}\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n"));
    let mut gateway = run(&path);
    let page = shopfloor_testkit::scrape_until(
        ([127, 0, 0, 1], metrics_port).into(),
        Duration::from_secs(20),
        |p| p.contains("process_cpu_seconds_total"),
    );
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        page.contains(&format!(
            "shopfloor_build_info{{binary=\"shopfloor-modbus-gateway\",version=\"{version}\"}} 1"
        )),
        "{page}"
    );
    assert!(page.contains("process_resident_memory_bytes") && page.contains("process_open_fds"));
    // SAFETY: a plain kill(2) on our own child.
    unsafe { libc::kill(gateway.0.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(15);
    while gateway.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "no exit within 15 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(gateway.0.try_wait().unwrap().is_some_and(|s| s.success()));
}

//! The `shopfloor-opcua-gateway` binary as a user runs it: `browse`
//! against an asyncua server writes a deployment file, `--check-config`
//! accepts it and refuses a broken one with the place named, and a real
//! run publishes the server's values as a Sparkplug device, stopped with
//! SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

use shopfloor_mqtt::{Broker, DriverConfig, HostDriver};
use shopfloor_schemas::Value;
use shopfloor_sparkplug::{HostApplication, HostConfig, HostEvent};
use shopfloor_testkit::{Mosquitto, PythonPeer, free_port, shared_script};
use tokio::time::timeout;

mod support;

const BIN: &str = env!("CARGO_BIN_EXE_shopfloor-opcua-gateway");

fn asyncua() -> (PythonPeer, u16) {
    let port = free_port().unwrap();
    let peer = PythonPeer::spawn(shared_script("opcua_server.py"), &[&port.to_string()])
        .expect("start the asyncua server (scripts/test makes the .venv)");
    peer.until(Duration::from_secs(30), |l| l == "ready").expect("asyncua ready");
    (peer, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_check_and_run() {
    let (_server, port) = asyncua();
    let broker = Mosquitto::start().expect("start mosquitto (apt-get install -y mosquitto)");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plant.toml");
    let pki = dir.path().join("pki");

    // browse → a deployment file.
    let out = Command::new(BIN)
        .args(["browse", &format!("opc.tcp://localhost:{port}/"), "--name", "press-1", "--out"])
        .arg(&path)
        .arg("--pki")
        .arg(&pki)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("9 variables"), "progress and count on stderr: {stderr}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("node_id = \"nsu=urn:shopfloor:test;s=Machine1.Temperature\""), "{text}");

    // --check-config accepts it once pointed at the test broker.
    let text = text.replace("port = 1883", &format!("port = {}", broker.port()));
    std::fs::write(&path, &text).unwrap();
    let out = Command::new(BIN).arg("--config").arg(&path).arg("--check-config").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("valid: 1 servers, 9 nodes, edge node Plant1/opcua-gw"), "{stdout}");
    // A broken one is refused with the place and the fix.
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, text.replacen("node_id = \"nsu=", "node_id = \"xsu=", 1)).unwrap();
    let out =
        Command::new(BIN).arg("--config").arg(&broken).arg("--check-config").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("broken.toml")
            && stderr.contains("server \"press-1\"")
            && stderr.contains("not a NodeId"),
        "{stderr}"
    );

    // Plain topics instead: browse's metric names (Machine1/Temperature)
    // are two topic levels, which plain topics cannot carry; said so.
    let sparkplug = "[sparkplug]\ngroup_id = \"Plant1\"\nedge_node_id = \"opcua-gw\"\n";
    assert!(text.contains(sparkplug), "{text}");
    let plain = dir.path().join("plain.toml");
    for (file, want) in [
        (
            text.replace(sparkplug, "[plain]\nsite = \"plant1\"\narea = \"presses\"\n"),
            "one topic level",
        ),
        (format!("{text}\n[plain]\nsite = \"plant1\"\narea = \"presses\"\n"), "choose one output"),
        (format!("{text}\n[postgres]\nhost = \"db\"\n"), "unknown section [postgres]"),
    ] {
        std::fs::write(&plain, file).unwrap();
        let out =
            Command::new(BIN).arg("--config").arg(&plain).arg("--check-config").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(want), "want {want:?}: {stderr}");
    }

    // A real run: the server's values as a Sparkplug device.
    let mut host = HostDriver::spawn(
        HostApplication::new(HostConfig::new("scada")),
        DriverConfig::new("scada", Broker::new(broker.host(), broker.port())),
    );
    let mut gateway = support::spawn_with_config(BIN, &path, Stdio::inherit());
    let seen = timeout(Duration::from_secs(30), async {
        loop {
            if let Some(HostEvent::Data(b)) = host.next_event().await
                && b.source == "Plant1/opcua-gw/press-1"
                && b.readings
                    .iter()
                    .any(|r| r.metric == "Machine1/Temperature" && r.value == Value::F64(21.0))
            {
                return;
            }
        }
    })
    .await;
    assert!(seen.is_ok(), "no temperature from the gateway within 30 s");

    let status = support::sigterm(&mut gateway, Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}");
    host.shutdown().await;
}

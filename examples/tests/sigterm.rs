//! Both gateways stop within 1 s of SIGTERM in the states where stopping
//! used to wait: a device or server that refuses connections, a broker
//! that is not there (the reconnect backing off), or both. Meanwhile
//! each problem is one log line of ours, none of a library's.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use shopfloor_testkit::{Mosquitto, free_port};

mod support;

/// Kills the child if the test ends before it stopped.
struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn modbus(mqtt_port: u16, device_port: u16) -> String {
    format!(
        "[mqtt]\nhost = \"127.0.0.1\"\nport = {mqtt_port}\n\n[sparkplug]\ngroup_id = \"Plant1\"\nedge_node_id = \"modbus-gw\"\n\n\
         [modbus.groups]\ndefault = 100\n\n[[modbus.device]]\nname = \"press-1\"\nhost = \"127.0.0.1\"\nport = {device_port}\n\
         timeout_ms = 500\n\n[[modbus.device.tag]]\nname = \"Pressure\"\nregister = \"40101\"\ntype = \"f32\"\n"
    )
}

fn opcua(mqtt_port: u16, server_port: u16, pki: &Path) -> String {
    format!(
        "[mqtt]\nhost = \"127.0.0.1\"\nport = {mqtt_port}\n\n[sparkplug]\ngroup_id = \"Plant1\"\nedge_node_id = \"opcua-gw\"\n\n\
         [[server]]\nname = \"press-1\"\nendpoint = \"opc.tcp://127.0.0.1:{server_port}/\"\npki_dir = \"{}\"\n\n\
         [[server.node]]\nmetric = \"Temperature\"\nnode_id = \"nsu=urn:shopfloor:test;s=Machine1.Temperature\"\n",
        pki.display()
    )
}

/// Runs `bin` on `config` for `settle`, sends SIGTERM, and returns how
/// long it took to exit (and its log).
fn time_to_stop(bin: &str, config: &str, settle: Duration) -> (Duration, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config).unwrap();
    let log = dir.path().join("gateway.log");
    let mut child =
        Stop(support::spawn_with_config(bin, &path, std::fs::File::create(&log).unwrap()));
    std::thread::sleep(settle);
    assert!(child.0.try_wait().unwrap().is_none(), "{bin} exited early:\n{}", read(&log));
    let sent = Instant::now();
    // SAFETY: the child is ours and not yet reaped.
    unsafe {
        libc::kill(child.0.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = sent + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "{bin} still running 15 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = sent.elapsed();
    assert!(status.success(), "{bin}: {status:?}\n{}", read(&log));
    (took, read(&log))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn both_gateways_stop_within_a_second_while_refused_or_backing_off() {
    let broker = Mosquitto::start().expect("start mosquitto (apt-get install -y mosquitto)");
    // Ports nothing listens on: connections are refused.
    let (no_broker, no_device) = (free_port().unwrap(), free_port().unwrap());
    let pki = tempfile::tempdir().unwrap();
    let cases = [
        (
            "modbus, device refused",
            env!("CARGO_BIN_EXE_shopfloor-modbus-gateway"),
            modbus(broker.port(), no_device),
        ),
        (
            "modbus, no broker",
            env!("CARGO_BIN_EXE_shopfloor-modbus-gateway"),
            modbus(no_broker, no_device),
        ),
        (
            "opcua, server refused",
            env!("CARGO_BIN_EXE_shopfloor-opcua-gateway"),
            opcua(broker.port(), no_device, pki.path()),
        ),
        (
            "opcua, no broker",
            env!("CARGO_BIN_EXE_shopfloor-opcua-gateway"),
            opcua(no_broker, no_device, pki.path()),
        ),
    ];
    let mut slow = Vec::new();
    for (what, bin, config) in cases {
        // Long enough for a few refusals and a backoff under way.
        let (took, log) = time_to_stop(bin, &config, Duration::from_millis(2500));
        println!("{what}: stopped {:.0} ms after SIGTERM", took.as_secs_f64() * 1000.0);
        // Quiet: each problem is one line of ours (a refused device or
        // server, a missing broker), none of a library's.
        let loud: Vec<&str> =
            log.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).collect();
        let want = 1 + usize::from(what.contains("no broker"));
        assert_eq!(loud.len(), want, "{what}: {loud:#?}");
        assert!(loud.iter().all(|l| l.contains(" shopfloor_")), "{what}: {loud:#?}");
        if took > Duration::from_secs(1) {
            slow.push(format!("{what}: {took:?}\n{log}"));
        }
    }
    assert!(slow.is_empty(), "not stopped within 1 s of SIGTERM:\n{}", slow.join("\n"));
}

//! A pymodbus device for the tests (`testkit/python/modbus_device.py`): over TCP
//! on a free loopback port, or RTU on one end of a socat serial pair.
#![allow(dead_code, reason = "each test file uses some of it")]

use std::path::PathBuf;
use std::time::Duration;

use shopfloor_bridge_modbus::RegisterMap;
use shopfloor_testkit::{PythonPeer, SerialPair, SerialServer, free_port};

/// A pymodbus device on a free loopback port, or on one end of a serial
/// pair (the bridge gets the other end).
pub(crate) struct Device {
    pub(crate) peer: PythonPeer,
    pub(crate) port: u16,
    pub(crate) serial: Option<SerialPair>,
    /// A serial-to-Ethernet converter in front of the serial line.
    pub(crate) converter: Option<SerialServer>,
}

pub(crate) fn script() -> PathBuf {
    shopfloor_testkit::shared_script("modbus_device.py")
}

impl Device {
    pub(crate) fn start() -> Self {
        Self::on(free_port().expect("a free port"))
    }

    pub(crate) fn on(port: u16) -> Self {
        let peer = PythonPeer::spawn(script(), &["tcp", &port.to_string(), "1"])
            .expect("start the pymodbus device");
        peer.until(Duration::from_secs(20), |l| l == "ready")
            .unwrap_or_else(|seen| panic!("pymodbus did not start: {seen:?}"));
        Self { peer, port, serial: None, converter: None }
    }

    pub(crate) fn start_rtu() -> Self {
        let pair = SerialPair::start().expect("a socat serial pair");
        let peer = PythonPeer::spawn(script(), &["rtu", &pair.b().to_string_lossy(), "1"])
            .expect("start the pymodbus device");
        peer.until(Duration::from_secs(20), |l| l == "ready")
            .unwrap_or_else(|seen| panic!("pymodbus did not start: {seen:?}"));
        Self { peer, port: 0, serial: Some(pair), converter: None }
    }

    /// An RTU device on a serial line behind a serial-to-Ethernet
    /// converter (socat): the bridge speaks RTU frames over TCP.
    pub(crate) fn start_rtu_over_tcp() -> Self {
        let mut dev = Self::start_rtu();
        let pair = dev.serial.as_ref().expect("a serial line");
        dev.converter =
            Some(SerialServer::start(&pair.a()).expect("a socat TCP-to-serial converter"));
        dev
    }

    /// The `[[device]]` lines that reach it.
    pub(crate) fn link(&self) -> String {
        match (&self.converter, &self.serial) {
            (Some(c), _) => format!("host = \"127.0.0.1\"\nport = {}\nframing = \"rtu\"", c.port()),
            (None, Some(pair)) => format!("serial = \"{}\"\nbaud = 115200", pair.a().display()),
            (None, None) => format!("host = \"127.0.0.1\"\nport = {}", self.port),
        }
    }

    /// A register map of one device, `name`, that reaches this one (see
    /// [`one_device`]).
    pub(crate) fn map(&self, name: &str, lines: &str) -> RegisterMap {
        one_device(name, &self.link(), lines)
    }

    pub(crate) fn cmd(&mut self, json: &str) -> String {
        self.peer.send(json).expect("pymodbus stdin");
        self.peer.line(Duration::from_secs(10)).expect("pymodbus answers")
    }

    pub(crate) fn set(&mut self, area: &str, address: u16, kind: &str, order: &str, value: &str) {
        let answer = self.cmd(&format!(
            r#"{{"set": "{area}", "address": {address}, "type": "{kind}", "order": "{order}", "value": {value}}}"#
        ));
        assert_eq!(answer, "ok");
    }

    pub(crate) fn set_registers(&mut self, address: u16, regs: &[u16]) {
        let answer =
            self.cmd(&format!(r#"{{"set": "h", "address": {address}, "registers": {regs:?}}}"#));
        assert_eq!(answer, "ok");
    }

    pub(crate) fn get(&mut self, area: &str, address: u16, count: u16) -> Vec<i64> {
        let answer =
            self.cmd(&format!(r#"{{"get": "{area}", "address": {address}, "count": {count}}}"#));
        serde_json::from_str(&answer).expect("a JSON list")
    }
}

/// A register map of one device, `name`, reached by the `[[device]]` lines
/// `link`, polled every 100 ms, with these lines: its settings, then its
/// `[[device.tag]]` tables.
pub(crate) fn one_device(name: &str, link: &str, lines: &str) -> RegisterMap {
    let text = format!("[groups]\ndefault = 100\n[[device]]\nname = \"{name}\"\n{link}\n{lines}");
    RegisterMap::from_toml(&text).expect("a valid map")
}

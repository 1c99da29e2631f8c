//! An MQTT 3.1.1-only broker that is not Mosquitto: amqtt (PyPI), from
//! the project venv, through `python/mqtt311_broker.py` (which works
//! around four faults of amqtt 0.12.1; see its docstring). It answers an
//! MQTT 5 CONNECT with the 3.1.1 CONNACK "unacceptable protocol version"
//! and closes the connection.

use std::time::Duration;

use crate::{Error, PythonPeer, free_port, shared_script};

/// A running amqtt broker on a free loopback port; stopped on drop.
#[derive(Debug)]
pub struct Amqtt {
    peer: PythonPeer,
    port: u16,
}

impl Amqtt {
    /// Starts it and waits until it accepts connections (at most 30 s).
    pub fn start() -> Result<Self, Error> {
        let port = free_port()?;
        let peer = PythonPeer::spawn(shared_script("mqtt311_broker.py"), &[&port.to_string()])?;
        peer.until(Duration::from_secs(30), |l| l == "ready").map_err(|seen| Error::Io {
            what: format!("starting amqtt on port {port} (it printed {seen:?})"),
            source: std::io::Error::other("no \"ready\" within 30 s"),
        })?;
        Ok(Self { peer, port })
    }

    /// `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Amqtt {
    fn drop(&mut self) {
        self.peer.kill();
    }
}

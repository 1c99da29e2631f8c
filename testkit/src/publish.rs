//! One message published the way a host or an operator would, with the
//! broker's own client (`mosquitto_pub`), for tests that send a command
//! (a DCMD, an NCMD, a plain `/set`) to the component under test.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::{Error, Mosquitto};

const MOSQUITTO_PUB: &str = "/usr/bin/mosquitto_pub";

/// Publishes `payload` on `topic` at QoS 1, not retained, to `broker` and
/// returns once the broker acknowledged it (PUBACK). It blocks for that
/// long (milliseconds on loopback).
pub fn publish(broker: &Mosquitto, topic: &str, payload: impl AsRef<[u8]>) -> Result<(), Error> {
    let port = broker.port().to_string();
    let args = ["-h", broker.host(), "-p", &port, "-q", "1", "-t", topic, "-s"];
    let command = format!("{MOSQUITTO_PUB} {}", args.join(" "));
    let mut child = Command::new(MOSQUITTO_PUB)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => Error::NotInstalled {
                name: "mosquitto_pub",
                path: PathBuf::from(MOSQUITTO_PUB),
                install: "apt-get install -y mosquitto-clients",
            },
            _ => Error::Io { what: format!("starting {command}"), source },
        })?;
    // The message is all of stdin (`-s`): closing it sends it.
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin
        .write_all(payload.as_ref())
        .map_err(|source| Error::Io { what: format!("writing to {command}"), source })?;
    drop(stdin);
    let out = child
        .wait_with_output()
        .map_err(|source| Error::Io { what: format!("waiting for {command}"), source })?;
    if out.status.success() {
        return Ok(());
    }
    let output = String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned();
    Err(Error::Command { command, status: out.status, output })
}

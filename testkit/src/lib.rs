#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod alertmanager;
mod error;
mod fuzz;
mod mosquitto;
mod pki;
mod postgres;
mod process;
mod proxy;
mod python;
mod serial;

pub use alertmanager::Alertmanager;
pub use error::Error;
pub use fuzz::replay_fuzz_inputs;
pub use mosquitto::{Mosquitto, MosquittoBuilder};
pub use pki::Pki;
pub use postgres::{Postgres, PostgresBuilder};
pub use proxy::FaultProxy;
pub use python::{PythonPeer, VENV_INSTALL, python, shared_script};
pub use serial::SerialPair;

/// A loopback port that was free a moment ago, for a peer that binds its own
/// (a server may still lose the race with another process; retry then).
pub fn free_port() -> Result<u16, Error> {
    process::free_ports::<1>().map(|[p]| p)
}

#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod error;
mod mosquitto;
mod pki;
mod postgres;
mod process;
mod proxy;
mod python;

pub use error::Error;
pub use mosquitto::{Mosquitto, MosquittoBuilder};
pub use pki::Pki;
pub use postgres::{Postgres, PostgresBuilder};
pub use proxy::FaultProxy;
pub use python::{PythonPeer, VENV_INSTALL, python};

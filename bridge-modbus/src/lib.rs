#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod codec;
pub mod config;
#[cfg(feature = "mqtt")]
pub mod gateway;
pub mod plan;
pub mod poller;
pub mod session;

pub use codec::{Data, Write};
pub use config::{Area, ConfigError, Device, Order, RegisterMap, Tag, TagType};
pub use plan::{Learned, Plan, Request, explain, plan};
pub use poller::{Poller, WriteFailure, Writer};
pub use session::{Output, Session};

#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod browse;
pub mod client;
pub mod config;
pub mod convert;
pub mod items;
pub mod watchdog;

pub use config::{BridgeConfig, ConfigError, NodeConfig, ServerConfig};
#[cfg(feature = "mqtt")]
pub mod gateway;

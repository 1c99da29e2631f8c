#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod config;
pub mod convert;

pub use config::{BridgeConfig, ConfigError, NodeConfig, ServerConfig};

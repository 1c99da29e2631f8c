#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod codec;
pub mod config;
pub mod plan;

pub use codec::{Data, Write};
pub use config::{Area, ConfigError, Device, Order, RegisterMap, Tag, TagType};
pub use plan::{Learned, Plan, Request, explain, plan};

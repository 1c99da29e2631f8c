#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod delay;
pub mod limit;

pub use delay::{Condition, Delay};
pub use limit::{Level, LevelKind, Limits, LimitsError};

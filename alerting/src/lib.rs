#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod delay;
pub mod limit;
pub mod rules;

pub use delay::{Condition, Delay};
pub use limit::{Level, LevelKind, Limits, LimitsError};
pub use rules::{Glob, Kind, Rule, RuleSet, RulesError};

#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "alertmanager")]
pub mod alertmanager;
pub mod delay;
pub mod detect;
pub mod engine;
#[cfg(feature = "postgres")]
pub mod journal;
#[cfg(any(feature = "mqtt", feature = "postgres"))]
pub mod json;
pub mod limit;
#[cfg(feature = "mqtt")]
pub mod mqtt;
pub mod rules;

pub use delay::Delay;
pub use engine::{
    AlarmKey, AlarmState, Command, CommandError, Condition, Engine, EngineLimits, Event, EventKind,
};
pub use limit::{Level, LevelKind, Limits, LimitsError};
pub use rules::{EnabledWhen, Glob, Kind, Rule, RuleSet, RulesError};

//! What the engine tells: alarm identities, conditions and events.

use super::*;

/// An alarm's identity: the rule (its definition) and the signal.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AlarmKey {
    /// The rule's name.
    pub rule: String,
    /// The signal's source.
    pub source: String,
    /// The signal's metric.
    pub metric: String,
}

/// The alarm state a condition can be in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Condition {
    /// A limit alarm's level.
    Level(LevelKind),
    /// A discrete, bad-quality or stale alarm.
    On,
}

/// What happened.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum EventKind {
    /// The alarm became active (a new instance).
    Raised {
        /// Its condition.
        condition: Condition,
        /// Its priority in that condition.
        priority: u16,
        /// The value that raised it (numbers and booleans).
        value: Option<f64>,
    },
    /// An active alarm changed level (H to HH, say).
    Changed {
        /// The new condition.
        condition: Condition,
        /// Its priority.
        priority: u16,
        /// The value.
        value: Option<f64>,
    },
    /// The condition returned to normal (on good input).
    ReturnedToNormal {
        /// Whether the instance is over (it had been acknowledged).
        closed: bool,
    },
    /// An operator acknowledged it.
    Acknowledged {
        /// Who.
        user: String,
        /// Why, or what they did.
        comment: String,
        /// Whether the instance is over (the condition had returned to normal).
        closed: bool,
    },
    /// The input went bad: the alarm's state is frozen, not cleared.
    BadInput {
        /// Why.
        reason: String,
    },
    /// The input is good again.
    InputRestored,
    /// An operator shelved it: not annunciated until unshelved.
    Shelved {
        /// Who.
        user: String,
        /// Why.
        comment: String,
        /// Until when (the engine's clock); `None`: one-shot, until the
        /// condition next returns to normal.
        until: Option<u64>,
    },
    /// Back from the shelf.
    Unshelved {
        /// Who, or `None` when a timed shelve expired or a one-shot ended.
        user: Option<String>,
    },
    /// A latched alarm's condition is normal and an operator reset it.
    LatchReset {
        /// Who.
        user: String,
    },
    /// Taken out of service (maintenance): not evaluated until back.
    OutOfService {
        /// Who.
        user: String,
        /// Why.
        comment: String,
    },
    /// Back in service.
    InService {
        /// Who.
        user: String,
    },
    /// An operator confirmed an acknowledged instance (rules with
    /// `confirm`).
    Confirmed {
        /// Who.
        user: String,
        /// Why, or what they did.
        comment: String,
        /// Whether the instance is over (the condition had returned to normal).
        closed: bool,
    },
    /// Replayed history (store and forward) entered or left a condition at
    /// `sampled`: journaled, never annunciated, no change to the live state.
    Late {
        /// The condition the history shows from `sampled` (`None`: normal).
        condition: Option<Condition>,
        /// The value.
        value: Option<f64>,
        /// When the sample was taken (its own timestamp, ms).
        sampled: u64,
    },
    /// Suppressed by design: its enabling signal left the enabling state.
    Suppressed,
    /// No longer suppressed by design.
    Unsuppressed,
}

/// An event of one alarm.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Event {
    /// Which alarm.
    pub key: AlarmKey,
    /// The area of its rule (for the alarm-rate KPIs by area).
    pub area: String,
    /// Its current instance (0 when it has never been active).
    pub instance: u64,
    /// When (the engine's clock, ms).
    pub time: u64,
    /// What.
    pub kind: EventKind,
    /// Whether to tell people (false while shelved or out of service:
    /// the journal still records it).
    pub annunciate: bool,
}

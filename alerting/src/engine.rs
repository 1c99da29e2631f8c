//! The alarm engine, sans-IO: readings, operator commands and the time in;
//! events out. The caller owns the clock and the I/O:
//!
//! ```text
//! handle_batch(batch, now)      a batch of readings arrived
//! handle_command(cmd, now)      an operator acted
//! handle_timeout(now)           the time from next_timeout() has come
//! poll_event()                  what happened, in order
//! ```
//!
//! One alarm per (rule, source, metric), made when the first matching
//! reading arrives. Its condition runs through the rule's detector (limit
//! levels, discrete state, bad quality, staleness) and its on/off delays.
//!
//! **Bad input is never a return to normal.** A sample of bad or stale
//! quality, a NaN, a value outside the instrument's range, or silence past
//! a stale rule's window puts the alarm's input in `bad`: the alarm stays as
//! it was (an active alarm stays active) and a `BadInput` event says so; it
//! can only clear on good input again.
//!
//! The lifecycle (ISA-18.2 / OPC UA Part 9): an activation raises the
//! alarm unacknowledged with a new instance id; acknowledgement (user and
//! comment) is accepted only for an unacknowledged alarm; a return to
//! normal of an acknowledged alarm ends the instance, of an unacknowledged
//! one leaves it waiting for acknowledgement ("RTN unack"). A rule with
//! `confirm` adds a last step: the acknowledged instance waits for an
//! operator's confirmation as well. Latching, shelving (one-shot or
//! timed), suppression by design and out-of-service are the rest; the
//! crate's README draws the state diagram.
//!
//! **History is not live.** Readings an edge node replays from its store
//! ([`handle_historical`](Engine::handle_historical)) are checked against
//! the limit, discrete and bad-quality rules and journaled as `late`
//! events, never annunciated, and never change an alarm's live state.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use shopfloor_schemas::{Batch, Quality, Value};

use crate::delay::Delay;
use crate::detect::{Deviation, Flatline, RateOfChange};
use crate::limit::LevelKind;
use crate::rules::{Glob, Kind, Rule, RuleSet};

/// The flood meta-alarm's rule name.
pub const FLOOD: &str = "alarm-flood";

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

/// An operator's command.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Acknowledge an unacknowledged alarm.
    Acknowledge {
        /// Which.
        key: AlarmKey,
        /// Who.
        user: String,
        /// Why.
        comment: String,
    },
    /// Shelve: stop annunciating it for a while.
    Shelve {
        /// Which.
        key: AlarmKey,
        /// Who.
        user: String,
        /// Why.
        comment: String,
        /// How long (at most the rule's `max_shelve`); `None`: one-shot,
        /// until the condition next returns to normal.
        duration: Option<Duration>,
    },
    /// End a shelve.
    Unshelve {
        /// Which.
        key: AlarmKey,
        /// Who.
        user: String,
    },
    /// Confirm an acknowledged alarm whose rule asks for confirmation.
    Confirm {
        /// Which.
        key: AlarmKey,
        /// Who.
        user: String,
        /// Why, or what was done.
        comment: String,
    },
    /// Reset a latched alarm whose condition has returned to normal.
    ResetLatch {
        /// Which.
        key: AlarmKey,
        /// Who.
        user: String,
    },
    /// Take out of service (maintenance).
    OutOfService {
        /// Which.
        key: AlarmKey,
        /// Who.
        user: String,
        /// Why.
        comment: String,
    },
    /// Put back in service.
    InService {
        /// Which.
        key: AlarmKey,
        /// Who.
        user: String,
    },
}

/// Why a command was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// No such alarm.
    #[error("no alarm {0:?}")]
    Unknown(AlarmKey),
    /// Acknowledging what is not waiting for it.
    #[error("alarm {0:?} is not unacknowledged")]
    NotUnacknowledged(AlarmKey),
    /// A shelve longer than the rule allows.
    #[error("alarm {key:?} may be shelved for at most {max:?}")]
    ShelveTooLong {
        /// Which.
        key: AlarmKey,
        /// The rule's maximum.
        max: Duration,
    },
    /// Unshelving what is not shelved, resetting what is not latched,
    /// or a latch whose condition is still active.
    #[error("alarm {key:?}: {why}")]
    NotNow {
        /// Which.
        key: AlarmKey,
        /// Why not.
        why: &'static str,
    },
}

/// What of one alarm must survive a restart (the journal keeps it), so
/// that an acknowledged or shelved alarm is not announced again.
#[derive(Clone, Debug, PartialEq)]
pub struct Persisted {
    /// Which alarm.
    pub key: AlarmKey,
    /// Its instance.
    pub instance: u64,
    /// Its active condition (latched included).
    pub active: Option<Condition>,
    /// Waiting for acknowledgement.
    pub unacknowledged: bool,
    /// Shelved (`Some(None)`: one-shot; `Some(Some(t))`: until `t`).
    pub shelved: Option<Option<u64>>,
    /// Out of service.
    pub out_of_service: bool,
    /// Latched.
    pub latched: bool,
    /// Acknowledged, waiting for confirmation.
    pub unconfirmed: bool,
}

/// One alarm as sinks and displays see it.
#[derive(Clone, Debug, PartialEq)]
pub struct AlarmView {
    /// Which.
    pub key: AlarmKey,
    /// Its state.
    pub state: AlarmState,
    /// Its priority now (the active level's, else the rule's).
    pub priority: u16,
    /// The rule's area.
    pub area: String,
    /// The rule's class.
    pub class: String,
    /// The rule's message with `{source}`, `{metric}`, `{level}`, `{value}`
    /// filled in (`{unit}` is left empty: units live in the catalogue).
    pub message: String,
    /// The last value seen.
    pub value: Option<f64>,
    /// Whether people should be told about it now (not shelved, out of
    /// service or suppressed).
    pub annunciate: bool,
}

/// The public state of one alarm.
#[derive(Clone, Debug, PartialEq)]
pub struct AlarmState {
    /// Active (delayed) condition, if any.
    pub active: Option<Condition>,
    /// Waiting for acknowledgement.
    pub unacknowledged: bool,
    /// Its input is bad (frozen state).
    pub bad_input: bool,
    /// The current instance.
    pub instance: u64,
    /// Shelved (`Some(None)`: one-shot; `Some(Some(t))`: until `t`).
    pub shelved: Option<Option<u64>>,
    /// Out of service.
    pub out_of_service: bool,
    /// Latched: active until reset, though the condition has returned.
    pub latched: bool,
    /// Suppressed by design (its enabling signal says so).
    pub suppressed: bool,
    /// Acknowledged, waiting for confirmation (rules with `confirm`).
    pub unconfirmed: bool,
}

struct Alarm {
    rule: usize,
    key: AlarmKey,
    /// The delayed condition (limit level, or `On` as a level-less state).
    delay: Delay<Option<Cond>>,
    unacked: bool,
    /// Acknowledged, waiting for confirmation.
    unconfirmed: bool,
    /// The condition replayed history last showed (see `handle_historical`).
    late: Option<Condition>,
    bad: Option<String>,
    instance: u64,
    /// When the last sample arrived (stale rules).
    last_seen: u64,
    last_value: Option<f64>,
    shelved: Option<Option<u64>>,
    out_of_service: bool,
    /// The condition it latched in, returned since: waiting for a reset.
    latched: Option<Condition>,
    /// The history a rate, deviation or flatline rule keeps.
    detector: Option<Detector>,
    /// A meta-alarm of the alarm system itself (flood): not counted in KPIs.
    meta: bool,
    /// Activations within the chatter window.
    recent: VecDeque<u64>,
    /// Activations since the engine started.
    activations: u64,
    /// Active since (for stale alarms).
    active_since: Option<u64>,
    /// Its enabling signal (control number) and the enabling state.
    control: Option<(usize, bool)>,
}

/// Alarm-system performance settings (ISA-18.2, EEMUA 191).
#[derive(Clone, Debug, PartialEq)]
pub struct KpiConfig {
    /// More activations than this in `flood_window`, in one area, is a
    /// flood: a meta-alarm `alarm-flood` for the area is raised.
    pub flood_count: usize,
    /// The flood window.
    pub flood_window: Duration,
    /// The flood meta-alarm's priority.
    pub flood_priority: u16,
    /// This many activations of one alarm in `chatter_window` is chattering.
    pub chatter_count: usize,
    /// The chatter window.
    pub chatter_window: Duration,
    /// Active longer than this is a stale alarm.
    pub stale_after: Duration,
}

impl Default for KpiConfig {
    /// Flood: > 10 per 10 min; chattering: ≥ 3 in 60 s; stale: > 24 h.
    fn default() -> Self {
        Self {
            flood_count: 10,
            flood_window: Duration::from_secs(600),
            flood_priority: 800,
            chatter_count: 3,
            chatter_window: Duration::from_secs(60),
            stale_after: Duration::from_secs(24 * 3600),
        }
    }
}

/// The alarm-system KPIs of one area, now.
#[derive(Clone, Debug, PartialEq)]
pub struct AreaKpis {
    /// The area.
    pub area: String,
    /// Activations within the flood window.
    pub activations: usize,
    /// Whether that is a flood.
    pub flood: bool,
    /// Alarms chattering now.
    pub chattering: Vec<AlarmKey>,
    /// Alarms active longer than `stale_after`.
    pub stale: Vec<AlarmKey>,
    /// The ten alarms activated most since the engine started, most first.
    pub bad_actors: Vec<(AlarmKey, u64)>,
}

struct Area {
    name: String,
    recent: VecDeque<u64>,
    /// Its flood meta-alarm.
    flood: usize,
}

enum Detector {
    Rate(RateOfChange),
    Deviation(Deviation),
    Flatline(Flatline),
}

/// `Option<Cond>` is what the delay filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cond(Condition);

impl crate::delay::Condition for Option<Cond> {
    fn is_normal(&self) -> bool {
        self.is_none()
    }
}

/// The engine.
pub struct Engine {
    rules: RuleSet,
    alarms: Vec<Alarm>,
    index: HashMap<AlarmKey, usize>,
    /// Which alarms a signal feeds, found once per signal.
    /// Signal number by source, then metric: looked up with `&str`, no
    /// allocation per reading.
    by_signal: HashMap<String, HashMap<String, usize>>,
    /// The alarms each signal feeds, and its last state as a boolean (an
    /// enabling signal reported by exception may have been seen before the
    /// alarm it enables was made).
    signals: Vec<(Vec<usize>, Option<bool>)>,
    /// Enabling signals (suppression by design): number by source, metric.
    controls: HashMap<String, HashMap<String, usize>>,
    /// Each enabling signal's last state, and the alarms it enables.
    control_state: Vec<(Option<bool>, Vec<usize>)>,
    events: VecDeque<Event>,
    next_instance: u64,
    kpi: KpiConfig,
    areas: Vec<Area>,
    /// Signals no rule selects, so that the rules are not matched again
    /// for each of their readings: bounded, forgotten all at once when full.
    unselected: HashMap<String, std::collections::HashSet<String>>,
    unselected_len: usize,
    /// Metric names some rule's `enabled_when` watches: their signals are
    /// kept even when no rule selects them (their last state matters).
    enablers: std::collections::HashSet<String>,
    limits: EngineLimits,
    /// Readings of signals refused by [`EngineLimits::max_alarms`].
    refused: u64,
}

/// Bounds on what remote input can make the engine hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineLimits {
    /// Alarms at most (one per rule and signal it selects). A new signal
    /// whose alarms would pass it is refused: its readings are counted
    /// ([`Engine::refused_readings`]) and otherwise ignored.
    pub max_alarms: usize,
    /// Signals no rule selects, remembered at most (to skip matching the
    /// rules again); past it the memory is cleared and filled again.
    pub max_unselected: usize,
}

impl Default for EngineLimits {
    /// 1 000 000 alarms, 100 000 unselected signals remembered.
    fn default() -> Self {
        Self { max_alarms: 1_000_000, max_unselected: 100_000 }
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("rules", &self.rules.rules.len())
            .field("alarms", &self.alarms.len())
            .field("signals", &self.signals.len())
            .field("events_waiting", &self.events.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine for these rules, with the default KPI settings.
    pub fn new(rules: RuleSet) -> Self {
        Self::with_kpis(rules, KpiConfig::default())
    }

    /// An engine for these rules and KPI settings.
    pub fn with_kpis(rules: RuleSet, kpi: KpiConfig) -> Self {
        let mut names: Vec<String> = rules.rules.iter().map(|r| r.area.clone()).collect();
        names.sort();
        names.dedup();
        let mut engine = Self {
            rules,
            alarms: Vec::new(),
            index: HashMap::new(),
            by_signal: HashMap::new(),
            signals: Vec::new(),
            controls: HashMap::new(),
            control_state: Vec::new(),
            events: VecDeque::new(),
            next_instance: 0,
            kpi,
            areas: Vec::new(),
            unselected: HashMap::new(),
            unselected_len: 0,
            enablers: std::collections::HashSet::new(),
            limits: EngineLimits::default(),
            refused: 0,
        };
        engine.enablers = engine
            .rules
            .rules
            .iter()
            .filter_map(|r| r.enabled_when.as_ref())
            .map(|e| e.metric.clone())
            .collect();
        for name in names {
            // A rule no signal can match (names never hold NUL): the flood
            // meta-alarm's definition, so it has the whole lifecycle.
            engine.rules.rules.push(Rule {
                name: FLOOD.to_owned(),
                source: Glob::new("\0"),
                metric: Glob::new("\0"),
                kind: Kind::BadQuality,
                priority: engine.kpi.flood_priority,
                class: "system".into(),
                area: name.clone(),
                message: "alarm flood in {source}".into(),
                on_delay: Duration::ZERO,
                off_delay: Duration::ZERO,
                latch: false,
                confirm: false,
                max_shelve: Duration::from_secs(8 * 3600),
                enabled_when: None,
            });
            let key =
                AlarmKey { rule: FLOOD.into(), source: name.clone(), metric: "activations".into() };
            let flood = engine.push_alarm(engine.rules.rules.len() - 1, key, true);
            engine.areas.push(Area { name, recent: VecDeque::new(), flood });
        }
        engine
    }

    /// The alarm as sinks and displays see it.
    pub fn view(&self, key: &AlarmKey) -> Option<AlarmView> {
        let &i = self.index.get(key)?;
        let a = &self.alarms[i];
        let rule = &self.rules.rules[a.rule];
        let state = self.state(key)?;
        let priority = match (state.active, &rule.kind) {
            (Some(Condition::Level(l)), Kind::Limit { limits, .. }) => {
                limits.level(l).map_or(rule.priority, |lv| lv.priority)
            }
            _ => rule.priority,
        };
        let level = match state.active {
            Some(Condition::Level(l)) => l.code(),
            Some(Condition::On) => "ON",
            None => "normal",
        };
        let value = a.last_value.map_or_else(String::new, |v| v.to_string());
        let message = rule
            .message
            .replace("{source}", &a.key.source)
            .replace("{metric}", &a.key.metric)
            .replace("{level}", level)
            .replace("{value}", &value)
            .replace("{unit}", "")
            .trim()
            .to_owned();
        Some(AlarmView {
            key: a.key.clone(),
            priority,
            area: rule.area.clone(),
            class: rule.class.clone(),
            message,
            value: a.last_value,
            annunciate: a.shelved.is_none() && !a.out_of_service && !state.suppressed,
            state,
        })
    }

    /// Every alarm that is active now, as sinks see it.
    pub fn active(&self) -> Vec<AlarmView> {
        self.alarms
            .iter()
            .filter(|a| a.delay.output().is_some() || a.latched.is_some())
            .filter_map(|a| self.view(&a.key))
            .collect()
    }

    /// Every alarm not in its quiet state (active, unacknowledged, shelved,
    /// out of service or latched), for the journal.
    pub fn persisted(&self) -> Vec<Persisted> {
        self.alarms
            .iter()
            .filter(|a| {
                a.delay.output().is_some()
                    || a.unacked
                    || a.unconfirmed
                    || a.shelved.is_some()
                    || a.out_of_service
                    || a.latched.is_some()
            })
            .map(|a| Persisted {
                key: a.key.clone(),
                instance: a.instance,
                active: a.delay.output().map(|c| c.0).or(a.latched),
                unacknowledged: a.unacked,
                shelved: a.shelved,
                out_of_service: a.out_of_service,
                latched: a.latched.is_some(),
                unconfirmed: a.unconfirmed,
            })
            .collect()
    }

    /// Restores alarms saved by [`persisted`](Self::persisted) before a
    /// restart, before any reading. States of rules that no longer exist
    /// or no longer select their signal are skipped; returns how many were
    /// restored. Instance ids continue after the largest restored.
    pub fn restore(&mut self, saved: &[Persisted]) -> usize {
        let mut restored = 0;
        for p in saved {
            self.next_instance = self.next_instance.max(p.instance);
            let i = if p.key.rule == FLOOD {
                self.index.get(&p.key).copied()
            } else {
                self.signal(&p.key.source, &p.key.metric).and_then(|signal| {
                    self.signals[signal].0.iter().copied().find(|&i| self.alarms[i].key == p.key)
                })
            };
            let Some(i) = i else { continue };
            let rule = &self.rules.rules[self.alarms[i].rule];
            let a = &mut self.alarms[i];
            let output = if p.latched { None } else { p.active.map(Cond) };
            a.delay = Delay::new(rule.on_delay, rule.off_delay, output);
            a.latched = if p.latched { p.active } else { None };
            a.instance = p.instance;
            a.unacked = p.unacknowledged;
            a.unconfirmed = p.unconfirmed;
            a.shelved = p.shelved;
            a.out_of_service = p.out_of_service;
            restored += 1;
        }
        restored
    }

    /// The alarm-system KPIs per area at `now`.
    pub fn kpis(&self, now: u64) -> Vec<AreaKpis> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.areas
            .iter()
            .map(|area| {
                let window = ms(self.kpi.flood_window);
                let activations =
                    area.recent.iter().filter(|&&t| now.saturating_sub(t) < window).count();
                let mine = self
                    .alarms
                    .iter()
                    .filter(|a| !a.meta && self.rules.rules[a.rule].area == area.name);
                let chatter = ms(self.kpi.chatter_window);
                let chattering = mine
                    .clone()
                    .filter(|a| {
                        a.recent.iter().filter(|&&t| now.saturating_sub(t) < chatter).count()
                            >= self.kpi.chatter_count
                    })
                    .map(|a| a.key.clone())
                    .collect();
                let stale = mine
                    .clone()
                    .filter(|a| {
                        a.active_since
                            .is_some_and(|t| now.saturating_sub(t) > ms(self.kpi.stale_after))
                    })
                    .map(|a| a.key.clone())
                    .collect();
                let mut bad_actors: Vec<(AlarmKey, u64)> = mine
                    .filter(|a| a.activations > 0)
                    .map(|a| (a.key.clone(), a.activations))
                    .collect();
                bad_actors.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                bad_actors.truncate(10);
                AreaKpis {
                    area: area.name.clone(),
                    activations,
                    flood: activations > self.kpi.flood_count,
                    chattering,
                    stale,
                    bad_actors,
                }
            })
            .collect()
    }

    /// The state of an alarm.
    pub fn state(&self, key: &AlarmKey) -> Option<AlarmState> {
        self.index.get(key).map(|&i| {
            let a = &self.alarms[i];
            AlarmState {
                active: a.delay.output().map(|c| c.0).or(a.latched),
                unacknowledged: a.unacked,
                bad_input: a.bad.is_some(),
                instance: a.instance,
                shelved: a.shelved,
                out_of_service: a.out_of_service,
                latched: a.latched.is_some(),
                suppressed: self.suppressed(a),
                unconfirmed: a.unconfirmed,
            }
        })
    }

    /// The next event, in order.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// A batch of readings arrived at `now`.
    pub fn handle_batch(&mut self, batch: &Batch, now: u64) {
        for r in &batch.readings {
            if let Some(&c) =
                self.controls.get(batch.source.as_str()).and_then(|m| m.get(r.metric.as_str()))
            {
                let on = match &r.value {
                    Value::Bool(b) => Some(*b),
                    Value::F64(x) => Some(*x != 0.0),
                    Value::I64(x) => Some(*x != 0),
                    Value::U64(x) => Some(*x != 0),
                    _ => None,
                };
                if let (Some(on), Quality::Good | Quality::Uncertain) = (on, r.quality) {
                    self.control(c, on, now);
                }
            }
            let Some(signal) = self.signal(batch.source.as_str(), r.metric.as_str()) else {
                continue;
            };
            self.signals[signal].1 = match (&r.value, r.quality) {
                (_, Quality::Bad | Quality::Stale) => self.signals[signal].1,
                (Value::Bool(b), _) => Some(*b),
                (Value::F64(x), _) => Some(*x != 0.0),
                (Value::I64(x), _) => Some(*x != 0),
                (Value::U64(x), _) => Some(*x != 0),
                _ => self.signals[signal].1,
            };
            for j in 0..self.signals[signal].0.len() {
                let i = self.signals[signal].0[j];
                if self.alarms[i].out_of_service {
                    continue;
                }
                let rule = &self.rules.rules[self.alarms[i].rule];
                let number = r.value.as_f64();
                // Bad input first: it freezes the alarm. (Stale and
                // bad-quality rules watch the input itself: never frozen.)
                let numeric = matches!(
                    rule.kind,
                    Kind::Limit { .. }
                        | Kind::RateOfChange { .. }
                        | Kind::Deviation { .. }
                        | Kind::Flatline { .. }
                );
                let bad = match (&rule.kind, r.quality, number) {
                    (Kind::Stale { .. } | Kind::BadQuality, _, _) => None,
                    (_, Quality::Bad, _) => Some("bad quality".to_owned()),
                    (_, Quality::Stale, _) => Some("stale: its source is offline".to_owned()),
                    (_, _, None) if numeric => Some(format!("not a number: {:?}", r.value)),
                    (_, _, Some(x)) if numeric && !x.is_finite() => Some(format!("{x}")),
                    (Kind::Limit { range: Some((lo, hi)), .. }, _, Some(x))
                        if x < *lo || x > *hi =>
                    {
                        Some(format!("{x} is outside the instrument range [{lo}, {hi}]"))
                    }
                    (Kind::Discrete { .. }, _, None) => {
                        Some(format!("not a boolean: {:?}", r.value))
                    }
                    _ => None,
                };
                self.alarms[i].last_seen = now;
                self.alarms[i].last_value = number;
                if let Some(reason) = bad {
                    self.set_bad(i, reason, now);
                    continue;
                }
                let t = r.timestamp.unix_ms();
                let x = number.unwrap_or(0.0);
                let a = &mut self.alarms[i];
                let active = a.delay.output().is_some();
                let on = |holds: bool| holds.then_some(Condition::On);
                let raw = match (&rule.kind, &mut a.detector) {
                    (Kind::Limit { limits, .. }, _) => {
                        let current = a.delay.output().and_then(|c| match c.0 {
                            Condition::Level(l) => Some(l),
                            Condition::On => None,
                        });
                        limits.evaluate(current, x).map(Condition::Level)
                    }
                    (Kind::Discrete { alarm_when }, _) => on((x != 0.0) == *alarm_when),
                    (Kind::BadQuality, _) => on(matches!(r.quality, Quality::Bad | Quality::Stale)),
                    // Any sample ends silence.
                    (Kind::Stale { .. }, _) => None,
                    (_, Some(Detector::Rate(d))) => on(d.update(t, x)),
                    (_, Some(Detector::Deviation(d))) => on(d.update(t, x, active)),
                    (_, Some(Detector::Flatline(d))) => on(d.update(t, x)),
                    (_, None) => None,
                };
                self.set_good(i, now);
                self.feed(i, raw.map(Cond), now);
            }
        }
    }

    /// A batch of readings replayed from an edge node's store (Sparkplug
    /// `is_historical`) arrived at `now`. Limit, discrete and bad-quality
    /// rules check each reading, in order, without delays; where the
    /// history enters or leaves a condition a [`Late`](EventKind::Late)
    /// event is journaled, never annunciated. The live state (active,
    /// acknowledged, stale timers, detectors) is left as it is: what
    /// happened while the node was offline is for the record, and the
    /// node's live data says what is true now.
    pub fn handle_historical(&mut self, batch: &Batch, now: u64) {
        for r in &batch.readings {
            let Some(signal) = self.signal(batch.source.as_str(), r.metric.as_str()) else {
                continue;
            };
            for j in 0..self.signals[signal].0.len() {
                let i = self.signals[signal].0[j];
                let a = &self.alarms[i];
                if a.out_of_service {
                    continue;
                }
                let rule = &self.rules.rules[a.rule];
                let number = r.value.as_f64();
                let good = matches!(r.quality, Quality::Good | Quality::Uncertain);
                let condition = match (&rule.kind, number) {
                    (Kind::BadQuality, _) => (!good).then_some(Condition::On),
                    // Bad input says nothing about the process.
                    _ if !good => continue,
                    (Kind::Limit { limits, range }, Some(x)) if x.is_finite() => {
                        if range.is_some_and(|(lo, hi)| x < lo || x > hi) {
                            continue;
                        }
                        let current = match a.late {
                            Some(Condition::Level(l)) => Some(l),
                            _ => None,
                        };
                        limits.evaluate(current, x).map(Condition::Level)
                    }
                    (Kind::Discrete { alarm_when }, Some(x)) => {
                        ((x != 0.0) == *alarm_when).then_some(Condition::On)
                    }
                    _ => continue,
                };
                if condition == a.late {
                    continue;
                }
                self.alarms[i].late = condition;
                let a = &self.alarms[i];
                let kind =
                    EventKind::Late { condition, value: number, sampled: r.timestamp.unix_ms() };
                self.events.push_back(Event {
                    key: a.key.clone(),
                    area: self.rules.rules[a.rule].area.clone(),
                    instance: a.instance,
                    time: now,
                    kind,
                    annunciate: false,
                });
            }
        }
    }

    /// The time from [`next_timeout`](Self::next_timeout) has come (or
    /// any later time).
    pub fn handle_timeout(&mut self, now: u64) {
        self.end_floods(now);
        for i in 0..self.alarms.len() {
            if let Some(Some(until)) = self.alarms[i].shelved
                && until <= now
            {
                self.alarms[i].shelved = None;
                self.emit(i, now, EventKind::Unshelved { user: None });
            }
            if self.alarms[i].out_of_service {
                continue;
            }
            if let Kind::Stale { interval, factor } = self.rules.rules[self.alarms[i].rule].kind {
                let window = stale_window(interval, factor);
                let silent = now.saturating_sub(self.alarms[i].last_seen) >= window;
                if silent && self.alarms[i].delay.output().is_none() {
                    self.feed(i, Some(Cond(Condition::On)), now);
                }
            }
            // A frozen alarm's pending change waits for good input.
            if self.alarms[i].bad.is_some() {
                continue;
            }
            let prev = self.alarms[i].delay.output();
            if let Some(c) = self.alarms[i].delay.poll(now) {
                self.changed(i, prev, c, now);
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn next_timeout(&self) -> Option<u64> {
        let window = u64::try_from(self.kpi.flood_window.as_millis()).unwrap_or(u64::MAX);
        let floods = self
            .areas
            .iter()
            .filter(|a| self.alarms[a.flood].delay.output().is_some())
            .filter_map(|a| a.recent.front().map(|&t| t.saturating_add(window)))
            .min();
        let alarms = self
            .alarms
            .iter()
            .filter_map(|a| {
                let stale = match self.rules.rules[a.rule].kind {
                    Kind::Stale { interval, factor } if a.delay.output().is_none() => {
                        Some(a.last_seen.saturating_add(stale_window(interval, factor)))
                    }
                    _ => None,
                };
                let shelve = a.shelved.flatten();
                [stale, a.delay.next_timeout(), shelve].into_iter().flatten().min()
            })
            .min();
        [floods, alarms].into_iter().flatten().min()
    }

    /// An operator's command.
    pub fn handle_command(&mut self, cmd: Command, now: u64) -> Result<(), CommandError> {
        let key = match &cmd {
            Command::Acknowledge { key, .. }
            | Command::Confirm { key, .. }
            | Command::Shelve { key, .. }
            | Command::Unshelve { key, .. }
            | Command::ResetLatch { key, .. }
            | Command::OutOfService { key, .. }
            | Command::InService { key, .. } => key.clone(),
        };
        let &i = self.index.get(&key).ok_or_else(|| CommandError::Unknown(key.clone()))?;
        let not_now = |why| Err(CommandError::NotNow { key: key.clone(), why });
        match cmd {
            Command::Acknowledge { user, comment, .. } => {
                let a = &mut self.alarms[i];
                if !a.unacked {
                    return Err(CommandError::NotUnacknowledged(key));
                }
                a.unacked = false;
                a.unconfirmed = self.rules.rules[a.rule].confirm;
                let closed = a.delay.output().is_none() && a.latched.is_none() && !a.unconfirmed;
                self.emit(i, now, EventKind::Acknowledged { user, comment, closed });
            }
            Command::Confirm { user, comment, .. } => {
                let a = &mut self.alarms[i];
                if !a.unconfirmed {
                    return not_now(if a.unacked {
                        "acknowledge it first"
                    } else {
                        "it is not waiting for confirmation"
                    });
                }
                a.unconfirmed = false;
                let closed = a.delay.output().is_none() && a.latched.is_none();
                self.emit(i, now, EventKind::Confirmed { user, comment, closed });
            }
            Command::Shelve { user, comment, duration, .. } => {
                let max = self.rules.rules[self.alarms[i].rule].max_shelve;
                if duration.is_some_and(|d| d > max) {
                    return Err(CommandError::ShelveTooLong { key, max });
                }
                let until = duration
                    .map(|d| now.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)));
                // The event itself is annunciated: people see it shelved.
                self.emit(i, now, EventKind::Shelved { user, comment, until });
                self.alarms[i].shelved = Some(until);
            }
            Command::Unshelve { user, .. } => {
                if self.alarms[i].shelved.take().is_none() {
                    return not_now("it is not shelved");
                }
                self.emit(i, now, EventKind::Unshelved { user: Some(user) });
            }
            Command::ResetLatch { user, .. } => {
                if self.alarms[i].latched.take().is_none() {
                    return not_now("it is not latched, or its condition is still active");
                }
                self.emit(i, now, EventKind::LatchReset { user });
                self.returned(i, now);
            }
            Command::OutOfService { user, comment, .. } => {
                if self.alarms[i].out_of_service {
                    return not_now("it is out of service already");
                }
                self.emit(i, now, EventKind::OutOfService { user, comment });
                self.alarms[i].out_of_service = true;
            }
            Command::InService { user, .. } => {
                if !self.alarms[i].out_of_service {
                    return not_now("it is in service");
                }
                self.alarms[i].out_of_service = false;
                self.emit(i, now, EventKind::InService { user });
            }
        }
        Ok(())
    }

    /// The signal's number; its alarms are made on first sight. `None` for
    /// a signal no rule selects and no rule's `enabled_when` watches (kept
    /// in a bounded memory of such signals only), and for one refused by
    /// [`EngineLimits::max_alarms`].
    fn signal(&mut self, source: &str, metric: &str) -> Option<usize> {
        if let Some(&n) = self.by_signal.get(source).and_then(|m| m.get(metric)) {
            return Some(n);
        }
        if self.unselected.get(source).is_some_and(|m| m.contains(metric)) {
            return None;
        }
        // The rules are matched once per new signal.
        let selecting: Vec<usize> = (0..self.rules.rules.len())
            .filter(|&r| self.rules.rules[r].selects(source, metric))
            .collect();
        if selecting.is_empty() && !self.enablers.contains(metric) {
            if self.unselected_len >= self.limits.max_unselected {
                self.unselected.clear();
                self.unselected_len = 0;
            }
            self.unselected.entry(source.to_owned()).or_default().insert(metric.to_owned());
            self.unselected_len += 1;
            return None;
        }
        if self.alarms.len() + selecting.len() > self.limits.max_alarms {
            self.refused += 1;
            return None;
        }
        let mut ids = Vec::new();
        for r in selecting {
            let k = AlarmKey {
                rule: self.rules.rules[r].name.clone(),
                source: source.to_owned(),
                metric: metric.to_owned(),
            };
            let i = self.push_alarm(r, k, false);
            ids.push(i);
        }
        let n = self.signals.len();
        self.signals.push((ids, None));
        self.by_signal.entry(source.to_owned()).or_default().insert(metric.to_owned(), n);
        Some(n)
    }

    /// Sets the bounds on what remote input can make the engine hold.
    pub fn set_limits(&mut self, limits: EngineLimits) {
        self.limits = limits;
    }

    /// Readings ignored because their signal would have passed
    /// [`EngineLimits::max_alarms`].
    pub fn refused_readings(&self) -> u64 {
        self.refused
    }

    /// Signals held: selected by a rule or watched by one's `enabled_when`
    /// (each with its alarms), and those no rule selects remembered to skip
    /// matching (at most [`EngineLimits::max_unselected`]).
    pub fn signal_counts(&self) -> (usize, usize) {
        (self.signals.len(), self.unselected_len)
    }

    /// A new alarm of rule `r`.
    fn push_alarm(&mut self, r: usize, key: AlarmKey, meta: bool) -> usize {
        let rule = &self.rules.rules[r];
        let i = self.alarms.len();
        self.alarms.push(Alarm {
            rule: r,
            key: key.clone(),
            delay: Delay::new(rule.on_delay, rule.off_delay, None),
            unacked: false,
            unconfirmed: false,
            late: None,
            bad: None,
            instance: 0,
            last_seen: 0,
            last_value: None,
            shelved: None,
            out_of_service: false,
            latched: None,
            detector: match rule.kind {
                Kind::RateOfChange { limit_per_s, window } => {
                    Some(Detector::Rate(RateOfChange::new(limit_per_s, window)))
                }
                Kind::Deviation { limit, half_life, warmup } => {
                    Some(Detector::Deviation(Deviation::new(limit, half_life, warmup)))
                }
                Kind::Flatline { window, tolerance, min_samples } => {
                    Some(Detector::Flatline(Flatline::new(window, tolerance, min_samples)))
                }
                _ => None,
            },
            meta,
            recent: VecDeque::new(),
            activations: 0,
            active_since: None,
            control: None,
        });
        if let Some(e) = &self.rules.rules[r].enabled_when {
            let (is, metric) = (e.is, e.metric.clone());
            let source = e.source.replace("{source}", &key.source);
            let known = self
                .by_signal
                .get(&source)
                .and_then(|m| m.get(&metric))
                .and_then(|&n| self.signals[n].1);
            let by_metric = self.controls.entry(source).or_default();
            let c = match by_metric.get(&metric) {
                Some(&c) => c,
                None => {
                    let c = self.control_state.len();
                    self.control_state.push((known, Vec::new()));
                    by_metric.insert(metric, c);
                    c
                }
            };
            self.control_state[c].1.push(i);
            self.alarms[i].control = Some((c, is));
        }
        self.index.insert(key, i);
        i
    }

    /// Whether an alarm is suppressed by design now (an enabling signal
    /// not yet seen suppresses nothing).
    fn suppressed(&self, a: &Alarm) -> bool {
        a.control.is_some_and(|(c, is)| self.control_state[c].0 == Some(!is))
    }

    /// An enabling signal's new state: suppress or release its alarms.
    fn control(&mut self, c: usize, on: bool, now: u64) {
        let before = self.control_state[c].0;
        if before == Some(on) {
            return;
        }
        self.control_state[c].0 = Some(on);
        for j in 0..self.control_state[c].1.len() {
            let i = self.control_state[c].1[j];
            let Some((_, is)) = self.alarms[i].control else { continue };
            let was = before == Some(!is);
            let now_suppressed = on != is;
            if was != now_suppressed {
                let kind =
                    if now_suppressed { EventKind::Suppressed } else { EventKind::Unsuppressed };
                // The change itself is for the journal and the displays.
                let a = &self.alarms[i];
                self.events.push_back(Event {
                    key: a.key.clone(),
                    area: self.rules.rules[a.rule].area.clone(),
                    instance: a.instance,
                    time: now,
                    kind,
                    annunciate: false,
                });
            }
        }
    }

    fn feed(&mut self, i: usize, raw: Option<Cond>, now: u64) {
        let prev = self.alarms[i].delay.output();
        if let Some(c) = self.alarms[i].delay.update(raw, now) {
            self.changed(i, prev, c, now);
        }
    }

    /// The delayed condition changed from `prev` to `c`.
    fn changed(&mut self, i: usize, prev: Option<Cond>, c: Option<Cond>, now: u64) {
        let rule = &self.rules.rules[self.alarms[i].rule];
        let priority = |cond: Condition| match (cond, &rule.kind) {
            (Condition::Level(l), Kind::Limit { limits, .. }) => {
                limits.level(l).map_or(rule.priority, |lv| lv.priority)
            }
            _ => rule.priority,
        };
        let value = self.alarms[i].last_value;
        let severity = |c: Option<Cond>| match c {
            None => 0,
            Some(Cond(Condition::On)) => 1,
            Some(Cond(Condition::Level(l))) => l.severity(),
        };
        match (prev, c) {
            (None, Some(Cond(cond))) if self.alarms[i].latched.is_some() => {
                // Active again before the reset: the same instance.
                let was = self.alarms[i].latched.take().map(Cond);
                if severity(c) > severity(was) {
                    self.alarms[i].unacked = true;
                }
                let kind = EventKind::Changed { condition: cond, priority: priority(cond), value };
                self.emit(i, now, kind);
            }
            (None, Some(Cond(cond))) => {
                // Each activation is a new instance.
                self.next_instance += 1;
                self.alarms[i].instance = self.next_instance;
                self.alarms[i].unacked = true;
                self.alarms[i].unconfirmed = false;
                let kind = EventKind::Raised { condition: cond, priority: priority(cond), value };
                self.alarms[i].active_since = Some(now);
                self.emit(i, now, kind);
                if !self.alarms[i].meta {
                    self.count_activation(i, now);
                }
            }
            (Some(_), Some(Cond(cond))) => {
                // Worse needs acknowledging again; better does not.
                if severity(c) > severity(prev) {
                    self.alarms[i].unacked = true;
                }
                let kind = EventKind::Changed { condition: cond, priority: priority(cond), value };
                self.emit(i, now, kind);
            }
            (prev, None) => {
                if rule.latch {
                    // Stays active for the operator until reset.
                    self.alarms[i].latched = prev.map(|c| c.0);
                    return;
                }
                self.returned(i, now);
            }
        }
    }

    /// An activation, for the KPIs; raises the area's flood meta-alarm
    /// when the count passes the threshold.
    fn count_activation(&mut self, i: usize, now: u64) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let (chatter, window) = (ms(self.kpi.chatter_window), ms(self.kpi.flood_window));
        let a = &mut self.alarms[i];
        a.activations += 1;
        a.recent.push_back(now);
        while a.recent.front().is_some_and(|&t| now.saturating_sub(t) >= chatter) {
            a.recent.pop_front();
        }
        let area_name = &self.rules.rules[a.rule].area;
        let Some(area) = self.areas.iter_mut().find(|x| &x.name == area_name) else { return };
        area.recent.push_back(now);
        while area.recent.front().is_some_and(|&t| now.saturating_sub(t) >= window) {
            area.recent.pop_front();
        }
        let (flood, count) = (area.flood, area.recent.len());
        if count > self.kpi.flood_count && self.alarms[flood].delay.output().is_none() {
            self.alarms[flood].last_value = Some(count as f64);
            self.feed(flood, Some(Cond(Condition::On)), now);
        }
    }

    /// Ends floods whose window has slid below the threshold.
    fn end_floods(&mut self, now: u64) {
        let window = u64::try_from(self.kpi.flood_window.as_millis()).unwrap_or(u64::MAX);
        for k in 0..self.areas.len() {
            let area = &mut self.areas[k];
            while area.recent.front().is_some_and(|&t| now.saturating_sub(t) >= window) {
                area.recent.pop_front();
            }
            let (flood, count) = (area.flood, area.recent.len());
            if count <= self.kpi.flood_count && self.alarms[flood].delay.output().is_some() {
                self.alarms[flood].last_value = Some(count as f64);
                self.feed(flood, None, now);
            }
        }
    }

    /// The condition is back to normal (and no latch holds it).
    fn returned(&mut self, i: usize, now: u64) {
        self.alarms[i].active_since = None;
        let closed = !self.alarms[i].unacked && !self.alarms[i].unconfirmed;
        self.emit(i, now, EventKind::ReturnedToNormal { closed });
        if self.alarms[i].shelved == Some(None) {
            self.alarms[i].shelved = None;
            self.emit(i, now, EventKind::Unshelved { user: None });
        }
    }

    fn set_bad(&mut self, i: usize, reason: String, now: u64) {
        if self.alarms[i].bad.as_deref() != Some(reason.as_str()) {
            self.alarms[i].bad = Some(reason.clone());
            self.emit(i, now, EventKind::BadInput { reason });
        }
    }

    fn set_good(&mut self, i: usize, now: u64) {
        if self.alarms[i].bad.take().is_some() {
            self.emit(i, now, EventKind::InputRestored);
        }
    }

    fn emit(&mut self, i: usize, time: u64, kind: EventKind) {
        let a = &self.alarms[i];
        let annunciate = a.shelved.is_none() && !a.out_of_service && !self.suppressed(a);
        self.events.push_back(Event {
            key: a.key.clone(),
            area: self.rules.rules[a.rule].area.clone(),
            instance: a.instance,
            time,
            kind,
            annunciate,
        });
    }
}

fn stale_window(interval: Duration, factor: u32) -> u64 {
    u64::try_from(interval.saturating_mul(factor).as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use shopfloor_schemas::{Reading, Timestamp};

    use super::*;
    use LevelKind::{High as H, HighHigh as HH};

    const RULES: &str = r#"
[[rule]]
name = "pressure"
source = "press-*"
metric = "pressure"
priority = 500
[rule.limit]
hh = { limit = 180.0, deadband = 2.0, priority = 900 }
h = { limit = 160.0, deadband = 2.0 }
range = [0.0, 250.0]

[[rule]]
name = "slow"
source = "press-*"
metric = "temp"
on_delay_s = 2
off_delay_s = 5
limit = { h = { limit = 80.0 } }

[[rule]]
name = "silent"
source = "press-*"
metric = "temp"
stale = { interval_s = 1.0, factor = 3 }

[[rule]]
name = "door"
source = "press-*"
metric = "door"
discrete = { alarm_when = true }
latch = true
max_shelve_h = 1

[[rule]]
name = "hot-when-running"
source = "press-*"
metric = "bearing"
limit = { h = { limit = 90.0 } }
enabled_when = { metric = "running", is = true }

[[rule]]
name = "ramp"
source = "press-*"
metric = "oil"
rate = { limit_per_s = 2.0, window_s = 10.0 }

[[rule]]
name = "level"
source = "press-*"
metric = "level"
limit = { h = { limit = 10.0 } }
confirm = true
"#;

    fn engine() -> Engine {
        Engine::new(RuleSet::from_toml(RULES, "test.toml").unwrap())
    }

    fn key(rule: &str, metric: &str) -> AlarmKey {
        AlarmKey { rule: rule.into(), source: "press-1".into(), metric: metric.into() }
    }

    fn send(e: &mut Engine, metric: &str, value: f64, quality: Quality, now: u64) {
        let b = Batch::new("press-1")
            .with(Reading::new(metric, Timestamp::from_unix_ms(now), value).with_quality(quality));
        e.handle_batch(&b, now);
    }

    fn events(e: &mut Engine) -> Vec<(String, u64, EventKind)> {
        std::iter::from_fn(|| e.poll_event())
            .map(|ev| (ev.key.rule, ev.instance, ev.kind))
            .collect()
    }

    fn ack(e: &mut Engine, k: AlarmKey, now: u64) -> Result<(), CommandError> {
        e.handle_command(
            Command::Acknowledge { key: k, user: "op".into(), comment: "seen".into() },
            now,
        )
    }

    fn send_history(e: &mut Engine, metric: &str, value: f64, quality: Quality, at: u64, now: u64) {
        let b = Batch::new("press-1")
            .with(Reading::new(metric, Timestamp::from_unix_ms(at), value).with_quality(quality));
        e.handle_historical(&b, now);
    }

    fn confirm(e: &mut Engine, k: AlarmKey, now: u64) -> Result<(), CommandError> {
        e.handle_command(
            Command::Confirm { key: k, user: "op".into(), comment: "fixed".into() },
            now,
        )
    }

    #[test]
    fn a_rule_with_confirm_closes_only_when_confirmed() {
        let mut e = engine();
        let k = key("level", "level");
        // Acknowledged while active, confirmed while active: closes on return.
        send(&mut e, "level", 12.0, Quality::Good, 0);
        assert_eq!(
            confirm(&mut e, k.clone(), 1),
            Err(CommandError::NotNow { key: k.clone(), why: "acknowledge it first" })
        );
        ack(&mut e, k.clone(), 2).unwrap();
        assert!(e.state(&k).unwrap().unconfirmed);
        confirm(&mut e, k.clone(), 3).unwrap();
        send(&mut e, "level", 5.0, Quality::Good, 4);
        let ev = events(&mut e);
        assert!(matches!(ev[1].2, EventKind::Acknowledged { closed: false, .. }));
        assert!(
            matches!(&ev[2].2, EventKind::Confirmed { user, comment, closed: false } if user == "op" && comment == "fixed")
        );
        assert_eq!(ev[3].2, EventKind::ReturnedToNormal { closed: true });
        assert!(e.persisted().is_empty(), "nothing left to remember");

        // Returned first: acknowledged, still open; confirmed, closed.
        send(&mut e, "level", 12.0, Quality::Good, 10);
        send(&mut e, "level", 5.0, Quality::Good, 11);
        ack(&mut e, k.clone(), 12).unwrap();
        let ev = events(&mut e);
        assert_eq!(ev[1].2, EventKind::ReturnedToNormal { closed: false });
        assert!(matches!(ev[2].2, EventKind::Acknowledged { closed: false, .. }));
        // Waiting for confirmation survives a restart.
        let saved = e.persisted();
        assert_eq!(saved.len(), 1);
        assert!(saved[0].unconfirmed && !saved[0].unacknowledged && saved[0].active.is_none());
        let mut e = engine();
        assert_eq!(e.restore(&saved), 1);
        assert!(e.state(&k).unwrap().unconfirmed);
        confirm(&mut e, k.clone(), 13).unwrap();
        assert!(matches!(&events(&mut e)[..], [(_, 2, EventKind::Confirmed { closed: true, .. })]));
        assert_eq!(
            confirm(&mut e, k.clone(), 14),
            Err(CommandError::NotNow { key: k, why: "it is not waiting for confirmation" })
        );
        // A rule without `confirm` closes on acknowledgement and refuses it.
        send(&mut e, "pressure", 165.0, Quality::Good, 20);
        ack(&mut e, key("pressure", "pressure"), 21).unwrap();
        assert!(!e.state(&key("pressure", "pressure")).unwrap().unconfirmed);
        assert!(confirm(&mut e, key("pressure", "pressure"), 22).is_err());
    }

    #[test]
    fn history_is_journaled_as_late_and_never_changes_the_live_state() {
        let mut e = engine();
        let k = key("pressure", "pressure");
        send(&mut e, "pressure", 100.0, Quality::Good, 1_000);
        // Replayed after a reconnect: an excursion an hour ago.
        for (at, v) in
            [(10, 100.0), (20, 165.0), (30, 170.0), (40, 185.0), (50, 120.0), (60, 110.0)]
        {
            send_history(&mut e, "pressure", v, Quality::Good, at, 2_000);
        }
        // Bad history says nothing; a rate rule ignores history.
        send_history(&mut e, "pressure", 300.0, Quality::Bad, 70, 2_000);
        send_history(&mut e, "oil", 0.0, Quality::Good, 70, 2_000);
        send_history(&mut e, "oil", 1_000.0, Quality::Good, 71, 2_000);
        let all: Vec<Event> = std::iter::from_fn(|| e.poll_event()).collect();
        assert!(all.iter().all(|ev| !ev.annunciate && ev.time == 2_000 && ev.key == k));
        let late: Vec<(Option<Condition>, u64)> = all
            .iter()
            .map(|ev| match ev.kind {
                EventKind::Late { condition, sampled, .. } => (condition, sampled),
                ref other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            late,
            [(Some(Condition::Level(H)), 20), (Some(Condition::Level(HH)), 40), (None, 50),]
        );
        let s = e.state(&k).unwrap();
        assert!(s.active.is_none() && !s.unacknowledged && s.instance == 0);
        // Live data still raises, and history while active changes nothing live.
        send(&mut e, "pressure", 165.0, Quality::Good, 3_000);
        send_history(&mut e, "pressure", 100.0, Quality::Good, 2_500, 3_001);
        let ev = events(&mut e);
        assert!(matches!(ev[0].2, EventKind::Raised { .. }));
        assert_eq!(ev.len(), 1, "normal history after normal history: no event");
        assert_eq!(e.state(&k).unwrap().active, Some(Condition::Level(H)));
    }

    #[test]
    fn raise_acknowledge_return() {
        let mut e = engine();
        send(&mut e, "pressure", 100.0, Quality::Good, 0);
        assert_eq!(events(&mut e), []);
        send(&mut e, "pressure", 185.0, Quality::Good, 10);
        let raised = EventKind::Raised {
            condition: Condition::Level(HH),
            priority: 900,
            value: Some(185.0),
        };
        assert_eq!(events(&mut e), [("pressure".into(), 1, raised)]);
        ack(&mut e, key("pressure", "pressure"), 20).unwrap();
        assert!(matches!(
            &events(&mut e)[..],
            [(_, 1, EventKind::Acknowledged { closed: false, .. })]
        ));
        assert_eq!(
            ack(&mut e, key("pressure", "pressure"), 21),
            Err(CommandError::NotUnacknowledged(key("pressure", "pressure")))
        );
        // Better: no new acknowledgement needed.
        send(&mut e, "pressure", 170.0, Quality::Good, 30);
        assert!(matches!(
            &events(&mut e)[..],
            [(_, 1, EventKind::Changed { condition: Condition::Level(H), priority: 500, .. })]
        ));
        assert!(!e.state(&key("pressure", "pressure")).unwrap().unacknowledged);
        send(&mut e, "pressure", 100.0, Quality::Good, 40);
        assert_eq!(
            events(&mut e),
            [("pressure".into(), 1, EventKind::ReturnedToNormal { closed: true })]
        );
        // The next activation is a new instance.
        send(&mut e, "pressure", 165.0, Quality::Good, 50);
        assert!(matches!(&events(&mut e)[..], [(_, 2, EventKind::Raised { .. })]));
    }

    #[test]
    fn return_to_normal_unacknowledged_waits_for_the_acknowledgement() {
        let mut e = engine();
        send(&mut e, "pressure", 165.0, Quality::Good, 0);
        send(&mut e, "pressure", 100.0, Quality::Good, 1);
        let ev = events(&mut e);
        assert_eq!(ev[1].2, EventKind::ReturnedToNormal { closed: false });
        assert!(e.state(&key("pressure", "pressure")).unwrap().unacknowledged);
        ack(&mut e, key("pressure", "pressure"), 2).unwrap();
        assert!(matches!(
            &events(&mut e)[..],
            [(_, 1, EventKind::Acknowledged { closed: true, .. })]
        ));
    }

    #[test]
    fn bad_input_freezes_the_alarm_and_is_never_a_return_to_normal() {
        let mut e = engine();
        send(&mut e, "pressure", 165.0, Quality::Good, 0);
        events(&mut e);
        send(&mut e, "pressure", 0.0, Quality::Bad, 10);
        assert_eq!(
            events(&mut e),
            [("pressure".into(), 1, EventKind::BadInput { reason: "bad quality".into() })]
        );
        let s = e.state(&key("pressure", "pressure")).unwrap();
        assert_eq!((s.active, s.bad_input), (Some(Condition::Level(H)), true));
        e.handle_timeout(1_000_000);
        send(&mut e, "pressure", f64::NAN, Quality::Good, 20);
        send(&mut e, "pressure", 300.0, Quality::Good, 30);
        let ev = events(&mut e);
        assert!(ev.iter().all(|x| matches!(x.2, EventKind::BadInput { .. })), "{ev:?}");
        assert!(
            matches!(&ev[1].2, EventKind::BadInput { reason } if reason.contains("instrument range"))
        );
        // Good input again: restored, then the condition's own verdict.
        send(&mut e, "pressure", 100.0, Quality::Good, 40);
        assert_eq!(
            events(&mut e).into_iter().map(|x| x.2).collect::<Vec<_>>(),
            [EventKind::InputRestored, EventKind::ReturnedToNormal { closed: false }]
        );
    }

    #[test]
    fn delays_run_on_the_timeout() {
        let mut e = engine();
        send(&mut e, "temp", 90.0, Quality::Good, 0);
        assert_eq!(events(&mut e), []);
        assert_eq!(e.next_timeout(), Some(2000));
        e.handle_timeout(2000);
        assert!(matches!(&events(&mut e)[..], [(r, 1, EventKind::Raised { .. })] if r == "slow"));
        send(&mut e, "temp", 50.0, Quality::Good, 2500);
        e.handle_timeout(3000);
        assert_eq!(events(&mut e), []);
        assert_eq!(e.next_timeout(), Some(5500), "stale at 2500 + 3000, the off-delay at 7500");
        e.handle_timeout(7500);
        let ev = events(&mut e);
        assert!(
            ev.iter()
                .any(|x| x.0 == "slow" && x.2 == EventKind::ReturnedToNormal { closed: false }),
            "{ev:?}"
        );
    }

    #[test]
    fn silence_raises_stale_on_the_timer_and_a_sample_clears_it() {
        let mut e = engine();
        send(&mut e, "temp", 20.0, Quality::Good, 0);
        assert_eq!(e.next_timeout(), Some(3000));
        e.handle_timeout(2999);
        assert_eq!(events(&mut e), []);
        e.handle_timeout(3000);
        let raised =
            EventKind::Raised { condition: Condition::On, priority: 500, value: Some(20.0) };
        assert_eq!(events(&mut e), [("silent".into(), 1, raised)]);
        send(&mut e, "temp", 21.0, Quality::Good, 3500);
        assert_eq!(
            events(&mut e),
            [("silent".into(), 1, EventKind::ReturnedToNormal { closed: false })]
        );
    }

    fn kinds(e: &mut Engine) -> Vec<(EventKind, bool)> {
        std::iter::from_fn(|| e.poll_event()).map(|ev| (ev.kind, ev.annunciate)).collect()
    }

    fn door(e: &mut Engine, open: bool, now: u64) {
        let b =
            Batch::new("press-1").with(Reading::new("door", Timestamp::from_unix_ms(now), open));
        e.handle_batch(&b, now);
    }

    #[test]
    fn a_latched_alarm_stays_active_until_reset_and_reset_only_when_normal() {
        let mut e = engine();
        let k = key("door", "door");
        door(&mut e, true, 0);
        door(&mut e, false, 10);
        assert_eq!(kinds(&mut e).len(), 1, "raised, and no return: latched");
        let s = e.state(&k).unwrap();
        assert_eq!((s.active, s.latched), (Some(Condition::On), true));
        // Active again before the reset: the same instance.
        door(&mut e, true, 20);
        assert!(matches!(&kinds(&mut e)[..], [(EventKind::Changed { .. }, true)]));
        let reset = |e: &mut Engine| {
            e.handle_command(Command::ResetLatch { key: k.clone(), user: "op".into() }, 30)
        };
        assert!(matches!(reset(&mut e), Err(CommandError::NotNow { .. })), "still open: no reset");
        door(&mut e, false, 40);
        reset(&mut e).unwrap();
        assert_eq!(
            kinds(&mut e),
            [
                (EventKind::LatchReset { user: "op".into() }, true),
                (EventKind::ReturnedToNormal { closed: false }, true)
            ]
        );
        assert_eq!(e.state(&k).unwrap().active, None);
    }

    #[test]
    fn shelving_silences_annunciation_one_shot_or_for_a_time() {
        let mut e = engine();
        let k = key("pressure", "pressure");
        send(&mut e, "pressure", 100.0, Quality::Good, 0);
        let shelve = |e: &mut Engine, d: Option<Duration>, now| {
            e.handle_command(
                Command::Shelve {
                    key: k.clone(),
                    user: "op".into(),
                    comment: "valve work".into(),
                    duration: d,
                },
                now,
            )
        };
        // One-shot: ends when the condition next returns to normal.
        shelve(&mut e, None, 1).unwrap();
        send(&mut e, "pressure", 165.0, Quality::Good, 2);
        send(&mut e, "pressure", 100.0, Quality::Good, 3);
        let k1 = kinds(&mut e);
        assert_eq!(
            k1[0],
            (
                EventKind::Shelved { user: "op".into(), comment: "valve work".into(), until: None },
                true
            )
        );
        assert!(matches!(k1[1], (EventKind::Raised { .. }, false)), "not annunciated: {k1:?}");
        assert!(matches!(k1[2], (EventKind::ReturnedToNormal { .. }, false)));
        assert_eq!(k1[3], (EventKind::Unshelved { user: None }, true));
        // Timed: at most the rule's maximum (8 h by default), ends by timer.
        assert!(matches!(
            shelve(&mut e, Some(Duration::from_secs(9 * 3600)), 4),
            Err(CommandError::ShelveTooLong { .. })
        ));
        shelve(&mut e, Some(Duration::from_secs(60)), 1000).unwrap();
        assert_eq!(e.next_timeout(), Some(61_000));
        send(&mut e, "pressure", 165.0, Quality::Good, 2000);
        e.handle_timeout(61_000);
        let k2 = kinds(&mut e);
        assert!(matches!(k2[1], (EventKind::Raised { .. }, false)));
        assert_eq!(k2[2], (EventKind::Unshelved { user: None }, true));
        assert!(matches!(
            e.handle_command(Command::Unshelve { key: k.clone(), user: "op".into() }, 62_000),
            Err(CommandError::NotNow { .. })
        ));
    }

    #[test]
    fn a_rate_rule_judges_in_event_time() {
        let mut e = engine();
        // Arrival time is irrelevant: the readings carry their own times.
        let at = |e: &mut Engine, t: u64, x: f64| {
            let b = Batch::new("press-1").with(Reading::new("oil", Timestamp::from_unix_ms(t), x));
            e.handle_batch(&b, 999_999);
        };
        at(&mut e, 0, 0.0);
        at(&mut e, 1000, 1.0);
        assert_eq!(kinds(&mut e), []);
        at(&mut e, 2000, 10.0);
        assert!(matches!(
            &kinds(&mut e)[..],
            [(EventKind::Raised { condition: Condition::On, value: Some(10.0), .. }, true)]
        ));
        // NaN is bad input, not a rate.
        at(&mut e, 2500, f64::NAN);
        assert!(matches!(&kinds(&mut e)[..], [(EventKind::BadInput { .. }, true)]));
        at(&mut e, 15_000, 10.0);
        assert_eq!(
            kinds(&mut e).into_iter().map(|k| k.0).collect::<Vec<_>>(),
            [EventKind::InputRestored, EventKind::ReturnedToNormal { closed: false }]
        );
    }

    #[test]
    fn the_kpis_and_the_flood_meta_alarm() {
        let mut e = engine();
        let k = key("pressure", "pressure");
        // 11 activations in 11 s: a flood (more than 10 in 10 min), and
        // chattering (3 or more in 60 s).
        for n in 0..11 {
            send(&mut e, "pressure", 165.0, Quality::Good, n * 1000);
            send(&mut e, "pressure", 100.0, Quality::Good, n * 1000 + 500);
        }
        let floods: Vec<Event> =
            std::iter::from_fn(|| e.poll_event()).filter(|ev| ev.key.rule == FLOOD).collect();
        assert_eq!(floods.len(), 1, "{floods:?}");
        assert_eq!(floods[0].key.source, "plant");
        assert!(matches!(
            floods[0].kind,
            EventKind::Raised { priority: 800, value: Some(11.0), .. }
        ));
        assert_eq!(floods[0].time, 10_000, "raised by the 11th activation");
        let kpis = e.kpis(11_000);
        assert_eq!(kpis.len(), 1);
        let plant = &kpis[0];
        assert_eq!((plant.area.as_str(), plant.activations, plant.flood), ("plant", 11, true));
        assert_eq!(plant.chattering, std::slice::from_ref(&k));
        assert_eq!(plant.bad_actors, [(k.clone(), 11)]);
        assert_eq!(plant.stale, []);
        // The flood ends when the window slides past the first activations.
        assert_eq!(e.next_timeout(), Some(600_000));
        e.handle_timeout(600_000);
        let rtn: Vec<EventKind> = std::iter::from_fn(|| e.poll_event())
            .filter(|ev| ev.key.rule == FLOOD)
            .map(|ev| ev.kind)
            .collect();
        assert_eq!(rtn, [EventKind::ReturnedToNormal { closed: false }]);
        assert!(!e.kpis(600_000)[0].flood);
        // An alarm active for more than 24 h is stale.
        send(&mut e, "pressure", 170.0, Quality::Good, 700_000);
        assert_eq!(e.kpis(700_000 + 24 * 3_600_000 + 1)[0].stale, [k]);
    }

    #[test]
    fn suppressed_by_design_while_the_machine_is_stopped() {
        let mut e = engine();
        let k = key("hot-when-running", "bearing");
        let running = |e: &mut Engine, on: bool, now: u64| {
            let b = Batch::new("press-1").with(Reading::new(
                "running",
                Timestamp::from_unix_ms(now),
                on,
            ));
            e.handle_batch(&b, now);
        };
        // Stopped before the alarm exists (reported by exception, once).
        running(&mut e, false, 0);
        send(&mut e, "bearing", 95.0, Quality::Good, 10);
        let ev = kinds(&mut e);
        assert!(
            matches!(&ev[..], [(EventKind::Raised { .. }, false)]),
            "evaluated, not annunciated: {ev:?}"
        );
        assert!(e.state(&k).unwrap().suppressed);
        // Started: released (the change is journaled, not annunciated).
        running(&mut e, true, 20);
        assert_eq!(kinds(&mut e), [(EventKind::Unsuppressed, false)]);
        send(&mut e, "bearing", 80.0, Quality::Good, 30);
        send(&mut e, "bearing", 95.0, Quality::Good, 40);
        let ev = kinds(&mut e);
        assert!(matches!(ev[1], (EventKind::Raised { .. }, true)), "{ev:?}");
        running(&mut e, false, 50);
        assert_eq!(kinds(&mut e), [(EventKind::Suppressed, false)]);
        // Another press's state does not touch this one.
        let b =
            Batch::new("press-2").with(Reading::new("running", Timestamp::from_unix_ms(60), true));
        e.handle_batch(&b, 60);
        assert!(e.state(&k).unwrap().suppressed);
    }

    #[test]
    fn a_restart_restores_acknowledged_and_shelved_alarms_without_announcing_them_again() {
        let mut e = engine();
        send(&mut e, "pressure", 170.0, Quality::Good, 0);
        ack(&mut e, key("pressure", "pressure"), 1).unwrap();
        door(&mut e, true, 2);
        door(&mut e, false, 3); // latched
        let shelve = Command::Shelve {
            key: key("door", "door"),
            user: "op".into(),
            comment: "door sensor loose".into(),
            duration: Some(Duration::from_secs(60)),
        };
        e.handle_command(shelve, 4).unwrap();
        kinds(&mut e);
        let saved = e.persisted();
        assert_eq!(saved.len(), 2, "{saved:?}");

        let mut again = engine();
        assert_eq!(again.restore(&saved), 2);
        // Still beyond H: nothing to announce; already acknowledged.
        send(&mut again, "pressure", 171.0, Quality::Good, 10);
        assert_eq!(kinds(&mut again), []);
        assert_eq!(
            ack(&mut again, key("pressure", "pressure"), 11),
            Err(CommandError::NotUnacknowledged(key("pressure", "pressure")))
        );
        let door_state = again.state(&key("door", "door")).unwrap();
        assert_eq!(
            (door_state.active, door_state.latched, door_state.shelved),
            (Some(Condition::On), true, Some(Some(60_004)))
        );
        // Back to normal: the same instance ends, and the next is new.
        send(&mut again, "pressure", 100.0, Quality::Good, 12);
        send(&mut again, "pressure", 170.0, Quality::Good, 13);
        let ev: Vec<(String, u64, EventKind)> = events(&mut again);
        assert_eq!(ev[0], ("pressure".into(), 1, EventKind::ReturnedToNormal { closed: true }));
        assert!(
            matches!(ev[1], (_, 3, EventKind::Raised { .. })),
            "after the restored 1 and 2: {ev:?}"
        );
        // A rule that is gone: its state is skipped.
        let mut other = Engine::new(RuleSet::default());
        assert_eq!(other.restore(&saved), 0);
    }

    #[test]
    fn out_of_service_alarms_are_not_evaluated() {
        let mut e = engine();
        let k = key("pressure", "pressure");
        send(&mut e, "pressure", 100.0, Quality::Good, 0);
        let oos = Command::OutOfService {
            key: k.clone(),
            user: "tech".into(),
            comment: "sensor swap".into(),
        };
        e.handle_command(oos.clone(), 1).unwrap();
        assert!(matches!(e.handle_command(oos, 2), Err(CommandError::NotNow { .. })));
        send(&mut e, "pressure", 200.0, Quality::Good, 3);
        send(&mut e, "pressure", 0.0, Quality::Bad, 4);
        assert_eq!(kinds(&mut e).len(), 1, "only the out-of-service event");
        assert!(e.state(&k).unwrap().out_of_service);
        e.handle_command(Command::InService { key: k.clone(), user: "tech".into() }, 5).unwrap();
        send(&mut e, "pressure", 200.0, Quality::Good, 6);
        let ev = kinds(&mut e);
        assert_eq!(ev[0], (EventKind::InService { user: "tech".into() }, true));
        assert!(matches!(ev[1], (EventKind::Raised { .. }, true)));
        assert!(matches!(
            e.handle_command(
                Command::Acknowledge {
                    key: key("nope", "x"),
                    user: "op".into(),
                    comment: String::new()
                },
                7
            ),
            Err(CommandError::Unknown(_))
        ));
    }

    proptest! {
        /// Random readings, qualities, acknowledgements and time: no return
        /// to normal while the input is bad, acknowledgement accepted only
        /// of an unacknowledged alarm, a raise only on good input beyond a
        /// limit, and instances only ever grow.
        #[test]
        fn lifecycle_invariants(steps in proptest::collection::vec((0_u8..7, 0.0_f64..260.0, 1_u64..3000), 1..80)) {
            let mut e = engine();
            let k = key("pressure", "pressure");
            let mut now = 0;
            let mut bad = false;
            let mut last_instance = 0;
            for (op, value, dt) in steps {
                now += dt;
                let before = e.state(&k);
                if op == 6 {
                    send_history(&mut e, "pressure", value, Quality::Good, now / 2, now);
                    if before.is_some() {
                        prop_assert_eq!(e.state(&k), before, "history changed the live state");
                    }
                    while let Some(ev) = e.poll_event() {
                        let late = matches!(ev.kind, EventKind::Late { .. });
                        prop_assert!(late && !ev.annunciate, "history made {:?}", ev);
                    }
                    continue;
                }
                match op {
                    0 => {
                        let r = ack(&mut e, k.clone(), now);
                        let unacked = before.as_ref().is_some_and(|s| s.unacknowledged);
                        prop_assert_eq!(r.is_ok(), unacked);
                    }
                    1 => send(&mut e, "pressure", value, Quality::Bad, now),
                    2 => e.handle_timeout(now),
                    _ => send(&mut e, "pressure", value, Quality::Good, now),
                }
                while let Some(ev) = e.poll_event() {
                    if ev.key.rule == FLOOD {
                        continue;
                    }
                    prop_assert!(ev.instance >= last_instance);
                    last_instance = ev.instance;
                    match ev.kind {
                        EventKind::BadInput { .. } => bad = true,
                        EventKind::InputRestored => bad = false,
                        EventKind::ReturnedToNormal { .. } => prop_assert!(!bad, "RTN on bad input"),
                        EventKind::Raised { .. } | EventKind::Changed { .. } => {
                            prop_assert!(!bad);
                            prop_assert!((3..6).contains(&op) && value > 160.0 - 2.0, "raised by {op} {value}");
                        }
                        EventKind::Acknowledged { .. } => prop_assert_eq!(op, 0),
                        other => prop_assert!(false, "unexpected {other:?}"),
                    }
                }
            }
        }
    }
}

//! The alarm engine, sans-IO: readings, operator commands and the time
//! ([`Now`], of which it reads the wall clock) in; events out. The caller
//! owns the clock and the I/O:
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

use shopfloor_schemas::{Batch, Now, Quality, Value};

use crate::delay::Delay;
use crate::detect::{Deviation, Flatline, RateOfChange};
use crate::limit::LevelKind;
use crate::rules::{Glob, Kind, Rule, RuleSet};

mod command;
mod event;
mod kpi;
mod lifecycle;
#[cfg(test)]
mod tests;
mod view;

pub use command::{Command, CommandError};
pub use event::{AlarmKey, Condition, Event, EventKind};
use kpi::Area;
pub use kpi::{AreaKpis, KpiConfig};
pub use view::{AlarmState, AlarmView, Persisted};

/// The flood meta-alarm's rule name.
pub const FLOOD: &str = "alarm-flood";

struct Alarm {
    rule: usize,
    key: AlarmKey,
    /// The delayed condition (limit level, or `On` as a level-less state).
    delay: Delay<Option<Cond>>,
    /// What the operator still owes it.
    response: Response,
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

/// What the operator still owes an alarm (ISA-18.2's acknowledgement,
/// and the confirmation a rule may ask for after it): one state, so an
/// alarm is never both unacknowledged and waiting for confirmation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Response {
    /// Nothing.
    Done,
    /// An acknowledgement (raised, or worse since the last one).
    Unacked,
    /// Acknowledged; a confirmation (the rule's `confirm`).
    Unconfirmed,
}

impl Response {
    /// From a journal's two flags (unacknowledged wins: it comes first).
    fn from_flags(unacknowledged: bool, unconfirmed: bool) -> Self {
        match (unacknowledged, unconfirmed) {
            (true, _) => Self::Unacked,
            (false, true) => Self::Unconfirmed,
            (false, false) => Self::Done,
        }
    }
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

    /// The next event, in order.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// A batch of readings arrived at `now`.
    pub fn handle_batch(&mut self, batch: &Batch, now: Now) {
        let now = now.unix_ms;
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
    pub fn handle_historical(&mut self, batch: &Batch, now: Now) {
        let now = now.unix_ms;
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
                let kind =
                    EventKind::Late { condition, value: number, sampled: r.timestamp.unix_ms() };
                self.push_event(i, now, kind, false);
            }
        }
    }

    /// The time from [`next_timeout`](Self::next_timeout) has come (or
    /// any later time).
    pub fn handle_timeout(&mut self, now: Now) {
        let now = now.unix_ms;
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

    /// When [`handle_timeout`](Self::handle_timeout) is next due, in UTC ms
    /// (on the clock of [`Now::unix_ms`]).
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

    /// Takes new rules (a reload), keeping the limits and KPI settings.
    /// Each alarm whose rule is still there (same rule name, source and
    /// metric) keeps what must survive a restart: its condition, whether
    /// it waits for an acknowledgement, shelving, out of service, latch
    /// (as [`persisted`](Self::persisted) and [`restore`](Self::restore)
    /// carry it). The alarms of rules that are gone are dropped without
    /// an event; the signals' last values and the KPI counts start again,
    /// so each signal is judged by the new limits at its next reading.
    /// Returns how many alarms were carried over.
    pub fn reload(&mut self, rules: RuleSet) -> usize {
        let saved = self.persisted();
        let mut next = Self::with_kpis(rules, self.kpi.clone());
        next.limits = self.limits;
        next.next_instance = self.next_instance;
        let carried = next.restore(&saved);
        *self = next;
        carried
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
            response: Response::Done,
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
}

fn stale_window(interval: Duration, factor: u32) -> u64 {
    u64::try_from(interval.saturating_mul(factor).as_millis()).unwrap_or(u64::MAX)
}

//! What the engine shows of an alarm, and what survives a restart.

use super::*;

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
#[non_exhaustive]
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
#[non_exhaustive]
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

impl Engine {
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
                    || a.response != Response::Done
                    || a.shelved.is_some()
                    || a.out_of_service
                    || a.latched.is_some()
            })
            .map(|a| Persisted {
                key: a.key.clone(),
                instance: a.instance,
                active: a.delay.output().map(|c| c.0).or(a.latched),
                unacknowledged: a.response == Response::Unacked,
                shelved: a.shelved,
                out_of_service: a.out_of_service,
                latched: a.latched.is_some(),
                unconfirmed: a.response == Response::Unconfirmed,
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
            a.response = Response::from_flags(p.unacknowledged, p.unconfirmed);
            a.shelved = p.shelved;
            a.out_of_service = p.out_of_service;
            restored += 1;
        }
        restored
    }

    /// The state of an alarm.
    pub fn state(&self, key: &AlarmKey) -> Option<AlarmState> {
        self.index.get(key).map(|&i| {
            let a = &self.alarms[i];
            AlarmState {
                active: a.delay.output().map(|c| c.0).or(a.latched),
                unacknowledged: a.response == Response::Unacked,
                bad_input: a.bad.is_some(),
                instance: a.instance,
                shelved: a.shelved,
                out_of_service: a.out_of_service,
                latched: a.latched.is_some(),
                suppressed: self.suppressed(a),
                unconfirmed: a.response == Response::Unconfirmed,
            }
        })
    }
}

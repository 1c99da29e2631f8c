//! One alarm through its lifecycle: conditions in, transitions and events out.

use super::*;

impl Engine {
    /// Whether an alarm is suppressed by design now (an enabling signal
    /// not yet seen suppresses nothing).
    pub(super) fn suppressed(&self, a: &Alarm) -> bool {
        a.control.is_some_and(|(c, is)| self.control_state[c].0 == Some(!is))
    }

    /// An enabling signal's new state: suppress or release its alarms.
    pub(super) fn control(&mut self, c: usize, on: bool, now: u64) {
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
                self.push_event(i, now, kind, false);
            }
        }
    }

    pub(super) fn feed(&mut self, i: usize, raw: Option<Cond>, now: u64) {
        let prev = self.alarms[i].delay.output();
        if let Some(c) = self.alarms[i].delay.update(raw, now) {
            self.changed(i, prev, c, now);
        }
    }

    /// The delayed condition changed from `prev` to `c`.
    pub(super) fn changed(&mut self, i: usize, prev: Option<Cond>, c: Option<Cond>, now: u64) {
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
                    self.alarms[i].response = Response::Unacked;
                }
                let kind = EventKind::Changed { condition: cond, priority: priority(cond), value };
                self.emit(i, now, kind);
            }
            (None, Some(Cond(cond))) => {
                // Each activation is a new instance.
                self.next_instance += 1;
                self.alarms[i].instance = self.next_instance;
                self.alarms[i].response = Response::Unacked;
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
                    self.alarms[i].response = Response::Unacked;
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

    /// The condition is back to normal (and no latch holds it).
    pub(super) fn returned(&mut self, i: usize, now: u64) {
        self.alarms[i].active_since = None;
        let closed = self.alarms[i].response == Response::Done;
        self.emit(i, now, EventKind::ReturnedToNormal { closed });
        if self.alarms[i].shelved == Some(None) {
            self.alarms[i].shelved = None;
            self.emit(i, now, EventKind::Unshelved { user: None });
        }
    }

    pub(super) fn set_bad(&mut self, i: usize, reason: String, now: u64) {
        if self.alarms[i].bad.as_deref() != Some(reason.as_str()) {
            self.alarms[i].bad = Some(reason.clone());
            self.emit(i, now, EventKind::BadInput { reason });
        }
    }

    pub(super) fn set_good(&mut self, i: usize, now: u64) {
        if self.alarms[i].bad.take().is_some() {
            self.emit(i, now, EventKind::InputRestored);
        }
    }

    pub(super) fn emit(&mut self, i: usize, time: u64, kind: EventKind) {
        let a = &self.alarms[i];
        let annunciate = a.shelved.is_none() && !a.out_of_service && !self.suppressed(a);
        self.push_event(i, time, kind, annunciate);
    }

    /// Queues alarm `i`'s event of `kind`, annunciated or not.
    pub(super) fn push_event(&mut self, i: usize, time: u64, kind: EventKind, annunciate: bool) {
        let a = &self.alarms[i];
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

//! Alarm-system performance: activations per area, floods, bad actors.

use super::*;

/// Alarm-system performance settings (ISA-18.2, EEMUA 191).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
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
#[non_exhaustive]
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

pub(super) struct Area {
    pub(super) name: String,
    pub(super) recent: VecDeque<u64>,
    /// Its flood meta-alarm.
    pub(super) flood: usize,
}

impl Engine {
    /// The alarm-system KPIs per area at `now`.
    pub fn kpis(&self, now: Now) -> Vec<AreaKpis> {
        let now = now.unix_ms;
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

    /// An activation, for the KPIs; raises the area's flood meta-alarm
    /// when the count passes the threshold.
    pub(super) fn count_activation(&mut self, i: usize, now: u64) {
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
    pub(super) fn end_floods(&mut self, now: u64) {
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
}

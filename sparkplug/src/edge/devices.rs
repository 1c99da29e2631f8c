//! Births, devices and DATA: what the node publishes about its metrics.

use super::*;

impl EdgeNode {
    /// A device stopped responding: DDEATH (when online). Its readings are
    /// refused until [`device_birth`](Self::device_birth).
    pub fn device_death(&mut self, device: &str, now: Now) -> Result<(), PublishError> {
        let g = self
            .group_index(device)
            .ok_or_else(|| PublishError::UnknownDevice(device.to_owned()))?;
        if !self.groups[g].alive {
            return Ok(());
        }
        self.groups[g].alive = false;
        if let Some(seq) = self.next_seq() {
            let p = session_payload(now, seq, Vec::new());
            self.push(MessageType::DDeath, Some(g), &p, false);
        }
        Ok(())
    }

    /// A device is back: DBIRTH with its current values (when online).
    pub fn device_birth(&mut self, device: &str, now: Now) -> Result<(), PublishError> {
        let g = self
            .group_index(device)
            .ok_or_else(|| PublishError::UnknownDevice(device.to_owned()))?;
        self.groups[g].alive = true;
        if self.is_online() {
            self.send_birth(g, now);
        }
        Ok(())
    }

    /// Defines (or redefines) a device's metrics at run time and births it
    /// with `values` (readings of its metrics), for devices whose metrics
    /// are only known once they answer (an OPC UA server's nodes and
    /// types). A device with the same metric names and types keeps its
    /// aliases; one with other metrics dies (DDEATH) and is born with new
    /// aliases (taken after the largest, so they stay unique node-wide); a
    /// new device is added. Readings of metrics the device no longer has
    /// are refused from then on. Metrics without a reading in `values` are
    /// born with their last value, or null.
    pub fn define_device(
        &mut self,
        device: &str,
        specs: Vec<MetricSpec>,
        values: &[Reading],
        now: Now,
    ) -> Result<(), ConfigError> {
        let check = EdgeNodeConfig {
            devices: vec![(device.to_owned(), specs.clone())],
            ..EdgeNodeConfig::new(self.group_id.clone(), self.edge_node_id.clone())
        };
        validate(&check)?;
        let existing = self.group_index(device);
        let same = existing.is_some_and(|g| {
            self.groups[g].metrics.len() == specs.len()
                && self.groups[g]
                    .metrics
                    .iter()
                    .zip(&specs)
                    .all(|(m, s)| m.spec.name == s.name && m.spec.datatype == s.datatype)
        });
        let g = match existing {
            Some(g) if same => {
                for (m, s) in self.groups[g].metrics.iter_mut().zip(specs) {
                    m.spec = s;
                }
                g
            }
            Some(g) => {
                if self.groups[g].alive {
                    let _ = self.device_death(device, now);
                }
                self.replace_metrics(g, specs);
                g
            }
            None => {
                self.groups.push(Group::new(
                    Some(device.to_owned()),
                    false,
                    Vec::new(),
                    BirthTypes::new(),
                ));
                let g = self.groups.len() - 1;
                self.replace_metrics(g, specs);
                g
            }
        };
        for r in values {
            let Some(i) = self.groups[g].find(&r.metric) else { continue };
            let m = &mut self.groups[g].metrics[i];
            if let Some(v) = to_metric_value(m.spec.datatype, &r.value) {
                m.current = Some((v, r.quality, r.timestamp.unix_ms()));
            }
        }
        self.groups[g].alive = true;
        if self.is_online() {
            self.send_birth(g, now);
        }
        Ok(())
    }

    pub(super) fn replace_metrics(&mut self, g: usize, specs: Vec<MetricSpec>) {
        let mut next_alias =
            self.groups.iter().flat_map(|g| g.metrics.iter().map(|m| m.alias)).max().unwrap_or(0)
                + 1;
        let (metrics, types) = metric_states(specs, &mut next_alias);
        self.groups[g].metrics = metrics;
        self.groups[g].types = types;
        self.groups[g].reindex();
    }

    /// NBIRTH (seq 0) and every live device's DBIRTH; the store replays
    /// after them through [`poll_replay`](Self::poll_replay).
    pub(super) fn birth(&mut self, now: Now) {
        if self.is_online() {
            // A rebirth: replay starts over from what is not confirmed.
            self.stop_replay();
        }
        self.session = Session::Online { seq: 0 };
        self.send_birth(0, now);
        for g in 1..self.groups.len() {
            if self.groups[g].alive {
                self.send_birth(g, now);
            }
        }
        self.replaying = true;
        let stored = self.stored();
        if stored > 0 {
            self.events.push_back(EdgeEvent::ReplayStarted {
                stored,
                watched: self.primary_host_id.is_some(),
            });
        }
    }

    pub(super) fn send_birth(&mut self, g: usize, now: Now) {
        let Some(seq) = self.next_seq() else { return };
        let mut metrics = Vec::new();
        if g == 0 {
            metrics.push(Metric::new(
                BDSEQ_METRIC,
                now.unix_ms,
                MetricValue::Int64(self.bd_seq.into()),
            ));
            metrics.push(Metric::new(REBIRTH_METRIC, now.unix_ms, MetricValue::Boolean(false)));
        }
        for m in &mut self.groups[g].metrics {
            let (value, quality, ts) = match &m.current {
                Some((v, q, t)) => (Some(v.clone()), *q, *t),
                None => (None, Quality::Good, now.unix_ms),
            };
            m.sent = value.clone().map(|v| (v, quality));
            m.sent_at = value.as_ref().map(|_| ts);
            let mut properties = m.spec.properties.clone();
            if quality != Quality::Good {
                properties.get_or_insert_with(PropertySet::default).set(
                    QUALITY_PROPERTY,
                    PropertyValue::Value(MetricValue::Int32(quality.to_sparkplug())),
                );
            }
            metrics.push(Metric {
                name: Some(m.spec.name.as_str().into()),
                alias: Some(m.alias),
                timestamp: Some(ts),
                datatype: m.spec.datatype,
                is_historical: false,
                is_transient: false,
                value,
                properties,
                metadata: None,
            });
        }
        let p = session_payload(now, seq, metrics);
        let t = if g == 0 { MessageType::NBirth } else { MessageType::DBirth };
        self.push(t, Some(g), &p, true);
    }

    pub(super) fn send_data(&mut self, g: usize, metrics: Vec<Metric>, now: Now) {
        if let Some(p) = self.data_publish(g, metrics, now) {
            self.transmits.push_back(p);
        }
    }

    /// NDATA or DDATA with the next `seq` (`None` when offline).
    pub(super) fn data_publish(
        &mut self,
        g: usize,
        metrics: Vec<Metric>,
        now: Now,
    ) -> Option<Publish> {
        let seq = self.next_seq()?;
        let p = session_payload(now, seq, metrics);
        let t = if g == 0 { MessageType::NData } else { MessageType::DData };
        Some(self.publish_of(t, Some(g), &p, false))
    }
}

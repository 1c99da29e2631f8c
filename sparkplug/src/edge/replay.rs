//! Store and forward: readings kept while the node cannot send, replayed as historical DATA after the next birth.

use super::*;

/// A point in the replay the driver can confirm with
/// [`EdgeNode::commit_replay`]: everything handed out by
/// [`EdgeNode::poll_replay`] before it was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayMark {
    /// Marks from before a disconnect are void.
    epoch: u64,
    mark: SpoolMark,
}

impl EdgeNode {
    /// Takes readings: `batch.source` is a device id, or `""` for the node's
    /// own metrics. Online, what changed beyond its deadband goes out as DATA;
    /// offline, it is stored and replayed as historical after the next birth.
    pub fn publish(&mut self, batch: &Batch, now: Now) -> Result<(), PublishError> {
        let g = if batch.source.is_empty() {
            0
        } else {
            self.group_index(&batch.source)
                .ok_or_else(|| PublishError::UnknownDevice(batch.source.to_string()))?
        };
        if !self.groups[g].alive {
            return Err(PublishError::DeviceDead(batch.source.to_string()));
        }
        // Check everything first, so that a refused batch changes nothing.
        let mut updates = Vec::with_capacity(batch.readings.len());
        for (i, r) in batch.readings.iter().enumerate() {
            let m = self.groups[g].find(&r.metric).ok_or_else(|| PublishError::UnknownMetric {
                device: batch.source.to_string(),
                metric: r.metric.to_string(),
            })?;
            let metrics = &self.groups[g].metrics;
            let datatype = metrics[m].spec.datatype;
            let value = to_metric_value(datatype, &r.value).ok_or_else(|| PublishError::Type {
                metric: r.metric.to_string(),
                datatype,
                value: format!("{:?}", r.value),
            })?;
            updates.push((i, m, value, r.quality, r.timestamp.unix_ms()));
        }
        // In time order (stable): a batch out of order is sent in order,
        // and no reading is taken for older than one after it in the batch.
        updates.sort_by_key(|u| u.4);
        let online = self.is_online();
        let mut out = Vec::new();
        let mut offline = Batch::new(batch.source.clone());
        for (i, m, value, quality, ts) in updates {
            let state = &mut self.groups[g].metrics[m];
            // The birth reports the newest value by time, whatever order
            // readings arrive in.
            if state.current.as_ref().is_none_or(|(_, _, t)| ts >= *t) {
                state.current = Some((value.clone(), quality, ts));
            }
            // Older than what this session published already (an OPC UA
            // subscription's first notification after a birth read, say):
            // superseded, never sent back in time.
            if online && state.sent_at.is_some_and(|t| ts < t) {
                continue;
            }
            if !changed(state.spec.deadband, state.sent.as_ref(), &value, quality) {
                continue;
            }
            state.sent = Some((value.clone(), quality));
            if online {
                state.sent_at = Some(state.sent_at.map_or(ts, |t| t.max(ts)));
                out.push(data_metric(state.alias, ts, value, quality, false));
            } else {
                offline.readings.push(batch.readings[i].clone());
            }
        }
        if !out.is_empty() {
            // A metric's values in time order within the message
            // (tck-id-operational-behavior-data-publish-nbirth-order).
            out.sort_by_key(|m| m.timestamp);
            self.send_data(g, out, now);
        }
        if !offline.readings.is_empty() {
            self.store_batch(&offline)?;
        }
        Ok(())
    }

    pub(super) fn store_batch(&mut self, batch: &Batch) -> Result<(), PublishError> {
        // Readings were checked against the configuration: they encode.
        let record = Codec::Protobuf.encode_batch(batch).unwrap_or_default();
        let n = u32::try_from(batch.readings.len()).unwrap_or(u32::MAX);
        let dropped = self.store.push(&record, n).map_err(|e| PublishError::Store(Arc::new(e)))?;
        self.count_dropped(dropped);
        Ok(())
    }

    pub(super) fn count_dropped(&mut self, n: u64) {
        if n > 0 {
            self.dropped += n;
            self.events.push_back(EdgeEvent::Dropped { total: self.dropped });
        }
    }

    /// Whether stored readings wait to be replayed: the driver calls
    /// [`poll_replay`](Self::poll_replay) when it has nothing else to do.
    pub fn replay_pending(&self) -> bool {
        self.is_online() && self.replaying
    }

    /// The next historical DATA message from the store, after a birth. Each
    /// step reads about `replay_chunk` readings, in the order they were
    /// stored, and sends one message per device with its readings sorted by
    /// time. `None` when the store is drained (or replay stopped on a store
    /// error, reported as [`EdgeEvent::StoreFailed`]).
    pub fn poll_replay(&mut self, now: Now) -> Option<Publish> {
        if !self.replay_pending() {
            return None;
        }
        if self.replay_out.is_empty() {
            self.fill_replay();
        }
        let (g, metrics) = self.replay_out.pop_front()?;
        if self.replay_out.is_empty() {
            self.replay_handed = self.replay_chunk_mark.take().or(self.replay_handed);
        }
        self.data_publish(g, metrics, now)
    }

    /// What has been handed out by [`poll_replay`](Self::poll_replay) so far;
    /// give it to [`commit_replay`](Self::commit_replay) once the broker has
    /// confirmed it (a round trip after the last of it was written).
    pub fn replay_mark(&self) -> Option<ReplayMark> {
        self.replay_handed.map(|mark| ReplayMark { epoch: self.epoch, mark })
    }

    /// The broker has what was handed out before `mark`: the store forgets
    /// it. A mark from before a disconnect is ignored.
    pub fn commit_replay(&mut self, mark: ReplayMark) {
        if mark.epoch != self.epoch {
            return;
        }
        if let Err(e) = self.store.commit(mark.mark) {
            self.events.push_back(EdgeEvent::StoreFailed { message: e.to_string() });
        }
    }

    /// Makes the store durable (fsync for a file spool). The driver calls it
    /// about once a second.
    pub fn sync_store(&mut self) -> Result<(), SpoolError> {
        self.store.sync()
    }

    pub(super) fn fill_replay(&mut self) {
        // (group, readings) in the order groups first appear.
        let mut chunk: Vec<(usize, Vec<Metric>)> = Vec::new();
        let mut taken = 0;
        let mut lost = 0;
        while taken < self.replay_chunk {
            let (record, n) = match self.store.read() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    let corrupt = matches!(e, SpoolError::Corrupt { .. });
                    self.events.push_back(EdgeEvent::StoreFailed { message: e.to_string() });
                    if corrupt {
                        continue;
                    }
                    self.replaying = false;
                    break;
                }
            };
            taken += n as usize;
            let Ok(batch) = Codec::Protobuf.decode_batch(&record) else {
                lost += u64::from(n);
                continue;
            };
            for r in &batch.readings {
                match self.stored_metric(&batch.source, r) {
                    Some((g, m)) => match chunk.iter_mut().find(|(cg, _)| *cg == g) {
                        Some((_, ms)) => ms.push(m),
                        None => chunk.push((g, vec![m])),
                    },
                    None => lost += 1,
                }
            }
        }
        self.count_dropped(lost);
        if taken == 0 {
            self.replaying = false;
        }
        for (g, mut metrics) in chunk {
            metrics.sort_by_key(|m| m.timestamp);
            self.replay_out.push_back((g, metrics));
        }
        self.replay_chunk_mark = Some(self.store.mark());
    }

    /// A stored reading as a historical DATA metric, if the node still has
    /// its metric and type.
    pub(super) fn stored_metric(&self, source: &str, r: &Reading) -> Option<(usize, Metric)> {
        let g = if source.is_empty() { 0 } else { self.group_index(source)? };
        let m = &self.groups[g].metrics[self.groups[g].find(&r.metric)?];
        let value = to_metric_value(m.spec.datatype, &r.value)?;
        Some((g, data_metric(m.alias, r.timestamp.unix_ms(), value, r.quality, true)))
    }
}

//! When a batch goes to the database and when its messages are acked: the
//! ingest's delivery policy, without IO (the consumer loop feeds it
//! messages, commits and the time, and does what it says).
//!
//! - Messages are gathered into a batch until it holds `batch_readings`
//!   readings, `max_pending` messages are held, its oldest has waited
//!   `batch_age`, a death arrives, or the ingest stops.
//! - At most `connections` batches are in flight; a batch with a death
//!   goes alone, after everything before it and before anything after it
//!   (its stale rows go after the latest row there is).
//! - Batches commit in the order they went; a committed batch gives its
//!   messages' acks, in arrival order. Nothing is acked before its commit.
//! - While the batch being gathered is full (or holds a death) no message
//!   is read: the broker keeps the rest.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use shopfloor_schemas::Now;

/// The gate's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GateConfig {
    /// A batch goes when it holds this many readings…
    pub batch_readings: usize,
    /// …or when its oldest message has waited this long.
    pub batch_age: Duration,
    /// Messages held (gathered or in flight) at most.
    pub max_pending: usize,
    /// Batches in flight at most (the COPY connections).
    pub connections: usize,
}

impl GateConfig {
    /// Batches of `batch_readings` or `batch_age`, at most `max_pending`
    /// messages held and `connections` batches in flight.
    pub const fn new(
        batch_readings: usize,
        batch_age: Duration,
        max_pending: usize,
        connections: usize,
    ) -> Self {
        Self { batch_readings, batch_age, max_pending, connections }
    }
}

/// Messages from arrival to ack; `T` is what acks one (an MQTT ack token,
/// or nothing for QoS 0).
#[derive(Debug)]
pub struct Gate<T> {
    config: GateConfig,
    gathering: Vec<T>,
    readings: usize,
    death: bool,
    oldest: Option<Instant>,
    /// Batches in flight, oldest first: their acks and whether they hold
    /// a death.
    in_flight: VecDeque<(Vec<T>, bool)>,
    held: usize,
    stopping: bool,
}

impl<T> Gate<T> {
    /// An empty gate (`connections` at least 1).
    pub fn new(mut config: GateConfig) -> Self {
        config.connections = config.connections.max(1);
        config.max_pending = config.max_pending.max(1);
        Self {
            config,
            gathering: Vec::new(),
            readings: 0,
            death: false,
            oldest: None,
            in_flight: VecDeque::new(),
            held: 0,
            stopping: false,
        }
    }

    fn full(&self) -> bool {
        self.readings >= self.config.batch_readings || self.held >= self.config.max_pending
    }

    /// Whether to read another message now.
    pub fn wants_input(&self) -> bool {
        !self.stopping && !self.death && !self.full()
    }

    /// A message arrived at `now` with `readings` readings; `death`: it
    /// records a death.
    pub fn received(&mut self, ack: T, readings: usize, death: bool, now: Now) {
        self.gathering.push(ack);
        self.readings += readings;
        self.death |= death;
        self.oldest.get_or_insert(now.instant);
        self.held += 1;
    }

    fn can_submit(&self) -> bool {
        if self.death {
            self.in_flight.is_empty()
        } else {
            self.in_flight.len() < self.config.connections
                && !self.in_flight.iter().any(|(_, death)| *death)
        }
    }

    /// When the batch being gathered is due by its age; `None` when there
    /// is none or it could not go anyway (the shell waits for a commit).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.oldest.filter(|_| self.can_submit()).map(|t| t + self.config.batch_age)
    }

    /// Whether the gathered batch goes to the database now. If it does, it
    /// is in flight from here: the shell submits what it gathered.
    pub fn poll_submit(&mut self, now: Now) -> bool {
        if self.gathering.is_empty() || !self.can_submit() {
            return false;
        }
        let due = self.oldest.is_some_and(|t| now.instant >= t + self.config.batch_age);
        if !(self.full() || due || self.stopping || self.death) {
            return false;
        }
        self.in_flight.push_back((std::mem::take(&mut self.gathering), self.death));
        self.readings = 0;
        self.death = false;
        self.oldest = None;
        true
    }

    /// The oldest batch in flight has committed: the acks of its messages,
    /// in arrival order (`None` when nothing was in flight).
    pub fn committed(&mut self) -> Option<Vec<T>> {
        let (acks, _) = self.in_flight.pop_front()?;
        self.held -= acks.len();
        Some(acks)
    }

    /// Stop reading; what is held is still submitted and committed.
    pub fn stop(&mut self) {
        self.stopping = true;
    }

    /// [`stop`](Self::stop) was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// Stopping, and everything held has committed.
    pub fn is_drained(&self) -> bool {
        self.stopping && self.gathering.is_empty() && self.in_flight.is_empty()
    }

    /// Messages held: gathered or in flight.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Batches in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CONFIG: GateConfig = GateConfig {
        batch_readings: 20,
        batch_age: Duration::from_millis(200),
        max_pending: 30,
        connections: 2,
    };

    #[derive(Clone, Debug)]
    enum Op {
        Receive { readings: usize, death: bool },
        Advance(u64),
        Commit,
        Stop,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..12_usize, prop::bool::weighted(0.08))
                .prop_map(|(readings, death)| Op::Receive { readings, death }),
            2 => (0..400_u64).prop_map(Op::Advance),
            3 => Just(Op::Commit),
            1 => Just(Op::Stop),
        ]
    }

    proptest! {
        /// Whatever arrives, commits and the clock do: acks come out in
        /// arrival order, each once and only after its batch committed;
        /// batches in flight never pass the connections, a death's batch is
        /// alone; nothing is held past the limit; no batch that may go waits
        /// past its age; and after a stop everything drains.
        #[test]
        fn acks_follow_commits_in_order_and_deaths_go_alone(ops in prop::collection::vec(op(), 1..300)) {
            let mut now = Now::at_unix_ms(0);
            let mut gate = Gate::new(CONFIG);
            let (mut next, mut acked) = (0_u32, Vec::new());
            // Per batch in flight: its acks and whether it holds a death,
            // as the model sees them.
            let mut model: VecDeque<(Vec<u32>, bool)> = VecDeque::new();
            let mut gathering: (Vec<u32>, bool) = (Vec::new(), false);
            let step = |gate: &mut Gate<u32>, now: Now, model: &mut VecDeque<(Vec<u32>, bool)>, gathering: &mut (Vec<u32>, bool)| {
                while gate.poll_submit(now) {
                    model.push_back(std::mem::take(gathering));
                }
            };
            for op in ops {
                match op {
                    Op::Receive { readings, death } => {
                        if gate.wants_input() {
                            gate.received(next, readings, death, now);
                            gathering.0.push(next);
                            gathering.1 |= death;
                            next += 1;
                        }
                    }
                    Op::Advance(ms) => now += Duration::from_millis(ms),
                    Op::Commit => {
                        let got = gate.committed();
                        prop_assert_eq!(got.clone(), model.pop_front().map(|(a, _)| a));
                        acked.extend(got.unwrap_or_default());
                    }
                    Op::Stop => gate.stop(),
                }
                step(&mut gate, now, &mut model, &mut gathering);
                prop_assert!(gate.in_flight() <= CONFIG.connections);
                if model.iter().any(|(_, death)| *death) {
                    prop_assert_eq!(gate.in_flight(), 1, "a death's batch goes alone");
                }
                prop_assert!(gate.held() <= CONFIG.max_pending);
                if let Some(due) = gate.poll_timeout() {
                    prop_assert!(due > now.instant, "a batch that may go waited past its age");
                }
            }
            gate.stop();
            while gate.held() > 0 {
                step(&mut gate, now, &mut model, &mut gathering);
                let got = gate.committed();
                prop_assert!(got.is_some(), "held messages but nothing in flight after a stop");
                acked.extend(got.unwrap_or_default());
            }
            prop_assert!(gate.is_drained());
            prop_assert_eq!(acked, (0..next).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_lone_message_waits_for_its_age_and_a_death_goes_at_once() {
        let t0 = Now::at_unix_ms(0);
        let mut gate = Gate::new(CONFIG);
        gate.received("a", 1, false, t0);
        assert!(!gate.poll_submit(t0));
        assert_eq!(gate.poll_timeout(), Some(t0.instant + CONFIG.batch_age));
        assert!(gate.poll_submit(t0 + CONFIG.batch_age));
        // A death waits for the batch in flight, then goes alone.
        gate.received("death", 1, true, t0);
        assert!(!gate.wants_input(), "nothing read behind a death");
        assert!(!gate.poll_submit(t0), "not beside another batch");
        assert_eq!(gate.committed(), Some(vec!["a"]));
        assert!(gate.poll_submit(t0));
        assert!(gate.wants_input());
        gate.received("b", 1, false, t0);
        assert!(!gate.poll_submit(t0 + CONFIG.batch_age), "nothing beside a death");
        assert_eq!(gate.committed(), Some(vec!["death"]));
        assert!(gate.poll_submit(t0 + CONFIG.batch_age));
    }
}

//! When the edge driver confirms its replay: sans-IO.
//!
//! Replayed messages go out at QoS 0, so nothing says the broker has them.
//! The driver asks for a round trip instead (a SUBSCRIBE: its SUBACK comes
//! after every publish sent before it) every [`BARRIER_EVERY`] replayed
//! messages and at the end of the replay, and the spool forgets a replay
//! only up to the mark its SUBACK confirms. One barrier is outstanding at
//! a time; a lost connection voids it (the driver starts a new
//! [`ReplayBarrier`] per connection, and the node voids its marks).
//!
//! [`BARRIER_EVERY`]: crate::BARRIER_EVERY

/// The replay barrier of one connection; `M` is the mark a barrier
/// confirms (`shopfloor_sparkplug::edge::ReplayMark`).
#[derive(Debug)]
pub(crate) struct ReplayBarrier<M> {
    every: usize,
    outstanding: Option<M>,
    unconfirmed: usize,
}

impl<M: Copy> ReplayBarrier<M> {
    /// A barrier at least every `every` replayed messages (at least 1).
    pub(crate) fn new(every: usize) -> Self {
        Self { every: every.max(1), outstanding: None, unconfirmed: 0 }
    }

    /// A replayed message went out.
    pub(crate) fn replayed(&mut self) {
        self.unconfirmed += 1;
    }

    /// Whether to send a barrier now: none is outstanding, some replayed
    /// messages are unconfirmed, and either `every` of them are or the
    /// replay has nothing more to send (`replay_pending` false).
    pub(crate) fn due(&self, replay_pending: bool) -> bool {
        self.outstanding.is_none()
            && self.unconfirmed > 0
            && (self.unconfirmed >= self.every || !replay_pending)
    }

    /// The barrier went out; its SUBACK confirms everything up to `mark`.
    pub(crate) fn sent(&mut self, mark: M) {
        self.outstanding = Some(mark);
        self.unconfirmed = 0;
    }

    /// A SUBACK arrived: the mark to commit, if a barrier was outstanding.
    pub(crate) fn confirmed(&mut self) -> Option<M> {
        self.outstanding.take()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_barrier_every_n_and_at_the_end() {
        let mut b = ReplayBarrier::new(3);
        assert!(!b.due(false), "nothing replayed, nothing to confirm");
        b.replayed();
        b.replayed();
        assert!(!b.due(true), "two of three, more to come");
        assert!(b.due(false), "the end of the replay");
        b.replayed();
        assert!(b.due(true), "three of three");
        b.sent(1);
        assert!(!b.due(false), "nothing new since");
        b.replayed();
        assert!(!b.due(false), "one barrier at a time");
        assert_eq!(b.confirmed(), Some(1));
        assert_eq!(b.confirmed(), None, "a SUBACK confirms a barrier once");
        assert!(b.due(false));
    }

    #[derive(Clone, Copy, Debug)]
    enum Op {
        Replayed,
        Check { pending: bool },
        SubAck,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Replayed),
            2 => any::<bool>().prop_map(|pending| Op::Check { pending }),
            1 => Just(Op::SubAck),
        ]
    }

    proptest! {
        /// Driven as the edge driver drives it (send when due, commit on
        /// SUBACK): each mark is committed at most once and in order; at
        /// most `every` messages go unconfirmed while no barrier is out;
        /// and once the replay ends and the last SUBACK is in, every
        /// replayed message has been confirmed.
        #[test]
        fn every_replayed_message_is_confirmed_once_in_order(
            every in 1usize..20,
            ops in proptest::collection::vec(op(), 0..200),
        ) {
            let mut b = ReplayBarrier::new(every);
            let (mut replayed, mut marked, mut committed) = (0u64, 0u64, 0u64);
            for op in ops {
                match op {
                    Op::Replayed => {
                        replayed += 1;
                        b.replayed();
                    }
                    Op::Check { pending } => {
                        if b.due(pending) {
                            marked = replayed;
                            b.sent(marked);
                        }
                    }
                    Op::SubAck => {
                        if let Some(m) = b.confirmed() {
                            prop_assert!(m > committed, "a mark committed once, in order");
                            committed = m;
                        }
                    }
                }
                if b.outstanding.is_none() {
                    prop_assert!(replayed - committed <= every as u64 || b.due(true));
                }
                prop_assert!(committed <= marked && marked <= replayed);
            }
            // The replay ends: one more barrier if due, and its SUBACK.
            if b.due(false) {
                b.sent(replayed);
            }
            if let Some(m) = b.confirmed() {
                committed = m;
            }
            if b.due(false) {
                b.sent(replayed);
                committed = b.confirmed().unwrap();
            }
            prop_assert_eq!(committed, replayed, "the whole replay confirmed");
        }
    }
}

//! The watchdog and recovery ladder of one server, sans-IO: what the
//! session did and the time in, what to do out.
//!
//! A subscription that is alive answers every publish request, with data
//! or with a keep-alive, at least once per keep-alive window (publishing
//! interval × keep-alive count). The watchdog counts both. Silence past
//! the window means the subscription is dead, **even if the TCP
//! connection looks fine** (a black-holed network, a frozen server, a
//! client library that stopped publishing after a reconnect, a server
//! that lost the subscription in a transfer). Then:
//!
//! ```text
//! Up ──silence past the window, or connection lost──► Stale (DDEATH at once)
//!      step 1  Republish   ask for publishes again; wait one step window
//!      step 2  Recreate    delete and recreate the subscriptions, item by item
//!      step 3  Reconnect   a new session, then its subscriptions; repeated
//!                          with capped backoff, forever
//! any publish response (data or keep-alive) ──► Resync: read every value,
//!                          birth (DBIRTH) with them, Up
//! ```
//!
//! The client library reconnects a lost connection by itself (reactivating
//! the session, or making a new one and transferring or recreating the
//! subscriptions); [`Watchdog::on_session`] starts the ladder over from
//! the top when it does, since a reconnect is exactly where data has been
//! seen to stop without an error.

use std::time::{Duration, Instant};

use shopfloor_schemas::Now;

/// What the shell must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Mark every metric of the server stale now (Sparkplug DDEATH).
    Stale,
    /// Data flows: read every node's value and birth with them (DBIRTH).
    Resync,
    /// Step 1: ask the server for publishes again.
    Republish,
    /// Step 2: delete and recreate the subscriptions on this session.
    Recreate,
    /// Step 3: drop the session and connect a new one.
    Reconnect,
}

/// Where the link is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Not yet heard from.
    Starting,
    /// Publish responses arrive in time.
    Up,
    /// Silent or lost: its metrics are stale; the ladder is at this step
    /// (0: waiting for the library's reconnect or a first response).
    Recovering(u8),
}

/// The watchdog's timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// The longest silence a live subscription can have: the longest
    /// publishing interval × (keep-alive count + 1), plus slack.
    pub window: Duration,
    /// How long each ladder step gets before the next.
    pub step: Duration,
    /// The first pause between two reconnects; it doubles up to `max_backoff`.
    pub backoff: Duration,
    /// The longest pause between two reconnects.
    pub max_backoff: Duration,
}

impl Timing {
    /// The timing for subscriptions with this longest publishing interval
    /// and keep-alive count: window `interval × (count + 1) + 1 s`, steps of
    /// `max(2 × interval, 2 s)`, backoff 1 s doubling to 30 s.
    pub fn for_subscriptions(longest_interval: Duration, keep_alive_count: u32) -> Self {
        Self {
            window: longest_interval * (keep_alive_count + 1) + Duration::from_secs(1),
            step: (longest_interval * 2).max(Duration::from_secs(2)),
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// The watchdog of one server.
#[derive(Debug)]
pub struct Watchdog {
    timing: Timing,
    link: Link,
    /// The last publish response.
    last: Option<Instant>,
    /// When the current step runs out.
    deadline: Option<Instant>,
    /// The next reconnect pause.
    backoff: Duration,
    actions: Vec<Action>,
    /// Silences and losses noticed.
    outages: u64,
    /// When the current outage began (for the time to recover).
    since: Option<Instant>,
    /// How long the last outage took to recover.
    last_recovery: Option<Duration>,
}

impl Watchdog {
    /// A watchdog that has heard nothing yet.
    pub fn new(timing: Timing, now: Now) -> Self {
        let now = now.instant;
        Self {
            timing,
            link: Link::Starting,
            last: None,
            deadline: Some(now + timing.window),
            backoff: timing.backoff,
            actions: Vec::new(),
            outages: 0,
            since: None,
            last_recovery: None,
        }
    }

    /// Where the link is.
    pub fn link(&self) -> Link {
        self.link
    }

    /// Silences and connection losses noticed so far.
    pub fn outages(&self) -> u64 {
        self.outages
    }

    /// How long the last outage lasted, from the moment it was noticed to
    /// the first publish response after it.
    pub fn last_recovery(&self) -> Option<Duration> {
        self.last_recovery
    }

    /// A publish response arrived (data or keep-alive).
    pub fn on_activity(&mut self, now: Now) {
        let now = now.instant;
        self.last = Some(now);
        if self.link != Link::Up {
            if let Some(t) = self.since.take() {
                self.last_recovery = Some(now.saturating_duration_since(t));
            }
            self.link = Link::Up;
            self.backoff = self.timing.backoff;
            self.actions.push(Action::Resync);
        }
        self.deadline = Some(now + self.timing.window);
    }

    /// The connection was lost (the library reconnects by itself).
    pub fn on_lost(&mut self, now: Now) {
        let now = now.instant;
        self.down(now);
        // Give the library's own reconnect the first step.
        self.link = Link::Recovering(0);
        self.deadline = Some(now + self.timing.window);
    }

    /// The session is (again) connected: a first connect, a reactivated
    /// session or a new one. Publishes must now come; ask for them.
    pub fn on_session(&mut self, now: Now) {
        let now = now.instant;
        if self.link == Link::Up {
            // Reconnected under us: what was in flight is lost.
            self.down(now);
        }
        if self.link != Link::Starting {
            self.link = Link::Recovering(0);
        }
        self.actions.push(Action::Republish);
        self.deadline = Some(now + self.timing.window);
    }

    /// The shell finished a long step (subscribing 10 000 items takes
    /// longer than a keep-alive window): the wait for a response starts
    /// now, so the ladder does not undo work that merely took time.
    pub fn on_step_done(&mut self, now: Now) {
        let now = now.instant;
        if self.link != Link::Up {
            self.deadline = Some(now + self.timing.window.max(self.timing.step));
        }
    }

    /// The time has come (call at [`next_deadline`](Self::next_deadline)
    /// or later).
    pub fn on_timeout(&mut self, now: Now) {
        let now = now.instant;
        let Some(deadline) = self.deadline else { return };
        if now < deadline {
            return;
        }
        match self.link {
            Link::Up | Link::Starting => {
                let was_up = self.link == Link::Up;
                if was_up {
                    self.down(now);
                } else {
                    self.since.get_or_insert(now);
                }
                self.link = Link::Recovering(1);
                self.actions.push(Action::Republish);
                self.deadline = Some(now + self.timing.step);
            }
            Link::Recovering(0 | 1) => {
                self.link = Link::Recovering(2);
                self.actions.push(Action::Recreate);
                self.deadline = Some(now + self.timing.step);
            }
            Link::Recovering(_) => {
                self.link = Link::Recovering(3);
                self.actions.push(Action::Reconnect);
                self.deadline = Some(now + self.timing.step + self.backoff);
                self.backoff = (self.backoff * 2).min(self.timing.max_backoff);
            }
        }
    }

    /// When [`on_timeout`](Self::on_timeout) is next due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The next thing to do, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        if self.actions.is_empty() { None } else { Some(self.actions.remove(0)) }
    }

    fn down(&mut self, now: Instant) {
        if self.link == Link::Up {
            self.outages += 1;
            self.since = Some(now);
            self.actions.push(Action::Stale);
        } else if self.link == Link::Starting {
            self.since.get_or_insert(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn timing() -> Timing {
        Timing {
            window: Duration::from_secs(3),
            step: Duration::from_secs(2),
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(4),
        }
    }

    /// A watchdog started now, and the instant `n` s later.
    fn started() -> (Watchdog, impl Fn(u64) -> Now) {
        let t0 = Now::now();
        (Watchdog::new(timing(), t0), move |n| t0 + Duration::from_secs(n))
    }

    fn drain(w: &mut Watchdog) -> Vec<Action> {
        std::iter::from_fn(|| w.poll_action()).collect()
    }

    #[test]
    fn silence_climbs_the_ladder_and_a_response_resyncs() {
        let (mut w, s) = started();
        w.on_session(s(0));
        assert_eq!(drain(&mut w), [Action::Republish]);
        w.on_activity(s(1));
        assert_eq!((drain(&mut w), w.link()), (vec![Action::Resync], Link::Up));
        // Keep-alives in time: nothing to do.
        w.on_activity(s(3));
        w.on_timeout(s(5));
        assert_eq!(drain(&mut w), []);
        // Silence past the window: stale at once, then the ladder.
        assert_eq!(w.next_deadline(), Some(s(6).instant));
        w.on_timeout(s(6));
        assert_eq!(drain(&mut w), [Action::Stale, Action::Republish]);
        w.on_timeout(s(7));
        assert_eq!(drain(&mut w), [], "not before the step is over");
        w.on_timeout(s(8));
        assert_eq!(drain(&mut w), [Action::Recreate]);
        w.on_timeout(s(10));
        assert_eq!(drain(&mut w), [Action::Reconnect]);
        // Backoff: step 2 s + 1 s, then + 2 s, then capped at + 4 s.
        assert_eq!(w.next_deadline(), Some(s(13).instant));
        w.on_timeout(s(13));
        assert_eq!(drain(&mut w), [Action::Reconnect]);
        assert_eq!(w.next_deadline(), Some(s(17).instant));
        w.on_timeout(s(17));
        w.on_timeout(s(23));
        w.on_timeout(s(29));
        assert_eq!(drain(&mut w), [Action::Reconnect; 3]);
        assert_eq!(w.next_deadline(), Some(s(35).instant));
        assert_eq!(w.outages(), 1);
        w.on_activity(s(30));
        assert_eq!((drain(&mut w), w.link()), (vec![Action::Resync], Link::Up));
        assert_eq!(w.last_recovery(), Some(Duration::from_secs(24)));
    }

    #[test]
    fn a_lost_connection_is_stale_at_once_and_the_library_gets_the_first_try() {
        let (mut w, s) = started();
        w.on_activity(s(0));
        drain(&mut w);
        w.on_lost(s(1));
        assert_eq!((drain(&mut w), w.link()), (vec![Action::Stale], Link::Recovering(0)));
        // The library reconnects: ask for publishes (the async-opcua 0.19
        // bug: none are sent after a new session otherwise).
        w.on_session(s(2));
        assert_eq!(drain(&mut w), [Action::Republish]);
        // Still silent (asyncua's transfer bug): recreate.
        w.on_timeout(s(5));
        assert_eq!(drain(&mut w), [Action::Recreate]);
        w.on_activity(s(6));
        assert_eq!(drain(&mut w), [Action::Resync]);
        assert_eq!(w.outages(), 1);
    }

    #[test]
    fn a_long_step_restarts_the_wait() {
        let (mut w, s) = started();
        w.on_session(s(0));
        drain(&mut w);
        // Subscribing took 10 s: the window starts after it.
        w.on_step_done(s(10));
        w.on_timeout(s(10));
        assert_eq!(drain(&mut w), []);
        assert_eq!(w.next_deadline(), Some(s(13).instant));
        w.on_activity(s(11));
        assert_eq!(drain(&mut w), [Action::Resync]);
        // Up: a step done changes nothing.
        w.on_step_done(s(12));
        assert_eq!(w.next_deadline(), Some(s(14).instant));
    }

    #[test]
    fn a_server_never_heard_from_climbs_the_ladder_without_a_stale() {
        let (mut w, s) = started();
        w.on_timeout(s(3));
        assert_eq!(drain(&mut w), [Action::Republish], "nothing was good: nothing to make stale");
        w.on_timeout(s(5));
        assert_eq!(drain(&mut w), [Action::Recreate]);
    }

    proptest! {
        /// Random events and times: Stale and Resync alternate (after the
        /// first Resync), no Resync without a response, no Stale while
        /// responses come in time, and the deadline never passes unheeded.
        #[test]
        fn stale_and_resync_alternate(ops in proptest::collection::vec((0_u8..4, 0_u64..8_000), 1..100)) {
            let t0 = Now::now();
            let mut w = Watchdog::new(timing(), t0);
            let mut now = t0;
            let mut good = false;
            for (op, dt) in ops {
                now += Duration::from_millis(dt);
                match op {
                    0 => w.on_activity(now),
                    1 => w.on_lost(now),
                    2 => w.on_session(now),
                    _ => w.on_timeout(now),
                }
                for a in drain(&mut w) {
                    match a {
                        Action::Stale => { prop_assert!(good, "stale twice"); good = false; }
                        Action::Resync => { prop_assert!(!good, "resync twice"); prop_assert_eq!(op, 0); good = true; }
                        _ => prop_assert!(op != 0, "a response climbs no ladder"),
                    }
                }
                prop_assert_eq!(good, w.link() == Link::Up);
                prop_assert!(w.next_deadline().is_some());
            }
        }
    }
}

//! The sans-IO polling session, driven with no sockets and no sleeps: time
//! is a value the test moves.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use shopfloor_bridge_modbus::RegisterMap;
use shopfloor_bridge_modbus::codec::Data;
use shopfloor_bridge_modbus::session::{Now, Output, ReadResult, Session};
use shopfloor_schemas::{Quality, Value};

/// One device, "plc": "temp" in the fast group, "count" and "far" in the
/// default one.
const MAP: &str = include_str!("fixtures/session.toml");

struct T {
    s: Session,
    base: Now,
    ms: u64,
}

impl T {
    fn new() -> Self {
        let map = RegisterMap::from_toml(MAP).unwrap();
        let base = Now::at_unix_ms(1_000_000);
        Self { s: Session::new(map.devices[0].clone(), &map.groups, base), base, ms: 0 }
    }

    /// A session after its first poll (of `memory(100, 1)`), its outputs
    /// taken.
    fn polled() -> Self {
        let mut t = Self::new();
        t.poll(&memory(100, 1));
        t.outputs();
        t
    }

    fn now(&self) -> Now {
        self.base + Duration::from_millis(self.ms)
    }

    fn at(&mut self, ms: u64) {
        self.ms = ms;
    }

    /// Polls what is due, answering each read from `memory`.
    fn poll(&mut self, memory: &[u16]) -> usize {
        let mut reads = 0;
        while let Some(reqs) = self.s.start_poll(self.now()) {
            for r in reqs {
                let (a, b) = (usize::from(r.start), r.end() as usize + 1);
                self.s.handle(&r, ReadResult::Data(Data::Registers(&memory[a..b])), self.now());
                reads += 1;
            }
        }
        reads
    }

    /// At `ms`, starts the poll due and answers its first read with
    /// `result`.
    fn answer_first_read(&mut self, ms: u64, result: ReadResult<'_>) {
        self.at(ms);
        let reqs = self.s.start_poll(self.now()).unwrap();
        self.s.handle(&reqs[0], result, self.now());
    }

    fn outputs(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.s.poll_output()).collect()
    }

    fn readings(&mut self) -> Vec<(String, Value, Quality)> {
        self.outputs()
            .into_iter()
            .filter_map(|o| if let Output::Readings(b) = o { Some(b) } else { None })
            .flat_map(|b| b.readings)
            .map(|r| (r.metric.to_string(), r.value, r.quality))
            .collect()
    }
}

fn memory(temp: i16, count: u16) -> Vec<u16> {
    let mut m = vec![0; 128];
    (m[0], m[1], m[100]) = (temp as u16, count, 7);
    m
}

fn r(name: &str, v: Value, q: Quality) -> (String, Value, Quality) {
    (name.into(), v, q)
}

#[test]
fn first_poll_publishes_everything_then_only_news() {
    let mut t = T::new();
    // The fast group reads "temp"; the default group "count" and "far"
    // (too far apart for one read).
    assert_eq!(t.poll(&memory(215, 3)), 3);
    let out = t.outputs();
    assert_eq!(out[0], Output::Reachable);
    let Output::Readings(b) = &out[1] else { panic!("{out:?}") };
    assert_eq!(b.source, "plc");
    assert_eq!(b.readings[0].timestamp.unix_ms(), 1_000_000);
    // 100 ms later only the fast group is due; nothing changed.
    t.at(100);
    assert_eq!(t.poll(&memory(215, 3)), 1);
    assert_eq!(t.readings(), []);
    // Within the deadband (0.4 < 0.5): nothing; beyond it: published.
    t.at(200);
    t.poll(&memory(219, 4));
    assert_eq!(t.readings(), []);
    t.at(300);
    t.poll(&memory(221, 4));
    assert_eq!(t.readings(), [r("temp", Value::F64(22.1), Quality::Good)]);
    // The slow group's turn: the count's change.
    t.at(1000);
    t.poll(&memory(221, 4));
    assert_eq!(t.readings(), [r("count", Value::I64(4), Quality::Good)]);
}

#[test]
fn a_late_poll_counts_overruns_instead_of_catching_up() {
    let mut t = T::new();
    t.poll(&memory(0, 0));
    assert_eq!(t.s.next_poll(), Some(t.base.instant + Duration::from_millis(100)));
    // 550 ms late: one poll now, 4 turns of the fast group missed.
    t.at(650);
    t.outputs();
    assert_eq!(t.poll(&memory(0, 0)), 1);
    assert_eq!(t.s.overruns(), 5);
    assert_eq!(t.outputs(), [Output::Overrun { group: "fast".into(), missed: 5 }]);
    assert_eq!(t.s.next_poll(), Some(t.base.instant + Duration::from_millis(700)));
}

#[test]
fn a_lost_device_goes_stale_and_the_first_good_answer_restores_it() {
    let mut t = T::polled();
    t.at(100);
    t.s.connection_lost("no answer within 1000 ms", t.now());
    let out = t.outputs();
    assert_eq!(out[0], Output::Unreachable { reason: "no answer within 1000 ms".into() });
    let Output::Readings(b) = &out[1] else { panic!("{out:?}") };
    assert!(b.readings.iter().all(|r| r.quality == Quality::Stale) && b.readings.len() == 3);
    // Once only.
    t.s.connection_lost("again", t.now());
    assert_eq!(t.outputs(), []);
    t.at(1000);
    t.poll(&memory(100, 1));
    // (The fast group missed its turns meanwhile: overruns, not news here.)
    let out: Vec<Output> =
        t.outputs().into_iter().filter(|o| !matches!(o, Output::Overrun { .. })).collect();
    assert_eq!(out[0], Output::Reachable);
    let Output::Readings(b) = &out[1] else { panic!("{out:?}") };
    assert!(b.readings.iter().all(|r| r.quality == Quality::Good), "{b:?}");
    assert_eq!(t.s.is_reachable(), Some(true));
}

#[test]
fn one_lost_read_is_bad_three_in_a_row_unreachable() {
    use shopfloor_bridge_modbus::session::UNREACHABLE_AFTER;
    let mut t = T::polled();
    for n in 1..=UNREACHABLE_AFTER {
        t.answer_first_read(u64::from(n) * 100, ReadResult::Lost("no answer within 1000 ms"));
        let out = t.outputs();
        if n < UNREACHABLE_AFTER {
            assert!(
                out.contains(&Output::TagError {
                    tag: "temp".into(),
                    reason: "no answer within 1000 ms".into()
                }),
                "{out:?}"
            );
            if n == 1 {
                // Bad once; the same bad value again is no news.
                let Output::Readings(b) = out.last().unwrap() else { panic!("{out:?}") };
                assert_eq!(
                    (b.readings.len(), b.readings[0].quality),
                    (1, Quality::Bad),
                    "only that read's tag"
                );
            }
            assert_eq!(t.s.is_reachable(), Some(true));
        } else {
            assert_eq!(out[0], Output::Unreachable { reason: "no answer within 1000 ms".into() });
            assert_eq!(t.s.is_reachable(), Some(false));
        }
    }
    // An answer in between starts the count again.
    let mut t = T::polled();
    for n in 1..=2 * UNREACHABLE_AFTER {
        let answer = if n % 2 == 0 {
            ReadResult::Data(Data::Registers(&[100]))
        } else {
            ReadResult::Lost("gone")
        };
        t.answer_first_read(u64::from(n) * 100, answer);
    }
    assert_eq!(t.s.is_reachable(), Some(true));
}

#[test]
fn an_exception_makes_the_reads_tags_bad_with_the_reason() {
    let mut t = T::polled();
    t.answer_first_read(100, ReadResult::Exception(4));
    let out = t.outputs();
    assert!(out.contains(&Output::TagError {
        tag: "temp".into(),
        reason: "exception 4 (server device failure)".into()
    }));
    let bad: Vec<_> = t.readings();
    assert_eq!(bad, []);
    let Output::Readings(b) = out.last().unwrap() else { panic!("{out:?}") };
    assert!(b.readings.iter().all(|r| r.quality == Quality::Bad));
}

#[test]
fn illegal_data_address_replans_and_polls_again_at_once() {
    let mut t = T::new();
    let mut m = RegisterMap::from_toml(MAP).unwrap();
    m.devices[0].max_gap = 200;
    t.s = Session::new(m.devices[0].clone(), &m.groups, t.base);
    // With gaps of 200 allowed, fast reads 0..=1 and default 1..=100 merge
    // "count" and "far": the device refuses 1..=100.
    t.poll(&memory(0, 0));
    let reqs = t.s.start_poll(t.now());
    assert!(reqs.is_none());
    t.at(1000);
    let due: Vec<_> = std::iter::from_fn(|| t.s.start_poll(t.now())).flatten().collect();
    let merged = due.iter().find(|r| r.count == 100).cloned().expect("count and far merged");
    t.outputs();
    t.s.handle(&merged, ReadResult::Exception(2), t.now());
    assert!(matches!(t.outputs()[..], [Output::Replanned { reads: 3 }]), "one read each now");
    assert_eq!(t.s.next_poll(), Some(t.now().instant), "polled again at once");
}

proptest! {
    /// Whatever answers come in whatever order, the session never panics,
    /// and every reading it publishes is of a configured tag.
    #[test]
    fn any_answers_are_handled(answers in prop::collection::vec((0_u8..4, any::<u16>(), 0_u8..12, 0_u64..3000), 0..60)) {
        let mut t = T::new();
        for (kind, word, code, dt) in answers {
            t.at(t.ms + dt);
            if let Some(reqs) = t.s.start_poll(t.now()) {
                for r in reqs {
                    let regs = vec![word; usize::from(r.count) + usize::from(kind == 3)];
                    let result = match kind {
                        0 | 3 => ReadResult::Data(Data::Registers(&regs)),
                        1 => ReadResult::Exception(code),
                        _ => ReadResult::Lost("gone"),
                    };
                    t.s.handle(&r, result, t.now());
                }
            }
            for (name, _, _) in t.readings() {
                prop_assert!(["temp", "count", "far"].contains(&name.as_str()));
            }
        }
    }
}

#[test]
fn groups_with_their_own_intervals() {
    let map = RegisterMap::from_toml(MAP).unwrap();
    let s = Session::new(map.devices[0].clone(), &map.groups, Now::at_unix_ms(0));
    let every: BTreeMap<&str, Duration> =
        s.plan().groups.iter().map(|g| (g.0.as_str(), g.1)).collect();
    assert_eq!(every["fast"], Duration::from_millis(100));
    assert_eq!(every["default"], Duration::from_secs(1));
}

use proptest::prelude::*;
use shopfloor_schemas::{Reading, Timestamp};

use super::*;
use LevelKind::{High as H, HighHigh as HH};

/// The rules every test here runs: on sources `press-*`, a rule a feature
/// (limits, delays, stale, latch, suppression, rate, confirmation).
const RULES: &str = include_str!("fixtures/rules.toml");

fn engine() -> Engine {
    Engine::new(RuleSet::from_toml(RULES, "test.toml").unwrap())
}

fn key(rule: &str, metric: &str) -> AlarmKey {
    AlarmKey { rule: rule.into(), source: "press-1".into(), metric: metric.into() }
}

/// The engine's clock at `ms` UTC ms (the tests count in ms from 0).
fn ms(ms: u64) -> Now {
    Now::at_unix_ms(ms)
}

fn send(e: &mut Engine, metric: &str, value: f64, quality: Quality, now: u64) {
    let b = Batch::new("press-1")
        .with(Reading::new(metric, Timestamp::from_unix_ms(now), value).with_quality(quality));
    e.handle_batch(&b, ms(now));
}

fn events(e: &mut Engine) -> Vec<(String, u64, EventKind)> {
    std::iter::from_fn(|| e.poll_event()).map(|ev| (ev.key.rule, ev.instance, ev.kind)).collect()
}

fn ack(e: &mut Engine, k: AlarmKey, now: u64) -> Result<(), CommandError> {
    e.handle_command(
        Command::Acknowledge { key: k, user: "op".into(), comment: "seen".into() },
        ms(now),
    )
}

fn send_history(e: &mut Engine, metric: &str, value: f64, quality: Quality, at: u64, now: u64) {
    let b = Batch::new("press-1")
        .with(Reading::new(metric, Timestamp::from_unix_ms(at), value).with_quality(quality));
    e.handle_historical(&b, ms(now));
}

fn confirm(e: &mut Engine, k: AlarmKey, now: u64) -> Result<(), CommandError> {
    e.handle_command(
        Command::Confirm { key: k, user: "op".into(), comment: "fixed".into() },
        ms(now),
    )
}

#[test]
fn an_alarm_worse_while_waiting_for_confirmation_needs_acknowledging_first() {
    let mut e = engine();
    let k = key("tank", "tank");
    send(&mut e, "tank", 12.0, Quality::Good, 0);
    ack(&mut e, k.clone(), 1).unwrap();
    let s = e.state(&k).unwrap();
    assert!(s.unconfirmed && !s.unacknowledged);
    // Worse: acknowledged again before anything else, never both owed.
    send(&mut e, "tank", 25.0, Quality::Good, 2);
    let s = e.state(&k).unwrap();
    assert!(s.unacknowledged && !s.unconfirmed);
    assert_eq!(
        confirm(&mut e, k.clone(), 3),
        Err(CommandError::NotNow { key: k.clone(), why: "acknowledge it first" })
    );
    let saved = e.persisted();
    assert!(saved[0].unacknowledged && !saved[0].unconfirmed);
    ack(&mut e, k.clone(), 4).unwrap();
    assert!(e.state(&k).unwrap().unconfirmed);
    confirm(&mut e, k.clone(), 5).unwrap();
    let s = e.state(&k).unwrap();
    assert!(!s.unconfirmed && !s.unacknowledged);
    // A journal from before this rule (both flags) restores as unacknowledged.
    let mut both = saved.clone();
    both[0].unconfirmed = true;
    let mut e = engine();
    assert_eq!(e.restore(&both), 1);
    let s = e.state(&k).unwrap();
    assert!(s.unacknowledged && !s.unconfirmed);
}

#[test]
fn a_rule_with_confirm_closes_only_when_confirmed() {
    let mut e = engine();
    let k = key("level", "level");
    // Acknowledged while active, confirmed while active: closes on return.
    send(&mut e, "level", 12.0, Quality::Good, 0);
    assert_eq!(
        confirm(&mut e, k.clone(), 1),
        Err(CommandError::NotNow { key: k.clone(), why: "acknowledge it first" })
    );
    ack(&mut e, k.clone(), 2).unwrap();
    assert!(e.state(&k).unwrap().unconfirmed);
    confirm(&mut e, k.clone(), 3).unwrap();
    send(&mut e, "level", 5.0, Quality::Good, 4);
    let ev = events(&mut e);
    assert!(matches!(ev[1].2, EventKind::Acknowledged { closed: false, .. }));
    assert!(
        matches!(&ev[2].2, EventKind::Confirmed { user, comment, closed: false } if user == "op" && comment == "fixed")
    );
    assert_eq!(ev[3].2, EventKind::ReturnedToNormal { closed: true });
    assert!(e.persisted().is_empty(), "nothing left to remember");

    // Returned first: acknowledged, still open; confirmed, closed.
    send(&mut e, "level", 12.0, Quality::Good, 10);
    send(&mut e, "level", 5.0, Quality::Good, 11);
    ack(&mut e, k.clone(), 12).unwrap();
    let ev = events(&mut e);
    assert_eq!(ev[1].2, EventKind::ReturnedToNormal { closed: false });
    assert!(matches!(ev[2].2, EventKind::Acknowledged { closed: false, .. }));
    // Waiting for confirmation survives a restart.
    let saved = e.persisted();
    assert_eq!(saved.len(), 1);
    assert!(saved[0].unconfirmed && !saved[0].unacknowledged && saved[0].active.is_none());
    let mut e = engine();
    assert_eq!(e.restore(&saved), 1);
    assert!(e.state(&k).unwrap().unconfirmed);
    confirm(&mut e, k.clone(), 13).unwrap();
    assert!(matches!(&events(&mut e)[..], [(_, 2, EventKind::Confirmed { closed: true, .. })]));
    assert_eq!(
        confirm(&mut e, k.clone(), 14),
        Err(CommandError::NotNow { key: k, why: "it is not waiting for confirmation" })
    );
    // A rule without `confirm` closes on acknowledgement and refuses it.
    send(&mut e, "pressure", 165.0, Quality::Good, 20);
    ack(&mut e, key("pressure", "pressure"), 21).unwrap();
    assert!(!e.state(&key("pressure", "pressure")).unwrap().unconfirmed);
    assert!(confirm(&mut e, key("pressure", "pressure"), 22).is_err());
}

#[test]
fn history_is_journaled_as_late_and_never_changes_the_live_state() {
    let mut e = engine();
    let k = key("pressure", "pressure");
    send(&mut e, "pressure", 100.0, Quality::Good, 1_000);
    // Replayed after a reconnect: an excursion an hour ago.
    for (at, v) in [(10, 100.0), (20, 165.0), (30, 170.0), (40, 185.0), (50, 120.0), (60, 110.0)] {
        send_history(&mut e, "pressure", v, Quality::Good, at, 2_000);
    }
    // Bad history says nothing; a rate rule ignores history.
    send_history(&mut e, "pressure", 300.0, Quality::Bad, 70, 2_000);
    send_history(&mut e, "oil", 0.0, Quality::Good, 70, 2_000);
    send_history(&mut e, "oil", 1_000.0, Quality::Good, 71, 2_000);
    let all: Vec<Event> = std::iter::from_fn(|| e.poll_event()).collect();
    assert!(all.iter().all(|ev| !ev.annunciate && ev.time == 2_000 && ev.key == k));
    let late: Vec<(Option<Condition>, u64)> = all
        .iter()
        .map(|ev| match ev.kind {
            EventKind::Late { condition, sampled, .. } => (condition, sampled),
            ref other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        late,
        [(Some(Condition::Level(H)), 20), (Some(Condition::Level(HH)), 40), (None, 50),]
    );
    let s = e.state(&k).unwrap();
    assert!(s.active.is_none() && !s.unacknowledged && s.instance == 0);
    // Live data still raises, and history while active changes nothing live.
    send(&mut e, "pressure", 165.0, Quality::Good, 3_000);
    send_history(&mut e, "pressure", 100.0, Quality::Good, 2_500, 3_001);
    let ev = events(&mut e);
    assert!(matches!(ev[0].2, EventKind::Raised { .. }));
    assert_eq!(ev.len(), 1, "normal history after normal history: no event");
    assert_eq!(e.state(&k).unwrap().active, Some(Condition::Level(H)));
}

#[test]
fn raise_acknowledge_return() {
    let mut e = engine();
    send(&mut e, "pressure", 100.0, Quality::Good, 0);
    assert_eq!(events(&mut e), []);
    send(&mut e, "pressure", 185.0, Quality::Good, 10);
    let raised =
        EventKind::Raised { condition: Condition::Level(HH), priority: 900, value: Some(185.0) };
    assert_eq!(events(&mut e), [("pressure".into(), 1, raised)]);
    ack(&mut e, key("pressure", "pressure"), 20).unwrap();
    assert!(matches!(&events(&mut e)[..], [(_, 1, EventKind::Acknowledged { closed: false, .. })]));
    assert_eq!(
        ack(&mut e, key("pressure", "pressure"), 21),
        Err(CommandError::NotUnacknowledged(key("pressure", "pressure")))
    );
    // Better: no new acknowledgement needed.
    send(&mut e, "pressure", 170.0, Quality::Good, 30);
    assert!(matches!(
        &events(&mut e)[..],
        [(_, 1, EventKind::Changed { condition: Condition::Level(H), priority: 500, .. })]
    ));
    assert!(!e.state(&key("pressure", "pressure")).unwrap().unacknowledged);
    send(&mut e, "pressure", 100.0, Quality::Good, 40);
    assert_eq!(
        events(&mut e),
        [("pressure".into(), 1, EventKind::ReturnedToNormal { closed: true })]
    );
    // The next activation is a new instance.
    send(&mut e, "pressure", 165.0, Quality::Good, 50);
    assert!(matches!(&events(&mut e)[..], [(_, 2, EventKind::Raised { .. })]));
}

#[test]
fn return_to_normal_unacknowledged_waits_for_the_acknowledgement() {
    let mut e = engine();
    send(&mut e, "pressure", 165.0, Quality::Good, 0);
    send(&mut e, "pressure", 100.0, Quality::Good, 1);
    let ev = events(&mut e);
    assert_eq!(ev[1].2, EventKind::ReturnedToNormal { closed: false });
    assert!(e.state(&key("pressure", "pressure")).unwrap().unacknowledged);
    ack(&mut e, key("pressure", "pressure"), 2).unwrap();
    assert!(matches!(&events(&mut e)[..], [(_, 1, EventKind::Acknowledged { closed: true, .. })]));
}

#[test]
fn bad_input_freezes_the_alarm_and_is_never_a_return_to_normal() {
    let mut e = engine();
    send(&mut e, "pressure", 165.0, Quality::Good, 0);
    events(&mut e);
    send(&mut e, "pressure", 0.0, Quality::Bad, 10);
    assert_eq!(
        events(&mut e),
        [("pressure".into(), 1, EventKind::BadInput { reason: "bad quality".into() })]
    );
    let s = e.state(&key("pressure", "pressure")).unwrap();
    assert_eq!((s.active, s.bad_input), (Some(Condition::Level(H)), true));
    e.handle_timeout(ms(1_000_000));
    send(&mut e, "pressure", f64::NAN, Quality::Good, 20);
    send(&mut e, "pressure", 300.0, Quality::Good, 30);
    let ev = events(&mut e);
    assert!(ev.iter().all(|x| matches!(x.2, EventKind::BadInput { .. })), "{ev:?}");
    assert!(
        matches!(&ev[1].2, EventKind::BadInput { reason } if reason.contains("instrument range"))
    );
    // Good input again: restored, then the condition's own verdict.
    send(&mut e, "pressure", 100.0, Quality::Good, 40);
    assert_eq!(
        events(&mut e).into_iter().map(|x| x.2).collect::<Vec<_>>(),
        [EventKind::InputRestored, EventKind::ReturnedToNormal { closed: false }]
    );
}

#[test]
fn delays_run_on_the_timeout() {
    let mut e = engine();
    send(&mut e, "temp", 90.0, Quality::Good, 0);
    assert_eq!(events(&mut e), []);
    assert_eq!(e.next_timeout(), Some(2000));
    e.handle_timeout(ms(2000));
    assert!(matches!(&events(&mut e)[..], [(r, 1, EventKind::Raised { .. })] if r == "slow"));
    send(&mut e, "temp", 50.0, Quality::Good, 2500);
    e.handle_timeout(ms(3000));
    assert_eq!(events(&mut e), []);
    assert_eq!(e.next_timeout(), Some(5500), "stale at 2500 + 3000, the off-delay at 7500");
    e.handle_timeout(ms(7500));
    let ev = events(&mut e);
    assert!(
        ev.iter().any(|x| x.0 == "slow" && x.2 == EventKind::ReturnedToNormal { closed: false }),
        "{ev:?}"
    );
}

#[test]
fn silence_raises_stale_on_the_timer_and_a_sample_clears_it() {
    let mut e = engine();
    send(&mut e, "temp", 20.0, Quality::Good, 0);
    assert_eq!(e.next_timeout(), Some(3000));
    e.handle_timeout(ms(2999));
    assert_eq!(events(&mut e), []);
    e.handle_timeout(ms(3000));
    let raised = EventKind::Raised { condition: Condition::On, priority: 500, value: Some(20.0) };
    assert_eq!(events(&mut e), [("silent".into(), 1, raised)]);
    send(&mut e, "temp", 21.0, Quality::Good, 3500);
    assert_eq!(
        events(&mut e),
        [("silent".into(), 1, EventKind::ReturnedToNormal { closed: false })]
    );
}

fn kinds(e: &mut Engine) -> Vec<(EventKind, bool)> {
    std::iter::from_fn(|| e.poll_event()).map(|ev| (ev.kind, ev.annunciate)).collect()
}

fn door(e: &mut Engine, open: bool, now: u64) {
    let b = Batch::new("press-1").with(Reading::new("door", Timestamp::from_unix_ms(now), open));
    e.handle_batch(&b, ms(now));
}

#[test]
fn a_latched_alarm_stays_active_until_reset_and_reset_only_when_normal() {
    let mut e = engine();
    let k = key("door", "door");
    door(&mut e, true, 0);
    door(&mut e, false, 10);
    assert_eq!(kinds(&mut e).len(), 1, "raised, and no return: latched");
    let s = e.state(&k).unwrap();
    assert_eq!((s.active, s.latched), (Some(Condition::On), true));
    // Active again before the reset: the same instance.
    door(&mut e, true, 20);
    assert!(matches!(&kinds(&mut e)[..], [(EventKind::Changed { .. }, true)]));
    let reset = |e: &mut Engine| {
        e.handle_command(Command::ResetLatch { key: k.clone(), user: "op".into() }, ms(30))
    };
    assert!(matches!(reset(&mut e), Err(CommandError::NotNow { .. })), "still open: no reset");
    door(&mut e, false, 40);
    reset(&mut e).unwrap();
    assert_eq!(
        kinds(&mut e),
        [
            (EventKind::LatchReset { user: "op".into() }, true),
            (EventKind::ReturnedToNormal { closed: false }, true)
        ]
    );
    assert_eq!(e.state(&k).unwrap().active, None);
}

#[test]
fn shelving_silences_annunciation_one_shot_or_for_a_time() {
    let mut e = engine();
    let k = key("pressure", "pressure");
    send(&mut e, "pressure", 100.0, Quality::Good, 0);
    let shelve = |e: &mut Engine, d: Option<Duration>, now| {
        e.handle_command(
            Command::Shelve {
                key: k.clone(),
                user: "op".into(),
                comment: "valve work".into(),
                duration: d,
            },
            ms(now),
        )
    };
    // One-shot: ends when the condition next returns to normal.
    shelve(&mut e, None, 1).unwrap();
    send(&mut e, "pressure", 165.0, Quality::Good, 2);
    send(&mut e, "pressure", 100.0, Quality::Good, 3);
    let k1 = kinds(&mut e);
    assert_eq!(
        k1[0],
        (EventKind::Shelved { user: "op".into(), comment: "valve work".into(), until: None }, true)
    );
    assert!(matches!(k1[1], (EventKind::Raised { .. }, false)), "not annunciated: {k1:?}");
    assert!(matches!(k1[2], (EventKind::ReturnedToNormal { .. }, false)));
    assert_eq!(k1[3], (EventKind::Unshelved { user: None }, true));
    // Timed: at most the rule's maximum (8 h by default), ends by timer.
    assert!(matches!(
        shelve(&mut e, Some(Duration::from_secs(9 * 3600)), 4),
        Err(CommandError::ShelveTooLong { .. })
    ));
    shelve(&mut e, Some(Duration::from_secs(60)), 1000).unwrap();
    assert_eq!(e.next_timeout(), Some(61_000));
    send(&mut e, "pressure", 165.0, Quality::Good, 2000);
    e.handle_timeout(ms(61_000));
    let k2 = kinds(&mut e);
    assert!(matches!(k2[1], (EventKind::Raised { .. }, false)));
    assert_eq!(k2[2], (EventKind::Unshelved { user: None }, true));
    assert!(matches!(
        e.handle_command(Command::Unshelve { key: k.clone(), user: "op".into() }, ms(62_000)),
        Err(CommandError::NotNow { .. })
    ));
}

#[test]
fn a_rate_rule_judges_in_event_time() {
    let mut e = engine();
    // Arrival time is irrelevant: the readings carry their own times.
    let at = |e: &mut Engine, t: u64, x: f64| {
        let b = Batch::new("press-1").with(Reading::new("oil", Timestamp::from_unix_ms(t), x));
        e.handle_batch(&b, ms(999_999));
    };
    at(&mut e, 0, 0.0);
    at(&mut e, 1000, 1.0);
    assert_eq!(kinds(&mut e), []);
    at(&mut e, 2000, 10.0);
    assert!(matches!(
        &kinds(&mut e)[..],
        [(EventKind::Raised { condition: Condition::On, value: Some(10.0), .. }, true)]
    ));
    // NaN is bad input, not a rate.
    at(&mut e, 2500, f64::NAN);
    assert!(matches!(&kinds(&mut e)[..], [(EventKind::BadInput { .. }, true)]));
    at(&mut e, 15_000, 10.0);
    assert_eq!(
        kinds(&mut e).into_iter().map(|k| k.0).collect::<Vec<_>>(),
        [EventKind::InputRestored, EventKind::ReturnedToNormal { closed: false }]
    );
}

#[test]
fn the_kpis_and_the_flood_meta_alarm() {
    let mut e = engine();
    let k = key("pressure", "pressure");
    // 11 activations in 11 s: a flood (more than 10 in 10 min), and
    // chattering (3 or more in 60 s).
    for n in 0..11 {
        send(&mut e, "pressure", 165.0, Quality::Good, n * 1000);
        send(&mut e, "pressure", 100.0, Quality::Good, n * 1000 + 500);
    }
    let floods: Vec<Event> =
        std::iter::from_fn(|| e.poll_event()).filter(|ev| ev.key.rule == FLOOD).collect();
    assert_eq!(floods.len(), 1, "{floods:?}");
    assert_eq!(floods[0].key.source, "plant");
    assert!(matches!(floods[0].kind, EventKind::Raised { priority: 800, value: Some(11.0), .. }));
    assert_eq!(floods[0].time, 10_000, "raised by the 11th activation");
    let kpis = e.kpis(ms(11_000));
    assert_eq!(kpis.len(), 1);
    let plant = &kpis[0];
    assert_eq!((plant.area.as_str(), plant.activations, plant.flood), ("plant", 11, true));
    assert_eq!(plant.chattering, std::slice::from_ref(&k));
    assert_eq!(plant.bad_actors, [(k.clone(), 11)]);
    assert_eq!(plant.stale, []);
    // The flood ends when the window slides past the first activations.
    assert_eq!(e.next_timeout(), Some(600_000));
    e.handle_timeout(ms(600_000));
    let rtn: Vec<EventKind> = std::iter::from_fn(|| e.poll_event())
        .filter(|ev| ev.key.rule == FLOOD)
        .map(|ev| ev.kind)
        .collect();
    assert_eq!(rtn, [EventKind::ReturnedToNormal { closed: false }]);
    assert!(!e.kpis(ms(600_000))[0].flood);
    // An alarm active for more than 24 h is stale.
    send(&mut e, "pressure", 170.0, Quality::Good, 700_000);
    assert_eq!(e.kpis(ms(700_000 + 24 * 3_600_000 + 1))[0].stale, [k]);
}

#[test]
fn suppressed_by_design_while_the_machine_is_stopped() {
    let mut e = engine();
    let k = key("hot-when-running", "bearing");
    let running = |e: &mut Engine, on: bool, now: u64| {
        let b =
            Batch::new("press-1").with(Reading::new("running", Timestamp::from_unix_ms(now), on));
        e.handle_batch(&b, ms(now));
    };
    // Stopped before the alarm exists (reported by exception, once).
    running(&mut e, false, 0);
    send(&mut e, "bearing", 95.0, Quality::Good, 10);
    let ev = kinds(&mut e);
    assert!(
        matches!(&ev[..], [(EventKind::Raised { .. }, false)]),
        "evaluated, not annunciated: {ev:?}"
    );
    assert!(e.state(&k).unwrap().suppressed);
    // Started: released (the change is journaled, not annunciated).
    running(&mut e, true, 20);
    assert_eq!(kinds(&mut e), [(EventKind::Unsuppressed, false)]);
    send(&mut e, "bearing", 80.0, Quality::Good, 30);
    send(&mut e, "bearing", 95.0, Quality::Good, 40);
    let ev = kinds(&mut e);
    assert!(matches!(ev[1], (EventKind::Raised { .. }, true)), "{ev:?}");
    running(&mut e, false, 50);
    assert_eq!(kinds(&mut e), [(EventKind::Suppressed, false)]);
    // Another press's state does not touch this one.
    let b = Batch::new("press-2").with(Reading::new("running", Timestamp::from_unix_ms(60), true));
    e.handle_batch(&b, ms(60));
    assert!(e.state(&k).unwrap().suppressed);
}

#[test]
fn a_restart_restores_acknowledged_and_shelved_alarms_without_announcing_them_again() {
    let mut e = engine();
    send(&mut e, "pressure", 170.0, Quality::Good, 0);
    ack(&mut e, key("pressure", "pressure"), 1).unwrap();
    door(&mut e, true, 2);
    door(&mut e, false, 3); // latched
    let shelve = Command::Shelve {
        key: key("door", "door"),
        user: "op".into(),
        comment: "door sensor loose".into(),
        duration: Some(Duration::from_secs(60)),
    };
    e.handle_command(shelve, ms(4)).unwrap();
    kinds(&mut e);
    let saved = e.persisted();
    assert_eq!(saved.len(), 2, "{saved:?}");

    let mut again = engine();
    assert_eq!(again.restore(&saved), 2);
    // Still beyond H: nothing to announce; already acknowledged.
    send(&mut again, "pressure", 171.0, Quality::Good, 10);
    assert_eq!(kinds(&mut again), []);
    assert_eq!(
        ack(&mut again, key("pressure", "pressure"), 11),
        Err(CommandError::NotUnacknowledged(key("pressure", "pressure")))
    );
    let door_state = again.state(&key("door", "door")).unwrap();
    assert_eq!(
        (door_state.active, door_state.latched, door_state.shelved),
        (Some(Condition::On), true, Some(Some(60_004)))
    );
    // Back to normal: the same instance ends, and the next is new.
    send(&mut again, "pressure", 100.0, Quality::Good, 12);
    send(&mut again, "pressure", 170.0, Quality::Good, 13);
    let ev: Vec<(String, u64, EventKind)> = events(&mut again);
    assert_eq!(ev[0], ("pressure".into(), 1, EventKind::ReturnedToNormal { closed: true }));
    assert!(
        matches!(ev[1], (_, 3, EventKind::Raised { .. })),
        "after the restored 1 and 2: {ev:?}"
    );
    // A rule that is gone: its state is skipped.
    let mut other = Engine::new(RuleSet::default());
    assert_eq!(other.restore(&saved), 0);
}

#[test]
fn out_of_service_alarms_are_not_evaluated() {
    let mut e = engine();
    let k = key("pressure", "pressure");
    send(&mut e, "pressure", 100.0, Quality::Good, 0);
    let oos = Command::OutOfService {
        key: k.clone(),
        user: "tech".into(),
        comment: "sensor swap".into(),
    };
    e.handle_command(oos.clone(), ms(1)).unwrap();
    assert!(matches!(e.handle_command(oos, ms(2)), Err(CommandError::NotNow { .. })));
    send(&mut e, "pressure", 200.0, Quality::Good, 3);
    send(&mut e, "pressure", 0.0, Quality::Bad, 4);
    assert_eq!(kinds(&mut e).len(), 1, "only the out-of-service event");
    assert!(e.state(&k).unwrap().out_of_service);
    e.handle_command(Command::InService { key: k.clone(), user: "tech".into() }, ms(5)).unwrap();
    send(&mut e, "pressure", 200.0, Quality::Good, 6);
    let ev = kinds(&mut e);
    assert_eq!(ev[0], (EventKind::InService { user: "tech".into() }, true));
    assert!(matches!(ev[1], (EventKind::Raised { .. }, true)));
    assert!(matches!(
        e.handle_command(
            Command::Acknowledge {
                key: key("nope", "x"),
                user: "op".into(),
                comment: String::new()
            },
            ms(7)
        ),
        Err(CommandError::Unknown(_))
    ));
}

proptest! {
    /// Random readings, qualities, acknowledgements and time: no return
    /// to normal while the input is bad, acknowledgement accepted only
    /// of an unacknowledged alarm, a raise only on good input beyond a
    /// limit, and instances only ever grow.
    #[test]
    fn lifecycle_invariants(steps in proptest::collection::vec((0_u8..7, 0.0_f64..260.0, 1_u64..3000), 1..80)) {
        let mut e = engine();
        let k = key("pressure", "pressure");
        let mut now = 0;
        let mut bad = false;
        let mut last_instance = 0;
        for (op, value, dt) in steps {
            now += dt;
            let before = e.state(&k);
            if op == 6 {
                send_history(&mut e, "pressure", value, Quality::Good, now / 2, now);
                if before.is_some() {
                    prop_assert_eq!(e.state(&k), before, "history changed the live state");
                }
                while let Some(ev) = e.poll_event() {
                    let late = matches!(ev.kind, EventKind::Late { .. });
                    prop_assert!(late && !ev.annunciate, "history made {:?}", ev);
                }
                continue;
            }
            match op {
                0 => {
                    let r = ack(&mut e, k.clone(), now);
                    let unacked = before.as_ref().is_some_and(|s| s.unacknowledged);
                    prop_assert_eq!(r.is_ok(), unacked);
                }
                1 => send(&mut e, "pressure", value, Quality::Bad, now),
                2 => e.handle_timeout(ms(now)),
                _ => send(&mut e, "pressure", value, Quality::Good, now),
            }
            while let Some(ev) = e.poll_event() {
                if ev.key.rule == FLOOD {
                    continue;
                }
                prop_assert!(ev.instance >= last_instance);
                last_instance = ev.instance;
                match ev.kind {
                    EventKind::BadInput { .. } => bad = true,
                    EventKind::InputRestored => bad = false,
                    EventKind::ReturnedToNormal { .. } => prop_assert!(!bad, "RTN on bad input"),
                    EventKind::Raised { .. } | EventKind::Changed { .. } => {
                        prop_assert!(!bad);
                        prop_assert!((3..6).contains(&op) && value > 160.0 - 2.0, "raised by {op} {value}");
                    }
                    EventKind::Acknowledged { .. } => prop_assert_eq!(op, 0),
                    other => prop_assert!(false, "unexpected {other:?}"),
                }
            }
        }
    }
}

/// A reload keeps what the alarms of remaining rules must remember (an
/// active, unacknowledged alarm stays so, with its instance) and judges
/// the next reading by the new limits; the alarms of a removed rule go.
#[test]
fn a_reload_carries_alarms_over_and_applies_the_new_limits() {
    let mut e = engine();
    let k = key("pressure", "pressure");
    send(&mut e, "pressure", 170.0, Quality::Good, 0);
    send(&mut e, "door", 1.0, Quality::Good, 0);
    let raised = events(&mut e);
    let instance = raised.iter().find(|(r, ..)| r == "pressure").map(|(_, i, _)| *i).unwrap();
    assert!(e.state(&k).unwrap().active.is_some());

    // H moves from 160 to 175; the door rule is gone.
    let rules = RULES
        .replace("h = { limit = 160.0, deadband = 2.0 }", "h = { limit = 175.0, deadband = 2.0 }")
        .replace("name = \"door\"", "name = \"gate\"");
    let carried = e.reload(RuleSet::from_toml(&rules, "test.toml").unwrap());
    assert_eq!(carried, 1, "the pressure alarm; the door rule is gone");
    assert!(events(&mut e).is_empty(), "a reload itself says nothing");
    let state = e.state(&k).unwrap();
    assert!(state.active.is_some() && state.unacknowledged, "carried over");
    assert!(e.state(&key("door", "door")).is_none());

    // 170 is below the new H: back to normal, same instance.
    send(&mut e, "pressure", 170.0, Quality::Good, 10);
    let ev = events(&mut e);
    assert!(
        ev.iter().any(|(r, i, kind)| r == "pressure"
            && *i == instance
            && matches!(kind, EventKind::ReturnedToNormal { .. })),
        "{ev:?}"
    );
}

//! The JSON form of events, shared by the MQTT driver and the journal.

use serde_json::{Value as Json, json};

use crate::engine::{Condition, Event, EventKind};

/// The JSON of an event.
pub fn event_json(e: &Event) -> Json {
    let mut j = json!({
        "rule": e.key.rule, "source": e.key.source, "metric": e.key.metric, "area": e.area,
        "instance": e.instance, "time": e.time, "annunciate": e.annunciate,
    });
    let condition = |c: &Condition| match c {
        Condition::Level(l) => l.code().to_owned(),
        Condition::On => "ON".to_owned(),
    };
    let (name, extra) = match &e.kind {
        EventKind::Raised { condition: c, priority, value } => {
            ("raised", json!({"condition": condition(c), "priority": priority, "value": value}))
        }
        EventKind::Changed { condition: c, priority, value } => {
            ("changed", json!({"condition": condition(c), "priority": priority, "value": value}))
        }
        EventKind::ReturnedToNormal { closed } => ("returned_to_normal", json!({"closed": closed})),
        EventKind::Acknowledged { user, comment, closed } => {
            ("acknowledged", json!({"user": user, "comment": comment, "closed": closed}))
        }
        EventKind::BadInput { reason } => ("bad_input", json!({"reason": reason})),
        EventKind::InputRestored => ("input_restored", json!({})),
        EventKind::Shelved { user, comment, until } => {
            ("shelved", json!({"user": user, "comment": comment, "until": until}))
        }
        EventKind::Unshelved { user } => ("unshelved", json!({"user": user})),
        EventKind::LatchReset { user } => ("latch_reset", json!({"user": user})),
        EventKind::OutOfService { user, comment } => {
            ("out_of_service", json!({"user": user, "comment": comment}))
        }
        EventKind::InService { user } => ("in_service", json!({"user": user})),
        EventKind::Confirmed { user, comment, closed } => {
            ("confirmed", json!({"user": user, "comment": comment, "closed": closed}))
        }
        EventKind::Late { condition: c, value, sampled } => (
            "late",
            json!({"condition": c.as_ref().map(condition), "value": value, "sampled": sampled}),
        ),
        EventKind::Suppressed => ("suppressed", json!({})),
        EventKind::Unsuppressed => ("unsuppressed", json!({})),
    };
    j["event"] = name.into();
    if let (Some(o), Json::Object(x)) = (j.as_object_mut(), extra) {
        o.extend(x);
    }
    j
}

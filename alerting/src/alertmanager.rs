//! Alerts for Prometheus Alertmanager's API v2 (feature `alertmanager`).
//!
//! Each active, annunciated alarm is an alert whose labels identify it
//! (`alertname` is the rule; `source`, `metric`, `area`, `class`,
//! `priority`, `condition`) and whose annotations say what it is
//! (`summary`, `value`). An alert is sent on every change and again every
//! resend interval with `endsAt = now + 4 × resend`, so Alertmanager
//! resolves it by itself if the alerting daemon dies; a cleared,
//! shelved or suppressed alarm is sent once with `endsAt = now`. A
//! `Watchdog` alert always fires, so a silent daemon is noticed.
//!
//! Alertmanager cannot acknowledge, shelve or latch, and resolves what
//! stops being sent: here it is a notification channel; the lifecycle
//! lives in the engine. Give the route for plant alarms a `group_wait` of
//! about a second (its default is 30 s).

use std::time::Duration;

use serde_json::{Value as Json, json};

use crate::engine::{AlarmView, Condition};

/// RFC 3339 (UTC, milliseconds) of a Unix time in ms.
pub fn rfc3339(unix_ms: u64) -> String {
    shopfloor_schemas::Timestamp::from_unix_ms(unix_ms).to_rfc3339()
}

/// The alert for one alarm at `now`: firing (until `now + 4 × resend`)
/// while active and annunciated, else resolved (`endsAt = now`).
pub fn alert(view: &AlarmView, now: u64, resend: Duration) -> Json {
    let firing = view.state.active.is_some() && view.annunciate;
    let ends = if firing {
        now.saturating_add(4 * u64::try_from(resend.as_millis()).unwrap_or(u64::MAX / 8))
    } else {
        now
    };
    let condition = match view.state.active {
        Some(Condition::Level(l)) => l.code(),
        Some(Condition::On) => "ON",
        None => "normal",
    };
    json!({
        "labels": {
            "alertname": view.key.rule,
            "source": view.key.source,
            "metric": view.key.metric,
            "area": view.area,
            "class": view.class,
            "priority": view.priority.to_string(),
            "condition": condition,
        },
        "annotations": {
            "summary": view.message,
            "value": view.value.map_or_else(String::new, |v| v.to_string()),
            "unacknowledged": view.state.unacknowledged.to_string(),
        },
        "endsAt": rfc3339(ends),
    })
}

/// The Watchdog alert: always firing while the daemon runs.
pub fn watchdog(now: u64, resend: Duration) -> Json {
    let ends = now.saturating_add(4 * u64::try_from(resend.as_millis()).unwrap_or(u64::MAX / 8));
    json!({
        "labels": {"alertname": "Watchdog", "source": "shopfloor-alerting", "severity": "none"},
        "annotations": {"summary": "The shopfloor alarm engine is running; if this stops, it is not."},
        "endsAt": rfc3339(ends),
    })
}

/// POSTs `alerts` to each Alertmanager (an HA list gets every alert);
/// returns the errors, one per instance that failed. Blocking: call it
/// from a blocking thread.
pub fn post(urls: &[String], alerts: &Json) -> Vec<String> {
    let body = alerts.to_string();
    let mut errors = Vec::new();
    for url in urls {
        let endpoint = format!("{}/api/v2/alerts", url.trim_end_matches('/'));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        if let Err(e) =
            agent.post(&endpoint).header("Content-Type", "application/json").send(body.as_bytes())
        {
            errors.push(format!("{endpoint}: {e}"));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_737_600_123), "2026-11-27T00:00:00.123Z");
        assert_eq!(rfc3339(951_782_400_000 + 3_723_004), "2000-02-29T01:02:03.004Z");
    }
}

//! The outcome of a write command (a Sparkplug DCMD or a plain `…/set`
//! topic), published by the gateway that carried it out, so that whoever
//! asked learns whether the device took the value and, if not, why.

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// What became of one write command. Gateways publish it as JSON under
/// [`defaults::WRITE_RESULTS`](crate::topic::defaults::WRITE_RESULTS).
///
/// ```
/// use shopfloor_schemas::{Timestamp, WriteResult};
/// let r = WriteResult::refused("press-1", "Setpoint", "9000", "not on the write allow-list")
///     .at(Timestamp::from_unix_ms(1_700_000_000_000));
/// let json = r.to_json();
/// assert_eq!(WriteResult::from_json(&json).unwrap(), r);
/// assert!(!r.ok);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WriteResult {
    /// The device written to: the Sparkplug device id, or the plain
    /// topic's `{machine}`.
    pub device: String,
    /// The metric (tag, node) written to.
    pub metric: String,
    /// The value asked for, as text (for people and logs).
    pub value: String,
    /// `true` when the device took the value.
    pub ok: bool,
    /// A machine-readable outcome: the device's own status where it has one
    /// (an OPC UA status code name such as `Good` or `BadUserAccessDenied`,
    /// a Modbus exception such as `IllegalDataAddress`), `Unreachable` when
    /// the device did not answer, or `Refused` when the gateway did not send
    /// the write (not allowed, wrong type, unknown device or metric, not
    /// connected).
    pub status: String,
    /// What happened, for people: the reason a write was refused.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When the outcome was known (UTC ms).
    pub ts: Timestamp,
}

impl WriteResult {
    /// The status of a write the gateway refused before sending it.
    pub const REFUSED: &'static str = "Refused";

    /// A successful write (`status`: the device's status, `Good` if it has none).
    pub fn done(
        device: impl Into<String>,
        metric: impl Into<String>,
        value: impl Into<String>,
        status: impl Into<String>,
    ) -> Self {
        Self {
            device: device.into(),
            metric: metric.into(),
            value: value.into(),
            ok: true,
            status: status.into(),
            message: String::new(),
            ts: Timestamp::now(),
        }
    }

    /// A write the device answered with an error `status`.
    pub fn failed(
        device: impl Into<String>,
        metric: impl Into<String>,
        value: impl Into<String>,
        status: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self { ok: false, message: message.into(), ..Self::done(device, metric, value, status) }
    }

    /// A write the gateway refused (status [`REFUSED`](Self::REFUSED)).
    pub fn refused(
        device: impl Into<String>,
        metric: impl Into<String>,
        value: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::failed(device, metric, value, Self::REFUSED, message)
    }

    /// The same result with another time.
    #[must_use]
    pub fn at(mut self, ts: Timestamp) -> Self {
        self.ts = ts;
        self
    }

    /// The JSON payload.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings, a bool and an integer always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a JSON payload (unknown fields are ignored, so that newer
    /// gateways can add some).
    pub fn from_json(payload: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_fields() {
        let r =
            WriteResult::failed("plc", "Speed", "12", "BadUserAccessDenied", "the server refused")
                .at(Timestamp::from_unix_ms(5));
        let text = String::from_utf8(r.to_json()).unwrap();
        assert_eq!(
            text,
            r#"{"device":"plc","metric":"Speed","value":"12","ok":false,"status":"BadUserAccessDenied","message":"the server refused","ts":5}"#
        );
        assert_eq!(WriteResult::from_json(text.as_bytes()).unwrap(), r);
        let ok = WriteResult::done("plc", "Speed", "12", "Good").at(Timestamp::from_unix_ms(5));
        assert!(!String::from_utf8(ok.to_json()).unwrap().contains("message"));
    }

    #[test]
    fn malformed_payloads_are_errors() {
        for bad in [&b""[..], b"{", b"[]", b"{\"device\":1}", b"\xff\xfe", b"null"] {
            assert!(WriteResult::from_json(bad).is_err(), "{bad:?}");
        }
    }
}

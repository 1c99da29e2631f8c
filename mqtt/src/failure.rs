//! Why a connection failed, in words a user can act on.
//!
//! rumqttc reports a broker that does not speak the requested protocol
//! version as whatever its parser met: `Connection closed by peer
//! abruptly`, a malformed CONNACK, or a refusal code. The first failure
//! of an attempt that never got its CONNACK is told apart from a
//! connection lost after it, and a protocol refusal says how to switch.

use std::fmt;

use crate::Protocol;

/// How a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// It was up (a CONNACK came) and went down.
    Lost(String),
    /// No connection could be opened (refused, unreachable, TLS).
    Unreachable(String),
    /// The broker refused the protocol version, or answered or hung up in
    /// a way that means it does not speak it.
    Protocol { asked: Protocol, detail: String },
    /// The broker refused the client for another reason (credentials,
    /// authorisation, client id).
    Refused(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Lost(e) => write!(f, "connection lost: {e}"),
            Self::Unreachable(e) => write!(f, "cannot connect: {e}"),
            Self::Protocol { asked: Protocol::V5, detail } => write!(
                f,
                "the broker did not accept MQTT 5 ({detail}); if it speaks only MQTT 3.1.1, \
                 set protocol = \"3.1.1\" in [mqtt]"
            ),
            Self::Protocol { asked: Protocol::V311, detail } => write!(
                f,
                "the broker refused MQTT 3.1.1 ({detail}); set protocol = \"5\" in [mqtt]"
            ),
            Self::Refused(e) => write!(f, "the broker refused the connection: {e}"),
        }
    }
}

/// Whether an I/O error means the connection could not be opened at all.
fn unreachable(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionRefused
            | K::NotFound
            | K::AddrNotAvailable
            | K::TimedOut
            | K::HostUnreachable
            | K::NetworkUnreachable
            | K::PermissionDenied
    )
}

impl Failure {
    /// An MQTT 5 connection's error; `connected`: a CONNACK came on it.
    pub(crate) fn v5(e: &rumqttc::v5::ConnectionError, connected: bool) -> Self {
        use rumqttc::v5::ConnectionError as E;
        use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as C;
        let text = e.to_string();
        if connected {
            return Self::Lost(text);
        }
        match e {
            E::Io(io) if unreachable(io) => Self::Unreachable(text),
            E::Tls(_) => Self::Unreachable(text),
            E::ConnectionRefused(C::UnsupportedProtocolVersion | C::RefusedProtocolVersion) => {
                Self::Protocol { asked: Protocol::V5, detail: text }
            }
            E::ConnectionRefused(_) => Self::Refused(text),
            // Hung up on the CONNECT, or answered with what an MQTT 5
            // parser cannot read: a 3.1.1 broker does one or the other.
            E::MqttState(_) | E::Io(_) | E::NotConnAck(_) => {
                Self::Protocol { asked: Protocol::V5, detail: text }
            }
            _ => Self::Unreachable(text),
        }
    }

    /// An MQTT 3.1.1 connection's error; `connected`: a CONNACK came on it.
    pub(crate) fn v311(e: &rumqttc::ConnectionError, connected: bool) -> Self {
        use rumqttc::ConnectReturnCode as C;
        use rumqttc::ConnectionError as E;
        let text = e.to_string();
        if connected {
            return Self::Lost(text);
        }
        match e {
            E::Io(io) if unreachable(io) => Self::Unreachable(text),
            E::ConnectionRefused(C::RefusedProtocolVersion) => {
                Self::Protocol { asked: Protocol::V311, detail: text }
            }
            E::ConnectionRefused(_) => Self::Refused(text),
            _ => Self::Unreachable(text),
        }
    }
}

/// Logs failures without repeating one every retry: a failure unlike the
/// last one is a warning, a repeat is a debug line, and a connection that
/// came up makes the next failure a warning again.
#[derive(Debug, Default)]
pub(crate) struct FailureLog {
    last: Option<Failure>,
}

impl FailureLog {
    /// Logs `f` for `broker` (`host:port`); `true` when it was a warning.
    pub(crate) fn log(&mut self, broker: &str, f: Failure) -> bool {
        let repeat = self.last.as_ref() == Some(&f);
        if repeat {
            tracing::debug!(broker, "MQTT: {f} (again)");
        } else {
            tracing::warn!(broker, "MQTT: {f}");
        }
        self.last = Some(f);
        !repeat
    }

    /// A CONNACK came: the next failure is news.
    pub(crate) fn connected(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_3_1_1_broker_hanging_up_on_mqtt_5_says_how_to_switch() {
        let e = rumqttc::v5::ConnectionError::MqttState(rumqttc::v5::StateError::ConnectionAborted);
        let f = Failure::v5(&e, false);
        let text = f.to_string();
        assert!(text.contains("did not accept MQTT 5"), "{text}");
        assert!(text.contains("protocol = \"3.1.1\""), "{text}");
        // The same error after a CONNACK is a lost connection.
        assert_eq!(Failure::v5(&e, true), Failure::Lost(e.to_string()));
    }

    #[test]
    fn a_refused_3_1_1_says_to_use_5() {
        let e = rumqttc::ConnectionError::ConnectionRefused(
            rumqttc::ConnectReturnCode::RefusedProtocolVersion,
        );
        let text = Failure::v311(&e, false).to_string();
        assert!(text.contains("refused MQTT 3.1.1") && text.contains("protocol = \"5\""), "{text}");
    }

    #[test]
    fn nobody_listening_is_not_a_protocol_question() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let f = Failure::v5(&rumqttc::v5::ConnectionError::Io(io), false);
        assert!(matches!(f, Failure::Unreachable(_)), "{f}");
        let e = rumqttc::ConnectionError::ConnectionRefused(
            rumqttc::ConnectReturnCode::BadUserNamePassword,
        );
        assert!(matches!(Failure::v311(&e, false), Failure::Refused(_)));
    }

    #[test]
    fn repeats_are_warned_once() {
        let mut log = FailureLog::default();
        let f = || Failure::Unreachable("refused".into());
        assert!(log.log("b:1", f()));
        assert!(!log.log("b:1", f()));
        log.connected();
        assert!(log.log("b:1", f()));
    }
}

//! Where and how a client connects: the part of a configuration that
//! every consumer of the broker (ingest, alerting) shares.

use std::path::Path;
use std::time::Duration;

use crate::section::SectionError;
use crate::{Broker, MqttSection, Protocol};

/// Where and how a client connects: its id, the broker list, the protocol
/// version and the keep-alive. `shopfloor_ingest::IngestConfig` and
/// `shopfloor_alerting::mqtt::AlertConfig` hold one as `mqtt`; a
/// [`ConsumerConfig`](crate::ConsumerConfig) starts from one
/// ([`ConsumerConfig::from_connection`](crate::ConsumerConfig::from_connection)).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Connection {
    /// The MQTT client id.
    pub client_id: String,
    /// The broker, with its credentials and TLS.
    pub broker: Broker,
    /// Brokers tried in turn when a connection fails (see
    /// [`ConsumerConfig::fallback`](crate::ConsumerConfig::fallback)).
    pub fallback: Vec<Broker>,
    /// MQTT 5 (default) or 3.1.1.
    pub protocol: Protocol,
    /// MQTT keep-alive (default 10 s).
    pub keep_alive: Duration,
}

impl Connection {
    /// `client_id` at `broker` alone, MQTT 5, 10 s keep-alive.
    pub fn new(client_id: impl Into<String>, broker: Broker) -> Self {
        Self {
            client_id: client_id.into(),
            broker,
            fallback: Vec::new(),
            protocol: Protocol::V5,
            keep_alive: Duration::from_secs(10),
        }
    }
}

impl MqttSection {
    /// The section as a [`Connection`]: `client_id` for the id when the
    /// section names none; `file` is the deployment file it came from
    /// (relative paths start from its folder; errors name it).
    pub fn connection(&self, file: &Path, client_id: &str) -> Result<Connection, SectionError> {
        Ok(Connection {
            client_id: self.client_id_or(client_id),
            broker: self.broker(file)?,
            fallback: self.fallbacks(file)?,
            protocol: self.protocol,
            keep_alive: self.keep_alive(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConsumerConfig;

    #[test]
    fn a_consumer_takes_the_whole_connection() {
        let mut connection = Connection::new("ingest", Broker::new("a", 1883));
        connection.fallback = vec![Broker::new("b", 1884)];
        connection.protocol = Protocol::V311;
        connection.keep_alive = Duration::from_secs(3);
        let c = ConsumerConfig::from_connection(connection);
        assert_eq!(c.client_id, "ingest");
        assert_eq!(
            c.brokers().map(|b| (b.host.as_str(), b.port)).collect::<Vec<_>>(),
            [("a", 1883), ("b", 1884)]
        );
        assert_eq!(c.protocol, Protocol::V311);
        assert_eq!(c.keep_alive, Duration::from_secs(3));
    }

    #[test]
    fn a_section_names_the_id_or_takes_the_default() {
        let file = Path::new("/etc/shopfloor/x.toml");
        let mut section = MqttSection::new("broker", 8883);
        section.keep_alive_s = Some(30);
        section.fallback = vec!["other:1883".into()];
        let c = section.connection(file, "default-id").unwrap();
        assert_eq!(
            (c.client_id.as_str(), c.broker.host.as_str(), c.broker.port),
            ("default-id", "broker", 8883)
        );
        assert_eq!(c.fallback.len(), 1);
        assert_eq!(c.keep_alive, Duration::from_secs(30));
        section.client_id = Some("named".into());
        assert_eq!(section.connection(file, "default-id").unwrap().client_id, "named");
    }
}

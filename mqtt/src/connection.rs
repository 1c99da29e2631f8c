//! Where and how a client connects: the part of a configuration that
//! every client of the broker (consumers, Sparkplug drivers) shares.

use std::path::Path;
use std::time::Duration;

use crate::section::SectionError;
use crate::{Broker, MqttSection, Protocol};

/// Where and how a client connects: its id, the broker list, the protocol
/// version and the keep-alive. `shopfloor_ingest::IngestConfig` and
/// `shopfloor_alerting::mqtt::AlertConfig` hold one as `mqtt`; a
/// [`ConsumerConfig`](crate::ConsumerConfig) and a
/// [`DriverConfig`](crate::DriverConfig) hold one as `connection`
/// ([`ConsumerConfig::from_connection`](crate::ConsumerConfig::from_connection),
/// [`DriverConfig::from_connection`](crate::DriverConfig::from_connection)).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Connection {
    /// The MQTT client id.
    pub client_id: String,
    /// The broker, with its credentials and TLS: the first one tried.
    pub broker: Broker,
    /// Brokers tried in turn after `broker`: a failed connection or
    /// connection attempt of a [`Consumer`](crate::Consumer) moves to the
    /// next of the list (round the list, back to `broker` after the last).
    /// A persistent session lives on one broker: after a move, the new one
    /// starts the session afresh unless the brokers share sessions (a
    /// cluster).
    ///
    /// The Sparkplug drivers ([`EdgeDriver`](crate::EdgeDriver),
    /// [`HostDriver::spawn`](crate::HostDriver::spawn)) are connected to one
    /// broker of the list at a time and go round it too, moving to the next
    /// only after a connection that failed before it came up (an edge node
    /// also after its primary host went offline).
    /// [`HostDriver::spawn_on_every_broker`](crate::HostDriver::spawn_on_every_broker)
    /// connects to every broker of the list at once.
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

    /// `broker`, then the fallbacks: the list in the order it is tried.
    pub fn brokers(&self) -> impl Iterator<Item = &Broker> {
        std::iter::once(&self.broker).chain(&self.fallback)
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
    use crate::{ConsumerConfig, DriverConfig};

    #[test]
    fn consumers_and_drivers_take_the_whole_connection() {
        let mut connection = Connection::new("ingest", Broker::new("a", 1883));
        connection.fallback = vec![Broker::new("b", 1884)];
        connection.protocol = Protocol::V311;
        connection.keep_alive = Duration::from_secs(3);
        let consumer = ConsumerConfig::from_connection(connection.clone());
        let driver = DriverConfig::from_connection(connection);
        for c in [&consumer.connection, &driver.connection] {
            assert_eq!(c.client_id, "ingest");
            assert_eq!(
                c.brokers().map(|b| (b.host.as_str(), b.port)).collect::<Vec<_>>(),
                [("a", 1883), ("b", 1884)]
            );
            assert_eq!(c.protocol, Protocol::V311);
            assert_eq!(c.keep_alive, Duration::from_secs(3));
        }
        assert!(consumer.brokers().map(|b| b.port).eq([1883, 1884]));
    }

    #[test]
    fn a_new_driver_has_one_broker_and_the_defaults() {
        let d = DriverConfig::new("edge", Broker::new("a", 1883));
        assert_eq!(d.connection.client_id, "edge");
        assert!(d.connection.brokers().map(|b| b.port).eq([1883]));
        assert_eq!(d.connection.protocol, Protocol::V5);
        assert_eq!(d.connection.keep_alive, Duration::from_secs(10));
        assert_eq!(
            (d.backoff_min, d.backoff_max, d.queue),
            (Duration::from_millis(500), Duration::from_secs(30), 1024)
        );
        assert!(d.bd_seq_file.is_none());
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

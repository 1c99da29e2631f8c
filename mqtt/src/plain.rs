//! Plain topics, for gateways that publish without Sparkplug: each reading
//! as a one-reading [`Batch`] on its own topic
//! (`shopfloor/{site}/{area}/{machine}/{sensor}` by default), encoded with
//! a schemas [`Codec`] and labelled with the MQTT 5 content type. Write
//! commands come in on a reading's topic plus `/set` (a one-reading batch
//! in any codec, JSON when no content type says otherwise); every command's
//! outcome goes out as a [`WriteResult`] on
//! `shopfloor/writes/{site}/{area}`.
//!
//! This lives beside the Sparkplug drivers because it shares their
//! connection settings ([`Broker`]); the Modbus and OPC UA gateways both use
//! it, so their plain topics and write commands are the same.
//!
//! Readings go out at QoS 1. There is no store and forward: while the
//! broker is away, publishes queue in the MQTT client up to its capacity,
//! then [`PlainPublisher::publish`] waits. Use a Sparkplug edge node with a
//! spool when an outage must not cost readings.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use shopfloor_schemas::topic::defaults;
use shopfloor_schemas::{Batch, Codec, TopicError, TopicTemplate, Value, WriteResult};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::consumer::{ClientHandle, LinkCounters, Outgoing};
use crate::{Broker, Consumer, ConsumerConfig, ConsumerEvent, Protocol, Stopped};

/// Where plain readings go.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PlainConfig {
    /// The `{site}` of the topic template.
    pub site: String,
    /// The `{area}`.
    pub area: String,
    /// The payload codec.
    pub codec: Codec,
    /// The topic template (`{machine}` is the device or server, `{sensor}`
    /// the tag or node's metric name).
    pub template: TopicTemplate,
    /// MQTT 5 (default: the content type goes with every message) or
    /// 3.1.1 (readings are then in `codec`, and commands in JSON).
    pub protocol: Protocol,
}

impl PlainConfig {
    /// The default template, `shopfloor/{site}/{area}/{machine}/{sensor}`, JSON.
    pub fn new(site: impl Into<String>, area: impl Into<String>) -> Self {
        Self {
            site: site.into(),
            area: area.into(),
            codec: Codec::Json,
            protocol: Protocol::V5,
            #[allow(clippy::expect_used)]
            template: TopicTemplate::parse(defaults::READINGS)
                .expect("the default template parses"),
        }
    }

    /// The topic of one sensor's readings.
    pub fn topic(&self, machine: &str, sensor: &str) -> Result<String, TopicError> {
        self.template.render(&[
            ("site", &self.site),
            ("area", &self.area),
            ("machine", machine),
            ("sensor", sensor),
        ])
    }

    /// The topic of this gateway's write results.
    pub fn results_topic(&self) -> Result<String, TopicError> {
        TopicTemplate::parse(defaults::WRITE_RESULTS)
            .and_then(|t| t.render(&[("group", &self.site), ("edge", &self.area)]))
    }

    /// Checks that every `(machine, sensor)` pair's topic renders: with
    /// plain topics each name is one topic level, so it may not contain
    /// `/`, `+` or `#`.
    pub fn check<'a>(
        &self,
        names: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), PlainTopicError> {
        self.check_as(("machine", "sensor"), names)
    }

    /// [`check`](Self::check), naming the machine and the sensor as the
    /// caller knows them in errors (`("device", "tag")`).
    pub fn check_as<'a>(
        &self,
        labels: (&'static str, &'static str),
        names: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), PlainTopicError> {
        for (machine, sensor) in names {
            self.topic(machine, sensor).map_err(|source| PlainTopicError::Name {
                labels,
                machine: machine.to_owned(),
                sensor: sensor.to_owned(),
                source: Box::new(source),
            })?;
        }
        self.results_topic().map(|_| ()).map_err(|e| PlainTopicError::Results(Box::new(e)))
    }

    /// The write command a message on `topic` carries, or why it is
    /// refused. `None` if the topic is not a write command of this
    /// gateway (another site or area, not a reading topic plus `/set`).
    pub fn command(
        &self,
        topic: &str,
        content_type: Option<&str>,
        payload: &[u8],
    ) -> Option<Result<WriteCommand, WriteResult>> {
        let base = topic.strip_suffix(defaults::WRITE_COMMAND_SUFFIX)?;
        let caps = self.template.matches(base)?;
        let (machine, sensor) = (caps.get("machine")?, caps.get("sensor")?);
        if caps.get("site").is_some_and(|s| s != self.site)
            || caps.get("area").is_some_and(|a| a != self.area)
        {
            return None;
        }
        let refused = |why: String| WriteResult::refused(machine, sensor, "", why);
        let codec = match content_type.map(Codec::from_content_type).unwrap_or(Ok(Codec::Json)) {
            Ok(c) => c,
            Err(e) => return Some(Err(refused(e.to_string()))),
        };
        let value = match codec.decode_batch(payload) {
            Ok(b) => match b.readings.into_iter().next() {
                Some(r) => r.value,
                None => return Some(Err(refused("the batch has no reading".into()))),
            },
            Err(e) => return Some(Err(refused(e.to_string()))),
        };
        Some(Ok(WriteCommand { machine: machine.to_owned(), sensor: sensor.to_owned(), value }))
    }
}

/// A name that cannot be a plain topic level.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlainTopicError {
    /// A machine's or sensor's name.
    #[error(
        "{} {machine:?}, {} {sensor:?}: {source}; with plain topics a name is one topic level (rename it, or use the Sparkplug gateway)",
        labels.0,
        labels.1
    )]
    Name {
        /// What the machine and the sensor are to the caller (`device`,
        /// `tag`).
        labels: (&'static str, &'static str),
        /// The machine (a device, a server).
        machine: String,
        /// The sensor (a tag, a metric).
        sensor: String,
        /// Why the topic does not render.
        source: Box<TopicError>,
    },
    /// The site or area (the write results' topic does not render).
    #[error("the site or area: {0}")]
    Results(Box<TopicError>),
}

/// A write command received on a `…/set` topic.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteCommand {
    /// The `{machine}`: a Modbus device, an OPC UA server.
    pub machine: String,
    /// The `{sensor}`: the tag or metric.
    pub sensor: String,
    /// The value to write.
    pub value: Value,
}

impl WriteCommand {
    /// The result of this command: done with the device's `status`.
    pub fn done(&self, status: &str) -> WriteResult {
        WriteResult::done(&self.machine, &self.sensor, self.value.to_string(), status)
    }

    /// The result of this command: failed with `status` and why.
    pub fn failed(&self, status: &str, message: impl Into<String>) -> WriteResult {
        WriteResult::failed(&self.machine, &self.sensor, self.value.to_string(), status, message)
    }
}

/// A plain-topic MQTT connection: publishes readings and write results,
/// hands out write commands.
#[derive(Debug)]
pub struct PlainPublisher {
    client: ClientHandle,
    config: PlainConfig,
    reporter: Reporter,
    events: JoinHandle<()>,
}

/// The write commands a [`PlainPublisher`] receives. Malformed ones are
/// answered (a refused [`WriteResult`]) and not handed out; so are
/// retained ones: a retained command would be written again at every
/// reconnect, possibly hours after it was meant.
#[derive(Debug)]
pub struct Commands {
    /// Topic, content type, payload, retained.
    incoming: mpsc::Receiver<(String, Option<String>, Bytes, bool)>,
    config: PlainConfig,
    reporter: Reporter,
}

impl Commands {
    /// The next well-formed write command; `None` once the publisher stopped.
    pub async fn next(&mut self) -> Option<WriteCommand> {
        loop {
            let (topic, ct, payload, retained) = self.incoming.recv().await?;
            match self.config.command(&topic, ct.as_deref(), &payload) {
                Some(Ok(c)) if retained => {
                    let refused = WriteResult::refused(
                        &c.machine,
                        &c.sensor,
                        c.value.to_string(),
                        "a retained write command is refused: it would be written again at \
                         every reconnect (publish write commands with retain off)",
                    );
                    tracing::warn!(topic, "write refused: {}", refused.message);
                    let _ = self.reporter.report_write(&refused).await;
                }
                Some(Ok(c)) => return Some(c),
                Some(Err(refused)) => {
                    tracing::warn!(topic, "write refused: {}", refused.message);
                    let _ = self.reporter.report_write(&refused).await;
                }
                None => {}
            }
        }
    }
}

impl PlainPublisher {
    /// Connects to `broker` as `client_id` (`config.protocol`, 10 s
    /// keep-alive, reconnecting with a jittered backoff up to 5 s while it
    /// is away) and subscribes to the write commands of `config`'s site and
    /// area.
    pub fn spawn(config: PlainConfig, broker: &Broker, client_id: &str) -> (Self, Commands) {
        let mut c = ConsumerConfig::new(client_id, broker.clone());
        c.connection.protocol = config.protocol;
        c.filters = vec![format!("{}{}", config.template.filter(), defaults::WRITE_COMMAND_SUFFIX)];
        c.queue = 64;
        let mut consumer = Consumer::connect(c, Arc::new(LinkCounters::default()));
        let client = consumer.client().clone();
        // Commands from the connection; it must never wait on us.
        let (tx, incoming) = mpsc::channel(64);
        let events = tokio::spawn(async move {
            while let Some(e) = consumer.recv().await {
                if let ConsumerEvent::Message(m) = e
                    && tx.try_send((m.topic, m.content_type, m.payload, m.retain)).is_err()
                {
                    tracing::warn!("write command dropped: too many waiting");
                }
            }
        });
        // The results topic is the same for every result: rendered once.
        let topic = config
            .results_topic()
            .map_err(|e| tracing::warn!("write results will not be published: {e}"))
            .ok();
        let reporter = Reporter { client: client.clone(), topic };
        let commands = Commands { incoming, config: config.clone(), reporter: reporter.clone() };
        (Self { client, config, reporter, events }, commands)
    }

    /// Publishes each reading of `batch` (source: the machine) on its topic.
    /// A reading whose topic does not render or that cannot be encoded is
    /// logged and skipped.
    pub async fn publish(&self, batch: &Batch) -> Result<(), Stopped> {
        for r in &batch.readings {
            let topic = match self.config.topic(&batch.source, &r.metric) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(source = %batch.source, metric = %r.metric, "not published: {e}");
                    continue;
                }
            };
            let one = Batch::new(batch.source.clone()).with(r.clone());
            let payload = match self.config.codec.encode_batch(&one) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(source = %batch.source, metric = %r.metric, "not encodable: {e}");
                    continue;
                }
            };
            let mut out = Outgoing::new(topic, payload, 1, false);
            out.content_type = Some(self.config.codec.content_type().into());
            self.client.publish(out).await.map_err(|_| Stopped)?;
        }
        Ok(())
    }

    /// Publishes a write command's outcome (JSON, QoS 1, not retained).
    pub async fn report_write(&self, result: &WriteResult) -> Result<(), Stopped> {
        self.reporter.report_write(result).await
    }

    /// A handle that can report write results from another task.
    pub fn reporter(&self) -> Reporter {
        self.reporter.clone()
    }

    /// Disconnects.
    pub async fn shutdown(mut self) {
        self.client.disconnect().await;
        // Let the DISCONNECT go out, at most a second.
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut self.events).await;
    }
}

impl Drop for PlainPublisher {
    fn drop(&mut self) {
        self.events.abort();
    }
}

/// Reports write results for a [`PlainPublisher`] from another task.
#[derive(Clone, Debug)]
pub struct Reporter {
    client: ClientHandle,
    /// `None` when the site or area is no topic level (warned at spawn;
    /// `PlainConfig::check` refuses such a configuration).
    topic: Option<String>,
}

impl Reporter {
    /// Publishes a write command's outcome (JSON, QoS 1, not retained).
    pub async fn report_write(&self, result: &WriteResult) -> Result<(), Stopped> {
        let Some(topic) = &self.topic else { return Ok(()) };
        let mut out = Outgoing::new(topic.as_str(), result.to_json(), 1, false);
        out.content_type = Some("application/json".into());
        self.client.publish(out).await.map_err(|_| Stopped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_parsed_or_refused_with_a_reason() {
        let c = PlainConfig::new("s", "a");
        let cmd = Batch::new("op").with(shopfloor_schemas::Reading::new(
            "temp",
            shopfloor_schemas::Timestamp::now(),
            4.5,
        ));
        let ok =
            c.command("shopfloor/s/a/m1/temp/set", None, &Codec::Json.encode_batch(&cmd).unwrap());
        let cmd = ok.unwrap().unwrap();
        assert_eq!((cmd.machine.as_str(), cmd.sensor.as_str()), ("m1", "temp"));
        assert_eq!(cmd.value, Value::F64(4.5));
        // Not ours: no answer.
        assert!(c.command("shopfloor/other/a/m1/temp/set", None, b"{}").is_none());
        assert!(c.command("shopfloor/s/a/m1/temp", None, b"{}").is_none());
        // Ours but malformed: refused, naming the device and metric.
        for (ct, payload) in [(None, &b"{"[..]), (Some("text/x-nope"), &b"{}"[..]), (None, b"\xff")]
        {
            let r = c.command("shopfloor/s/a/m1/temp/set", ct, payload).unwrap().unwrap_err();
            assert_eq!((r.device.as_str(), r.metric.as_str(), r.ok), ("m1", "temp", false));
            assert_eq!(r.status, WriteResult::REFUSED);
            assert!(!r.message.is_empty());
        }
        assert_eq!(c.results_topic().unwrap(), "shopfloor/writes/s/a");
        assert!(c.check([("m1", "a/b")]).unwrap_err().to_string().contains("one topic level"));
        assert!(c.check([("m1", "ok")]).is_ok());
    }
}

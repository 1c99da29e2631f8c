//! What the edge and host drivers do alike with each connection: which
//! broker to try, the CONNACK that asks for the subscriptions, the first
//! SUBACK that makes the connection up, the failure that ends it, and the
//! wait before the next attempt.

use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::failure::FailureLog;
use crate::link::{Inbound, Link, Received};
use crate::{Broker, DriverConfig};
use shopfloor_sparkplug::edge::{EdgeNode, Message, Now};
use shopfloor_sparkplug::host::HostApplication;

/// The sans-IO core a driver runs, as far as connecting goes.
pub(crate) trait Core {
    /// The filters to subscribe to on every connection.
    fn subscriptions(&self) -> Vec<String>;
    /// The subscriptions are acknowledged.
    fn handle_connected(&mut self, now: Now);
}

/// Both cores have the trait's methods as inherent ones.
macro_rules! core {
    ($($t:ty),*) => {$(
        impl Core for $t {
            fn subscriptions(&self) -> Vec<String> {
                Self::subscriptions(self)
            }

            fn handle_connected(&mut self, now: Now) {
                Self::handle_connected(self, now);
            }
        }
    )*};
}

core!(EdgeNode, HostApplication);

/// What [`Retry::inbound`] leaves to the driver.
pub(crate) enum Heard {
    /// Nothing more to do.
    Nothing,
    /// A SUBACK after the first one.
    SubAck,
    /// A message for the core.
    Publish(Message),
    /// The connection is gone (the failure is logged): end the session.
    Closed,
}

/// A driver's connection attempts: the broker list, the backoff, the
/// failure log, and whether the current connection came up.
pub(crate) struct Retry<'a> {
    brokers: Vec<&'a Broker>,
    broker: usize,
    address: String,
    acked: bool,
    backoff: Backoff,
    failures: FailureLog,
}

impl<'a> Retry<'a> {
    pub(crate) fn new(config: &'a DriverConfig) -> Self {
        Self {
            brokers: config.connection.brokers().collect(),
            broker: 0,
            address: String::new(),
            acked: false,
            backoff: Backoff::new(config.backoff_min, config.backoff_max),
            failures: FailureLog::default(),
        }
    }

    /// The broker to connect to next (round the list, which is never
    /// empty: a connection has its `broker`), for a new connection that is
    /// not up yet.
    pub(crate) fn broker(&mut self) -> &'a Broker {
        let b = self.brokers[self.broker % self.brokers.len()];
        self.address = b.address();
        self.acked = false;
        b
    }

    /// Handles what the broker said as both drivers do: a CONNACK
    /// subscribes, the first SUBACK is the connection up (the backoff starts
    /// again, the core is told), a failure is logged and closes.
    pub(crate) async fn inbound(
        &mut self,
        e: Option<Received>,
        link: &mut Link,
        core: &mut impl Core,
    ) -> Heard {
        match e {
            Some(Ok(Inbound::ConnAck)) => {
                if !link.subscribe(core.subscriptions()).await {
                    return Heard::Closed;
                }
            }
            Some(Ok(Inbound::SubAck)) if !self.acked => {
                self.acked = true;
                self.backoff.reset();
                tracing::info!(broker = %self.address, "connected");
                self.failures.connected();
                core.handle_connected(Now::now());
            }
            Some(Ok(Inbound::SubAck)) => return Heard::SubAck,
            Some(Ok(Inbound::Publish(msg))) => return Heard::Publish(msg),
            Some(Ok(Inbound::PubAck)) => {}
            Some(Err(e)) => {
                self.failures.log(&self.address, e);
                return Heard::Closed;
            }
            None => return Heard::Closed,
        }
        Heard::Nothing
    }

    /// The connection ended: the next broker of the list if it never came
    /// up or `move_on`, and when to try.
    pub(crate) fn ended(&mut self, move_on: bool) -> Instant {
        if !self.acked || move_on {
            self.broker += 1;
        }
        Instant::now() + self.backoff.next_delay()
    }
}

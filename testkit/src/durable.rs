//! A broker for delivery tests: what a client has not acknowledged
//! survives the client's absence and the broker's restart.

use crate::{Mosquitto, MosquittoBuilder};

impl Mosquitto {
    /// A builder for a broker that keeps sessions and what they hold
    /// across a restart (persistence on, saved every second), with room to
    /// queue 100 000 messages per offline client (Mosquitto's default drops
    /// QoS 1 messages past 1000: a broker setting a deployment must raise,
    /// not a loss of the client's).
    pub fn durable() -> MosquittoBuilder {
        Self::builder().persistence(true).autosave_interval(1).max_queued_messages(100_000)
    }
}

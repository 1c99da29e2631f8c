//! The host's configuration, what it reports ([`HostEvent`]) and why it
//! refuses a message ([`InboundError`]).

use super::*;

/// How the host is set up.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HostConfig {
    /// The host id in `spBv1.0/STATE/{host_id}`.
    pub host_id: String,
    /// Publish STATE. Only the primary host should; a second instance of the
    /// same deployment (a standby ingest, say) turns it off.
    pub publish_state: bool,
    /// How long a `seq` gap may stay open before a rebirth is requested.
    pub reorder_timeout: Duration,
    /// The least time between two rebirth requests to the same node.
    pub rebirth_cooldown: Duration,
    /// The groups to follow (`None`: all of them).
    pub groups: Option<Vec<String>>,
    /// Share DATA with other hosts through the MQTT shared subscription
    /// of this name (`$share/{name}/…`): each NDATA and DDATA goes to one
    /// of them, while births, deaths and STATE still come to every one, so
    /// each can name the DATA it gets and mark a dead node stale. `seq` is
    /// not checked (each host sees only part of a node's sequence), so no
    /// gap asks for a rebirth. `None` (the default): every message.
    pub share: Option<String>,
    /// Last values kept at most, over all nodes and devices (for the stale
    /// readings of a death). Past it, new metrics' readings still flow but
    /// are not remembered ([`HostApplication::untracked_readings`] counts
    /// them): remote input cannot grow the host without bound.
    pub max_tracked_metrics: usize,
    /// A payload with more metrics is refused ([`InboundError::TooManyMetrics`]):
    /// what one message can cost downstream is bounded.
    pub max_metrics_per_payload: usize,
    /// Edge nodes followed at most: the NBIRTH of one more is refused
    /// ([`InboundError::TooManyNodes`]), and DATA from an unknown node past
    /// it asks for no rebirth (that would track it).
    pub max_nodes: usize,
    /// Devices per edge node at most: the DBIRTH of one more is refused
    /// ([`InboundError::TooManyDevices`]).
    pub max_devices_per_node: usize,
    /// Distinct metric names an edge node's births may define, its
    /// devices' included: a birth past it is refused
    /// ([`InboundError::TooManyNodeMetrics`]).
    pub max_metrics_per_node: usize,
}

impl HostConfig {
    /// A primary host: STATE on, 2 s reorder timeout, 5 s rebirth cooldown,
    /// 2 000 000 last values kept, 100 000 metrics a payload at most,
    /// 100 000 edge nodes, 10 000 devices and 200 000 metric names an edge
    /// node.
    pub fn new(host_id: impl Into<String>) -> Self {
        Self {
            host_id: host_id.into(),
            publish_state: true,
            reorder_timeout: Duration::from_secs(2),
            rebirth_cooldown: Duration::from_secs(5),
            groups: None,
            share: None,
            max_tracked_metrics: 2_000_000,
            max_metrics_per_payload: 100_000,
            max_nodes: 100_000,
            max_devices_per_node: 10_000,
            max_metrics_per_node: 200_000,
        }
    }
}

/// Why a rebirth was requested.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RebirthReason {
    /// DATA, DBIRTH or DDEATH from a node whose NBIRTH this host has not seen.
    NoBirth,
    /// A metric alias or name that is not in the births.
    UnknownMetric(String),
    /// `seq` numbers that did not arrive within the reorder timeout.
    SeqGap {
        /// The missing numbers.
        missing: Vec<u8>,
    },
    /// A payload from the node that could not be decoded.
    Malformed(String),
}

/// What the host tells the application.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum HostEvent {
    /// Readings, from a birth, DATA, or a death (then all stale). `source` is
    /// `group/edge_node` or `group/edge_node/device`.
    Data(Batch),
    /// Readings flagged `is_historical`: what an edge node stored while it
    /// was offline and replays after its birth. For storage and the
    /// journal, not for live alarms. Same `source` as [`Data`](Self::Data).
    Historical(Batch),
    /// An edge node birthed.
    NodeOnline {
        /// The group id.
        group: String,
        /// The edge node id.
        edge_node: String,
        /// Its session's `bdSeq`.
        bd_seq: u64,
    },
    /// An edge node died (NDEATH with its session's `bdSeq`).
    NodeOffline {
        /// The group id.
        group: String,
        /// The edge node id.
        edge_node: String,
    },
    /// A device birthed.
    DeviceOnline {
        /// The group id.
        group: String,
        /// The edge node id.
        edge_node: String,
        /// The device id.
        device: String,
    },
    /// A device died.
    DeviceOffline {
        /// The group id.
        group: String,
        /// The edge node id.
        edge_node: String,
        /// The device id.
        device: String,
    },
    /// An NDEATH whose `bdSeq` is older than the current session's (a late
    /// Will), or that carries none: ignored.
    StaleDeath {
        /// The group id.
        group: String,
        /// The edge node id.
        edge_node: String,
        /// The `bdSeq` it carried.
        bd_seq: Option<u64>,
    },
    /// A rebirth request was published.
    RebirthRequested {
        /// The group id.
        group: String,
        /// The edge node id.
        edge_node: String,
        /// Why.
        reason: RebirthReason,
    },
}

/// Why an inbound message was refused. The state is unchanged, except that a
/// rebirth may have been requested.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InboundError {
    /// Not a Sparkplug topic.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// A payload that does not decode.
    #[error("{topic}: {source}")]
    Payload {
        /// The topic.
        topic: String,
        /// Why.
        #[source]
        source: DecodeError,
    },
    /// A birth without what the specification requires.
    #[error("{topic}: {reason}")]
    Birth {
        /// The topic.
        topic: String,
        /// What is missing.
        reason: &'static str,
    },
    /// More metrics in one payload than [`HostConfig::max_metrics_per_payload`].
    #[error("{topic}: {metrics} metrics in one payload, more than the {limit} allowed")]
    TooManyMetrics {
        /// The topic.
        topic: String,
        /// Metrics in the payload.
        metrics: usize,
        /// The limit.
        limit: usize,
    },
    /// The birth of an edge node past [`HostConfig::max_nodes`].
    #[error("{topic}: this host follows {limit} edge nodes already (max_nodes)")]
    TooManyNodes {
        /// The topic.
        topic: String,
        /// The limit.
        limit: usize,
    },
    /// The birth of a device past [`HostConfig::max_devices_per_node`].
    #[error("{topic}: its edge node has {limit} devices already (max_devices_per_node)")]
    TooManyDevices {
        /// The topic.
        topic: String,
        /// The limit.
        limit: usize,
    },
    /// A birth that would give its edge node more metric names than
    /// [`HostConfig::max_metrics_per_node`].
    #[error(
        "{topic}: this birth would give its edge node {metrics} metric names, more than the {limit} allowed (max_metrics_per_node)"
    )]
    TooManyNodeMetrics {
        /// The topic.
        topic: String,
        /// The names the node would have.
        metrics: usize,
        /// The limit.
        limit: usize,
    },
}

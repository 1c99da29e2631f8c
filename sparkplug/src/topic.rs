//! The Sparkplug topic namespace (specification §4.1):
//! `spBv1.0/{group_id}/{message_type}/{edge_node_id}[/{device_id}]` and
//! `spBv1.0/STATE/{host_id}`, and the STATE payload.

use std::fmt;
use std::str::FromStr;

/// The namespace element of every Sparkplug B topic.
pub const NAMESPACE: &str = "spBv1.0";

/// The message type element of an edge topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// Edge node birth certificate.
    NBirth,
    /// Edge node death certificate (the MQTT Will).
    NDeath,
    /// Edge node data.
    NData,
    /// Command to an edge node.
    NCmd,
    /// Device birth certificate.
    DBirth,
    /// Device death certificate.
    DDeath,
    /// Device data.
    DData,
    /// Command to a device.
    DCmd,
}

impl MessageType {
    /// Every message type, in the specification's order.
    pub const ALL: [Self; 8] = [
        Self::NBirth,
        Self::NDeath,
        Self::NData,
        Self::NCmd,
        Self::DBirth,
        Self::DDeath,
        Self::DData,
        Self::DCmd,
    ];

    /// The topic element: `NBIRTH`, `DDATA`…
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NBirth => "NBIRTH",
            Self::NDeath => "NDEATH",
            Self::NData => "NDATA",
            Self::NCmd => "NCMD",
            Self::DBirth => "DBIRTH",
            Self::DDeath => "DDEATH",
            Self::DData => "DDATA",
            Self::DCmd => "DCMD",
        }
    }

    /// Whether the topic names a device (D* types).
    pub const fn is_device(self) -> bool {
        matches!(self, Self::DBirth | Self::DDeath | Self::DData | Self::DCmd)
    }

    /// Whether the payload carries `seq`: every type but NDEATH, NCMD and DCMD.
    pub const fn has_seq(self) -> bool {
        !matches!(self, Self::NDeath | Self::NCmd | Self::DCmd)
    }

    /// The QoS the specification requires: 1 for NDEATH (as the Will), 0 for
    /// every other edge message, DBIRTH and DDEATH included.
    pub const fn qos(self) -> u8 {
        match self {
            Self::NDeath => 1,
            _ => 0,
        }
    }

    /// Whether the message is retained: never, for edge messages.
    pub const fn retain(self) -> bool {
        false
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MessageType {
    type Err = TopicError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| TopicError::MessageType(s.to_owned()))
    }
}

/// A parsed Sparkplug topic.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// An edge node or device topic.
    Edge {
        /// The group id.
        group_id: String,
        /// The message type.
        message_type: MessageType,
        /// The edge node id.
        edge_node_id: String,
        /// The device id, for D* message types.
        device_id: Option<String>,
    },
    /// A host application's STATE topic.
    State {
        /// The host id.
        host_id: String,
    },
}

impl Topic {
    /// An edge node topic (N* types).
    pub fn node(
        group_id: &str,
        message_type: MessageType,
        edge_node_id: &str,
    ) -> Result<Self, TopicError> {
        Self::edge(group_id, message_type, edge_node_id, None)
    }

    /// A device topic (D* types).
    pub fn device(
        group_id: &str,
        message_type: MessageType,
        edge_node_id: &str,
        device_id: &str,
    ) -> Result<Self, TopicError> {
        Self::edge(group_id, message_type, edge_node_id, Some(device_id))
    }

    fn edge(
        group_id: &str,
        message_type: MessageType,
        edge_node_id: &str,
        device_id: Option<&str>,
    ) -> Result<Self, TopicError> {
        let t = Self::Edge {
            group_id: group_id.to_owned(),
            message_type,
            edge_node_id: edge_node_id.to_owned(),
            device_id: device_id.map(str::to_owned),
        };
        t.validate()?;
        Ok(t)
    }

    /// A STATE topic.
    pub fn state(host_id: &str) -> Result<Self, TopicError> {
        check_id("host_id", host_id)?;
        Ok(Self::State { host_id: host_id.to_owned() })
    }

    /// Parses a topic name.
    pub fn parse(topic: &str) -> Result<Self, TopicError> {
        let mut levels = topic.split('/');
        let namespace = levels.next().unwrap_or_default();
        if namespace != NAMESPACE {
            return Err(TopicError::Namespace(namespace.to_owned()));
        }
        let rest: Vec<&str> = levels.collect();
        let t = match rest.as_slice() {
            ["STATE", host_id] => Self::State { host_id: (*host_id).to_owned() },
            [group_id, message_type, edge_node_id] => Self::Edge {
                group_id: (*group_id).to_owned(),
                message_type: message_type.parse()?,
                edge_node_id: (*edge_node_id).to_owned(),
                device_id: None,
            },
            [group_id, message_type, edge_node_id, device_id] => Self::Edge {
                group_id: (*group_id).to_owned(),
                message_type: message_type.parse()?,
                edge_node_id: (*edge_node_id).to_owned(),
                device_id: Some((*device_id).to_owned()),
            },
            _ => {
                return Err(TopicError::Levels { topic: topic.to_owned(), levels: rest.len() + 1 });
            }
        };
        t.validate()?;
        Ok(t)
    }

    fn validate(&self) -> Result<(), TopicError> {
        match self {
            Self::State { host_id } => check_id("host_id", host_id),
            Self::Edge { group_id, message_type, edge_node_id, device_id } => {
                check_id("group_id", group_id)?;
                check_id("edge_node_id", edge_node_id)?;
                match (message_type.is_device(), device_id) {
                    (true, Some(d)) => check_id("device_id", d),
                    (false, None) => Ok(()),
                    (true, None) => Err(TopicError::DeviceIdMissing(*message_type)),
                    (false, Some(_)) => Err(TopicError::DeviceIdUnexpected(*message_type)),
                }
            }
        }
    }

    /// The message type, for edge topics.
    pub fn message_type(&self) -> Option<MessageType> {
        match self {
            Self::Edge { message_type, .. } => Some(*message_type),
            Self::State { .. } => None,
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::State { host_id } => write!(f, "{NAMESPACE}/STATE/{host_id}"),
            Self::Edge { group_id, message_type, edge_node_id, device_id: None } => {
                write!(f, "{NAMESPACE}/{group_id}/{message_type}/{edge_node_id}")
            }
            Self::Edge { group_id, message_type, edge_node_id, device_id: Some(d) } => {
                write!(f, "{NAMESPACE}/{group_id}/{message_type}/{edge_node_id}/{d}")
            }
        }
    }
}

impl FromStr for Topic {
    type Err = TopicError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Checks a group, edge node, device or host id: not empty, no `/`, `+`,
/// `#` (tck-id-topic-structure-namespace-valid-*); no NUL.
pub fn check_id(which: &'static str, id: &str) -> Result<(), TopicError> {
    if id.is_empty() {
        return Err(TopicError::EmptyId(which));
    }
    if let Some(c) = id.chars().find(|c| matches!(c, '/' | '+' | '#' | '\0')) {
        return Err(TopicError::BadId { which, id: id.to_owned(), found: c });
    }
    Ok(())
}

/// A topic that is not a valid Sparkplug B topic.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The first level is not `spBv1.0`.
    #[error("namespace {0:?} is not spBv1.0")]
    Namespace(String),
    /// Not 3 (STATE), 4 (node) or 5 (device) levels.
    #[error(
        "topic {topic:?} has {levels} levels; Sparkplug topics have 3 (STATE), 4 (node) or 5 (device)"
    )]
    Levels {
        /// The topic.
        topic: String,
        /// How many levels it has.
        levels: usize,
    },
    /// An unknown message type element.
    #[error(
        "unknown message type {0:?} (expected NBIRTH, NDEATH, NDATA, NCMD, DBIRTH, DDEATH, DDATA or DCMD)"
    )]
    MessageType(String),
    /// A D* type without a device id.
    #[error("{0} needs a device id")]
    DeviceIdMissing(MessageType),
    /// An N* type with a device id.
    #[error("{0} takes no device id")]
    DeviceIdUnexpected(MessageType),
    /// An empty id.
    #[error("{0} is empty")]
    EmptyId(&'static str),
    /// An id with a character MQTT or Sparkplug reserves.
    #[error("{which} {id:?} contains {found:?}, which a Sparkplug id cannot")]
    BadId {
        /// Which id.
        which: &'static str,
        /// The id.
        id: String,
        /// The offending character.
        found: char,
    },
}

/// The payload of a host application's STATE message (3.0):
/// `{"online": true, "timestamp": 1700000000000}`, published QoS 1, retained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StatePayload {
    /// Whether the host is online.
    pub online: bool,
    /// UTC ms; the birth's equals the timestamp in the Will of the same connect.
    pub timestamp: u64,
}

impl StatePayload {
    /// The JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        format!("{{\"online\":{},\"timestamp\":{}}}", self.online, self.timestamp).into_bytes()
    }

    /// Parses the JSON bytes (unknown keys are ignored).
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

//! Two independent Sparkplug decoders on a broker, for the end-to-end
//! tests of the edge nodes: `sparkplug_decode.py` decodes every Sparkplug
//! message with pysparkplug (`psp`) and with Google's protobuf runtime
//! (`pb`) and prints one JSON object a message, with its `topic`.

use std::time::Duration;

use serde_json::Value as Json;

use crate::{PythonPeer, shared_script};

/// The Python Sparkplug decoders, subscribed to a broker.
#[derive(Debug)]
pub struct SparkplugDecoders {
    peer: PythonPeer,
    wait: Duration,
}

impl SparkplugDecoders {
    /// Starts them on the broker at `host:port` and waits until they
    /// subscribed; `wait` is how long that, and each [`Self::message`], may
    /// take.
    ///
    /// # Panics
    ///
    /// When they do not start (no `.venv`) or do not subscribe in time.
    pub fn start(host: &str, port: u16, wait: Duration) -> Self {
        let peer =
            PythonPeer::spawn(shared_script("sparkplug_decode.py"), &[host, &port.to_string()])
                .expect("start the Python decoders");
        peer.until(wait, |l| l == "subscribed").expect("the decoder subscribed");
        Self { peer, wait }
    }

    /// The next decoded message on `topic` that satisfies `want`, passing
    /// over others.
    ///
    /// # Panics
    ///
    /// When none comes in time (`what` names it in the message, with every
    /// line passed over).
    pub fn message(&self, topic: &str, what: &str, want: impl Fn(&Json) -> bool) -> Json {
        let line = self.peer.until(self.wait, |l| {
            serde_json::from_str::<Json>(l).is_ok_and(|j| j["topic"] == topic && want(&j))
        });
        let line = line.unwrap_or_else(|seen| {
            panic!("no {what} on {topic} within {:?}; saw {seen:#?}", self.wait)
        });
        serde_json::from_str(&line).expect("the line parsed as JSON a moment ago")
    }
}

/// pysparkplug's typed value of metric `name` in a decoded message.
pub fn psp_value(msg: &Json, name: &str) -> Option<Json> {
    msg["psp"].get(name).map(|m| m["value"].clone())
}

/// The protobuf runtime's metric `name` in a decoded message (its
/// `datatype`, `properties` and value fields).
///
/// # Panics
///
/// When the message has no such metric.
pub fn pb_metric<'a>(msg: &'a Json, name: &str) -> &'a Json {
    msg["pb"]["metrics"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == name))
        .unwrap_or_else(|| panic!("no metric {name} in {msg}"))
}

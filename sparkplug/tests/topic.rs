//! Topic namespace and STATE payload.

use proptest::prelude::*;
use shopfloor_sparkplug::topic::check_id;
use shopfloor_sparkplug::{MessageType, StatePayload, Topic, TopicError};

#[test]
fn parse_and_format_every_shape() {
    for text in [
        "spBv1.0/Plant1/NBIRTH/Gateway-7",
        "spBv1.0/Plant1/DDATA/Gateway-7/Press 3",
        "spBv1.0/STATE/scada-primary",
        "spBv1.0/G/NCMD/E",
        "spBv1.0/G/DCMD/E/D",
    ] {
        let t = Topic::parse(text).unwrap();
        assert_eq!(t.to_string(), text);
    }
    assert_eq!(
        Topic::parse("spBv1.0/G/DDATA/E/D").unwrap(),
        Topic::device("G", MessageType::DData, "E", "D").unwrap()
    );
    assert_eq!(Topic::parse("spBv1.0/STATE/h").unwrap(), Topic::state("h").unwrap());
    assert_eq!(
        Topic::parse("spBv1.0/G/NDEATH/E").unwrap().message_type(),
        Some(MessageType::NDeath)
    );
}

#[test]
fn bad_topics_say_why() {
    let cases = [
        ("spAv1.0/G/NDATA/E", "namespace \"spAv1.0\""),
        ("spBv1.0/G/NDATA", "has 3 levels"),
        ("spBv1.0/G/DDATA/E/D/x", "has 6 levels"),
        ("spBv1.0/G/NDATUM/E", "unknown message type \"NDATUM\""),
        ("spBv1.0/G/DDATA/E", "DDATA needs a device id"),
        ("spBv1.0/G/NDATA/E/D", "NDATA takes no device id"),
        ("spBv1.0//NDATA/E", "group_id is empty"),
        ("spBv1.0/G/NDATA/E+", "edge_node_id \"E+\" contains '+'"),
        ("spBv1.0/STATE/", "host_id is empty"),
        ("spBv1.0/STATE/h#", "contains '#'"),
    ];
    for (text, needle) in cases {
        let err = Topic::parse(text).unwrap_err().to_string();
        assert!(err.contains(needle), "{text}: {err}");
    }
    assert_eq!(
        Topic::device("G", MessageType::DBirth, "E", "a/b").unwrap_err(),
        TopicError::BadId { which: "device_id", id: "a/b".into(), found: '/' }
    );
    assert_eq!(
        Topic::node("G", MessageType::DBirth, "E").unwrap_err(),
        TopicError::DeviceIdMissing(MessageType::DBirth)
    );
}

#[test]
fn qos_retain_and_seq_per_message_type() {
    for t in MessageType::ALL {
        assert_eq!(t.qos(), u8::from(t == MessageType::NDeath), "{t}");
        assert!(!t.retain());
        assert_eq!(
            t.has_seq(),
            !matches!(t, MessageType::NDeath | MessageType::NCmd | MessageType::DCmd),
            "{t}"
        );
        assert_eq!(t.as_str().parse::<MessageType>().unwrap(), t);
    }
}

#[test]
fn state_payload_json() {
    let s = StatePayload { online: true, timestamp: 1_700_000_000_000 };
    assert_eq!(s.to_json(), br#"{"online":true,"timestamp":1700000000000}"#);
    assert_eq!(StatePayload::from_json(&s.to_json()).unwrap(), s);
    // Peers add keys and spaces; both are fine.
    let peer = br#"{ "timestamp": 5, "online": false, "host": "x" }"#;
    assert_eq!(
        StatePayload::from_json(peer).unwrap(),
        StatePayload { online: false, timestamp: 5 }
    );
    for bad in [&b"ONLINE"[..], br#"{"online":"yes","timestamp":1}"#, br#"{"online":true}"#] {
        assert!(StatePayload::from_json(bad).is_err());
    }
}

proptest! {
    #[test]
    fn valid_ids_round_trip(g in "[^/+#\u{0}]{1,10}", e in "[^/+#\u{0}]{1,10}", d in "[^/+#\u{0}]{1,10}") {
        let t = Topic::device(&g, MessageType::DData, &e, &d).unwrap();
        prop_assert_eq!(Topic::parse(&t.to_string()).unwrap(), t);
        prop_assert!(check_id("x", &g).is_ok());
    }

    #[test]
    fn any_text_parses_or_errors(s in "\\PC{0,40}") {
        if let Ok(t) = Topic::parse(&s) {
            prop_assert_eq!(t.to_string(), s);
        }
    }
}

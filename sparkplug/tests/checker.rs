//! The conformance checker: our own edge node and host produce no
//! violations, and each deliberately broken message is reported with its
//! tck-id.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use prost::Message as _;
use shopfloor_schemas::{Batch, Quality, Reading, Timestamp};
use shopfloor_sparkplug::checker::{CHECKED, Checker, Observed, Violation};
use shopfloor_sparkplug::edge::{Message, MetricSpec, Publish};
use shopfloor_sparkplug::{
    DataType, EdgeNode, EdgeNodeConfig, EncodeOptions, HostApplication, HostConfig, Metric,
    MetricValue, Now, Payload, proto,
};

fn now(ms: u64) -> Now {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    Now { instant: *BASE.get_or_init(Instant::now) + Duration::from_millis(ms), unix_ms: ms }
}

fn observe(c: &mut Checker, p: &Publish) -> Vec<Violation> {
    c.observe(&Observed { topic: &p.topic, payload: &p.payload, qos: p.qos, retain: p.retain })
}

#[test]
fn our_edge_node_and_host_break_no_rule() {
    let mut c = Checker::new();
    let mut config = EdgeNodeConfig::new("G", "E");
    config.metrics =
        vec![MetricSpec::new("temp", DataType::Double), MetricSpec::new("count", DataType::Int16)];
    config.devices = vec![("d1".into(), vec![MetricSpec::new("on", DataType::Boolean)])];
    let mut edge = EdgeNode::new(config).unwrap();
    let mut host = HostApplication::new(HostConfig::new("scada"));
    let mut found = Vec::new();
    let will = edge.will();
    found.extend(c.observe_will(&Observed {
        topic: &will.topic,
        payload: &will.payload,
        qos: will.qos,
        retain: will.retain,
    }));
    let host_will = host.will(now(1)).unwrap();
    found.extend(c.observe_will(&Observed {
        topic: &host_will.topic,
        payload: &host_will.payload,
        qos: host_will.qos,
        retain: host_will.retain,
    }));
    host.handle_connected(now(1));
    edge.handle_connected(now(2));
    for ms in 3..300 {
        let batch =
            Batch::new("").with(Reading::new("temp", Timestamp::from_unix_ms(ms), ms as f64)).with(
                Reading::new("count", Timestamp::from_unix_ms(ms), -(ms as i64 % 100))
                    .with_quality(if ms % 7 == 0 { Quality::Stale } else { Quality::Good }),
            );
        edge.publish(&batch, now(ms)).unwrap();
        edge.publish(
            &Batch::new("d1").with(Reading::new("on", Timestamp::from_unix_ms(ms), ms % 2 == 0)),
            now(ms),
        )
        .unwrap();
        if ms == 150 {
            edge.device_death("d1", now(ms)).unwrap();
            edge.device_birth("d1", now(ms)).unwrap();
            // A rebirth request from the host, honoured.
            let req = Payload {
                timestamp: Some(ms),
                metrics: vec![Metric::new("Node Control/Rebirth", ms, MetricValue::Boolean(true))],
                ..Payload::default()
            };
            let p = Publish {
                topic: "spBv1.0/G/NCMD/E".into(),
                qos: 0,
                retain: false,
                payload: req
                    .encode(EncodeOptions { datatypes: false, ..EncodeOptions::default() })
                    .into(),
            };
            found.extend(observe(&mut c, &p));
            edge.handle_message(
                &Message { topic: p.topic.clone(), payload: p.payload.clone() },
                now(ms),
            )
            .unwrap();
        }
        while let Some(p) = edge.poll_transmit() {
            found.extend(observe(&mut c, &p));
            let _ = host.handle_message(
                &Message { topic: p.topic.clone(), payload: p.payload.clone() },
                now(ms),
            );
        }
        while let Some(p) = host.poll_transmit() {
            found.extend(observe(&mut c, &p));
        }
    }
    edge.disconnect();
    while let Some(p) = edge.poll_transmit() {
        found.extend(observe(&mut c, &p));
    }
    host.disconnect(now(400));
    while let Some(p) = host.poll_transmit() {
        found.extend(observe(&mut c, &p));
    }
    assert!(found.is_empty(), "{found:#?}");
}

fn payload(timestamp: Option<u64>, seq: Option<u64>, metrics: Vec<proto::Metric>) -> Vec<u8> {
    proto::Payload { timestamp, seq, metrics, ..Default::default() }.encode_to_vec()
}

fn named(name: &str, datatype: Option<u32>, value: proto::MetricValue) -> proto::Metric {
    proto::Metric {
        name: Some(name.into()),
        timestamp: Some(1),
        datatype,
        value: Some(value),
        ..Default::default()
    }
}

fn good_birth(bd: u64) -> Vec<u8> {
    payload(
        Some(1),
        Some(0),
        vec![
            named("bdSeq", Some(4), proto::MetricValue::Long(bd)),
            named("Node Control/Rebirth", Some(11), proto::MetricValue::Boolean(false)),
            proto::Metric {
                alias: Some(1),
                ..named("temp", Some(10), proto::MetricValue::Double(1.0))
            },
        ],
    )
}

#[test]
fn each_broken_message_is_reported_with_its_tck_id() {
    let data = |seq| {
        payload(
            Some(2),
            seq,
            vec![proto::Metric {
                alias: Some(1),
                timestamp: Some(2),
                value: Some(proto::MetricValue::Double(2.0)),
                ..Default::default()
            }],
        )
    };
    // (topic, payload, qos, retain, the id that must be reported)
    let cases: Vec<(&str, Vec<u8>, u8, bool, &str)> = vec![
        ("spBv1.0/G/NBIRTH/E", good_birth(0), 1, false, "tck-id-payloads-nbirth-qos"),
        ("spBv1.0/G/NBIRTH/E", good_birth(0), 0, true, "tck-id-payloads-nbirth-retain"),
        (
            "spBv1.0/G/NBIRTH/E",
            payload(None, Some(0), vec![]),
            0,
            false,
            "tck-id-payloads-nbirth-timestamp",
        ),
        (
            "spBv1.0/G/NBIRTH/E",
            payload(Some(1), None, vec![]),
            0,
            false,
            "tck-id-payloads-nbirth-seq",
        ),
        (
            "spBv1.0/G/NBIRTH/E",
            payload(Some(1), Some(3), vec![]),
            0,
            false,
            "tck-id-topics-nbirth-seq-num",
        ),
        (
            "spBv1.0/G/NBIRTH/E",
            payload(Some(1), Some(0), vec![]),
            0,
            false,
            "tck-id-payloads-nbirth-bdseq",
        ),
        (
            "spBv1.0/G/NBIRTH/E",
            payload(Some(1), Some(0), vec![named("bdSeq", Some(4), proto::MetricValue::Long(0))]),
            0,
            false,
            "tck-id-payloads-nbirth-rebirth-req",
        ),
        (
            "spBv1.0/G/NBIRTH/E",
            payload(
                Some(1),
                Some(0),
                vec![proto::Metric {
                    datatype: None,
                    ..named("x", None, proto::MetricValue::Int(1))
                }],
            ),
            0,
            false,
            "tck-id-payloads-metric-datatype-req",
        ),
        (
            "spBv1.0/G/NBIRTH/E",
            payload(Some(1), Some(0), vec![named("x", Some(99), proto::MetricValue::Int(1))]),
            0,
            false,
            "tck-id-payloads-metric-datatype-value",
        ),
        (
            "spBv1.0/G/NBIRTH/E",
            payload(
                Some(1),
                Some(0),
                vec![proto::Metric {
                    timestamp: None,
                    ..named("x", Some(3), proto::MetricValue::Int(1))
                }],
            ),
            0,
            false,
            "tck-id-payloads-name-birth-data-requirement",
        ),
        (
            "spBv1.0/G/NBIRTH/E",
            payload(
                Some(1),
                Some(0),
                vec![
                    proto::Metric {
                        alias: Some(5),
                        ..named("a", Some(3), proto::MetricValue::Int(1))
                    },
                    proto::Metric {
                        alias: Some(5),
                        ..named("b", Some(3), proto::MetricValue::Int(1))
                    },
                ],
            ),
            0,
            false,
            "tck-id-payloads-alias-uniqueness",
        ),
        (
            "spBv1.0/G/NBIRTH/E",
            payload(
                Some(1),
                Some(0),
                vec![proto::Metric {
                    properties: Some(proto::PropertySet {
                        keys: vec!["Quality".into()],
                        values: vec![proto::PropertyValue {
                            r#type: Some(3),
                            is_null: None,
                            value: Some(proto::PropertyValueValue::Int(7)),
                        }],
                    }),
                    ..named("x", Some(3), proto::MetricValue::Int(1))
                }],
            ),
            0,
            false,
            "tck-id-payloads-propertyset-quality-value-value",
        ),
        (
            "spBv1.0/G/NBIRTH/E",
            payload(
                Some(1),
                Some(0),
                vec![proto::Metric {
                    properties: Some(proto::PropertySet {
                        keys: vec!["Quality".into()],
                        values: vec![proto::PropertyValue {
                            r#type: Some(7),
                            is_null: None,
                            value: Some(proto::PropertyValueValue::Int(192)),
                        }],
                    }),
                    ..named("x", Some(3), proto::MetricValue::Int(1))
                }],
            ),
            0,
            false,
            "tck-id-payloads-propertyset-quality-value-type",
        ),
        (
            "spBv1.0/G/NBIRTH/E",
            payload(
                Some(1),
                Some(0),
                vec![proto::Metric {
                    properties: Some(proto::PropertySet { keys: vec!["a".into()], values: vec![] }),
                    ..named("x", Some(3), proto::MetricValue::Int(1))
                }],
            ),
            0,
            false,
            "tck-id-payloads-propertyset-keys-array-size",
        ),
        (
            "spBv1.0/G/NBIRTH/E",
            payload(
                Some(1),
                Some(0),
                vec![named(
                    "t",
                    Some(16),
                    proto::MetricValue::DataSet(Box::new(proto::DataSet {
                        num_of_columns: Some(2),
                        columns: vec!["a".into(), "b".into()],
                        types: vec![3],
                        rows: vec![],
                    })),
                )],
            ),
            0,
            false,
            "tck-id-payloads-dataset-types-num",
        ),
        ("spBv1.0/G/NDATA/E", data(Some(1)), 1, false, "tck-id-payloads-ndata-qos"),
        ("spBv1.0/G/NDATA/E", data(None), 0, false, "tck-id-payloads-ndata-seq"),
        (
            "spBv1.0/G/NDATA/E",
            payload(None, Some(1), vec![]),
            0,
            false,
            "tck-id-payloads-ndata-timestamp",
        ),
        (
            "spBv1.0/G/NDATA/E",
            payload(
                Some(2),
                Some(1),
                vec![proto::Metric {
                    alias: Some(1),
                    name: Some("temp".into()),
                    timestamp: Some(2),
                    value: Some(proto::MetricValue::Double(2.0)),
                    ..Default::default()
                }],
            ),
            0,
            false,
            "tck-id-payloads-alias-data-cmd-requirement",
        ),
        (
            "spBv1.0/G/NDATA/E",
            payload(
                Some(2),
                Some(1),
                vec![proto::Metric {
                    timestamp: Some(2),
                    value: Some(proto::MetricValue::Double(2.0)),
                    ..Default::default()
                }],
            ),
            0,
            false,
            "tck-id-payloads-name-requirement",
        ),
        (
            "spBv1.0/G/DDATA/E/D",
            payload(Some(2), Some(1), vec![named("x", Some(3), proto::MetricValue::Int(1))]),
            0,
            false,
            "tck-id-payloads-metric-datatype-not-req",
        ),
        (
            "spBv1.0/G/NCMD/E",
            payload(Some(2), Some(4), vec![]),
            0,
            false,
            "tck-id-payloads-ncmd-seq",
        ),
        (
            "spBv1.0/G/DCMD/E/D",
            payload(None, None, vec![]),
            0,
            false,
            "tck-id-payloads-dcmd-timestamp",
        ),
        (
            "spBv1.0/G/NDEATH/E",
            payload(None, Some(3), vec![named("bdSeq", Some(4), proto::MetricValue::Long(0))]),
            1,
            false,
            "tck-id-payloads-ndeath-seq",
        ),
        (
            "spBv1.0/G/NDEATH/E",
            payload(
                None,
                None,
                vec![
                    named("bdSeq", Some(4), proto::MetricValue::Long(0)),
                    named("x", Some(3), proto::MetricValue::Int(1)),
                ],
            ),
            1,
            false,
            "tck-id-topics-ndeath-payload",
        ),
        (
            "spBv1.0/G/DDEATH/E/D",
            payload(Some(2), None, vec![]),
            0,
            false,
            "tck-id-payloads-ddeath-seq",
        ),
        (
            "spBv1.0/G/DDATA/E",
            data(Some(1)),
            0,
            false,
            "tck-id-topic-structure-namespace-device-id-associated-message-types",
        ),
        (
            "spBv1.0/G/NDATA/E/D",
            data(Some(1)),
            0,
            false,
            "tck-id-topic-structure-namespace-device-id-non-associated-message-types",
        ),
        (
            "spBv1.0/G+/NDATA/E",
            data(Some(1)),
            0,
            false,
            "tck-id-topic-structure-namespace-valid-group-id",
        ),
        (
            "spBv1.0/G/NDATA/E#",
            data(Some(1)),
            0,
            false,
            "tck-id-topic-structure-namespace-valid-edge-node-id",
        ),
        ("spBv1.0/G/NDATUM/E", data(Some(1)), 0, false, "tck-id-topic-structure"),
        (
            "spBv1.0/STATE/scada",
            br#"{"online":true,"timestamp":1}"#.to_vec(),
            0,
            true,
            "tck-id-host-topic-phid-birth-qos",
        ),
        (
            "spBv1.0/STATE/scada",
            br#"{"online":false,"timestamp":1}"#.to_vec(),
            1,
            false,
            "tck-id-host-topic-phid-death-retain",
        ),
        (
            "spBv1.0/STATE/scada",
            b"ONLINE".to_vec(),
            1,
            true,
            "tck-id-host-topic-phid-birth-payload",
        ),
    ];
    for (topic, bytes, qos, retain, id) in cases {
        let mut c = Checker::new();
        let found = c.observe(&Observed { topic, payload: &bytes, qos, retain });
        assert!(
            found.iter().any(|v| v.tck_id == Some(id)),
            "{topic}: expected {id}, got {found:#?}"
        );
        assert!(CHECKED.contains(&id), "{id} is reported but not listed in CHECKED");
    }
}

#[test]
fn sequences_and_bdseq_are_followed_across_messages() {
    let mut c = Checker::new();
    let will = payload(None, None, vec![named("bdSeq", Some(4), proto::MetricValue::Long(3))]);
    // A Will at QoS 0, as pysparkplug 0.6 registers it.
    let found = c.observe_will(&Observed {
        topic: "spBv1.0/G/NDEATH/E",
        payload: &will,
        qos: 0,
        retain: false,
    });
    assert_eq!(
        found.iter().filter_map(|v| v.tck_id).collect::<Vec<_>>(),
        ["tck-id-payloads-ndeath-will-message-qos"]
    );
    // The birth's bdSeq must repeat the Will's.
    let found = c.observe(&Observed {
        topic: "spBv1.0/G/NBIRTH/E",
        payload: &good_birth(4),
        qos: 0,
        retain: false,
    });
    assert!(
        found.iter().any(|v| v.tck_id == Some("tck-id-payloads-nbirth-bdseq-repeat")),
        "{found:#?}"
    );
    let data = |seq| {
        payload(
            Some(2),
            Some(seq),
            vec![proto::Metric {
                alias: Some(1),
                timestamp: Some(2),
                value: Some(proto::MetricValue::Double(2.0)),
                ..Default::default()
            }],
        )
    };
    assert!(
        c.observe(&Observed {
            topic: "spBv1.0/G/NDATA/E",
            payload: &data(1),
            qos: 0,
            retain: false
        })
        .is_empty()
    );
    let found = c.observe(&Observed {
        topic: "spBv1.0/G/NDATA/E",
        payload: &data(3),
        qos: 0,
        retain: false,
    });
    assert!(
        found.iter().any(|v| v.tck_id == Some("tck-id-payloads-ndata-seq-inc")
            && v.detail.contains("expected 2")),
        "{found:#?}"
    );
    // A host Will must be QoS 1, retained, and say offline.
    let found = c.observe_will(&Observed {
        topic: "spBv1.0/STATE/h",
        payload: br#"{"online":true,"timestamp":1}"#,
        qos: 0,
        retain: false,
    });
    let ids: Vec<_> = found.iter().filter_map(|v| v.tck_id).collect();
    assert_eq!(
        ids,
        [
            "tck-id-payloads-state-will-message-qos",
            "tck-id-payloads-state-will-message-retain",
            "tck-id-payloads-state-will-message-payload"
        ]
    );
}

proptest! {
    #[test]
    fn any_message_is_checked_without_panicking(topic in "spBv1\\.0(/[A-Z+#]{0,6}){0,5}", bytes in proptest::collection::vec(any::<u8>(), 0..128), qos in 0_u8..3, retain in any::<bool>()) {
        let mut c = Checker::new();
        let _ = c.observe(&Observed { topic: &topic, payload: &bytes, qos, retain });
        let _ = c.observe_will(&Observed { topic: &topic, payload: &bytes, qos, retain });
    }
}

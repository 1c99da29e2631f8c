//! The conformance checker: our own edge node and host produce no
//! violations, and each deliberately broken message is reported with its
//! tck-id.

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
    Now::at_unix_ms(ms)
}

fn observed(p: &Publish) -> Observed<'_> {
    Observed { topic: &p.topic, payload: &p.payload, qos: p.qos, retain: p.retain }
}

fn observe(c: &mut Checker, p: &Publish) -> Vec<Violation> {
    c.observe(&observed(p))
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
    found.extend(c.observe_will(&observed(&will)));
    let host_will = host.will(now(1)).unwrap();
    found.extend(c.observe_will(&observed(&host_will)));
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
                payload: req.encode(EncodeOptions::DEFAULT.with_datatypes(false)).into(),
            };
            found.extend(observe(&mut c, &p));
            edge.handle_message(
                &Message { retain: false, topic: p.topic.clone(), payload: p.payload.clone() },
                now(ms),
            )
            .unwrap();
        }
        while let Some(p) = edge.poll_transmit() {
            found.extend(observe(&mut c, &p));
            let _ = host.handle_message(
                &Message { retain: false, topic: p.topic.clone(), payload: p.payload.clone() },
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

/// An NBIRTH payload: timestamp 1, seq 0.
fn birth(metrics: Vec<proto::Metric>) -> Vec<u8> {
    payload(Some(1), Some(0), metrics)
}

/// Metric `x` with a `Quality` property of DataType number `r#type`.
fn with_quality_property(r#type: u32, value: u32) -> proto::Metric {
    proto::Metric {
        properties: Some(proto::PropertySet {
            keys: vec!["Quality".into()],
            values: vec![proto::PropertyValue {
                r#type: Some(r#type),
                is_null: None,
                value: Some(proto::PropertyValueValue::Int(value)),
            }],
        }),
        ..named("x", Some(3), proto::MetricValue::Int(1))
    }
}

fn good_birth(bd: u64) -> Vec<u8> {
    birth(vec![
        named("bdSeq", Some(4), proto::MetricValue::Long(bd)),
        named("Node Control/Rebirth", Some(11), proto::MetricValue::Boolean(false)),
        proto::Metric {
            alias: Some(1),
            ..named("temp", Some(10), proto::MetricValue::Double(1.0))
        },
    ])
}

/// `temp` of [`good_birth`] in DATA (timestamp 2, value 2.0), by neither
/// name nor alias.
fn temp_data() -> proto::Metric {
    proto::Metric {
        timestamp: Some(2),
        value: Some(proto::MetricValue::Double(2.0)),
        ..Default::default()
    }
}

/// NDATA (timestamp 2) of `temp` by its alias.
fn data(seq: Option<u64>) -> Vec<u8> {
    payload(Some(2), seq, vec![proto::Metric { alias: Some(1), ..temp_data() }])
}

#[test]
fn each_broken_message_is_reported_with_its_tck_id() {
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
        ("spBv1.0/G/NBIRTH/E", birth(vec![]), 0, false, "tck-id-payloads-nbirth-bdseq"),
        (
            "spBv1.0/G/NBIRTH/E",
            birth(vec![named("bdSeq", Some(4), proto::MetricValue::Long(0))]),
            0,
            false,
            "tck-id-payloads-nbirth-rebirth-req",
        ),
        (
            "spBv1.0/G/NBIRTH/E",
            birth(vec![proto::Metric {
                datatype: None,
                ..named("x", None, proto::MetricValue::Int(1))
            }]),
            0,
            false,
            "tck-id-payloads-metric-datatype-req",
        ),
        (
            "spBv1.0/G/NBIRTH/E",
            birth(vec![named("x", Some(99), proto::MetricValue::Int(1))]),
            0,
            false,
            "tck-id-payloads-metric-datatype-value",
        ),
        (
            "spBv1.0/G/NBIRTH/E",
            birth(vec![proto::Metric {
                timestamp: None,
                ..named("x", Some(3), proto::MetricValue::Int(1))
            }]),
            0,
            false,
            "tck-id-payloads-name-birth-data-requirement",
        ),
        (
            "spBv1.0/G/NBIRTH/E",
            birth(vec![
                proto::Metric { alias: Some(5), ..named("a", Some(3), proto::MetricValue::Int(1)) },
                proto::Metric { alias: Some(5), ..named("b", Some(3), proto::MetricValue::Int(1)) },
            ]),
            0,
            false,
            "tck-id-payloads-alias-uniqueness",
        ),
        (
            "spBv1.0/G/NBIRTH/E",
            birth(vec![with_quality_property(3, 7)]),
            0,
            false,
            "tck-id-payloads-propertyset-quality-value-value",
        ),
        (
            "spBv1.0/G/NBIRTH/E",
            birth(vec![with_quality_property(7, 192)]),
            0,
            false,
            "tck-id-payloads-propertyset-quality-value-type",
        ),
        (
            "spBv1.0/G/NBIRTH/E",
            birth(vec![proto::Metric {
                properties: Some(proto::PropertySet { keys: vec!["a".into()], values: vec![] }),
                ..named("x", Some(3), proto::MetricValue::Int(1))
            }]),
            0,
            false,
            "tck-id-payloads-propertyset-keys-array-size",
        ),
        (
            "spBv1.0/G/NBIRTH/E",
            birth(vec![named(
                "t",
                Some(16),
                proto::MetricValue::DataSet(Box::new(proto::DataSet {
                    num_of_columns: Some(2),
                    columns: vec!["a".into(), "b".into()],
                    types: vec![3],
                    rows: vec![],
                })),
            )]),
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
                vec![proto::Metric { alias: Some(1), name: Some("temp".into()), ..temp_data() }],
            ),
            0,
            false,
            "tck-id-payloads-alias-data-cmd-requirement",
        ),
        (
            "spBv1.0/G/NDATA/E",
            payload(Some(2), Some(1), vec![temp_data()]),
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
    assert!(
        c.observe(&Observed {
            topic: "spBv1.0/G/NDATA/E",
            payload: &data(Some(1)),
            qos: 0,
            retain: false
        })
        .is_empty()
    );
    let found = c.observe(&Observed {
        topic: "spBv1.0/G/NDATA/E",
        payload: &data(Some(3)),
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

/// Messages (topic, payload) fed to one checker in order.
type Traffic<'a> = Vec<(&'a str, Vec<u8>)>;

/// Ids reported for the last message of `msgs` (all QoS 0, not retained),
/// fed in order to one checker.
fn last_ids(msgs: &[(&str, Vec<u8>)]) -> Vec<&'static str> {
    let mut c = Checker::new();
    let mut found = Vec::new();
    for (topic, bytes) in msgs {
        found = c.observe(&Observed { topic, payload: bytes, qos: 0, retain: false });
    }
    found.iter().filter_map(|v| v.tck_id).collect()
}

fn msg(seq: Option<u64>, metrics: Vec<proto::Metric>) -> Vec<u8> {
    payload(Some(5), seq, metrics)
}

fn by_alias(alias: u64, ts: u64, v: f64) -> proto::Metric {
    proto::Metric {
        alias: Some(alias),
        timestamp: Some(ts),
        value: Some(proto::MetricValue::Double(v)),
        ..Default::default()
    }
}

fn cmd(name: &str) -> proto::Metric {
    proto::Metric { datatype: None, ..named(name, None, proto::MetricValue::Boolean(true)) }
}

fn dbirth(seq: u64, metric: &str) -> Vec<u8> {
    msg(Some(seq), vec![named(metric, Some(11), proto::MetricValue::Boolean(false))])
}

#[test]
fn rules_across_messages_are_reported_with_their_tck_ids() {
    const NB: &str = "spBv1.0/G/NBIRTH/E";
    const DB: &str = "spBv1.0/G/DBIRTH/E/D";
    let ndeath = msg(None, vec![named("bdSeq", Some(4), proto::MetricValue::Long(0))]);
    let cases: Vec<(Traffic<'_>, &str)> = vec![
        (
            vec![(NB, good_birth(0)), ("spBv1.0/G/NCMD/E", msg(None, vec![]))],
            "tck-id-topics-ncmd-payload",
        ),
        (vec![("spBv1.0/G/DCMD/E/D", msg(None, vec![]))], "tck-id-topics-dcmd-payload"),
        (
            vec![(NB, good_birth(0)), ("spBv1.0/G/NCMD/E", msg(None, vec![cmd("nope")]))],
            "tck-id-operational-behavior-data-commands-ncmd-metric-name",
        ),
        (
            vec![
                (NB, good_birth(0)),
                (DB, dbirth(1, "on")),
                ("spBv1.0/G/DCMD/E/D", msg(None, vec![cmd("off")])),
            ],
            "tck-id-operational-behavior-data-commands-dcmd-metric-name",
        ),
        (
            vec![(
                DB,
                msg(
                    Some(1),
                    vec![
                        named("Temp", Some(10), proto::MetricValue::Double(1.0)),
                        named("temp", Some(10), proto::MetricValue::Double(1.0)),
                    ],
                ),
            )],
            "tck-id-case-sensitivity-metric-names",
        ),
        (
            vec![(NB, good_birth(0)), ("spBv1.0/g/NBIRTH/e", good_birth(0))],
            "tck-id-case-sensitivity-sparkplug-ids",
        ),
        (
            vec![
                (NB, good_birth(0)),
                (DB, dbirth(1, "on")),
                ("spBv1.0/G/DBIRTH/E/d", dbirth(2, "on")),
            ],
            "tck-id-case-sensitivity-sparkplug-ids",
        ),
        (
            vec![
                (NB, good_birth(0)),
                ("spBv1.0/G/NDATA/E", msg(Some(1), vec![by_alias(1, 9, 1.0), by_alias(1, 8, 2.0)])),
            ],
            "tck-id-operational-behavior-data-publish-nbirth-order",
        ),
        (
            vec![
                (NB, good_birth(0)),
                (DB, dbirth(1, "on")),
                (
                    "spBv1.0/G/DDATA/E/D",
                    msg(Some(2), vec![by_alias(1, 9, 1.0), by_alias(1, 8, 2.0)]),
                ),
            ],
            "tck-id-operational-behavior-data-publish-dbirth-order",
        ),
        (
            vec![
                (NB, good_birth(0)),
                ("spBv1.0/G/NDATA/E", msg(Some(1), vec![by_alias(1, 9, 1.0)])),
                (DB, dbirth(2, "on")),
            ],
            "tck-id-payloads-dbirth-order",
        ),
        (
            vec![
                (NB, good_birth(0)),
                ("spBv1.0/G/NDEATH/E", ndeath.clone()),
                ("spBv1.0/G/NDATA/E", msg(Some(1), vec![by_alias(1, 9, 1.0)])),
            ],
            "tck-id-payloads-ndata-order",
        ),
        (
            vec![
                (NB, good_birth(0)),
                ("spBv1.0/G/DDATA/E/D", msg(Some(1), vec![by_alias(1, 9, 1.0)])),
            ],
            "tck-id-payloads-ddata-order",
        ),
    ];
    for (msgs, id) in cases {
        let found = last_ids(&msgs);
        assert!(found.contains(&id), "{:?}: expected {id}, got {found:?}", msgs.last().unwrap().0);
        assert!(CHECKED.contains(&id), "{id} is reported but not listed in CHECKED");
    }
}

fn param(name: Option<&str>, ty: Option<u32>) -> proto::Parameter {
    proto::Parameter {
        name: name.map(str::to_owned),
        r#type: ty,
        value: Some(proto::ParameterValue::Int(1)),
    }
}

fn template(
    is_definition: Option<bool>,
    template_ref: Option<&str>,
    members: &[&str],
    parameters: Vec<proto::Parameter>,
) -> proto::MetricValue {
    proto::MetricValue::Template(Box::new(proto::Template {
        version: None,
        metrics: members
            .iter()
            .map(|m| named(m, Some(10), proto::MetricValue::Double(0.0)))
            .collect(),
        parameters,
        template_ref: template_ref.map(str::to_owned),
        is_definition,
    }))
}

/// An NBIRTH with the `Motor` definition (members `rpm`, `amps`, parameter
/// `poles`) and `extra` metrics after it.
fn birth_with(extra: Vec<proto::Metric>) -> Vec<u8> {
    let mut metrics = vec![
        named("bdSeq", Some(4), proto::MetricValue::Long(0)),
        named("Node Control/Rebirth", Some(11), proto::MetricValue::Boolean(false)),
        named(
            "Motor",
            Some(19),
            template(Some(true), None, &["rpm", "amps"], vec![param(Some("poles"), Some(3))]),
        ),
    ];
    metrics.extend(extra);
    msg(Some(0), metrics)
}

fn instance(value: proto::MetricValue) -> proto::Metric {
    named("Pump/Motor", Some(19), value)
}

#[test]
fn template_rules_are_reported_with_their_tck_ids() {
    const NB: &str = "spBv1.0/G/NBIRTH/E";
    let good = || template(Some(false), Some("Motor"), &["rpm", "amps"], vec![]);
    assert_eq!(last_ids(&[(NB, birth_with(vec![instance(good())]))]), Vec::<&str>::new());
    let with_params =
        template(Some(false), Some("Motor"), &["rpm", "amps"], vec![param(Some("poles"), Some(3))]);
    assert_eq!(last_ids(&[(NB, birth_with(vec![instance(with_params)]))]), Vec::<&str>::new());
    // In DATA an instance may carry only some members.
    let some = template(Some(false), Some("Motor"), &["rpm"], vec![]);
    let data = msg(Some(1), vec![proto::Metric { datatype: None, ..instance(some) }]);
    let found = last_ids(&[(NB, birth_with(vec![])), ("spBv1.0/G/NDATA/E", data)]);
    assert!(!found.iter().any(|id| id.contains("template")), "{found:?}");

    let cases: Vec<(Traffic<'_>, &[&str])> = vec![
        (
            vec![
                (NB, birth_with(vec![])),
                (
                    "spBv1.0/G/DBIRTH/E/D",
                    msg(
                        Some(1),
                        vec![named("Def", Some(19), template(Some(true), None, &[], vec![]))],
                    ),
                ),
            ],
            &["tck-id-payloads-template-definition-nbirth-only"],
        ),
        (
            vec![(
                NB,
                birth_with(vec![instance(template(Some(false), None, &["rpm", "amps"], vec![]))]),
            )],
            &["tck-id-payloads-template-instance-ref", "tck-id-payloads-template-ref-instance"],
        ),
        (
            vec![(
                NB,
                birth_with(vec![instance(template(None, Some("Motor"), &["rpm", "amps"], vec![]))]),
            )],
            &["tck-id-payloads-template-is-definition"],
        ),
        (
            vec![(NB, birth_with(vec![named("Def", Some(19), template(None, None, &[], vec![]))]))],
            &[
                "tck-id-payloads-template-is-definition",
                "tck-id-payloads-template-definition-is-definition",
                "tck-id-payloads-template-is-definition-definition",
            ],
        ),
        (
            vec![(
                NB,
                birth_with(vec![instance(template(
                    Some(true),
                    Some("Motor"),
                    &["rpm", "amps"],
                    vec![],
                ))]),
            )],
            &[
                "tck-id-payloads-template-definition-ref",
                "tck-id-payloads-template-ref-definition",
                "tck-id-payloads-template-instance-is-definition",
                "tck-id-payloads-template-is-definition-instance",
            ],
        ),
        (
            vec![(
                NB,
                birth_with(vec![instance(template(Some(false), Some("Valve"), &[], vec![]))]),
            )],
            &["tck-id-payloads-template-definition-nbirth", "tck-id-topics-nbirth-templates"],
        ),
        (
            vec![(
                NB,
                birth_with(vec![instance(template(
                    Some(false),
                    Some("Motor"),
                    &["rpm", "amps", "torque"],
                    vec![],
                ))]),
            )],
            &[
                "tck-id-payloads-template-instance-members",
                "tck-id-payloads-template-definition-members",
            ],
        ),
        (
            vec![(
                NB,
                birth_with(vec![instance(template(Some(false), Some("Motor"), &["rpm"], vec![]))]),
            )],
            &["tck-id-payloads-template-instance-members-birth"],
        ),
        (
            vec![(
                NB,
                birth_with(vec![instance(template(
                    Some(false),
                    Some("Motor"),
                    &["rpm", "amps"],
                    vec![param(Some("phases"), Some(3))],
                ))]),
            )],
            &[
                "tck-id-payloads-template-instance-parameters",
                "tck-id-payloads-template-definition-parameters",
            ],
        ),
        (
            vec![(
                NB,
                birth_with(vec![named(
                    "Def",
                    Some(19),
                    template(Some(true), None, &[], vec![param(None, Some(3))]),
                )]),
            )],
            &["tck-id-payloads-template-parameter-name-required"],
        ),
        (
            vec![(
                NB,
                birth_with(vec![named(
                    "Def",
                    Some(19),
                    template(Some(true), None, &[], vec![param(Some("p"), None)]),
                )]),
            )],
            &["tck-id-payloads-template-parameter-type-req"],
        ),
        (
            vec![(
                NB,
                birth_with(vec![named(
                    "Def",
                    Some(19),
                    template(Some(true), None, &[], vec![param(Some("p"), Some(16))]),
                )]),
            )],
            &["tck-id-payloads-template-parameter-type-value"],
        ),
    ];
    for (msgs, ids) in cases {
        let found = last_ids(&msgs);
        for id in ids {
            assert!(found.contains(id), "expected {id}, got {found:?}");
            assert!(CHECKED.contains(id), "{id} is reported but not listed in CHECKED");
        }
    }
}

//! Payload ↔ `shopfloor_schemas::Batch`.

use shopfloor_schemas::{Batch, Quality, Reading, Timestamp, Value};
use shopfloor_sparkplug::convert::QUALITY_PROPERTY;
use shopfloor_sparkplug::payload::PropertyValue;
use shopfloor_sparkplug::{BirthTypes, EncodeOptions, Metric, MetricValue, Payload};

#[test]
fn batch_survives_the_trip_through_sparkplug() {
    let t = Timestamp::from_unix_ms(1_700_000_000_000);
    let batch = Batch::new("G/E")
        .with(Reading::new("temp", t, 21.5))
        .with(Reading::new("count", t, -3_i64).with_quality(Quality::Stale))
        .with(Reading::new("total", t, u64::MAX).with_quality(Quality::Bad))
        .with(Reading::new("on", t, true))
        .with(Reading::new("name", t, "press"))
        .with(Reading::new("raw", t, bytes::Bytes::from_static(b"\x01")));
    let payload = Payload::from_batch(&batch);
    let stale = &payload.metrics[1];
    assert_eq!(
        stale.properties.as_ref().unwrap().get(QUALITY_PROPERTY),
        Some(&PropertyValue::Value(MetricValue::Int32(500)))
    );
    assert!(payload.metrics[0].properties.is_none(), "good quality needs no property");
    let bytes = payload.encode(EncodeOptions::default());
    let back = Payload::decode(&bytes, &BirthTypes::new()).unwrap().to_batch("G/E");
    assert_eq!(back.skipped, 0);
    assert_eq!(back.batch, batch);
}

#[test]
fn every_scalar_type_maps_and_the_rest_is_counted() {
    let m = |v: MetricValue| Metric::new("m", 7, v);
    let p = Payload {
        timestamp: Some(9),
        metrics: vec![
            m(MetricValue::Int8(-8)),
            m(MetricValue::UInt32(u32::MAX)),
            m(MetricValue::Float(1.5)),
            m(MetricValue::DateTime(123)),
            m(MetricValue::Uuid("u".into())),
            Metric { timestamp: None, ..m(MetricValue::Text("t".into())) },
            m(MetricValue::Int32Array(vec![1])),
            m(MetricValue::DataSet(Box::default())),
            Metric { value: None, ..m(MetricValue::Int32(0)) },
        ],
        ..Default::default()
    };
    let out = p.to_batch("src");
    let values: Vec<&Value> = out.batch.readings.iter().map(|r| &r.value).collect();
    assert_eq!(
        values,
        [
            &Value::I64(-8),
            &Value::I64(i64::from(u32::MAX)),
            &Value::F64(1.5),
            &Value::U64(123),
            &Value::String("u".into()),
            &Value::String("t".into()),
            &Value::String("[1]".into()),
            &Value::String(r#"{"columns":[],"types":[],"rows":[]}"#.into()),
        ]
    );
    assert_eq!(out.skipped, 1, "the null value");
    assert_eq!(out.batch.readings[5].timestamp.unix_ms(), 9, "the payload's timestamp fills in");
}

#[test]
fn arrays_and_datasets_are_json_a_query_can_use() {
    use shopfloor_sparkplug::DataType;
    use shopfloor_sparkplug::payload::DataSet;
    let m = |v: MetricValue| Metric::new("m", 7, v);
    let p = Payload {
        metrics: vec![
            m(MetricValue::DoubleArray(vec![1.0, -2.5, f64::NAN, 1e300])),
            m(MetricValue::BooleanArray(vec![true, false])),
            m(MetricValue::StringArray(vec!["a\"b".into(), "c\\d\n".into()])),
            m(MetricValue::Int64Array(vec![i64::MIN, 0])),
            m(MetricValue::DateTimeArray(vec![1_700_000_000_000])),
            m(MetricValue::DataSet(Box::new(DataSet {
                columns: vec![("n".into(), DataType::Int32), ("s".into(), DataType::String)],
                rows: vec![
                    vec![Some(MetricValue::Int32(1)), Some(MetricValue::String("x".into()))],
                    vec![None, Some(MetricValue::String("y".into()))],
                ],
            }))),
        ],
        ..Default::default()
    };
    let out = p.to_batch("src");
    let texts: Vec<String> = out
        .batch
        .readings
        .iter()
        .map(|r| match &r.value {
            Value::String(s) => s.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        texts,
        [
            "[1.0,-2.5,null,1e300]",
            "[true,false]",
            r#"["a\"b","c\\d\n"]"#,
            "[-9223372036854775808,0]",
            "[1700000000000]",
            r#"{"columns":["n","s"],"types":["Int32","String"],"rows":[[1,"x"],[null,"y"]]}"#,
        ]
    );
}

/// A template instance as Ignition sends one: the definition in NBIRTH,
/// the instance in the birth, then DATA naming the instance by alias with
/// members that leave their datatypes out.
#[test]
fn template_members_become_readings_named_instance_slash_member() {
    use shopfloor_sparkplug::payload::Template;
    let member = |name: &str, v: MetricValue| Metric { timestamp: None, ..Metric::new(name, 0, v) };
    let definition = Metric::new(
        "Motor",
        5,
        MetricValue::Template(Box::new(Template {
            is_definition: true,
            metrics: vec![
                member("Speed", MetricValue::Float(0.0)),
                member("Running", MetricValue::Boolean(false)),
            ],
            ..Template::default()
        })),
    );
    let instance = |speed: f32, bearing_temp: f64| {
        let bearing = member(
            "Bearing",
            MetricValue::Template(Box::new(Template {
                template_ref: Some("BearingType".into()),
                metrics: vec![member("Temp", MetricValue::Double(bearing_temp))],
                ..Template::default()
            })),
        );
        MetricValue::Template(Box::new(Template {
            template_ref: Some("Motor".into()),
            metrics: vec![
                member("Speed", MetricValue::Float(speed)),
                member("Running", MetricValue::Boolean(true)),
                bearing,
            ],
            ..Template::default()
        }))
    };
    let mut m1 = Metric::new("Motor1", 10, instance(1500.0, 41.5));
    m1.alias = Some(3);
    let birth = Payload {
        timestamp: Some(10),
        seq: Some(0),
        metrics: vec![definition, m1],
        ..Default::default()
    };
    let bytes = birth.encode(EncodeOptions::default());
    let decoded = Payload::decode(&bytes, &BirthTypes::new()).unwrap();
    let out = decoded.to_batch("G/E");
    let got: Vec<(String, Value, u64)> = out
        .batch
        .readings
        .iter()
        .map(|r| (r.metric.to_string(), r.value.clone(), r.timestamp.unix_ms()))
        .collect();
    assert_eq!(
        got,
        [
            ("Motor1/Speed".to_owned(), Value::F64(1500.0), 10),
            ("Motor1/Running".to_owned(), Value::Bool(true), 10),
            ("Motor1/Bearing/Temp".to_owned(), Value::F64(41.5), 10),
        ]
    );
    assert_eq!(out.skipped, 0, "a definition is not a skipped metric");

    // DATA: the instance by alias, members without datatypes.
    let types = BirthTypes::from_birth(&decoded);
    let mut data =
        Metric { name: None, alias: Some(3), ..Metric::new("x", 20, instance(1600.0, 42.0)) };
    data.datatype = shopfloor_sparkplug::DataType::Template;
    let raw =
        Payload { timestamp: Some(20), seq: Some(1), metrics: vec![data], ..Default::default() };
    let bytes = raw.encode(EncodeOptions::DEFAULT.with_datatypes(false));
    let decoded = Payload::decode(&bytes, &types).expect("members typed from the birth");
    let names: Vec<(String, Value)> = decoded
        .to_batch("G/E")
        .batch
        .readings
        .iter()
        .map(|r| (r.metric.to_string(), r.value.clone()))
        .collect();
    assert_eq!(
        names,
        [
            ("Motor1/Speed".to_owned(), Value::F64(1600.0)),
            ("Motor1/Running".to_owned(), Value::Bool(true)),
            ("Motor1/Bearing/Temp".to_owned(), Value::F64(42.0)),
        ]
    );
}

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
        ]
    );
    assert_eq!(out.skipped, 3);
    assert_eq!(out.batch.readings[5].timestamp.unix_ms(), 9, "the payload's timestamp fills in");
}

//! OPC UA values to shopfloor values: [`Variant`] to [`Value`],
//! [`StatusCode`] to [`Quality`], and the Sparkplug type a node's values
//! get. Pure functions: every variant is either converted or refused with
//! a reason (the bridge reports a refused node once, never drops it
//! silently).

use opcua::types::{DataValue, StatusCode, Variant, VariantScalarTypeId};
use shopfloor_schemas::{Quality, Timestamp, Value};
use shopfloor_sparkplug::DataType;

/// Why a value has no shopfloor form.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "an OPC UA {type_name} has no shopfloor value (numbers, booleans, text, bytes and arrays of them do)"
)]
pub struct Unsupported {
    /// The variant's type, as OPC UA names it.
    pub type_name: String,
}

/// The quality of a status code: its severity bits (Good, Uncertain, Bad).
pub fn quality(status: StatusCode) -> Quality {
    if status.is_bad() {
        Quality::Bad
    } else if status.is_uncertain() {
        Quality::Uncertain
    } else {
        Quality::Good
    }
}

fn type_name(v: &Variant) -> String {
    match v {
        Variant::Empty => "empty value".into(),
        Variant::Array(a) => format!("array of {:?}", a.value_type),
        other => format!("{:?}", other.scalar_type_id()).replace("Some(", "").replace(')', ""),
    }
}

/// A scalar or array variant as a [`Value`]: integers as `I64` (`U64`
/// for UInt64), floats as `F64`, text as `String` (LocalizedText's text,
/// a Guid's standard form), ByteString as `Bytes`, DateTime as `I64` ms
/// since the Unix epoch, StatusCode as `U64`. Arrays become JSON text
/// (`[1.5,2.0]`): shopfloor values have no array type.
pub fn value(v: &Variant) -> Result<Value, Unsupported> {
    Ok(match v {
        Variant::Boolean(b) => Value::Bool(*b),
        Variant::SByte(x) => Value::I64((*x).into()),
        Variant::Byte(x) => Value::I64((*x).into()),
        Variant::Int16(x) => Value::I64((*x).into()),
        Variant::UInt16(x) => Value::I64((*x).into()),
        Variant::Int32(x) => Value::I64((*x).into()),
        Variant::UInt32(x) => Value::I64((*x).into()),
        Variant::Int64(x) => Value::I64(*x),
        Variant::UInt64(x) => Value::U64(*x),
        Variant::Float(x) => Value::F64(f64::from(*x)),
        Variant::Double(x) => Value::F64(*x),
        Variant::String(s) => Value::String(clean(s.as_ref())),
        Variant::LocalizedText(t) => Value::String(clean(t.text.as_ref())),
        Variant::Guid(g) => Value::String(g.to_string()),
        Variant::ByteString(b) => Value::Bytes(b.value.clone().unwrap_or_default().into()),
        Variant::DateTime(d) => Value::I64(d.as_chrono().timestamp_millis()),
        Variant::StatusCode(s) => Value::U64(s.bits().into()),
        Variant::Array(a) => {
            let mut items = Vec::with_capacity(a.values.len());
            for x in &a.values {
                items.push(
                    match value(x).map_err(|_| Unsupported { type_name: type_name(v) })? {
                        Value::Bool(b) => b.to_string(),
                        Value::I64(i) => i.to_string(),
                        Value::U64(u) => u.to_string(),
                        Value::F64(f) if f.is_finite() => format!("{f:?}"),
                        Value::F64(_) => "null".into(),
                        Value::String(s) => json_string(&s),
                        _ => return Err(Unsupported { type_name: type_name(v) }),
                    },
                );
            }
            Value::String(format!("[{}]", items.join(",")))
        }
        other => return Err(Unsupported { type_name: type_name(other) }),
    })
}

/// Text without NUL (PostgreSQL `text` cannot hold it; schemas refuses it).
fn clean(s: &str) -> String {
    if s.contains('\0') { s.replace('\0', "\u{FFFD}") } else { s.to_owned() }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The Sparkplug type of a node whose values look like `v`; `None` when
/// they cannot be converted.
pub fn datatype(v: &Variant) -> Option<DataType> {
    Some(match v {
        Variant::Boolean(_) => DataType::Boolean,
        Variant::SByte(_) => DataType::Int8,
        Variant::Byte(_) => DataType::UInt8,
        Variant::Int16(_) => DataType::Int16,
        Variant::UInt16(_) => DataType::UInt16,
        Variant::Int32(_) => DataType::Int32,
        Variant::UInt32(_) => DataType::UInt32,
        Variant::Int64(_) | Variant::DateTime(_) => DataType::Int64,
        Variant::UInt64(_) | Variant::StatusCode(_) => DataType::UInt64,
        Variant::Float(_) => DataType::Float,
        Variant::Double(_) => DataType::Double,
        Variant::String(_) | Variant::LocalizedText(_) | Variant::Guid(_) => DataType::String,
        Variant::ByteString(_) => DataType::Bytes,
        Variant::Array(a) => {
            value(v).ok()?;
            let _ = a;
            DataType::String
        }
        _ => return None,
    })
}

/// The Sparkplug type for a node's DataType attribute (a namespace-0
/// built-in type id), when its value did not say (empty or bad at
/// connect). Arrays (`value_rank` ≥ 0) are JSON text.
pub fn datatype_of_type_id(id: u32, array: bool) -> Option<DataType> {
    if array {
        return Some(DataType::String);
    }
    let scalar = VariantScalarTypeId::try_from(id).ok()?;
    use VariantScalarTypeId as T;
    Some(match scalar {
        T::Boolean => DataType::Boolean,
        T::SByte => DataType::Int8,
        T::Byte => DataType::UInt8,
        T::Int16 => DataType::Int16,
        T::UInt16 => DataType::UInt16,
        T::Int32 => DataType::Int32,
        T::UInt32 => DataType::UInt32,
        T::Int64 | T::DateTime => DataType::Int64,
        T::UInt64 | T::StatusCode => DataType::UInt64,
        T::Float => DataType::Float,
        T::Double => DataType::Double,
        T::String | T::LocalizedText | T::Guid => DataType::String,
        T::ByteString => DataType::Bytes,
        _ => return None,
    })
}

/// A value to write to a node whose values have this Sparkplug type:
/// numbers convert when they fit (an integer into a float type, a whole
/// float into an integer type), booleans only to booleans, text only to
/// text. `None` when it does not convert.
pub fn to_variant(datatype: DataType, v: &Value) -> Option<Variant> {
    let int = || -> Option<i128> {
        match v {
            Value::I64(x) => Some((*x).into()),
            Value::U64(x) => Some((*x).into()),
            Value::F64(x) if x.is_finite() && x.fract() == 0.0 && x.abs() < 1.8e19 => {
                Some(*x as i128)
            }
            _ => None,
        }
    };
    // NaN and the infinities are no setpoint: refused for every type.
    let float = || -> Option<f64> {
        match v {
            Value::F64(x) if x.is_finite() => Some(*x),
            Value::I64(x) => Some(*x as f64),
            Value::U64(x) => Some(*x as f64),
            _ => None,
        }
    };
    Some(match datatype {
        DataType::Boolean => match v {
            Value::Bool(b) => Variant::Boolean(*b),
            _ => return None,
        },
        DataType::Int8 => Variant::SByte(i8::try_from(int()?).ok()?),
        DataType::UInt8 => Variant::Byte(u8::try_from(int()?).ok()?),
        DataType::Int16 => Variant::Int16(i16::try_from(int()?).ok()?),
        DataType::UInt16 => Variant::UInt16(u16::try_from(int()?).ok()?),
        DataType::Int32 => Variant::Int32(i32::try_from(int()?).ok()?),
        DataType::UInt32 => Variant::UInt32(u32::try_from(int()?).ok()?),
        DataType::Int64 => Variant::Int64(i64::try_from(int()?).ok()?),
        DataType::UInt64 => Variant::UInt64(u64::try_from(int()?).ok()?),
        DataType::Float => {
            let x = float()?;
            if x.abs() > f64::from(f32::MAX) {
                return None;
            }
            Variant::Float(x as f32)
        }
        DataType::Double => Variant::Double(float()?),
        DataType::String | DataType::Text => match v {
            Value::String(s) => Variant::from(s.as_str()),
            _ => return None,
        },
        DataType::Bytes => match v {
            Value::Bytes(b) => Variant::ByteString(opcua::types::ByteString::from(b.to_vec())),
            _ => return None,
        },
        _ => return None,
    })
}

/// What a data change says: the value (or why there is none), its
/// quality, and its time (the source timestamp, else the server's, else
/// `now`).
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The value; `None` when the data value carried none (a bad status
    /// usually) or one that cannot be converted (`unsupported` says why).
    pub value: Option<Value>,
    /// The quality from the status code.
    pub quality: Quality,
    /// When.
    pub timestamp: Timestamp,
    /// Set when the value's type has no shopfloor form.
    pub unsupported: Option<Unsupported>,
}

/// A data value as a [`Sample`].
pub fn sample(dv: &DataValue, now: Timestamp) -> Sample {
    let status = dv.status.unwrap_or(StatusCode::Good);
    let timestamp = dv
        .source_timestamp
        .as_ref()
        .or(dv.server_timestamp.as_ref())
        .map(|t| t.as_chrono().timestamp_millis())
        .filter(|&ms| ms > 0)
        .map_or(now, |ms| Timestamp::from_unix_ms(ms as u64));
    let (value, unsupported) = match dv.value.as_ref() {
        None | Some(Variant::Empty) => (None, None),
        Some(v) => match value(v) {
            Ok(x) => (Some(x), None),
            Err(e) => (None, Some(e)),
        },
    };
    let quality = if unsupported.is_some() { Quality::Bad } else { quality(status) };
    Sample { value, quality, timestamp, unsupported }
}

#[cfg(test)]
mod tests {
    use opcua::types::{Array, ByteString, DateTime, LocalizedText, NodeId, UAString};
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn status_severity_is_quality() {
        assert_eq!(quality(StatusCode::Good), Quality::Good);
        assert_eq!(quality(StatusCode::UncertainLastUsableValue), Quality::Uncertain);
        assert_eq!(quality(StatusCode::UncertainEngineeringUnitsExceeded), Quality::Uncertain);
        assert_eq!(quality(StatusCode::BadSensorFailure), Quality::Bad);
        assert_eq!(quality(StatusCode::BadNodeIdUnknown), Quality::Bad);
        assert_eq!(quality(StatusCode::BadCommunicationError), Quality::Bad);
    }

    #[test]
    fn scalars_convert() {
        let cases: Vec<(Variant, Value, DataType)> = vec![
            (Variant::Boolean(true), Value::Bool(true), DataType::Boolean),
            (Variant::SByte(-3), Value::I64(-3), DataType::Int8),
            (Variant::Byte(200), Value::I64(200), DataType::UInt8),
            (Variant::Int16(-300), Value::I64(-300), DataType::Int16),
            (Variant::UInt16(60_000), Value::I64(60_000), DataType::UInt16),
            (Variant::Int32(-70_000), Value::I64(-70_000), DataType::Int32),
            (Variant::UInt32(4_000_000_000), Value::I64(4_000_000_000), DataType::UInt32),
            (Variant::Int64(i64::MIN), Value::I64(i64::MIN), DataType::Int64),
            (Variant::UInt64(u64::MAX), Value::U64(u64::MAX), DataType::UInt64),
            (Variant::Float(1.5), Value::F64(1.5), DataType::Float),
            (Variant::Double(-2.25), Value::F64(-2.25), DataType::Double),
            (
                Variant::String(UAString::from("press-1")),
                Value::String("press-1".into()),
                DataType::String,
            ),
            (
                Variant::LocalizedText(Box::new(LocalizedText::new("en", "Running"))),
                Value::String("Running".into()),
                DataType::String,
            ),
            (
                Variant::ByteString(ByteString::from(vec![1_u8, 2, 3])),
                Value::Bytes(vec![1_u8, 2, 3].into()),
                DataType::Bytes,
            ),
        ];
        for (v, want, dt) in cases {
            assert_eq!(value(&v), Ok(want), "{v:?}");
            assert_eq!(datatype(&v), Some(dt), "{v:?}");
        }
        let t = DateTime::from(chrono_ms(1_795_000_000_123));
        assert_eq!(value(&Variant::DateTime(Box::new(t))), Ok(Value::I64(1_795_000_000_123)));
    }

    fn chrono_ms(ms: i64) -> opcua::types::DateTimeUtc {
        opcua::types::DateTimeUtc::from_timestamp_millis(ms).unwrap()
    }

    #[test]
    fn arrays_are_json_text_and_odd_types_are_refused_with_their_name() {
        let a = Variant::Array(Box::new(
            Array::new(
                VariantScalarTypeId::Double,
                vec![Variant::Double(1.0), Variant::Double(2.5)],
            )
            .unwrap(),
        ));
        assert_eq!(value(&a), Ok(Value::String("[1.0,2.5]".into())));
        assert_eq!(datatype(&a), Some(DataType::String));
        let s = Variant::Array(Box::new(
            Array::new(
                VariantScalarTypeId::String,
                vec![Variant::from("a\"b"), Variant::from("c")],
            )
            .unwrap(),
        ));
        assert_eq!(value(&s), Ok(Value::String(r#"["a\"b","c"]"#.into())));
        let id = Variant::NodeId(Box::new(NodeId::new(1, 1)));
        let e = value(&id).unwrap_err();
        assert!(e.to_string().contains("NodeId"), "{e}");
        assert_eq!(datatype(&id), None);
    }

    #[test]
    fn samples_take_the_source_time_and_mark_unconvertible_values_bad() {
        let now = Timestamp::from_unix_ms(5_000);
        let mut dv = DataValue::new_now(Variant::Double(3.0));
        dv.source_timestamp = Some(DateTime::from(chrono_ms(1_000)));
        let s = sample(&dv, now);
        assert_eq!(
            (s.value, s.quality, s.timestamp.unix_ms()),
            (Some(Value::F64(3.0)), Quality::Good, 1_000)
        );
        let bad = DataValue { status: Some(StatusCode::BadSensorFailure), ..DataValue::null() };
        let s = sample(&bad, now);
        assert_eq!((s.value, s.quality, s.timestamp), (None, Quality::Bad, now));
        let odd = DataValue::new_now(Variant::NodeId(Box::new(NodeId::new(1, 1))));
        let s = sample(&odd, now);
        assert_eq!((s.value.is_none(), s.quality), (true, Quality::Bad));
        assert!(s.unsupported.is_some());
    }

    #[test]
    fn writes_convert_when_the_value_fits_the_node() {
        use DataType as T;
        assert_eq!(to_variant(T::Double, &Value::F64(1.5)), Some(Variant::Double(1.5)));
        assert_eq!(to_variant(T::Double, &Value::I64(2)), Some(Variant::Double(2.0)));
        assert_eq!(to_variant(T::Float, &Value::F64(0.25)), Some(Variant::Float(0.25)));
        assert_eq!(to_variant(T::Float, &Value::F64(1e300)), None);
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(to_variant(T::Double, &Value::F64(bad)), None, "{bad}");
            assert_eq!(to_variant(T::Float, &Value::F64(bad)), None, "{bad}");
            assert_eq!(to_variant(T::Int32, &Value::F64(bad)), None, "{bad}");
        }
        assert_eq!(to_variant(T::Int16, &Value::F64(300.0)), Some(Variant::Int16(300)));
        assert_eq!(to_variant(T::Int16, &Value::F64(300.5)), None, "not whole");
        assert_eq!(to_variant(T::Int16, &Value::I64(40_000)), None, "does not fit");
        assert_eq!(to_variant(T::UInt32, &Value::I64(-1)), None);
        assert_eq!(to_variant(T::UInt64, &Value::U64(u64::MAX)), Some(Variant::UInt64(u64::MAX)));
        assert_eq!(to_variant(T::Boolean, &Value::Bool(true)), Some(Variant::Boolean(true)));
        assert_eq!(to_variant(T::Boolean, &Value::I64(1)), None);
        assert_eq!(to_variant(T::String, &Value::String("a".into())), Some(Variant::from("a")));
        assert_eq!(to_variant(T::String, &Value::F64(1.0)), None);
        assert_eq!(to_variant(T::Double, &Value::String("1.0".into())), None);
    }

    proptest! {
        /// An integer written to an integer type either fits exactly or is refused.
        #[test]
        fn integer_writes_fit_or_are_refused(x in any::<i64>()) {
            match to_variant(DataType::Int32, &Value::I64(x)) {
                Some(Variant::Int32(y)) => prop_assert_eq!(i64::from(y), x),
                None => prop_assert!(i32::try_from(x).is_err()),
                other => prop_assert!(false, "{other:?}"),
            }
        }

        /// Any double and any text convert, and text never keeps a NUL.
        #[test]
        fn any_double_or_text_converts(x in any::<f64>(), t in ".*") {
            prop_assert!(matches!(value(&Variant::Double(x)), Ok(Value::F64(y)) if y.to_bits() == x.to_bits()));
            let Ok(Value::String(s)) = value(&Variant::from(t.as_str())) else { panic!() };
            prop_assert!(!s.contains('\0'));
        }
    }
}

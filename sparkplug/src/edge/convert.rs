//! Readings to Sparkplug metrics: datatypes, report by exception, validation of the configuration.

use super::*;

pub(super) fn validate(c: &EdgeNodeConfig) -> Result<(), ConfigError> {
    use crate::topic::check_id;
    let id = |key: &str, which: &'static str, value: &str| {
        check_id(which, value).map_err(|source| ConfigError::Id { key: key.to_owned(), source })
    };
    id("group_id", "group_id", &c.group_id)?;
    id("edge_node_id", "edge_node_id", &c.edge_node_id)?;
    if let Some(h) = &c.primary_host_id {
        id("primary_host_id", "host_id", h)?;
    }
    let unique_names = |key: String, specs: &[MetricSpec]| -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for m in specs {
            if m.name.is_empty() {
                return Err(ConfigError::EmptyMetricName { key });
            }
            if !seen.insert(m.name.as_str()) {
                return Err(ConfigError::DuplicateMetric { key, name: m.name.clone() });
            }
        }
        Ok(())
    };
    unique_names("metrics".into(), &c.metrics)?;
    if let Some(m) =
        c.metrics.iter().find(|m| m.name == BDSEQ_METRIC || m.name.starts_with("Node Control/"))
    {
        return Err(ConfigError::ReservedMetric { name: m.name.clone() });
    }
    let mut devices = std::collections::HashSet::new();
    for (index, (device, specs)) in c.devices.iter().enumerate() {
        id(&format!("devices[{index}]"), "device_id", device)?;
        if !devices.insert(device.as_str()) {
            return Err(ConfigError::DuplicateDevice { index, id: device.clone() });
        }
        unique_names(format!("devices[{index}].metrics"), specs)?;
    }
    Ok(())
}

pub(super) fn data_metric(
    alias: u64,
    ts: u64,
    value: MetricValue,
    quality: Quality,
    historical: bool,
) -> Metric {
    let mut m = Metric::new("", ts, value);
    m.name = None;
    m.alias = Some(alias);
    m.is_historical = historical;
    if quality != Quality::Good {
        let mut p = PropertySet::default();
        p.set(QUALITY_PROPERTY, PropertyValue::Value(MetricValue::Int32(quality.to_sparkplug())));
        m.properties = Some(p);
    }
    m
}

/// Report by exception: a quality change always counts; a numeric change
/// counts beyond the deadband; any other change counts.
pub(super) fn changed(
    deadband: Deadband,
    sent: Option<&(MetricValue, Quality)>,
    value: &MetricValue,
    quality: Quality,
) -> bool {
    let Some((last, last_quality)) = sent else { return true };
    if *last_quality != quality {
        return true;
    }
    match (numeric(last), numeric(value), deadband) {
        (Some(a), Some(b), Deadband::Absolute(d)) => (b - a).abs() > d,
        (Some(a), Some(b), Deadband::Percent(p)) => (b - a).abs() > a.abs() * p / 100.0,
        _ => last != value,
    }
}

pub(super) fn numeric(v: &MetricValue) -> Option<f64> {
    Some(match *v {
        MetricValue::Int8(x) => x.into(),
        MetricValue::Int16(x) => x.into(),
        MetricValue::Int32(x) => x.into(),
        MetricValue::Int64(x) => x as f64,
        MetricValue::UInt8(x) => x.into(),
        MetricValue::UInt16(x) => x.into(),
        MetricValue::UInt32(x) => x.into(),
        MetricValue::UInt64(x) => x as f64,
        MetricValue::Float(x) => x.into(),
        MetricValue::Double(x) => x,
        _ => return None,
    })
}

/// A reading's value as the metric's Sparkplug type, if it fits.
pub(super) fn to_metric_value(datatype: DataType, v: &Value) -> Option<MetricValue> {
    use DataType as T;
    let int = || match *v {
        Value::I64(x) => Some(i128::from(x)),
        Value::U64(x) => Some(i128::from(x)),
        Value::Bool(b) => Some(i128::from(b)),
        _ => None,
    };
    Some(match datatype {
        T::Int8 => MetricValue::Int8(i8::try_from(int()?).ok()?),
        T::Int16 => MetricValue::Int16(i16::try_from(int()?).ok()?),
        T::Int32 => MetricValue::Int32(i32::try_from(int()?).ok()?),
        T::Int64 => MetricValue::Int64(i64::try_from(int()?).ok()?),
        T::UInt8 => MetricValue::UInt8(u8::try_from(int()?).ok()?),
        T::UInt16 => MetricValue::UInt16(u16::try_from(int()?).ok()?),
        T::UInt32 => MetricValue::UInt32(u32::try_from(int()?).ok()?),
        T::UInt64 => MetricValue::UInt64(u64::try_from(int()?).ok()?),
        T::DateTime => MetricValue::DateTime(u64::try_from(int()?).ok()?),
        T::Float => MetricValue::Float(v.as_f64()? as f32),
        T::Double => MetricValue::Double(v.as_f64()?),
        T::Boolean => match v {
            Value::Bool(b) => MetricValue::Boolean(*b),
            _ => MetricValue::Boolean(v.as_f64()? != 0.0),
        },
        T::String | T::Text | T::Uuid => {
            let Value::String(s) = v else { return None };
            match datatype {
                T::Text => MetricValue::Text(s.clone()),
                T::Uuid => MetricValue::Uuid(s.clone()),
                _ => MetricValue::String(s.clone()),
            }
        }
        T::Bytes | T::File => {
            let Value::Bytes(b) = v else { return None };
            if datatype == T::File {
                MetricValue::File(b.clone())
            } else {
                MetricValue::Bytes(b.clone())
            }
        }
        _ => return None,
    })
}

//! The typed payload from and to its Protobuf form (`proto`): values checked
//! against their data types on the way in.

use super::*;

pub(crate) fn metric_from_raw(
    raw: proto::Metric,
    types: &BirthTypes,
    at: &dyn Fn() -> String,
) -> Result<Metric, DecodeError> {
    metric_in(raw, types, None, at)
}

/// [`metric_from_raw`] for a metric inside a template whose path (from
/// the top-level metric: `Motor1`, `Motor1/Bearing`) is `parent`.
fn metric_in(
    raw: proto::Metric,
    types: &BirthTypes,
    parent: Option<&str>,
    at: &dyn Fn() -> String,
) -> Result<Metric, DecodeError> {
    let mut name: Option<Arc<str>> = raw.name.map(Arc::from);
    let id = |name: &Option<Arc<str>>| match (name, raw.alias) {
        (Some(n), _) => format!("{n:?}"),
        (None, Some(a)) => format!("alias {a}"),
        (None, None) => at(),
    };
    let mut datatype_from_birth = None;
    if name.is_none() {
        match raw.alias {
            Some(alias) => match types.alias_entry(alias) {
                Some((n, t)) => {
                    name = Some(n.clone());
                    datatype_from_birth = Some(*t);
                }
                None if raw.datatype.is_none() => {
                    return Err(DecodeError::UnknownAlias { metric: id(&name), alias });
                }
                None => {}
            },
            None => return Err(DecodeError::Anonymous { metric: at() }),
        }
    }
    let datatype = match raw.datatype {
        Some(n) => DataType::from_u32(n)
            .ok_or_else(|| DecodeError::UnknownDatatype { metric: id(&name), datatype: n })?,
        None => datatype_from_birth
            .or_else(|| name.as_deref().and_then(|n| types.datatype(n)))
            .ok_or_else(|| DecodeError::NoDatatype { metric: id(&name) })?,
    };
    let value = if raw.is_null == Some(true) {
        None
    } else {
        match raw.value {
            None => None,
            Some(v) => Some(
                value_from_raw(datatype, v, types, (parent, name.as_deref()), &|| id(&name))
                    .map_err(|e| e.in_metric(&id(&name)))?,
            ),
        }
    };
    let properties = raw.properties.map(|p| property_set_from_raw(p, &|| id(&name))).transpose()?;
    Ok(Metric {
        name,
        alias: raw.alias,
        timestamp: raw.timestamp,
        datatype,
        is_historical: raw.is_historical.unwrap_or(false),
        is_transient: raw.is_transient.unwrap_or(false),
        value,
        properties,
        metadata: raw.metadata,
    })
}

/// Errors from nested structures, before the metric is known.
enum Nested {
    Value(ValueError),
    Decode(DecodeError),
}

impl Nested {
    fn in_metric(self, metric: &str) -> DecodeError {
        match self {
            Self::Value(source) => DecodeError::Value { metric: metric.to_owned(), source },
            Self::Decode(e) => e,
        }
    }
}

impl From<ValueError> for Nested {
    fn from(e: ValueError) -> Self {
        Self::Value(e)
    }
}

fn value_from_raw(
    datatype: DataType,
    raw: proto::MetricValue,
    types: &BirthTypes,
    (parent, name): (Option<&str>, Option<&str>),
    at: &dyn Fn() -> String,
) -> Result<MetricValue, Nested> {
    use proto::MetricValue as W;
    let scalar = match raw.into_scalar() {
        Ok(scalar) => scalar,
        Err(W::Bytes(b)) => {
            return Ok(match datatype {
                DataType::Bytes => MetricValue::Bytes(b),
                DataType::File => MetricValue::File(b),
                t if t.is_array() => array_from_bytes(t, &b)?,
                _ => return Err(ValueError::Mismatch { datatype, found: "bytes_value" }.into()),
            });
        }
        Err(W::DataSet(d)) if datatype == DataType::DataSet => {
            return Ok(MetricValue::DataSet(Box::new(dataset_from_raw(*d)?)));
        }
        Err(W::Template(t)) if datatype == DataType::Template => {
            // Its path, for members whose datatypes DATA leaves out.
            let path = match (parent, name) {
                (Some(p), Some(n)) => Some(format!("{p}/{n}")),
                (None, n) => n.map(str::to_owned),
                (Some(_), None) => None,
            };
            return template_from_raw(*t, types, path.as_deref(), at)
                .map(|t| MetricValue::Template(Box::new(t)))
                .map_err(Nested::Decode);
        }
        Err(W::DataSet(_)) => {
            return Err(ValueError::Mismatch { datatype, found: "dataset_value" }.into());
        }
        Err(W::Template(_)) => {
            return Err(ValueError::Mismatch { datatype, found: "template_value" }.into());
        }
        Err(_) => return Err(ValueError::Mismatch { datatype, found: "extension_value" }.into()),
    };
    Ok(basic_from_wire(datatype, scalar)?)
}

fn bad_dataset(reason: String) -> ValueError {
    ValueError::BadArray { datatype: DataType::DataSet, reason }
}

fn dataset_from_raw(raw: proto::DataSet) -> Result<DataSet, ValueError> {
    if raw.columns.len() != raw.types.len() {
        return Err(bad_dataset(format!(
            "{} column names but {} types (they must be the same length)",
            raw.columns.len(),
            raw.types.len()
        )));
    }
    if let Some(n) = raw.num_of_columns
        && n != raw.columns.len() as u64
    {
        return Err(bad_dataset(format!(
            "num_of_columns is {n} but there are {} columns",
            raw.columns.len()
        )));
    }
    let types = raw
        .types
        .iter()
        .map(|&t| match DataType::from_u32(t) {
            Some(t) if t.is_basic() => Ok(t),
            _ => Err(bad_dataset(format!("column type {t} is not a basic type"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rows = raw
        .rows
        .into_iter()
        .enumerate()
        .map(|(r, row)| {
            if row.elements.len() != types.len() {
                return Err(bad_dataset(format!(
                    "row {r} has {} elements for {} columns",
                    row.elements.len(),
                    types.len()
                )));
            }
            row.elements
                .into_iter()
                .zip(&types)
                .map(|(e, &t)| e.value.map(|v| basic_from_wire(t, dataset_scalar(v)?)).transpose())
                .collect()
        })
        .collect::<Result<_, _>>()?;
    Ok(DataSet { columns: raw.columns.into_iter().zip(types).collect(), rows })
}

fn dataset_scalar(v: proto::DataSetValueValue) -> Result<Scalar, ValueError> {
    v.into_scalar().map_err(|_| bad_dataset("an element holds an extension value".to_owned()))
}

fn template_from_raw(
    raw: proto::Template,
    types: &BirthTypes,
    name: Option<&str>,
    at: &dyn Fn() -> String,
) -> Result<Template, DecodeError> {
    let template_ref = raw.template_ref.as_deref();
    let metrics = raw
        .metrics
        .into_iter()
        .enumerate()
        .map(|(i, mut m)| {
            // DATA may leave a member's datatype out: the birth's instance
            // (`Instance/Member`) or its definition (`Definition/Member`)
            // has it.
            if m.datatype.is_none()
                && let Some(member) = m.name.as_deref()
            {
                m.datatype = [name, template_ref]
                    .into_iter()
                    .flatten()
                    .find_map(|prefix| types.datatype(&format!("{prefix}/{member}")))
                    .map(|t| t as u32);
            }
            metric_in(m, types, name, &|| format!("{} member {i}", at()))
        })
        .collect::<Result<_, _>>()?;
    let parameters = raw
        .parameters
        .into_iter()
        .map(|p| {
            let name = p.name.unwrap_or_default();
            let value_error = |source| DecodeError::Value {
                metric: format!("{} parameter {name:?}", at()),
                source,
            };
            let datatype = match p.r#type.map(|t| (t, DataType::from_u32(t))) {
                Some((_, Some(t))) if t.is_basic() => t,
                Some((t, _)) => {
                    return Err(DecodeError::UnknownDatatype {
                        metric: format!("{} parameter {name:?}", at()),
                        datatype: t,
                    });
                }
                None => {
                    return Err(DecodeError::NoDatatype {
                        metric: format!("{} parameter {name:?}", at()),
                    });
                }
            };
            let value = p
                .value
                .map(|v| {
                    let s = v
                        .into_scalar()
                        .map_err(|_| ValueError::Mismatch { datatype, found: "extension_value" })?;
                    basic_from_wire(datatype, s)
                })
                .transpose()
                .map_err(value_error)?;
            Ok(Parameter { name, datatype, value })
        })
        .collect::<Result<_, _>>()?;
    Ok(Template {
        version: raw.version,
        template_ref: raw.template_ref,
        is_definition: raw.is_definition.unwrap_or(false),
        metrics,
        parameters,
    })
}

fn property_set_from_raw(
    raw: proto::PropertySet,
    at: &dyn Fn() -> String,
) -> Result<PropertySet, DecodeError> {
    if raw.keys.len() != raw.values.len() {
        return Err(DecodeError::Property {
            metric: at(),
            key: String::new(),
            reason: format!(
                "{} keys but {} values (they must be the same length)",
                raw.keys.len(),
                raw.values.len()
            ),
        });
    }
    let entries = raw
        .keys
        .into_iter()
        .zip(raw.values)
        .map(|(key, v)| {
            let err =
                |reason: String| DecodeError::Property { metric: at(), key: key.clone(), reason };
            let datatype = match v.r#type {
                Some(t) => DataType::from_u32(t).ok_or_else(|| err(format!("unknown type {t}")))?,
                None => return Err(err("no type".to_owned())),
            };
            let value = if v.is_null == Some(true) {
                PropertyValue::Null(datatype)
            } else {
                use proto::PropertyValueValue as W;
                let scalar = match v.value {
                    None => return Ok((key, PropertyValue::Null(datatype))),
                    Some(W::PropertySet(s)) if datatype == DataType::PropertySet => {
                        return Ok((
                            key.clone(),
                            PropertyValue::PropertySet(property_set_from_raw(s, at)?),
                        ));
                    }
                    Some(W::PropertySets(l)) if datatype == DataType::PropertySetList => {
                        let sets = l
                            .propertyset
                            .into_iter()
                            .map(|s| property_set_from_raw(s, at))
                            .collect::<Result<_, _>>()?;
                        return Ok((key, PropertyValue::PropertySetList(sets)));
                    }
                    Some(other) => other.into_scalar().map_err(|_| {
                        err(format!("type {datatype} but the value is a property set or extension"))
                    })?,
                };
                PropertyValue::Value(
                    basic_from_wire(datatype, scalar).map_err(|e| err(e.to_string()))?,
                )
            };
            Ok((key, value))
        })
        .collect::<Result<_, _>>()?;
    Ok(PropertySet(entries))
}

pub(super) fn metric_to_raw(m: &Metric, options: EncodeOptions) -> proto::Metric {
    proto::Metric {
        name: m.name.as_deref().map(str::to_owned),
        alias: m.alias,
        timestamp: m.timestamp,
        datatype: options.datatypes.then_some(m.datatype.as_u32()),
        is_historical: m.is_historical.then_some(true),
        is_transient: m.is_transient.then_some(true),
        is_null: m.value.is_none().then_some(true),
        metadata: m.metadata.clone(),
        properties: m.properties.as_ref().map(|p| property_set_to_raw(p, options.signed)),
        value: m.value.as_ref().map(|v| value_to_raw(v, options)),
    }
}

fn value_to_raw(v: &MetricValue, options: EncodeOptions) -> proto::MetricValue {
    use proto::MetricValue as W;
    if let Some(s) = basic_to_wire(v, options.signed) {
        return s.into();
    }
    if let Some(b) = array_to_bytes(v) {
        return W::Bytes(b);
    }
    match v {
        MetricValue::Bytes(b) | MetricValue::File(b) => W::Bytes(b.clone()),
        MetricValue::DataSet(d) => W::DataSet(Box::new(proto::DataSet {
            num_of_columns: Some(d.columns.len() as u64),
            columns: d.columns.iter().map(|(n, _)| n.clone()).collect(),
            types: d.columns.iter().map(|(_, t)| t.as_u32()).collect(),
            rows: d
                .rows
                .iter()
                .map(|row| proto::Row {
                    elements: row
                        .iter()
                        .map(|e| proto::DataSetValue {
                            value: e
                                .as_ref()
                                .and_then(|v| basic_to_wire(v, options.signed))
                                .map(Into::into),
                        })
                        .collect(),
                })
                .collect(),
        })),
        MetricValue::Template(t) => W::Template(Box::new(proto::Template {
            version: t.version.clone(),
            metrics: t.metrics.iter().map(|m| metric_to_raw(m, options)).collect(),
            parameters: t
                .parameters
                .iter()
                .map(|p| proto::Parameter {
                    name: Some(p.name.clone()),
                    r#type: Some(p.datatype.as_u32()),
                    value: p
                        .value
                        .as_ref()
                        .and_then(|v| basic_to_wire(v, options.signed))
                        .map(Into::into),
                })
                .collect(),
            template_ref: t.template_ref.clone(),
            is_definition: Some(t.is_definition),
        })),
        // Every basic and array type returned above.
        _ => W::Extension(proto::Extension {}),
    }
}

fn property_set_to_raw(p: &PropertySet, signed: SignedEncoding) -> proto::PropertySet {
    use proto::PropertyValueValue as W;
    let (keys, values) =
        p.0.iter()
            .map(|(k, v)| {
                let raw = match v {
                    PropertyValue::Null(t) => proto::PropertyValue {
                        r#type: Some(t.as_u32()),
                        is_null: Some(true),
                        value: None,
                    },
                    PropertyValue::Value(v) => proto::PropertyValue {
                        r#type: Some(v.datatype().as_u32()),
                        is_null: None,
                        value: basic_to_wire(v, signed).map(Into::into),
                    },
                    PropertyValue::PropertySet(s) => proto::PropertyValue {
                        r#type: Some(DataType::PropertySet.as_u32()),
                        is_null: None,
                        value: Some(W::PropertySet(property_set_to_raw(s, signed))),
                    },
                    PropertyValue::PropertySetList(l) => proto::PropertyValue {
                        r#type: Some(DataType::PropertySetList.as_u32()),
                        is_null: None,
                        value: Some(W::PropertySets(proto::PropertySetList {
                            propertyset: l.iter().map(|s| property_set_to_raw(s, signed)).collect(),
                        })),
                    },
                };
                (k.clone(), raw)
            })
            .unzip();
    proto::PropertySet { keys, values }
}

//! Writes to allowed nodes, with their type.

use super::*;

/// Checks a write and sends it on its own task (the loop must go on).
pub(super) fn start_write(
    session: &Arc<Session>,
    items: &[Item],
    metric: &str,
    value: Value,
    reply: tokio::sync::oneshot::Sender<Result<(), WriteError>>,
    online: bool,
) {
    let Some(item) = items.iter().find(|i| i.config.metric == metric) else {
        let _ = reply.send(Err(WriteError::Unknown(metric.to_owned())));
        return;
    };
    if !item.config.writable {
        let _ = reply.send(Err(WriteError::NotAllowed(metric.to_owned())));
        return;
    }
    let (Some(node_id), Some(info), true) = (item.node_id.clone(), item.info.as_ref(), online)
    else {
        let _ = reply.send(Err(WriteError::NotConnected(metric.to_owned())));
        return;
    };
    let Some(variant) = convert::to_variant(info.datatype, &value) else {
        let _ = reply.send(Err(WriteError::Convert {
            metric: metric.to_owned(),
            datatype: info.datatype,
            value: format!("{value:?}"),
        }));
        return;
    };
    if let (Some((low, high)), Some(x)) = (info.range, value.as_f64())
        && !matches!(value, Value::Bool(_))
        && low <= high
        && !(low..=high).contains(&x)
    {
        let _ = reply.send(Err(WriteError::OutOfRange {
            metric: metric.to_owned(),
            value: x,
            low,
            high,
        }));
        return;
    }
    let session = Arc::clone(session);
    tokio::spawn(async move {
        let write = WriteValue {
            node_id,
            attribute_id: AttributeId::Value as u32,
            index_range: Default::default(),
            value: DataValue::value_only(variant),
        };
        let result = match session.write(&[write]).await {
            Ok(r) => match r.first() {
                Some(s) if s.is_good() => Ok(()),
                Some(s) => Err(WriteError::Refused(*s)),
                None => Err(WriteError::Failed("no result".into())),
            },
            Err(e) => Err(WriteError::Failed(e.to_string())),
        };
        let _ = reply.send(result);
    });
}

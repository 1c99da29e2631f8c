//! Writes to allowed nodes, with their type.

use super::*;

/// Checks a write and sends it on its own task (the loop must go on).
pub(super) fn start_write(
    session: &Arc<Session>,
    items: &Items,
    metric: &str,
    value: Value,
    reply: tokio::sync::oneshot::Sender<Result<(), WriteError>>,
) {
    let (node_id, variant) = match items.write_target(metric, &value) {
        Ok(target) => target,
        Err(e) => {
            let _ = reply.send(Err(e));
            return;
        }
    };
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

//! Protobuf payloads described by a `.proto` file, compiled when the
//! mapping is (protox, pure Rust) and decoded dynamically (prost-reflect).

use std::path::{Path, PathBuf};

use prost_reflect::{DynamicMessage, MapKey, MessageDescriptor, ReflectMessage, Value};

use crate::node::Node;

/// Compiles `file` (imports found beside it and in `includes`) and finds
/// the message named `message` (its full name, package included).
pub(crate) fn descriptor(
    file: &Path,
    includes: &[PathBuf],
    message: &str,
) -> Result<MessageDescriptor, String> {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or_else(|| Path::new("."));
    let mut dirs = vec![dir.to_path_buf()];
    dirs.extend(includes.iter().cloned());
    let pool = protox::Compiler::new(&dirs)
        .and_then(|mut c| {
            c.include_imports(true).open_file(file)?;
            Ok(c.descriptor_pool())
        })
        .map_err(|e| format!("proto_file {}: {e}", file.display()))?;
    pool.get_message_by_name(message).ok_or_else(|| {
        let names: Vec<String> = pool
            .all_messages()
            .filter(|m| !m.full_name().starts_with("google.protobuf."))
            .map(|m| m.full_name().to_owned())
            .take(10)
            .collect();
        format!(
            "message = {message:?} is not in {} (its messages: {}); give the full name, package included",
            file.display(),
            if names.is_empty() { "none".into() } else { names.join(", ") }
        )
    })
}

/// Decodes a payload into a tree: fields by their names in the `.proto`,
/// proto3 scalars that were not sent as their defaults (as the encoding
/// means them), unset message and `optional` fields absent, enums by
/// name, `google.protobuf.Timestamp` as RFC 3339 text.
pub(crate) fn decode(desc: &MessageDescriptor, payload: &[u8]) -> Result<Node<'static>, String> {
    let msg = DynamicMessage::decode(desc.clone(), payload)
        .map_err(|e| format!("not a {} message: {e}", desc.full_name()))?;
    Ok(message(&msg))
}

fn message(msg: &DynamicMessage) -> Node<'static> {
    let desc = msg.descriptor();
    if desc.full_name() == "google.protobuf.Timestamp" {
        let field = |n| desc.get_field_by_name(n).map(|f| msg.get_field(&f).into_owned());
        if let (Some(Value::I64(s)), Some(Value::I32(ns))) = (field("seconds"), field("nanos"))
            && let Ok(t) = jiff::Timestamp::new(s, ns)
        {
            return Node::str(t.to_string());
        }
    }
    let mut members = Vec::new();
    for f in desc.fields() {
        if f.supports_presence() && !msg.has_field(&f) {
            continue;
        }
        let v = msg.get_field(&f);
        let node = match (&*v, f.kind().as_enum()) {
            (Value::EnumNumber(n), Some(e)) => match e.get_value(*n) {
                Some(ev) => Node::str(ev.name()),
                None => Node::I64(i64::from(*n)),
            },
            (Value::List(items), Some(e)) => Node::Array(
                items
                    .iter()
                    .map(|i| match i {
                        Value::EnumNumber(n) => e
                            .get_value(*n)
                            .map_or_else(|| Node::I64(i64::from(*n)), |ev| Node::str(ev.name())),
                        other => value(other),
                    })
                    .collect(),
            ),
            (v, _) => value(v),
        };
        members.push((f.name().to_owned().into(), node));
    }
    Node::Object(members)
}

fn value(v: &Value) -> Node<'static> {
    match v {
        Value::Bool(b) => Node::Bool(*b),
        Value::I32(x) => Node::I64(i64::from(*x)),
        Value::I64(x) => Node::I64(*x),
        Value::U32(x) => Node::I64(i64::from(*x)),
        Value::U64(x) => i64::try_from(*x).map_or(Node::U64(*x), Node::I64),
        Value::F32(x) => Node::F64(f64::from(*x)),
        Value::F64(x) => Node::F64(*x),
        Value::String(s) => Node::str(s.clone()),
        Value::Bytes(b) => Node::Bytes(b.to_vec().into()),
        Value::EnumNumber(n) => Node::I64(i64::from(*n)),
        Value::Message(m) => message(m),
        Value::List(items) => Node::Array(items.iter().map(value).collect()),
        Value::Map(m) => {
            let mut members: Vec<_> = m
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        MapKey::Bool(b) => b.to_string(),
                        MapKey::I32(x) => x.to_string(),
                        MapKey::I64(x) => x.to_string(),
                        MapKey::U32(x) => x.to_string(),
                        MapKey::U64(x) => x.to_string(),
                        MapKey::String(s) => s.clone(),
                    };
                    (key.into(), value(v))
                })
                .collect();
            // A map's order on the wire carries no meaning: sorted, so that
            // `fields` mode reads it the same way every time.
            members.sort_by(|a: &(std::borrow::Cow<'static, str>, _), b| a.0.cmp(&b.0));
            Node::Object(members)
        }
    }
}

//! Protobuf payloads described by a `.proto` file, compiled when the
//! mapping is (protox, pure Rust) and decoded dynamically (prost-reflect).

use std::path::{Path, PathBuf};

use bumpalo::Bump;
use bumpalo::collections::Vec as BumpVec;
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
pub(crate) fn decode<'b>(
    desc: &MessageDescriptor,
    payload: &[u8],
    bump: &'b Bump,
) -> Result<Node<'b>, String> {
    let msg = DynamicMessage::decode(desc.clone(), payload)
        .map_err(|e| format!("not a {} message: {e}", desc.full_name()))?;
    Ok(message(&msg, bump))
}

fn message<'b>(msg: &DynamicMessage, bump: &'b Bump) -> Node<'b> {
    let desc = msg.descriptor();
    if desc.full_name() == "google.protobuf.Timestamp" {
        let field = |n| desc.get_field_by_name(n).map(|f| msg.get_field(&f).into_owned());
        if let (Some(Value::I64(s)), Some(Value::I32(ns))) = (field("seconds"), field("nanos"))
            && let Ok(t) = jiff::Timestamp::new(s, ns)
        {
            return Node::Str(bump.alloc_str(&t.to_string()));
        }
    }
    let mut members = BumpVec::new_in(bump);
    for f in desc.fields() {
        if f.supports_presence() && !msg.has_field(&f) {
            continue;
        }
        let v = msg.get_field(&f);
        let enum_name = |n: i32| match f.kind().as_enum().and_then(|e| e.get_value(n)) {
            Some(ev) => Node::Str(bump.alloc_str(ev.name())),
            None => Node::I64(i64::from(n)),
        };
        let node = match &*v {
            Value::EnumNumber(n) => enum_name(*n),
            Value::List(items) if f.kind().as_enum().is_some() => {
                let mut out = BumpVec::with_capacity_in(items.len(), bump);
                for i in items {
                    out.push(match i {
                        Value::EnumNumber(n) => enum_name(*n),
                        other => value(other, bump),
                    });
                }
                Node::Array(out.into_bump_slice())
            }
            v => value(v, bump),
        };
        members.push((&*bump.alloc_str(f.name()), node));
    }
    Node::Object(members.into_bump_slice())
}

fn value<'b>(v: &Value, bump: &'b Bump) -> Node<'b> {
    match v {
        Value::Bool(b) => Node::Bool(*b),
        Value::I32(x) => Node::I64(i64::from(*x)),
        Value::I64(x) => Node::I64(*x),
        Value::U32(x) => Node::I64(i64::from(*x)),
        Value::U64(x) => i64::try_from(*x).map_or(Node::U64(*x), Node::I64),
        Value::F32(x) => Node::F64(f64::from(*x)),
        Value::F64(x) => Node::F64(*x),
        Value::String(s) => Node::Str(bump.alloc_str(s)),
        Value::Bytes(b) => Node::Bytes(bump.alloc_slice_copy(b)),
        Value::EnumNumber(n) => Node::I64(i64::from(*n)),
        Value::Message(m) => message(m, bump),
        Value::List(items) => {
            Node::Array(bump.alloc_slice_fill_iter(items.iter().map(|i| value(i, bump))))
        }
        Value::Map(m) => {
            let mut members: Vec<(&str, Node<'b>)> = m
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
                    (&*bump.alloc_str(&key), value(v, bump))
                })
                .collect();
            // A map's order on the wire carries no meaning: sorted, so that
            // `fields` mode reads it the same way every time.
            members.sort_by(|a, b| a.0.cmp(b.0));
            Node::Object(bump.alloc_slice_copy(&members))
        }
    }
}

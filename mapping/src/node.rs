//! One tree for every payload format: JSON and CBOR deserialize into it
//! (strings borrowed from the payload where the format allows), CSV lines
//! and bare values are parsed into it, Protobuf messages converted into it.
//! Paths are then looked up the same way whatever the format.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A decoded payload, or a part of one.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node<'a> {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(Cow<'a, str>),
    Bytes(Cow<'a, [u8]>),
    Array(Vec<Self>),
    /// Members in payload order; a key that appears twice is found first
    /// where it appears first.
    Object(Vec<(Cow<'a, str>, Self)>),
}

impl<'a> Node<'a> {
    /// The member `key` of an object, or the element at `index` of an array.
    pub(crate) fn child(&self, key: &str, index: Option<usize>) -> Option<&Self> {
        match self {
            Self::Object(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            Self::Array(a) => index.and_then(|i| a.get(i)),
            _ => None,
        }
    }

    /// The node as text, when it is a scalar: strings as they are, numbers
    /// in decimal, booleans as `true`/`false`.
    pub(crate) fn as_text(&self) -> Option<Cow<'_, str>> {
        Some(match self {
            Self::Str(s) => Cow::Borrowed(s.as_ref()),
            Self::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Self::I64(v) => Cow::Owned(v.to_string()),
            Self::U64(v) => Cow::Owned(v.to_string()),
            Self::F64(v) => Cow::Owned(v.to_string()),
            Self::Null | Self::Bytes(_) | Self::Array(_) | Self::Object(_) => return None,
        })
    }

    /// Owns every string (for trees built from formats that cannot lend).
    #[cfg(feature = "protobuf")]
    pub(crate) fn str(s: impl Into<String>) -> Node<'static> {
        Node::Str(Cow::Owned(s.into()))
    }
}

/// What was found, for an error message: the value itself when short,
/// else its kind.
pub(crate) struct Found<'n, 'a>(pub(crate) Option<&'n Node<'a>>);

impl fmt::Display for Found<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(node) = self.0 else { return f.write_str("nothing (the path is absent)") };
        match node {
            Node::Null => f.write_str("null"),
            Node::Bool(b) => write!(f, "{b}"),
            Node::I64(v) => write!(f, "{v}"),
            Node::U64(v) => write!(f, "{v}"),
            Node::F64(v) => write!(f, "{v}"),
            Node::Str(s) => {
                const MAX: usize = 40;
                if s.chars().count() <= MAX {
                    write!(f, "{s:?}")
                } else {
                    let head: String = s.chars().take(MAX).collect();
                    write!(f, "{head:?}… ({} bytes)", s.len())
                }
            }
            Node::Bytes(b) => write!(f, "{} bytes", b.len()),
            Node::Array(a) => write!(f, "an array of {}", a.len()),
            Node::Object(m) => {
                write!(f, "an object with ")?;
                match m.len() {
                    0 => f.write_str("no members"),
                    n => {
                        let keys: Vec<&str> = m.iter().take(4).map(|(k, _)| k.as_ref()).collect();
                        let s = if n == 1 { "" } else { "s" };
                        write!(
                            f,
                            "{n} member{s} ({}{})",
                            keys.join(", "),
                            if n > 4 { ", …" } else { "" }
                        )
                    }
                }
            }
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Node<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor(std::marker::PhantomData))
    }
}

struct NodeVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for NodeVisitor<'a> {
    type Value = Node<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node<'a>, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node<'a>, E> {
        Ok(Node::I64(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node<'a>, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => Node::I64(i),
            Err(_) => Node::U64(v),
        })
    }
    fn visit_i128<E>(self, v: i128) -> Result<Node<'a>, E> {
        Ok(match (i64::try_from(v), u64::try_from(v)) {
            (Ok(i), _) => Node::I64(i),
            (_, Ok(u)) => Node::U64(u),
            _ => Node::F64(v as f64),
        })
    }
    fn visit_u128<E>(self, v: u128) -> Result<Node<'a>, E> {
        Ok(match u64::try_from(v) {
            Ok(u) => Node::U64(u),
            Err(_) => Node::F64(v as f64),
        })
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node<'a>, E> {
        Ok(Node::F64(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Node<'a>, E> {
        Ok(Node::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node<'a>, E> {
        Ok(Node::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Node<'a>, E> {
        Ok(Node::Str(Cow::Owned(v)))
    }
    fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> Result<Node<'a>, E> {
        Ok(Node::Bytes(Cow::Borrowed(v)))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Node<'a>, E> {
        Ok(Node::Bytes(Cow::Owned(v.to_vec())))
    }
    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Node<'a>, E> {
        Ok(Node::Bytes(Cow::Owned(v)))
    }
    fn visit_none<E>(self) -> Result<Node<'a>, E> {
        Ok(Node::Null)
    }
    fn visit_unit<E>(self) -> Result<Node<'a>, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node<'a>, D::Error> {
        Node::deserialize(d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Node<'a>, D::Error> {
        Node::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'a>, A::Error> {
        // The hint comes from the payload: never trust it for a capacity.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(n) = seq.next_element()? {
            out.push(n);
        }
        Ok(Node::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'a>, A::Error> {
        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(Key(k)) = map.next_key()? {
            out.push((k, map.next_value()?));
        }
        Ok(Node::Object(out))
    }
}

/// An object's key: text, or (CBOR) an integer or boolean, kept as its
/// decimal text so that a path names it the same way.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a text, integer or boolean key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_i128<E>(self, v: i128) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_u128<E>(self, v: u128) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Borrowed(if v { "true" } else { "false" })))
            }
            fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Key<'a>, E> {
                Err(E::custom(
                    "a map key is a byte string; only text, integer or boolean keys can be named by a path",
                ))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A CBOR payload. ciborium cannot lend strings, so the tree is owned:
/// its own value type first, then moved over. Tags are looked through
/// (tag 1, an epoch time, is its number).
pub(crate) fn cbor(payload: &[u8]) -> Result<Node<'static>, String> {
    let v: ciborium::Value =
        ciborium::from_reader(payload).map_err(|e| format!("not CBOR: {e}"))?;
    from_cbor(v)
}

fn from_cbor(v: ciborium::Value) -> Result<Node<'static>, String> {
    use ciborium::Value as C;
    Ok(match v {
        C::Integer(i) => {
            let i = i128::from(i);
            match (i64::try_from(i), u64::try_from(i)) {
                (Ok(x), _) => Node::I64(x),
                (_, Ok(x)) => Node::U64(x),
                _ => Node::F64(i as f64),
            }
        }
        C::Bytes(b) => Node::Bytes(Cow::Owned(b)),
        C::Float(f) => Node::F64(f),
        C::Text(s) => Node::Str(Cow::Owned(s)),
        C::Bool(b) => Node::Bool(b),
        C::Null => Node::Null,
        C::Tag(_, inner) => from_cbor(*inner)?,
        C::Array(a) => Node::Array(a.into_iter().map(from_cbor).collect::<Result<_, _>>()?),
        C::Map(m) => Node::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        C::Text(s) => s,
                        C::Integer(i) => i128::from(i).to_string(),
                        C::Bool(b) => b.to_string(),
                        _ => return Err("a map key that is not text, an integer or a boolean: a path cannot name it".to_owned()),
                    };
                    Ok((Cow::Owned(key), from_cbor(v)?))
                })
                .collect::<Result<_, _>>()?,
        ),
        _ => return Err("a CBOR item this version cannot read".into()),
    })
}

/// A bare value: a number, `true`/`false` (any case), or else the text
/// itself, surrounding white space trimmed.
pub(crate) fn scalar(text: &str) -> Node<'_> {
    let t = text.trim();
    if let Ok(i) = t.parse::<i64>() {
        return Node::I64(i);
    }
    if let Ok(u) = t.parse::<u64>() {
        return Node::U64(u);
    }
    // Only what looks like a decimal number: `inf`, `nan` and `infinity`
    // stay text.
    if t.bytes().any(|b| b.is_ascii_digit())
        && t.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
        && let Ok(f) = t.parse::<f64>()
    {
        return Node::F64(f);
    }
    if t.eq_ignore_ascii_case("true") {
        return Node::Bool(true);
    }
    if t.eq_ignore_ascii_case("false") {
        return Node::Bool(false);
    }
    Node::Str(Cow::Borrowed(t))
}

/// CSV lines: an array with a record per non-empty line; a record is an
/// array of its fields, or an object when the columns are named. Each field
/// is read as [`scalar`] reads a bare value.
pub(crate) fn csv<'a>(
    payload: &'a str,
    delimiter: u8,
    columns: Option<&[String]>,
) -> Result<Node<'a>, String> {
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(delimiter)
        .flexible(true)
        .from_reader(payload.as_bytes());
    let mut rows = Vec::new();
    let mut record = ::csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(format!("not CSV: {e}")),
        }
        if record.len() == 1 && record[0].trim().is_empty() {
            continue;
        }
        let fields = record.iter().map(|f| owned(scalar(f)));
        rows.push(match columns {
            None => Node::Array(fields.collect()),
            Some(names) => {
                Node::Object(names.iter().map(|n| Cow::Owned(n.clone())).zip(fields).collect())
            }
        });
    }
    Ok(Node::Array(rows))
}

fn owned(n: Node<'_>) -> Node<'static> {
    match n {
        Node::Str(s) => Node::Str(Cow::Owned(s.into_owned())),
        Node::Null => Node::Null,
        Node::Bool(b) => Node::Bool(b),
        Node::I64(v) => Node::I64(v),
        Node::U64(v) => Node::U64(v),
        Node::F64(v) => Node::F64(v),
        Node::Bytes(b) => Node::Bytes(Cow::Owned(b.into_owned())),
        Node::Array(a) => Node::Array(a.into_iter().map(owned).collect()),
        Node::Object(m) => Node::Object(
            m.into_iter().map(|(k, v)| (Cow::Owned(k.into_owned()), owned(v))).collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_borrowed_and_cbor_integer_keys_become_text() {
        let n: Node<'_> = serde_json::from_slice(br#"{"a":"x","b":[1,-2,1.5,true,null]}"#).unwrap();
        let Node::Object(m) = &n else { panic!("object") };
        assert!(matches!(m[0].1, Node::Str(Cow::Borrowed("x"))));
        assert_eq!(n.child("b", None).unwrap().child("3", Some(3)), Some(&Node::Bool(true)));
        // {1: 21.5, "t": 1(1700000000)}: an integer key, a tagged epoch time.
        let bytes = [0xa2, 0x01, 0xf9, 0x4d, 0x60, 0x61, b't', 0xc1, 0x1a, 0x65, 0x53, 0xf1, 0x00];
        let n = cbor_tree(&bytes);
        assert_eq!(n.child("1", Some(1)), Some(&Node::F64(21.5)));
        assert_eq!(n.child("t", None), Some(&Node::I64(1_700_000_000)));
        assert!(cbor(&[0xa1, 0x80, 0x01]).unwrap_err().contains("map key"), "{{[]: 1}}");
        assert!(cbor(&[0xff]).unwrap_err().starts_with("not CBOR"));
    }

    fn cbor_tree(b: &[u8]) -> Node<'static> {
        cbor(b).unwrap()
    }

    #[test]
    fn bare_values_are_numbers_booleans_or_text() {
        assert_eq!(scalar(" 21 "), Node::I64(21));
        assert_eq!(scalar("18446744073709551615"), Node::U64(u64::MAX));
        assert_eq!(scalar("-1.5e3"), Node::F64(-1500.0));
        assert_eq!(scalar("TRUE"), Node::Bool(true));
        assert_eq!(scalar("nan"), Node::Str("nan".into()));
        assert_eq!(scalar("open"), Node::Str("open".into()));
    }

    #[test]
    fn csv_lines_are_records() {
        let n = csv("1,\"a,b\",2.5\n\n3,x,4\n", b',', None).unwrap();
        let Node::Array(rows) = &n else { panic!("rows") };
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].child("1", Some(1)), Some(&Node::Str("a,b".into())));
        let named = ["t".to_owned(), "v".to_owned()];
        let n = csv("5;6", b';', Some(&named)).unwrap();
        assert_eq!(n.child("0", Some(0)).unwrap().child("v", None), Some(&Node::I64(6)));
    }

    #[test]
    fn found_values_are_described_briefly() {
        assert_eq!(Found(None).to_string(), "nothing (the path is absent)");
        assert_eq!(Found(Some(&Node::Str("abc".into()))).to_string(), "\"abc\"");
        let long = "x".repeat(100);
        assert!(Found(Some(&Node::Str(long.into()))).to_string().ends_with("… (100 bytes)"));
        let obj: Node<'_> = serde_json::from_str(r#"{"a":1,"b":2}"#).unwrap();
        assert_eq!(Found(Some(&obj)).to_string(), "an object with 2 members (a, b)");
    }
}

//! One tree for every payload format: JSON and CBOR deserialize into it
//! (strings borrowed from the payload where the format allows), CSV lines
//! and bare values are parsed into it, Protobuf messages converted into it.
//! Paths are then looked up the same way whatever the format.

use std::borrow::Cow;
use std::fmt;

use bumpalo::Bump;
use bumpalo::collections::Vec as BumpVec;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// A decoded payload, or a part of one. The tree lives in a per-message
/// arena (`'b`): strings are borrowed from the payload where the format
/// allows, or copied into the arena, and every array and object is one
/// slice there, so parsing allocates only as the arena grows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Node<'b> {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(&'b str),
    Bytes(&'b [u8]),
    Array(&'b [Self]),
    /// Members in payload order; a key that appears twice is found first
    /// where it appears first.
    Object(&'b [(&'b str, Self)]),
}

impl<'b> Node<'b> {
    /// The member `key` of an object, or the element at `index` of an array.
    pub(crate) fn child(&self, key: &str, index: Option<usize>) -> Option<&'b Self> {
        match *self {
            Self::Object(m) => m.iter().find(|(k, _)| *k == key).map(|(_, v)| v),
            Self::Array(a) => index.and_then(|i| a.get(i)),
            _ => None,
        }
    }

    /// The node as text, when it is a scalar: strings as they are, numbers
    /// in decimal, booleans as `true`/`false`.
    pub(crate) fn as_text(&self) -> Option<Cow<'b, str>> {
        Some(match *self {
            Self::Str(s) => Cow::Borrowed(s),
            Self::Bool(b) => Cow::Borrowed(if b { "true" } else { "false" }),
            Self::I64(v) => Cow::Owned(v.to_string()),
            Self::U64(v) => Cow::Owned(v.to_string()),
            Self::F64(v) => Cow::Owned(v.to_string()),
            Self::Null | Self::Bytes(_) | Self::Array(_) | Self::Object(_) => return None,
        })
    }
}

/// Parses JSON into the arena (strings without escapes borrowed).
pub(crate) fn json<'b>(payload: &'b [u8], bump: &'b Bump) -> Result<Node<'b>, serde_json::Error> {
    let mut d = serde_json::Deserializer::from_slice(payload);
    let n = Seed(bump).deserialize(&mut d)?;
    d.end()?;
    Ok(n)
}

/// Builds nodes in the arena as a deserializer hands values over.
#[derive(Clone, Copy)]
struct Seed<'b>(&'b Bump);

impl<'de: 'b, 'b> DeserializeSeed<'de> for Seed<'b> {
    type Value = Node<'b>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Node<'b>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de: 'b, 'b> Visitor<'de> for Seed<'b> {
    type Value = Node<'b>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node<'b>, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node<'b>, E> {
        Ok(Node::I64(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node<'b>, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => Node::I64(i),
            Err(_) => Node::U64(v),
        })
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node<'b>, E> {
        Ok(Node::F64(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Node<'b>, E> {
        Ok(Node::Str(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node<'b>, E> {
        Ok(Node::Str(self.0.alloc_str(v)))
    }
    fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> Result<Node<'b>, E> {
        Ok(Node::Bytes(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Node<'b>, E> {
        Ok(Node::Bytes(self.0.alloc_slice_copy(v)))
    }
    fn visit_none<E>(self) -> Result<Node<'b>, E> {
        Ok(Node::Null)
    }
    fn visit_unit<E>(self) -> Result<Node<'b>, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node<'b>, D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'b>, A::Error> {
        // The hint comes from the payload: never trust it for a capacity.
        let mut out = BumpVec::with_capacity_in(seq.size_hint().unwrap_or(4).min(64), self.0);
        while let Some(n) = seq.next_element_seed(self)? {
            out.push(n);
        }
        Ok(Node::Array(out.into_bump_slice()))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'b>, A::Error> {
        let mut out = BumpVec::with_capacity_in(map.size_hint().unwrap_or(4).min(64), self.0);
        while let Some(k) = map.next_key_seed(KeySeed(self.0))? {
            out.push((k, map.next_value_seed(self)?));
        }
        Ok(Node::Object(out.into_bump_slice()))
    }
}

/// An object's key (JSON keys are text).
struct KeySeed<'b>(&'b Bump);

impl<'de: 'b, 'b> DeserializeSeed<'de> for KeySeed<'b> {
    type Value = &'b str;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<&'b str, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de: 'b, 'b> Visitor<'de> for KeySeed<'b> {
    type Value = &'b str;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a text key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<&'b str, E> {
        Ok(v)
    }
    fn visit_str<E>(self, v: &str) -> Result<&'b str, E> {
        Ok(self.0.alloc_str(v))
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<&'b str, E> {
        Err(E::custom("a map key is a byte string; only text keys can be named by a path"))
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
                        let keys: Vec<&str> = m.iter().take(4).map(|(k, _)| *k).collect();
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

/// A CBOR payload. ciborium cannot lend strings: its own value type
/// first, then copied into the arena. Tags are looked through (tag 1, an
/// epoch time, is its number); integer and boolean keys are named by their
/// text.
pub(crate) fn cbor<'b>(payload: &[u8], bump: &'b Bump) -> Result<Node<'b>, String> {
    let v: ciborium::Value =
        ciborium::from_reader(payload).map_err(|e| format!("not CBOR: {e}"))?;
    from_cbor(v, bump)
}

fn from_cbor(v: ciborium::Value, bump: &Bump) -> Result<Node<'_>, String> {
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
        C::Bytes(b) => Node::Bytes(bump.alloc_slice_copy(&b)),
        C::Float(f) => Node::F64(f),
        C::Text(s) => Node::Str(bump.alloc_str(&s)),
        C::Bool(b) => Node::Bool(b),
        C::Null => Node::Null,
        C::Tag(_, inner) => from_cbor(*inner, bump)?,
        C::Array(a) => {
            let mut out = BumpVec::with_capacity_in(a.len(), bump);
            for item in a {
                out.push(from_cbor(item, bump)?);
            }
            Node::Array(out.into_bump_slice())
        }
        C::Map(m) => {
            let mut out = BumpVec::with_capacity_in(m.len(), bump);
            for (k, v) in m {
                let key: &str = match k {
                    C::Text(s) => bump.alloc_str(&s),
                    C::Integer(i) => bump.alloc_str(&i128::from(i).to_string()),
                    C::Bool(b) => {
                        if b {
                            "true"
                        } else {
                            "false"
                        }
                    }
                    _ => {
                        return Err(
                            "a map key that is not text, an integer or a boolean: a path cannot name it"
                                .to_owned(),
                        );
                    }
                };
                out.push((key, from_cbor(v, bump)?));
            }
            Node::Object(out.into_bump_slice())
        }
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
    Node::Str(t)
}

/// CSV lines: an array with a record per non-empty line; a record is an
/// array of its fields, or an object when the columns are named. Each field
/// is read as [`scalar`] reads a bare value.
pub(crate) fn csv<'b>(
    payload: &str,
    delimiter: u8,
    columns: Option<&[String]>,
    bump: &'b Bump,
) -> Result<Node<'b>, String> {
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(delimiter)
        .flexible(true)
        .from_reader(payload.as_bytes());
    let mut rows = BumpVec::new_in(bump);
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
        let mut fields = BumpVec::with_capacity_in(record.len(), bump);
        fields.extend(record.iter().map(|f| scalar(bump.alloc_str(f))));
        rows.push(match columns {
            None => Node::Array(fields.into_bump_slice()),
            Some(names) => {
                let mut members = BumpVec::with_capacity_in(names.len(), bump);
                let names = names.iter().map(|n| &*bump.alloc_str(n));
                members.extend(names.zip(fields.iter().copied()));
                Node::Object(members.into_bump_slice())
            }
        });
    }
    Ok(Node::Array(rows.into_bump_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_borrowed_and_cbor_integer_keys_become_text() {
        let bump = Bump::new();
        let payload = br#"{"a":"x","b":[1,-2,1.5,true,null],"c":"\u0041"}"#;
        let n = json(payload, &bump).unwrap();
        let Node::Object(m) = n else { panic!("object") };
        let Node::Str(x) = m[0].1 else { panic!("text") };
        assert!(payload.as_ptr_range().contains(&x.as_ptr()), "borrowed from the payload");
        assert_eq!(n.child("c", None), Some(&Node::Str("A")), "an escape is copied");
        assert_eq!(n.child("b", None).unwrap().child("3", Some(3)), Some(&Node::Bool(true)));
        assert!(json(b"[1] 2", &bump).is_err(), "trailing data");
        // {1: 21.5, "t": 1(1700000000)}: an integer key, a tagged epoch time.
        let bytes = [0xa2, 0x01, 0xf9, 0x4d, 0x60, 0x61, b't', 0xc1, 0x1a, 0x65, 0x53, 0xf1, 0x00];
        let n = cbor(&bytes, &bump).unwrap();
        assert_eq!(n.child("1", Some(1)), Some(&Node::F64(21.5)));
        assert_eq!(n.child("t", None), Some(&Node::I64(1_700_000_000)));
        assert!(cbor(&[0xa1, 0x80, 0x01], &bump).unwrap_err().contains("map key"), "{{[]: 1}}");
        assert!(cbor(&[0xff], &bump).unwrap_err().starts_with("not CBOR"));
    }

    #[test]
    fn bare_values_are_numbers_booleans_or_text() {
        assert_eq!(scalar(" 21 "), Node::I64(21));
        assert_eq!(scalar("18446744073709551615"), Node::U64(u64::MAX));
        assert_eq!(scalar("-1.5e3"), Node::F64(-1500.0));
        assert_eq!(scalar("TRUE"), Node::Bool(true));
        assert_eq!(scalar("nan"), Node::Str("nan"));
        assert_eq!(scalar("open"), Node::Str("open"));
    }

    #[test]
    fn csv_lines_are_records() {
        let bump = Bump::new();
        let n = csv("1,\"a,b\",2.5\n\n3,x,4\n", b',', None, &bump).unwrap();
        let Node::Array(rows) = n else { panic!("rows") };
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].child("1", Some(1)), Some(&Node::Str("a,b")));
        let named = ["t".to_owned(), "v".to_owned()];
        let n = csv("5;6", b';', Some(&named), &bump).unwrap();
        assert_eq!(n.child("0", Some(0)).unwrap().child("v", None), Some(&Node::I64(6)));
    }

    #[test]
    fn found_values_are_described_briefly() {
        assert_eq!(Found(None).to_string(), "nothing (the path is absent)");
        assert_eq!(Found(Some(&Node::Str("abc"))).to_string(), "\"abc\"");
        let long = "x".repeat(100);
        assert!(Found(Some(&Node::Str(&long))).to_string().ends_with("… (100 bytes)"));
        let bump = Bump::new();
        let obj = json(br#"{"a":1,"b":2}"#, &bump).unwrap();
        assert_eq!(Found(Some(&obj)).to_string(), "an object with 2 members (a, b)");
    }
}

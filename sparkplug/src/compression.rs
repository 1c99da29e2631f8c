//! Payload compression as Eclipse Tahu does it (feature `compression`).
//!
//! It is a convention of the reference implementation, not part of the 3.0
//! specification: the outer payload has `uuid = "SPBV1.0_COMPRESSED"`, its
//! `body` is the compressed bytes of the whole inner payload, and an optional
//! String metric `algorithm` says `DEFLATE` (the default when absent) or
//! `GZIP`. DEFLATE here is zlib-wrapped, as Java's `Deflater` writes it.
//!
//! [`Payload::decode`](crate::Payload::decode) unwraps compressed payloads by
//! itself when this feature is on, refusing any that inflate past
//! [`MAX_INFLATED`].

use std::io::{Read, Write};

use prost::Message as _;

use crate::error::DecodeError;
use crate::proto;

/// The `uuid` that marks a compressed payload.
pub const COMPRESSED_UUID: &str = "SPBV1.0_COMPRESSED";

/// The largest inner payload decompression produces (16 MiB); larger is
/// refused as a likely decompression bomb.
pub const MAX_INFLATED: usize = 16 << 20;

/// A compression algorithm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Algorithm {
    /// zlib-wrapped DEFLATE (the default).
    #[default]
    Deflate,
    /// GZIP.
    Gzip,
}

impl Algorithm {
    /// The `algorithm` metric's value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Deflate => "DEFLATE",
            Self::Gzip => "GZIP",
        }
    }
}

/// Wraps encoded payload bytes in a compressed outer payload. The outer
/// payload carries `timestamp` (as the specification requires of every
/// payload) and the `algorithm` metric.
pub fn compress(inner: &[u8], algorithm: Algorithm, timestamp: u64) -> Vec<u8> {
    let level = flate2::Compression::default();
    let body = match algorithm {
        Algorithm::Deflate => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), level);
            // Writing into a Vec cannot fail.
            let _ = e.write_all(inner);
            e.finish().unwrap_or_default()
        }
        Algorithm::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
            let _ = e.write_all(inner);
            e.finish().unwrap_or_default()
        }
    };
    proto::Payload {
        timestamp: Some(timestamp),
        metrics: vec![proto::Metric {
            name: Some("algorithm".into()),
            timestamp: Some(timestamp),
            datatype: Some(crate::DataType::String.as_u32()),
            value: Some(proto::MetricValue::String(algorithm.as_str().into())),
            ..Default::default()
        }],
        uuid: Some(COMPRESSED_UUID.into()),
        body: Some(body.into()),
        seq: None,
    }
    .encode_to_vec()
}

/// Whether a raw payload is a compressed envelope.
pub fn is_compressed(p: &proto::Payload) -> bool {
    p.uuid.as_deref() == Some(COMPRESSED_UUID)
}

/// The inner payload bytes of a compressed envelope.
pub fn decompress(p: &proto::Payload) -> Result<Vec<u8>, DecodeError> {
    let err = |reason: String| DecodeError::Compression { reason };
    let algorithm =
        p.metrics.iter().find(|m| m.name.as_deref() == Some("algorithm")).map(|m| &m.value);
    let algorithm = match algorithm {
        None => Algorithm::Deflate,
        Some(Some(proto::MetricValue::String(s))) if s.eq_ignore_ascii_case("DEFLATE") => {
            Algorithm::Deflate
        }
        Some(Some(proto::MetricValue::String(s))) if s.eq_ignore_ascii_case("GZIP") => {
            Algorithm::Gzip
        }
        Some(other) => {
            return Err(err(format!("unknown algorithm {other:?} (expected DEFLATE or GZIP)")));
        }
    };
    let body =
        p.body.as_deref().ok_or_else(|| err("a compressed payload without a body".into()))?;
    let mut out = Vec::new();
    let limit = MAX_INFLATED as u64 + 1;
    let read = match algorithm {
        Algorithm::Deflate => {
            flate2::read::ZlibDecoder::new(body).take(limit).read_to_end(&mut out)
        }
        Algorithm::Gzip => flate2::read::GzDecoder::new(body).take(limit).read_to_end(&mut out),
    };
    read.map_err(|e| err(format!("{} body does not inflate: {e}", algorithm.as_str())))?;
    if out.len() > MAX_INFLATED {
        return Err(err(format!("the body inflates past {MAX_INFLATED} bytes; refused")));
    }
    Ok(out)
}

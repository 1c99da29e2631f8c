//! One small API over the three payload codecs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{DecodeError, EncodeError, UnknownCodec};
use crate::model::Batch;
use crate::{protobuf, wire};

/// A payload format for [`Batch`]es.
///
/// | codec      | content type             | name in config | notes |
/// |------------|--------------------------|----------------|-------|
/// | `Json`     | `application/json`       | `json`         | typeable by people; no NaN or infinities |
/// | `Protobuf` | `application/x-protobuf` | `protobuf`     | smallest and fastest; schema in `proto/shopfloor.proto` |
/// | `Cbor`     | `application/cbor`       | `cbor`         | the JSON shape in binary (RFC 8949) |
///
/// ```
/// use shopfloor_schemas::{Batch, Codec, Reading, Timestamp};
///
/// let batch = Batch::new("plant1/press/press-3")
///     .with(Reading::new("temperature", Timestamp::from_unix_ms(1_700_000_000_000), 71.5));
/// for codec in Codec::ALL {
///     let bytes = codec.encode_batch(&batch)?;
///     assert_eq!(codec.decode_batch(&bytes)?, batch);
/// }
/// // A subscriber picks the codec from the MQTT 5 content type:
/// assert_eq!(Codec::from_content_type("application/json; charset=utf-8")?, Codec::Json);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Codec {
    /// JSON, see the crate documentation for the shape.
    Json,
    /// Protobuf, message `shopfloor.v1.Batch`.
    #[serde(alias = "proto", alias = "protobuf")]
    Protobuf,
    /// CBOR, the JSON shape in binary.
    Cbor,
}

impl Codec {
    /// Every codec.
    pub const ALL: [Self; 3] = [Self::Json, Self::Protobuf, Self::Cbor];

    /// The content type this codec's payloads are sent with (MQTT 5
    /// `content_type` property).
    pub const fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Protobuf => "application/x-protobuf",
            Self::Cbor => "application/cbor",
        }
    }

    /// The codec's name in configuration files: `json`, `protobuf`, `cbor`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Protobuf => "protobuf",
            Self::Cbor => "cbor",
        }
    }

    /// The codec for an MQTT 5 content type. Case and parameters are ignored
    /// (`application/json; charset=utf-8` is JSON), and the common variants
    /// peers use are accepted: `text/json`, `application/*+json`,
    /// `application/protobuf`, `application/x-protobuf`,
    /// `application/vnd.google.protobuf`, `application/cbor`,
    /// `application/*+cbor`.
    pub fn from_content_type(content_type: &str) -> Result<Self, UnknownCodec> {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        let lower = essence.to_ascii_lowercase();
        match lower.as_str() {
            "application/json" | "text/json" => Ok(Self::Json),
            "application/protobuf"
            | "application/x-protobuf"
            | "application/vnd.google.protobuf" => Ok(Self::Protobuf),
            "application/cbor" => Ok(Self::Cbor),
            s if s.starts_with("application/") && s.ends_with("+json") => Ok(Self::Json),
            s if s.starts_with("application/") && s.ends_with("+cbor") => Ok(Self::Cbor),
            _ => Err(UnknownCodec { given: content_type.to_owned() }),
        }
    }

    /// Encodes a batch. The batch is checked first ([`Batch::validate`]), and
    /// JSON also refuses NaN and infinities, which it cannot carry.
    pub fn encode_batch(self, batch: &Batch) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode_batch_into(batch, &mut out)?;
        Ok(out)
    }

    /// Encodes a batch, appending to `out` so that a caller can reuse one
    /// buffer. On error, `out` may hold a partial payload: truncate it.
    pub fn encode_batch_into(self, batch: &Batch, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        batch.validate()?;
        match self {
            Self::Json => wire::encode_json(batch, out),
            Self::Protobuf => {
                protobuf::encode(batch, out);
                Ok(())
            }
            Self::Cbor => wire::encode_cbor(batch, out),
        }
    }

    /// Decodes a payload. Untrusted bytes never panic: anything malformed is
    /// a [`DecodeError`] that says what and where.
    pub fn decode_batch(self, payload: &[u8]) -> Result<Batch, DecodeError> {
        let batch = match self {
            Self::Json => wire::decode_json(payload)?,
            Self::Protobuf => protobuf::decode(payload)?,
            Self::Cbor => wire::decode_cbor(payload)?,
        };
        batch.validate()?;
        Ok(batch)
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses a codec name (`json`, `protobuf` or `proto`, `cbor`, any case) or a
/// content type.
impl FromStr for Codec {
    type Err = UnknownCodec;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "protobuf" | "proto" => Ok(Self::Protobuf),
            "cbor" => Ok(Self::Cbor),
            _ => Self::from_content_type(s),
        }
    }
}

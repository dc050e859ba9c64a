//! The config as published to proxy-wasm shared data, where every worker
//! of the process reads it.
//!
//! Two keys: a tiny generation counter that request handlers read on every
//! request (cheap: a few bytes), and the config record itself, read and
//! parsed only when the generation changed. So the request path never
//! copies the whole config per request.

use std::fmt;

/// Shared-data key of the generation counter (decimal `u64`).
pub const GENERATION_KEY: &str = "fallback_config.v1.generation";
/// Shared-data key of the config record.
pub const CONFIG_KEY: &str = "fallback_config.v1.config";
/// Shared-data key set once the one-shot import was attempted in this process.
pub const IMPORT_ATTEMPTED_KEY: &str = "fallback_config.v1.import_attempted";
/// Shared-data key of the driver lease (see [`crate::driver`]).
pub const DRIVER_KEY: &str = "fallback_config.v1.driver";

/// Where a published config came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    ControlPlane,
    Storage,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::ControlPlane => "cp",
            Source::Storage => "storage",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "cp" => Some(Source::ControlPlane),
            "storage" => Some(Source::Storage),
            _ => None,
        }
    }
}

/// What is known about a published config without parsing it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub generation: u64,
    pub source: Source,
    pub revision: String,
    /// Hex SHA-256 of the config bytes.
    pub sha256: String,
}

/// Record layout: `<generation> <source> <sha256> <revision>\n<config>`.
/// The revision comes last on the line because it is free text (it never
/// holds a newline: the CP's JSON string would have escaped it).
pub fn encode(meta: &Meta, config: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{} {} {} {}\n",
        meta.generation,
        meta.source.as_str(),
        meta.sha256,
        meta.revision.replace('\n', " ")
    )
    .into_bytes();
    out.extend_from_slice(config);
    out
}

/// A record that is not of the layout above.
#[derive(Debug, PartialEq, Eq)]
pub struct MalformedRecord;

impl fmt::Display for MalformedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed shared-data config record")
    }
}

impl std::error::Error for MalformedRecord {}

/// Splits a record into its meta and the config bytes.
pub fn decode(record: &[u8]) -> Result<(Meta, &[u8]), MalformedRecord> {
    let nl = record
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(MalformedRecord)?;
    let (head, rest) = record.split_at(nl);
    let config = rest.get(1..).ok_or(MalformedRecord)?;
    let head = std::str::from_utf8(head).map_err(|_| MalformedRecord)?;
    let mut parts = head.splitn(4, ' ');
    let generation = parts
        .next()
        .and_then(|g| g.parse().ok())
        .ok_or(MalformedRecord)?;
    let source = parts
        .next()
        .and_then(Source::parse)
        .ok_or(MalformedRecord)?;
    let sha256 = parts.next().ok_or(MalformedRecord)?.to_string();
    let revision = parts.next().ok_or(MalformedRecord)?.to_string();
    Ok((
        Meta {
            generation,
            source,
            revision,
            sha256,
        },
        config,
    ))
}

/// Parses the generation counter.
pub fn decode_generation(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let meta = Meta {
            generation: 7,
            source: Source::Storage,
            revision: "rev with spaces".into(),
            sha256: "ab".repeat(32),
        };
        let rec = encode(&meta, b"{\"a\":\n1}");
        let (m, c) = decode(&rec).unwrap();
        assert_eq!(m, meta);
        assert_eq!(c, b"{\"a\":\n1}");
        assert_eq!(decode_generation(b"42"), Some(42));
        assert_eq!(decode_generation(b"x"), None);
    }

    #[test]
    fn malformed() {
        assert_eq!(decode(b"no newline"), Err(MalformedRecord));
        assert_eq!(decode(b"1 cp abc\n{}"), Err(MalformedRecord));
        assert_eq!(decode(b"x cp abc r\n{}"), Err(MalformedRecord));
        assert_eq!(decode(b"1 other abc r\n{}"), Err(MalformedRecord));
    }
}

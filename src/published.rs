//! What the filter keeps in proxy-wasm shared data, where every root and
//! worker of the process reads it: the keys and their byte layouts.
//!
//! - [`DRIVER_KEY`]: the [`DriverRecord`], the process's one piece of
//!   coordination state (who drives, the last generation handed out,
//!   whether the CP answered, the import's state). Only ever written by
//!   compare-and-swap, see [`crate::process`].
//! - [`CONFIG_KEY`]: the published config record ([`encode`]): a header
//!   line with generation, source, digest, config length and revision,
//!   then the config as served (for a later driver to export), then the
//!   compiled [`RouteTable`](crate::route_table::RouteTable) that workers route with.
//! - [`GENERATION_KEY`]: the generation of that record, a few bytes that
//!   request handlers read to learn that a new record exists.
//!
//! The `v3` keys replace v2's, whose records held the config only (each
//! worker parsed and indexed it), and v1's, whose driver lease carried a
//! wall-clock expiry and whose generations could repeat. All keys change
//! together: a process running two builds side by side (a module update
//! under the same VM id) then has two independent sets, each with its own
//! driver, instead of one build reading records of another layout.

use crate::route_table::RouteTableError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Shared-data key of the driver record.
pub const DRIVER_KEY: &str = "fallback_config.v3.driver";
/// Shared-data key of the published config record.
pub const CONFIG_KEY: &str = "fallback_config.v3.config";
/// Shared-data key of the published generation (decimal `u64`).
pub const GENERATION_KEY: &str = "fallback_config.v3.generation";
/// Shared-data key of the driver's status, for readiness probes (JSON,
/// see [`crate::status`]).
pub const STATUS_KEY: &str = "fallback_config.v3.status";

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

    /// For log lines.
    pub fn describe(self) -> &'static str {
        match self {
            Source::ControlPlane => "the control plane",
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
    /// Unique in the process: handed out by the driver record's CAS and
    /// never reused, so it alone names a record.
    pub generation: u64,
    pub source: Source,
    pub revision: String,
    /// Hex SHA-256 of the config bytes.
    pub sha256: String,
}

/// Record layout:
/// `<generation> <source> <sha256> <config length> <revision>\n<config><routes>`,
/// `routes` being [`RouteTable::encoded`](crate::route_table::RouteTable::encoded)'s bytes. The revision comes last
/// on the line because it is free text (it never holds a newline: the
/// CP's JSON string would have escaped it).
pub fn encode(meta: &Meta, config: &[u8], routes: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{} {} {} {} {}\n",
        meta.generation,
        meta.source.as_str(),
        meta.sha256,
        config.len(),
        meta.revision.replace('\n', " ")
    )
    .into_bytes();
    out.reserve(config.len() + routes.len());
    out.extend_from_slice(config);
    out.extend_from_slice(routes);
    out
}

/// A record split into its parts ([`decode`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub meta: Meta,
    /// The config as served.
    pub config: &'a [u8],
    /// The compiled route table's bytes.
    pub routes: &'a [u8],
}

/// A record that is not of the layout above.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MalformedRecord;

impl fmt::Display for MalformedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed shared-data config record")
    }
}

impl std::error::Error for MalformedRecord {}

/// Splits a record into its parts.
pub fn decode(record: &[u8]) -> Result<Record<'_>, MalformedRecord> {
    let nl = record
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(MalformedRecord)?;
    let (head, rest) = record.split_at(nl);
    let body = rest.get(1..).ok_or(MalformedRecord)?;
    let head = std::str::from_utf8(head).map_err(|_| MalformedRecord)?;
    let mut parts = head.splitn(5, ' ');
    let generation = parts
        .next()
        .and_then(|g| g.parse().ok())
        .ok_or(MalformedRecord)?;
    let source = parts
        .next()
        .and_then(Source::parse)
        .ok_or(MalformedRecord)?;
    let sha256 = parts.next().ok_or(MalformedRecord)?.to_string();
    let config_len: usize = parts
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or(MalformedRecord)?;
    let revision = parts.next().ok_or(MalformedRecord)?.to_string();
    if config_len > body.len() {
        return Err(MalformedRecord);
    }
    let (config, routes) = body.split_at(config_len);
    Ok(Record {
        meta: Meta {
            generation,
            source,
            revision,
            sha256,
        },
        config,
        routes,
    })
}

/// The generation in a record's header, without looking at the config.
pub fn record_generation(record: &[u8]) -> Option<u64> {
    let end = record.iter().position(|&b| b == b' ')?;
    std::str::from_utf8(record.get(..end)?).ok()?.parse().ok()
}

/// Parses the generation counter.
pub fn decode_generation(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

pub fn encode_generation(generation: u64) -> Vec<u8> {
    generation.to_string().into_bytes()
}

/// Why a published record could not be loaded by a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadError {
    Record(MalformedRecord),
    Routes(RouteTableError),
    /// The counter names a generation but no record is stored.
    Missing,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Record(e) => e.fmt(f),
            LoadError::Routes(e) => e.fmt(f),
            LoadError::Missing => f.write_str("no config record is stored"),
        }
    }
}

impl std::error::Error for LoadError {}

/// The process's coordination state, in [`DRIVER_KEY`].
///
/// Every change is a compare-and-swap of the whole record by the root
/// that holds it (or takes it over), so its fields change together or
/// not at all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverRecord {
    /// The root context that drives the process (unique per root);
    /// meaningless when `released`.
    pub owner: String,
    /// Grows with every change of owner: a root recognises its own lease
    /// by owner *and* epoch.
    pub epoch: u64,
    /// Grows with every renewal, so that followers see the holder alive.
    pub renewals: u64,
    /// The holder shut down and handed the lease over: take it at once.
    pub released: bool,
    /// The node id of this process when none is configured: chosen once,
    /// by the root that created the record, and kept by every later
    /// driver, so a handoff between roots keeps the node's identity.
    pub node_id: String,
    /// The last generation handed out.
    pub generation: u64,
    /// A driver of this process applied a CP answer: no import, ever.
    pub cp_answered: bool,
    /// Import attempts this process started.
    pub import_attempts: u32,
    /// An attempt was granted and not yet reported finished: a new
    /// driver waits out its timeout before starting another.
    #[serde(default)]
    pub import_in_flight: bool,
}

impl DriverRecord {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<DriverRecord> {
        serde_json::from_slice(bytes).ok()
    }
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
        let rec = encode(&meta, b"{\"a\":\n1}", b"routes");
        let r = decode(&rec).unwrap();
        assert_eq!(r.meta, meta);
        assert_eq!(r.config, b"{\"a\":\n1}");
        assert_eq!(r.routes, b"routes");
        assert_eq!(record_generation(&rec), Some(7));
        assert_eq!(record_generation(b"x y"), None);
        assert_eq!(decode_generation(&encode_generation(42)), Some(42));
        assert_eq!(decode_generation(b"x"), None);
    }

    #[test]
    fn malformed() {
        assert_eq!(decode(b"no newline"), Err(MalformedRecord));
        assert_eq!(decode(b"1 cp abc 2\n{}"), Err(MalformedRecord));
        assert_eq!(decode(b"x cp abc 2 r\n{}"), Err(MalformedRecord));
        assert_eq!(decode(b"1 other abc 2 r\n{}"), Err(MalformedRecord));
        assert_eq!(decode(b"1 cp abc x r\n{}"), Err(MalformedRecord));
        // The config cannot be longer than what follows the line.
        assert_eq!(decode(b"1 cp abc 3 r\n{}"), Err(MalformedRecord));
        assert!(decode(b"1 cp abc 2 r\n{}").is_ok());
    }

    #[test]
    fn driver_record_round_trips() {
        let r = DriverRecord {
            owner: "root-7-00ff".into(),
            epoch: 3,
            renewals: 9,
            released: false,
            node_id: "node-1".into(),
            generation: 12,
            cp_answered: true,
            import_attempts: 1,
            import_in_flight: true,
        };
        assert_eq!(DriverRecord::decode(&r.encode()), Some(r));
        assert_eq!(DriverRecord::decode(b"owner 123"), None);
    }
}

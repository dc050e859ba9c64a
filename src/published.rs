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

use crate::json::{self, Reader};
use crate::route_table::RouteTableError;
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
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// driver waits out its timeout before starting another. Absent in
    /// records of earlier builds: `false`.
    pub import_in_flight: bool,
}

impl DriverRecord {
    /// A JSON object with the fields in this order (the bytes serde's
    /// derive wrote).
    pub fn encode(&self) -> Vec<u8> {
        json::Object::new()
            .string("owner", &self.owner)
            .u64("epoch", self.epoch)
            .u64("renewals", self.renewals)
            .bool("released", self.released)
            .string("node_id", &self.node_id)
            .u64("generation", self.generation)
            .bool("cp_answered", self.cp_answered)
            .u64("import_attempts", u64::from(self.import_attempts))
            .bool("import_in_flight", self.import_in_flight)
            .finish()
    }

    /// `None` unless every field but `import_in_flight` is there, once,
    /// with its type; other fields are ignored.
    pub fn decode(bytes: &[u8]) -> Option<DriverRecord> {
        Self::read(bytes).ok()
    }

    fn read(bytes: &[u8]) -> Result<DriverRecord, json::Error> {
        let mut r = Reader::new(bytes);
        let (mut owner, mut epoch, mut renewals, mut released, mut node_id) =
            (None, None, None, None, None);
        let (mut generation, mut cp_answered, mut import_attempts, mut import_in_flight) =
            (None, None, None, None);
        r.object()?;
        while let Some(key) = r.next_key()? {
            match &*key {
                "owner" => r.once(&mut owner, "owner", Reader::owned_string)?,
                "epoch" => r.once(&mut epoch, "epoch", Reader::u64)?,
                "renewals" => r.once(&mut renewals, "renewals", Reader::u64)?,
                "released" => r.once(&mut released, "released", Reader::bool)?,
                "node_id" => r.once(&mut node_id, "node_id", Reader::owned_string)?,
                "generation" => r.once(&mut generation, "generation", Reader::u64)?,
                "cp_answered" => r.once(&mut cp_answered, "cp_answered", Reader::bool)?,
                "import_attempts" => {
                    r.once(&mut import_attempts, "import_attempts", Reader::u32)?
                }
                "import_in_flight" => {
                    r.once(&mut import_in_flight, "import_in_flight", Reader::bool)?
                }
                _ => r.skip()?,
            }
        }
        let record = DriverRecord {
            owner: r.required(owner, "owner")?,
            epoch: r.required(epoch, "epoch")?,
            renewals: r.required(renewals, "renewals")?,
            released: r.required(released, "released")?,
            node_id: r.required(node_id, "node_id")?,
            generation: r.required(generation, "generation")?,
            cp_answered: r.required(cp_answered, "cp_answered")?,
            import_attempts: r.required(import_attempts, "import_attempts")?,
            import_in_flight: import_in_flight.unwrap_or(false),
        };
        r.end()?;
        Ok(record)
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

    /// The layout serde's derive wrote and read before `encode`.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct SerdeDriverRecord {
        owner: String,
        epoch: u64,
        renewals: u64,
        released: bool,
        node_id: String,
        generation: u64,
        cp_answered: bool,
        import_attempts: u32,
        #[serde(default)]
        import_in_flight: bool,
    }

    #[test]
    fn driver_records_are_the_bytes_serde_wrote() {
        for (owner, released, import_in_flight) in
            [("root-7-00ff", false, true), ("a\"b\\c\u{1}é", true, false)]
        {
            let r = DriverRecord {
                owner: owner.into(),
                epoch: u64::MAX,
                renewals: 0,
                released,
                node_id: "node-1".into(),
                generation: 12,
                cp_answered: !released,
                import_attempts: u32::MAX,
                import_in_flight,
            };
            let theirs = SerdeDriverRecord {
                owner: r.owner.clone(),
                epoch: r.epoch,
                renewals: r.renewals,
                released: r.released,
                node_id: r.node_id.clone(),
                generation: r.generation,
                cp_answered: r.cp_answered,
                import_attempts: r.import_attempts,
                import_in_flight: r.import_in_flight,
            };
            assert_eq!(
                String::from_utf8(r.encode()).unwrap(),
                serde_json::to_string(&theirs).unwrap()
            );
        }
        // Read as serde read it: what it accepted and what it refused.
        let base = r#""owner":"o","epoch":1,"renewals":2,"released":false,"node_id":"n","generation":3,"cp_answered":true,"import_attempts":4"#;
        for (text, ok) in [
            (format!("{{{base}}}"), true),
            (
                format!(" {{{base},\"import_in_flight\":true,\"later\":[{{}}]}} "),
                true,
            ),
            (format!("{{{base},\"epoch\":1}}"), false),
            (format!("{{{base},\"import_attempts\":4294967296}}"), false),
            (format!("{{{base}}} x"), false),
            (format!("{{{}}}", base.replace(r#""epoch":1,"#, "")), false),
            (format!("{{{}}}", base.replace(r#""o""#, "null")), false),
            (format!("{{{}}}", base.replace("false", "0")), false),
            (format!("[{base}]"), false),
        ] {
            let ours = DriverRecord::decode(text.as_bytes());
            let theirs = serde_json::from_str::<SerdeDriverRecord>(&text);
            assert_eq!(ours.is_some(), ok, "{text}");
            assert_eq!(theirs.is_ok(), ok, "{text}");
            if let (Some(o), Ok(t)) = (ours, theirs) {
                assert_eq!(
                    (o.import_attempts, o.import_in_flight, o.owner),
                    (t.import_attempts, t.import_in_flight, t.owner)
                );
            }
        }
    }
}

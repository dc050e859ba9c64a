//! The stored `config.json`: the CP's gateway config wrapped with what an
//! importer needs to trust it (format, product version, digest, origin).
//!
//! `config` holds the CP's JSON verbatim (a raw JSON value, not a string),
//! so `sha256` covers exactly the bytes the CP sent and an importer can
//! check them without re-serialising anything.

use crate::gateway::{GatewayConfig, GatewayConfigError};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use std::fmt;

/// The envelope layout this build writes and reads.
pub const FORMAT: u64 = 1;

/// Hex SHA-256, the digest format of the envelope.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    format: u64,
    version: &'a str,
    revision: &'a str,
    exported_at: String,
    exporter: &'a str,
    /// The writer's leader term: the fence against stale leaders.
    term: u64,
    sha256: String,
    config: &'a RawValue,
}

#[derive(Deserialize)]
struct EnvelopeIn<'a> {
    format: u64,
    version: String,
    revision: String,
    exported_at: String,
    exporter: String,
    /// Absent in envelopes written before leader election existed.
    #[serde(default)]
    term: u64,
    sha256: String,
    #[serde(borrow)]
    config: &'a RawValue,
}

/// What to export: a config the CP sent, already validated.
#[derive(Clone, Copy, Debug)]
pub struct Export<'a> {
    /// The CP's JSON, trimmed of surrounding whitespace.
    pub config: &'a [u8],
    pub revision: &'a str,
    pub version: &'a str,
    pub exporter: &'a str,
    pub exported_at: Timestamp,
    pub term: u64,
}

/// Builds the `config.json` bytes.
pub fn seal(export: Export<'_>) -> Result<Vec<u8>, EnvelopeError> {
    let text =
        std::str::from_utf8(export.config).map_err(|e| EnvelopeError::Parse(e.to_string()))?;
    let raw: Box<RawValue> =
        serde_json::from_str(text).map_err(|e| EnvelopeError::Parse(e.to_string()))?;
    let out = EnvelopeOut {
        format: FORMAT,
        version: export.version,
        revision: export.revision,
        exported_at: export.exported_at.rfc3339(),
        exporter: export.exporter,
        term: export.term,
        sha256: sha256_hex(raw.get().as_bytes()),
        config: &raw,
    };
    serde_json::to_vec(&out).map_err(|e| EnvelopeError::Parse(e.to_string()))
}

/// A verified envelope.
#[derive(Clone, Debug, PartialEq)]
pub struct Opened {
    pub revision: String,
    pub exported_at: String,
    pub exporter: String,
    pub term: u64,
    pub sha256: String,
    /// The config bytes exactly as stored (and as the CP sent them).
    pub config_bytes: Vec<u8>,
    pub config: GatewayConfig,
}

/// Why an envelope was refused.
#[derive(Clone, Debug, PartialEq)]
pub enum EnvelopeError {
    Parse(String),
    UnsupportedFormat(u64),
    VersionMismatch { found: String, expected: String },
    Sha256Mismatch { stated: String, actual: String },
    InvalidConfig(String),
    RevisionMismatch { envelope: String, config: String },
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::Parse(m) => write!(f, "envelope does not parse: {m}"),
            EnvelopeError::UnsupportedFormat(n) => {
                write!(
                    f,
                    "envelope format {n} is not supported (expected {FORMAT})"
                )
            }
            EnvelopeError::VersionMismatch { found, expected } => write!(
                f,
                "version mismatch: exported by version {found}, this is version {expected}"
            ),
            EnvelopeError::Sha256Mismatch { stated, actual } => {
                write!(
                    f,
                    "sha256 mismatch: envelope says {stated}, config hashes to {actual}"
                )
            }
            EnvelopeError::InvalidConfig(m) => write!(f, "stored config is invalid: {m}"),
            EnvelopeError::RevisionMismatch { envelope, config } => write!(
                f,
                "revision mismatch: envelope says {envelope}, config says {config}"
            ),
        }
    }
}

impl std::error::Error for EnvelopeError {}

/// The `term` of a stored envelope, read without verifying anything else:
/// a leader must respect the fence even when the rest is unusable.
pub fn stored_term(bytes: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Term {
        term: u64,
    }
    serde_json::from_slice::<Term>(bytes).ok().map(|t| t.term)
}

/// Parses and verifies `config.json` for an importer of `version`.
pub fn open(bytes: &[u8], version: &str) -> Result<Opened, EnvelopeError> {
    let env: EnvelopeIn<'_> =
        serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Parse(e.to_string()))?;
    if env.format != FORMAT {
        return Err(EnvelopeError::UnsupportedFormat(env.format));
    }
    if env.version != version {
        return Err(EnvelopeError::VersionMismatch {
            found: env.version,
            expected: version.to_string(),
        });
    }
    let config_bytes = env.config.get().as_bytes();
    let actual = sha256_hex(config_bytes);
    if !actual.eq_ignore_ascii_case(env.sha256.trim()) {
        return Err(EnvelopeError::Sha256Mismatch {
            stated: env.sha256,
            actual,
        });
    }
    let config = GatewayConfig::parse(config_bytes)
        .map_err(|e: GatewayConfigError| EnvelopeError::InvalidConfig(e.to_string()))?;
    if config.revision != env.revision {
        return Err(EnvelopeError::RevisionMismatch {
            envelope: env.revision,
            config: config.revision,
        });
    }
    Ok(Opened {
        revision: env.revision,
        exported_at: env.exported_at,
        exporter: env.exporter,
        term: env.term,
        sha256: actual,
        config_bytes: config_bytes.to_vec(),
        config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{ "revision": "r1",
  "routes": [ { "name": "echo", "paths": ["/echo"], "upstream": "echo_service" } ] }"#;

    fn sealed() -> Vec<u8> {
        seal(Export {
            config: CONFIG.as_bytes(),
            revision: "r1",
            version: "0.1.0",
            exporter: "node-a",
            exported_at: Timestamp::from_secs(1_440_938_160),
            term: 4,
        })
        .unwrap()
    }

    #[test]
    fn round_trip_keeps_config_bytes() {
        let bytes = sealed();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["format"], 1);
        assert_eq!(v["version"], "0.1.0");
        assert_eq!(v["revision"], "r1");
        assert_eq!(v["exporter"], "node-a");
        assert_eq!(v["exported_at"], "2015-08-30T12:36:00Z");
        assert_eq!(v["sha256"], sha256_hex(CONFIG.as_bytes()));
        // The config appears verbatim, whitespace and all.
        assert!(String::from_utf8(bytes.clone()).unwrap().contains(CONFIG));
        let o = open(&bytes, "0.1.0").unwrap();
        assert_eq!(o.config_bytes, CONFIG.as_bytes());
        assert_eq!(o.revision, "r1");
        assert_eq!(o.exporter, "node-a");
        assert_eq!(o.config.routes[0].upstream, "echo_service");
        assert_eq!(o.term, 4);
        assert_eq!(stored_term(&bytes), Some(4));
        // Envelopes from before leader election have no term: 0.
        let old = String::from_utf8(bytes).unwrap().replace("\"term\":4,", "");
        assert_eq!(open(old.as_bytes(), "0.1.0").unwrap().term, 0);
        assert_eq!(stored_term(old.as_bytes()), None);
    }

    #[test]
    fn refuses_what_it_cannot_trust() {
        let good = String::from_utf8(sealed()).unwrap();
        assert!(matches!(
            open(&sealed(), "0.2.0"),
            Err(EnvelopeError::VersionMismatch { .. })
        ));
        let tampered = good.replace("/echo", "/evil");
        assert!(matches!(
            open(tampered.as_bytes(), "0.1.0"),
            Err(EnvelopeError::Sha256Mismatch { .. })
        ));
        assert!(matches!(
            open(b"{not json", "0.1.0"),
            Err(EnvelopeError::Parse(_))
        ));
        assert!(matches!(
            open(&good.as_bytes()[..good.len() - 3], "0.1.0"),
            Err(EnvelopeError::Parse(_))
        ));
        let fmt2 = good.replace("\"format\":1", "\"format\":2");
        assert!(matches!(
            open(fmt2.as_bytes(), "0.1.0"),
            Err(EnvelopeError::UnsupportedFormat(2))
        ));
        let rev = good.replace("\"revision\":\"r1\"", "\"revision\":\"r0\"");
        assert!(matches!(
            open(rev.as_bytes(), "0.1.0"),
            Err(EnvelopeError::RevisionMismatch { .. })
        ));
        // A digest that matches but a config that does not validate.
        let bad_cfg =
            r#"{"revision":"r1","routes":[{"name":"x","paths":["nope"],"upstream":"u"}]}"#;
        let sealed_bad = seal(Export {
            config: bad_cfg.as_bytes(),
            revision: "r1",
            version: "0.1.0",
            exporter: "n",
            exported_at: Timestamp(0),
            term: 1,
        })
        .unwrap();
        let e = open(&sealed_bad, "0.1.0").unwrap_err();
        assert!(e.to_string().contains("routes[0].paths[0]"), "{e}");
    }

    #[test]
    fn seal_refuses_non_json() {
        let r = seal(Export {
            config: b"{",
            revision: "r",
            version: "v",
            exporter: "e",
            exported_at: Timestamp(0),
            term: 0,
        });
        assert!(matches!(r, Err(EnvelopeError::Parse(_))));
    }
}

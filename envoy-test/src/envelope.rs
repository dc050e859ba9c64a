//! The object the exporter stores and the importer reads:
//!
//! ```json
//! {"format":2,"version":"0.1.0","revision":"r1","exported_at":"<RFC3339 UTC>",
//!  "exporter":"<node id>","term":N,"sha256":"<hex sha256 of the config bytes>",
//!  "config":<the CP's config JSON verbatim>}
//! ```
//!
//! Format 1 (what earlier builds wrote, and what this harness writes for
//! import tests) is the same without `term`; format 2 adds, when keys are
//! configured, `signature` and `encryption` + `ciphertext` (instead of
//! `config`).

use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// The filter's version, part of the object key `<prefix>/<VERSION>/config.json`.
pub const VERSION: &str = "0.1.0";

/// An envelope as read back, with `config` kept as its raw JSON text.
#[derive(Clone, Debug)]
pub struct Envelope {
    pub format: serde_json::Value,
    pub version: String,
    pub revision: String,
    pub exported_at: String,
    pub exporter: String,
    pub sha256: String,
    /// The writer's leader term (`None` when the field is absent).
    pub term: Option<u64>,
    /// The exact text of the `config` value (no surrounding whitespace).
    pub config_raw: String,
}

/// Parses a stored envelope; `Err` says what is missing or wrong in shape.
pub fn parse(bytes: &[u8]) -> Result<Envelope, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    let map: BTreeMap<String, Box<RawValue>> =
        serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
    let raw = |k: &str| map.get(k).map(|v| v.get()).ok_or(format!("no field {k:?}"));
    let string = |k: &str| -> Result<String, String> {
        serde_json::from_str::<String>(raw(k)?).map_err(|_| format!("field {k:?} is not a string"))
    };
    Ok(Envelope {
        format: serde_json::from_str(raw("format")?).map_err(|e| e.to_string())?,
        version: string("version")?,
        revision: string("revision")?,
        exported_at: string("exported_at")?,
        exporter: string("exporter")?,
        sha256: string("sha256")?,
        term: match map.get("term") {
            None => None,
            Some(t) => Some(serde_json::from_str::<u64>(t.get()).map_err(|_| {
                format!("field \"term\" is not a non-negative integer: {}", t.get())
            })?),
        },
        config_raw: raw("config")?.to_string(),
    })
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// Builds an envelope exactly like the spec, embedding `config` verbatim
/// (after trimming surrounding whitespace) and hashing those bytes.
pub fn build(
    version: &str,
    revision: &str,
    exporter: &str,
    exported_at: &str,
    config: &str,
) -> String {
    build_with_sha(
        version,
        revision,
        exporter,
        exported_at,
        config,
        &crate::sha256::hex(config.trim().as_bytes()),
    )
}

/// Like [`build`] with an explicit `sha256` field (to forge a mismatch).
pub fn build_with_sha(
    version: &str,
    revision: &str,
    exporter: &str,
    exported_at: &str,
    config: &str,
    sha256: &str,
) -> String {
    format!(
        "{{\"format\":1,\"version\":{},\"revision\":{},\"exported_at\":{},\"exporter\":{},\"sha256\":{},\"config\":{}}}",
        json_str(version),
        json_str(revision),
        json_str(exported_at),
        json_str(exporter),
        json_str(sha256),
        config.trim()
    )
}

/// Like [`build`], with the writer's leader term (`"term":N`), as a
/// leader-elected exporter writes it.
pub fn build_with_term(
    version: &str,
    revision: &str,
    exporter: &str,
    exported_at: &str,
    config: &str,
    term: u64,
) -> String {
    let plain = build(version, revision, exporter, exported_at, config);
    // `plain` starts with `{"format":1,`: insert the term right after it.
    format!("{{\"term\":{term},{}", &plain[1..])
}

// ------------------------------------------------------------- RFC 3339

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Parses an RFC 3339 date-time (`2026-01-02T03:04:05Z`, optional
/// fraction, `Z` or `±hh:mm`) into Unix seconds (fraction included).
pub fn parse_rfc3339(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac = 0.0;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        frac = format!("0.{}", &s[start..i]).parse().ok()?;
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        b'+' | b'-' if i + 6 == b.len() && b[i + 3] == b':' => {
            let sign = if b[i] == b'+' { 1 } else { -1 };
            sign * (num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    Some((days * 86400 + h * 3600 + mi * 60 + se - offset) as f64 + frac)
}

/// `t` as RFC 3339 UTC with seconds precision (`2026-01-02T03:04:05Z`).
pub fn format_rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (y, m, d) = civil_from_days(secs.div_euclid(86400));
    let r = secs.rem_euclid(86400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        r / 3600,
        r / 60 % 60,
        r % 60
    )
}

/// Now, as Unix seconds.
pub fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_roundtrip_and_forms() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_rfc3339("2000-03-01T00:00:00Z"), Some(951868800.0));
        assert_eq!(parse_rfc3339("2024-02-29T12:34:56.5Z"), Some(1709210096.5));
        assert_eq!(
            parse_rfc3339("2024-02-29T14:34:56+02:00"),
            Some(1709210096.0)
        );
        assert_eq!(parse_rfc3339("2024-02-29 12:34:56Z"), None);
        assert_eq!(parse_rfc3339("2024-02-29T12:34:56"), None);
        assert_eq!(parse_rfc3339("2024-13-29T12:34:56Z"), None);
        let now = SystemTime::now();
        let s = format_rfc3339(now);
        let back = parse_rfc3339(&s).unwrap();
        assert!((now_unix() - back).abs() < 2.0, "{s}");
        assert_eq!(
            format_rfc3339(UNIX_EPOCH + std::time::Duration::from_secs(1709210096)),
            "2024-02-29T12:34:56Z"
        );
    }

    #[test]
    fn build_then_parse_keeps_config_verbatim() {
        let config = "{\n  \"revision\": \"r1\",\n  \"routes\": []\n}\n";
        let env = build(VERSION, "r1", "node-a", "2026-01-01T00:00:00Z", config);
        let e = parse(env.as_bytes()).unwrap();
        assert_eq!(e.format, serde_json::json!(1));
        assert_eq!(e.version, "0.1.0");
        assert_eq!(e.revision, "r1");
        assert_eq!(e.exporter, "node-a");
        assert_eq!(e.config_raw, config.trim());
        assert_eq!(e.sha256, crate::sha256::hex(config.trim().as_bytes()));
        assert!(parse(b"not json").is_err());
        assert!(parse(br#"{"format":1}"#).unwrap_err().contains("version"));
        assert_eq!(e.term, None);
    }

    #[test]
    fn term_is_built_and_parsed() {
        let config = "{\"revision\":\"r1\",\"routes\":[]}";
        let env = build_with_term(VERSION, "r1", "n", "2026-01-01T00:00:00Z", config, 7);
        let e = parse(env.as_bytes()).unwrap();
        assert_eq!(e.term, Some(7));
        assert_eq!(e.config_raw, config);
        let v: serde_json::Value = serde_json::from_str(&env).unwrap();
        assert_eq!(v["term"], 7);
        assert_eq!(v["format"], 1);
        let bad = env.replace("\"term\":7", "\"term\":\"7\"");
        assert!(parse(bad.as_bytes()).unwrap_err().contains("term"));
    }
}
